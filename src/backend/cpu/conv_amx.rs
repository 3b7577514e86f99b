//! Convolutions on AMX tiles (`precision=bf16`): the active tiles' im2col rows are gathered in
//! bf16, multiplied by the layer's bf16 weights on the tiles with f32 sums, and scattered back
//! with bias and activation. Rows are cut into tasks of whole 32-row blocks; each task gathers,
//! multiplies and scatters its rows while they are in its cache.

use rayon::prelude::*;

use super::amx::{self, round_up, PackedB, BLOCK_M};
use super::conv::{gather_row, tile_offsets};
use super::feature::{FeatMut, FeatRef, SharedMut};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// Bytes of gathered rows and products one task works on (within a core's L2 cache).
const TASK_BYTES: usize = 192 << 10;
const MAX_TASK_ROWS: usize = 1024;

/// Whether the AMX path computes this convolution: not depthwise (one channel per group: no
/// product to speak of), and with a weight matrix (K × N per group) of at least [`MIN_WEIGHTS`]
/// values. Smaller ones spend more on gathering rows than the tiles save, and keep the f32
/// kernels.
pub fn applies(spec: &ConvSpec) -> bool {
    !spec.depthwise() && spec.k_per_group() * spec.n_per_group() >= MIN_WEIGHTS
}

/// Measured on NanoDet's layers (2 threads, BENCHMARKS.md): at K·N = 1152·128 and above the
/// tiles run 1.4–1.6× the direct f32 kernel's speed; 1152·64 and 576·64 break even; 576·32 and
/// 288·32 run at half its speed.
pub const MIN_WEIGHTS: usize = 1 << 16;

/// Per group, the weights as AMX tiles.
pub struct AmxWeights {
    groups: Vec<PackedB>,
}

impl AmxWeights {
    pub fn new(spec: &ConvSpec) -> Self {
        let (k, n) = (spec.k_per_group(), spec.n_per_group());
        AmxWeights {
            groups: (0..spec.groups)
                .map(|g| PackedB::new(&spec.weights[g * k * n..(g + 1) * k * n], k, n))
                .collect(),
        }
    }

    /// Floats' worth of memory held.
    pub fn floats(&self) -> usize {
        self.groups.iter().map(PackedB::floats).sum()
    }
}

/// Scratch (bf16 gathered rows, f32 products) for every pixel of an h×w output map.
pub fn scratch(spec: &ConvSpec, h: usize, w: usize) -> (usize, usize) {
    let m = round_up(h * w, BLOCK_M);
    let (k, n) = amx::padded(spec.k_per_group(), spec.n_per_group());
    (m * k, m * n)
}

/// Computes the output pixels of the given tiles (every tile on a dense frame). `scratch_a` and
/// `scratch_c` must hold [`scratch`]'s sizes for the output map; [`amx::available`] must be true.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    spec: &ConvSpec,
    wts: &AmxWeights,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
    offsets: &mut Vec<usize>,
    scratch_a: &mut [u16],
    scratch_c: &mut [f32],
    threads: usize,
) {
    assert!(amx::available(), "the AMX path needs AMX-BF16");
    let m = tile_offsets(grid, &output, tiles, offsets);
    if m == 0 {
        return;
    }
    let offsets = &offsets[..];
    let m_pad = round_up(m, BLOCK_M);
    let (k, n) = (spec.k_per_group(), spec.n_per_group());
    // Every group's weights are padded alike (PackedB::new).
    let (k_pad, n_pad) = amx::padded(k, n);
    assert!(
        scratch_a.len() >= m_pad * k_pad && scratch_c.len() >= m_pad * n_pad,
        "scratch too small"
    );
    // Rows per task: whole blocks whose gathered rows and products fit in a core's L2 cache,
    // and at least two tasks per thread.
    let row_bytes = k_pad * 2 + n_pad * 4;
    let rows = (TASK_BYTES / row_bytes / BLOCK_M * BLOCK_M)
        .clamp(BLOCK_M, MAX_TASK_ROWS)
        .min(round_up(m_pad.div_ceil(threads.max(1) * 2), BLOCK_M));
    let cig = spec.cin / spec.groups;
    for (g, packed) in wts.groups.iter().enumerate() {
        let a = SharedA(scratch_a.as_mut_ptr());
        let c = SharedMut(scratch_c.as_mut_ptr());
        let bias = &spec.bias[g * n..(g + 1) * n];
        (0..m_pad.div_ceil(rows)).into_par_iter().for_each(|task| {
            let r0 = task * rows;
            let r1 = (r0 + rows).min(m_pad);
            // SAFETY: task `task` alone uses rows [r0, r1) of both scratch areas.
            let (a_rows, c_rows) = unsafe {
                (
                    a.slice(r0 * k_pad, (r1 - r0) * k_pad),
                    c.slice(r0 * n_pad, (r1 - r0) * n_pad),
                )
            };
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for_rows(grid, &output, tiles, offsets, r0, r1.min(m), |oy, ox, r| {
                        let row = &mut a_rows[(r - r0) * k_pad..(r - r0 + 1) * k_pad];
                        gather_row(spec, &input, g * cig, cig, oy, ox, &mut row[..k]);
                        row[k..].fill(0);
                    });
                },
            );
            a_rows[(r1.min(m).max(r0) - r0) * k_pad..].fill(0);
            // SAFETY: AMX is available (asserted); A holds r1 - r0 rows of k_pad values, C as
            // many rows of n_pad floats; r1 - r0 is a multiple of BLOCK_M.
            unsafe {
                amx::gemm(
                    r1 - r0,
                    a_rows.as_ptr(),
                    k_pad,
                    packed,
                    c_rows.as_mut_ptr(),
                    n_pad,
                )
            };
            for_rows(grid, &output, tiles, offsets, r0, r1.min(m), |oy, ox, r| {
                let dst = &mut output.px(oy, ox)[g * n..(g + 1) * n];
                dst.copy_from_slice(&c_rows[(r - r0) * n_pad..(r - r0) * n_pad + n]);
                spec.act.apply_bias(dst, bias);
            });
        });
    }
}

/// Runs `f(oy, ox, row)` for rows [r0, r1) of the gathered matrix, laid out by `tile_offsets`.
fn for_rows(
    grid: &TileGrid,
    output: &FeatMut,
    tiles: &[u32],
    offsets: &[usize],
    r0: usize,
    r1: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    if r0 >= r1 {
        return;
    }
    let mut t = offsets.partition_point(|&o| o <= r0) - 1;
    let mut r = r0;
    while r < r1 && t < tiles.len() {
        let (x0, y0, x1, y1) = output.rect(grid, tiles[t]);
        let w = x1 - x0;
        let mut i = r - offsets[t];
        while i < w * (y1 - y0) && r < r1 {
            f(y0 + i / w, x0 + i % w, r);
            i += 1;
            r += 1;
        }
        t += 1;
    }
}

/// A bf16 scratch pointer shared by tasks that write disjoint row ranges.
#[derive(Clone, Copy)]
struct SharedA(*mut u16);
unsafe impl Send for SharedA {}
unsafe impl Sync for SharedA {}

impl SharedA {
    /// # Safety
    /// The range must be in bounds and not used by any other task at the same time.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [u16] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::fixture;
    use super::*;
    use crate::model::act::Act;
    use crate::rng::Lcg;

    /// The AMX path against im2col + f32 GEMM: strides, groups, 1×1 and 3×3 kernels, channel
    /// views into wider buffers, every tile and scattered tiles. Both compute the same sums of
    /// products; the AMX path's operands are rounded to bf16 (8 significant bits), so outputs
    /// agree to a bf16 tolerance, and tiles it does not compute keep their contents exactly.
    #[test]
    fn amx_conv_equals_the_f32_path_to_bf16_rounding() {
        if !amx::available() {
            println!("SKIPPED: amx_conv_equals_the_f32_path_to_bf16_rounding: no AMX-BF16 on this CPU (or the kernel refused its tiles)");
            return;
        }
        let mut rng = Lcg(21);
        // (k, stride, cin, cout, groups, activation)
        let cases = [
            (3, 1, 32, 48, 1, Act::LeakyRelu(0.1)),
            (3, 2, 24, 40, 1, Act::Relu),
            (1, 1, 64, 20, 1, Act::Identity),
            (3, 1, 32, 32, 2, Act::Sigmoid),
            (3, 1, 3, 16, 1, Act::Silu),
        ];
        for (k, stride, cin, cout, groups, act) in cases {
            let spec = fixture::spec(&mut rng, k, stride, (1, 1), cin, cout, groups, act);
            let maps = fixture::Maps::new(&spec, 5, 3);
            let out = &maps.specs[1];
            let wts = AmxWeights::new(&spec);
            let (sa, sc) = scratch(&spec, out.h, out.w);
            let (mut a16, mut c32) = (vec![0u16; sa], vec![0f32; sc]);
            fixture::against_gemm(
                &spec,
                &maps,
                &mut rng,
                |i, o, tiles| {
                    conv(
                        &spec,
                        &wts,
                        &maps.grid,
                        i,
                        o,
                        tiles,
                        &mut Vec::new(),
                        &mut a16,
                        &mut c32,
                        2,
                    )
                },
                |got, want, base, tiles| {
                    let what =
                        format!("k{k} s{stride} {cin}->{cout} g{groups} {act:?}, {tiles} tiles");
                    // Each product is off by at most ~2⁻⁸ relative; the sum's error grows with
                    // the square root of K for random signs. Outputs here are O(1).
                    let worst = fixture::worst_change(got, want, base, &what);
                    assert!(worst < 0.03, "{what}: worst relative error {worst}");
                },
            );
        }
    }
}
