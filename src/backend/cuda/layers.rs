//! What the device runs for each plan step: which kernels, over which tiles, with which
//! arguments. Written against [`Launcher`] and plain addresses so the same code drives the GPU
//! (the CUDA backend) and, in tests, the kernels compiled for the host (tests/cuda_emu), where the
//! addresses are host pointers.

use super::geometry::{self, act_code, binop_code, max_tile_px, pool_code, Dims};
use crate::error::{Error, Result};
use crate::mask::TileGrid;
use crate::model::plan::{ConvSpec, Layer, LayerOp, Operand, Plan, Step};
use crate::preprocess::{FramePlanes, PAD_VALUE};

/// Every kernel of `cuda/*.cu`, by its entry name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    InputNorm,
    Letterbox,
    TileDiff,
    MaskDilate,
    MaskCompact,
    RefUpdate,
    Im2col,
    Im2colH,
    Scatter,
    Depthwise,
    Sgemm,
    ConvRows,
    ConvRowsN32,
    ConvRowsT44,
    ConvRowsN32T44,
    ConvRowsTc,
    ConvRowsTcN32,
    ConvRowsTcT44,
    ConvRowsTcN32T44,
    ConvRowsPipe,
    ConvRowsPipeN32,
    ConvRowsPipeT44,
    ConvRowsPipeN32T44,
    ConvRowsPipeF32,
    ConvRowsPipeF32N32,
    Pool,
    Resize,
    Affine,
    Unary,
    Binary,
    Gather,
    Export,
    GlobalAvgPool,
    Rearrange,
    TailCopy,
    TailAct,
    TailBinary,
    TailSoftmax,
    TailConv,
    Select,
}

impl Kernel {
    pub const ALL: [Kernel; 40] = [
        Kernel::InputNorm,
        Kernel::Letterbox,
        Kernel::TileDiff,
        Kernel::MaskDilate,
        Kernel::MaskCompact,
        Kernel::RefUpdate,
        Kernel::Im2col,
        Kernel::Im2colH,
        Kernel::Scatter,
        Kernel::Depthwise,
        Kernel::Sgemm,
        Kernel::ConvRows,
        Kernel::ConvRowsN32,
        Kernel::ConvRowsT44,
        Kernel::ConvRowsN32T44,
        Kernel::ConvRowsTc,
        Kernel::ConvRowsTcN32,
        Kernel::ConvRowsTcT44,
        Kernel::ConvRowsTcN32T44,
        Kernel::ConvRowsPipe,
        Kernel::ConvRowsPipeN32,
        Kernel::ConvRowsPipeT44,
        Kernel::ConvRowsPipeN32T44,
        Kernel::ConvRowsPipeF32,
        Kernel::ConvRowsPipeF32N32,
        Kernel::Pool,
        Kernel::Resize,
        Kernel::Affine,
        Kernel::Unary,
        Kernel::Binary,
        Kernel::Gather,
        Kernel::Export,
        Kernel::GlobalAvgPool,
        Kernel::Rearrange,
        Kernel::TailCopy,
        Kernel::TailAct,
        Kernel::TailBinary,
        Kernel::TailSoftmax,
        Kernel::TailConv,
        Kernel::Select,
    ];

    /// The `extern "C" __global__` name in `cuda/*.cu`.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::InputNorm => "rd_input_norm",
            Kernel::Letterbox => "rd_letterbox",
            Kernel::TileDiff => "rd_tile_diff",
            Kernel::MaskDilate => "rd_mask_dilate",
            Kernel::MaskCompact => "rd_mask_compact",
            Kernel::RefUpdate => "rd_ref_update",
            Kernel::Im2col => "rd_im2col",
            Kernel::Im2colH => "rd_im2col_h",
            Kernel::Scatter => "rd_scatter_bias_act",
            Kernel::Depthwise => "rd_depthwise",
            Kernel::Sgemm => "rd_sgemm_rm",
            Kernel::ConvRows => "rd_conv_rows",
            Kernel::ConvRowsN32 => "rd_conv_rows_n32",
            Kernel::ConvRowsT44 => "rd_conv_rows_t44",
            Kernel::ConvRowsN32T44 => "rd_conv_rows_n32_t44",
            Kernel::ConvRowsTc => "rd_conv_rows_tc",
            Kernel::ConvRowsTcN32 => "rd_conv_rows_tc_n32",
            Kernel::ConvRowsTcT44 => "rd_conv_rows_tc_t44",
            Kernel::ConvRowsTcN32T44 => "rd_conv_rows_tc_n32_t44",
            Kernel::ConvRowsPipe => "rd_conv_rows_pipe",
            Kernel::ConvRowsPipeN32 => "rd_conv_rows_pipe_n32",
            Kernel::ConvRowsPipeT44 => "rd_conv_rows_pipe_t44",
            Kernel::ConvRowsPipeN32T44 => "rd_conv_rows_pipe_n32_t44",
            Kernel::ConvRowsPipeF32 => "rd_conv_rows_pipe_f32",
            Kernel::ConvRowsPipeF32N32 => "rd_conv_rows_pipe_f32_n32",
            Kernel::Pool => "rd_pool",
            Kernel::Resize => "rd_resize",
            Kernel::Affine => "rd_affine",
            Kernel::Unary => "rd_unary",
            Kernel::Binary => "rd_binary",
            Kernel::Gather => "rd_gather",
            Kernel::Export => "rd_export_nchw",
            Kernel::GlobalAvgPool => "rd_global_avg_pool",
            Kernel::Rearrange => "rd_rearrange",
            Kernel::TailCopy => "rd_tail_copy",
            Kernel::TailAct => "rd_tail_act",
            Kernel::TailBinary => "rd_tail_binary",
            Kernel::TailSoftmax => "rd_tail_softmax",
            Kernel::TailConv => "rd_tail_conv",
            Kernel::Select => "rd_select",
        }
    }

    /// Whether the kernel synchronises its block's threads (`__syncthreads`).
    pub fn syncs_threads(self) -> bool {
        matches!(
            self,
            Kernel::TileDiff
                | Kernel::MaskCompact
                | Kernel::Sgemm
                | Kernel::ConvRows
                | Kernel::ConvRowsN32
                | Kernel::ConvRowsT44
                | Kernel::ConvRowsN32T44
                | Kernel::ConvRowsTc
                | Kernel::ConvRowsTcN32
                | Kernel::ConvRowsTcT44
                | Kernel::ConvRowsTcN32T44
                | Kernel::ConvRowsPipe
                | Kernel::ConvRowsPipeN32
                | Kernel::ConvRowsPipeT44
                | Kernel::ConvRowsPipeN32T44
                | Kernel::ConvRowsPipeF32
                | Kernel::ConvRowsPipeF32N32
                | Kernel::GlobalAvgPool
        )
    }
}

/// One kernel argument: a device address, an `int` or a `float`.
#[derive(Clone, Copy, Debug)]
pub enum KArg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

impl From<u64> for KArg {
    fn from(v: u64) -> Self {
        KArg::Ptr(v)
    }
}

impl From<i32> for KArg {
    fn from(v: i32) -> Self {
        KArg::I32(v)
    }
}

impl From<f32> for KArg {
    fn from(v: f32) -> Self {
        KArg::F32(v)
    }
}

/// Builds a `[KArg; N]` from addresses (u64), ints (i32) and floats (f32).
macro_rules! kargs {
    ($($a:expr),* $(,)?) => { [$($crate::backend::cuda::layers::KArg::from($a)),*] };
}
pub(crate) use kargs;

/// Runs kernels and GEMMs, in order.
pub trait Launcher {
    fn launch(&self, k: Kernel, dims: Dims, args: &[KArg]) -> Result<()>;
    /// Row-major C[m×n] (f32) = A[m×k]·W[k×n]; A and W are f32, or f16 bits when `half`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(&self, m: usize, n: usize, k: usize, a: u64, w: u64, c: u64, half: bool) -> Result<()>;
}

/// Device addresses of one step's constants.
#[derive(Clone, Copy, Debug, Default)]
pub enum StepPtrs {
    #[default]
    None,
    Conv {
        w: u64,
        b: u64,
        /// The f16 copy of the weights (precision f16, not depthwise).
        w16: Option<u64>,
    },
    /// Taps of a Resize: y i0, y i1, y frac, x i0, x i1, x frac.
    Resize([u64; 6]),
    Affine {
        scale: u64,
        shift: u64,
    },
    /// Right operand of a Binary layer given as channels (or a slot uploaded before the step):
    /// address and number of values.
    Rhs(u64, usize),
    Gather(u64),
    /// Result of an Export / GlobalPool step.
    Out(u64),
    /// A Rearrange step run on the device ([`super::tail::DeviceTail`]): the result it reads,
    /// its index, its own result and the number of values.
    Rearrange {
        src: u64,
        index: u64,
        out: u64,
        n: usize,
    },
    /// A Generic step run on the device.
    Tail(TailPtrs),
}

impl StepPtrs {
    /// The address of the step's result (Export, GlobalPool, device Rearrange or Generic step).
    pub fn result(&self) -> Option<u64> {
        match *self {
            StepPtrs::Out(o) | StepPtrs::Rearrange { out: o, .. } => Some(o),
            StepPtrs::Tail(
                TailPtrs::Copy { out, .. }
                | TailPtrs::Act { out, .. }
                | TailPtrs::Binary { out, .. }
                | TailPtrs::Softmax { out, .. }
                | TailPtrs::Conv { out, .. },
            ) => Some(out),
            _ => None,
        }
    }
}

/// Device addresses of a Generic step run on the device ([`super::tail`]); `out` holds `n` values.
#[derive(Clone, Copy, Debug)]
pub enum TailPtrs {
    /// Copy runs: pointer table of the source slots, run starts in the output, run starts in
    /// the sources, table index of each run.
    Copy {
        table: u64,
        dst: u64,
        src: u64,
        slot: u64,
        runs: usize,
        out: u64,
        n: usize,
    },
    Act {
        x: u64,
        act: (i32, f32, f32),
        out: u64,
        n: usize,
    },
    /// Broadcast maps where an input's shape differs from the output's.
    Binary {
        a: u64,
        a_map: Option<u64>,
        b: u64,
        b_map: Option<u64>,
        op: i32,
        out: u64,
        n: usize,
    },
    Softmax {
        x: u64,
        extents: (usize, usize, usize),
        out: u64,
    },
    /// `g`: c, h, w, co, cig, kh, kw, group, sh, sw, dh, dw, pad top, pad left, oh, ow.
    Conv {
        x: u64,
        w: u64,
        b: Option<u64>,
        g: [i32; 16],
        out: u64,
        n: usize,
    },
}

/// Launches a Generic step's device form.
pub fn launch_tail(dev: &impl Launcher, t: TailPtrs) -> Result<()> {
    let n = match t {
        TailPtrs::Copy { n, .. }
        | TailPtrs::Act { n, .. }
        | TailPtrs::Binary { n, .. }
        | TailPtrs::Conv { n, .. } => n,
        TailPtrs::Softmax {
            extents: (outer, _, inner),
            ..
        } => outer * inner,
    };
    let Some(d) = geometry::linear_launch(n) else {
        return Ok(());
    };
    match t {
        TailPtrs::Copy {
            table,
            dst,
            src,
            slot,
            runs,
            out,
            n,
        } => dev.launch(
            Kernel::TailCopy,
            d,
            &kargs!(table, dst, src, slot, runs as i32, out, n as i32),
        ),
        TailPtrs::Act {
            x,
            act: (code, p0, p1),
            out,
            n,
        } => dev.launch(Kernel::TailAct, d, &kargs!(x, out, n as i32, code, p0, p1)),
        TailPtrs::Binary {
            a,
            a_map,
            b,
            b_map,
            op,
            out,
            n,
        } => dev.launch(
            Kernel::TailBinary,
            d,
            &kargs!(
                a,
                a_map.unwrap_or(0),
                a_map.is_some() as i32,
                b,
                b_map.unwrap_or(0),
                b_map.is_some() as i32,
                out,
                n as i32,
                op
            ),
        ),
        TailPtrs::Softmax {
            x,
            extents: (outer, n, inner),
            out,
        } => dev.launch(
            Kernel::TailSoftmax,
            d,
            &kargs!(x, out, outer as i32, n as i32, inner as i32),
        ),
        TailPtrs::Conv {
            x, w, b, g, out, ..
        } => dev.launch(
            Kernel::TailConv,
            d,
            &kargs!(
                x,
                w,
                b.unwrap_or(0),
                b.is_some() as i32,
                out,
                g[0],
                g[1],
                g[2],
                g[3],
                g[4],
                g[5],
                g[6],
                g[7],
                g[8],
                g[9],
                g[10],
                g[11],
                g[12],
                g[13],
                g[14],
                g[15]
            ),
        ),
    }
}

/// How a convolution step runs, as the start-up timing chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvWay {
    /// Gather, GEMM and scatter (unless `Addrs::fused_conv_k` fuses it).
    #[default]
    Apart,
    /// One fused kernel (rd_conv_rows*).
    Fused,
    /// One fused kernel with its operands copied ahead by cp.async (rd_conv_rows_pipe*: on the
    /// tensor cores where `Addrs::fused_tc` and the layer has f16 weights, else in f32), where
    /// [`geometry::pipeable`]; else as `Fused`.
    Piped,
    /// `Piped` on the tensor cores in the larger blocks of `Addrs::fused_tile44` (64 × 64,
    /// 128 × 32); in f32, as `Piped`.
    PipedT44,
}

/// Where everything a frame's launches touch lives.
#[derive(Clone, Debug, Default)]
pub struct Addrs {
    /// Base address of each feature buffer of the plan (NHWC f32).
    pub bufs: Vec<u64>,
    pub steps: Vec<StepPtrs>,
    /// Gathered GEMM operand (f32), its f16 twin (precision f16) and the GEMM result.
    pub scratch_a: u64,
    pub scratch_a16: Option<u64>,
    pub scratch_c: u64,
    /// Convolutions (not transposed) with at most this many taps per output (K = kh·kw·cin per
    /// group; where [`geometry::fusable`]) run as one fused kernel (rd_conv_rows)
    /// instead of gather, GEMM and scatter (0: never).
    pub fused_conv_k: usize,
    /// Per step: how this convolution runs whatever its K (chosen by timing each way at
    /// start-up, the default; see `CudaOptions::fused_conv_auto`); empty: `fused_conv_k` alone
    /// decides.
    pub fuse: Vec<ConvWay>,
    /// The fused kernel computes 4 × 4 outputs per thread in larger blocks (the _t44 variants)
    /// instead of 2 × 4.
    pub fused_tile44: bool,
    /// Fused convolutions of layers with an f16 weight copy (precision f16) multiply on the
    /// tensor cores (rd_conv_rows_tc: f16 operands, f32 sums; compute capability 8.0 and newer)
    /// instead of in f32 with the f32 weights.
    pub fused_tc: bool,
    /// Every fused convolution that can runs pipelined (rd_conv_rows_pipe*), not only the steps
    /// `fuse` marks [`ConvWay::Piped`].
    pub fused_pipe: bool,
    /// Where the fused kernel may split K (the GEMM result scratch, which it does not otherwise
    /// use, and zeroed counters).
    pub split: geometry::SplitSpace,
}

impl Addrs {
    /// Address of channel `c_off` of buffer `buf`.
    pub fn view(&self, buf: usize, c_off: usize) -> u64 {
        self.bufs[buf] + (c_off * 4) as u64
    }

    /// These addresses with scratch `s` in place of every scratch they had: what the steps of a
    /// scratch slot launch with, so that steps that may run at once share nothing but their own
    /// buffers.
    pub fn with_scratch(&self, s: Scratch) -> Addrs {
        Addrs {
            scratch_a: s.a,
            scratch_a16: self.scratch_a16.and(s.a16),
            scratch_c: s.c,
            split: geometry::SplitSpace {
                ws: s.c,
                ws_len: s.c_len,
                counters: s.counters,
                counters_len: s.counters_len,
            },
            ..self.clone()
        }
    }
}

/// Scratch a set of launches writes besides the steps' own buffers (device addresses; lengths
/// in floats and u32s): the gathered operand, its f16 twin, the GEMM result, which is also the
/// split K's partial sums, and the split counters.
#[derive(Clone, Copy, Debug)]
pub struct Scratch {
    pub a: u64,
    pub a16: Option<u64>,
    pub c: u64,
    pub c_len: usize,
    pub counters: u64,
    pub counters_len: usize,
}

/// Where one layer launch finds its tile list (device addresses) and how much it covers.
#[derive(Clone, Copy, Debug)]
pub struct LayerLists {
    pub tiles: u64,
    pub rows: u64,
    /// Tile blocks to launch (entries of the list; graph lists are padded with NO_TILE).
    pub n: usize,
    /// GEMM rows.
    pub m: usize,
}

impl LayerLists {
    /// A step's lists at their offsets (in u32s) into the lists uploaded at device address `base`.
    pub fn at(base: u64, sl: geometry::StepLists) -> Self {
        LayerLists {
            tiles: base + (sl.tiles * 4) as u64,
            rows: base + (sl.rows * 4) as u64,
            n: sl.n,
            m: sl.m,
        }
    }

    pub const NONE: LayerLists = LayerLists {
        tiles: 0,
        rows: 0,
        n: 0,
        m: 0,
    };
}

/// Whether convolution step `si` (not depthwise) runs as one fused kernel per group.
pub fn runs_fused(addrs: &Addrs, si: usize, c: &ConvSpec) -> bool {
    let chosen = c.k_per_group() <= addrs.fused_conv_k || way(addrs, si) != ConvWay::Apart;
    chosen && geometry::fusable(c)
}

/// The fused convolution kernel: pipelined or not, on the tensor cores or in f32, in the narrow
/// blocks (at most 32 output channels) or not, in the 4 × 4 blocks or not (the f32 pipelined
/// kernels have no 4 × 4 form; the caller does not ask for it).
fn fused_kernel(piped: bool, tc: bool, narrow: bool, tile44: bool) -> Kernel {
    match (piped, tc, narrow, tile44) {
        (true, false, false, _) => Kernel::ConvRowsPipeF32,
        (true, false, true, _) => Kernel::ConvRowsPipeF32N32,
        (true, true, false, false) => Kernel::ConvRowsPipe,
        (true, true, true, false) => Kernel::ConvRowsPipeN32,
        (true, true, false, true) => Kernel::ConvRowsPipeT44,
        (true, true, true, true) => Kernel::ConvRowsPipeN32T44,
        (false, true, false, false) => Kernel::ConvRowsTc,
        (false, true, true, false) => Kernel::ConvRowsTcN32,
        (false, true, false, true) => Kernel::ConvRowsTcT44,
        (false, true, true, true) => Kernel::ConvRowsTcN32T44,
        (false, false, false, false) => Kernel::ConvRows,
        (false, false, true, false) => Kernel::ConvRowsN32,
        (false, false, false, true) => Kernel::ConvRowsT44,
        (false, false, true, true) => Kernel::ConvRowsN32T44,
    }
}

/// How step `si` runs as `Addrs::fuse` says (Apart where it says nothing).
pub fn way(addrs: &Addrs, si: usize) -> ConvWay {
    addrs.fuse.get(si).copied().unwrap_or_default()
}

/// Whether step `si` is a convolution that runs fused.
pub fn step_fused(plan: &Plan, addrs: &Addrs, si: usize) -> bool {
    matches!(&plan.steps[si], Step::Layer(Layer { op: LayerOp::Conv(c), .. })
        if !c.depthwise() && runs_fused(addrs, si, c))
}

/// How many kernels step `si` launches in a graph (Generic and host steps count one; what they
/// do is small or not on the device).
pub fn step_launches(plan: &Plan, addrs: &Addrs, si: usize) -> usize {
    match &plan.steps[si] {
        Step::Layer(Layer {
            op: LayerOp::Conv(c),
            ..
        }) if !c.depthwise() => c.groups * if runs_fused(addrs, si, c) { 1 } else { 3 },
        _ => 1,
    }
}

/// Launches the kernels of a Layer, GlobalPool, Export or device Rearrange step (the other
/// Rearrange steps and the Generic steps run on the host and launch nothing).
pub fn launch_step(
    dev: &impl Launcher,
    plan: &Plan,
    grid: &TileGrid,
    addrs: &Addrs,
    si: usize,
    ll: LayerLists,
) -> Result<()> {
    match (&plan.steps[si], addrs.steps[si]) {
        (Step::Layer(_), _) => launch_layer(dev, plan, grid, addrs, si, ll),
        // Whole-map steps into an output tensor: the same arguments, each its own launch shape.
        (Step::GlobalPool { input, .. } | Step::Export { input, .. }, StepPtrs::Out(o)) => {
            let b = &plan.buffers[input.buf];
            let (k, dims) = match &plan.steps[si] {
                Step::GlobalPool { .. } => (Kernel::GlobalAvgPool, geometry::gap_launch(input.c)),
                _ => (Kernel::Export, geometry::linear_launch(input.c * b.h * b.w)),
            };
            match dims {
                Some(d) => dev.launch(
                    k,
                    d,
                    &kargs!(
                        addrs.view(input.buf, input.c_off),
                        b.c as i32,
                        b.h as i32,
                        b.w as i32,
                        input.c as i32,
                        o
                    ),
                ),
                None => Ok(()),
            }
        }
        (Step::Generic { .. }, StepPtrs::Tail(t)) => launch_tail(dev, t),
        (Step::Rearrange { .. }, StepPtrs::Rearrange { src, index, out, n }) => {
            match geometry::linear_launch(n) {
                Some(d) => dev.launch(Kernel::Rearrange, d, &kargs!(src, index, n as i32, out)),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Launches one layer over the tiles of `ll`.
pub fn launch_layer(
    dev: &impl Launcher,
    plan: &Plan,
    grid: &TileGrid,
    addrs: &Addrs,
    si: usize,
    ll: LayerLists,
) -> Result<()> {
    let Step::Layer(l) = &plan.steps[si] else {
        return Ok(());
    };
    if ll.n == 0 {
        return Ok(());
    }
    let ib = &plan.buffers[l.input.buf];
    let ob = &plan.buffers[l.output.buf];
    let ts = (grid.tile / ob.scale.max(1)) as i32;
    let cols = grid.cols as i32;
    let (tw, th) = max_tile_px(grid, ob);
    let tiles = ll.tiles;
    let inp = addrs.view(l.input.buf, l.input.c_off);
    let out = addrs.view(l.output.buf, l.output.c_off);
    let (ip, op) = (ib.c as i32, ob.c as i32);
    let (ih, iw, oh, ow) = (ib.h as i32, ib.w as i32, ob.h as i32, ob.w as i32);
    let oc = l.output.c;
    // Launch geometry of the one-thread-per-output-element kernels.
    let per_px = |n: usize| geometry::tile_launch(ll.n, tw * th * n);
    let missing = || {
        Err(Error::Backend(format!(
            "layer `{}`: device parameters missing",
            l.name
        )))
    };
    let ptrs = addrs.steps[si];
    match &l.op {
        LayerOp::Conv(c) => {
            let StepPtrs::Conv { w, b, w16 } = ptrs else {
                return missing();
            };
            let (act, p0, p1) = act_code(c.act);
            let g = [c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.pad_t, c.pad_l].map(|v| v as i32);
            if c.depthwise() {
                let Some(d) = per_px(oc)? else { return Ok(()) };
                return dev.launch(
                    Kernel::Depthwise,
                    d,
                    &kargs!(
                        inp, ip, ih, iw, out, op, oh, ow, w, b, oc as i32, g[0], g[1], g[2], g[3],
                        g[4], g[5], g[6], g[7], tiles, ts, cols, act, p0, p1
                    ),
                );
            }
            let (k, n, cig) = (c.k_per_group(), c.n_per_group(), c.cin / c.groups);
            // f16 operands (2 bytes) when this layer has an f16 weight copy, else f32.
            let (im2col, a, wp, op_bytes) = match (w16, addrs.scratch_a16) {
                (Some(w16), Some(a16)) => (Kernel::Im2colH, a16, w16, 2),
                _ => (Kernel::Im2col, addrs.scratch_a, w, 4),
            };
            if runs_fused(addrs, si, c) {
                // The tensor-core and pipelined kernels have the f32 kernels' block shapes (the
                // f32 pipelined ones only the 2 × 4 blocks').
                let tc = w16.filter(|_| addrs.fused_tc);
                let way = way(addrs, si);
                let piped = (addrs.fused_pipe || matches!(way, ConvWay::Piped | ConvWay::PipedT44))
                    && geometry::pipeable(c, ip as usize, l.input.c_off);
                // A way the start-up timing chose runs in the block shape it was timed in.
                let tile44 = match way {
                    ConvWay::Piped => false,
                    ConvWay::PipedT44 => true,
                    _ => addrs.fused_tile44,
                } && !(piped && tc.is_none());
                for gi in 0..c.groups {
                    let Some(f) = geometry::fused_conv_launch(ll.m, n, k, tile44, &addrs.split)?
                    else {
                        return Ok(());
                    };
                    let kernel = fused_kernel(piped, tc.is_some(), f.narrow, tile44);
                    let (wt, wt_bytes) = tc.map_or((w, 4), |w16| (w16, 2));
                    let (d, splits) = (f.dims, f.splits);
                    dev.launch(
                        kernel,
                        d,
                        &kargs!(
                            inp + (gi * cig * 4) as u64,
                            ip,
                            ih,
                            iw,
                            wt + (gi * k * n * wt_bytes) as u64,
                            n as i32,
                            b + (gi * n * 4) as u64,
                            out + (gi * n * 4) as u64,
                            op,
                            oh,
                            ow,
                            tiles,
                            ll.rows,
                            ll.n as i32,
                            ll.m as i32,
                            ts,
                            cols,
                            g[0],
                            g[1],
                            g[2],
                            g[3],
                            g[4],
                            g[5],
                            g[6],
                            g[7],
                            cig as i32,
                            act,
                            p0,
                            p1,
                            splits as i32,
                            addrs.split.ws,
                            addrs.split.counters
                        ),
                    )?;
                }
                return Ok(());
            }
            let cm = addrs.scratch_c;
            for gi in 0..c.groups {
                let gin = inp + (gi * cig * 4) as u64;
                if let Some(d) = per_px(k)? {
                    dev.launch(
                        im2col,
                        d,
                        &kargs!(
                            gin,
                            ip,
                            ih,
                            iw,
                            a,
                            tiles,
                            ll.rows,
                            ts,
                            cols,
                            oh,
                            ow,
                            g[0],
                            g[1],
                            g[2],
                            g[3],
                            g[4],
                            g[5],
                            g[6],
                            g[7],
                            cig as i32,
                            c.transposed as i32
                        ),
                    )?;
                }
                let wg = wp + (gi * k * n * op_bytes) as u64;
                dev.gemm(ll.m, n, k, a, wg, cm, op_bytes == 2)?;
                if let Some(d) = per_px(n)? {
                    dev.launch(
                        Kernel::Scatter,
                        d,
                        &kargs!(
                            cm,
                            n as i32,
                            b + (gi * n * 4) as u64,
                            out + (gi * n * 4) as u64,
                            op,
                            oh,
                            ow,
                            tiles,
                            ll.rows,
                            ts,
                            cols,
                            act,
                            p0,
                            p1
                        ),
                    )?;
                }
            }
            Ok(())
        }
        LayerOp::Pool(p) => {
            let Some(d) = per_px(oc)? else { return Ok(()) };
            dev.launch(
                Kernel::Pool,
                d,
                &kargs!(
                    inp,
                    ip,
                    ih,
                    iw,
                    out,
                    op,
                    oh,
                    ow,
                    oc as i32,
                    pool_code(p.kind),
                    p.kh as i32,
                    p.kw as i32,
                    p.sh as i32,
                    p.sw as i32,
                    p.pad_t as i32,
                    p.pad_l as i32,
                    tiles,
                    ts,
                    cols
                ),
            )
        }
        LayerOp::Resize { .. } => {
            let StepPtrs::Resize(r) = ptrs else {
                return missing();
            };
            let Some(d) = per_px(oc)? else { return Ok(()) };
            dev.launch(
                Kernel::Resize,
                d,
                &kargs!(
                    inp, ip, iw, out, op, oh, ow, oc as i32, r[0], r[1], r[2], r[3], r[4], r[5],
                    tiles, ts, cols
                ),
            )
        }
        LayerOp::Affine { act, .. } => {
            let StepPtrs::Affine { scale, shift } = ptrs else {
                return missing();
            };
            let Some(d) = per_px(oc)? else { return Ok(()) };
            let (a, p0, p1) = act_code(*act);
            dev.launch(
                Kernel::Affine,
                d,
                &kargs!(
                    inp, ip, out, op, oh, ow, oc as i32, scale, shift, a, p0, p1, tiles, ts, cols
                ),
            )
        }
        LayerOp::Unary(act) => {
            let Some(d) = per_px(oc)? else { return Ok(()) };
            let (a, p0, p1) = act_code(*act);
            dev.launch(
                Kernel::Unary,
                d,
                &kargs!(inp, ip, out, op, oh, ow, oc as i32, a, p0, p1, tiles, ts, cols),
            )
        }
        LayerOp::Binary { op: bop, rhs, act } => {
            let (rp, rpitch, rc) = match (rhs, ptrs) {
                (Operand::View(v), _) => (
                    addrs.view(v.buf, v.c_off),
                    plan.buffers[v.buf].c as i32,
                    v.c as i32,
                ),
                (Operand::Channels(_) | Operand::Slot(_), StepPtrs::Rhs(p, len)) => {
                    (p, 0, len as i32)
                }
                _ => return missing(),
            };
            let Some(d) = per_px(oc)? else { return Ok(()) };
            let (a, p0, p1) = act_code(*act);
            dev.launch(
                Kernel::Binary,
                d,
                &kargs!(
                    inp,
                    ip,
                    rp,
                    rpitch,
                    rc,
                    out,
                    op,
                    oh,
                    ow,
                    oc as i32,
                    binop_code(*bop),
                    a,
                    p0,
                    p1,
                    tiles,
                    ts,
                    cols
                ),
            )
        }
        LayerOp::Gather { .. } => {
            let StepPtrs::Gather(perm) = ptrs else {
                return missing();
            };
            let Some(d) = per_px(oc)? else { return Ok(()) };
            dev.launch(
                Kernel::Gather,
                d,
                &kargs!(inp, ip, out, op, oh, ow, oc as i32, perm, tiles, ts, cols),
            )
        }
    }
}

/// Addresses of a frame's bytes where the letterbox kernel reads them, and of its taps
/// (`LetterboxTaps`: column indices, column weights, row indices, row weights).
#[derive(Clone, Copy, Debug)]
pub struct LetterboxArgs {
    /// Packed: the pixels; 4:2:0: Y, then U (NV12: UV), then V.
    pub planes: [u64; 3],
    pub taps: [u64; 4],
    /// The packed RGB network image (`nw`×`nh`×3 bytes).
    pub out: u64,
    pub nw: usize,
    pub nh: usize,
}

/// Letterboxes a frame into the network image (rd_letterbox), byte-identical to `letterbox`.
pub fn launch_letterbox(dev: &impl Launcher, frame: &FramePlanes, a: &LetterboxArgs) -> Result<()> {
    // (format, stride, bytes per pixel, R/G/B offsets, chroma stride)
    let (format, stride, bpp, off, uv_stride) = match frame {
        FramePlanes::Packed(p) => (0, p.stride, p.bytes_per_px, p.rgb_offsets, 0),
        FramePlanes::Yuv420(y) => (
            if y.interleaved { 2i32 } else { 1 },
            y.y_stride,
            1,
            [0; 3],
            y.uv_stride,
        ),
    };
    let Some(d) = geometry::linear_launch(a.nw * a.nh) else {
        return Ok(());
    };
    let [p0, p1, p2] = a.planes;
    let [ci, ca, ri, ra] = a.taps;
    dev.launch(
        Kernel::Letterbox,
        d,
        &kargs!(
            p0,
            p1,
            p2,
            format,
            stride as i32,
            bpp as i32,
            off[0] as i32,
            off[1] as i32,
            off[2] as i32,
            uv_stride as i32,
            ci,
            ca,
            ri,
            ra,
            a.out,
            a.nw as i32,
            a.nh as i32,
            PAD_VALUE as i32
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::kernels::SOURCES;

    /// A lane's addresses keep the buffers and step constants and hold none of the scratch
    /// they were made from.
    #[test]
    fn with_scratch_replaces_every_scratch() {
        let main = Addrs {
            bufs: vec![100, 200],
            steps: vec![StepPtrs::Out(300)],
            scratch_a: 1,
            scratch_a16: Some(2),
            scratch_c: 3,
            split: geometry::SplitSpace {
                ws: 3,
                ws_len: 10,
                counters: 4,
                counters_len: 5,
            },
            ..Addrs::default()
        };
        let lane = main.with_scratch(Scratch {
            a: 11,
            a16: Some(12),
            c: 13,
            c_len: 7,
            counters: 14,
            counters_len: 3,
        });
        assert_eq!(
            (lane.bufs.clone(), lane.steps.len()),
            (main.bufs.clone(), 1)
        );
        let scratch = |a: &Addrs| {
            [
                a.scratch_a,
                a.scratch_a16.unwrap_or(0),
                a.scratch_c,
                a.split.ws,
                a.split.counters,
            ]
        };
        assert_eq!(scratch(&lane), [11, 12, 13, 13, 14]);
        assert_eq!((lane.split.ws_len, lane.split.counters_len), (7, 3));
        // Without an f16 twin on the frame's stream, none on the lane.
        let f32_only = Addrs {
            scratch_a16: None,
            ..main.clone()
        };
        let lane = f32_only.with_scratch(Scratch {
            a16: Some(12),
            ..Scratch {
                a: 11,
                a16: None,
                c: 13,
                c_len: 7,
                counters: 14,
                counters_len: 3,
            }
        });
        assert_eq!(lane.scratch_a16, None);
    }

    /// Every kernel the launch code names is declared in a `cuda/*.cu` file, and every declared
    /// kernel has a name here (the backend loads them all by these names at start-up).
    #[test]
    fn kernel_names_match_the_sources() {
        let mut declared: Vec<&str> = SOURCES
            .iter()
            .flat_map(|s| s.entries.iter().copied())
            .collect();
        let mut named: Vec<&str> = Kernel::ALL.iter().map(|k| k.entry()).collect();
        declared.sort_unstable();
        named.sort_unstable();
        assert_eq!(declared, named);
        // The backend indexes its loaded kernels by the enum's value.
        for (i, k) in Kernel::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }
}
