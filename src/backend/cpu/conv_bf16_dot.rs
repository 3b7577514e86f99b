//! Convolutions in bf16 on AVX512-BF16 dot products (`precision=bf16` on CPUs that have them but
//! no AMX: AMD Zen 4 and newer, Intel Cooper Lake). `vdpbf16ps` multiplies 16 pairs of bf16 and
//! adds both products of each pair to one f32 lane: twice the multiply-adds of an f32 FMA.
//!
//! The kernel is the direct one (`conv_direct`) with pairs of input channels: a block of P
//! output pixels keeps P·R accumulator registers of 16 output channels; for every tap and pair
//! of input channels it broadcasts the pair (one 32-bit word of the padded bf16 copy of the
//! input, `bf16_input`) against R registers of 16 weight pairs. Every tap of every output is
//! one fixed offset into the copy, so nothing is gathered, and only the outputs of active tiles
//! are computed.

use rayon::prelude::*;

use super::amx::{bf16, round_up};
use super::bf16_input::{Bf16Input, Layout, Reads};
use super::conv_direct::{self, PMAX};
use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// Whether this CPU has the dot products (and AVX-512 is in use).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::level() == crate::simd::Level::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this path computes the convolution: an ordinary (not grouped or transposed) one with
/// equal strides and at least [`MIN_CIN`] input channels.
pub fn applies(spec: &ConvSpec) -> bool {
    !spec.transposed && spec.groups == 1 && spec.sh == spec.sw && spec.cin >= MIN_CIN
}

/// Input channels below which a layer keeps the f32 kernels. A first layer on 3 channels
/// measured 0.79 ms here against 0.55–0.57 ms in f32 (`bench_dot`): its pixels pad to 4
/// channels, and copying the 416×416 input costs more than the products save.
pub const MIN_CIN: usize = 16;

/// Channels held per input pixel: the input's, padded to whole pairs.
pub fn channels_held(spec: &ConvSpec) -> usize {
    round_up(spec.cin, 2)
}

/// The weights in bf16: per block of 16R output channels, per tap and pair of input channels,
/// 16R pairs (input channel 2j, then 2j + 1, of each output channel), zero past cin and cout.
/// Made once, when the backend is built.
pub struct DotWeights {
    w: Vec<u16>,
    /// The bias, padded to `np`.
    bias: Vec<f32>,
    /// Output channels rounded up to 16.
    np: usize,
    /// 16-channel registers per pixel.
    r: usize,
    cpad: usize,
}

impl DotWeights {
    pub fn new(spec: &ConvSpec) -> Self {
        let (cin, n, taps) = (spec.cin, spec.cout, spec.kh * spec.kw);
        assert!(
            spec.weights.len() == taps * cin * n && spec.bias.len() == n,
            "conv weight sizes"
        );
        let cpad = channels_held(spec);
        let np = round_up(n, 16);
        let r = conv_direct::registers(np);
        let width = 16 * r;
        let mut w = vec![0u16; taps * cpad * np];
        let mut at = 0;
        for c0 in (0..np).step_by(width) {
            for t in 0..taps {
                for j in 0..cpad / 2 {
                    for col in c0..c0 + width {
                        for ci in [2 * j, 2 * j + 1] {
                            if ci < cin && col < n {
                                w[at] = bf16(spec.weights[(t * cin + ci) * n + col]);
                            }
                            at += 1;
                        }
                    }
                }
            }
        }
        let mut bias = vec![0f32; np];
        bias[..n].copy_from_slice(&spec.bias);
        DotWeights {
            w,
            bias,
            np,
            r,
            cpad,
        }
    }

    /// Floats' worth of memory held.
    pub fn floats(&self) -> usize {
        self.w.len() / 2 + self.bias.len()
    }
}

/// Computes the output pixels of the given tiles (every tile on a dense frame). `scratch` must
/// have been fit to this layer with [`channels_held`]; [`available`] must be true.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    spec: &ConvSpec,
    wts: &DotWeights,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
    scratch: &mut Bf16Input,
    threads: usize,
) {
    assert!(available(), "the bf16 dot path needs AVX512-BF16");
    let (cpad, reads) = (wts.cpad, Reads::Outputs);
    if let Some(l) = scratch.prepare(spec, grid, &input, &output, tiles, cpad, reads, threads) {
        compute(spec, &l, wts, &output, scratch, threads);
    }
}

/// Runs the blocks of active outputs, tasks over (run of outputs, block of output channels).
fn compute(
    spec: &ConvSpec,
    l: &Layout,
    wts: &DotWeights,
    output: &FeatMut,
    scratch: &Bf16Input,
    threads: usize,
) {
    let outputs = &scratch.outputs[..];
    let p = conv_direct::pixels_per_block(wts.r);
    let width = 16 * wts.r;
    let channel_blocks = wts.np / width;
    let (runs, per_run) = conv_direct::runs(outputs.len(), p, channel_blocks, threads);
    let (held, taps) = (scratch.held(), &scratch.taps[..]);
    let slice = taps.len() * wts.cpad * width;
    // At stride 1 the kw taps of a kernel row read kw consecutive pixels: one run of kw·cpad
    // values, in the weights' order, from the row's first tap.
    let (tap_step, pairs) = if l.stride == 1 && spec.dw == 1 {
        (spec.kw, spec.kw * wts.cpad / 2)
    } else {
        (1, wts.cpad / 2)
    };
    (0..runs * channel_blocks).into_par_iter().for_each(|task| {
        let (run, cb) = (task / channel_blocks, task % channel_blocks);
        let c0 = cb * width;
        let n = width.min(spec.cout - c0);
        let run = &outputs[run * per_run..((run + 1) * per_run).min(outputs.len())];
        for chunk in run.chunks(p) {
            // Slots past the chunk's end repeat its first output and store into `sink`.
            let mut sink = [0f32; 64];
            let mut dst = [sink.as_mut_ptr(); PMAX];
            let mut pixels = [chunk[0]; PMAX];
            for ((d, px), &i) in dst.iter_mut().zip(&mut pixels).zip(chunk) {
                let i = i as usize;
                *px = i as u32;
                *d = output.ptr_at(i / l.ws, i % l.ws).wrapping_add(c0);
            }
            #[cfg(target_arch = "x86_64")]
            {
                let args = x86::Args {
                    held: held.as_ptr(),
                    cpad: wts.cpad,
                    taps,
                    tap_step,
                    pairs,
                    pixels: &pixels,
                    w: wts.w[cb * slice..].as_ptr(),
                    bias: wts.bias[c0..].as_ptr(),
                    act: spec.act,
                    dst: &dst,
                    n,
                };
                // SAFETY: every output's taps lie in the copy (`Layout::pixels`); the weights
                // hold this block's slice; the outputs are in the map and only this task
                // writes their channels [c0, c0 + n); `available` checked the CPU.
                unsafe {
                    match wts.r {
                        4 => x86::block::<4, 6>(&args),
                        3 => x86::block::<3, 8>(&args),
                        2 => x86::block::<2, 12>(&args),
                        _ => x86::block::<1, 12>(&args),
                    }
                }
            }
            // SAFETY: as above, the chunk's outputs are this task's alone.
            unsafe { conv_direct::activate_rest(spec.act, &dst[..chunk.len()], n) };
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register arrays indexed like the math
mod x86 {
    use super::super::conv_direct::x86::{store, with_bias};
    use super::PMAX;
    use crate::model::act::Act;
    use std::arch::x86_64::*;

    pub struct Args<'a> {
        /// The padded bf16 copy of the input, `cpad` values per pixel.
        pub held: *const u16,
        pub cpad: usize,
        /// Each tap's offset in pixels from an output's first.
        pub taps: &'a [usize],
        /// Every `tap_step`-th tap starts a run of `pairs` pairs of consecutive input values.
        pub tap_step: usize,
        pub pairs: usize,
        /// The flattened outputs of the block's P slots.
        pub pixels: &'a [u32; PMAX],
        /// This block's weights: per tap and pair, 16R pairs.
        pub w: *const u16,
        pub bias: *const f32,
        pub act: Act,
        /// Where slot p's channels go, and how many of the 16R are real (n ≥ 1).
        pub dst: &'a [*mut f32; PMAX],
        pub n: usize,
    }

    /// dst[p][16r + j] = act(bias + Σ_t Σ_c held[(pixels[p] + taps[t])·cpad + c] ·
    /// w(t, c, 16r + j)), summed in pairs of c in f32 (taps t read as runs: `tap_step`).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn block<const R: usize, const P: usize>(a: &Args) {
        let mut acc = with_bias::<R, P>(a.bias);
        let mut w = a.w;
        for &tap in a.taps.iter().step_by(a.tap_step) {
            let mut row = [std::ptr::null::<i32>(); P];
            for p in 0..P {
                row[p] = a.held.add((a.pixels[p] as usize + tap) * a.cpad) as *const i32;
            }
            for j in 0..a.pairs {
                let mut wv = [_mm512_setzero_si512(); R];
                for r in 0..R {
                    wv[r] = _mm512_loadu_si512(w.add(32 * r) as *const _);
                }
                for p in 0..P {
                    let x: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(row[p].add(j).read_unaligned()));
                    for r in 0..R {
                        let b: __m512bh = std::mem::transmute(wv[r]);
                        // The broadcast pair goes last, the operand that may come from memory:
                        // with R = 1 it folds into an embedded broadcast (measured 0.8 → 0.6 of
                        // the f32 kernel's time on a 16-channel layer; BENCHMARKS.md).
                        acc[p][r] = _mm512_dpbf16_ps(acc[p][r], b, x);
                    }
                }
                w = w.add(32 * R);
            }
        }
        store::<R, P>(acc, a.act, a.dst, a.n);
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16_input::check;
    use super::*;

    /// The dot products against im2col + f32 GEMM on bf16-exact operands ([`check`]).
    #[test]
    fn dot_conv_equals_the_f32_path_on_bf16_operands() {
        if !available() {
            println!("SKIPPED: dot_conv_equals_the_f32_path_on_bf16_operands: no AVX512-BF16 on this CPU (or AVX-512 is off)");
            return;
        }
        check::equals_the_f32_path(applies, |spec, grid, input, output, tiles, scratch| {
            let wts = DotWeights::new(spec);
            conv(spec, &wts, grid, input, output, tiles, scratch, 2)
        });
    }
}

#[cfg(test)]
mod bench {
    use super::super::conv::fixture::BenchLayer;
    use super::super::conv_direct::{self, DirectWeights};
    use super::*;
    use crate::rng::Lcg;

    /// `cargo test --release --lib bench_dot -- --ignored --nocapture`: a dense NanoDet-sized
    /// layer on two threads, f32 direct kernel against bf16 dot products side by side, and the
    /// bf16 copy of the input alone (min and median of 40 runs, alternating).
    #[test]
    #[ignore]
    fn bench_dot() {
        if !available() {
            println!("no AVX512-BF16");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut rng = Lcg(5);
        for (hw, s, k, cin, cout) in [
            (208, 2, 3, 3, 32),
            (104, 1, 3, 32, 32),
            (104, 1, 3, 16, 16),
            (52, 1, 3, 128, 128),
            (52, 1, 1, 128, 124),
            (26, 2, 3, 128, 128),
            (13, 1, 3, 256, 256),
        ] {
            let mut layer = BenchLayer::new(&mut rng, hw, s, k, cin, cout);
            let (spec, grid, tiles) = (layer.spec.clone(), layer.grid, layer.tiles.clone());
            let (dot, direct) = (DotWeights::new(&spec), DirectWeights::new(&spec));
            let mut scratch = Bf16Input::default();
            let mut offsets = Vec::new();
            let (mut t_dot, mut t_f32, mut t_prep) = (Vec::new(), Vec::new(), Vec::new());
            pool.install(|| {
                for _ in 0..40 {
                    let t = std::time::Instant::now();
                    let (i, o) = layer.maps();
                    conv(&spec, &dot, &grid, i, o, &tiles, &mut scratch, 2);
                    t_dot.push(t.elapsed().as_secs_f64() * 1e3);
                    let t = std::time::Instant::now();
                    let (i, o) = layer.maps();
                    let reads = Reads::Outputs;
                    scratch.prepare(&spec, &grid, &i, &o, &tiles, dot.cpad, reads, 2);
                    t_prep.push(t.elapsed().as_secs_f64() * 1e3);
                    let t = std::time::Instant::now();
                    let (i, o) = layer.maps();
                    conv_direct::conv(&spec, &direct, &grid, i, o, &tiles, &mut offsets, 2);
                    t_f32.push(t.elapsed().as_secs_f64() * 1e3);
                }
            });
            let gmac = layer.gmac();
            let stats = |t: &mut Vec<f64>| {
                t.sort_by(f64::total_cmp);
                (t[0], t[t.len() / 2])
            };
            let ((d0, d1), (f0, f1)) = (stats(&mut t_dot), stats(&mut t_f32));
            let (p0, p1) = stats(&mut t_prep);
            println!(
                "{hw}x{hw} k{k} s{s} {cin}->{cout}: bf16 dot {d0:.3}/{d1:.3} ms ({:.0} GMAC/s; of which the input copy {p0:.3}/{p1:.3}), f32 direct {f0:.3}/{f1:.3} ms ({:.0} GMAC/s), min/median",
                gmac / d0 * 1e3,
                gmac / f0 * 1e3,
            );
        }
    }
}
