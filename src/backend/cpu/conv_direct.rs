//! Direct AVX-512 convolution on NHWC maps for layers whose weights fit the core's cache: on a
//! region mask's tiles (sparse frames) and, for k×k layers (k > 1), on dense frames too.
//! Transposed convolutions take it as well: a tap the stride does not reach reads the zero row.
//!
//! With im2col + GEMM, a layer with N = 16–64 output channels does only N multiply-adds per value
//! of the im2col matrix, so writing that matrix and the GEMM's own packing of it cost as much as
//! the arithmetic; on sparse frames the gather and scatter add more. Here each block of P output pixels keeps its P·R accumulator registers (R
//! registers of 16 channels per pixel) and, for every kernel tap and input channel, broadcasts the
//! input value straight from the NHWC map (a zero row stands in for taps outside the map) against
//! R registers of weights. Nothing is gathered; bias and the common activations are applied in
//! registers. Only on CPUs with AVX-512 (detected at run time); elsewhere im2col + GEMM runs.

use rayon::prelude::*;

use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::act::Act;
use crate::model::plan::ConvSpec;

/// The largest weight matrix this path takes: layers with more weights (few pixels, many
/// channels) do better with the GEMM's packing. Measured on NanoDet's 3×3 shapes (`bench` below):
/// 128→128 (0.6 MB) even or better, 256→128 (1.2 MB) even, 256→256 (2.4 MB) 2–2.5× slower dense
/// and, in some runs, 2× slower with 10 % of the tiles active too; in NanoDet's sparse frames at
/// 10 % active the 13-px layers over 1 MB took 0.29 ms direct against 0.18 ms on the GEMM (256→256)
/// and 0.13 against 0.10 ms (256→128).
const MAX_WEIGHT_BYTES: usize = 1 << 20;
/// The most kernel taps (kh·kw) the pointer table holds.
const MAX_TAPS: usize = 25;
/// Pixels per block at most (R = 1 and 2).
pub const PMAX: usize = 12;

/// Whether a convolution takes this path on this machine.
pub fn applies(spec: &ConvSpec) -> bool {
    crate::simd::level() == crate::simd::Level::Avx512
        && spec.groups == 1
        && spec.kh * spec.kw <= MAX_TAPS
        && spec.k_per_group() * spec.cout.div_ceil(16) * 16 * 4 <= MAX_WEIGHT_BYTES
}

/// The weights as K rows of `np` columns (cout rounded up to 16) and the bias padded the same way
/// (the layer's own where cout is a multiple of 16), and a row of zeros for taps outside the map.
/// Made once, when the backend is built.
pub struct DirectWeights {
    padded: Option<(Vec<f32>, Vec<f32>)>,
    np: usize,
    /// 16-channel registers per pixel: the largest of 4, 3, 2, 1 that divides np / 16.
    r: usize,
    zeros: Vec<f32>,
    /// Whether dense frames take this path too.
    dense: bool,
}

impl DirectWeights {
    pub fn new(spec: &ConvSpec) -> Self {
        let (k, n) = (spec.k_per_group(), spec.cout);
        // The kernel reads them unchecked (the importer rejects other lengths).
        assert!(
            spec.weights.len() == k * n && spec.bias.len() == n,
            "conv weight sizes"
        );
        let np = n.div_ceil(16) * 16;
        let padded = (np != n).then(|| {
            let mut w = vec![0f32; k * np];
            for row in 0..k {
                w[row * np..row * np + n].copy_from_slice(&spec.weights[row * n..(row + 1) * n]);
            }
            let mut bias = vec![0f32; np];
            bias[..n].copy_from_slice(&spec.bias);
            (w, bias)
        });
        DirectWeights {
            padded,
            np,
            r: registers(np),
            zeros: vec![0.0; spec.kw * spec.cin],
            // Dense 1×1 layers read their input in place for the GEMM (no gather to save) and
            // measured 0.75–1.15× the GEMM's speed here; on sparse frames 1.0–1.6×.
            dense: spec.kh * spec.kw > 1,
        }
    }

    /// Whether a run over `tiles` of the grid's `of` tiles takes this path (else im2col + GEMM).
    pub fn takes(&self, tiles: usize, of: usize) -> bool {
        self.dense || tiles * 4 <= of
    }

    /// Whether every run takes this path, whatever its tiles.
    pub fn takes_every_run(&self) -> bool {
        self.dense
    }

    /// Floats held beyond the layer's own weights.
    pub fn floats(&self) -> usize {
        self.zeros.len() + self.padded.as_ref().map_or(0, |(w, b)| w.len() + b.len())
    }

    /// Weights (K × np) and bias (np).
    fn parts<'a>(&'a self, spec: &'a ConvSpec) -> (&'a [f32], &'a [f32]) {
        match &self.padded {
            Some((w, b)) => (w, b),
            None => (&spec.weights, &spec.bias),
        }
    }
}

/// 16-channel registers per pixel for `np` output channels (a multiple of 16): the largest of
/// 4, 3, 2, 1 that divides np / 16.
pub fn registers(np: usize) -> usize {
    [4, 3, 2, 1]
        .into_iter()
        .find(|r| (np / 16).is_multiple_of(*r))
        .expect("1 divides")
}

/// Pixels per block with `r` registers per pixel: 24 accumulator registers in all.
pub fn pixels_per_block(r: usize) -> usize {
    match r {
        4 => 6,
        3 => 8,
        _ => PMAX,
    }
}

/// Tasks over `m` pixels in blocks of `p` and `channel_blocks` blocks of output channels: a task
/// streams one column slice of the weights, which stays in cache while it goes over its pixels.
/// Enough tasks to balance the threads, each run a whole number of pixel blocks. Returns the
/// runs of pixels and their length.
pub fn runs(m: usize, p: usize, channel_blocks: usize, threads: usize) -> (usize, usize) {
    let runs = (threads.max(1) * 8)
        .div_ceil(channel_blocks)
        .min(m.div_ceil(p));
    let per_run = m.div_ceil(runs.max(1)).div_ceil(p) * p;
    (m.div_ceil(per_run), per_run)
}

/// Computes the output pixels of the given tiles (every tile for a dense frame). The tiles'
/// pixels are numbered as `conv::tile_offsets` lays them out and cut into blocks of P, so small
/// tiles (a 1×1-pixel tile on a 32× downscaled map) still fill whole blocks.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    spec: &ConvSpec,
    wts: &DirectWeights,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
    offsets: &mut Vec<usize>,
    threads: usize,
) {
    let m = super::conv::tile_offsets(grid, &output, tiles, offsets);
    if m == 0 {
        return;
    }
    let p = pixels_per_block(wts.r);
    let width = 16 * wts.r;
    let channel_blocks = wts.np / width;
    let (runs, per_run) = runs(m, p, channel_blocks, threads);
    let offsets = &offsets[..];
    (0..runs * channel_blocks).into_par_iter().for_each(|task| {
        let (run, c0) = (task / channel_blocks, (task % channel_blocks) * width);
        let (r0, r1) = (run * per_run, ((run + 1) * per_run).min(m));
        // The tile holding row r0, and r0's place in it.
        let mut ti = offsets.partition_point(|&o| o <= r0) - 1;
        let mut rect = output.rect(grid, tiles[ti]);
        let mut at = r0 - offsets[ti];
        let mut pixels = [(0usize, 0usize); PMAX];
        let mut table = [[wts.zeros.as_ptr(); PMAX]; MAX_TAPS];
        let mut r = r0;
        while r < r1 {
            let count = p.min(r1 - r);
            for px in pixels.iter_mut().take(count) {
                // Past the end of this tile (or an empty one): the next tile.
                while at == (rect.2 - rect.0) * (rect.3 - rect.1) {
                    ti += 1;
                    rect = output.rect(grid, tiles[ti]);
                    at = 0;
                }
                let w = rect.2 - rect.0;
                *px = (rect.1 + at / w, rect.0 + at % w);
                at += 1;
            }
            let reads = fill_table(
                spec,
                &input,
                &pixels[..count],
                &mut table,
                wts.zeros.as_ptr(),
            );
            // SAFETY: as `block` requires: `fill_table` filled `reads.taps` rows for every slot,
            // c0 + 16R ≤ np, the pixels are in the map and this task alone writes their
            // channels [c0, c0 + 16R); AVX-512 was checked by `applies`.
            unsafe { block(spec, wts, &table, reads, c0, &output, &pixels[..count]) };
            r += count;
        }
    });
}

/// How a block reads its input: `taps` rows of the table, each pointing at `run` consecutive
/// input values per pixel (the weights' rows in the same order).
#[derive(Clone, Copy)]
struct Reads {
    taps: usize,
    run: usize,
}

/// Row t of `table`: for each pixel, where kernel tap t reads its input channels. A pixel whose
/// taps all lie inside the map takes its pointers as fixed offsets from its first tap. When every
/// pixel of the block is inside and the view spans whole pixels, the kw taps of a kernel row are
/// one run of kw·cin consecutive values, and the table has one row per kernel row.
fn fill_table(
    spec: &ConvSpec,
    input: &FeatRef,
    pixels: &[(usize, usize)],
    table: &mut [[*const f32; PMAX]; MAX_TAPS],
    zeros: *const f32,
) -> Reads {
    if spec.transposed {
        return fill_table_transposed(spec, input, pixels, table, zeros);
    }
    let (reach_y, reach_x) = ((spec.kh - 1) * spec.dh, (spec.kw - 1) * spec.dw);
    let first_tap = |(oy, ox): (usize, usize)| {
        let iy0 = (oy * spec.sh) as isize - spec.pad_t as isize;
        let ix0 = (ox * spec.sw) as isize - spec.pad_l as isize;
        let inside = iy0 >= 0
            && ix0 >= 0
            && iy0 as usize + reach_y < input.h
            && ix0 as usize + reach_x < input.w;
        (iy0, ix0, inside)
    };
    let whole_pixels = spec.dw == 1 && input.c_off == 0 && input.c == input.pitch;
    if whole_pixels && pixels.iter().all(|&px| first_tap(px).2) {
        for (p, &px) in pixels.iter().enumerate() {
            let (iy0, ix0, _) = first_tap(px);
            let first = input.ptr_at(iy0 as usize, ix0 as usize);
            for (ky, row) in table.iter_mut().take(spec.kh).enumerate() {
                // SAFETY: kernel row ky of this pixel is inside the map.
                row[p] = unsafe { first.add(ky * spec.dh * input.w * input.pitch) };
            }
        }
        for row in table.iter_mut().take(spec.kh) {
            row[pixels.len()..].fill(zeros);
        }
        return Reads {
            taps: spec.kh,
            run: spec.kw * spec.cin,
        };
    }
    let taps = spec.kh * spec.kw;
    for (p, &px) in pixels.iter().enumerate() {
        let (iy0, ix0, inside) = first_tap(px);
        if inside {
            let first = input.ptr_at(iy0 as usize, ix0 as usize);
            for (t, row) in table.iter_mut().take(taps).enumerate() {
                let (ky, kx) = (t / spec.kw, t % spec.kw);
                let step = (ky * spec.dh * input.w + kx * spec.dw) * input.pitch;
                // SAFETY: tap (ky, kx) of this pixel is inside the map.
                row[p] = unsafe { first.add(step) };
            }
            continue;
        }
        for (t, row) in table.iter_mut().take(taps).enumerate() {
            let iy = iy0 + ((t / spec.kw) * spec.dh) as isize;
            let ix = ix0 + ((t % spec.kw) * spec.dw) as isize;
            row[p] = if iy >= 0 && ix >= 0 && (iy as usize) < input.h && (ix as usize) < input.w {
                input.ptr_at(iy as usize, ix as usize)
            } else {
                zeros
            };
        }
    }
    // Unused pixel slots read the zero row.
    for row in table.iter_mut().take(taps) {
        row[pixels.len()..].fill(zeros);
    }
    Reads {
        taps,
        run: spec.cin,
    }
}

/// `fill_table` for a transposed convolution: tap (ky, kx) of an output pixel reads the input
/// pixel it comes from where the stride divides, the zero row elsewhere.
fn fill_table_transposed(
    spec: &ConvSpec,
    input: &FeatRef,
    pixels: &[(usize, usize)],
    table: &mut [[*const f32; PMAX]; MAX_TAPS],
    zeros: *const f32,
) -> Reads {
    use super::conv::input_index;
    let taps = spec.kh * spec.kw;
    for (t, row) in table.iter_mut().take(taps).enumerate() {
        let (ky, kx) = (t / spec.kw, t % spec.kw);
        for (slot, &(oy, ox)) in row.iter_mut().zip(pixels) {
            let iy = input_index(oy, ky, spec.sh, spec.dh, spec.pad_t, true);
            let ix = input_index(ox, kx, spec.sw, spec.dw, spec.pad_l, true);
            *slot = if iy >= 0 && ix >= 0 && (iy as usize) < input.h && (ix as usize) < input.w {
                input.ptr_at(iy as usize, ix as usize)
            } else {
                zeros
            };
        }
        row[pixels.len()..].fill(zeros);
    }
    Reads {
        taps,
        run: spec.cin,
    }
}

/// Output channels [c0, c0 + 16R) of the block's pixels.
///
/// # Safety
/// Rows 0..reads.taps of `table` hold, for all PMAX slots, pointers to `reads.run` readable
/// floats; c0 + 16R ≤ np; the pixels lie in the output map and no other task writes their channels
/// [c0, c0 + 16R) meanwhile; the CPU has AVX-512 F.
unsafe fn block(
    spec: &ConvSpec,
    wts: &DirectWeights,
    table: &[[*const f32; PMAX]; MAX_TAPS],
    reads: Reads,
    c0: usize,
    output: &FeatMut,
    pixels: &[(usize, usize)],
) {
    let n = (16 * wts.r).min(spec.cout - c0);
    // Pixel slots past the block's end store into `sink`.
    let mut sink = [0f32; 64];
    let mut dst = [sink.as_mut_ptr(); PMAX];
    for (d, &(oy, ox)) in dst.iter_mut().zip(pixels) {
        *d = output.ptr_at(oy, ox).add(c0);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (w, bias) = wts.parts(spec);
        let args = x86::Args {
            table,
            taps: reads.taps,
            run: reads.run,
            w: w.as_ptr().add(c0),
            np: wts.np,
            bias: bias.as_ptr().add(c0),
            act: spec.act,
            dst: &dst,
            n,
        };
        match wts.r {
            4 => x86::block::<4, 6>(&args),
            3 => x86::block::<3, 8>(&args),
            2 => x86::block::<2, 12>(&args),
            _ => x86::block::<1, 12>(&args),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("applies() is false without AVX-512 ({table:p})");
    activate_rest(spec.act, &dst[..pixels.len()], n);
}

/// Applies `act` to the n channels at each of `dst` where the kernels' [`x86::store`] left it.
///
/// # Safety
/// Each pointer is to n floats that no other task touches meanwhile.
pub unsafe fn activate_rest(act: Act, dst: &[*mut f32], n: usize) {
    if !in_registers(act) {
        for &d in dst {
            act.apply_slice(std::slice::from_raw_parts_mut(d, n));
        }
    }
}

/// Activations the kernel applies to its registers (the others are applied afterwards).
fn in_registers(act: Act) -> bool {
    matches!(
        act,
        Act::Identity | Act::Relu | Act::Clip(..) | Act::Sigmoid | Act::Silu
    ) || matches!(act, Act::LeakyRelu(a) if (0.0..=1.0).contains(&a))
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register arrays indexed like the math
pub mod x86 {
    use super::{Act, MAX_TAPS, PMAX};
    use std::arch::x86_64::*;

    pub struct Args<'a> {
        pub table: &'a [[*const f32; PMAX]; MAX_TAPS],
        pub taps: usize,
        /// Consecutive input values each table entry points at (one weight row each).
        pub run: usize,
        pub w: *const f32,
        pub np: usize,
        pub bias: *const f32,
        pub act: Act,
        /// Where pixel p's channels c0.. go, and how many of the 16R are real (n ≥ 1).
        pub dst: &'a [*mut f32; PMAX],
        pub n: usize,
    }

    /// `act::sigmoid` on 16 lanes, with the same operations in the same order (separate multiplies
    /// and adds, no fused ones), so it gives the same bits as the scalar code.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sigmoid(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        _mm512_div_ps(
            one,
            _mm512_add_ps(one, exp(_mm512_sub_ps(_mm512_setzero_ps(), x))),
        )
    }

    /// `act::exp` on 16 lanes (see there for the method), operation for operation.
    #[target_feature(enable = "avx512f")]
    unsafe fn exp(x: __m512) -> __m512 {
        let c = _mm512_set1_ps;
        let (add, sub, mul) = (_mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps);
        let rounder = c(12_582_912.0);
        let x = _mm512_min_ps(_mm512_max_ps(x, c(-87.3)), c(88.0));
        let t = add(mul(x, c(std::f32::consts::LOG2_E)), rounder);
        let n = sub(t, rounder);
        let r = sub(sub(x, mul(n, c(0.693_145_75))), mul(n, c(1.428_606_8e-6)));
        let mut p = c(1.0 / 5040.0);
        for k in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = add(c(k), mul(r, p));
        }
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_castps_si512(t),
            _mm512_set1_epi32(127),
        ));
        mul(p, _mm512_castsi512_ps(bits))
    }

    /// dst[p][16r + j] = act(bias + Σ_t Σ_i table[t][p][i] · w[(t·run + i)·np + 16r + j]), for
    /// 16r + j < n; activations `in_registers` rejects are left for the caller.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block<const R: usize, const P: usize>(a: &Args) {
        let mut acc = with_bias::<R, P>(a.bias);
        for t in 0..a.taps {
            let row: [*const f32; P] = std::array::from_fn(|p| a.table[t][p]);
            let mut w = a.w.add(t * a.run * a.np);
            for ci in 0..a.run {
                let mut wv = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    wv[r] = _mm512_loadu_ps(w.add(16 * r));
                }
                for p in 0..P {
                    let x = _mm512_set1_ps(*row[p].add(ci));
                    for r in 0..R {
                        acc[p][r] = _mm512_fmadd_ps(x, wv[r], acc[p][r]);
                    }
                }
                w = w.add(a.np);
            }
        }
        store::<R, P>(acc, a.act, a.dst, a.n);
    }

    /// P pixels' accumulators, each starting from the 16R biases at `bias`. Inlined always,
    /// as is `store`, into kernels that enable AVX-512 (else the accumulators would live in
    /// memory: measured, the bf16 kernel at 70 % of its speed).
    #[inline(always)]
    pub unsafe fn with_bias<const R: usize, const P: usize>(bias: *const f32) -> [[__m512; R]; P] {
        let mut acc = [[_mm512_setzero_ps(); R]; P];
        for r in 0..R {
            let b = _mm512_loadu_ps(bias.add(16 * r));
            for p in 0..P {
                acc[p][r] = b;
            }
        }
        acc
    }

    /// Stores channels [16r, 16r + 16) ∩ [0, n) of pixel p's accumulators at `dst[p]`, with the
    /// activation applied where `in_registers` takes it (the others are left for the caller).
    #[inline(always)]
    pub unsafe fn store<const R: usize, const P: usize>(
        acc: [[__m512; R]; P],
        act: Act,
        dst: &[*mut f32; PMAX],
        n: usize,
    ) {
        let act = if super::in_registers(act) {
            act
        } else {
            Act::Identity
        };
        let (lo, hi, slope) = match act {
            Act::Relu => (0.0, f32::INFINITY, 0.0),
            Act::Clip(lo, hi) => (lo, hi, 0.0),
            Act::LeakyRelu(s) => (0.0, 0.0, s),
            _ => (0.0, 0.0, 0.0),
        };
        let (lo, hi, slope) = (
            _mm512_set1_ps(lo),
            _mm512_set1_ps(hi),
            _mm512_set1_ps(slope),
        );
        let masks: [__mmask16; R] = std::array::from_fn(|r| {
            let left = n.saturating_sub(16 * r).min(16);
            ((1u32 << left) - 1) as __mmask16
        });
        for p in 0..P {
            for r in 0..R {
                let v = acc[p][r];
                let v = match act {
                    // max(x, s·x) is LeakyReLU for 0 ≤ s ≤ 1.
                    Act::LeakyRelu(_) => _mm512_max_ps(v, _mm512_mul_ps(v, slope)),
                    Act::Relu | Act::Clip(..) => _mm512_min_ps(_mm512_max_ps(v, lo), hi),
                    _ => v,
                };
                _mm512_mask_storeu_ps(dst[p].add(16 * r), masks[r], v);
            }
        }
        if matches!(act, Act::Sigmoid | Act::Silu) {
            logistic::<R, P>(dst, &masks, act);
        }
    }

    /// Sigmoid or SiLU over the stored outputs, as a separate function: inlined into `block`,
    /// its temporaries would compete with the accumulators for registers (measured: the R = 4
    /// kernel ran at half speed).
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn logistic<const R: usize, const P: usize>(
        dst: &[*mut f32; PMAX],
        masks: &[__mmask16; R],
        act: Act,
    ) {
        for p in 0..P {
            for r in 0..R {
                let at = dst[p].add(16 * r);
                let v = _mm512_maskz_loadu_ps(masks[r], at);
                let v = match act {
                    Act::Silu => _mm512_mul_ps(v, sigmoid(v)),
                    _ => sigmoid(v),
                };
                _mm512_mask_storeu_ps(at, masks[r], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::fixture;
    use super::*;
    use crate::model::plan::{FeatureBuf, View};
    use crate::rng::Lcg;

    /// Transposed convolutions (2× upsampling as DBNet's head uses them, k = 2 and k = 3) agree
    /// with the GEMM path, dense and on scattered tiles.
    #[test]
    fn transposed_direct_conv_equals_the_gemm_path() {
        if crate::simd::level() != crate::simd::Level::Avx512 {
            println!(
                "SKIPPED: transposed_direct_conv_equals_the_gemm_path: this CPU has no AVX-512"
            );
            return;
        }
        let mut rng = Lcg(13);
        for (k, pad, cin, cout, act) in [
            (2, 0, 24, 1, Act::Identity),
            (2, 0, 16, 24, Act::Relu),
            (3, 1, 8, 20, Act::Sigmoid),
        ] {
            let spec = ConvSpec {
                kh: k,
                kw: k,
                sh: 2,
                sw: 2,
                dh: 1,
                dw: 1,
                pad_t: pad,
                pad_l: pad,
                cin,
                cout,
                groups: 1,
                transposed: true,
                weights: rng.vec(k * k * cin * cout, 0.3),
                bias: rng.vec(cout, 0.5),
                act,
            };
            assert!(applies(&spec));
            // Input 19×13 at scale 4, output 38×26 at scale 2 (image 76×52).
            let maps = fixture::Maps {
                grid: TileGrid::new(76, 52, 8),
                specs: [
                    FeatureBuf {
                        c: cin,
                        h: 13,
                        w: 19,
                        scale: 4,
                    },
                    FeatureBuf {
                        c: cout,
                        h: 26,
                        w: 38,
                        scale: 2,
                    },
                ],
                iv: View {
                    buf: 0,
                    c_off: 0,
                    c: cin,
                },
                ov: View {
                    buf: 1,
                    c_off: 0,
                    c: cout,
                },
            };
            agree_with_gemm(
                &spec,
                &maps,
                &mut rng,
                &format!("transposed k{k} {cin}->{cout}"),
            );
        }
    }

    /// The kernel's in-register sigmoid gives the scalar code's bits.
    #[test]
    fn register_sigmoid_equals_the_scalar_one() {
        if crate::simd::level() != crate::simd::Level::Avx512 {
            println!("SKIPPED: register_sigmoid_equals_the_scalar_one: this CPU has no AVX-512");
            return;
        }
        let mut rng = Lcg(2);
        let mut xs: Vec<f32> = (0..16_000).map(|_| rng.signed(100.0)).collect();
        xs.extend([
            0.0, -0.0, 1e-30, -1e-30, 87.3, -87.3, 88.0, 200.0, -200.0, 0.5,
        ]);
        xs.resize(xs.len().div_ceil(16) * 16, 1.0);
        for chunk in xs.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512 checked above; 16 floats in and out.
            unsafe {
                use std::arch::x86_64::*;
                let v = _mm512_loadu_ps(chunk.as_ptr());
                _mm512_storeu_ps(got.as_mut_ptr(), x86::sigmoid(v));
            }
            for (g, &x) in got.iter().zip(chunk) {
                assert_eq!(g.to_bits(), crate::model::act::sigmoid(x).to_bits(), "{x}");
            }
        }
    }

    /// Runs the direct kernel and the im2col + GEMM path on every tile of `maps` and on a random
    /// 40 % of them (`fixture::against_gemm`) and asserts that their outputs agree (relative
    /// 1e-4); `what` names the case in the message.
    fn agree_with_gemm(spec: &ConvSpec, maps: &fixture::Maps, rng: &mut Lcg, what: &str) {
        let wts = DirectWeights::new(spec);
        fixture::against_gemm(
            spec,
            maps,
            rng,
            |i, o, tiles| conv(spec, &wts, &maps.grid, i, o, tiles, &mut Vec::new(), 2),
            |got, want, _, tiles| {
                for (j, (g, w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{what}, {tiles} tiles: element {j}: {g} vs {w}"
                    );
                }
            },
        );
    }

    /// Direct and GEMM paths agree on odd map sizes, strides, dilation, channel counts that are
    /// not a multiple of 16, channel views into wider buffers, fused and separate activations,
    /// for all tiles and for a scattered subset.
    #[test]
    fn direct_conv_equals_the_gemm_path() {
        if crate::simd::level() != crate::simd::Level::Avx512 {
            println!("SKIPPED: direct_conv_equals_the_gemm_path: this CPU has no AVX-512 (the direct kernel is not used here)");
            return;
        }
        // (k, stride, vertical dilation, horizontal dilation, cin, cout, activation)
        let cases = [
            (3, 1, 1, 1, 16, 16, Act::LeakyRelu(0.1)),
            (3, 2, 1, 1, 3, 32, Act::LeakyRelu(0.1)),
            (3, 1, 1, 1, 32, 32, Act::Relu),
            (3, 2, 1, 1, 20, 48, Act::Identity),
            (3, 1, 2, 2, 8, 40, Act::Sigmoid),
            (3, 1, 2, 1, 16, 32, Act::LeakyRelu(0.1)),
            (5, 1, 1, 1, 8, 64, Act::HardSwish),
            (3, 1, 1, 1, 12, 24, Act::LeakyRelu(1.5)),
            (3, 1, 1, 1, 16, 56, Act::Clip(-0.5, 0.5)),
            (3, 1, 1, 1, 16, 32, Act::Silu),
            (1, 1, 1, 1, 40, 20, Act::Identity),
            (1, 2, 1, 1, 24, 32, Act::Relu),
        ];
        let mut rng = Lcg(11);
        for (k, stride, dh, dw, cin, cout, act) in cases {
            let spec = fixture::spec(&mut rng, k, stride, (dh, dw), cin, cout, 1, act);
            assert!(applies(&spec), "case k{k} s{stride} {cin}->{cout}");
            // A view of some channels of a wider buffer (one tap at a time), or the whole buffer
            // (a kernel row as one run).
            for whole in [false, true] {
                let (extra, c_off) = if whole { (0, 0) } else { (5, 3) };
                let maps = fixture::Maps::new(&spec, extra, c_off);
                let what =
                    format!("k{k} s{stride} d{dh}x{dw} {cin}->{cout} {act:?}, whole view {whole}");
                agree_with_gemm(&spec, &maps, &mut rng, &what);
            }
        }
    }
}

/// A benchmark, not a test (prints figures, asserts nothing):
/// `cargo test --release --lib bench_direct_vs_gemm -- --ignored --nocapture`
/// times NanoDet's 3×3 layer shapes through this kernel and through im2col + GEMM, alternating
/// run by run on 2 threads, every tile and then 10 % of the tiles.
#[cfg(test)]
mod bench {
    use super::*;
    use crate::model::plan::{FeatureBuf, View};
    use crate::rng::Lcg;

    fn min_median(mut v: Vec<f64>) -> (f64, f64) {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    }

    #[test]
    #[ignore]
    fn bench_direct_vs_gemm() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut rng = Lcg(1);
        let grid = TileGrid::new(416, 416, 32);
        let shapes = [
            (3, 104, 32, 32),
            (3, 104, 32, 16),
            (3, 104, 16, 16),
            (3, 52, 64, 32),
            (3, 52, 32, 32),
            (3, 52, 64, 64),
            (3, 26, 128, 64),
            (3, 26, 128, 128),
            (3, 13, 128, 128),
            (3, 13, 256, 128),
            (3, 13, 256, 256),
            (1, 52, 128, 124),
            (1, 52, 128, 128),
            (1, 26, 256, 128),
            (1, 13, 512, 128),
        ];
        for fraction in [1.0, 0.1] {
            println!("tiles active: {fraction}");
            for (k, hw, cin, cout) in shapes {
                let spec = ConvSpec {
                    kh: k,
                    kw: k,
                    sh: 1,
                    sw: 1,
                    dh: 1,
                    dw: 1,
                    pad_t: k / 2,
                    pad_l: k / 2,
                    cin,
                    cout,
                    groups: 1,
                    transposed: false,
                    weights: rng.vec(k * k * cin * cout, 0.3),
                    bias: rng.vec(cout, 0.5),
                    act: Act::LeakyRelu(0.1),
                };
                let scale = 416 / hw;
                let specs = [
                    FeatureBuf {
                        c: cin,
                        h: hw,
                        w: hw,
                        scale,
                    },
                    FeatureBuf {
                        c: cout,
                        h: hw,
                        w: hw,
                        scale,
                    },
                ];
                let (iv, ov) = (
                    View {
                        buf: 0,
                        c_off: 0,
                        c: cin,
                    },
                    View {
                        buf: 1,
                        c_off: 0,
                        c: cout,
                    },
                );
                let tiles: Vec<u32> = (0..grid.len() as u32)
                    .filter(|_| fraction == 1.0 || rng.unit() < fraction)
                    .collect();
                let wts = DirectWeights::new(&spec);
                let mut bufs = vec![rng.vec(specs[0].len(), 1.0), vec![0.0; specs[1].len()]];
                let mut a = vec![0.0; (hw + 2) * (hw + 2) * cin * 9];
                let mut c = vec![0.0; (hw + 2) * (hw + 2) * cout];
                let mut offsets = Vec::new();
                let (mut direct, mut gemm) = (Vec::new(), Vec::new());
                pool.install(|| {
                    for _ in 0..60 {
                        let t = std::time::Instant::now();
                        let i = FeatRef::new(&bufs, &specs, iv);
                        let o = FeatMut::new(&mut bufs, &specs, ov);
                        conv(&spec, &wts, &grid, i, o, &tiles, &mut offsets, 2);
                        direct.push(t.elapsed().as_secs_f64() * 1e3);
                        let t = std::time::Instant::now();
                        let i = FeatRef::new(&bufs, &specs, iv);
                        let o = FeatMut::new(&mut bufs, &specs, ov);
                        super::super::conv::conv(
                            &spec,
                            &grid,
                            i,
                            o,
                            &tiles,
                            &mut offsets,
                            &mut a,
                            &mut c,
                            2,
                        );
                        gemm.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                });
                let ((dmin, dmed), (gmin, gmed)) = (min_median(direct), min_median(gemm));
                println!(
                    "  {k}x{k} {cin}->{cout} on {hw}x{hw}: direct min {dmin:.3} median {dmed:.3} ms, \
                     im2col+GEMM min {gmin:.3} median {gmed:.3} ms, ratio of minimums {:.2}",
                    gmin / dmin
                );
            }
        }
    }
}
