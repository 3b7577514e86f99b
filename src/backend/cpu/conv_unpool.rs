//! Transposed convolutions whose kernel equals their stride, without padding, dilation or groups
//! (DBNet's 2×2 stride-2 up-sampling convolutions): every output pixel takes exactly one tap,
//! `out[oy][ox] = b + in[oy / s][ox / s] · W[oy % s][ox % s]`. The generic kernels walk all
//! kh·kw taps of which one is valid and, with few output channels, fill few vector lanes; here
//! each output channel is one dot product over the input channels, vectorised over them.

use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// Output channels up to which this path is used (wider layers fill the generic kernels' lanes).
const MAX_COUT: usize = 8;
/// Lanes of the dot products' partial sums.
const L: usize = 8;

/// Whether a convolution takes this path.
pub fn applies(spec: &ConvSpec) -> bool {
    spec.transposed
        && spec.groups == 1
        && (spec.kh, spec.kw) == (spec.sh, spec.sw)
        && (spec.pad_t, spec.pad_l, spec.dh, spec.dw) == (0, 0, 1, 1)
        && spec.cout <= MAX_COUT
}

/// The weights as one row of `cin` values per (tap, output channel). Made once.
pub struct UnpoolWeights {
    w: Vec<f32>,
}

impl UnpoolWeights {
    pub fn new(spec: &ConvSpec) -> Self {
        let (cin, cout, taps) = (spec.cin, spec.cout, spec.kh * spec.kw);
        let mut w = vec![0f32; taps * cout * cin];
        for tap in 0..taps {
            for ci in 0..cin {
                for c in 0..cout {
                    // The GEMM layout: row (tap, ci), column c.
                    w[(tap * cout + c) * cin + ci] = spec.weights[(tap * cin + ci) * cout + c];
                }
            }
        }
        UnpoolWeights { w }
    }

    /// Floats held (a re-laid-out copy of the layer's weights).
    pub fn floats(&self) -> usize {
        self.w.len()
    }
}

/// Computes the output pixels of the given tiles.
pub fn conv(
    spec: &ConvSpec,
    wts: &UnpoolWeights,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
) {
    let (s_y, s_x, cin, cout) = (spec.sh, spec.sw, spec.cin, spec.cout);
    // The activation over each row at once where the view's pixels are contiguous (one call per
    // pixel costs more than a one-channel dot product).
    let row_act = output.c == output.pitch;
    super::ops::for_each_row(
        grid,
        &output,
        tiles,
        #[inline(always)]
        |oy, x0, x1| {
            let (iy, ky) = (oy / s_y, oy % s_y);
            for ox in x0..x1 {
                let (ix, kx) = (ox / s_x, ox % s_x);
                let dst = output.px(oy, ox);
                dst.copy_from_slice(&spec.bias);
                // Output rows or columns past in·s (output padding) take no tap.
                if iy < input.h && ix < input.w {
                    let src = input.px(iy, ix);
                    let tap = ky * spec.kw + kx;
                    for (c, d) in dst.iter_mut().enumerate() {
                        let w = &wts.w[(tap * cout + c) * cin..][..cin];
                        *d += dot(src, w);
                    }
                }
                if !row_act {
                    spec.act.apply_slice(dst);
                }
            }
            if row_act {
                spec.act.apply_slice(output.pixels(oy, x0, x1 - x0));
            }
        },
    );
}

/// Σ a[i]·b[i], in L partial sums (which vectorise) added at the end.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let (ac, ar) = a.split_at(a.len() / L * L);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(L).zip(bc.chunks_exact(L)) {
        for j in 0..L {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}
