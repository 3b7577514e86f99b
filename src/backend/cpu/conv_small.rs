//! Direct convolution for layers whose im2col row is short (K = kh·kw·cin ≤ MAX_K: a network's
//! first layer on 3-channel input). Their GEMM has too little depth to pay for packing, and the
//! im2col matrix costs more to write than the arithmetic: here each block of pixels gathers its K
//! input values into small arrays and accumulates all output channels directly, with AVX-512 or
//! AVX2+FMA kernels where the CPU has them (detected at run time) and a portable one elsewhere.
//! On AVX-512 machines `conv_direct` takes the k×k ones; this path keeps the rest.

use rayon::prelude::*;

use super::conv::copy_short;
use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// The longest im2col row this kernel takes.
pub const MAX_K: usize = 32;
/// Output channels per accumulator block (two AVX-512 registers: two FMAs per input broadcast).
const NB: usize = 32;
/// Output pixels computed together (independent accumulators hide the FMA latency).
const P: usize = 8;

/// Whether a convolution takes this path.
pub fn applies(spec: &ConvSpec) -> bool {
    !spec.transposed && spec.groups == 1 && spec.k_per_group() <= MAX_K
}

/// The weights re-laid out for the kernel: K rows of `np` (cout rounded up to NB) columns, and the
/// bias padded the same way. Made once, when the backend is built.
pub struct SmallKWeights {
    w: Vec<f32>,
    bias: Vec<f32>,
    np: usize,
}

impl SmallKWeights {
    pub fn new(spec: &ConvSpec) -> Self {
        let (k, n) = (spec.k_per_group(), spec.cout);
        let np = n.div_ceil(NB) * NB;
        let mut w = vec![0f32; k * np];
        for r in 0..k {
            w[r * np..r * np + n].copy_from_slice(&spec.weights[r * n..(r + 1) * n]);
        }
        let mut bias = vec![0f32; np];
        bias[..n].copy_from_slice(&spec.bias);
        SmallKWeights { w, bias, np }
    }

    /// Floats held (a re-laid-out copy of the layer's weights).
    pub fn floats(&self) -> usize {
        self.w.len() + self.bias.len()
    }
}

/// Computes the output pixels of the given tiles (every tile for a dense frame).
pub fn conv(
    spec: &ConvSpec,
    wts: &SmallKWeights,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
) {
    let kernel = Kernel::detect();
    tiles.par_iter().for_each(|&t| {
        let (x0, y0, x1, y1) = output.rect(grid, t);
        let k = spec.k_per_group();
        for oy in y0..y1 {
            let mut ox = x0;
            while ox < x1 {
                let count = P.min(x1 - ox);
                let mut vals = [[0f32; MAX_K]; P];
                for (p, v) in vals.iter_mut().enumerate().take(count) {
                    gather(spec, &input, oy, ox + p, v);
                }
                for c0 in (0..wts.np).step_by(NB) {
                    let mut acc = [[0f32; NB]; P];
                    kernel.block(
                        &vals,
                        &wts.w[c0..],
                        wts.np,
                        k,
                        &wts.bias[c0..c0 + NB],
                        &mut acc,
                    );
                    let n = NB.min(spec.cout.saturating_sub(c0));
                    for (p, a) in acc.iter_mut().enumerate().take(count) {
                        spec.act.apply_slice(a);
                        let dst = &mut output.px(oy, ox + p)[c0..c0 + n];
                        if n == NB {
                            let dst: &mut [f32; NB] = dst.try_into().expect("block");
                            *dst = *a;
                        } else {
                            dst.copy_from_slice(&a[..n]);
                        }
                    }
                }
                ox += count;
            }
        }
    });
}

/// The accumulation kernel for the machine: AVX-512 or AVX2+FMA where the CPU has them.
#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The kernel for the instruction sets `crate::simd` detected (once per process).
    fn detect() -> Self {
        match crate::simd::level() {
            #[cfg(target_arch = "x86_64")]
            crate::simd::Level::Avx512 => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            crate::simd::Level::Avx2 => Kernel::Avx2,
            _ => Kernel::Portable,
        }
    }

    /// acc[p][j] = bias[j] + Σ_r vals[p][r] · w[r·stride + j], j < NB, for r < k.
    #[inline(always)]
    fn block(
        self,
        vals: &[[f32; MAX_K]; P],
        w: &[f32],
        stride: usize,
        k: usize,
        bias: &[f32],
        acc: &mut [[f32; NB]; P],
    ) {
        assert!(k <= MAX_K && bias.len() >= NB && (k == 0 || w.len() >= (k - 1) * stride + NB));
        match self {
            Kernel::Portable => block_portable(vals, w, stride, k, bias, acc),
            // SAFETY: the CPU has the features (detected); the asserts above bound every load.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe {
                x86::block_avx2(vals, w.as_ptr(), stride, k, bias.as_ptr(), acc)
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe {
                x86::block_avx512(vals, w.as_ptr(), stride, k, bias.as_ptr(), acc)
            },
        }
    }
}

fn block_portable(
    vals: &[[f32; MAX_K]; P],
    w: &[f32],
    stride: usize,
    k: usize,
    bias: &[f32],
    acc: &mut [[f32; NB]; P],
) {
    for (a, v) in acc.iter_mut().zip(vals) {
        a.copy_from_slice(&bias[..NB]);
        for (r, &x) in v.iter().enumerate().take(k) {
            for (aj, &wj) in a.iter_mut().zip(&w[r * stride..r * stride + NB]) {
                *aj += x * wj;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register arrays indexed like the math
mod x86 {
    use super::{MAX_K, NB, P};
    use std::arch::x86_64::*;

    /// Two 16-lane registers per pixel: 2·P independent accumulator chains, two FMAs per broadcast.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_avx512(
        vals: &[[f32; MAX_K]; P],
        w: *const f32,
        stride: usize,
        k: usize,
        bias: *const f32,
        acc: &mut [[f32; NB]; P],
    ) {
        let (b0, b1) = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)));
        let mut a = [[b0, b1]; P];
        for r in 0..k {
            let w0 = _mm512_loadu_ps(w.add(r * stride));
            let w1 = _mm512_loadu_ps(w.add(r * stride + 16));
            for p in 0..P {
                let x = _mm512_set1_ps(vals[p][r]);
                a[p][0] = _mm512_fmadd_ps(x, w0, a[p][0]);
                a[p][1] = _mm512_fmadd_ps(x, w1, a[p][1]);
            }
        }
        for p in 0..P {
            let dst = acc[p].as_mut_ptr();
            _mm512_storeu_ps(dst, a[p][0]);
            _mm512_storeu_ps(dst.add(16), a[p][1]);
        }
    }

    /// Two 8-lane registers per pixel and 16 channels at a time, half of the pixels at a time
    /// (16 registers in all).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_avx2(
        vals: &[[f32; MAX_K]; P],
        w: *const f32,
        stride: usize,
        k: usize,
        bias: *const f32,
        acc: &mut [[f32; NB]; P],
    ) {
        const H: usize = P / 2;
        for c0 in [0, 16] {
            let (b0, b1) = (
                _mm256_loadu_ps(bias.add(c0)),
                _mm256_loadu_ps(bias.add(c0 + 8)),
            );
            for half in 0..2 {
                let mut a = [[b0, b1]; H];
                for r in 0..k {
                    let w0 = _mm256_loadu_ps(w.add(r * stride + c0));
                    let w1 = _mm256_loadu_ps(w.add(r * stride + c0 + 8));
                    for q in 0..H {
                        let x = _mm256_set1_ps(vals[half * H + q][r]);
                        a[q][0] = _mm256_fmadd_ps(x, w0, a[q][0]);
                        a[q][1] = _mm256_fmadd_ps(x, w1, a[q][1]);
                    }
                }
                for q in 0..H {
                    let dst = acc[half * H + q].as_mut_ptr().add(c0);
                    _mm256_storeu_ps(dst, a[q][0]);
                    _mm256_storeu_ps(dst.add(8), a[q][1]);
                }
            }
        }
    }
}

/// The K input values output pixel (oy, ox) reads, ordered (ky, kx, ci); zero outside the map.
#[inline(always)]
fn gather(spec: &ConvSpec, input: &FeatRef, oy: usize, ox: usize, dst: &mut [f32; MAX_K]) {
    let c = spec.cin;
    let ix0 = (ox * spec.sw) as isize - spec.pad_l as isize;
    // A kernel row inside the map is one run of kw·c values when the view spans the buffer.
    let whole_row = spec.dw == 1
        && input.c_off == 0
        && input.c == input.pitch
        && ix0 >= 0
        && ix0 as usize + spec.kw <= input.w;
    let run = spec.kw * c;
    for ky in 0..spec.kh {
        let iy = (oy * spec.sh + ky * spec.dh) as isize - spec.pad_t as isize;
        let o = ky * run;
        if iy < 0 || iy as usize >= input.h {
            continue;
        }
        if whole_row {
            copy_short(
                &mut dst[o..o + run],
                input.pixels(iy as usize, ix0 as usize, spec.kw),
            );
            continue;
        }
        for kx in 0..spec.kw {
            let ix = ix0 + (kx * spec.dw) as isize;
            if ix >= 0 && (ix as usize) < input.w {
                copy_short(
                    &mut dst[o + kx * c..o + (kx + 1) * c],
                    input.px(iy as usize, ix as usize),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU can run gives the portable kernel's sums.
    #[test]
    fn kernels_agree() {
        let (k, stride) = (27, 2 * NB);
        let mut rng = crate::rng::Lcg(7);
        let mut next = || rng.signed(0.5);
        let mut vals = [[0f32; MAX_K]; P];
        vals.iter_mut().flatten().for_each(|v| *v = next());
        let w: Vec<f32> = (0..k * stride).map(|_| next()).collect();
        let bias: Vec<f32> = (0..NB).map(|_| next()).collect();
        let mut want = [[0f32; NB]; P];
        block_portable(&vals, &w[NB..], stride, k, &bias, &mut want);
        let kernels = [Kernel::detect(), Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        let kernels = {
            let mut v = kernels.to_vec();
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Kernel::Avx2);
            }
            v
        };
        for kernel in kernels {
            let mut got = [[0f32; NB]; P];
            kernel.block(&vals, &w[NB..], stride, k, &bias, &mut got);
            for (g, e) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - e).abs() <= 1e-5, "{g} vs {e}");
            }
        }
    }
}
