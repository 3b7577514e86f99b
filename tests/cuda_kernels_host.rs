//! The CUDA kernels (`cuda/*.cu`) compiled for the host with the system C++ compiler and driven by
//! the backend's own launch code (`backend::cuda::layers`), against the CPU backend: every layer
//! kind of the synthetic plan, dense and sparse frames, the eager tile lists and the CUDA-graph
//! lists padded with NO_TILE, f32 and f16 operands. This checks the kernels' index arithmetic and
//! the argument lists the backend passes them on machines without a GPU; it cannot check the
//! driver, cuBLAS or timing (tests/cuda_backend.rs does, on a GPU).
//!
//! Needs a C++20 compiler (`$CXX`, else `c++`). Without one the tests print "SKIPPED" and pass,
//! unless `CI` or `REGIONDROP_REQUIRE_CXX=1` is set, where they fail.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use gstregiondrop::backend::cpu::CpuBackend;
use gstregiondrop::backend::cuda::geometry::{self, Dims, FixedPacker, TilePacker};
use gstregiondrop::backend::cuda::kernels::{self, SOURCES};
use gstregiondrop::backend::cuda::lanes::{frame_items, step_weights, Item, LaneScratch, Lanes};
use gstregiondrop::backend::cuda::layers::{
    self, Addrs, ConvWay, KArg, Kernel, Launcher, LayerLists, StepPtrs,
};
use gstregiondrop::backend::cuda::tail::{tail_ptrs, DeviceTail, RearrangeSource, TailUpload};
use gstregiondrop::backend::generic::GenericStep;
use gstregiondrop::backend::Backend;
use gstregiondrop::error::Result;
use gstregiondrop::model::plan::{LayerOp, Operand, Plan, Step};
use gstregiondrop::preprocess::InputNorm;
use gstregiondrop::tensor::Tensor;

mod common;
#[path = "cuda_emu/lanes.rs"]
mod lane_emu;
use common::synthetic::{changed_frame, image, step_tiles, synthetic_plan};

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

type HostLaunch = unsafe extern "C" fn(*const u32, *const u32, *mut *mut c_void, i32);

/// The kernels built into a shared library for the host.
struct Emu {
    lib: libloading::Library,
    /// The emulation's launch state (grid, block, barrier, __shared__ arrays) is process-wide:
    /// one launch at a time.
    one_at_a_time: std::sync::Mutex<()>,
}

/// Builds the library once per test process; None (skip) without a compiler.
fn emu() -> Option<&'static Emu> {
    static EMU: OnceLock<Option<Emu>> = OnceLock::new();
    EMU.get_or_init(build).as_ref()
}

fn build() -> Option<Emu> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if std::process::Command::new(&cxx)
        .arg("--version")
        .output()
        .is_err()
    {
        let why = format!("no C++ compiler (`{cxx}`) to build the kernels for the host");
        assert!(
            !(flag("CI") || flag("REGIONDROP_REQUIRE_CXX")),
            "{why}; CI / REGIONDROP_REQUIRE_CXX needs it (Debian: g++)"
        );
        println!("SKIPPED: {why}");
        return None;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut src = String::from("#define RD_HOST_EMU\n#include <math.h>\n");
    src += &std::fs::read_to_string(root.join("tests/cuda_emu/emu.hpp")).unwrap();
    src += "#line 1 \"common.cuh\"\n";
    src += kernels::COMMON;
    for s in SOURCES {
        src += &format!("\n#line 1 \"{}\"\n{}\n", s.file, s.source);
    }
    for k in Kernel::ALL {
        src += &format!("RD_EMU_EXPORT({})\n", k.entry());
    }
    // The device-side helpers a test checks directly.
    src += "extern \"C\" void rd_test_mma_fragments(int lane, int lda, int ldb, int* a, int* b) \
            { rd_mma_fragments(lane, lda, ldb, a, b); }\n\
            extern \"C\" void rd_test_mma_acc_pos(int lane, int i, int* r, int* c) \
            { rd_mma_acc_pos(lane, i, r, c); }\n\
            extern \"C\" int rd_test_ldsm_b_row(int lane, int ldb) \
            { return rd_ldsm_b_row(lane, ldb); }\n";
    let dir = std::env::temp_dir().join(format!("regiondrop-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cpp, so) = (dir.join("kernels.cpp"), dir.join("libkernels.so"));
    std::fs::write(&cpp, src).unwrap();
    let out = std::process::Command::new(&cxx)
        .args(["-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-o"])
        .arg(&so)
        .arg(&cpp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the kernels do not compile for the host:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: our own library, with no initialisers beyond the C++ runtime's.
    let lib = unsafe { libloading::Library::new(&so) }.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some(Emu {
        lib,
        one_at_a_time: std::sync::Mutex::new(()),
    })
}

impl Launcher for Emu {
    fn launch(&self, k: Kernel, dims: Dims, args: &[KArg]) -> Result<()> {
        // SAFETY: the symbol is RD_EMU_EXPORT's launcher of this kernel.
        let f: libloading::Symbol<HostLaunch> =
            unsafe { self.lib.get(format!("host_{}", k.entry()).as_bytes()) }.unwrap();
        // SAFETY: RD_EMU_EXPORT's description of this kernel's parameters.
        let kinds: libloading::Symbol<unsafe extern "C" fn(*mut u8, i32) -> i32> =
            unsafe { self.lib.get(format!("kinds_{}", k.entry()).as_bytes()) }.unwrap();
        let mut want = [0u8; 64];
        // SAFETY: writes at most 64 bytes into `want`.
        let n = unsafe { kinds(want.as_mut_ptr(), want.len() as i32) } as usize;
        let passed: String = args
            .iter()
            .map(|a| match a {
                KArg::Ptr(_) => 'p',
                KArg::I32(_) => 'i',
                KArg::F32(_) => 'f',
            })
            .collect();
        assert_eq!(
            passed,
            String::from_utf8_lossy(&want[..n.min(64)]),
            "{}: argument kinds passed (left) and declared (right)",
            k.entry()
        );
        let mut vals: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                KArg::Ptr(p) => p,
                KArg::I32(v) => v as u32 as u64,
                KArg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        // Little-endian: each value's first bytes hold the i32 / f32 / pointer.
        let mut ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        let _one = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        let g = [dims.grid.0, dims.grid.1, dims.grid.2];
        let b = [dims.block.0, dims.block.1, dims.block.2];
        // SAFETY: as on the GPU, the arguments match the kernel and address live host buffers.
        unsafe {
            f(
                g.as_ptr(),
                b.as_ptr(),
                ptrs.as_mut_ptr(),
                k.syncs_threads() as i32,
            )
        };
        Ok(())
    }

    fn gemm(&self, m: usize, n: usize, k: usize, a: u64, w: u64, c: u64, half: bool) -> Result<()> {
        // f16 operands are widened to f32 first: the products and sums are then the f32 ones,
        // as on the tensor cores with f32 accumulation (up to summation order).
        let widen = |base: u64, len: usize| -> Vec<f32> {
            // SAFETY: an f16 scratch or weight buffer of at least len values.
            let bits = unsafe { std::slice::from_raw_parts(base as *const u16, len) };
            bits.iter()
                .map(|&b| half::f16::from_bits(b).to_f32())
                .collect()
        };
        let (wa, ww);
        let (pa, pw) = if half {
            (wa, ww) = (widen(a, m * k), widen(w, k * n));
            (wa.as_ptr(), ww.as_ptr())
        } else {
            (a as *const f32, w as *const f32)
        };
        // SAFETY: A holds m·k, W k·n and C m·n floats (row-major), as on the device.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                pa,
                k as isize,
                1,
                pw,
                n as isize,
                1,
                0.0,
                c as *mut f32,
                n as isize,
                1,
            )
        };
        Ok(())
    }
}

/// Host memory standing in for the device: the plan's buffers, step constants and scratch.
struct HostDevice {
    bufs: Vec<Vec<f32>>,
    consts: Vec<Vec<f32>>,
    consts_u32: Vec<Vec<u32>>,
    consts_u16: Vec<Vec<u16>>,
    scratch: Vec<Vec<f32>>,
    scratch16: Vec<u16>,
    addrs: Addrs,
    /// The plan's tensor slots and its prepared host steps, as the backend keeps them.
    slots: Vec<Tensor>,
    generic: Vec<Option<GenericStep>>,
    tail: DeviceTail,
    consts_u64: Vec<Vec<u64>>,
    /// Graph frames run their segments on these lanes (else in program order).
    lanes: Option<lane_emu::LaneRun>,
}

/// Address of memory the kernels only read.
fn addr<T>(v: &[T]) -> u64 {
    v.as_ptr() as u64
}

/// Address of memory the kernels write.
fn addr_mut<T>(v: &mut [T]) -> u64 {
    v.as_mut_ptr() as u64
}

impl HostDevice {
    /// Mirrors `CudaBackend::with_options`' uploads.
    fn new(plan: &Plan, f16: bool, fused_conv_k: usize) -> Self {
        Self::with_tail(plan, f16, fused_conv_k, false)
    }

    /// As `new`, with the backend's device tail (Generic steps on the device) on or off.
    fn with_tail(plan: &Plan, f16: bool, fused_conv_k: usize, device_tail: bool) -> Self {
        let generic = gstregiondrop::backend::generic::prepare(plan);
        let tail = DeviceTail::of(plan, &generic, device_tail);
        let bufs: Vec<Vec<f32>> = plan.buffers.iter().map(|b| vec![0.0; b.len()]).collect();
        let (sa, sc) = geometry::scratch_sizes(plan);
        let mut d = HostDevice {
            bufs,
            consts: Vec::new(),
            consts_u32: Vec::new(),
            consts_u16: Vec::new(),
            scratch: vec![vec![0.0; sa.max(1)], vec![0.0; sc.max(1)]],
            scratch16: vec![0; if f16 { sa.max(1) } else { 1 }],
            addrs: Addrs::default(),
            slots: plan.initial_slots(),
            generic: Vec::new(),
            tail: tail.clone(),
            consts_u64: Vec::new(),
            lanes: None,
        };
        let mut steps: Vec<StepPtrs> = Vec::new();
        for (si, step) in plan.steps.iter().enumerate() {
            let p = match step {
                Step::Layer(l) => match &l.op {
                    LayerOp::Conv(c) => {
                        let w16 =
                            (f16 && !c.depthwise()).then(|| d.u16s(geometry::f16_bits(&c.weights)));
                        StepPtrs::Conv {
                            w: d.f32s(c.weights.clone()),
                            b: d.f32s(c.bias.clone()),
                            w16,
                        }
                    }
                    LayerOp::Resize { y, x } => StepPtrs::Resize([
                        d.u32s(y.i0.clone()),
                        d.u32s(y.i1.clone()),
                        d.f32s(y.frac.clone()),
                        d.u32s(x.i0.clone()),
                        d.u32s(x.i1.clone()),
                        d.f32s(x.frac.clone()),
                    ]),
                    LayerOp::Affine { scale, shift, .. } => StepPtrs::Affine {
                        scale: d.f32s(scale.clone()),
                        shift: d.f32s(shift.clone()),
                    },
                    LayerOp::Binary { rhs, .. } => match rhs {
                        Operand::View(_) => StepPtrs::None,
                        Operand::Channels(c) => StepPtrs::Rhs(d.f32s(c.clone()), c.len()),
                        Operand::Slot(s) => {
                            let n: usize = plan.slot_shapes[*s].iter().product();
                            StepPtrs::Rhs(d.f32s(vec![0.0; n]), n)
                        }
                    },
                    LayerOp::Gather { perm } => {
                        StepPtrs::Gather(d.u32s(perm.iter().map(|&i| i as u32).collect()))
                    }
                    LayerOp::Pool(_) | LayerOp::Unary(_) => StepPtrs::None,
                },
                Step::GlobalPool { input, .. } => StepPtrs::Out(d.f32s(vec![0.0; input.c])),
                Step::Export { .. } if tail.folded[si] => StepPtrs::None,
                Step::Export { input, .. } => {
                    let b = &plan.buffers[input.buf];
                    StepPtrs::Out(d.f32s(vec![0.0; input.c * b.h * b.w]))
                }
                Step::Rearrange { index, .. } => match tail.rearrange_source(plan, si) {
                    Some(from) => StepPtrs::Rearrange {
                        src: match from {
                            RearrangeSource::Buffer(b) => addr(&d.bufs[b]),
                            RearrangeSource::Result(r) => match steps[r] {
                                StepPtrs::Out(o) | StepPtrs::Rearrange { out: o, .. } => o,
                                _ => unreachable!("a device Rearrange reads a device result"),
                            },
                        },
                        index: d.u32s(tail.rearrange_index(plan, si)),
                        out: d.f32s(vec![0.0; index.data.len()]),
                        n: index.data.len(),
                    },
                    None => StepPtrs::None,
                },
                Step::Generic { .. } => StepPtrs::None,
            };
            steps.push(p);
        }
        // Device Generic steps, once every step's result has an address (as the backend fills
        // their pointer tables).
        let mut const_addr: Vec<Option<u64>> = vec![None; plan.slots.len()];
        for si in 0..plan.steps.len() {
            let Some(form) = tail.generic_out[si]
                .and(generic[si].as_ref())
                .and_then(|g| g.device_form())
            else {
                continue;
            };
            for s in form.reads() {
                if let (Some(c), None) = (&plan.slots[s], const_addr[s]) {
                    const_addr[s] = Some(d.f32s(c.data.clone()));
                }
            }
            let slot = |s: usize| {
                const_addr[s].unwrap_or_else(|| {
                    let w = tail.writer[s].expect("a device input has a device writer");
                    steps[w].result().expect("the writer has a result")
                })
            };
            let up = TailUpload::of(&form);
            let table: Vec<u64> = up.table_slots.iter().map(|&s| slot(s)).collect();
            let u32s: Vec<u64> = up.u32s.into_iter().map(|v| d.u32s(v)).collect();
            let table = d.u64s(table);
            let n = tail.len_of(plan, si);
            let out = d.f32s(vec![0.0; n]);
            steps[si] = StepPtrs::Tail(tail_ptrs(&form, slot, &u32s, table, out, n));
        }
        d.generic = generic;
        let counters_len = geometry::fused_counters_len(plan).max(1);
        let counters = d.u32s(vec![0; counters_len]);
        d.addrs = Addrs {
            bufs: d.bufs.iter_mut().map(|b| addr_mut(b)).collect(),
            steps,
            // In f16 the backend leaves the f32 operand scratch unallocated: a null address
            // here makes any use of it fault.
            scratch_a: if f16 { 0 } else { addr_mut(&mut d.scratch[0]) },
            scratch_a16: f16.then(|| addr_mut(&mut d.scratch16)),
            scratch_c: addr_mut(&mut d.scratch[1]),
            fused_conv_k,
            fuse: Vec::new(),
            fused_tile44: false,
            // The host kernels emulate mma.sync.
            fused_tc: f16,
            fused_pipe: false,
            split: geometry::SplitSpace {
                ws: addr_mut(&mut d.scratch[1]),
                ws_len: d.scratch[1].len(),
                counters,
                counters_len,
            },
        };
        d
    }

    // The Vecs' heap blocks never move once pushed (the outer Vec may).
    fn f32s(&mut self, mut v: Vec<f32>) -> u64 {
        let a = addr_mut(&mut v);
        self.consts.push(v);
        a
    }
    fn u32s(&mut self, mut v: Vec<u32>) -> u64 {
        // (Writable: the fused convolution's counters are kept here too.)
        let a = addr_mut(&mut v);
        self.consts_u32.push(v);
        a
    }
    fn u64s(&mut self, v: Vec<u64>) -> u64 {
        let a = addr(&v);
        self.consts_u64.push(v);
        a
    }
    fn u16s(&mut self, v: Vec<u16>) -> u64 {
        let a = addr(&v);
        self.consts_u16.push(v);
        a
    }

    fn slice(&self, p: u64, n: usize) -> &[f32] {
        // SAFETY: p is one of this device's allocations of at least n floats.
        unsafe { std::slice::from_raw_parts(p as *const f32, n) }
    }
}

/// One frame through `layers::launch_step`, as the backend's eager path (`graph_bucket` None) or
/// its CUDA-graph path (lists padded to the bucket) runs it; Export and GlobalPool results go to
/// their slots and slot operands to their layers (as `flush` and `upload_rhs` do), and the host
/// steps run as the backend runs them.
#[allow(clippy::too_many_arguments)]
fn run_frame(
    emu: &impl Launcher,
    dev: &mut HostDevice,
    plan: &Plan,
    tile: usize,
    rgb: &[u8],
    norm: &InputNorm,
    tiles: &[u32],
    graph_bucket: Option<usize>,
) {
    let grid = plan.grid(tile);
    // Input: rd_input_norm over the input tiles.
    let b0 = &plan.buffers[0];
    let (tw, th) = geometry::max_tile_px(&grid, b0);
    let d = geometry::tile_launch(tiles.len(), tw * th * 3)
        .unwrap()
        .unwrap();
    let taps = norm.channel_taps();
    emu.launch(
        Kernel::InputNorm,
        d,
        &[
            KArg::Ptr(addr(rgb)),
            KArg::Ptr(dev.addrs.bufs[0]),
            KArg::I32(b0.c as i32),
            KArg::I32(plan.input_w as i32),
            KArg::I32(plan.input_h as i32),
            KArg::Ptr(addr(tiles)),
            KArg::I32((grid.tile / b0.scale) as i32),
            KArg::I32(grid.cols as i32),
            KArg::F32(taps[0].1),
            KArg::F32(taps[1].1),
            KArg::F32(taps[2].1),
            KArg::F32(taps[0].2),
            KArg::F32(taps[1].2),
            KArg::F32(taps[2].2),
            KArg::I32(norm.bgr as i32),
        ],
    )
    .unwrap();
    let st = step_tiles(plan, tiles);
    let (mut eager, mut fixed) = (TilePacker::default(), FixedPacker::default());
    match graph_bucket {
        None => eager.pack(plan, &grid, &st.per_step),
        Some(b) => {
            fixed.pack(plan, &grid, &st.per_step, b);
        }
    }
    // Graph frames on lanes record each segment's launches and run them at its end.
    let mut lanes = dev.lanes.take().filter(|_| graph_bucket.is_some());
    let mut downloads = Vec::new();
    for (si, step) in plan.steps.iter().enumerate() {
        let ll = match (step, graph_bucket) {
            (Step::Layer(_), None) => {
                let s = eager.steps[si];
                LayerLists::at(addr(&eager.data), s)
            }
            (Step::Layer(l), Some(b)) => {
                let (t0, r0) = FixedPacker::offsets(si, b);
                LayerLists {
                    tiles: addr(&fixed.data) + (t0 * 4) as u64,
                    rows: addr(&fixed.data) + (r0 * 4) as u64,
                    n: b,
                    m: geometry::bucket_rows(&grid, &plan.buffers[l.output.buf], b),
                }
            }
            _ => LayerLists::NONE,
        };
        let mut copy = None;
        if let Step::Layer(l) = step {
            if let (
                LayerOp::Binary {
                    rhs: Operand::Slot(s),
                    ..
                },
                StepPtrs::Rhs(p, n),
            ) = (&l.op, dev.addrs.steps[si])
            {
                // From the device result where a device step wrote the slot (as the backend
                // copies it on the device), else from the host slot.
                let src = match dev.tail.writer[*s] {
                    Some(w) => dev.addrs.steps[w].result().unwrap(),
                    None => addr(&dev.slots[*s].data),
                };
                copy = Some((src, p, n.min(dev.slots[*s].data.len())));
            }
        }
        let host = match step {
            Step::Rearrange { .. } => dev.tail.rearrange_from[si].is_none(),
            Step::Generic { .. } => dev.tail.generic_out[si].is_none(),
            _ => false,
        } && !lanes.as_ref().is_some_and(|lr| lr.in_segment(si));
        if host {
            if let Some(lr) = &mut lanes {
                lr.drain(emu);
                finish_downloads(dev, plan, &mut downloads);
            }
        }
        match step {
            Step::Rearrange {
                input,
                index,
                output,
            } if host => {
                let out: Vec<f32> = index
                    .data
                    .iter()
                    .map(|&i| dev.slots[*input].data[i as usize])
                    .collect();
                dev.slots[*output].data = out;
            }
            Step::Generic { .. } if host => {
                let g = dev.generic[si]
                    .as_ref()
                    .expect("every Generic step is prepared");
                g.run(&mut dev.slots).unwrap();
            }
            _ => match &mut lanes {
                Some(lr) => lr.step(si, copy, |rec, addrs| {
                    layers::launch_step(rec, plan, &grid, addrs, si, ll)
                }),
                None => {
                    if let Some((src, dst, n)) = copy {
                        // SAFETY: the operand buffer and the source hold at least n floats.
                        unsafe {
                            std::ptr::copy_nonoverlapping(src as *const f32, dst as *mut f32, n)
                        };
                    }
                    layers::launch_step(emu, plan, &grid, &dev.addrs, si, ll).unwrap()
                }
            },
        }
        downloads.push(si);
        match &mut lanes {
            Some(lr) if lr.ends_segment(si) => {
                lr.drain(emu);
                finish_downloads(dev, plan, &mut downloads);
            }
            Some(_) => {}
            None => finish_downloads(dev, plan, &mut downloads),
        }
    }
    if let Some(mut lr) = lanes {
        lr.drain(emu);
        finish_downloads(dev, plan, &mut downloads);
        dev.lanes = Some(lr);
    }
}

/// Downloads the results of `steps` that the backend downloads into their slots, and empties
/// `steps`.
fn finish_downloads(dev: &mut HostDevice, plan: &Plan, steps: &mut Vec<usize>) {
    for si in steps.drain(..) {
        if let (Some(slot), Some(o)) = (dev.tail.slot_of(plan, si), dev.addrs.steps[si].result()) {
            if dev.tail.download[si] {
                let n = dev.slots[slot].data.len();
                let v = dev.slice(o, n).to_vec();
                dev.slots[slot].data.copy_from_slice(&v);
            }
        }
    }
}

/// Max |cpu − host kernels| relative to the scale: over every feature buffer, and over the graph
/// outputs.
fn differences(cpu: &mut CpuBackend, dev: &HostDevice, plan: &Plan) -> (f32, f32) {
    let mut worst = 0f32;
    for (b, host) in dev.bufs.iter().enumerate() {
        let want = cpu.read_buffer(b).unwrap();
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (&x, &y)) in want.iter().zip(host).enumerate() {
            assert!(y.is_finite(), "buffer {b}[{i}] is {y}");
            worst = worst.max((x - y).abs() / scale);
        }
    }
    let mut out_worst = 0f32;
    let got = gstregiondrop::backend::collect_outputs(plan, &dev.slots);
    for (t, g) in cpu.outputs().unwrap().iter().zip(&got) {
        assert_eq!(t.shape, g.shape);
        let scale = t.data.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (&x, &y) in t.data.iter().zip(&g.data) {
            assert!(y.is_finite(), "non-finite output");
            out_worst = out_worst.max((x - y).abs() / scale);
        }
    }
    (worst, out_worst)
}

/// The larger of [`differences`].
fn worst_difference(cpu: &mut CpuBackend, dev: &HostDevice, plan: &Plan) -> f32 {
    let (b, o) = differences(cpu, dev, plan);
    b.max(o)
}

/// How the host kernels run a frame.
struct Setup {
    f16: bool,
    /// `Addrs::fused_conv_k`, `Addrs::fused_tile44` and `Addrs::fused_pipe`.
    fused_conv_k: usize,
    tile44: bool,
    pipe: bool,
    /// The CUDA-graph bucket for a tile count (None: eager lists).
    graph_bucket: fn(usize) -> Option<usize>,
}

/// The smallest bucket holding `n` tiles of 32 pixels, as `geometry::bucket_of` picks it on the
/// GPU.
fn graph_bucket(n: usize) -> Option<usize> {
    let levels = geometry::bucket_levels(synthetic_plan().grid(32).len());
    geometry::bucket_of(&levels, n).map(|b| levels[b])
}

/// Dense, sparse and one-tile frames on the host kernels and on the CPU backend, in tiles of 32
/// pixels (a 4x3 grid).
fn agree(setup: Setup, tol: f32) {
    // An interior tile, a right-border and a corner tile; then the interior tile alone.
    agree_in_tiles(setup, 32, &[&[1, 3, 6, 11], &[6]], tol);
}

/// A dense frame, then a frame of each of `sparse`'s tile lists, in tiles of `tile` pixels.
fn agree_in_tiles(setup: Setup, tile: usize, sparse: &[&[u32]], tol: f32) {
    let Setup {
        f16,
        fused_conv_k,
        tile44,
        pipe,
        graph_bucket,
    } = setup;
    let Some(emu) = emu() else { return };
    let plan = synthetic_plan();
    let grid = plan.grid(tile);
    let norm = InputNorm {
        mean: [10.0, 20.0, 30.0],
        std: [50.0, 60.0, 70.0],
        bgr: true,
    };
    let mut cpu = CpuBackend::new(std::sync::Arc::new(synthetic_plan()), tile, 1).unwrap();
    let mut dev = HostDevice::new(&plan, f16, fused_conv_k);
    dev.addrs.fused_tile44 = tile44;
    dev.addrs.fused_pipe = pipe;
    let counting = Counting::new(emu);
    let all: Vec<u32> = (0..grid.len() as u32).collect();
    let frames = std::iter::once(&all[..]).chain(sparse.iter().copied());
    for (frame, tiles) in (0u64..).zip(frames) {
        let img = image(plan.input_w, plan.input_h, 1 + frame);
        cpu.write_input(&img, &norm, tiles).unwrap();
        cpu.run(&step_tiles(&plan, tiles)).unwrap();
        run_frame(
            &counting,
            &mut dev,
            &plan,
            tile,
            &img,
            &norm,
            tiles,
            graph_bucket(tiles.len()),
        );
        let d = worst_difference(&mut cpu, &dev, &plan);
        println!(
            "f16 {f16}, fused up to K = {fused_conv_k} (4x4 {tile44}, pipelined {pipe}), tile {tile}, bucket {:?}: frame {frame} ({} tiles): max relative difference {d:.2e}",
            graph_bucket(tiles.len()),
            tiles.len()
        );
        assert!(
            d <= tol,
            "frame {frame}: host kernels differ from the CPU by {d}"
        );
    }
    let piped = counting
        .counts
        .borrow()
        .keys()
        .any(|k| k.starts_with("rd_conv_rows_pipe"));
    assert_eq!(piped, pipe, "{:?}", counting.counts.borrow());
}

#[test]
fn kernels_on_the_host_match_the_cpu_backend() {
    let setup = Setup {
        f16: false,
        fused_conv_k: 0,
        tile44: false,
        pipe: false,
        graph_bucket: |_| None,
    };
    agree(setup, 1e-5);
}

#[test]
fn graph_lists_padded_with_no_tile_match_the_cpu_backend() {
    let setup = Setup {
        f16: false,
        fused_conv_k: 0,
        tile44: false,
        pipe: false,
        graph_bucket,
    };
    agree(setup, 1e-5);
}

#[test]
fn fused_convolutions_match_the_cpu_backend() {
    // With precision f16 the fused convolutions multiply f16 operands (rd_conv_rows_tc*).
    for (f16, tol) in [(false, 1e-5), (true, 2e-2)] {
        for tile44 in [false, true] {
            for graph_bucket in [|_| None, graph_bucket] {
                let setup = Setup {
                    f16,
                    fused_conv_k: usize::MAX,
                    tile44,
                    pipe: false,
                    graph_bucket,
                };
                agree(setup, tol);
            }
        }
    }
}

/// The pipelined convolution on the synthetic plan's layers: 3 × 3 convolutions of 16 channels a
/// group (several taps in one K step of 32), grouped, strided, dilated and wide ones, and a concat
/// view; on the tensor cores in both block shapes, and in f32; eager and graph lists, tiles of 32
/// and of 4 pixels.
#[test]
fn pipelined_convolutions_match_the_cpu_backend() {
    for tile44 in [false, true] {
        for graph_bucket in [|_| None, graph_bucket] {
            let setup = Setup {
                f16: true,
                fused_conv_k: usize::MAX,
                tile44,
                pipe: true,
                graph_bucket,
            };
            agree(setup, 2e-2);
        }
    }
    // In f32 (rd_conv_rows_pipe_f32*).
    for graph_bucket in [|_| None, graph_bucket] {
        let setup = Setup {
            f16: false,
            fused_conv_k: usize::MAX,
            tile44: false,
            pipe: true,
            graph_bucket,
        };
        agree(setup, 1e-5);
    }
    let n = synthetic_plan().grid(4).len() as u32;
    let every_ninth: Vec<u32> = (0..n).step_by(9).collect();
    let setup = Setup {
        f16: true,
        fused_conv_k: usize::MAX,
        tile44: false,
        pipe: true,
        graph_bucket: |_| None,
    };
    agree_in_tiles(setup, 4, &[&every_ninth], 2e-2);
}

/// Tiles of 4 pixels: 450 of them, more than rd_rows_prepare samples at once (RD_ROW_SAMPLES),
/// so its rows also search between the samples in global memory; graph lists padded up to the
/// whole grid.
#[test]
fn fused_convolutions_over_many_tiles_match_the_cpu_backend() {
    let plan = synthetic_plan();
    let n = plan.grid(4).len() as u32;
    assert!(n > 256, "{n} tiles: too few to sample");
    let two_of_three: Vec<u32> = (0..n).filter(|t| t % 3 != 1).collect();
    let every_ninth: Vec<u32> = (0..n).step_by(9).collect();
    for (f16, tol) in [(false, 1e-5), (true, 2e-2)] {
        for graph_bucket in [|_| None, |_| Some(synthetic_plan().grid(4).len())] {
            let setup = Setup {
                f16,
                fused_conv_k: usize::MAX,
                tile44: false,
                pipe: false,
                graph_bucket,
            };
            agree_in_tiles(setup, 4, &[&two_of_three, &every_ninth], tol);
        }
    }
}

#[test]
fn f16_operands_on_the_host_stay_within_rounding_of_the_cpu() {
    let setup = Setup {
        f16: true,
        fused_conv_k: 0,
        tile44: false,
        pipe: false,
        graph_bucket: |_| None,
    };
    agree(setup, 2e-2);
}

/// The change-detection kernels (tile scores, dilation, compaction, reference update) against
/// `ChangeDetector`, as tests/cuda_backend.rs runs them on a GPU.
#[test]
fn change_detection_kernels_on_the_host_match_the_detector() {
    use gstregiondrop::mask::{
        CellGrower, ChangeDetector, DiffMetric, MaskGrowth, RegionMask, TileGrid,
    };
    let Some(emu) = emu() else { return };
    let (w, h, tile) = (150usize, 100usize, 32usize);
    let grid = TileGrid::new(w, h, tile);
    let n = grid.len();
    let mut det = ChangeDetector::new(grid);
    let mut mask = RegionMask::empty(&grid);
    det.detect(
        &image(w, h, 3),
        10.0,
        DiffMetric::Max,
        MaskGrowth::whole_tiles(0),
        &mut mask,
    );
    let dims = |g: u32, b: u32| Dims {
        grid: (g, 1, 1),
        block: (b, 1, 1),
    };
    let (wi, hi) = (w as i32, h as i32);
    let margin = |tiles, margin| MaskGrowth { tiles, margin };
    for (metric, growth, code, thr) in [
        (DiffMetric::Max, MaskGrowth::whole_tiles(0), 0i32, 10.0f32),
        (DiffMetric::Mean, MaskGrowth::whole_tiles(1), 1, 0.05),
        (DiffMetric::Max, MaskGrowth::whole_tiles(2), 0, 10.0),
        // Growth by a margin: scores per 8-pixel cell (partial cells at the right and bottom),
        // grown into tiles on the host as the backend does.
        (DiffMetric::Max, margin(0, 16), 0, 10.0),
        (DiffMetric::Mean, margin(1, 8), 1, 0.05),
        (DiffMetric::Mean, margin(0, 24), 1, 0.5),
    ] {
        let cells = growth.cell_grid(&grid);
        let nc = cells.len();
        let img = changed_frame(det.reference(), w, h);
        let mut reference = det.reference().to_vec();
        let (mut score, mut raw, mut dilated) = (vec![0f32; nc], vec![0u8; nc], vec![0u8; n]);
        let (mut list, mut count) = (vec![0u32; n], vec![0u32; 1]);
        let (rf, sc, rw, dl) = (
            addr_mut(&mut reference),
            addr_mut(&mut score),
            addr_mut(&mut raw),
            addr_mut(&mut dilated),
        );
        let (ls, ct) = (addr_mut(&mut list), addr_mut(&mut count));
        let im = KArg::Ptr(addr(&img));
        let diff = |g: &TileGrid, out: u64| {
            emu.launch(
                Kernel::TileDiff,
                dims(g.len() as u32, 256),
                &[
                    im,
                    KArg::Ptr(rf),
                    KArg::I32(wi),
                    KArg::I32(hi),
                    KArg::I32(g.tile as i32),
                    KArg::I32(g.cols as i32),
                    KArg::I32(code),
                    KArg::F32(thr),
                    KArg::I32(0),
                    KArg::Ptr(sc),
                    KArg::Ptr(out),
                ],
            )
            .unwrap()
        };
        diff(&cells, rw);
        if cells == grid {
            emu.launch(
                Kernel::MaskDilate,
                dims((n as u32).div_ceil(128), 128),
                &[
                    KArg::Ptr(rw),
                    KArg::Ptr(dl),
                    KArg::I32(grid.cols as i32),
                    KArg::I32(grid.rows as i32),
                    KArg::I32(growth.tile_radius(tile) as i32),
                ],
            )
            .unwrap();
            emu.launch(
                Kernel::MaskCompact,
                dims(1, 1024),
                &[
                    KArg::Ptr(dl),
                    KArg::I32(n as i32),
                    KArg::Ptr(ls),
                    KArg::Ptr(ct),
                ],
            )
            .unwrap();
        } else {
            // As the backend's `device_mask`: under the mean metric the tiles are scored too.
            let mean = metric == DiffMetric::Mean;
            if mean {
                diff(&grid, dl);
            }
            let mut grower = CellGrower::default();
            let changed = grower.cells(&cells);
            raw.iter()
                .enumerate()
                .for_each(|(i, &v)| changed.set(i, v != 0));
            let mut fired = RegionMask::empty(&grid);
            dilated
                .iter()
                .enumerate()
                .for_each(|(i, &v)| fired.set(i, v != 0));
            let mut grown = RegionMask::empty(&grid);
            grower.grow(growth, &grid, mean.then_some(&fired), &mut grown);
            let mut tiles = Vec::new();
            grown.active_tiles(&mut tiles);
            list[..tiles.len()].copy_from_slice(&tiles);
            count[0] = tiles.len() as u32;
        }
        emu.launch(
            Kernel::RefUpdate,
            Dims {
                grid: (n as u32, 4, 1),
                block: (256, 1, 1),
            },
            &[
                im,
                KArg::Ptr(rf),
                KArg::I32(wi),
                KArg::I32(hi),
                KArg::I32(tile as i32),
                KArg::I32(grid.cols as i32),
                KArg::Ptr(ls),
                KArg::Ptr(ct),
            ],
        )
        .unwrap();
        let _ = (&score, &dilated);
        det.detect(&img, thr, metric, growth, &mut mask);
        let mut want = Vec::new();
        mask.active_tiles(&mut want);
        assert!(!want.is_empty());
        assert_eq!(
            &list[..count[0] as usize],
            &want[..],
            "{metric:?} {growth:?}"
        );
        assert_eq!(
            &reference[..],
            det.reference(),
            "{metric:?} {growth:?}: reference update"
        );
        println!("{metric:?} {growth:?}: tiles {want:?}");
    }
}

/// The three real models (assets of the set-up) on the host kernels against the CPU backend, f32
/// and f16 operands: a dense frame, then a frame recomputing every 7th tile and the last, on the
/// sample clip's frames.
/// Covers what the synthetic plan does not: the models' channel views and concatenations,
/// channel shuffles, and (YOLOv8n, DBNet) host steps between device segments.
#[test]
fn real_models_on_the_host_kernels_match_the_cpu_backend() {
    let Some(emu) = emu() else { return };
    for m in common::real_models() {
        let plan = common::load(&m);
        let (tile, all) = common::tiles_of(&plan);
        let grid = plan.grid(tile);
        let sparse: Vec<u32> = all
            .iter()
            .copied()
            .filter(|t| t % 7 == 2 || *t == grid.len() as u32 - 1)
            .collect();
        let frames = common::clip_frames(&plan, 40, 2);
        // f16: rounding only (DBNet, the most sensitive, measured 3.2e-2 of its probability
        // map); a wrong offset or layout is off by O(1).
        for (f16, device_tail, tol) in [
            (false, false, 1e-4),
            (false, true, 1e-4),
            (true, false, 5e-2),
        ] {
            let mut cpu = CpuBackend::new(plan.clone(), tile, 0).unwrap();
            let mut dev = HostDevice::with_tail(&plan, f16, 0, device_tail);
            for (img, tiles) in frames.iter().zip([&all, &sparse]) {
                cpu.write_input(img, &m.norm, tiles).unwrap();
                cpu.run(&step_tiles(&plan, tiles)).unwrap();
                run_frame(emu, &mut dev, &plan, tile, img, &m.norm, tiles, None);
                let (b, o) = differences(&mut cpu, &dev, &plan);
                println!(
                    "{} (f16 {f16}, device tail {device_tail}): {} of {} tiles: max relative difference {b:.2e} in the feature buffers, {o:.2e} in the outputs",
                    m.path,
                    tiles.len(),
                    grid.len()
                );
                assert!(
                    b.max(o) <= tol,
                    "{} (f16 {f16}, device tail {device_tail}): host kernels differ from the CPU by {b} / {o}",
                    m.path
                );
            }
        }
    }
}

/// The dense tail of the real models: a Rearrange runs on the device where its input is a device
/// result, and a device result comes down only where the host reads its slot. NanoDet's six head
/// outputs are Export → Rearrange chains: all six run on the device and only the outputs come
/// down. (The host-kernel tests above check the values: a missing download fails them.)
#[test]
fn device_tail_downloads_what_the_host_reads() {
    for m in common::real_models() {
        let plan = common::load(&m);
        let generic = gstregiondrop::backend::generic::prepare(&plan);
        for device_tail in [false, true] {
            let t = DeviceTail::of(&plan, &generic, device_tail);
            let count = |kind: fn(&Step) -> bool| {
                let all: Vec<usize> = (0..plan.steps.len())
                    .filter(|&si| kind(&plan.steps[si]))
                    .collect();
                let dev = all.iter().filter(|&&si| t.on_device(&plan, si)).count();
                (dev, all.len())
            };
            let rearranges = count(|s| matches!(s, Step::Rearrange { .. }));
            let generics = count(|s| matches!(s, Step::Generic { .. }));
            let writing = (0..plan.steps.len())
                .filter(|&si| generic[si].as_ref().is_some_and(|g| g.writes_any()))
                .count();
            let down: Vec<usize> = (0..plan.steps.len()).filter(|&si| t.download[si]).collect();
            println!(
                "{} (device tail {device_tail}): {rearranges:?} Rearrange and {generics:?} Generic steps on the device, {} results downloaded",
                m.path,
                down.len()
            );
            // Every output slot whose last writer runs on the device is downloaded.
            for (name, o) in &plan.outputs {
                let writer = (0..plan.steps.len())
                    .rev()
                    .find(|&si| match &plan.steps[si] {
                        Step::Generic { outputs, .. } => outputs.contains(o),
                        Step::Rearrange { output, .. } => output == o,
                        Step::GlobalPool { slot, .. } | Step::Export { slot, .. } => slot == o,
                        Step::Layer(_) => false,
                    });
                if let Some(w) = writer.filter(|&w| t.on_device(&plan, w)) {
                    assert!(t.download[w], "{}: output {name} not downloaded", m.path);
                }
            }
            let downloaded = || {
                let mut v: Vec<usize> =
                    down.iter().filter_map(|&si| t.slot_of(&plan, si)).collect();
                v.sort_unstable();
                v
            };
            let mut outputs: Vec<usize> = plan.outputs.iter().map(|(_, s)| *s).collect();
            outputs.sort_unstable();
            if m.path.contains("nanodet") {
                assert_eq!(rearranges, (6, 6), "{}", m.path);
                // Each Export feeds only its Rearrange, which gathers from the feature buffer.
                let folded = (0..plan.steps.len()).filter(|&si| t.folded[si]).count();
                assert_eq!(
                    folded, 6,
                    "{}: Exports folded into their Rearranges",
                    m.path
                );
                assert_eq!(
                    downloaded(),
                    outputs,
                    "{}: downloads other than the outputs",
                    m.path
                );
            }
            // With it on, YOLOv8n's whole decode tail and DBNet's squeeze-excitation steps run on
            // the device (DBNet's slot operands copied there): only the outputs come down.
            if device_tail && !m.path.contains("nanodet") {
                assert_eq!(
                    generics.0, writing,
                    "{}: Generic steps left on the host",
                    m.path
                );
                assert_eq!(
                    downloaded(),
                    outputs,
                    "{}: downloads other than the outputs",
                    m.path
                );
            }
        }
    }
}

/// rd_letterbox gives the CPU letterbox's bytes exactly: packed (3 and 4 bytes per pixel, padded
/// rows, channel orders), I420 and NV12; down- and upscaling; borders on either axis.
#[test]
fn letterbox_kernel_equals_the_cpu_letterbox() {
    use gstregiondrop::backend::cuda::layers::{launch_letterbox, LetterboxArgs};
    use gstregiondrop::preprocess::{letterbox, LetterboxTaps, PixelSource, RandomFrames};
    let Some(emu) = emu() else { return };
    let mut rng = gstregiondrop::rng::Lcg(9);
    for (w, h, nw, nh) in [(641, 359, 416, 416), (97, 203, 160, 128), (13, 7, 64, 48)] {
        let f = RandomFrames::new(w, h, &mut rng);
        let (bgrx, rgb, i420, nv12) = (f.bgrx(), f.rgb(), f.i420(), f.nv12());
        let taps = LetterboxTaps::new(w, h, nw, nh);
        let sources: [(&str, &dyn PixelSource, [u64; 3]); 4] = [
            ("BGRx", &bgrx, [addr(&f.bgrx), 0, 0]),
            ("RGB", &rgb, [addr(&f.rgb), 0, 0]),
            ("I420", &i420, [addr(&f.y), addr(&f.u), addr(&f.v)]),
            ("NV12", &nv12, [addr(&f.y), addr(&f.u), 0]),
        ];
        for (name, src, planes) in sources {
            let mut want = vec![0u8; nw * nh * 3];
            assert_eq!(letterbox(src, nw, nh, &mut want), taps.lb);
            let mut got = vec![0u8; nw * nh * 3];
            let args = LetterboxArgs {
                planes,
                taps: [
                    addr(&taps.cols_i),
                    addr(&taps.cols_a),
                    addr(&taps.rows_i),
                    addr(&taps.rows_a),
                ],
                out: addr_mut(&mut got),
                nw,
                nh,
            };
            launch_letterbox(emu, &src.planes(), &args).unwrap();
            let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differing, 0,
                "{name} {w}x{h} -> {nw}x{nh}: {differing} bytes differ"
            );
        }
    }
}

/// NanoDet on a clip frame with three scattered tiles active: the frame both fused-convolution
/// tests run, eagerly and with the lists of the CUDA-graph bucket that holds three tiles.
struct ScatteredTiles {
    m: common::RealModel,
    plan: Arc<Plan>,
    tile: usize,
    tiles: [u32; 3],
    img: Vec<u8>,
    bucket: Option<usize>,
}

impl ScatteredTiles {
    fn new() -> Self {
        let m = common::real_models().remove(0);
        let plan = common::load(&m);
        let tile = 32.max(plan.max_scale);
        let grid = plan.grid(tile);
        let tiles = [2u32, grid.len() as u32 / 2, grid.len() as u32 - 1];
        let img = common::clip_frames(&plan, 40, 1).remove(0);
        let levels = geometry::bucket_levels(grid.len());
        let bucket = geometry::bucket_of(&levels, tiles.len()).map(|b| levels[b]);
        ScatteredTiles {
            m,
            plan,
            tile,
            tiles,
            img,
            bucket,
        }
    }

    /// The CPU backend after this frame.
    fn cpu(&self) -> CpuBackend {
        let mut cpu = CpuBackend::new(self.plan.clone(), self.tile, 0).unwrap();
        cpu.write_input(&self.img, &self.m.norm, &self.tiles)
            .unwrap();
        cpu.run(&step_tiles(&self.plan, &self.tiles)).unwrap();
        cpu
    }

    /// This frame through `dev` on the host kernels (`run_frame`).
    fn run(&self, emu: &impl Launcher, dev: &mut HostDevice, graph_bucket: Option<usize>) {
        run_frame(
            emu,
            dev,
            &self.plan,
            self.tile,
            &self.img,
            &self.m.norm,
            &self.tiles,
            graph_bucket,
        );
    }
}

/// The fused convolution (rd_conv_rows) on NanoDet's real layer shapes (1×1 and 3×3 convs of up
/// to 256 channels and K up to 2304, stride 2, channel views), on a frame of three scattered tiles,
/// with eager lists and with the CUDA-graph lists of the next bucket (rows past the frame's last
/// pixel, NO_TILE entries).
#[test]
fn fused_convolutions_on_nanodet_match_the_cpu_backend() {
    let Some(emu) = emu() else { return };
    let f = ScatteredTiles::new();
    let (m, plan, tiles, bucket) = (&f.m, &f.plan, &f.tiles, f.bucket);
    // Every convolution fused; and every other one (`Addrs::fuse`, as the start-up timing may
    // choose), so fused layers split K in the GEMM scratch between unfused ones.
    let alternate: Vec<ConvWay> = (0..plan.steps.len())
        .map(|si| [ConvWay::Fused, ConvWay::Apart][si % 2])
        .collect();
    for (graph_bucket, tile44, mixed) in [
        (None, false, false),
        (bucket, false, false),
        (bucket, true, false),
        (bucket, false, true),
    ] {
        let mut cpu = f.cpu();
        let mut dev = HostDevice::new(plan, false, if mixed { 0 } else { usize::MAX });
        dev.addrs.fused_tile44 = tile44;
        if mixed {
            dev.addrs.fuse = alternate.clone();
        }
        f.run(emu, &mut dev, graph_bucket);
        let (b, o) = differences(&mut cpu, &dev, plan);
        println!(
            "{}: fused (4x4 {tile44}, every other layer {mixed}), tiles {tiles:?}, bucket {graph_bucket:?}: max relative difference {b:.2e} / {o:.2e}",
            m.path
        );
        assert!(
            b.max(o) <= 1e-4,
            "fused convolutions differ from the CPU by {b} / {o}"
        );
    }
}

/// Where rd_conv_rows_tc loads each mma.sync.m16n8k16 register from (rd_mma_fragments) and where
/// it puts each accumulator (rd_mma_acc_pos), against the fragment layout the PTX ISA gives for
/// f16 operands and f32 accumulators, written out here independently: every element of A and B
/// reaches the lane and register the instruction expects it in, and every accumulator goes to its
/// place in D. (The host emulation of the instruction computes from shared memory, so only this
/// test covers those offsets; the loads and the asm operand order themselves compile only for a
/// GPU.)
#[test]
fn mma_fragments_follow_the_ptx_layout() {
    let Some(emu) = emu() else { return };
    type Frag = unsafe extern "C" fn(i32, i32, i32, *mut i32, *mut i32);
    type AccPos = unsafe extern "C" fn(i32, i32, *mut i32, *mut i32);
    // SAFETY: the test helpers appended to the library in `build`.
    let (frag, acc_pos): (libloading::Symbol<Frag>, libloading::Symbol<AccPos>) = unsafe {
        (
            emu.lib.get(b"rd_test_mma_fragments").unwrap(),
            emu.lib.get(b"rd_test_mma_acc_pos").unwrap(),
        )
    };
    // Different (even) pitches, so that one used for the other shows.
    let (lda, ldb) = (40usize, 24usize);
    let (mut seen_a, mut seen_b) = (vec![0u32; 16 * lda], vec![0u32; 16 * ldb]);
    let mut seen_d = [[0u32; 8]; 16];
    for lane in 0..32i32 {
        let (g, q) = ((lane / 4) as usize, (lane % 4) as usize);
        let (mut a, mut b) = ([0i32; 4], [0i32; 4]);
        // SAFETY: writes four ints each.
        unsafe { frag(lane, lda as i32, ldb as i32, a.as_mut_ptr(), b.as_mut_ptr()) };
        // Each A register is one 4-byte load of two f16.
        assert!(a.iter().all(|o| o % 2 == 0), "lane {lane}: {a:?}");
        // A: element i (0..8) of the lane is in register i / 2 (low half first); row g for
        // i in {0, 1, 4, 5}, else g + 8; column 2q + (i & 1), plus 8 for i >= 4.
        for i in 0..8 {
            let row = g + if matches!(i, 0 | 1 | 4 | 5) { 0 } else { 8 };
            let col = 2 * q + (i & 1) + if i >= 4 { 8 } else { 0 };
            let at = a[i / 2] as usize + (i & 1);
            assert_eq!(at, row * lda + col, "lane {lane} A element {i}");
            seen_a[at] += 1;
        }
        // B (16 x 8, stored row by row): element i (0..4), register i / 2, low half first;
        // k = 2q + (i & 1), plus 8 for i >= 2; column g. Each element is loaded on its own.
        for (i, &at) in b.iter().enumerate() {
            let k = 2 * q + (i & 1) + if i >= 2 { 8 } else { 0 };
            let at = at as usize;
            assert_eq!(at, k * ldb + g, "lane {lane} B element {i}");
            seen_b[at] += 1;
        }
        // D: accumulator i at row g (i < 2) or g + 8, column 2q + (i & 1).
        for i in 0..4 {
            let (mut r, mut c) = (0i32, 0i32);
            // SAFETY: writes two ints.
            unsafe { acc_pos(lane, i as i32, &mut r, &mut c) };
            let want = (g + if i >= 2 { 8 } else { 0 }, 2 * q + (i & 1));
            assert_eq!(
                (r as usize, c as usize),
                want,
                "lane {lane} accumulator {i}"
            );
            seen_d[want.0][want.1] += 1;
        }
    }
    // The warp covers each element exactly once.
    for r in 0..16 {
        for c in 0..16 {
            assert_eq!(seen_a[r * lda + c], 1, "A ({r}, {c})");
        }
    }
    for j in 0..8 {
        for k in 0..16 {
            assert_eq!(seen_b[k * ldb + j], 1, "B (k {k}, column {j})");
        }
    }
    assert!(seen_d.iter().flatten().all(|&n| n == 1), "D");
}

/// The pipelined kernel loads B's fragments of two 16 x 8 tiles with one
/// ldmatrix.m8n8.x4.trans.b16 from the rows rd_ldsm_b_row gives: as the PTX ISA describes it,
/// lanes 8m .. 8m + 7 give the addresses of matrix m's eight rows (8 halves each), and with .trans
/// lane t gets matrix m's elements (row 2 (t % 4), column t / 4) and (row 2 (t % 4) + 1, same
/// column) in register m. Replayed here, every lane's registers 0, 1 (2, 3) must hold what
/// rd_mma_fragments loads for its B registers of the first (second) tile, which the test above
/// checks against the instruction's layout. (The ldmatrix itself runs only on a GPU.)
#[test]
fn ldmatrix_rows_give_the_mma_b_fragments() {
    let Some(emu) = emu() else { return };
    type Row = unsafe extern "C" fn(i32, i32) -> i32;
    type Frag = unsafe extern "C" fn(i32, i32, i32, *mut i32, *mut i32);
    // SAFETY: the test helpers appended to the library in `build`.
    let (row, frag): (libloading::Symbol<Row>, libloading::Symbol<Frag>) = unsafe {
        (
            emu.lib.get(b"rd_test_ldsm_b_row").unwrap(),
            emu.lib.get(b"rd_test_mma_fragments").unwrap(),
        )
    };
    for ldb in [40i32, 72] {
        // SAFETY: a pure function of its arguments.
        let rows: Vec<usize> = (0..32).map(|l| unsafe { row(l, ldb) } as usize).collect();
        // Every row 16-byte aligned where the tile is, and inside the two tiles.
        assert!(rows
            .iter()
            .all(|&r| r % 8 == 0 && r % ldb as usize + 8 <= 16));
        for lane in 0..32usize {
            let (g, q) = (lane / 4, lane % 4);
            let (mut a, mut b) = ([0i32; 4], [0i32; 4]);
            // SAFETY: writes four ints each.
            unsafe { frag(lane as i32, 16, ldb, a.as_mut_ptr(), b.as_mut_ptr()) };
            for m in 0..4 {
                // The two halves of register m of this lane, as element offsets.
                let got = [0, 1].map(|h| rows[8 * m + 2 * q + h] + g);
                let tile = 8 * (m / 2);
                let want = match m % 2 {
                    0 => [b[0], b[1]],
                    _ => [b[2], b[3]],
                }
                .map(|o| o as usize + tile);
                assert_eq!(got, want, "ldb {ldb}, lane {lane}, register {m}");
            }
        }
    }
}

/// The tensor-core fused convolution (rd_conv_rows_tc, precision f16) on NanoDet's real layer
/// shapes against the unfused f16 path (rd_im2col_h, f16 GEMM, scatter), which rounds the same
/// operands to f16 and differs only in the order of the f32 sums; and both against the CPU.
#[test]
fn tensor_core_fused_convolutions_match_the_unfused_f16_path() {
    let Some(emu) = emu() else { return };
    let f = ScatteredTiles::new();
    let (m, plan, bucket) = (&f.m, &f.plan, f.bucket);
    let mut cpu = f.cpu();
    for graph_bucket in [None, bucket] {
        let mut unfused = HostDevice::new(plan, true, 0);
        f.run(emu, &mut unfused, graph_bucket);
        let mut fused = HostDevice::new(plan, true, usize::MAX);
        // Both block shapes: 32 x 64 (64 x 32) eager, 64 x 64 (128 x 32) from the graph lists.
        fused.addrs.fused_tile44 = graph_bucket.is_some();
        let counting = Counting::new(emu);
        f.run(&counting, &mut fused, graph_bucket);
        let counts = counting.counts.into_inner();
        let tc: usize = counts
            .iter()
            .filter(|(k, _)| k.starts_with("rd_conv_rows_tc"))
            .map(|(_, n)| *n)
            .sum();
        assert!(tc > 0, "no tensor-core launch: {counts:?}");
        assert!(
            counts
                .keys()
                .filter(|k| k.starts_with("rd_conv_rows"))
                .all(|k| k.starts_with("rd_conv_rows_tc")),
            "an f32 fused kernel under f16: {counts:?}"
        );
        let mut between = 0f32;
        for (b, (x, y)) in unfused.bufs.iter().zip(&fused.bufs).enumerate() {
            let scale = x.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (i, (&x, &y)) in x.iter().zip(y).enumerate() {
                assert!(y.is_finite(), "buffer {b}[{i}] is {y}");
                between = between.max((x - y).abs() / scale);
            }
        }
        let (b, o) = differences(&mut cpu, &fused, plan);
        let (ub, uo) = differences(&mut cpu, &unfused, plan);
        println!(
            "{}: {tc} tensor-core launches, bucket {graph_bucket:?}: max relative difference from unfused f16 {between:.2e}; from the CPU {b:.2e} / {o:.2e} (unfused f16: {ub:.2e} / {uo:.2e})",
            m.path
        );
        assert!(between <= 5e-3, "fused and unfused f16 differ by {between}");
        assert!(
            b.max(o) <= 2.0 * ub.max(uo).max(1e-3),
            "fused f16 is further from the CPU ({b}, {o}) than unfused f16 ({ub}, {uo})"
        );
    }
}

/// The pipelined convolution (rd_conv_rows_pipe*) computes what the fused kernel it mirrors does,
/// bit for bit: rd_conv_rows_tc in f16 (the same f16 rounding of the same taps), rd_conv_rows in
/// f32, with the same sums in the same order, only copied to shared memory ahead by cp.async (at
/// once on the host). On NanoDet's layers (the 3-channel first one is not pipeable and stays
/// unpiped), three scattered tiles with eager and graph lists: K split up to 16 ways (up to 5
/// steps a split, past the 4 stages of the ring on K = 2304), and not split (long K loops); in the
/// 2 × 4 blocks (4 and 3 stages; f32: 3) and the tensor cores' larger _t44 ones (3 and 2 stages);
/// every convolution piped, and (f16, eager, split) every other one, as the start-up timing may
/// mix them.
#[test]
fn pipelined_convolutions_equal_the_fused_kernel() {
    let Some(emu) = emu() else { return };
    let f = ScatteredTiles::new();
    let plan = &f.plan;
    let mixed: Vec<ConvWay> = (0..plan.steps.len())
        .map(|si| [ConvWay::Piped, ConvWay::Fused][si % 2])
        .collect();
    let run = |f16: bool,
               bucket: Option<usize>,
               split: bool,
               tile44: bool,
               setup: &dyn Fn(&mut Addrs)| {
        let mut dev = HostDevice::new(plan, f16, usize::MAX);
        dev.addrs.fused_tile44 = tile44;
        if !split {
            dev.addrs.split.counters_len = 0;
        }
        setup(&mut dev.addrs);
        let counting = Counting::new(emu);
        f.run(&counting, &mut dev, bucket);
        (dev, counting.counts.into_inner())
    };
    // (f16, graph bucket, K split, 4 x 4 blocks)
    let configs = [
        (true, None, true, false),
        (true, f.bucket, true, true),
        (true, None, false, false),
        (true, None, false, true),
        (false, f.bucket, true, false),
        (false, None, false, false),
    ];
    let is_piped = |k: &str| k.starts_with("rd_conv_rows_pipe");
    for (f16, bucket, split, tile44) in configs {
        let (fused, fused_counts) = run(f16, bucket, split, tile44, &|_| {});
        assert!(!fused_counts.keys().any(|k| is_piped(k)));
        let every: &dyn Fn(&mut Addrs) = &|a| a.fused_pipe = true;
        let other: &dyn Fn(&mut Addrs) = &|a| a.fuse = mixed.clone();
        let mut setups = vec![("every one piped", every)];
        if f16 && bucket.is_none() && split && !tile44 {
            setups.push(("every other one piped", other));
        }
        for (name, setup) in setups {
            let (piped, counts) = run(f16, bucket, split, tile44, setup);
            let sum = |piped: bool| -> usize {
                counts
                    .iter()
                    .filter(|(k, _)| k.starts_with("rd_conv_rows") && is_piped(k) == piped)
                    .map(|(_, n)| *n)
                    .sum()
            };
            let (n_piped, n_not) = (sum(true), sum(false));
            let what =
                format!("f16 {f16}, bucket {bucket:?}, K split {split}, 4x4 {tile44}, {name}");
            println!(
                "{}, {what}: {n_piped} pipelined launches, {n_not} not",
                f.m.path
            );
            assert!(n_piped > 0 && n_not > 0, "{what}: {counts:?}");
            // Under f16 every fused kernel is on the tensor cores; the f32 pipelined kernels
            // are the f32 ones.
            let tensor_cores = counts.keys().all(|k| {
                !k.starts_with("rd_conv_rows")
                    || k.starts_with("rd_conv_rows_tc")
                    || (is_piped(k) && !k.starts_with("rd_conv_rows_pipe_f32"))
            });
            assert_eq!(tensor_cores, f16, "{what}: {counts:?}");
            assert_eq!(
                counts.keys().any(|k| k.ends_with("_t44")),
                tile44,
                "{what}: {counts:?}"
            );
            for (b, (x, y)) in fused.bufs.iter().zip(&piped.bufs).enumerate() {
                let differ = x
                    .iter()
                    .zip(y)
                    .position(|(x, y)| x.to_bits() != y.to_bits());
                assert!(differ.is_none(), "{what}: buffer {b} differs at {differ:?}");
            }
        }
    }
}

/// The device forms of the host tail's kernels (cuda/tail.cu) against the host kernels on random
/// values: a grouped, padded, strided 3×3 convolution with bias, softmax over a middle axis,
/// binary ops with broadcast maps, an activation, and copy runs from two sources.
#[test]
fn tail_kernels_match_the_host_kernels() {
    use gstregiondrop::backend::generic::DeviceForm;
    use gstregiondrop::model::act::Act;
    use gstregiondrop::model::eval::{self, ConvGeom};
    use gstregiondrop::model::onnx::{Attr, Node};
    let Some(emu) = emu() else { return };
    let mut rng = gstregiondrop::rng::Lcg(21);
    let close = |what: &str, got: &[f32], want: &[f32]| {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    };
    // Slots by address: the form's slot numbers index this table.
    let run =
        |form: &DeviceForm, slots: &[Vec<f32>], u32s: &[Vec<u32>], table: &[u64], n: usize| {
            let mut out = vec![f32::NAN; n];
            let ptrs: Vec<u64> = u32s.iter().map(|v| addr(v)).collect();
            let t = tail_ptrs(
                form,
                |s| addr(&slots[s]),
                &ptrs,
                addr(table),
                addr_mut(&mut out),
                n,
            );
            layers::launch_tail(emu, t).unwrap();
            out
        };

    let node = Node {
        op: "Conv".into(),
        name: "tail_conv".into(),
        inputs: Vec::new(),
        outputs: vec!["y".into()],
        attrs: [
            ("group".to_string(), Attr::Int(2)),
            ("pads".to_string(), Attr::Ints(vec![1, 0, 1, 2])),
            ("strides".to_string(), Attr::Ints(vec![2, 1])),
        ]
        .into_iter()
        .collect(),
    };
    let geom = ConvGeom::new(&node, &[1, 4, 7, 9], &[6, 2, 3, 3], Some(&[6])).unwrap();
    let slots = vec![
        rng.vec(4 * 7 * 9, 1.0),
        rng.vec(6 * 2 * 9, 1.0),
        rng.vec(6, 1.0),
    ];
    let n = geom.co * geom.oh * geom.ow;
    let mut want = vec![0.0; n];
    geom.run(&slots[0], &slots[1], Some(&slots[2]), &mut want);
    let form = DeviceForm::Conv {
        x: 0,
        w: 1,
        b: Some(2),
        geom: &geom,
    };
    close("conv", &run(&form, &slots, &[], &[0], n), &want);

    let ext = (2, 5, 7);
    let slots = vec![rng.vec(70, 4.0)];
    let mut want = vec![0.0; 70];
    eval::softmax_into(&slots[0], &mut want, ext);
    let form = DeviceForm::Softmax {
        input: 0,
        extents: ext,
    };
    close("softmax", &run(&form, &slots, &[], &[0], 70), &want);

    // out[j] = a[j / 4] - b[j % 4] over 12 values.
    let slots = vec![rng.vec(3, 2.0), rng.vec(4, 2.0)];
    let (am, bm): (Vec<u32>, Vec<u32>) = (0..12u32).map(|j| (j / 4, j % 4)).unzip();
    let want: Vec<f32> = (0..12).map(|j| slots[0][j / 4] - slots[1][j % 4]).collect();
    let form = DeviceForm::Binary {
        a: 0,
        b: 1,
        op: gstregiondrop::model::plan::BinOp::Sub,
        a_map: Some(&am),
        b_map: Some(&bm),
    };
    let up = TailUpload::of(&form);
    close("binary", &run(&form, &slots, &up.u32s, &[0], 12), &want);

    let slots = vec![rng.vec(9, 3.0)];
    let mut want = slots[0].clone();
    Act::HardSigmoid(0.2, 0.5).apply_slice(&mut want);
    let form = DeviceForm::Act {
        input: 0,
        act: Act::HardSigmoid(0.2, 0.5),
    };
    close("act", &run(&form, &slots, &[], &[0], 9), &want);

    // out = b[2..5] ++ a[0..4] ++ b[0..1]
    let slots = vec![rng.vec(4, 1.0), rng.vec(6, 1.0)];
    let runs = vec![[0, 2, 1], [3, 0, 0], [7, 0, 1]];
    let want: Vec<f32> = [&slots[1][2..5], &slots[0][0..4], &slots[1][0..1]].concat();
    let form = DeviceForm::Copy { runs };
    let up = TailUpload::of(&form);
    let table: Vec<u64> = up.table_slots.iter().map(|&s| addr(&slots[s])).collect();
    close("copy", &run(&form, &slots, &up.u32s, &table, 8), &want);
}

/// Selects candidates with rd_select on the host-compiled kernel from the outputs at the
/// addresses (and lengths) `output` gives; None where the device cannot select for this gate.
fn select_on_emu(
    emu: &Emu,
    gate: &gstregiondrop::detect::Gate,
    output: impl Fn(usize) -> Option<(u64, usize)>,
) -> Option<gstregiondrop::detect::Candidates> {
    use gstregiondrop::backend::cuda::select::{launch_select, SelectArgs, SelectTable, INTS};
    let t = SelectTable::new(gate, output)?;
    let mut count = vec![0u32; 1];
    let mut ids = vec![u32::MAX; t.total];
    let mut rows = vec![f32::NAN; t.total * t.row_len];
    let args = SelectArgs {
        levels: addr(&t.levels),
        n_levels: t.levels.len() / INTS,
        parts: addr(&t.parts),
        total: t.total,
        threshold: gate.threshold,
        count: addr_mut(&mut count),
        ids: addr_mut(&mut ids),
        rows: addr_mut(&mut rows),
        row_len: t.row_len,
    };
    launch_select(emu, &args).unwrap();
    let n = count[0] as usize;
    let mut c = gstregiondrop::detect::Candidates {
        threshold: gate.threshold,
        row_len: t.row_len,
        ids: ids[..n].to_vec(),
        rows: rows[..n * t.row_len].to_vec(),
        ..Default::default()
    };
    c.sort();
    Some(c)
}

/// The device selection (cuda/select.cu) picks the same anchors with the same rows as the
/// decoder's gate on the host, and the detections decoded from either are equal: NanoDet and
/// the YOLOv8-shaped model on the CPU backend's outputs for a clip frame (at the operating
/// threshold and at the scoring floor), and a YOLOv5-shaped output (objectness) of random values.
#[test]
fn device_selection_matches_the_host_gate() {
    use gstregiondrop::detect::{self, Candidates, DecodeParams, DecoderKind, Gate};
    let Some(emu) = emu() else { return };
    let compare = |what: &str, kind: DecoderKind, outs: &[&Tensor], w: usize, h: usize| {
        let shapes: Vec<Vec<usize>> = outs.iter().map(|t| t.shape.clone()).collect();
        for threshold in [detect::SCORING_CONF_FLOOR, 0.35] {
            let gate = Gate::new(kind, &shapes, w, h, threshold).unwrap();
            let mut host = Candidates::default();
            gate.select(outs, &mut host).unwrap();
            let dev = select_on_emu(emu, &gate, |i| {
                outs.get(i).map(|o| (addr(&o.data), o.data.len()))
            })
            .expect("the device can select");
            println!(
                "{what}: {} of {} anchors pass {threshold}",
                dev.len(),
                gate.levels.iter().map(|l| l.anchors).sum::<usize>()
            );
            // (The YOLOv8-shaped model's classes are rare in the clip: candidates at the floor.)
            if threshold == detect::SCORING_CONF_FLOOR {
                assert!(!host.is_empty(), "{what}: no candidate at {threshold}");
            }
            let sorted = |c: &Candidates| -> Vec<(u32, Vec<f32>)> {
                c.order
                    .iter()
                    .map(|&k| {
                        let id = c.ids[k as usize];
                        let (l, _) = gate.locate(id).expect("a candidate of the outputs");
                        (id, c.row(k)[..l.row_len()].to_vec())
                    })
                    .collect()
            };
            assert_eq!(sorted(&dev), sorted(&host), "{what} at {threshold}");
            let p = DecodeParams {
                conf_threshold: threshold,
                ..DecodeParams::default()
            };
            assert_eq!(
                detect::decode_candidates(&gate, &dev, &p).unwrap(),
                detect::decode(kind, outs, w, h, &p).unwrap(),
                "{what} at {threshold}: detections"
            );
        }
    };
    for common::Detector {
        model: m,
        plan,
        kind,
        ..
    } in common::detectors()
    {
        let (tile, all) = common::tiles_of(&plan);
        let mut cpu = CpuBackend::new(plan.clone(), tile, 0).unwrap();
        let img = &common::clip_frames(&plan, 60, 1)[0];
        cpu.write_input(img, &m.norm, &all).unwrap();
        cpu.run(&step_tiles(&plan, &all)).unwrap();
        let outs = cpu.outputs().unwrap();
        let refs: Vec<&Tensor> = outs.iter().collect();
        compare(m.path, kind, &refs, plan.input_w, plan.input_h);
    }
    let mut rng = gstregiondrop::rng::Lcg(5);
    let (n, c) = (300, 6);
    let v5 = Tensor::new(
        vec![1, n, 5 + c],
        (0..n * (5 + c)).map(|_| rng.unit()).collect(),
    );
    compare("YOLOv5-shaped", DecoderKind::YoloV5, &[&v5], 64, 64);
}

/// The selection reads the graph outputs where the backend keeps them: each output's last device
/// writer's result (`DeviceTail::output_writer`, as `CudaBackend::set_gate` finds them; NanoDet's
/// are Rearranges of folded Exports, YOLOv8n's the device tail's last step). After a frame on the
/// host-compiled kernels, rd_select over those results picks exactly what the host gate picks from
/// the downloaded outputs.
#[test]
fn selection_reads_the_outputs_device_results() {
    use gstregiondrop::detect::{self, Candidates, Gate};
    let Some(emu) = emu() else { return };
    let mut checked = 0;
    for common::Detector {
        model: m,
        plan,
        shapes,
        kind,
    } in common::detectors()
    {
        let (tile, all) = common::tiles_of(&plan);
        let mut dev = HostDevice::with_tail(&plan, false, 0, true);
        let img = &common::clip_frames(&plan, 60, 1)[0];
        run_frame(emu, &mut dev, &plan, tile, img, &m.norm, &all, None);
        let gate = Gate::new(
            kind,
            &shapes,
            plan.input_w,
            plan.input_h,
            detect::SCORING_CONF_FLOOR,
        )
        .unwrap();
        let output = |i: usize| {
            let w = dev.tail.output_writer(&plan, i)?;
            Some((dev.addrs.steps[w].result()?, dev.tail.len_of(&plan, w)))
        };
        let on_device = select_on_emu(emu, &gate, output)
            .unwrap_or_else(|| panic!("{}: every output is a device result", m.path));
        let outs: Vec<&Tensor> = plan.outputs.iter().map(|(_, s)| &dev.slots[*s]).collect();
        let mut on_host = Candidates::default();
        gate.select(&outs, &mut on_host).unwrap();
        assert!(!on_host.is_empty(), "{}: no candidate", m.path);
        assert_eq!(on_device.ids, on_host.ids, "{}", m.path);
        assert_eq!(on_device.rows, on_host.rows, "{}", m.path);
        checked += 1;
    }
    assert_eq!(checked, 2, "NanoDet and the YOLOv8n-shaped model");
}

/// Counts the launches it forwards to the host kernels: kernels by entry name, and GEMM calls.
struct Counting<'a> {
    emu: &'a Emu,
    counts: std::cell::RefCell<std::collections::BTreeMap<&'static str, usize>>,
}

impl<'a> Counting<'a> {
    fn new(emu: &'a Emu) -> Self {
        Counting {
            emu,
            counts: Default::default(),
        }
    }
}

impl Launcher for Counting<'_> {
    fn launch(&self, k: Kernel, dims: Dims, args: &[KArg]) -> Result<()> {
        *self.counts.borrow_mut().entry(k.entry()).or_default() += 1;
        self.emu.launch(k, dims, args)
    }

    fn gemm(&self, m: usize, n: usize, k: usize, a: u64, w: u64, c: u64, half: bool) -> Result<()> {
        *self.counts.borrow_mut().entry("GEMM (cuBLAS)").or_default() += 1;
        self.emu.gemm(m, n, k, a, w, c, half)
    }
}

/// Launches per frame of the real models, counted through the backend's launch code: on a GPU
/// each costs a few microseconds even replayed from a graph, so this count sets a small frame's
/// floor. NanoDet's head is six gathers (its Exports folded into them), with no export kernel.
#[test]
fn launches_per_frame() {
    let Some(emu) = emu() else { return };
    for m in common::real_models() {
        let plan = common::load(&m);
        let (tile, all) = common::tiles_of(&plan);
        let sparse: Vec<u32> = all.iter().copied().filter(|t| t % 3 == 0).collect();
        let img = &common::clip_frames(&plan, 60, 1)[0];
        let mut devs = [
            HostDevice::with_tail(&plan, false, 0, true),
            HostDevice::with_tail(&plan, true, usize::MAX, true),
        ];
        for (what, tiles, d) in [
            ("dense", &all, 0),
            ("sparse", &sparse, 0),
            ("sparse, f16, every convolution fused", &sparse, 1),
        ] {
            let dev = &mut devs[d];
            let counting = Counting::new(emu);
            run_frame(&counting, dev, &plan, tile, img, &m.norm, tiles, None);
            let counts = counting.counts.into_inner();
            let total: usize = counts.values().sum();
            println!("{} {what}: {total} launches {counts:?}", m.path);
            if m.path.contains("nanodet") {
                assert_eq!(counts.get("rd_export_nchw"), None, "{what}: exports folded");
                assert_eq!(counts.get("rd_rearrange"), Some(&6), "{what}: head gathers");
                if what.contains("fused") {
                    assert_eq!(
                        counts.get("GEMM (cuBLAS)"),
                        None,
                        "{what}: every conv fused"
                    );
                }
            }
        }
    }
}

/// The lanes of a graph (`lanes.rs`) order every pair of steps that touch the same memory, on
/// the bundled models and the synthetic plan, whatever the number of lanes; and on the real
/// models, more than one lane shortens the chain of launches.
#[test]
fn lanes_order_every_dependency() {
    let mut plans: Vec<(String, Arc<Plan>)> = common::real_models()
        .iter()
        .map(|m| (m.path.to_string(), common::load(m)))
        .collect();
    plans.push(("synthetic".into(), Arc::new(synthetic_plan())));
    for (name, plan) in plans {
        for (device_tail, fused_conv_k) in [(false, 0), (true, 0), (true, usize::MAX)] {
            let dev = HostDevice::with_tail(&plan, true, fused_conv_k, device_tail);
            let items = frame_items(&plan, &dev.addrs.steps, &dev.tail, &dev.generic);
            let weights = step_weights(&plan, &dev.addrs, &dev.tail, &dev.generic);
            let weight = |si: usize| weights[si];
            let total: usize = items
                .iter()
                .filter_map(|it| match it {
                    Item::Segment(r) => Some(r.clone().map(weight).sum::<usize>()),
                    _ => None,
                })
                .sum();
            for max in 1..=4 {
                let lanes = Lanes::plan(&plan, &items, max, weight);
                assert!(lanes.count <= max, "{name}: {} lanes", lanes.count);
                assert_eq!(
                    lanes.unordered(&plan, &items),
                    None,
                    "{name}, {max} lanes, device tail {device_tail}: steps left unordered"
                );
                let (free, laned) = lanes.spans(&plan, &items, weight);
                println!(
                    "{name}, device tail {device_tail}, fused {}: {max} lanes used {}: \
                     launches {total}, chain {laned} (the data alone: {free}), waits {}",
                    fused_conv_k > 0,
                    lanes.count,
                    lanes.waits.iter().map(Vec::len).sum::<usize>()
                );
                assert!(
                    free <= laned && laned <= total,
                    "{name}: spans {free} {laned} {total}"
                );
                if max > 1 && lanes.waits.iter().any(|w| !w.is_empty()) {
                    let mut broken = lanes.clone();
                    broken.waits.iter_mut().for_each(Vec::clear);
                    assert!(
                        broken.unordered(&plan, &items).is_some(),
                        "{name}: a schedule without waits passes the check"
                    );
                }
                // Convolutions that may run at once use different scratch: with one slot for
                // all, the check fails. The slots take no more memory than scratch per lane.
                if lanes.slots > 1 {
                    let mut shared = lanes.clone();
                    shared.slot.fill(0);
                    assert!(
                        shared.unordered(&plan, &items).is_some(),
                        "{name}: convolutions sharing scratch at once pass the check"
                    );
                }
                let fused = |si| layers::step_fused(&plan, &dev.addrs, si);
                // f16 (as `dev` gathers): the operand in f16 only, 2 bytes an entry.
                let floats = |s: LaneScratch| s.a / 2 + s.c + s.counters;
                let ws = dev.addrs.split.ws_len;
                let by_lane: usize = (1..lanes.count)
                    .map(|l| floats(LaneScratch::of(&plan, |si| lanes.lane[si] == l, ws, fused)))
                    .sum();
                let by_slot: usize = (1..lanes.slots)
                    .map(|s| floats(lanes.scratch(&plan, s, ws, fused)))
                    .sum();
                println!(
                    "  scratch beyond the frame stream's: {} slots, {:.1} MB (a slot per lane: \
                     {:.1} MB)",
                    lanes.slots - 1,
                    by_slot as f64 * 4e-6,
                    by_lane as f64 * 4e-6
                );
                assert!(by_slot <= by_lane, "{name}: slots take more than lanes");
                // Where a step that launches nothing stands in for a reader of a buffer (a
                // folded Export), a second write into that buffer (as an in-place layer would
                // make) keeps the plan on one lane.
                let stand_in = (0..plan.steps.len()).find_map(|si| match &plan.steps[si] {
                    Step::Export { input, .. } if weight(si) == 0 => Some(*input),
                    _ => None,
                });
                if let (Some(view), true) = (stand_in, max > 1) {
                    let mut twice = (*plan).clone();
                    let last = (0..twice.steps.len())
                        .rfind(|&i| matches!(&twice.steps[i], Step::Layer(l) if l.output != view))
                        .unwrap();
                    if let Step::Layer(l) = &mut twice.steps[last] {
                        l.output = view;
                    }
                    assert_eq!(Lanes::plan(&twice, &items, max, weight).count, 1, "{name}");
                }
                if max == 1 {
                    assert_eq!(laned, total, "{name}: one lane is the whole chain");
                } else if name != "synthetic" {
                    assert!(
                        laned < total,
                        "{name}: {max} lanes do not shorten the chain"
                    );
                }
            }
        }
    }
}

/// Graph frames of the real models with their segments on four lanes, replayed interleaved
/// (`lane_emu`), in two orders: every feature buffer and output equals the one-lane run bit for
/// bit (each lane has its own scratch, and the split K splits alike on every lane). In f32, a
/// dense and a sparse frame of each model; with every convolution fused on the (emulated)
/// tensor cores, whose emulation is slow, one frame of three tiles of NanoDet (split K on every
/// layer). Without the waits, the interleaved replay reads stale values and differs.
#[test]
fn lanes_interleaved_on_the_host_match_one_lane() {
    let Some(emu) = emu() else { return };
    for m in common::real_models() {
        let plan = common::load(&m);
        let (tile, all) = common::tiles_of(&plan);
        let grid = plan.grid(tile);
        let sparse: Vec<u32> = all.iter().copied().filter(|t| t % 5 == 1).collect();
        let scattered = vec![2u32, grid.len() as u32 / 2, grid.len() as u32 - 1];
        let frames = common::clip_frames(&plan, 40, 2);
        let levels = geometry::bucket_levels(grid.len());
        let bucket = |n: usize| geometry::bucket_of(&levels, n).map(|b| levels[b]);
        let mut runs: Vec<(bool, usize, Vec<&Vec<u32>>)> = vec![(false, 0, vec![&all, &sparse])];
        if m.path.contains("nanodet") {
            runs.push((true, usize::MAX, vec![&scattered]));
        }
        for (f16, fused_conv_k, tile_lists) in runs {
            let device = || HostDevice::with_tail(&plan, f16, fused_conv_k, true);
            let laned = |order, waits: bool| {
                let mut d = device();
                let items = frame_items(&plan, &d.addrs.steps, &d.tail, &d.generic);
                let weights = step_weights(&plan, &d.addrs, &d.tail, &d.generic);
                let run = lane_emu::LaneRun::new(&plan, &items, &weights, &d.addrs, 4, order);
                d.lanes = Some(if waits { run } else { run.without_waits() });
                d
            };
            let mut one = device();
            let mut runs = [
                (
                    "highest lane first",
                    laned(lane_emu::Order::HighestFirst, true),
                ),
                ("round robin", laned(lane_emu::Order::RoundRobin, true)),
                ("no waits", laned(lane_emu::Order::HighestFirst, false)),
            ];
            let mut stale = false;
            for (img, tiles) in frames.iter().zip(tile_lists) {
                let b = bucket(tiles.len());
                run_frame(emu, &mut one, &plan, tile, img, &m.norm, tiles, b);
                let want = gstregiondrop::backend::collect_outputs(&plan, &one.slots);
                for (what, dev) in &mut runs {
                    run_frame(emu, dev, &plan, tile, img, &m.norm, tiles, b);
                    let got = gstregiondrop::backend::collect_outputs(&plan, &dev.slots);
                    let same = dev.bufs == one.bufs
                        && want.iter().zip(&got).all(|(w, g)| w.data == g.data);
                    let lanes = dev.lanes.as_ref().unwrap().lanes.count;
                    println!(
                        "{} (f16 {f16}, fused {}), {} tiles on {lanes} lanes, {what}: {}",
                        m.path,
                        fused_conv_k > 0,
                        tiles.len(),
                        if same { "same as one lane" } else { "differs" }
                    );
                    assert!(lanes > 1, "{}: one lane", m.path);
                    if *what == "no waits" {
                        stale |= !same;
                    } else {
                        assert!(same, "{} {what}: lanes differ from one lane", m.path);
                    }
                }
            }
            assert!(
                stale,
                "{}: the replay without waits was not noticed",
                m.path
            );
        }
    }
}
