//! The CUDA backend proper: one NHWC f32 device buffer per feature buffer of the plan (the
//! activation caches), weights uploaded once, kernels from `cuda/*.cu` launched per layer over the
//! active tiles (all tile lists of a frame uploaded in one copy), GEMM by cuBLAS (or the built-in
//! rd_sgemm_rm kernel when cuBLAS is not loadable). The dense tail (Generic / Rearrange steps) runs
//! on the host on the downloaded Export / GlobalPool results.
//!
//! Everything runs on one stream, in order; kernels get raw device pointers (a layer may read and
//! write the same buffer in disjoint channel ranges, as on the CPU), so cudarc's per-slice event
//! tracking is switched off.

use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};

use super::geometry::{
    self, act_code, binop_code, max_tile_px, pool_code, Dims, FixedPacker, TilePacker,
};
use super::kernels::{self, PtxSet};
use crate::backend::{Backend, StepTiles};
use crate::error::{Error, Result};
use crate::mask::TileGrid;
use crate::model::eval;
use crate::model::plan::{LayerOp, Operand, Plan, Step};
use crate::preprocess::InputNorm;
use crate::tensor::Tensor;

/// How the backend is built.
#[derive(Clone, Default)]
pub struct CudaOptions {
    /// Use the built-in GEMM kernel even when cuBLAS is loadable.
    pub builtin_gemm: bool,
    /// Precompiled PTX (from [`kernels::compile_ptx`]) instead of compiling with NVRTC.
    pub ptx: Option<Arc<PtxSet>>,
    /// Launch every kernel of every frame from the host instead of replaying CUDA graphs (also
    /// with `REGIONDROP_CUDA_GRAPHS=0` in the environment).
    pub eager: bool,
}

fn drv<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Backend(format!("CUDA {what}: {e:?}"))
}

/// Launches `$func` with `$dims` and the listed arguments (u64 device pointers, i32, f32).
macro_rules! launch {
    ($stream:expr, $func:expr, $dims:expr; $($arg:expr),* $(,)?) => {{
        let dims: Dims = $dims;
        let mut b = $stream.launch_builder($func);
        $( let a = $arg; b.arg(&a); )*
        // SAFETY: the argument lists match the kernel signatures in cuda/*.cu, and every pointer
        // addresses a live allocation of this backend sized by the plan (see geometry.rs).
        unsafe {
            b.launch(LaunchConfig { grid_dim: dims.grid, block_dim: dims.block, shared_mem_bytes: 0 })
        }
        .map(|_| ())
        .map_err(drv("kernel launch"))
    }};
}

struct Kernels {
    input_norm: CudaFunction,
    im2col: CudaFunction,
    scatter: CudaFunction,
    depthwise: CudaFunction,
    sgemm: CudaFunction,
    pool: CudaFunction,
    resize: CudaFunction,
    affine: CudaFunction,
    unary: CudaFunction,
    binary: CudaFunction,
    gather: CudaFunction,
    export: CudaFunction,
    gap: CudaFunction,
}

impl Kernels {
    fn load(ctx: &Arc<CudaContext>, ptx: &PtxSet) -> Result<Self> {
        let mut funcs: Vec<(&'static str, CudaFunction)> = Vec::new();
        for (file, text) in ptx {
            let src = kernels::SOURCES
                .iter()
                .find(|s| s.file == *file)
                .ok_or_else(|| Error::Backend(format!("PTX for unknown kernel file {file}")))?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(text.clone()))
                .map_err(drv("module load"))?;
            for &name in src.entries {
                funcs.push((name, module.load_function(name).map_err(drv(name))?));
            }
        }
        let mut get = |name: &str| -> Result<CudaFunction> {
            let i = funcs
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| Error::Backend(format!("kernel {name} missing from the PTX")))?;
            Ok(funcs.swap_remove(i).1)
        };
        Ok(Kernels {
            input_norm: get("rd_input_norm")?,
            im2col: get("rd_im2col")?,
            scatter: get("rd_scatter_bias_act")?,
            depthwise: get("rd_depthwise")?,
            sgemm: get("rd_sgemm_rm")?,
            pool: get("rd_pool")?,
            resize: get("rd_resize")?,
            affine: get("rd_affine")?,
            unary: get("rd_unary")?,
            binary: get("rd_binary")?,
            gather: get("rd_gather")?,
            export: get("rd_export_nchw")?,
            gap: get("rd_global_avg_pool")?,
        })
    }
}

struct ResizeDev {
    y: [CudaSlice<u32>; 2],
    yf: CudaSlice<f32>,
    x: [CudaSlice<u32>; 2],
    xf: CudaSlice<f32>,
}

/// Device-side constants of one step.
enum StepDev {
    None,
    Conv {
        w: CudaSlice<f32>,
        b: CudaSlice<f32>,
    },
    Resize(Box<ResizeDev>),
    Affine {
        scale: CudaSlice<f32>,
        shift: CudaSlice<f32>,
    },
    /// Right operand of a Binary layer: fixed channels, or a slot uploaded before each use.
    Rhs(CudaSlice<f32>),
    Gather(CudaSlice<u32>),
    /// Result of an Export / GlobalPool step, downloaded into its slot.
    Out(CudaSlice<f32>),
}

/// Where one layer launch finds its tile list (device addresses) and how much it covers.
#[derive(Clone, Copy)]
struct LayerLists {
    tiles: u64,
    rows: u64,
    /// Tile blocks to launch (entries of the list; graph lists are padded with NO_TILE).
    n: usize,
    /// GEMM rows.
    m: usize,
}

/// What a frame does, in order, when it replays graphs.
enum Item {
    /// Steps launched by one graph (Layer / GlobalPool / Export steps only).
    Segment(Range<usize>),
    /// Upload of a Binary layer's host operand (slot) before its segment.
    Upload(usize),
    /// A Rearrange / Generic step, run on the host.
    Host(usize),
}

/// A captured, instantiated graph.
struct Graph(CudaGraph);

// SAFETY: CUDA graph objects may be used from any thread as long as calls on one graph are
// serialized; a Graph is owned by one backend, which is `Send` but not `Sync` and launches it
// only through `&mut self`.
unsafe impl Send for Graph {}

/// CUDA graphs of the frame's device segments, one set per tile-count bucket.
struct Graphs {
    levels: Vec<usize>,
    /// `[bucket][segment]`, segments in schedule order.
    exec: Vec<Vec<Graph>>,
    schedule: Vec<Item>,
    packer: FixedPacker,
    /// The fixed-layout lists (never reallocated: the graphs hold its address).
    dev: CudaSlice<u32>,
}

pub struct CudaBackend {
    plan: Arc<Plan>,
    grid: TileGrid,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    k: Kernels,
    blas: Option<cudarc::cublas::CudaBlas>,
    bufs: Vec<CudaSlice<f32>>,
    steps: Vec<StepDev>,
    scratch_a: CudaSlice<f32>,
    scratch_c: CudaSlice<f32>,
    tiles_dev: CudaSlice<u32>,
    input_tiles: CudaSlice<u32>,
    rgb: CudaSlice<u8>,
    packer: TilePacker,
    graphs: Option<Graphs>,
    /// Why graphs are off, for `describe`.
    graph_note: String,
    slots: Vec<Tensor>,
    /// Export / GlobalPool steps whose result is still only on the device.
    pending: Vec<usize>,
    arch: String,
    device_name: String,
    weight_floats: usize,
}

impl CudaBackend {
    pub fn new(plan: Arc<Plan>, tile: usize, device_id: usize) -> Result<Self> {
        Self::with_options(plan, tile, device_id, CudaOptions::default())
    }

    pub fn with_options(
        plan: Arc<Plan>,
        tile: usize,
        device_id: usize,
        opts: CudaOptions,
    ) -> Result<Self> {
        kernels::driver_loadable().map_err(Error::Backend)?;
        let grid = plan.grid(tile);
        geometry::check_plan(&plan, &grid)?;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(device_id))
            .map_err(|_| Error::Backend("creating the CUDA context panicked".into()))?
            .map_err(drv("context"))?;
        // SAFETY: this backend uses a single stream; see the module docs.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("stream"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        let device_name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let (arch, ptx) = match opts.ptx {
            Some(p) => ("precompiled".to_string(), p),
            None => compile_for(major, minor)?,
        };
        let k = Kernels::load(&ctx, &ptx)?;
        let blas = if opts.builtin_gemm || kernels::cublas_loadable().is_err() {
            None
        } else {
            let s = stream.clone();
            match std::panic::catch_unwind(move || cudarc::cublas::CudaBlas::new(s)) {
                Ok(Ok(b)) => Some(b),
                _ => None,
            }
        };

        let zeros_f32 = |n: usize| stream.alloc_zeros::<f32>(n.max(1)).map_err(drv("alloc"));
        let up_f32 = |v: &[f32]| {
            stream
                .clone_htod(if v.is_empty() { &[0.0][..] } else { v })
                .map_err(drv("upload"))
        };
        let up_u32 = |v: &[u32]| {
            stream
                .clone_htod(if v.is_empty() { &[0][..] } else { v })
                .map_err(drv("upload"))
        };

        let bufs = plan
            .buffers
            .iter()
            .map(|b| zeros_f32(b.len()))
            .collect::<Result<Vec<_>>>()?;
        let mut weight_floats = 0;
        let mut steps = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            steps.push(match step {
                Step::Layer(l) => match &l.op {
                    LayerOp::Conv(c) => {
                        weight_floats += c.weights.len() + c.bias.len();
                        StepDev::Conv {
                            w: up_f32(&c.weights)?,
                            b: up_f32(&c.bias)?,
                        }
                    }
                    LayerOp::Resize { y, x } => StepDev::Resize(Box::new(ResizeDev {
                        y: [up_u32(&y.i0)?, up_u32(&y.i1)?],
                        yf: up_f32(&y.frac)?,
                        x: [up_u32(&x.i0)?, up_u32(&x.i1)?],
                        xf: up_f32(&x.frac)?,
                    })),
                    LayerOp::Affine { scale, shift, .. } => StepDev::Affine {
                        scale: up_f32(scale)?,
                        shift: up_f32(shift)?,
                    },
                    LayerOp::Binary { rhs, .. } => match rhs {
                        Operand::View(_) => StepDev::None,
                        Operand::Channels(c) => StepDev::Rhs(up_f32(c)?),
                        Operand::Slot(s) => {
                            StepDev::Rhs(zeros_f32(plan.slot_shapes[*s].iter().product())?)
                        }
                    },
                    LayerOp::Gather { perm } => {
                        let p: Vec<u32> = perm.iter().map(|&i| i as u32).collect();
                        StepDev::Gather(up_u32(&p)?)
                    }
                    LayerOp::Pool(_) | LayerOp::Unary(_) => StepDev::None,
                },
                Step::GlobalPool { input, .. } => StepDev::Out(zeros_f32(input.c)?),
                Step::Export { input, .. } => {
                    let b = &plan.buffers[input.buf];
                    StepDev::Out(zeros_f32(input.c * b.h * b.w)?)
                }
                Step::Rearrange { .. } | Step::Generic { .. } => StepDev::None,
            });
        }
        let (sa, sc) = geometry::scratch_sizes(&plan);
        let slots = plan
            .slot_shapes
            .iter()
            .zip(&plan.slots)
            .map(|(s, c)| c.clone().unwrap_or_else(|| Tensor::zeros(s.clone())))
            .collect();
        let mut backend = CudaBackend {
            scratch_a: zeros_f32(sa)?,
            scratch_c: zeros_f32(sc)?,
            tiles_dev: stream
                .alloc_zeros::<u32>(TilePacker::capacity_for(&plan, &grid))
                .map_err(drv("alloc"))?,
            input_tiles: stream
                .alloc_zeros::<u32>(grid.len().max(1))
                .map_err(drv("alloc"))?,
            rgb: stream
                .alloc_zeros::<u8>(plan.input_w * plan.input_h * 3)
                .map_err(drv("alloc"))?,
            packer: TilePacker::default(),
            graphs: None,
            graph_note: String::new(),
            pending: Vec::new(),
            arch,
            device_name,
            weight_floats,
            bufs,
            steps,
            slots,
            blas,
            k,
            stream,
            ctx,
            grid,
            plan,
        };
        backend.stream.synchronize().map_err(drv("synchronize"))?;
        let off = opts.eager
            || std::env::var("REGIONDROP_CUDA_GRAPHS").is_ok_and(|v| v == "0" || v == "false");
        if off {
            backend.graph_note = "eager".into();
        } else {
            match backend.capture_graphs() {
                Ok(g) => {
                    backend.graph_note = format!("CUDA graphs x{}", g.levels.len());
                    backend.graphs = Some(g);
                }
                Err(e) => {
                    // A capture that failed half-way leaves the stream capturing: end it.
                    let _ = backend.stream.end_capture(sys::CUgraphInstantiate_flags(0));
                    let _ = backend.ctx.check_err();
                    backend.graph_note = format!("eager: graph capture failed ({e})");
                }
            }
            backend.stream.synchronize().map_err(drv("synchronize"))?;
        }
        Ok(backend)
    }

    /// Splits the plan into device segments and host work, and captures every segment once per
    /// tile-count bucket, launched over the fixed-layout lists of that bucket.
    fn capture_graphs(&self) -> Result<Graphs> {
        let plan = self.plan.clone();
        let mut schedule = Vec::new();
        let mut start: Option<usize> = None;
        let close = |schedule: &mut Vec<Item>, start: &mut Option<usize>, end: usize| {
            if let Some(s) = start.take() {
                schedule.push(Item::Segment(s..end));
            }
        };
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::Layer(l) => {
                    if let LayerOp::Binary {
                        rhs: Operand::Slot(_),
                        ..
                    } = &l.op
                    {
                        close(&mut schedule, &mut start, si);
                        schedule.push(Item::Upload(si));
                    }
                    start.get_or_insert(si);
                }
                Step::GlobalPool { .. } | Step::Export { .. } => {
                    start.get_or_insert(si);
                }
                Step::Rearrange { .. } | Step::Generic { .. } => {
                    close(&mut schedule, &mut start, si);
                    schedule.push(Item::Host(si));
                }
            }
        }
        close(&mut schedule, &mut start, plan.steps.len());

        let levels = geometry::bucket_levels(self.grid.len());
        let dev = self
            .stream
            .alloc_zeros::<u32>(FixedPacker::capacity_for(&plan, &self.grid))
            .map_err(drv("alloc"))?;
        let base = self.ptr(&dev);
        let mut exec = Vec::with_capacity(levels.len());
        for &b in &levels {
            let mut set = Vec::new();
            for item in &schedule {
                let Item::Segment(r) = item else { continue };
                self.stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                    .map_err(drv("begin capture"))?;
                for si in r.clone() {
                    let (t0, r0) = FixedPacker::offsets(si, b);
                    let m = match &plan.steps[si] {
                        Step::Layer(l) => {
                            geometry::bucket_rows(&self.grid, &plan.buffers[l.output.buf], b)
                        }
                        _ => 0,
                    };
                    let ll = LayerLists {
                        tiles: base + (t0 * 4) as u64,
                        rows: base + (r0 * 4) as u64,
                        n: b,
                        m,
                    };
                    self.launch_step(si, ll)?;
                }
                let g = self
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(drv("end capture"))?
                    .ok_or_else(|| Error::Backend("empty graph".into()))?;
                g.upload().map_err(drv("graph upload"))?;
                set.push(Graph(g));
            }
            exec.push(set);
        }
        Ok(Graphs {
            levels,
            exec,
            schedule,
            packer: FixedPacker::default(),
            dev,
        })
    }

    /// "device name (arch, gemm)" for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, GEMM {}, {})",
            self.device_name,
            self.arch,
            if self.blas.is_some() {
                "cuBLAS"
            } else {
                "built-in"
            },
            self.graph_note
        )
    }

    fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// Device address of channel `c_off` of buffer `buf`.
    fn view_ptr(&self, buf: usize, c_off: usize) -> u64 {
        self.ptr(&self.bufs[buf]) + (c_off * 4) as u64
    }

    fn gemm(&self, m: usize, n: usize, k: usize, a: u64, w: u64, c: u64) -> Result<()> {
        match &self.blas {
            Some(blas) => {
                use cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
                let (alpha, beta) = (1.0f32, 0.0f32);
                // Row-major C[m×n] = A[m×k]·W[k×n] is column-major Cᵀ = Wᵀ·Aᵀ.
                // SAFETY: pointers address allocations of at least these sizes (scratch sized
                // for all tiles, weights per group).
                unsafe {
                    cudarc::cublas::result::sgemm(
                        *blas.handle(),
                        CUBLAS_OP_N,
                        CUBLAS_OP_N,
                        n as i32,
                        m as i32,
                        k as i32,
                        &alpha,
                        w as *const f32,
                        n as i32,
                        a as *const f32,
                        k as i32,
                        &beta,
                        c as *mut f32,
                        n as i32,
                    )
                }
                .map_err(drv("cuBLAS sgemm"))
            }
            None => match geometry::gemm_launch(m, n)? {
                Some(d) => {
                    launch!(self.stream, &self.k.sgemm, d; a, w, c, m as i32, n as i32, k as i32)
                }
                None => Ok(()),
            },
        }
    }

    /// Launches the kernels of a Layer, GlobalPool or Export step (nothing on the host).
    fn launch_step(&self, si: usize, ll: LayerLists) -> Result<()> {
        let plan = &self.plan;
        match &plan.steps[si] {
            Step::Layer(_) => self.run_layer(si, ll),
            Step::GlobalPool { input, .. } => {
                let b = &plan.buffers[input.buf];
                if let (Some(d), StepDev::Out(o)) = (geometry::gap_launch(input.c), &self.steps[si])
                {
                    let inp = self.view_ptr(input.buf, input.c_off);
                    launch!(self.stream, &self.k.gap, d;
                        inp, b.c as i32, b.h as i32, b.w as i32, input.c as i32, self.ptr(o))?;
                }
                Ok(())
            }
            Step::Export { input, .. } => {
                let b = &plan.buffers[input.buf];
                if let (Some(d), StepDev::Out(o)) = (
                    geometry::linear_launch(input.c * b.h * b.w),
                    &self.steps[si],
                ) {
                    let inp = self.view_ptr(input.buf, input.c_off);
                    launch!(self.stream, &self.k.export, d;
                        inp, b.c as i32, b.h as i32, b.w as i32, input.c as i32, self.ptr(o))?;
                }
                Ok(())
            }
            Step::Rearrange { .. } | Step::Generic { .. } => Ok(()),
        }
    }

    fn run_layer(&self, si: usize, sl: LayerLists) -> Result<()> {
        let plan = self.plan.clone();
        let Step::Layer(l) = &plan.steps[si] else {
            return Ok(());
        };
        if sl.n == 0 {
            return Ok(());
        }
        let g = self.grid;
        let ib = &plan.buffers[l.input.buf];
        let ob = &plan.buffers[l.output.buf];
        let ts = (g.tile / ob.scale.max(1)) as i32;
        let cols = g.cols as i32;
        let (tw, th) = max_tile_px(&g, ob);
        let (tiles, rows) = (sl.tiles, sl.rows);
        let inp = self.view_ptr(l.input.buf, l.input.c_off);
        let out = self.view_ptr(l.output.buf, l.output.c_off);
        let (ip, op) = (ib.c as i32, ob.c as i32);
        let (ih, iw, oh, ow) = (ib.h as i32, ib.w as i32, ob.h as i32, ob.w as i32);
        let oc = l.output.c;
        let n_t = sl.n;
        let s = &self.stream;
        match (&l.op, &self.steps[si]) {
            (LayerOp::Conv(c), StepDev::Conv { w, b }) => {
                let (wp, bp) = (self.ptr(w), self.ptr(b));
                let (act, p0, p1) = act_code(c.act);
                let conv_i =
                    [c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.pad_t, c.pad_l].map(|v| v as i32);
                if c.depthwise() {
                    let Some(d) = geometry::tile_launch(n_t, tw * th * oc)? else {
                        return Ok(());
                    };
                    return launch!(s, &self.k.depthwise, d;
                        inp, ip, ih, iw, out, op, oh, ow, wp, bp, oc as i32,
                        conv_i[0], conv_i[1], conv_i[2], conv_i[3], conv_i[4], conv_i[5], conv_i[6], conv_i[7],
                        tiles, ts, cols, act, p0, p1);
                }
                let (k, n, cig) = (c.k_per_group(), c.n_per_group(), c.cin / c.groups);
                let (a, cm) = (self.ptr(&self.scratch_a), self.ptr(&self.scratch_c));
                for gi in 0..c.groups {
                    let gin = inp + (gi * cig * 4) as u64;
                    if let Some(d) = geometry::tile_launch(n_t, tw * th * k)? {
                        launch!(s, &self.k.im2col, d;
                            gin, ip, ih, iw, a, tiles, rows, ts, cols, oh, ow,
                            conv_i[0], conv_i[1], conv_i[2], conv_i[3], conv_i[4], conv_i[5], conv_i[6], conv_i[7],
                            cig as i32, c.transposed as i32)?;
                    }
                    self.gemm(sl.m, n, k, a, wp + (gi * k * n * 4) as u64, cm)?;
                    if let Some(d) = geometry::tile_launch(n_t, tw * th * n)? {
                        launch!(s, &self.k.scatter, d;
                            cm, n as i32, bp + (gi * n * 4) as u64, out + (gi * n * 4) as u64, op, oh, ow,
                            tiles, rows, ts, cols, act, p0, p1)?;
                    }
                }
                Ok(())
            }
            (LayerOp::Pool(p), _) => {
                let Some(d) = geometry::tile_launch(n_t, tw * th * oc)? else {
                    return Ok(());
                };
                launch!(s, &self.k.pool, d;
                    inp, ip, ih, iw, out, op, oh, ow, oc as i32, pool_code(p.kind),
                    p.kh as i32, p.kw as i32, p.sh as i32, p.sw as i32, p.pad_t as i32, p.pad_l as i32,
                    tiles, ts, cols)
            }
            (LayerOp::Resize { .. }, StepDev::Resize(r)) => {
                let ResizeDev { y, yf, x, xf } = &**r;
                let Some(d) = geometry::tile_launch(n_t, tw * th * oc)? else {
                    return Ok(());
                };
                launch!(s, &self.k.resize, d;
                    inp, ip, iw, out, op, oh, ow, oc as i32,
                    self.ptr(&y[0]), self.ptr(&y[1]), self.ptr(yf), self.ptr(&x[0]), self.ptr(&x[1]), self.ptr(xf),
                    tiles, ts, cols)
            }
            (LayerOp::Affine { act, .. }, StepDev::Affine { scale, shift }) => {
                let Some(d) = geometry::tile_launch(n_t, tw * th * oc)? else {
                    return Ok(());
                };
                let (a, p0, p1) = act_code(*act);
                launch!(s, &self.k.affine, d;
                    inp, ip, out, op, oh, ow, oc as i32, self.ptr(scale), self.ptr(shift), a, p0, p1, tiles, ts, cols)
            }
            (LayerOp::Unary(act), _) => {
                let Some(d) = geometry::tile_launch(n_t, tw * th * oc)? else {
                    return Ok(());
                };
                let (a, p0, p1) = act_code(*act);
                launch!(s, &self.k.unary, d; inp, ip, out, op, oh, ow, oc as i32, a, p0, p1, tiles, ts, cols)
            }
            (LayerOp::Binary { op: bop, rhs, act }, dev) => {
                let (rp, rpitch, rc) = match (rhs, dev) {
                    (Operand::View(v), _) => (
                        self.view_ptr(v.buf, v.c_off),
                        plan.buffers[v.buf].c as i32,
                        v.c as i32,
                    ),
                    (Operand::Channels(_), StepDev::Rhs(d)) => (self.ptr(d), 0, d.len() as i32),
                    (Operand::Slot(slot), StepDev::Rhs(d)) => {
                        let data = &self.slots[*slot].data;
                        (self.ptr(d), 0, data.len().min(d.len()) as i32)
                    }
                    _ => {
                        return Err(Error::Backend(format!(
                            "layer `{}`: binary operand not prepared",
                            l.name
                        )))
                    }
                };
                let Some(d) = geometry::tile_launch(n_t, tw * th * oc)? else {
                    return Ok(());
                };
                let (a, p0, p1) = act_code(*act);
                launch!(s, &self.k.binary, d;
                    inp, ip, rp, rpitch, rc, out, op, oh, ow, oc as i32, binop_code(*bop), a, p0, p1, tiles, ts, cols)
            }
            (LayerOp::Gather { .. }, StepDev::Gather(perm)) => {
                let Some(d) = geometry::tile_launch(n_t, tw * th * oc)? else {
                    return Ok(());
                };
                launch!(s, &self.k.gather, d; inp, ip, out, op, oh, ow, oc as i32, self.ptr(perm), tiles, ts, cols)
            }
            _ => Err(Error::Backend(format!(
                "layer `{}`: device parameters missing",
                l.name
            ))),
        }
    }

    /// Downloads the results of Export / GlobalPool steps still on the device into their slots.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let plan = self.plan.clone();
        for si in std::mem::take(&mut self.pending) {
            let slot = match &plan.steps[si] {
                Step::GlobalPool { slot, .. } | Step::Export { slot, .. } => *slot,
                _ => continue,
            };
            if let StepDev::Out(d) = &self.steps[si] {
                let dst = &mut self.slots[slot].data;
                let n = dst.len().min(d.len());
                self.stream
                    .memcpy_dtoh(&d.slice(..n), &mut dst[..n])
                    .map_err(drv("download"))?;
            }
        }
        self.stream.synchronize().map_err(drv("synchronize"))
    }

    /// Uploads the host operand (slot) of Binary layer `si`, once the slots are up to date.
    fn upload_rhs(&mut self, si: usize) -> Result<()> {
        let plan = self.plan.clone();
        let Step::Layer(l) = &plan.steps[si] else {
            return Ok(());
        };
        if let LayerOp::Binary {
            rhs: Operand::Slot(slot),
            ..
        } = &l.op
        {
            self.flush()?;
            if let StepDev::Rhs(d) = &mut self.steps[si] {
                let src = &self.slots[*slot].data;
                let n = src.len().min(d.len());
                self.stream
                    .memcpy_htod(&src[..n], &mut d.slice_mut(..n))
                    .map_err(drv("upload"))?;
            }
        }
        Ok(())
    }

    /// Runs a Rearrange / Generic step on the host.
    fn run_host(&mut self, si: usize) -> Result<()> {
        let plan = self.plan.clone();
        match &plan.steps[si] {
            Step::Rearrange {
                input,
                index,
                output,
            } => {
                self.flush()?;
                let src = self.slots[*input].data.clone();
                let dst = &mut self.slots[*output].data;
                for (d, &i) in dst.iter_mut().zip(&index.data) {
                    *d = src[i as usize];
                }
            }
            Step::Generic {
                node,
                inputs,
                outputs,
            } => {
                self.flush()?;
                let args: Vec<Option<&Tensor>> =
                    inputs.iter().map(|s| s.map(|i| &self.slots[i])).collect();
                let outs = eval::eval(node, &args)
                    .map_err(|e| Error::Backend(format!("node `{}`: {e}", node.name)))?;
                for (o, t) in outputs.iter().zip(outs) {
                    self.slots[*o] = t;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn run_steps(&mut self, tiles: &StepTiles) -> Result<()> {
        let longest = tiles.per_step.iter().map(Vec::len).max().unwrap_or(0);
        let bucket = self
            .graphs
            .as_ref()
            .and_then(|g| geometry::bucket_of(&g.levels, longest));
        match bucket {
            Some(b) if longest > 0 => self.run_graphs(tiles, b),
            _ => self.run_eager(tiles),
        }
    }

    /// One frame by graph replay: one upload of the fixed-layout lists, then per segment one
    /// graph launch (host steps and operand uploads in between, as in the eager order).
    fn run_graphs(&mut self, tiles: &StepTiles, bucket: usize) -> Result<()> {
        let plan = self.plan.clone();
        let Some(mut g) = self.graphs.take() else {
            return self.run_eager(tiles);
        };
        let r = (|| -> Result<()> {
            let level = g.levels[bucket];
            let len = g.packer.pack(&plan, &self.grid, &tiles.per_step, level);
            self.stream
                .memcpy_htod(&g.packer.data[..len], &mut g.dev.slice_mut(..len))
                .map_err(drv("tile upload"))?;
            let mut seg = 0;
            for item in &g.schedule {
                match item {
                    Item::Segment(r) => {
                        g.exec[bucket][seg]
                            .0
                            .launch()
                            .map_err(drv("graph launch"))?;
                        seg += 1;
                        for si in r.clone() {
                            if matches!(
                                plan.steps[si],
                                Step::GlobalPool { .. } | Step::Export { .. }
                            ) && matches!(self.steps[si], StepDev::Out(_))
                            {
                                self.pending.push(si);
                            }
                        }
                    }
                    Item::Upload(si) => {
                        if tiles.per_step.get(*si).is_some_and(|t| !t.is_empty()) {
                            self.upload_rhs(*si)?;
                        }
                    }
                    Item::Host(si) => self.run_host(*si)?,
                }
            }
            Ok(())
        })();
        self.graphs = Some(g);
        r?;
        self.flush()
    }

    fn run_eager(&mut self, tiles: &StepTiles) -> Result<()> {
        let plan = self.plan.clone();
        self.packer.pack(&plan, &self.grid, &tiles.per_step);
        if !self.packer.data.is_empty() {
            if self.packer.data.len() > self.tiles_dev.len() {
                self.tiles_dev = self
                    .stream
                    .alloc_zeros(self.packer.data.len())
                    .map_err(drv("alloc"))?;
            }
            self.stream
                .memcpy_htod(&self.packer.data, &mut self.tiles_dev)
                .map_err(drv("tile upload"))?;
        }
        let base = self.ptr(&self.tiles_dev);
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::Layer(_) => {
                    let sl = self.packer.steps[si];
                    if sl.n > 0 {
                        self.upload_rhs(si)?;
                    }
                    self.run_layer(
                        si,
                        LayerLists {
                            tiles: base + (sl.tiles * 4) as u64,
                            rows: base + (sl.rows * 4) as u64,
                            n: sl.n,
                            m: sl.m,
                        },
                    )?;
                }
                Step::GlobalPool { .. } | Step::Export { .. } => {
                    self.launch_step(
                        si,
                        LayerLists {
                            tiles: 0,
                            rows: 0,
                            n: 0,
                            m: 0,
                        },
                    )?;
                    if matches!(self.steps[si], StepDev::Out(_)) {
                        self.pending.push(si);
                    }
                }
                Step::Rearrange { .. } | Step::Generic { .. } => self.run_host(si)?,
            }
        }
        self.flush()
    }
}

/// NVRTC output for the device's compute capability, or the newest supported one below it.
fn compile_for(major: i32, minor: i32) -> Result<(String, Arc<PtxSet>)> {
    let own = kernels::arch_for(major, minor);
    match kernels::compile_ptx_cached(&own) {
        Ok(p) => Ok((own, p)),
        Err(first) => match kernels::fallback_arch(major, minor) {
            Some(a) if a != own => kernels::compile_ptx_cached(a).map(|p| (a.to_string(), p)),
            _ => Err(first),
        },
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn write_input_tensor(&mut self, nchw: &Tensor) -> Result<()> {
        let p = &self.plan;
        let host = super::super::nchw_to_nhwc(nchw, p.input_c, p.input_h, p.input_w)?;
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        self.stream
            .memcpy_htod(&host, &mut self.bufs[0])
            .map_err(drv("input upload"))?;
        Ok(())
    }

    fn write_input(&mut self, rgb: &[u8], norm: &InputNorm, tiles: &[u32]) -> Result<()> {
        let (w, h) = (self.plan.input_w, self.plan.input_h);
        if rgb.len() != w * h * 3 {
            return Err(Error::Backend(format!(
                "input image of {} bytes does not match the network input {w}x{h}x3",
                rgb.len()
            )));
        }
        if tiles.is_empty() {
            return Ok(());
        }
        if tiles.len() > self.input_tiles.len() {
            return Err(Error::Backend(format!(
                "{} input tiles for a grid of {}",
                tiles.len(),
                self.grid.len()
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        self.stream
            .memcpy_htod(rgb, &mut self.rgb)
            .map_err(drv("frame upload"))?;
        self.stream
            .memcpy_htod(tiles, &mut self.input_tiles.slice_mut(..tiles.len()))
            .map_err(drv("tile upload"))?;
        let b0 = &self.plan.buffers[0];
        let (tw, th) = max_tile_px(&self.grid, b0);
        let Some(d) = geometry::tile_launch(tiles.len(), tw * th * 3)? else {
            return Ok(());
        };
        let taps = norm.channel_taps();
        launch!(self.stream, &self.k.input_norm, d;
            self.ptr(&self.rgb), self.ptr(&self.bufs[0]), b0.c as i32, w as i32, h as i32,
            self.ptr(&self.input_tiles), (self.grid.tile / b0.scale.max(1)) as i32, self.grid.cols as i32,
            taps[0].1, taps[1].1, taps[2].1, taps[0].2, taps[1].2, taps[2].2, norm.bgr as i32)
    }

    fn run(&mut self, tiles: &StepTiles) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        self.run_steps(tiles)?;
        // A frame is done when its outputs are on the host (the detections are decoded there):
        // this also makes the engine's per-frame time include all GPU work.
        self.flush()
    }

    fn outputs(&mut self) -> Result<Vec<Tensor>> {
        self.flush()?;
        Ok(self
            .plan
            .outputs
            .iter()
            .map(|(_, s)| self.slots[*s].clone())
            .collect())
    }

    fn read_buffer(&mut self, buf: usize) -> Result<Vec<f32>> {
        self.flush()?;
        self.stream
            .clone_dtoh(&self.bufs[buf])
            .map_err(drv("buffer download"))
    }

    fn reset(&mut self) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        for b in &mut self.bufs {
            let _ = self.stream.memset_zeros(b);
        }
        let _ = self.stream.synchronize();
    }

    fn memory_bytes(&self) -> usize {
        let caches: usize = self.bufs.iter().map(|b| b.len()).sum();
        (caches + self.weight_floats + self.scratch_a.len() + self.scratch_c.len()) * 4
    }
}
