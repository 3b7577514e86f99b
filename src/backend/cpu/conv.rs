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

/// Runs `f(oy, ox, row)` for every output pixel of the tiles (tiles in parallel), with `row` its
/// row in the gathered matrix as laid out by `tile_offsets`.
fn for_each_gathered_row(
    grid: &TileGrid,
    output: &FeatMut,
    tiles: &[u32],
    offsets: &[usize],
    f: impl Fn(usize, usize, usize) + Sync,
) {
    tiles
        .par_iter()
        .zip(offsets.par_iter())
        .for_each(|(&t, &row0)| {
            let (x0, y0, x1, y1) = output.rect(grid, t);
            let mut row = row0;
            for oy in y0..y1 {
                for ox in x0..x1 {
                    f(oy, ox, row);
                    row += 1;
                }
            }
        });
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
        if windowed(spec) && input.w >= WINDOWED_MIN_WIDTH {
            conv_dense_windowed(spec, input, output, scratch_a, scratch_c, threads);
        } else {
            conv_dense(spec, input, output, scratch_a, threads);
        }
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
        for_each_gathered_row(grid, &output, tiles, offsets, |oy, ox, row| {
            // SAFETY: each tile owns rows [row0, row0 + its pixel count).
            let dst = unsafe { a.slice(row * k, k) };
            gather_row(spec, &input, g * cig, cig, oy, ox, dst);
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
                false,
                None,
            )
        };
        let c = &*scratch_c;
        let bias = &spec.bias[g * n..(g + 1) * n];
        for_each_gathered_row(grid, &output, tiles, offsets, |oy, ox, row| {
            let dst = &mut output.px(oy, ox)[g * n..(g + 1) * n];
            dst.copy_from_slice(&c[row * n..(row + 1) * n]);
            spec.act.apply_bias(dst, bias);
        });
    }
}

/// C (m×n, row stride `dst_rs`) = A (m×k, row stride `lhs_rs`) × B (k×n, contiguous), rows split
/// evenly across `threads` rayon tasks (each a single-threaded GEMM). Splitting rows scales better
/// than the GEMM's own parallelism for the narrow N (16–64 channels) most layers have. Each task
/// then runs `epilogue(r0, r1)` on its rows while they are still in its cache.
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
    accumulate: bool,
    epilogue: Option<&(dyn Fn(usize, usize) + Sync)>,
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
                accumulate,
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
        if let Some(f) = epilogue {
            f(r0, r1);
        }
    });
}

/// Stride-1 k×k convolutions with "same" padding can skip im2col: on a zero-padded copy of the
/// input, the k·C values of one kernel row for consecutive output pixels are consecutive windows of
/// memory, so each kernel row is one GEMM whose A rows overlap (row stride C).
pub fn windowed(spec: &ConvSpec) -> bool {
    let k = spec.kh;
    !spec.transposed
        && spec.groups == 1
        && k >= 3
        && spec.kw == k
        && (spec.sh, spec.sw, spec.dh, spec.dw) == (1, 1, 1, 1)
        && spec.pad_t == (k - 1) / 2
        && spec.pad_l == (k - 1) / 2
}

/// Narrower maps keep im2col: their 2p dropped columns per row and small GEMMs cost more than the
/// gather saves (measured on NanoDet: a gain at 104 and 52 pixels, a loss at 13).
const WINDOWED_MIN_WIDTH: usize = 40;

/// Scratch (padded input, accumulator) a windowed convolution over an h×w map needs.
pub fn windowed_scratch(spec: &ConvSpec, h: usize, w: usize) -> (usize, usize) {
    let p = (spec.kh - 1) / 2;
    (
        (h + 2 * p) * (w + 2 * p) * spec.cin,
        h * (w + 2 * p) * spec.cout,
    )
}

fn conv_dense_windowed(
    spec: &ConvSpec,
    input: FeatRef,
    output: FeatMut,
    scratch_a: &mut [f32],
    scratch_c: &mut [f32],
    threads: usize,
) {
    let (k, c, n) = (spec.kh, spec.cin, spec.cout);
    let p = (k - 1) / 2;
    let (h, w) = (input.h, input.w);
    let wp = w + 2 * p;
    let (need_a, need_c) = windowed_scratch(spec, h, w);
    assert!(
        scratch_a.len() >= need_a && scratch_c.len() >= need_c,
        "scratch too small"
    );
    let padded = &mut scratch_a[..need_a];
    padded
        .par_chunks_mut(wp * c)
        .enumerate()
        .for_each(|(yy, row)| {
            if yy < p || yy >= h + p {
                row.fill(0.0);
                return;
            }
            row[..p * c].fill(0.0);
            row[(w + p) * c..].fill(0.0);
            for x in 0..w {
                row[(x + p) * c..(x + p + 1) * c].copy_from_slice(input.px(yy - p, x));
            }
        });
    // Virtual output pixel i = y·wp + x; the 2p columns past each row's end are computed and dropped.
    let m = (h - 1) * wp + w;
    let acc = SharedMut(scratch_c.as_mut_ptr());
    // Virtual rows [r0, r1) → output pixels, with bias and activation (after the last kernel row).
    let store = move |r0: usize, r1: usize| {
        for i in r0..r1 {
            let (y, x) = (i / wp, i % wp);
            if x < w {
                let dst = output.px(y, x);
                // SAFETY: row i of the accumulator belongs to this task.
                dst.copy_from_slice(unsafe { acc.slice(i * n, n) });
                spec.act.apply_bias(dst, &spec.bias);
            }
        }
    };
    for ky in 0..k {
        let rhs = &spec.weights[ky * k * c * n..(ky + 1) * k * c * n];
        // SAFETY: A rows start at padded[(i + ky·wp)·c] and span k·c values: the last one ends at
        // ((h-1+ky)·wp + w-1 + k)·c ≤ padded.len(); C is m×n.
        unsafe {
            gemm_rows(
                m,
                n,
                k * c,
                scratch_c.as_mut_ptr(),
                n,
                padded.as_ptr().add(ky * wp * c),
                c,
                rhs.as_ptr(),
                threads,
                ky > 0,
                (ky == k - 1).then_some(&store as &(dyn Fn(usize, usize) + Sync)),
            )
        };
    }
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
        let bias = &spec.bias[g * n..(g + 1) * n];
        let ow = output.w;
        let epilogue = move |r0: usize, r1: usize| {
            for r in r0..r1 {
                spec.act
                    .apply_bias(&mut output.px(r / ow, r % ow)[g * n..(g + 1) * n], bias);
            }
        };
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
                false,
                Some(&epilogue),
            )
        };
    }
}

/// The input coordinate that kernel tap `k` of output coordinate `o` reads along one axis, or a
/// negative value where there is none (a transposed convolution's taps that fall between inputs).
#[inline(always)]
pub(super) fn input_index(
    o: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    transposed: bool,
) -> isize {
    if transposed {
        let num = o as isize + pad as isize - (k * dilation) as isize;
        if num < 0 || num % stride as isize != 0 {
            -1
        } else {
            num / stride as isize
        }
    } else {
        (o * stride + k * dilation) as isize - pad as isize
    }
}

/// An element of a gathered im2col matrix: f32 as is, or bf16 bits (the AMX path).
pub trait Gathered: Copy + Default {
    /// `dst` = `src`, converted.
    fn store(dst: &mut [Self], src: &[f32]);
}

impl Gathered for f32 {
    #[inline(always)]
    fn store(dst: &mut [f32], src: &[f32]) {
        copy_short(dst, src)
    }
}

impl Gathered for u16 {
    #[inline(always)]
    fn store(dst: &mut [u16], src: &[f32]) {
        debug_assert_eq!(dst.len(), src.len());
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = super::amx::bf16(s);
        }
    }
}

/// Writes the im2col row of output pixel (oy, ox): for each kernel tap, `cig` input channels
/// starting at `c0` (zeros outside the map).
#[inline]
pub fn gather_row<T: Gathered>(
    spec: &ConvSpec,
    input: &FeatRef,
    c0: usize,
    cig: usize,
    oy: usize,
    ox: usize,
    dst: &mut [T],
) {
    let mut o = 0;
    // Without dilation or transposition, a kernel row's taps are consecutive input pixels: where
    // they all lie inside the map, their channels are one copy when the view spans every channel.
    let ix0 = input_index(ox, 0, spec.sw, spec.dw, spec.pad_l, spec.transposed);
    let row_copy = !spec.transposed
        && spec.dw == 1
        && c0 == 0
        && input.c_off == 0
        && cig == input.c
        && input.c == input.pitch
        && ix0 >= 0
        && ix0 as usize + spec.kw <= input.w;
    let run = spec.kw * cig;
    for ky in 0..spec.kh {
        let iy = input_index(oy, ky, spec.sh, spec.dh, spec.pad_t, spec.transposed);
        if row_copy {
            let d = &mut dst[o..o + run];
            if iy >= 0 && (iy as usize) < input.h {
                T::store(d, input.pixels(iy as usize, ix0 as usize, spec.kw));
            } else {
                d.fill(T::default());
            }
            o += run;
            continue;
        }
        for kx in 0..spec.kw {
            let ix = input_index(ox, kx, spec.sw, spec.dw, spec.pad_l, spec.transposed);
            let d = &mut dst[o..o + cig];
            if iy >= 0 && ix >= 0 && (iy as usize) < input.h && (ix as usize) < input.w {
                T::store(d, &input.px(iy as usize, ix as usize)[c0..c0 + cig]);
            } else {
                d.fill(T::default());
            }
            o += cig;
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs im2col copies (a first layer's 3–9 values), where
/// a `memcpy` call costs more than the copy: overlapping fixed-size moves instead.
#[inline(always)]
pub fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert_eq!(n, src.len());
    if n >= 16 {
        dst.copy_from_slice(src);
    } else if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
}

/// Depthwise convolution: per output pixel, 16 channels at a time in a register-sized
/// accumulator over the taps inside the map (compiled for the CPU's widest vectors).
fn depthwise(spec: &ConvSpec, grid: &TileGrid, input: FeatRef, output: FeatMut, tiles: &[u32]) {
    const B: usize = 16;
    let c = spec.cin;
    super::ops::for_each_row(
        grid,
        &output,
        tiles,
        #[inline(always)]
        |oy, x0, x1| {
            // The kernel rows inside the map.
            let rows = (0..spec.kh).filter_map(|ky| {
                let iy = input_index(oy, ky, spec.sh, spec.dh, spec.pad_t, false);
                (iy >= 0 && (iy as usize) < input.h).then_some((ky, iy as usize))
            });
            for ox in x0..x1 {
                // The kernel columns inside the map: ix = ox·sw + kx·dw − pad_l ∈ [0, w).
                let base = (ox * spec.sw) as isize - spec.pad_l as isize;
                let dw = spec.dw as isize;
                let kw = spec.kw as isize;
                let kx_lo = if base >= 0 {
                    0
                } else {
                    ((-base + dw - 1) / dw).min(kw)
                };
                let kx_hi = ((input.w as isize - base + dw - 1) / dw).clamp(kx_lo, kw);
                let dst = output.px(oy, ox);
                let mut c0 = 0;
                while c0 < c {
                    let n = B.min(c - c0);
                    let mut acc = [0f32; B];
                    acc[..n].copy_from_slice(&spec.bias[c0..c0 + n]);
                    for (ky, iy) in rows.clone() {
                        for kx in kx_lo as usize..kx_hi as usize {
                            let ix = (base + kx as isize * dw) as usize;
                            let x = &input.px(iy, ix)[c0..c0 + n];
                            let w0 = (ky * spec.kw + kx) * c + c0;
                            let w = &spec.weights[w0..w0 + n];
                            if n == B {
                                for j in 0..B {
                                    acc[j] += x[j] * w[j];
                                }
                            } else {
                                for j in 0..n {
                                    acc[j] += x[j] * w[j];
                                }
                            }
                        }
                    }
                    dst[c0..c0 + n].copy_from_slice(&acc[..n]);
                    c0 += n;
                }
                spec.act.apply_slice(dst);
            }
        },
    );
}

/// A test bench for the convolution kernels that stand beside im2col + GEMM (direct, AMX): a
/// convolution with random weights, maps whose tiles it computes, and a run of a kernel and of
/// this module's path from the same random contents.
#[cfg(test)]
pub(super) mod fixture {
    use super::*;
    use crate::mask::TileGrid;
    use crate::model::act::Act;
    use crate::model::plan::{FeatureBuf, View};
    use crate::rng::Lcg;

    /// A k×k convolution of `stride` and dilation (dh, dw), `cin` → `cout` in `groups`, "same"
    /// padding, random weights and bias.
    #[allow(clippy::too_many_arguments)]
    pub fn spec(
        rng: &mut Lcg,
        k: usize,
        stride: usize,
        (dh, dw): (usize, usize),
        cin: usize,
        cout: usize,
        groups: usize,
        act: Act,
    ) -> ConvSpec {
        ConvSpec {
            kh: k,
            kw: k,
            sh: stride,
            sw: stride,
            dh,
            dw,
            pad_t: (k - 1) / 2 * dh,
            pad_l: (k - 1) / 2 * dw,
            cin,
            cout,
            groups,
            transposed: false,
            weights: rng.vec(k * k * (cin / groups) * cout, 0.3),
            bias: rng.vec(cout, 0.5),
            act,
        }
    }

    /// A 37×29 input at scale 2 (image 74×58) holding `extra` channels beside the convolution's
    /// input view (which starts at `c_off`), the output map with 7 more channels than the view
    /// (which starts at 4), and tiles of 8·stride image pixels.
    pub struct Maps {
        pub grid: TileGrid,
        pub specs: [FeatureBuf; 2],
        pub iv: View,
        pub ov: View,
    }

    impl Maps {
        pub fn new(spec: &ConvSpec, extra: usize, c_off: usize) -> Self {
            let (iw, ih, s) = (37, 29, spec.sh);
            let (ow, oh) = ((iw - 1) / s + 1, (ih - 1) / s + 1);
            Maps {
                grid: TileGrid::new(iw * 2, ih * 2, 8 * s),
                specs: [
                    FeatureBuf {
                        c: spec.cin + extra,
                        h: ih,
                        w: iw,
                        scale: 2,
                    },
                    FeatureBuf {
                        c: spec.cout + 7,
                        h: oh,
                        w: ow,
                        scale: 2 * s,
                    },
                ],
                iv: View {
                    buf: 0,
                    c_off,
                    c: spec.cin,
                },
                ov: View {
                    buf: 1,
                    c_off: 4,
                    c: spec.cout,
                },
            }
        }
    }

    /// A dense layer for the benches: a k×k convolution of `stride`, `cin` → `cout`, LeakyReLU,
    /// on an (hw·stride)² input of random values, an hw² output, and every tile of a 416×416
    /// image in tiles of 32.
    pub struct BenchLayer {
        pub spec: ConvSpec,
        pub specs: [FeatureBuf; 2],
        pub bufs: Vec<Vec<f32>>,
        pub grid: TileGrid,
        pub tiles: Vec<u32>,
    }

    impl BenchLayer {
        pub fn new(
            rng: &mut Lcg,
            hw: usize,
            stride: usize,
            k: usize,
            cin: usize,
            cout: usize,
        ) -> Self {
            let spec = self::spec(rng, k, stride, (1, 1), cin, cout, 1, Act::LeakyRelu(0.1));
            let map = |c, side: usize| FeatureBuf {
                c,
                h: side,
                w: side,
                scale: 416 / side,
            };
            let specs = [map(cin, hw * stride), map(cout, hw)];
            let bufs = vec![rng.vec(specs[0].len(), 1.0), vec![0f32; specs[1].len()]];
            let grid = TileGrid::new(416, 416, 32);
            let tiles = (0..grid.len() as u32).collect();
            BenchLayer {
                spec,
                specs,
                bufs,
                grid,
                tiles,
            }
        }

        /// The input and output maps.
        pub fn maps(&mut self) -> (FeatRef, FeatMut) {
            let v = |buf, c| View { buf, c_off: 0, c };
            let (cin, cout) = (self.spec.cin, self.spec.cout);
            let input = FeatRef::new(&self.bufs, &self.specs, v(0, cin));
            (input, FeatMut::new(&mut self.bufs, &self.specs, v(1, cout)))
        }

        /// Multiply-adds per run, in billions.
        pub fn gmac(&self) -> f64 {
            let (o, s) = (&self.specs[1], &self.spec);
            (o.h * o.w * s.kh * s.kw * s.cin * s.cout) as f64 / 1e9
        }
    }

    /// The worst relative error of `got` against `want` (each over max(|want|, 1)) where `want`
    /// changed from `base`; asserts that every other element kept its value and that something
    /// changed. For the `check` of [`against_gemm`].
    pub fn worst_change(got: &[f32], want: &[f32], base: &[f32], what: &str) -> f32 {
        let (mut worst, mut changed) = (0f32, 0);
        for (j, ((g, w), b)) in got.iter().zip(want).zip(base).enumerate() {
            if w == b {
                assert_eq!(g, w, "{what}: element {j} was not to change");
                continue;
            }
            changed += 1;
            worst = worst.max((g - w).abs() / w.abs().max(1.0));
        }
        assert!(changed > 0, "{what}: nothing computed");
        worst
    }

    /// Runs `kernel` and im2col + GEMM on every tile of the grid and on a random 40 % of them,
    /// each time from the same random input and output contents, and hands `check` the output
    /// buffers: (kernel's, GEMM's, as they were before, tiles run).
    pub fn against_gemm(
        spec: &ConvSpec,
        maps: &Maps,
        rng: &mut Lcg,
        kernel: impl FnMut(FeatRef, FeatMut, &[u32]),
        check: impl FnMut(&[f32], &[f32], &[f32], usize),
    ) {
        against_gemm_on(spec, maps, rng, |x| x, kernel, check)
    }

    /// [`against_gemm`] with each input value passed through `value` first.
    pub fn against_gemm_on(
        spec: &ConvSpec,
        maps: &Maps,
        rng: &mut Lcg,
        value: impl Fn(f32) -> f32,
        mut kernel: impl FnMut(FeatRef, FeatMut, &[u32]),
        mut check: impl FnMut(&[f32], &[f32], &[f32], usize),
    ) {
        let (grid, specs, iv, ov) = (&maps.grid, &maps.specs, maps.iv, maps.ov);
        let all: Vec<u32> = (0..grid.len() as u32).collect();
        let some: Vec<u32> = all.iter().copied().filter(|_| rng.unit() < 0.4).collect();
        for tiles in [&all, &some] {
            let mut input = rng.vec(specs[0].len(), 2.0);
            input.iter_mut().for_each(|x| *x = value(*x));
            let base = rng.vec(specs[1].len(), 1.0);
            let mut want = vec![input.clone(), base.clone()];
            let m = specs[1].h * specs[1].w;
            let (mut a, mut c) = (vec![0.0; m * spec.k_per_group()], vec![0.0; m * spec.cout]);
            conv(
                spec,
                grid,
                FeatRef::new(&want, specs, iv),
                FeatMut::new(&mut want, specs, ov),
                tiles,
                &mut Vec::new(),
                &mut a,
                &mut c,
                2,
            );
            let mut got = vec![input, base.clone()];
            kernel(
                FeatRef::new(&got, specs, iv),
                FeatMut::new(&mut got, specs, ov),
                tiles,
            );
            check(&got[1], &want[1], &base, tiles.len());
        }
    }
}
