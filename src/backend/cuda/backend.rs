//! The CUDA backend proper: one NHWC f32 device buffer per feature buffer of the plan (the
//! activation caches), weights uploaded once, kernels from `cuda/*.cu` launched per layer over the
//! active tiles (all tile lists of a frame uploaded in one copy), replayed as CUDA graphs. Each
//! convolution runs as one fused kernel or as gather + GEMM (cuBLAS, or the built-in
//! rd_sgemm_rm kernel when cuBLAS is not loadable) + scatter, whichever timed faster at start-up.
//! The dense tail (Rearrange / Generic steps) runs on the device where its inputs are there
//! (`tail.rs`), else on the host on downloaded results; the decoder's candidates are selected on
//! the device (`select.rs`). In `backend/`: the steps' constants uploaded at build time in
//! `constants.rs`, the frame stage (upload, letterbox, change detection, input) in `frames.rs`,
//! graph capture and replay in `graphs.rs`, downloads and the selection in `outputs.rs`, the
//! start-up timing of the fused convolutions (kept per process) in `tune.rs`.
//!
//! Everything runs on one stream, in order, except inside graphs with lanes (`lanes.rs`), whose
//! streams the capture orders with events; kernels get raw device pointers (a layer may read and
//! write the same buffer in disjoint channel ranges, as on the CPU), so cudarc's per-slice event
//! tracking is switched off.

mod constants;
mod frames;
mod graphs;
mod lane_timing;
mod outputs;
mod streams;
mod tune;
pub use lane_timing::LaneTiming;
pub use tune::FusionTiming;

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::driver::{drv, primary_context, setup_guard, Kernels, Pinned, SetupGuard};
use super::geometry::{self, Dims, FixedPacker, TilePacker};
use super::kernels::{self, PtxSet};
use super::lanes;
use super::layers::{self, kargs, Addrs, ConvWay, KArg, Kernel, Launcher, LayerLists, StepPtrs};
use super::pinned_frames;
use super::profile::{ms_since, Phase, Profile};
use super::select::{SelectDev, SelectTable};
use super::tail::{tail_ptrs, DeviceTail, RearrangeSource, TailUpload};
use crate::backend::{Backend, Precision, StepTiles};
use crate::detect::{Candidates, Gate};
use crate::error::{Error, Result};
use crate::mask::{CellGrower, DiffMetric, MaskGrowth, RegionMask, TileGrid};
use crate::model::plan::{LayerOp, Operand, Plan, Step};
use crate::preprocess::{InputNorm, Letterbox, PixelSource};
use crate::tensor::Tensor;
use constants::StepDev;
use frames::{Detect, DeviceFrames, Staged};
use graphs::Graphs;
use streams::LaneSet;

/// Where fused convolutions run pipelined (`CudaOptions::fused_pipe`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PipeMode {
    /// Never.
    #[default]
    Off,
    /// Where the start-up timing finds it faster (with `CudaOptions::fused_conv_auto`).
    Timed,
    /// Every fused convolution that can.
    Always,
}

/// How the backend is built.
#[derive(Clone, Default)]
pub struct CudaOptions {
    /// Use the built-in GEMM kernel even when cuBLAS is loadable.
    pub builtin_gemm: bool,
    /// Precompiled PTX (from [`kernels::compile_ptx`]) instead of compiling with NVRTC.
    pub ptx: Option<Arc<PtxSet>>,
    /// Launch every kernel of every frame from the host instead of replaying CUDA graphs (also
    /// `REGIONDROP_CUDA_GRAPHS=0`). Captures run under the process-wide setup guard, so another
    /// backend's set-up cannot break them (the parallel GPU tests capture beside each other); a
    /// capture that fails anyway leaves the backend eager and says why in `describe`.
    pub eager: bool,
    /// f16: convolutions gather their operands in f16 and multiply them on the tensor cores
    /// against f16 copies of the weights (cuBLAS GemmEx, f32 accumulation and output). Needs
    /// cuBLAS; depthwise convolutions stay f32.
    pub precision: Precision,
    /// Convolutions (not transposed) with at most this many taps per output (K = kh·kw·cin per
    /// group; see `geometry::fusable`) run as one fused kernel (rd_conv_rows: implicit gather in shared
    /// memory, f32 arithmetic, K split across blocks on maps too small to fill the GPU, bias and
    /// activation applied) instead of gather + GEMM + scatter; with precision f16 on compute
    /// capability 8.0 and newer, rd_conv_rows_tc multiplies f16 operands on the tensor cores;
    /// 0 never. None: the `REGIONDROP_CUDA_FUSED_K` environment variable where it is a number,
    /// else 0.
    pub fused_conv_k: Option<usize>,
    /// Time every convolution the fused kernel can run, fused and not, at start-up, and run each
    /// the faster way (`fused_conv_k` then only adds layers). None: on, unless `fused_conv_k` is
    /// given or `REGIONDROP_CUDA_FUSED_K` is set to a number (H100, fifteenth session: faster
    /// than never fusing on NanoDet and on YOLOv8n's dense frames at 1280×736, the same on its
    /// sparse ones). Where the timing fails, nothing is fused and `describe` says why.
    pub fused_conv_auto: Option<bool>,
    /// The fused convolution computes 4 × 4 outputs per thread in 64 × 64 blocks (128 × 32 for at
    /// most 32 channels) instead of 2 × 4 in 32 × 64 (64 × 32). None:
    /// `REGIONDROP_CUDA_FUSED_TILE=4x4`, else off (not yet timed on a GPU).
    pub fused_tile44: Option<bool>,
    /// With precision f16 on compute capability 8.0 and newer, fused convolutions multiply on
    /// the tensor cores (rd_conv_rows_tc) rather than in f32 (rd_conv_rows). None: on, unless
    /// `REGIONDROP_CUDA_FUSED_TC=0`.
    pub fused_tc: Option<bool>,
    /// Whether fused convolutions run pipelined (rd_conv_rows_pipe*: operands copied to shared
    /// memory by cp.async, several K steps ahead, where `geometry::pipeable`; on the tensor cores
    /// in f16, else in f32). None:
    /// `REGIONDROP_CUDA_FUSED_PIPE` (`auto`, `1`), else off: written without a GPU, it stays
    /// opt-in until one has run and timed it.
    pub fused_pipe: Option<PipeMode>,
    /// Letterbox frames on the device (`Backend::letterbox_frame`; needs the device change
    /// detection). None: on, unless `REGIONDROP_CUDA_LETTERBOX=0`. On an H100 with 16 host
    /// cores, NanoDet f16 on camera frames (`examples/letterbox_place`): the process's CPU time
    /// a frame fell by 1.2–4.6 ms; the frame's latency rose by 0.09–0.26 ms for 1080p RGB, fell
    /// by 0.07–0.24 ms for 720p NV12, and went both ways for the others.
    pub device_letterbox: Option<bool>,
    /// Run the host tail's Generic steps on the device where their inputs are there (copies,
    /// activations, element-wise ops, softmax, small convolutions; see `tail.rs`), so that only
    /// the results the host reads come down. None: on, unless `REGIONDROP_CUDA_DEVICE_TAIL=0`
    /// (YOLOv8n at 1280×736 on an H100, f16 sparse: 3.26 → 2.20 ms a frame).
    pub device_tail: Option<bool>,
    /// Select the detection decoder's candidate anchors on the device (`Backend::set_gate`,
    /// cuda/select.cu) and download only their rows; the graph outputs come down only when asked
    /// for. None: on, unless `REGIONDROP_CUDA_SELECT=0` (NanoDet on an H100, f16 sparse: 0.98 →
    /// 0.75 ms a frame).
    pub device_select: Option<bool>,
    /// Launch our kernels with programmatic dependent launch (sm_90 and newer; ignored on older
    /// GPUs): each may start while the kernel before it finishes and waits in its first statement
    /// (`RD_PDL_WAIT`), overlapping the launch latency that bounds small frames. None: on,
    /// unless `REGIONDROP_CUDA_PDL=0` (with lanes, on an H100: NanoDet f16 sparse 0.69 → 0.62
    /// ms a frame, YOLOv8n at 1280 × 736 1.94 → 1.62 ms).
    pub pdl: Option<bool>,
    /// Put independent branches of the network (the head's levels, a block's two paths) on up
    /// to this many streams inside each CUDA graph (`lanes.rs`), so that their kernels overlap
    /// instead of waiting in one chain; 1: one stream. None: `REGIONDROP_CUDA_LANES` where it
    /// is a number, else 4, timed. Eager frames use one stream.
    pub lanes: Option<usize>,
    /// With more than one lane, capture the frame's graphs on one stream too, replay whole
    /// frames of each at start-up and keep the faster (`lane_timing` says how they timed; later
    /// backends of the process on the same model take the first one's choice). None: on unless
    /// the number of lanes was given (`lanes` or a number in `REGIONDROP_CUDA_LANES`).
    pub lanes_timed: Option<bool>,
    /// Wait for the frame's work by sleeping on an event with blocking synchronisation rather
    /// than by spinning on the stream: less CPU time a frame (what other cameras of the process
    /// could use), a little more latency (the thread must be woken). None: off, unless
    /// `REGIONDROP_CUDA_SYNC=block`.
    pub blocking_sync: Option<bool>,
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
    /// The gathered operand in f16 (precision f16 only).
    scratch_a16: Option<CudaSlice<u16>>,
    scratch_c: CudaSlice<f32>,
    /// Zeroed counters of the fused convolution's split K (see `geometry::SplitSpace`).
    fused_counters: CudaSlice<u32>,
    tiles_dev: CudaSlice<u32>,
    input_tiles: CudaSlice<u32>,
    rgb: CudaSlice<u8>,
    /// Pinned staging of the frame upload, the input-tile list and the tile-list upload.
    rgb_host: Pinned<u8>,
    tiles_host: Pinned<u32>,
    lists_host: Pinned<u32>,
    /// Pinned download buffer of each device result the host reads (indexed like `steps`).
    out_host: Vec<Option<Pinned<f32>>>,
    /// Which Rearrange steps run on the device and which results are downloaded.
    tail: DeviceTail,
    /// Device-side change detection: reference image, per-tile scores and masks.
    det: Detect,
    /// Frames letterboxed on the device.
    frames: DeviceFrames,
    packer: TilePacker,
    graphs: Option<Graphs>,
    /// Why graphs are off, for `describe`.
    graph_note: String,
    /// The graphs' lanes beyond the frame's own stream (one lane where graphs are off).
    lanes: LaneSet,
    /// How the graphs timed on lanes and on one stream (`CudaOptions::lanes_timed`), and what
    /// `describe` says of it.
    lane_timing: Option<LaneTiming>,
    lane_note: String,
    slots: Vec<Tensor>,
    /// The Generic steps, prepared to run into their slots on the host.
    generic: Vec<Option<crate::backend::generic::GenericStep>>,
    /// Device copies of the constant slots the device Generic steps read.
    const_dev: Vec<Option<CudaSlice<f32>>>,
    /// Export / GlobalPool steps whose result is still only on the device.
    pending: Vec<usize>,
    /// Whether `set_gate` selects on the device (the option).
    select_on: bool,
    /// Where `CudaOptions::blocking_sync`: the event a frame's waits sleep on.
    blocking: Option<CudaEvent>,
    /// Kernels launch with programmatic dependent launch (the option, on sm_90+).
    pdl: bool,
    /// The gate's selection, when one is set.
    select: Option<SelectDev>,
    /// The graph outputs of the last run are still only on the device (a selection replaced
    /// their download).
    outputs_stale: bool,
    arch: String,
    device_name: String,
    precision: Precision,
    weight_bytes: usize,
    /// Per-step GPU times and host phases (REGIONDROP_PROFILE=1).
    profile: Option<Profile>,
    /// Device addresses of the buffers, scratch and step constants (fixed once built).
    addrs: Addrs,
    /// The start-up timing of the fusable convolutions (`fused_conv_auto`; else empty).
    fusion_timings: Vec<FusionTiming>,
    /// Why the fusable convolutions were not timed, for `describe` (else empty).
    fusion_note: String,
    /// The start-up timing also times the pipelined fused kernel (`CudaOptions::fused_pipe`).
    pipe_timed: bool,
    /// The setup guard while the backend is built or dropped. Declared last, so it is dropped
    /// after every device resource above.
    setup: Option<SetupGuard>,
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if self.setup.is_none() {
            self.setup = Some(setup_guard());
        }
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
    }
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
        // Held until the backend is built; every resource below is created under it (and on an
        // early return, dropped under it: it was declared first).
        let setup = setup_guard();
        let ctx = primary_context(device_id)?;
        // SAFETY: this backend orders its work itself (one stream, and events between the lanes
        // of a graph); see the module docs.
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
        let blas = if opts.builtin_gemm {
            Err("the built-in GEMM was asked for".to_string())
        } else {
            kernels::cublas_loadable().and_then(|()| {
                let s = stream.clone();
                match std::panic::catch_unwind(move || cudarc::cublas::CudaBlas::new(s)) {
                    Ok(Ok(b)) => Ok(b),
                    Ok(Err(e)) => Err(format!("cublasCreate failed: {e:?}")),
                    Err(p) => Err(format!(
                        "cublasCreate panicked: {}",
                        crate::error::panic_text(&p)
                    )),
                }
            })
        };
        let f16 = opts.precision == Precision::F16;
        let blas = match blas {
            Ok(b) => Some(b),
            Err(why) if f16 => {
                return Err(Error::Backend(format!(
                    "precision f16 needs cuBLAS for its tensor-core GEMM: {why}"
                )))
            }
            Err(_) => None,
        };

        let zeros_f32 = |n: usize| stream.alloc_zeros::<f32>(n.max(1)).map_err(drv("alloc"));
        // Change scores and masks: per tile, or per cell where the mask grows by pixels.
        let cells = MaskGrowth::max_cells(&grid);
        let bufs = plan
            .buffers
            .iter()
            .map(|b| zeros_f32(b.len()))
            .collect::<Result<Vec<_>>>()?;
        let generic = crate::backend::generic::prepare(&plan);
        let device_tail = opts
            .device_tail
            .unwrap_or_else(|| env_switch("REGIONDROP_CUDA_DEVICE_TAIL", true));
        let tail = DeviceTail::of(&plan, &generic, device_tail);
        let consts = constants::upload(&plan, &stream, &generic, &tail, f16)?;
        let (steps, const_dev, weight_bytes) = (consts.steps, consts.slots, consts.weight_bytes);
        let (sa, sc) = geometry::scratch_sizes(&plan);
        let slots = plan.initial_slots();
        let mut backend = CudaBackend {
            // In f16 every convolution that gathers has an f16 weight copy and gathers into
            // scratch_a16 (`layers::launch_step`): the f32 operand scratch stays unused.
            scratch_a: zeros_f32(if f16 { 0 } else { sa })?,
            scratch_a16: if f16 {
                Some(stream.alloc_zeros::<u16>(sa.max(1)).map_err(drv("alloc"))?)
            } else {
                None
            },
            scratch_c: zeros_f32(sc)?,
            fused_counters: stream
                .alloc_zeros::<u32>(geometry::fused_counters_len(&plan).max(1))
                .map_err(drv("alloc"))?,
            tiles_dev: stream
                .alloc_zeros::<u32>(TilePacker::capacity_for(&plan, &grid))
                .map_err(drv("alloc"))?,
            input_tiles: stream
                .alloc_zeros::<u32>(grid.len().max(1))
                .map_err(drv("alloc"))?,
            rgb: stream
                .alloc_zeros::<u8>(plan.input_w * plan.input_h * 3)
                .map_err(drv("alloc"))?,
            rgb_host: Pinned::new(&ctx, plan.input_w * plan.input_h * 3)?,
            tiles_host: Pinned::new(&ctx, grid.len())?,
            lists_host: Pinned::new(
                &ctx,
                FixedPacker::capacity_for(&plan, &grid).max(TilePacker::capacity_for(&plan, &grid)),
            )?,
            out_host: steps
                .iter()
                .zip(&tail.download)
                .map(|(d, &down)| match d.result() {
                    Some(o) if down => Pinned::new(&ctx, o.len()).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?,
            det: Detect {
                reference: stream
                    .alloc_zeros::<u8>(plan.input_w * plan.input_h * 3)
                    .map_err(drv("alloc"))?,
                score: zeros_f32(cells)?,
                raw: stream
                    .alloc_zeros::<u8>(cells.max(1))
                    .map_err(drv("alloc"))?,
                dilated: stream
                    .alloc_zeros::<u8>(grid.len().max(1))
                    .map_err(drv("alloc"))?,
                mask_host: Pinned::new(&ctx, cells + grid.len())?,
                grower: CellGrower::default(),
                fired: RegionMask::empty(&grid),
                enabled: detect_enabled(),
                valid: false,
                frame: Staged::Nothing,
            },
            frames: DeviceFrames {
                enabled: opts
                    .device_letterbox
                    .unwrap_or_else(|| env_switch("REGIONDROP_CUDA_LETTERBOX", true)),
                bytes: stream.alloc_zeros::<u8>(1).map_err(drv("alloc"))?,
                staging: None,
                upload_piece: frames::upload_piece_bytes(),
                direct_uploads: 0,
                taps: None,
            },
            packer: TilePacker::default(),
            graphs: None,
            graph_note: String::new(),
            lanes: LaneSet::one(plan.steps.len()),
            lane_timing: None,
            lane_note: String::new(),
            pending: Vec::new(),
            select_on: opts
                .device_select
                .unwrap_or_else(|| env_switch("REGIONDROP_CUDA_SELECT", true)),
            select: None,
            blocking: None,
            outputs_stale: false,
            // Only where the kernels wait for their predecessor: PTX for sm_90 or newer (NVRTC
            // may have fallen back to an older target, or the PTX came precompiled).
            pdl: kernels::waits_for_predecessors(&ptx)
                && opts
                    .pdl
                    .unwrap_or_else(|| env_switch("REGIONDROP_CUDA_PDL", true)),
            tail,
            generic,
            const_dev,
            arch,
            device_name,
            precision: opts.precision,
            weight_bytes,
            profile: Profile::from_env(&ctx, plan.steps.len())?,
            addrs: Addrs::default(),
            fusion_timings: Vec::new(),
            fusion_note: String::new(),
            pipe_timed: false,
            // From here an early return drops the backend, whose Drop must not wait for the
            // guard this thread holds.
            setup: Some(setup),
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
        backend.fill_tail_tables()?;
        backend.addrs = Addrs {
            fused_conv_k: opts.fused_conv_k.unwrap_or_else(|| {
                std::env::var("REGIONDROP_CUDA_FUSED_K")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }),
            fused_tile44: opts.fused_tile44.unwrap_or_else(|| {
                std::env::var("REGIONDROP_CUDA_FUSED_TILE").is_ok_and(|v| v == "4x4")
            }),
            // mma.sync m16n8k16 (f16) needs compute capability 8.0.
            fused_tc: f16
                && major >= 8
                && opts.fused_tc.unwrap_or_else(|| {
                    !std::env::var("REGIONDROP_CUDA_FUSED_TC").is_ok_and(|v| v == "0")
                }),
            ..backend.addresses()
        };
        let pipe = opts.fused_pipe.unwrap_or_else(|| {
            match std::env::var("REGIONDROP_CUDA_FUSED_PIPE").as_deref() {
                Ok("1") => PipeMode::Always,
                Ok("auto") => PipeMode::Timed,
                _ => PipeMode::Off,
            }
        });
        // cp.async needs compute capability 8.0.
        backend.addrs.fused_pipe = major >= 8 && pipe == PipeMode::Always;
        backend.pipe_timed = major >= 8 && pipe == PipeMode::Timed;
        let auto = opts.fused_conv_auto.unwrap_or_else(|| {
            opts.fused_conv_k.is_none()
                && std::env::var("REGIONDROP_CUDA_FUSED_K")
                    .map_or(true, |v| v.parse::<usize>().is_err())
        });
        let key = tune::TuneKey {
            convs: tune::conv_shapes(&backend.plan),
            input: (backend.plan.input_w, backend.plan.input_h),
            tile: backend.grid.tile,
            device: device_id,
            kernels: [
                f16,
                backend.addrs.fused_tc,
                backend.addrs.fused_tile44,
                backend.blas.is_some(),
                backend.pdl,
                backend.addrs.fused_pipe,
                backend.pipe_timed,
            ],
        };
        if auto {
            match tune::FUSION_TIMED.once(key.clone(), || backend.tune_fusion()) {
                Ok(timings) => {
                    let mut fuse = vec![ConvWay::Apart; backend.plan.steps.len()];
                    for t in &timings {
                        if let Some(f) = fuse.get_mut(t.step) {
                            *f = t.way();
                        }
                    }
                    backend.addrs.fuse = fuse;
                    backend.fusion_timings = timings;
                }
                // Not timed: nothing fused, and the log says why. A capture that failed
                // half-way leaves the stream capturing: end it.
                Err(e) => {
                    let _ = backend.stream.end_capture(sys::CUgraphInstantiate_flags(0));
                    let _ = backend.ctx.check_err();
                    backend.fusion_note = format!(", convolutions not timed ({e})");
                }
            }
        }
        backend.stream.synchronize().map_err(drv("synchronize"))?;
        let off = opts.eager || !env_switch("REGIONDROP_CUDA_GRAPHS", true);
        if backend.profile.as_ref().is_some_and(|p| p.times_steps) {
            backend.graph_note = "eager: profiling times every step".into();
        } else if off {
            backend.graph_note = "eager".into();
        } else {
            let (max, timed) = backend.lane_choice(opts.lanes, opts.lanes_timed);
            match backend.build_lanes(max) {
                Ok(l) => backend.lanes = l,
                Err(e) => backend.graph_note = format!(", one lane ({e})"),
            }
            let captured = match timed && backend.lanes.lanes.count > 1 {
                true => backend.capture_timed(key),
                false => backend.capture_graphs(),
            };
            match captured {
                Ok(g) => {
                    let lanes = match backend.lanes.lanes.count {
                        n if n > 1 => format!(" on {n} lanes"),
                        _ => String::new(),
                    };
                    backend.graph_note = format!(
                        "CUDA graphs x{}{lanes}{}{}",
                        g.levels.len(),
                        backend.lane_note,
                        backend.graph_note
                    );
                    backend.graphs = Some(g);
                }
                Err(e) => {
                    // A capture that failed half-way leaves the stream capturing (with every
                    // lane that joined it): end it, then free the lanes, then clear any error
                    // either left in the context.
                    let _ = backend.stream.end_capture(sys::CUgraphInstantiate_flags(0));
                    backend.lanes = LaneSet::one(backend.plan.steps.len());
                    let _ = backend.ctx.check_err();
                    backend.graph_note = format!("eager: graph capture failed ({e})");
                }
            }
            backend.stream.synchronize().map_err(drv("synchronize"))?;
        }
        let blocking = opts
            .blocking_sync
            .unwrap_or_else(|| std::env::var("REGIONDROP_CUDA_SYNC").is_ok_and(|v| v == "block"));
        if blocking {
            let flags = sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC;
            let done = backend.ctx.new_event(Some(flags)).map_err(drv("event"))?;
            backend.blocking = Some(done);
        }
        backend.setup = None;
        Ok(backend)
    }

    /// How many lanes to build, and whether to time them against one stream: the options,
    /// else `REGIONDROP_CUDA_LANES` (a number: that many, untimed; `auto`: the default, four
    /// lanes timed).
    fn lane_choice(&mut self, lanes: Option<usize>, timed: Option<bool>) -> (usize, bool) {
        let env = std::env::var("REGIONDROP_CUDA_LANES").ok();
        let (max, explicit) = match (lanes, env.as_deref()) {
            (Some(n), _) => (n, true),
            (None, None | Some("auto")) => (DEFAULT_LANES, false),
            (None, Some(v)) => match v.parse::<usize>() {
                Ok(n) => (n, true),
                Err(_) => {
                    self.graph_note =
                        format!(", REGIONDROP_CUDA_LANES={v:?} is not a number or auto: auto");
                    (DEFAULT_LANES, false)
                }
            },
        };
        (max.max(1), timed.unwrap_or(!explicit))
    }

    /// Waits for the stream (spinning, or asleep on `blocking`); with profiling on, counts the
    /// wait.
    fn sync(&mut self) -> Result<()> {
        let t0 = Instant::now();
        match &self.blocking {
            Some(done) => {
                done.record(&self.stream).map_err(drv("record"))?;
                done.synchronize().map_err(drv("synchronize"))?;
            }
            None => self.stream.synchronize().map_err(drv("synchronize"))?,
        }
        if let Some(p) = &mut self.profile {
            p.add_sync(ms_since(t0));
        }
        Ok(())
    }

    /// How the frame's graphs timed on lanes and on one stream at start-up, where
    /// `CudaOptions::lanes_timed` chose between them.
    pub fn lane_timing(&self) -> Option<LaneTiming> {
        self.lane_timing
    }

    /// How each fusable convolution timed at start-up, fused and not, where `fused_conv_auto`
    /// chose between them (else empty).
    pub fn fusion_timings(&self) -> &[FusionTiming] {
        &self.fusion_timings
    }

    /// The device addresses of the convolutions' f32 weights and of their f16 copies, in step
    /// order: the same for every backend of the process that shares them (tests).
    #[doc(hidden)]
    pub fn weight_addresses(&self) -> Vec<(u64, Option<u64>)> {
        self.addrs
            .steps
            .iter()
            .filter_map(|s| match s {
                StepPtrs::Conv { w, w16, .. } => Some((*w, *w16)),
                _ => None,
            })
            .collect()
    }

    /// "device name (arch, gemm, precision, launches)" for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, GEMM {}, {}, {})",
            self.device_name,
            self.arch,
            if self.blas.is_some() {
                "cuBLAS"
            } else {
                "built-in"
            },
            self.precision,
            self.graph_note
        ) + &match self.tail.generic_out.iter().flatten().count() {
            0 => String::new(),
            n => format!(", {n} tail steps on the device"),
        } + if self.pdl {
            ", programmatic dependent launch"
        } else {
            ""
        } + if self.blocking.is_some() {
            ", blocking waits"
        } else {
            ""
        } + &match kernels::kernel_set().ok().and_then(|k| k.dir.as_ref()) {
            Some(dir) => format!(", kernels from {}", dir.display()),
            None => String::new(),
        } + &self.fusion_note
            + &match self
                .addrs
                .fuse
                .iter()
                .filter(|&&f| f != ConvWay::Apart)
                .count()
            {
                0 if !self.addrs.fuse.is_empty() => {
                    ", no convolution faster fused (timed)".to_string()
                }
                0 => String::new(),
                n => format!(", {n} convolutions fused (timed faster)"),
            }
            + &if self.addrs.fused_conv_k > 0 {
                format!(", fused convolutions up to K = {}", self.addrs.fused_conv_k)
            } else {
                String::new()
            }
            + if self.addrs.fused_conv_k == 0
                && self.addrs.fuse.iter().all(|&f| f == ConvWay::Apart)
            {
                ""
            } else if self.addrs.fused_tc {
                " (tensor cores)"
            } else if self.addrs.fused_tile44 {
                " (4x4)"
            } else {
                ""
            }
            + &match self
                .addrs
                .fuse
                .iter()
                .filter(|&&f| matches!(f, ConvWay::Piped | ConvWay::PipedT44))
                .count()
            {
                0 => String::new(),
                n => format!(", {n} of them pipelined"),
            }
            + if self.addrs.fused_pipe {
                ", fused convolutions pipelined where they can be"
            } else {
                ""
            }
    }

    /// Device address of slot `s` for the device Generic steps: its constant copy, or the result
    /// of the device step that writes it.
    fn slot_addr(&self, s: usize) -> u64 {
        match &self.const_dev[s] {
            Some(c) => self.ptr(c),
            None => self.tail.writer[s]
                .and_then(|w| self.steps[w].result())
                .map_or(0, |r| self.ptr(r)),
        }
    }

    /// Uploads the pointer tables of the device Generic steps' copy runs (the sources' addresses
    /// are known once every step's buffers exist).
    fn fill_tail_tables(&mut self) -> Result<()> {
        for si in 0..self.steps.len() {
            let Some(form) = self.generic[si].as_ref().and_then(|g| g.device_form()) else {
                continue;
            };
            if !matches!(self.steps[si], StepDev::Tail { .. }) {
                continue;
            }
            let addrs: Vec<u64> = TailUpload::of(&form)
                .table_slots
                .iter()
                .map(|&s| self.slot_addr(s))
                .collect();
            if let StepDev::Tail { table, .. } = &mut self.steps[si] {
                if !addrs.is_empty() {
                    self.stream
                        .memcpy_htod(&addrs, &mut table.slice_mut(..addrs.len()))
                        .map_err(drv("upload"))?;
                }
            }
        }
        Ok(())
    }

    fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// The device addresses the launches use (allocations never move once built); no fused
    /// convolutions (the caller sets that choice).
    fn addresses(&self) -> Addrs {
        let steps = self
            .steps
            .iter()
            .enumerate()
            .map(|(si, d)| match d {
                StepDev::None => StepPtrs::None,
                StepDev::Conv { f32, w16 } => StepPtrs::Conv {
                    w: self.ptr(&f32.w),
                    b: self.ptr(&f32.b),
                    w16: w16.as_ref().map(|w| self.ptr(w)),
                },
                StepDev::Resize(r) => StepPtrs::Resize([
                    self.ptr(&r.y[0]),
                    self.ptr(&r.y[1]),
                    self.ptr(&r.yf),
                    self.ptr(&r.x[0]),
                    self.ptr(&r.x[1]),
                    self.ptr(&r.xf),
                ]),
                StepDev::Affine { scale, shift } => StepPtrs::Affine {
                    scale: self.ptr(scale),
                    shift: self.ptr(shift),
                },
                StepDev::Rhs(d) => StepPtrs::Rhs(self.ptr(d), d.len()),
                StepDev::Gather(p) => StepPtrs::Gather(self.ptr(p)),
                StepDev::Out(o) => StepPtrs::Out(self.ptr(o)),
                StepDev::Tail { out, u32s, table } => {
                    let form = self.generic[si]
                        .as_ref()
                        .and_then(|g| g.device_form())
                        .expect("a device Generic step has a device form");
                    let u32s: Vec<u64> = u32s.iter().map(|u| self.ptr(u)).collect();
                    StepPtrs::Tail(tail_ptrs(
                        &form,
                        |s| self.slot_addr(s),
                        &u32s,
                        self.ptr(table),
                        self.ptr(out),
                        self.tail.len_of(&self.plan, si),
                    ))
                }
                StepDev::Rearranged { index, out } => StepPtrs::Rearrange {
                    src: match self.tail.rearrange_source(&self.plan, si) {
                        Some(RearrangeSource::Buffer(b)) => self.ptr(&self.bufs[b]),
                        Some(RearrangeSource::Result(from)) => {
                            self.steps[from].result().map_or(0, |r| self.ptr(r))
                        }
                        None => 0,
                    },
                    index: self.ptr(index),
                    out: self.ptr(out),
                    n: self.tail.len_of(&self.plan, si),
                },
            })
            .collect();
        Addrs {
            bufs: self.bufs.iter().map(|b| self.ptr(b)).collect(),
            steps,
            scratch_a: self.ptr(&self.scratch_a),
            scratch_a16: self.scratch_a16.as_ref().map(|a| self.ptr(a)),
            scratch_c: self.ptr(&self.scratch_c),
            fused_conv_k: 0,
            fuse: Vec::new(),
            fused_tile44: false,
            fused_tc: false,
            fused_pipe: false,
            split: geometry::SplitSpace {
                ws: self.ptr(&self.scratch_c),
                ws_len: self.scratch_c.len(),
                counters: self.ptr(&self.fused_counters),
                counters_len: self.fused_counters.len(),
            },
        }
    }

    /// Launches the kernels of a Layer, GlobalPool or Export step (nothing on the host).
    fn launch_step(&self, si: usize, ll: LayerLists) -> Result<()> {
        layers::launch_step(self, &self.plan, &self.grid, &self.addrs, si, ll)
    }

    /// Uploads the host operand (slot) of Binary layer `si`, once the slots are up to date, or
    /// copies it on the device where a device step wrote it.
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
            if self.copy_operand(si, &self.stream)? {
                return Ok(());
            }
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

    /// Copies the slot operand of Binary layer `si` on the device where a device step wrote it,
    /// in the order of `stream` (no synchronisation; captured into a graph during capture).
    /// Returns whether it did.
    fn copy_operand(&self, si: usize, stream: &CudaStream) -> Result<bool> {
        let Step::Layer(l) = &self.plan.steps[si] else {
            return Ok(false);
        };
        let LayerOp::Binary {
            rhs: Operand::Slot(slot),
            ..
        } = &l.op
        else {
            return Ok(false);
        };
        let Some(w) = self.tail.writer[*slot] else {
            return Ok(false);
        };
        let (StepDev::Rhs(d), Some(src)) = (&self.steps[si], self.steps[w].result()) else {
            return Ok(false);
        };
        let n = d.len().min(src.len());
        let (dst, src) = (self.ptr(d), self.ptr(src));
        // SAFETY: both are live allocations of this backend holding at least n floats.
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, n * 4, stream.cu_stream()) }
            .map_err(drv("operand copy"))?;
        Ok(true)
    }

    /// A step that does nothing (see `lanes::writes_nothing`).
    fn writes_nothing(&self, si: usize) -> bool {
        lanes::writes_nothing(&self.plan, &self.tail, &self.generic, si)
    }

    /// Runs a host Rearrange / Generic step.
    fn run_host(&mut self, si: usize) -> Result<()> {
        let plan = self.plan.clone();
        match &plan.steps[si] {
            Step::Rearrange {
                input,
                index,
                output,
            } => {
                self.flush()?;
                assert_ne!(input, output, "a Rearrange step reads another slot");
                let mut out = std::mem::take(&mut self.slots[*output].data);
                let src = &self.slots[*input].data;
                for (d, &i) in out.iter_mut().zip(&index.data) {
                    *d = src[i as usize];
                }
                self.slots[*output].data = out;
            }
            Step::Generic { .. } => {
                self.flush()?;
                match &self.generic[si] {
                    Some(g) => g.run(&mut self.slots)?,
                    None => unreachable!("every Generic step is prepared"),
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

    /// Packs the eager tile lists of `per_step` and uploads them; their device address.
    fn upload_eager_lists(&mut self, per_step: &[Vec<u32>]) -> Result<u64> {
        let plan = self.plan.clone();
        self.packer.pack(&plan, &self.grid, per_step);
        upload_lists(
            &mut self.lists_host,
            &self.stream,
            &self.packer.data,
            &self.tiles_dev,
        )?;
        Ok(self.ptr(&self.tiles_dev))
    }

    fn run_eager(&mut self, tiles: &StepTiles) -> Result<()> {
        let plan = self.plan.clone();
        let base = self.upload_eager_lists(&tiles.per_step)?;
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::Layer(_) => {
                    let sl = self.packer.steps[si];
                    if sl.n > 0 {
                        self.upload_rhs(si)?;
                    }
                    self.launch_step(si, LayerLists::at(base, sl))?;
                }
                _ if self.steps[si].result().is_some() => {
                    self.launch_step(si, LayerLists::NONE)?;
                    if self.downloads_now(si) {
                        self.pending.push(si);
                    }
                }
                _ if self.writes_nothing(si) => {}
                _ => self.run_host(si)?,
            }
            if let Some(p) = &mut self.profile {
                p.step_done(si, &self.stream)?;
            }
        }
        self.flush()
    }
}

/// Launches on one of the backend's streams: the frame's own, or a lane's (with the lane's
/// cuBLAS handle).
pub(super) struct OnStream<'a> {
    b: &'a CudaBackend,
    stream: &'a CudaStream,
    blas: Option<&'a cudarc::cublas::CudaBlas>,
}

impl CudaBackend {
    /// Launches on the frame's own stream.
    fn on_main(&self) -> OnStream<'_> {
        OnStream {
            b: self,
            stream: &self.stream,
            blas: self.blas.as_ref(),
        }
    }
}

impl OnStream<'_> {
    /// Launches kernel `k` with the programmatic-stream-serialization attribute (cuLaunchKernelEx).
    fn launch_pdl(&self, k: Kernel, dims: Dims, args: &[KArg]) -> Result<()> {
        const MAX_ARGS: usize = 40;
        if args.len() > MAX_ARGS {
            return Err(Error::Backend(format!(
                "{}: {} kernel arguments, at most {MAX_ARGS}",
                k.entry(),
                args.len()
            )));
        }
        // Each argument in an 8-byte slot (little-endian: an int or float is its first 4 bytes).
        let mut slots = [0u64; MAX_ARGS];
        for (s, a) in slots.iter_mut().zip(args) {
            *s = match *a {
                KArg::Ptr(v) => v,
                KArg::I32(v) => v as u32 as u64,
                KArg::F32(v) => v.to_bits() as u64,
            };
        }
        let mut params = [std::ptr::null_mut::<std::ffi::c_void>(); MAX_ARGS];
        for (p, s) in params.iter_mut().zip(slots.iter_mut()) {
            *p = (s as *mut u64).cast();
        }
        // SAFETY: a zeroed attribute is valid plain data; id and value are set below.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let cfg = sys::CUlaunchConfig {
            gridDimX: dims.grid.0,
            gridDimY: dims.grid.1,
            gridDimZ: dims.grid.2,
            blockDimX: dims.block.0,
            blockDimY: dims.block.1,
            blockDimZ: dims.block.2,
            sharedMemBytes: 0,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: as in `launch`; `params` points at one slot per argument, alive for the call
        // (the driver copies the values at launch).
        unsafe {
            sys::cuLaunchKernelEx(
                &cfg,
                self.b.k.get(k).cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .map_err(drv(k.entry()))
    }
}

impl Launcher for CudaBackend {
    fn launch(&self, k: Kernel, dims: Dims, args: &[KArg]) -> Result<()> {
        self.on_main().launch(k, dims, args)
    }

    fn gemm(&self, m: usize, n: usize, k: usize, a: u64, w: u64, c: u64, half: bool) -> Result<()> {
        self.on_main().gemm(m, n, k, a, w, c, half)
    }
}

impl Launcher for OnStream<'_> {
    fn launch(&self, k: Kernel, dims: Dims, args: &[KArg]) -> Result<()> {
        if self.b.pdl {
            return self.launch_pdl(k, dims, args);
        }
        let mut b = self.stream.launch_builder(self.b.k.get(k));
        for a in args {
            match a {
                KArg::Ptr(v) => b.arg(v),
                KArg::I32(v) => b.arg(v),
                KArg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: dims.grid,
            block_dim: dims.block,
            shared_mem_bytes: 0,
        };
        // SAFETY: layers.rs passes each kernel the argument list of its signature in cuda/*.cu,
        // and every address is a live allocation of this backend sized by the plan (geometry.rs).
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(drv(k.entry()))
    }

    fn gemm(&self, m: usize, n: usize, k: usize, a: u64, w: u64, c: u64, half: bool) -> Result<()> {
        match self.blas {
            Some(blas) if half => {
                use cudarc::cublas::sys::{
                    cublasComputeType_t::CUBLAS_COMPUTE_32F, cublasGemmAlgo_t,
                    cublasOperation_t::CUBLAS_OP_N, cudaDataType::CUDA_R_16F,
                    cudaDataType::CUDA_R_32F,
                };
                let (alpha, beta) = (1.0f32, 0.0f32);
                // As below: row-major C = A·W is column-major Cᵀ = Wᵀ·Aᵀ.
                // SAFETY: as below; A and W hold f16 values (2 bytes each) of the same counts.
                unsafe {
                    cudarc::cublas::result::gemm_ex(
                        *blas.handle(),
                        CUBLAS_OP_N,
                        CUBLAS_OP_N,
                        n as i32,
                        m as i32,
                        k as i32,
                        (&alpha as *const f32).cast(),
                        w as *const std::ffi::c_void,
                        CUDA_R_16F,
                        n as i32,
                        a as *const std::ffi::c_void,
                        CUDA_R_16F,
                        k as i32,
                        (&beta as *const f32).cast(),
                        c as *mut std::ffi::c_void,
                        CUDA_R_32F,
                        n as i32,
                        CUBLAS_COMPUTE_32F,
                        cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                }
                .map_err(drv("cuBLAS GemmEx f16"))
            }
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
            None if half => Err(Error::Backend("an f16 GEMM without cuBLAS".into())),
            None => match geometry::gemm_launch(m, n)? {
                Some(d) => self.launch(
                    Kernel::Sgemm,
                    d,
                    &kargs!(a, w, c, m as i32, n as i32, k as i32),
                ),
                None => Ok(()),
            },
        }
    }
}

/// Uploads a frame's tile lists to `dst`, staged in pinned memory so the copy is one DMA with no
/// driver-side copy. The staging buffer is free: every frame ends with a synchronisation.
fn upload_lists(
    staging: &mut Pinned<u32>,
    stream: &Arc<CudaStream>,
    words: &[u32],
    dst: &CudaSlice<u32>,
) -> Result<()> {
    let len = words.len();
    if len > dst.len() || len > staging.len {
        return Err(Error::Backend(format!(
            "tile lists of {len} words exceed their buffers ({} on the device, {} staged)",
            dst.len(),
            staging.len
        )));
    }
    if len == 0 {
        return Ok(());
    }
    staging.as_mut_slice()[..len].copy_from_slice(words);
    let (dst, _guard) = dst.device_ptr(stream);
    // SAFETY: dst holds at least len words (checked above); the pinned source lives as long as
    // the backend and is not written again before the stream is synchronised at the end of the
    // frame.
    unsafe {
        cudarc::driver::result::memcpy_htod_async(
            dst,
            &staging.as_slice()[..len],
            stream.cu_stream(),
        )
    }
    .map_err(drv("tile upload"))
}

/// Whether `detect_changes` runs on the device (`REGIONDROP_CUDA_DETECT=1` / `=0`, else
/// [`DETECT_DEFAULT`]).
/// Read once per backend, when it is built.
fn detect_enabled() -> bool {
    env_switch("REGIONDROP_CUDA_DETECT", DETECT_DEFAULT)
}

/// An on/off environment switch: `0` or `false` turns it off, `1` or `true` on; unset or any
/// other value leaves `default`.
pub(crate) fn env_switch(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0" | "false") => false,
        Ok("1" | "true") => true,
        _ => default,
    }
}

/// Device-side change detection by default (REGIONDROP_CUDA_DETECT unset); verified on an H100
/// against the host detector (tests/cuda_backend.rs, engine_process_matches_cpu_with_device_detection).
const DETECT_DEFAULT: bool = true;

/// Lanes a backend builds and times against one stream unless told otherwise.
const DEFAULT_LANES: usize = 4;

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

    fn describe(&self) -> String {
        CudaBackend::describe(self)
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn write_input_tensor(&mut self, nchw: &Tensor) -> Result<()> {
        let p = &self.plan;
        let host = super::super::nchw_to_nhwc(nchw, p.input_c, p.input_h, p.input_w)?;
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        self.det.frame = Staged::Nothing;
        self.stream
            .memcpy_htod(&host, &mut self.bufs[0])
            .map_err(drv("input upload"))?;
        Ok(())
    }

    fn write_input(&mut self, rgb: &[u8], norm: &InputNorm, tiles: &[u32]) -> Result<()> {
        let t0 = Instant::now();
        let r = self.write_input_tiles(rgb, norm, tiles);
        if let Some(p) = &mut self.profile {
            p.add(Phase::Input, ms_since(t0));
        }
        r
    }

    fn run(&mut self, tiles: &StepTiles) -> Result<()> {
        let t0 = Instant::now();
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        if let Some(p) = &mut self.profile {
            p.begin_frame(&self.stream)?;
        }
        if let Some(sel) = &mut self.select {
            sel.fresh = false;
        }
        self.run_steps(tiles)?;
        // A frame is done when its outputs (or the candidates selected from them) are on the
        // host, where the detections are decoded: this also makes the engine's per-frame time
        // include all GPU work.
        self.flush()?;
        self.select_candidates()?;
        match &mut self.profile {
            Some(p) => p.end_frame(ms_since(t0)),
            None => Ok(()),
        }
    }

    fn step_times(&self) -> Option<&[Vec<f64>]> {
        self.profile
            .as_ref()
            .filter(|p| p.times_steps)
            .map(|p| &p.steps[..])
    }

    fn phase_times(&self) -> &[(&'static str, Vec<f64>)] {
        self.profile.as_ref().map_or(&[], |p| &p.phases[..])
    }

    fn outputs(&mut self) -> Result<Vec<Tensor>> {
        self.fetch_outputs()?;
        Ok(crate::backend::collect_outputs(&self.plan, &self.slots))
    }

    fn slots(&mut self) -> Result<&[Tensor]> {
        self.fetch_outputs()?;
        Ok(&self.slots)
    }

    fn set_gate(&mut self, gate: Option<&Gate>) -> Result<bool> {
        if !self.select_on {
            // Nothing was ever selected: no buffers to replace, no outputs held back.
            return Ok(false);
        }
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        self.fetch_outputs()?;
        let table =
            gate.and_then(|g| Some((g, SelectTable::new(g, |i| self.output_on_device(i))?)));
        // Another threshold on the same outputs: no new buffers.
        if let (Some(sel), Some((gate, table))) = (&mut self.select, &table) {
            if sel.reads(table) {
                sel.set_threshold(gate.threshold);
                return Ok(true);
            }
        }
        // Pinned allocations and frees: one backend set-up at a time in the process.
        let _guard = setup_guard();
        self.stream.synchronize().map_err(drv("synchronize"))?;
        self.select = None;
        let Some((gate, table)) = table else {
            return Ok(false);
        };
        self.select = Some(SelectDev::new(
            &self.ctx,
            &self.stream,
            table,
            gate.threshold,
        )?);
        Ok(true)
    }

    fn candidates(&self) -> Option<&Candidates> {
        self.select
            .as_ref()
            .filter(|s| s.fresh)
            .map(|s| &s.candidates)
    }

    fn read_buffer(&mut self, buf: usize) -> Result<Vec<f32>> {
        self.flush()?;
        self.stream
            .clone_dtoh(&self.bufs[buf])
            .map_err(drv("buffer download"))
    }

    fn letterbox_frame(&mut self, frame: &dyn PixelSource) -> Option<Result<Letterbox>> {
        if !(self.frames.enabled && self.det.enabled) {
            return None;
        }
        let t0 = Instant::now();
        let r = self.letterbox_on_device(frame);
        if let Some(p) = &mut self.profile {
            p.add(Phase::Letterbox, ms_since(t0));
        }
        Some(r)
    }

    fn frame_memory(&self) -> Option<crate::backend::frame_memory::FrameMemory> {
        (self.frames.enabled && self.det.enabled).then(|| pinned_frames::memory(self.ctx.clone()))
    }

    fn direct_uploads(&self) -> u64 {
        self.frames.direct_uploads
    }

    fn end_failed_frame(&mut self) {
        let _ = self.stream.synchronize();
    }

    fn detect_changes(
        &mut self,
        rgb: &[u8],
        threshold: f32,
        metric: DiffMetric,
        growth: MaskGrowth,
        mask: &mut RegionMask,
    ) -> Option<Result<()>> {
        if !self.det.enabled {
            return None;
        }
        let t0 = Instant::now();
        let r = self.detect_on_device(rgb, threshold, metric, growth, mask);
        if let Some(p) = &mut self.profile {
            p.add(Phase::Detect, ms_since(t0));
        }
        Some(r)
    }

    fn reset(&mut self) {
        self.det.valid = false;
        self.det.frame = Staged::Nothing;
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
        let scratch16 = self.scratch_a16.as_ref().map_or(0, |a| a.len() * 2);
        // Device tail: results, their arrays and pointer tables, constant slot copies.
        let tail: usize = self
            .steps
            .iter()
            .map(|d| match d {
                StepDev::Tail { out, u32s, table } => {
                    out.len() * 4
                        + u32s.iter().map(|u| u.len() * 4).sum::<usize>()
                        + table.len() * 8
                }
                _ => 0,
            })
            .sum::<usize>()
            + self
                .const_dev
                .iter()
                .flatten()
                .map(|c| c.len() * 4)
                .sum::<usize>();
        (caches + self.scratch_a.len() + self.scratch_c.len() + self.fused_counters.len()) * 4
            + self.lanes.bytes()
            + self.weight_bytes
            + scratch16
            + tail
            + self.select.as_ref().map_or(0, SelectDev::bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::env_switch;

    #[test]
    fn env_switches_read_0_false_1_true_and_keep_the_default_otherwise() {
        // A name of this test's own: the environment is shared by the process's tests.
        const NAME: &str = "REGIONDROP_TEST_ENV_SWITCH";
        std::env::remove_var(NAME);
        assert!(env_switch(NAME, true));
        assert!(!env_switch(NAME, false));
        for (value, default, want) in [
            ("0", true, false),
            ("false", true, false),
            ("1", false, true),
            ("true", false, true),
            ("yes", false, false),
            ("", true, true),
        ] {
            std::env::set_var(NAME, value);
            assert_eq!(env_switch(NAME, default), want, "{NAME}={value:?}");
        }
        std::env::remove_var(NAME);
    }
}
