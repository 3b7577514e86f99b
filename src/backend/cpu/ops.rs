//! Tile-wise kernels for the layers other than convolution.

use rayon::prelude::*;

use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::act::Act;
use crate::model::plan::{BinOp, PoolKind, PoolSpec, ResizeTaps};

/// Runs `f(y, x)` for every output pixel of every active tile (see `for_each_row`).
#[inline]
fn for_each_px<F: Fn(usize, usize) + Sync>(grid: &TileGrid, out: &FeatMut, tiles: &[u32], f: F) {
    for_each_row(
        grid,
        out,
        tiles,
        #[inline(always)]
        |y, x0, x1| {
            for x in x0..x1 {
                f(y, x);
            }
        },
    );
}

/// Runs `f(y, x0, x1)` for every row of every active tile (pixels x0..x1 of row y), tiles in
/// parallel, compiled for the widest vector instructions the CPU has (the closures' loops
/// vectorise to them).
#[inline]
pub(super) fn for_each_row<F: Fn(usize, usize, usize) + Sync>(
    grid: &TileGrid,
    out: &FeatMut,
    tiles: &[u32],
    f: F,
) {
    tiles.par_iter().for_each(|&t| {
        let (x0, y0, x1, y1) = out.rect(grid, t);
        crate::simd::vectorized(
            #[inline(always)]
            || {
                for y in y0..y1 {
                    f(y, x0, x1);
                }
            },
        )
    });
}

pub fn pool(spec: &PoolSpec, grid: &TileGrid, input: FeatRef, out: FeatMut, tiles: &[u32]) {
    for_each_px(
        grid,
        &out,
        tiles,
        #[inline(always)]
        |oy, ox| {
            let dst = out.px(oy, ox);
            // The window's taps inside the map.
            let (iy0, ix0) = (
                (oy * spec.sh) as isize - spec.pad_t as isize,
                (ox * spec.sw) as isize - spec.pad_l as isize,
            );
            let span = |i0: isize, k: usize, n: usize| {
                i0.max(0) as usize..(i0 + k as isize).clamp(0, n as isize) as usize
            };
            let (ys, xs) = (span(iy0, spec.kh, input.h), span(ix0, spec.kw, input.w));
            match spec.kind {
                PoolKind::Max => {
                    // 16 channels at a time in a register-sized array, written once.
                    let mut c0 = 0;
                    while c0 + 16 <= dst.len() {
                        let mut m = [f32::NEG_INFINITY; 16];
                        for iy in ys.clone() {
                            for ix in xs.clone() {
                                let s: &[f32; 16] =
                                    input.px(iy, ix)[c0..c0 + 16].try_into().expect("16");
                                for (a, &b) in m.iter_mut().zip(s) {
                                    *a = a.max(b);
                                }
                            }
                        }
                        dst[c0..c0 + 16].copy_from_slice(&m);
                        c0 += 16;
                    }
                    let rest = &mut dst[c0..];
                    rest.fill(f32::NEG_INFINITY);
                    for iy in ys.clone() {
                        for ix in xs.clone() {
                            let s = &input.px(iy, ix)[c0..];
                            rest.iter_mut().zip(s).for_each(|(d, &s)| *d = d.max(s));
                        }
                    }
                }
                PoolKind::Avg(include_pad) => {
                    dst.fill(0.0);
                    for iy in ys.clone() {
                        for ix in xs.clone() {
                            let s = input.px(iy, ix);
                            dst.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
                        }
                    }
                    let n = if include_pad {
                        spec.kh * spec.kw
                    } else {
                        (ys.len() * xs.len()).max(1)
                    };
                    let inv = 1.0 / n as f32;
                    dst.iter_mut().for_each(|d| *d *= inv);
                }
            }
        },
    );
}

pub fn resize(
    ty: &ResizeTaps,
    tx: &ResizeTaps,
    grid: &TileGrid,
    input: FeatRef,
    out: FeatMut,
    tiles: &[u32],
) {
    for_each_px(
        grid,
        &out,
        tiles,
        #[inline(always)]
        |oy, ox| {
            let dst = out.px(oy, ox);
            let (y0, y1, fy) = (ty.i0[oy] as usize, ty.i1[oy] as usize, ty.frac[oy]);
            let (x0, x1, fx) = (tx.i0[ox] as usize, tx.i1[ox] as usize, tx.frac[ox]);
            if fy == 0.0 && fx == 0.0 {
                dst.copy_from_slice(input.px(y0, x0));
                return;
            }
            let (a, b, c, d) = (
                input.px(y0, x0),
                input.px(y0, x1),
                input.px(y1, x0),
                input.px(y1, x1),
            );
            let (w00, w01, w10, w11) = (
                (1.0 - fy) * (1.0 - fx),
                (1.0 - fy) * fx,
                fy * (1.0 - fx),
                fy * fx,
            );
            for i in 0..dst.len() {
                dst[i] = a[i] * w00 + b[i] * w01 + c[i] * w10 + d[i] * w11;
            }
        },
    );
}

pub fn affine(
    scale: &[f32],
    shift: &[f32],
    act: Act,
    grid: &TileGrid,
    input: FeatRef,
    out: FeatMut,
    tiles: &[u32],
) {
    for_each_px(
        grid,
        &out,
        tiles,
        #[inline(always)]
        |y, x| {
            let (dst, src) = (out.px(y, x), input.px(y, x));
            for i in 0..dst.len() {
                dst[i] = src[i] * scale[i] + shift[i];
            }
            act.apply_slice(dst);
        },
    );
}

pub fn unary(act: Act, grid: &TileGrid, input: FeatRef, out: FeatMut, tiles: &[u32]) {
    if out.c == out.pitch && input.c == input.pitch {
        for_each_row(
            grid,
            &out,
            tiles,
            #[inline(always)]
            |y, x0, x1| {
                let dst = out.pixels(y, x0, x1 - x0);
                dst.copy_from_slice(input.pixels(y, x0, x1 - x0));
                act.apply_slice(dst);
            },
        );
        return;
    }
    for_each_px(
        grid,
        &out,
        tiles,
        #[inline(always)]
        |y, x| {
            let dst = out.px(y, x);
            dst.copy_from_slice(input.px(y, x));
            act.apply_slice(dst);
        },
    );
}

/// The right operand of a binary layer, resolved for the kernel.
pub enum Rhs<'a> {
    Map(FeatRef),
    Channels(&'a [f32]),
}

#[allow(clippy::too_many_arguments)]
pub fn binary(
    op: BinOp,
    rhs: Rhs,
    act: Act,
    grid: &TileGrid,
    input: FeatRef,
    out: FeatMut,
    tiles: &[u32],
) {
    // Whole-pixel views with a same-shaped map or a scalar operand: one run per tile row.
    let whole = |c: usize, pitch: usize| c == pitch && c == out.c;
    let runs = whole(out.c, out.pitch)
        && whole(input.c, input.pitch)
        && match &rhs {
            Rhs::Map(m) => whole(m.c, m.pitch),
            Rhs::Channels(v) => v.len() == 1,
        };
    if runs {
        for_each_row(
            grid,
            &out,
            tiles,
            #[inline(always)]
            |y, x0, x1| {
                let n = x1 - x0;
                let (dst, a) = (out.pixels(y, x0, n), input.pixels(y, x0, n));
                match &rhs {
                    Rhs::Map(m) => binary_pairs(op, dst, a, m.pixels(y, x0, n)),
                    Rhs::Channels(v) => binary_scalar(op, dst, a, v[0]),
                }
                act.apply_slice(dst);
            },
        );
        return;
    }
    for_each_px(
        grid,
        &out,
        tiles,
        #[inline(always)]
        |y, x| {
            let (dst, a) = (out.px(y, x), input.px(y, x));
            let b = match &rhs {
                Rhs::Map(m) => m.px(y, x),
                Rhs::Channels(c) => c,
            };
            if b.len() == 1 {
                binary_scalar(op, dst, a, b[0]);
            } else {
                binary_pairs(op, dst, a, b);
            }
            act.apply_slice(dst);
        },
    );
}

/// `dst = a op v`; the op is matched once so each loop vectorises.
#[inline(always)]
fn binary_scalar(op: BinOp, dst: &mut [f32], a: &[f32], v: f32) {
    let it = dst.iter_mut().zip(a);
    match op {
        BinOp::Add => it.for_each(|(d, &p)| *d = p + v),
        BinOp::Sub => it.for_each(|(d, &p)| *d = p - v),
        BinOp::Mul => it.for_each(|(d, &p)| *d = p * v),
        BinOp::Div => it.for_each(|(d, &p)| *d = p / v),
    }
}

/// `dst = a op b` element by element.
#[inline(always)]
fn binary_pairs(op: BinOp, dst: &mut [f32], a: &[f32], b: &[f32]) {
    let pairs = dst.iter_mut().zip(a.iter().zip(b));
    match op {
        BinOp::Add => pairs.for_each(|(d, (&p, &q))| *d = p + q),
        BinOp::Sub => pairs.for_each(|(d, (&p, &q))| *d = p - q),
        BinOp::Mul => pairs.for_each(|(d, (&p, &q))| *d = p * q),
        BinOp::Div => pairs.for_each(|(d, (&p, &q))| *d = p / q),
    }
}

pub fn gather(perm: &[usize], grid: &TileGrid, input: FeatRef, out: FeatMut, tiles: &[u32]) {
    let identity = perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == input.c;
    for_each_px(
        grid,
        &out,
        tiles,
        #[inline(always)]
        |y, x| {
            let (dst, src) = (out.px(y, x), input.px(y, x));
            if identity {
                dst.copy_from_slice(src);
            } else {
                for (d, &p) in dst.iter_mut().zip(perm) {
                    *d = src[p];
                }
            }
        },
    );
}
