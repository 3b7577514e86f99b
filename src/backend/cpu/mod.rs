//! The CPU backend: NHWC f32 caches in host memory, tile-parallel kernels on a rayon pool, one
//! GEMM per convolution layer (and group), or a direct kernel where one is faster; with
//! `precision=bf16`, the convolutions run in bf16 on the AMX tiles (`conv_amx_in_place`,
//! `conv_amx`) or, on CPUs without AMX, on AVX512-BF16 dot products (`conv_bf16_dot`). All
//! buffers are allocated once, at construction.

mod amx;
mod bf16_input;
mod conv;
mod conv_amx;
mod conv_amx_in_place;
mod conv_bf16_dot;
mod conv_direct;
mod conv_small;
mod conv_unpool;
pub(crate) mod feature;
mod ops;
mod tail;

use std::sync::{Arc, Mutex, PoisonError, Weak};

use feature::{FeatMut, FeatRef, SharedMut};
use rayon::prelude::*;

use super::{generic, Backend, Precision, StepTiles};
use crate::error::{Error, Result};
use crate::mask::TileGrid;
use crate::model::plan::{LayerOp, Operand, Plan, Step};
use crate::preprocess::InputNorm;
use crate::tensor::Tensor;

pub struct CpuBackend {
    plan: Arc<Plan>,
    grid: TileGrid,
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    /// One NHWC cache per feature buffer of the plan.
    bufs: Vec<Vec<f32>>,
    /// The tensor store of the dense path.
    slots: Vec<Tensor>,
    scratch_a: Vec<f32>,
    scratch_c: Vec<f32>,
    /// The AMX path's gathered rows (bf16).
    scratch_a16: Vec<u16>,
    /// The padded bf16 input and output lists of the kernels that read it in place.
    bf16_input: bf16_input::Bf16Input,
    /// What the convolutions compute in: bf16 where asked for and available.
    precision: Precision,
    offsets: Vec<usize>,
    profile: Option<Vec<Vec<f64>>>,
    /// How each Rearrange step runs (from its slot, or folded with its Export).
    rearrange: Vec<Option<tail::Rearrange>>,
    /// Export steps folded into their Rearrange (skipped).
    folded_exports: Vec<bool>,
    /// The Generic steps, prepared to run into their slots.
    generic: Vec<Option<generic::GenericStep>>,
    /// Re-laid-out weights of the convolutions that run a direct kernel instead of im2col + GEMM
    /// (shared by the engines of the process on this plan: [`direct_weights`]).
    direct: Arc<[Option<DirectConv>]>,
}

/// The kernels that compute `precision=bf16` on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bf16Kernels {
    /// None: f32.
    Off,
    /// AMX tiles (Intel Sapphire Rapids and newer).
    Amx,
    /// AVX512-BF16 dot products (AMD Zen 4 and newer, Intel Cooper Lake).
    Dot,
}

impl Bf16Kernels {
    /// The kernels for `precision` on this CPU.
    fn for_precision(precision: Precision) -> Self {
        match precision {
            Precision::Bf16 if amx::available() => Bf16Kernels::Amx,
            Precision::Bf16 if conv_bf16_dot::available() => Bf16Kernels::Dot,
            _ => Bf16Kernels::Off,
        }
    }
}

/// The direct kernels' weights for each step of `plan` (with `bf16`, the bf16 kernels' copies
/// where they apply). Like the plan itself (`model::store`), they are shared by every CPU engine
/// of the process that runs this plan in the same precision, while one of them runs.
fn direct_weights(plan: &Arc<Plan>, bf16: Bf16Kernels) -> Arc<[Option<DirectConv>]> {
    type Shared = Vec<(Weak<Plan>, Bf16Kernels, Weak<[Option<DirectConv>]>)>;
    static SHARED: Mutex<Shared> = Mutex::new(Vec::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    shared.retain(|(_, _, d)| d.strong_count() > 0);
    let key = Arc::downgrade(plan);
    if let Some(d) = shared
        .iter()
        .filter(|(p, k, _)| p.ptr_eq(&key) && *k == bf16)
        .find_map(|(_, _, d)| d.upgrade())
    {
        return d;
    }
    let amx = bf16 == Bf16Kernels::Amx;
    let direct: Arc<[Option<DirectConv>]> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::Layer(l) => match &l.op {
                LayerOp::Conv(c) if amx && conv_amx_in_place::applies(c) => Some(
                    DirectConv::AmxInPlace(conv_amx_in_place::InPlaceWeights::new(c)),
                ),
                LayerOp::Conv(c) if amx && conv_amx::applies(c) => {
                    Some(DirectConv::Amx(conv_amx::AmxWeights::new(c)))
                }
                LayerOp::Conv(c) if bf16 == Bf16Kernels::Dot && conv_bf16_dot::applies(c) => {
                    Some(DirectConv::Bf16Dot(conv_bf16_dot::DotWeights::new(c)))
                }
                LayerOp::Conv(c) if conv_unpool::applies(c) => {
                    Some(DirectConv::Unpool(conv_unpool::UnpoolWeights::new(c)))
                }
                LayerOp::Conv(c) if conv_direct::applies(c) => {
                    Some(DirectConv::Taps(conv_direct::DirectWeights::new(c)))
                }
                LayerOp::Conv(c) if conv_small::applies(c) => {
                    Some(DirectConv::SmallK(conv_small::SmallKWeights::new(c)))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    shared.push((key, bf16, Arc::downgrade(&direct)));
    direct
}

/// A convolution computed directly from the NHWC map, with its weights re-laid out.
enum DirectConv {
    /// Tap by tap from the map, weights in L2 (AVX-512 only).
    Taps(conv_direct::DirectWeights),
    /// Short im2col rows (a first layer on 3 channels) where AVX-512 is missing.
    SmallK(conv_small::SmallKWeights),
    /// Transposed convolutions with kernel = stride and few output channels: one tap per pixel.
    Unpool(conv_unpool::UnpoolWeights),
    /// `precision=bf16` on a CPU with AMX: gathered bf16 rows times bf16 weights on the tiles.
    Amx(conv_amx::AmxWeights),
    /// `precision=bf16` on a CPU with AMX, ordinary convolutions of 16 or more channels: A's
    /// tiles loaded in place from a padded bf16 copy of the input.
    AmxInPlace(conv_amx_in_place::InPlaceWeights),
    /// `precision=bf16` on a CPU with AVX512-BF16 but no AMX, ordinary convolutions of 16 or
    /// more channels: pairs of channels of a padded bf16 copy of the input.
    Bf16Dot(conv_bf16_dot::DotWeights),
}

impl DirectConv {
    /// Whether every run of the layer takes this kernel (so the layer never gathers im2col rows).
    fn takes_every_run(&self) -> bool {
        match self {
            DirectConv::Taps(w) => w.takes_every_run(),
            DirectConv::SmallK(_)
            | DirectConv::Unpool(_)
            | DirectConv::Amx(_)
            | DirectConv::AmxInPlace(_)
            | DirectConv::Bf16Dot(_) => true,
        }
    }
}

impl CpuBackend {
    /// A backend computing in f32.
    pub fn new(plan: Arc<Plan>, tile: usize, threads: usize) -> Result<Self> {
        Self::with_precision(plan, tile, threads, Precision::F32)
    }

    /// A backend whose convolutions compute in `precision` where this CPU can: bf16 needs AMX or
    /// AVX512-BF16 ([`CpuBackend::bf16_available`]); anything else computes in f32 (see
    /// `Backend::precision`).
    pub fn with_precision(
        plan: Arc<Plan>,
        tile: usize,
        threads: usize,
        precision: Precision,
    ) -> Result<Self> {
        let bf16 = Bf16Kernels::for_precision(precision);
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("regiondrop-cpu-{i}"))
            .build()
            .map_err(|e| Error::Backend(format!("cannot start {threads} threads: {e}")))?;
        let pool = Arc::new(pool);
        let grid = plan.grid(tile);
        let n_steps = plan.steps.len();
        let bufs = plan.buffers.iter().map(|b| vec![0f32; b.len()]).collect();
        let slots = plan.initial_slots();
        let (rearrange, folded_exports) = tail::lower(&plan);
        let direct = direct_weights(&plan, bf16);
        // Scratch for the largest gathered matrix (all tiles active) of the convolutions that may
        // run as im2col + GEMM: a direct kernel that takes every run of its layer needs none.
        let (mut max_a, mut max_c, mut max_a16) = (0, 0, 0);
        let mut bf16_input = bf16_input::Bf16Input::default();
        for (si, step) in plan.steps.iter().enumerate() {
            let Step::Layer(l) = step else { continue };
            let LayerOp::Conv(c) = &l.op else { continue };
            let ob = &plan.buffers[l.output.buf];
            if let Some(DirectConv::Amx(_)) = &direct[si] {
                let (a, cc) = conv_amx::scratch(c, ob.h, ob.w);
                max_a16 = max_a16.max(a);
                max_c = max_c.max(cc);
            }
            let cpad = match &direct[si] {
                Some(DirectConv::AmxInPlace(_)) => Some(conv_amx_in_place::channels_held(c)),
                Some(DirectConv::Bf16Dot(_)) => Some(conv_bf16_dot::channels_held(c)),
                _ => None,
            };
            if let Some(cpad) = cpad {
                let ib = &plan.buffers[l.input.buf];
                let layout = bf16_input::Layout::new(c, (ib.h, ib.w), (ob.h, ob.w));
                bf16_input.fit(c, &layout, cpad);
            }
            if direct[si].as_ref().is_some_and(DirectConv::takes_every_run) {
                continue;
            }
            let m = ob.h * ob.w;
            if !c.depthwise() {
                max_a = max_a.max(m * c.k_per_group());
                max_c = max_c.max(m * c.n_per_group());
            }
            if conv::windowed(c) {
                let (a, cc) = conv::windowed_scratch(c, ob.h, ob.w);
                max_a = max_a.max(a);
                max_c = max_c.max(cc);
            }
        }
        // bf16 where some layer takes a bf16 kernel (a model of small layers stays in f32).
        let precision = if direct.iter().flatten().any(|d| {
            matches!(
                d,
                DirectConv::Amx(_) | DirectConv::AmxInPlace(_) | DirectConv::Bf16Dot(_)
            )
        }) {
            Precision::Bf16
        } else {
            Precision::F32
        };
        Ok(CpuBackend {
            generic: generic::prepare(&plan),
            rearrange,
            folded_exports,
            direct,
            offsets: Vec::with_capacity(grid.len()),
            plan,
            grid,
            pool,
            threads,
            bufs,
            slots,
            scratch_a: vec![0.0; max_a],
            scratch_c: vec![0.0; max_c],
            scratch_a16: vec![0; max_a16],
            bf16_input,
            precision,
            profile: std::env::var("REGIONDROP_PROFILE")
                .is_ok()
                .then(|| vec![Vec::new(); n_steps]),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether this CPU computes `precision=bf16` in bf16: on AMX tiles or AVX512-BF16 dot
    /// products (else such a backend computes in f32).
    pub fn bf16_available() -> bool {
        Bf16Kernels::for_precision(Precision::Bf16) != Bf16Kernels::Off
    }

    fn run_steps(&mut self, tiles: &StepTiles) -> Result<()> {
        let plan = self.plan.clone();
        let grid = self.grid;
        for (si, step) in plan.steps.iter().enumerate() {
            let t0 = self.profile.as_ref().map(|_| std::time::Instant::now());
            self.run_step(&plan, &grid, si, step, tiles)?;
            if let (Some(p), Some(t0)) = (self.profile.as_mut(), t0) {
                p[si].push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(())
    }

    fn run_step(
        &mut self,
        plan: &Plan,
        grid: &TileGrid,
        si: usize,
        step: &Step,
        tiles: &StepTiles,
    ) -> Result<()> {
        let grid = *grid;
        {
            match step {
                Step::Layer(l) => {
                    let t = &tiles.per_step[si];
                    if t.is_empty() {
                        return Ok(());
                    }
                    let input = FeatRef::new(&self.bufs, &plan.buffers, l.input);
                    let out = FeatMut::new(&mut self.bufs, &plan.buffers, l.output);
                    match &l.op {
                        LayerOp::Conv(c) => match &self.direct[si] {
                            Some(DirectConv::Taps(w)) if w.takes(t.len(), grid.len()) => {
                                conv_direct::conv(
                                    c,
                                    w,
                                    &grid,
                                    input,
                                    out,
                                    t,
                                    &mut self.offsets,
                                    self.threads,
                                )
                            }
                            Some(DirectConv::SmallK(w)) => {
                                conv_small::conv(c, w, &grid, input, out, t)
                            }
                            Some(DirectConv::Unpool(w)) => {
                                conv_unpool::conv(c, w, &grid, input, out, t)
                            }
                            Some(DirectConv::AmxInPlace(w)) => conv_amx_in_place::conv(
                                c,
                                w,
                                &grid,
                                input,
                                out,
                                t,
                                &mut self.bf16_input,
                                self.threads,
                            ),
                            Some(DirectConv::Bf16Dot(w)) => conv_bf16_dot::conv(
                                c,
                                w,
                                &grid,
                                input,
                                out,
                                t,
                                &mut self.bf16_input,
                                self.threads,
                            ),
                            Some(DirectConv::Amx(w)) => conv_amx::conv(
                                c,
                                w,
                                &grid,
                                input,
                                out,
                                t,
                                &mut self.offsets,
                                &mut self.scratch_a16,
                                &mut self.scratch_c,
                                self.threads,
                            ),
                            _ => conv::conv(
                                c,
                                &grid,
                                input,
                                out,
                                t,
                                &mut self.offsets,
                                &mut self.scratch_a,
                                &mut self.scratch_c,
                                self.threads,
                            ),
                        },
                        LayerOp::Pool(p) => ops::pool(p, &grid, input, out, t),
                        LayerOp::Resize { y, x } => ops::resize(y, x, &grid, input, out, t),
                        LayerOp::Affine { scale, shift, act } => {
                            ops::affine(scale, shift, *act, &grid, input, out, t)
                        }
                        LayerOp::Unary(act) => ops::unary(*act, &grid, input, out, t),
                        LayerOp::Binary { op, rhs, act } => {
                            let rhs = match rhs {
                                Operand::View(v) => {
                                    ops::Rhs::Map(FeatRef::new(&self.bufs, &plan.buffers, *v))
                                }
                                Operand::Channels(c) => ops::Rhs::Channels(c),
                                Operand::Slot(s) => ops::Rhs::Channels(&self.slots[*s].data),
                            };
                            ops::binary(*op, rhs, *act, &grid, input, out, t)
                        }
                        LayerOp::Gather { perm } => ops::gather(perm, &grid, input, out, t),
                    }
                }
                Step::GlobalPool { input, slot } => {
                    let f = FeatRef::new(&self.bufs, &plan.buffers, *input);
                    let dst = &mut self.slots[*slot].data;
                    dst.fill(0.0);
                    for y in 0..f.h {
                        for x in 0..f.w {
                            for (d, &v) in dst.iter_mut().zip(f.px(y, x)) {
                                *d += v;
                            }
                        }
                    }
                    let inv = 1.0 / (f.h * f.w) as f32;
                    dst.iter_mut().for_each(|d| *d *= inv);
                }
                Step::Export { .. } if self.folded_exports[si] => {}
                Step::Export { input, slot } => {
                    // Only the tiles that changed this frame; the slot keeps the rest.
                    tail::copy_tiles_channel_major(
                        &mut self.slots[*slot].data,
                        &self.bufs[input.buf],
                        &plan.buffers[input.buf],
                        *input,
                        &grid,
                        &tiles.per_step[si],
                    );
                }
                Step::Rearrange { input, output, .. } => match &self.rearrange[si] {
                    Some(tail::Rearrange::PixelMajor { view, export }) => tail::copy_tiles(
                        &mut self.slots[*output].data,
                        &self.bufs[view.buf],
                        &plan.buffers[view.buf],
                        *view,
                        &grid,
                        &tiles.per_step[*export],
                    ),
                    Some(tail::Rearrange::ChannelMajor { view, export }) => {
                        tail::copy_tiles_channel_major(
                            &mut self.slots[*output].data,
                            &self.bufs[view.buf],
                            &plan.buffers[view.buf],
                            *view,
                            &grid,
                            &tiles.per_step[*export],
                        )
                    }
                    Some(tail::Rearrange::FromBuffer { buf, runs }) => {
                        tail::copy_runs(&mut self.slots[*output].data, &self.bufs[*buf], runs)
                    }
                    Some(tail::Rearrange::FromSlot(index)) => {
                        let (src, dst) = two_slots(&mut self.slots, *input, *output);
                        for (d, &i) in dst.data.iter_mut().zip(index) {
                            *d = src.data[i as usize];
                        }
                    }
                    None => unreachable!("every Rearrange step is lowered"),
                },
                Step::Generic { .. } => match &self.generic[si] {
                    Some(g) => g.run(&mut self.slots)?,
                    None => unreachable!("every Generic step is prepared"),
                },
            }
        }
        Ok(())
    }
}

/// dst[3i + c] = (src[3i + channel c reads] − mean[c]) · inv[c] for a row of packed pixels, 16
/// pixels at a time through fixed-size arrays so the loop vectorises; `bgr`: channel c reads
/// source channel 2 − c (the taps' only reordering).
#[inline(always)]
fn input_row(src: &[u8], dst: &mut [f32], taps: &[(usize, f32, f32); 3], bgr: bool) {
    const N: usize = 48;
    let mean: [f32; N] = std::array::from_fn(|j| taps[j % 3].1);
    let inv: [f32; N] = std::array::from_fn(|j| taps[j % 3].2);
    let mut s_chunks = src.chunks_exact(N);
    let mut d_chunks = dst.chunks_exact_mut(N);
    for (s, d) in (&mut s_chunks).zip(&mut d_chunks) {
        let mut px = [0u8; N];
        px.copy_from_slice(s);
        if bgr {
            for p in 0..N / 3 {
                px.swap(3 * p, 3 * p + 2);
            }
        }
        for j in 0..N {
            d[j] = (px[j] as f32 - mean[j]) * inv[j];
        }
    }
    for (s, d) in s_chunks
        .remainder()
        .chunks_exact(3)
        .zip(d_chunks.into_remainder().chunks_exact_mut(3))
    {
        for (c, &(from, mean, inv)) in taps.iter().enumerate() {
            d[c] = (s[from] as f32 - mean) * inv;
        }
    }
}

fn two_slots(slots: &mut [Tensor], a: usize, b: usize) -> (&Tensor, &mut Tensor) {
    assert_ne!(a, b);
    if a < b {
        let (l, r) = slots.split_at_mut(b);
        (&l[a], &mut r[0])
    } else {
        let (l, r) = slots.split_at_mut(a);
        (&r[0], &mut l[b])
    }
}

impl Backend for CpuBackend {
    fn precision(&self) -> Precision {
        self.precision
    }

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn describe(&self) -> String {
        let bf16 = match Bf16Kernels::for_precision(self.precision) {
            Bf16Kernels::Off => "",
            Bf16Kernels::Amx => ", bf16 on AMX tiles",
            Bf16Kernels::Dot => ", bf16 on AVX512-BF16",
        };
        format!(
            "cpu ({} threads, {:?} kernels{bf16})",
            self.threads,
            crate::simd::level()
        )
    }

    fn write_input(&mut self, rgb: &[u8], norm: &InputNorm, tiles: &[u32]) -> Result<()> {
        let (w, h, c) = (self.plan.input_w, self.plan.input_h, self.plan.input_c);
        if rgb.len() != w * h * 3 || c != 3 {
            return Err(Error::Backend(format!(
                "input image of {} bytes does not match the network input {w}x{h}x{c}",
                rgb.len()
            )));
        }
        let taps = norm.channel_taps();
        let bgr = taps[0].0 == 2;
        let buf = SharedMut(self.bufs[0].as_mut_ptr());
        let grid = self.grid;
        self.pool.install(|| {
            tiles.par_iter().for_each(|&t| {
                let (x0, y0, x1, y1) = grid.rect(t as usize, 1, w, h);
                for y in y0..y1 {
                    let (a, b) = ((y * w + x0) * 3, (y * w + x1) * 3);
                    // SAFETY: tiles do not overlap, so neither do their rows.
                    let dst = unsafe { buf.slice(a, b - a) };
                    crate::simd::vectorized(
                        #[inline(always)]
                        || input_row(&rgb[a..b], dst, &taps, bgr),
                    );
                }
            })
        });
        Ok(())
    }
    fn write_input_tensor(&mut self, nchw: &Tensor) -> Result<()> {
        let p = &self.plan;
        self.bufs[0] = super::nchw_to_nhwc(nchw, p.input_c, p.input_h, p.input_w)?;
        Ok(())
    }

    fn run(&mut self, tiles: &StepTiles) -> Result<()> {
        let pool = self.pool.clone();
        pool.install(|| self.run_steps(tiles))
    }

    fn outputs(&mut self) -> Result<Vec<Tensor>> {
        Ok(super::collect_outputs(&self.plan, &self.slots))
    }

    fn slots(&mut self) -> Result<&[Tensor]> {
        Ok(&self.slots)
    }

    fn read_buffer(&mut self, buf: usize) -> Result<Vec<f32>> {
        Ok(self.bufs[buf].clone())
    }

    fn reset(&mut self) {
        for b in &mut self.bufs {
            b.fill(0.0);
        }
    }

    fn step_times(&self) -> Option<&[Vec<f64>]> {
        self.profile.as_deref()
    }

    fn memory_bytes(&self) -> usize {
        let caches: usize = self.bufs.iter().map(|b| b.len()).sum();
        let weights: usize = self
            .plan
            .layers()
            .map(|l| match &l.op {
                LayerOp::Conv(c) => c.weights.len() + c.bias.len(),
                _ => 0,
            })
            .sum();
        let copies: usize = self
            .direct
            .iter()
            .flatten()
            .map(|d| match d {
                DirectConv::Taps(w) => w.floats(),
                DirectConv::SmallK(w) => w.floats(),
                DirectConv::Unpool(w) => w.floats(),
                DirectConv::Amx(w) => w.floats(),
                DirectConv::AmxInPlace(w) => w.floats(),
                DirectConv::Bf16Dot(w) => w.floats(),
            })
            .sum();
        let scratch = self.scratch_a.len()
            + self.scratch_c.len()
            + self.scratch_a16.len() / 2
            + self.bf16_input.floats();
        (caches + weights + copies + scratch) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Engines on one plan share the direct kernels' weights; another plan or precision, or a
    /// plan once every engine on it is gone, gets its own.
    #[test]
    fn engines_on_one_plan_share_the_direct_weights() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/nanodet-416.onnx");
        assert!(
            path.is_file(),
            "{} is missing: run scripts/setup-assets.sh",
            path.display()
        );
        let plan = Arc::new(crate::model::import(&path, &Default::default()).unwrap());
        let cpu = |plan: &Arc<Plan>, precision| {
            CpuBackend::with_precision(plan.clone(), 32, 1, precision).unwrap()
        };
        let (a, b) = (cpu(&plan, Precision::F32), cpu(&plan, Precision::F32));
        assert!(
            a.direct.iter().any(Option::is_some),
            "no direct kernel to share"
        );
        assert!(Arc::ptr_eq(&a.direct, &b.direct), "one plan, two copies");

        let other = Arc::new(crate::model::import(&path, &Default::default()).unwrap());
        assert!(!Arc::ptr_eq(&a.direct, &cpu(&other, Precision::F32).direct));
        if CpuBackend::bf16_available() {
            let (x, y) = (cpu(&plan, Precision::Bf16), cpu(&plan, Precision::Bf16));
            assert!(
                Arc::ptr_eq(&x.direct, &y.direct),
                "bf16: one plan, two copies"
            );
            assert!(
                !Arc::ptr_eq(&x.direct, &a.direct),
                "bf16 took the f32 weights"
            );
        }
        let gone = Arc::downgrade(&a.direct);
        drop((a, b));
        assert!(gone.upgrade().is_none(), "weights outlived every engine");
    }

    /// The chunked row conversion gives the per-pixel formula for any row length, RGB or BGR.
    #[test]
    fn input_rows_equal_the_formula() {
        let mut rng = crate::rng::Lcg(9);
        for bgr in [false, true] {
            let norm = InputNorm {
                mean: [103.5, 116.3, 123.7],
                std: [57.4, 57.1, 58.4],
                bgr,
            };
            let taps = norm.channel_taps();
            for n in [0, 1, 15, 16, 17, 32, 37] {
                let src: Vec<u8> = (0..3 * n).map(|_| rng.next_u32() as u8).collect();
                let mut got = vec![f32::NAN; 3 * n];
                input_row(&src, &mut got, &taps, bgr);
                for p in 0..n {
                    for (c, &(from, mean, inv)) in taps.iter().enumerate() {
                        let want = (src[3 * p + from] as f32 - mean) * inv;
                        assert_eq!(got[3 * p + c], want, "bgr {bgr}, {n} pixels, pixel {p}");
                    }
                }
            }
        }
    }
}
