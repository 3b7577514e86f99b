//! Region-sparse convolution: gather the active tiles' im2col rows (halo read from the input cache)
//! into one matrix, one GEMM per group, scatter into the output cache with bias and activation.
//! Depthwise convolutions are computed directly per pixel, vectorised over channels.

use rayon::prelude::*;

use super::feature::{FeatMut, FeatRef, SharedMut};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// Pixel-row offsets of each active tile in the gathered matrix; returns the total rows.
pub fn tile_offsets(
    grid: &TileGrid,
    out: &FeatMut,
    tiles: &[u32],
    offsets: &mut Vec<usize>,
) -> usize {
    offsets.clear();
    let mut m = 0;
    for &t in tiles {
        offsets.push(m);
        let (x0, y0, x1, y1) = out.rect(grid, t);
        m += (x1 - x0) * (y1 - y0);
    }
    m
}

#[allow(clippy::too_many_arguments)]
pub fn conv(
    spec: &ConvSpec,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
    offsets: &mut Vec<usize>,
    scratch_a: &mut [f32],
    scratch_c: &mut [f32],
    threads: usize,
) {
    if tiles.is_empty() {
        return;
    }
    if spec.depthwise() {
        depthwise(spec, grid, input, output, tiles);
        return;
    }
    if tiles.len() == grid.len() {
        conv_dense(spec, input, output, scratch_a, threads);
        return;
    }
    let m = tile_offsets(grid, &output, tiles, offsets);
    let k = spec.k_per_group();
    let n = spec.n_per_group();
    let cig = spec.cin / spec.groups;
    for g in 0..spec.groups {
        let a = SharedMut(scratch_a.as_mut_ptr());
        assert!(
            scratch_a.len() >= m * k && scratch_c.len() >= m * n,
            "scratch too small"
        );
        tiles
            .par_iter()
            .zip(offsets.par_iter())
            .for_each(|(&t, &row0)| {
                let (x0, y0, x1, y1) = output.rect(grid, t);
                let mut row = row0;
                for oy in y0..y1 {
                    for ox in x0..x1 {
                        // SAFETY: each tile owns rows [row0, row0 + its pixel count).
                        let dst = unsafe { a.slice(row * k, k) };
                        gather_row(spec, &input, g * cig, cig, oy, ox, dst);
                        row += 1;
                    }
                }
            });
        let w = &spec.weights[g * k * n..(g + 1) * k * n];
        // SAFETY: sizes checked above; row-major A (m×k), B (k×n), C (m×n).
        unsafe {
            gemm_rows(
                m,
                n,
                k,
                scratch_c.as_mut_ptr(),
                n,
                scratch_a.as_ptr(),
                k,
                w.as_ptr(),
                threads,
            )
        };
        let c = &*scratch_c;
        let bias = &spec.bias[g * n..(g + 1) * n];
        tiles
            .par_iter()
            .zip(offsets.par_iter())
            .for_each(|(&t, &row0)| {
                let (x0, y0, x1, y1) = output.rect(grid, t);
                let mut row = row0;
                for oy in y0..y1 {
                    for ox in x0..x1 {
                        let dst = &mut output.px(oy, ox)[g * n..(g + 1) * n];
                        dst.copy_from_slice(&c[row * n..(row + 1) * n]);
                        spec.act.apply_bias(dst, bias);
                        row += 1;
                    }
                }
            });
    }
}

/// C (m×n, row stride `dst_rs`) = A (m×k, row stride `lhs_rs`) × B (k×n, contiguous), rows split
/// evenly across `threads` rayon tasks (each a single-threaded GEMM). Splitting rows scales better
/// than the GEMM's own parallelism for the narrow N (16–64 channels) most layers have.
///
/// # Safety
/// The pointers must cover the given shapes and strides; C must not overlap A or B.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rows(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    threads: usize,
) {
    let tasks = if threads > 1 && m * n * k > 1 << 16 {
        threads.min(m)
    } else {
        1
    };
    let rows = m.div_ceil(tasks);
    let (dst, lhs, rhs) = (dst as usize, lhs as usize, rhs as usize);
    (0..tasks).into_par_iter().for_each(|t| {
        let r0 = t * rows;
        let r1 = (r0 + rows).min(m);
        if r0 >= r1 {
            return;
        }
        // SAFETY: each task writes its own rows of C.
        unsafe {
            gemm::gemm(
                r1 - r0,
                n,
                k,
                (dst as *mut f32).add(r0 * dst_rs),
                1,
                dst_rs as isize,
                false,
                (lhs as *const f32).add(r0 * lhs_rs),
                1,
                lhs_rs as isize,
                rhs as *const f32,
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

/// Every tile active: rows in image order, the GEMM writes straight into the output view, and a
/// 1×1 stride-1 convolution reads its input view in place (no gather at all).
fn conv_dense(
    spec: &ConvSpec,
    input: FeatRef,
    output: FeatMut,
    scratch_a: &mut [f32],
    threads: usize,
) {
    let m = output.h * output.w;
    let k = spec.k_per_group();
    let n = spec.n_per_group();
    let cig = spec.cin / spec.groups;
    let pointwise = spec.kh == 1
        && spec.kw == 1
        && spec.sh == 1
        && spec.sw == 1
        && spec.pad_t == 0
        && spec.pad_l == 0
        && !spec.transposed;
    for g in 0..spec.groups {
        let (lhs, lhs_rs) = if pointwise {
            // SAFETY: the view's channels [c_off + g·cig, +cig) at every pixel are in bounds.
            (
                unsafe { input.ptr.add(input.c_off + g * cig) },
                input.pitch as isize,
            )
        } else {
            assert!(scratch_a.len() >= m * k, "scratch too small");
            let w = output.w;
            scratch_a[..m * k]
                .par_chunks_mut(w * k)
                .enumerate()
                .for_each(|(oy, rows)| {
                    for ox in 0..w {
                        gather_row(
                            spec,
                            &input,
                            g * cig,
                            cig,
                            oy,
                            ox,
                            &mut rows[ox * k..(ox + 1) * k],
                        );
                    }
                });
            (scratch_a.as_ptr(), k as isize)
        };
        let wt = &spec.weights[g * k * n..(g + 1) * k * n];
        // SAFETY: dst rows are the output view's pixels (row stride = pitch), n channels each.
        unsafe {
            gemm_rows(
                m,
                n,
                k,
                output.ptr.add(output.c_off + g * n),
                output.pitch,
                lhs,
                lhs_rs as usize,
                wt.as_ptr(),
                threads,
            )
        };
        let bias = &spec.bias[g * n..(g + 1) * n];
        (0..output.h).into_par_iter().for_each(|y| {
            for x in 0..output.w {
                spec.act
                    .apply_bias(&mut output.px(y, x)[g * n..(g + 1) * n], bias);
            }
        });
    }
}

/// Writes the im2col row of output pixel (oy, ox): for each kernel tap, `cig` input channels
/// starting at `c0` (zeros outside the map).
#[inline]
fn gather_row(
    spec: &ConvSpec,
    input: &FeatRef,
    c0: usize,
    cig: usize,
    oy: usize,
    ox: usize,
    dst: &mut [f32],
) {
    let mut o = 0;
    for ky in 0..spec.kh {
        let iy = if spec.transposed {
            let num = oy as isize + spec.pad_t as isize - (ky * spec.dh) as isize;
            if num < 0 || num % spec.sh as isize != 0 {
                -1
            } else {
                num / spec.sh as isize
            }
        } else {
            (oy * spec.sh + ky * spec.dh) as isize - spec.pad_t as isize
        };
        for kx in 0..spec.kw {
            let ix = if spec.transposed {
                let num = ox as isize + spec.pad_l as isize - (kx * spec.dw) as isize;
                if num < 0 || num % spec.sw as isize != 0 {
                    -1
                } else {
                    num / spec.sw as isize
                }
            } else {
                (ox * spec.sw + kx * spec.dw) as isize - spec.pad_l as isize
            };
            let d = &mut dst[o..o + cig];
            if iy >= 0 && ix >= 0 && (iy as usize) < input.h && (ix as usize) < input.w {
                d.copy_from_slice(&input.px(iy as usize, ix as usize)[c0..c0 + cig]);
            } else {
                d.fill(0.0);
            }
            o += cig;
        }
    }
}

fn depthwise(spec: &ConvSpec, grid: &TileGrid, input: FeatRef, output: FeatMut, tiles: &[u32]) {
    let c = spec.cin;
    tiles.par_iter().for_each(|&t| {
        let (x0, y0, x1, y1) = output.rect(grid, t);
        for oy in y0..y1 {
            for ox in x0..x1 {
                let acc = output.px(oy, ox);
                acc.copy_from_slice(&spec.bias);
                for ky in 0..spec.kh {
                    let iy = (oy * spec.sh + ky * spec.dh) as isize - spec.pad_t as isize;
                    if iy < 0 || iy as usize >= input.h {
                        continue;
                    }
                    for kx in 0..spec.kw {
                        let ix = (ox * spec.sw + kx * spec.dw) as isize - spec.pad_l as isize;
                        if ix < 0 || ix as usize >= input.w {
                            continue;
                        }
                        let x = input.px(iy as usize, ix as usize);
                        let w = &spec.weights[(ky * spec.kw + kx) * c..(ky * spec.kw + kx + 1) * c];
                        for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                            *a += xv * wv;
                        }
                    }
                }
                spec.act.apply_slice(acc);
            }
        }
    });
}
