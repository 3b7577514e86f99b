//! Convolutions on AMX tiles without im2col rows (`precision=bf16`). The input map is copied once
//! into a zero-padded bf16 buffer, and every tile of A is loaded straight from that buffer.
//!
//! The padded input is split by stride s into s² phase planes: plane (a, b) holds padded pixels
//! (s·r + a, s·c + b) at row r, column c, rows Ws = Wp / s pixels long. The output is flattened
//! as i = oy·Ws + ox. Tap (ky, kx) of output i then reads pixel i + (ky·dh / s)·Ws + kx·dw / s
//! of plane (ky·dh mod s, kx·dw mod s): 16 consecutive outputs read 16 consecutive pixels, one
//! `tileloadd` for each tap and 32 input channels. The Ws − Wo columns past the map's right edge
//! are computed and thrown away.
//!
//! Work goes in blocks of 32 flattened outputs (two A tiles) that start on a multiple of 16, or
//! of 16 where the next 16 hold no active output. On sparse frames only the blocks holding an
//! output pixel of an active tile are computed, only the input they read is converted, and only
//! the active pixels are written back.

use rayon::prelude::*;

use super::amx::{self, round_up, PackedB, BLOCK_N, STEP_K, TILE_N};
use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// Flattened outputs per unit: one A tile's rows.
const UNIT: usize = 16;
/// Flattened outputs per block: two units.
const ROWS: usize = 2 * UNIT;

/// Whether this path computes the convolution: an ordinary (not grouped or transposed) one with
/// equal strides and at least [`MIN_CIN`] input channels. Fewer channels would be padded to 32,
/// wasting most of each tile.
pub fn applies(spec: &ConvSpec) -> bool {
    !spec.transposed && spec.groups == 1 && spec.sh == spec.sw && spec.cin >= MIN_CIN
}

/// Input channels below which a layer keeps the f32 kernels (a first layer on 3 channels).
pub const MIN_CIN: usize = 16;

/// Channels held per input pixel: the input's, padded to a whole step of K.
fn channels_held(spec: &ConvSpec) -> usize {
    round_up(spec.cin, STEP_K)
}

/// The weights as AMX tiles, K ordered (ky, kx, channel) with the channels padded to a whole
/// step of K, so each step reads one tap's 32 channels of one input pixel.
pub struct InPlaceWeights {
    packed: PackedB,
    cpad: usize,
}

impl InPlaceWeights {
    pub fn new(spec: &ConvSpec) -> Self {
        let (cin, n, taps) = (spec.cin, spec.cout, spec.kh * spec.kw);
        let cpad = channels_held(spec);
        let mut w = vec![0f32; taps * cpad * n];
        for t in 0..taps {
            for c in 0..cin {
                let src = (t * cin + c) * n;
                let dst = (t * cpad + c) * n;
                w[dst..dst + n].copy_from_slice(&spec.weights[src..src + n]);
            }
        }
        InPlaceWeights {
            packed: PackedB::new(&w, taps * cpad, n),
            cpad,
        }
    }

    /// Floats' worth of memory held.
    pub fn floats(&self) -> usize {
        self.packed.floats()
    }
}

/// Where one layer's padded input and flattened output lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub stride: usize,
    /// Padded input height, and the phase planes' row length (padded width / stride).
    pub hp: usize,
    pub ws: usize,
    /// Pixels per phase plane, in whole units: every pixel any block reads.
    pub plane: usize,
    /// The output map's size.
    pub wo: usize,
    pub ho: usize,
    /// Flattened outputs, in whole units.
    pub outputs: usize,
}

impl Layout {
    pub fn new(spec: &ConvSpec, (hi, wi): (usize, usize), (ho, wo): (usize, usize)) -> Self {
        let s = spec.sh;
        let (span_y, span_x) = ((spec.kh - 1) * spec.dh, (spec.kw - 1) * spec.dw);
        let wp = round_up((spec.pad_l + wi).max(s * (wo.max(1) - 1) + span_x + 1), s);
        let hp = (spec.pad_t + hi).max(s * (ho.max(1) - 1) + span_y + 1);
        let ws = wp / s;
        let outputs = round_up(ho * ws, UNIT);
        // A block may start on the last unit and run one unit past the outputs.
        let last_read = outputs + UNIT - 1 + span_y / s * ws + span_x / s;
        Layout {
            stride: s,
            hp,
            ws,
            plane: round_up((hp.div_ceil(s) * ws).max(last_read + 1), UNIT),
            wo,
            ho,
            outputs,
        }
    }

    /// Padded input pixels held (all planes).
    pub fn pixels(&self) -> usize {
        self.stride * self.stride * self.plane
    }

    /// Where tap (ky, kx) of flattened output 0 reads: ky and kx already times the dilation.
    pub fn tap(&self, ky: usize, kx: usize) -> usize {
        let s = self.stride;
        ((ky % s) * s + kx % s) * self.plane + ky / s * self.ws + kx / s
    }

    /// The padded pixel (row, column) held at index `g`, if inside the padded map.
    #[cfg(test)]
    pub fn pixel_at(&self, g: usize) -> Option<(usize, usize)> {
        let s = self.stride;
        let (phase, q) = (g / self.plane, g % self.plane);
        let (py, px) = ((q / self.ws) * s + phase / s, (q % self.ws) * s + phase % s);
        (py < self.hp).then_some((py, px))
    }

    /// The padded pixel (row, column) held at each index from `g` on (`None` past the padded
    /// map), with one division for all of them.
    pub fn pixels_from(&self, g: usize) -> impl Iterator<Item = Option<(usize, usize)>> + '_ {
        let s = self.stride;
        let (mut phase, mut q) = (g / self.plane, g % self.plane);
        let (mut r, mut c) = (q / self.ws, q % self.ws);
        std::iter::from_fn(move || {
            let (py, px) = (r * s + phase / s, c * s + phase % s);
            (q, c) = (q + 1, c + 1);
            if c == self.ws {
                (r, c) = (r + 1, 0);
            }
            if q == self.plane {
                (phase, q, r, c) = (phase + 1, 0, 0, 0);
            }
            Some((py < self.hp).then_some((py, px)))
        })
    }
}

/// Per-frame scratch, sized at construction for the largest layer ([`InPlaceScratch::fit`]).
#[derive(Default)]
pub struct InPlaceScratch {
    /// The padded input in bf16, `cpad` values per pixel.
    input: Vec<u16>,
    /// Per unit of padded input pixels: whether a block reads it.
    read: Vec<bool>,
    /// Per flattened output: whether it is a pixel of an active tile.
    active: Vec<bool>,
    /// Each block to compute: its first flattened output, and its rows (16 or 32).
    blocks: Vec<(usize, usize)>,
    /// Each tap's first held pixel for output 0 ([`Layout::tap`]).
    taps: Vec<usize>,
    /// Byte offset of each step of K (one tap's 32 channels) from a block's first A row.
    steps: Vec<usize>,
}

impl InPlaceScratch {
    /// Grows the buffers to hold a layer of `layout` (at construction: no growth while running).
    pub fn fit(&mut self, spec: &ConvSpec, layout: &Layout) {
        let cpad = channels_held(spec);
        let grow = |n: usize, len: usize| len.max(n);
        // One cache line more, to start the held pixels on a cache line (`aligned`).
        self.input
            .resize(grow(layout.pixels() * cpad + 32, self.input.len()), 0);
        self.read
            .resize(grow(layout.pixels() / UNIT, self.read.len()), false);
        self.active
            .resize(grow(layout.outputs + UNIT, self.active.len()), false);
        let blocks = layout.outputs / UNIT;
        self.blocks
            .reserve(blocks.saturating_sub(self.blocks.len()));
        let taps = spec.kh * spec.kw;
        self.taps.reserve(taps.saturating_sub(self.taps.len()));
        let steps = taps * cpad / STEP_K;
        self.steps.reserve(steps.saturating_sub(self.steps.len()));
    }

    /// Floats' worth of memory held.
    pub fn floats(&self) -> usize {
        let words = |n: usize| n * std::mem::size_of::<usize>() / 4;
        self.input.len() / 2
            + (self.read.len() + self.active.len()) / 4
            + words(2 * self.blocks.capacity() + self.taps.capacity() + self.steps.capacity())
    }
}

/// Computes the output pixels of the given tiles (every tile on a dense frame). `scratch` must
/// have been [`InPlaceScratch::fit`] to this layer; [`amx::available`] must be true.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    spec: &ConvSpec,
    wts: &InPlaceWeights,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
    scratch: &mut InPlaceScratch,
    threads: usize,
) {
    assert!(amx::available(), "the AMX path needs AMX-BF16");
    let l = Layout::new(spec, (input.h, input.w), (output.h, output.w));
    scratch.fit(spec, &l);
    if select(spec, &l, grid, &output, tiles, scratch) {
        convert(spec, &l, &input, wts.cpad, scratch, threads);
        compute(spec, &l, wts, &output, scratch, threads);
    }
}

/// Marks the flattened outputs of the tiles, lists the blocks that hold them, each tap's first
/// pixel and each step of K; false when there is nothing to compute.
fn select(
    spec: &ConvSpec,
    l: &Layout,
    grid: &TileGrid,
    output: &FeatMut,
    tiles: &[u32],
    scratch: &mut InPlaceScratch,
) -> bool {
    let active = &mut scratch.active[..l.outputs + UNIT];
    active.fill(false);
    for &t in tiles {
        let (x0, y0, x1, y1) = output.rect(grid, t);
        for oy in y0..y1 {
            active[oy * l.ws + x0..oy * l.ws + x1].fill(true);
        }
    }
    let blocks = &mut scratch.blocks;
    blocks.clear();
    let mut u = 0;
    let units = l.outputs / UNIT;
    let busy = |u: usize| u < units && active[u * UNIT..(u + 1) * UNIT].contains(&true);
    while u < units {
        if !busy(u) {
            u += 1;
        } else if busy(u + 1) {
            blocks.push((u * UNIT, ROWS));
            u += 2;
        } else {
            blocks.push((u * UNIT, UNIT));
            u += 2;
        }
    }
    let cpad = channels_held(spec);
    let (taps, steps) = (&mut scratch.taps, &mut scratch.steps);
    taps.clear();
    steps.clear();
    for ky in 0..spec.kh {
        for kx in 0..spec.kw {
            let px = l.tap(ky * spec.dh, kx * spec.dw);
            taps.push(px);
            steps.extend((0..cpad / STEP_K).map(|cb| (px * cpad + cb * STEP_K) * 2));
        }
    }
    !blocks.is_empty()
}

/// Converts the padded input that the blocks read to bf16.
fn convert(
    spec: &ConvSpec,
    l: &Layout,
    input: &FeatRef,
    cpad: usize,
    scratch: &mut InPlaceScratch,
    threads: usize,
) {
    let read = &mut scratch.read[..l.pixels() / UNIT];
    read.fill(false);
    for &(b, rows) in &scratch.blocks {
        for &tap in &scratch.taps {
            read[(b + tap) / UNIT..=(b + tap + rows - 1) / UNIT].fill(true);
        }
    }
    let padded = &mut aligned(&mut scratch.input)[..l.pixels() * cpad];
    let per_task = (read.len() / (threads.max(1) * 4)).max(4);
    padded
        .par_chunks_mut(UNIT * cpad * per_task)
        .zip(read.par_chunks(per_task))
        .enumerate()
        .for_each(|(task, (dst, flags))| {
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for (j, &wanted) in flags.iter().enumerate() {
                        if wanted {
                            let unit = task * per_task + j;
                            let dst = &mut dst[j * UNIT * cpad..(j + 1) * UNIT * cpad];
                            convert_unit(spec, l, input, unit, cpad, dst);
                        }
                    }
                },
            )
        });
}

/// Runs the blocks on the tiles and writes their active outputs with bias and activation.
fn compute(
    spec: &ConvSpec,
    l: &Layout,
    wts: &InPlaceWeights,
    output: &FeatMut,
    scratch: &mut InPlaceScratch,
    threads: usize,
) {
    let cpad = wts.cpad;
    let packed = &wts.packed;
    let (n, nbs) = (spec.cout, packed.n_pad / TILE_N);
    let (padded, steps, active) = (
        &*aligned(&mut scratch.input),
        &scratch.steps[..],
        &scratch.active[..],
    );
    let blocks = &scratch.blocks;
    let per_task = (blocks.len() / (threads.max(1) * 4)).max(1);
    blocks.par_chunks(per_task).for_each(|chunk| {
        let mut c = CacheLines([0f32; ROWS * BLOCK_N]);
        // Column blocks outside, so a block of B stays in cache for the task's row blocks.
        for nb in (0..nbs).step_by(BLOCK_N / TILE_N) {
            let (n0, n1) = (nb * TILE_N, (nb * TILE_N + BLOCK_N).min(n));
            // The block's bias, row after row, so bias and activation run over a whole block.
            let mut bias = CacheLines([0f32; ROWS * BLOCK_N]);
            for row in bias.0.chunks_exact_mut(BLOCK_N) {
                row[..n1 - n0].copy_from_slice(&spec.bias[n0..n1]);
            }
            for &(b, rows) in chunk {
                // SAFETY: AMX is available (asserted). The layout holds every pixel a block
                // reads (`Layout::pixels`); B has `steps.len()` steps of `nbs` tiles.
                unsafe {
                    amx::block_in_place(
                        padded[b * cpad..].as_ptr(),
                        cpad * 2,
                        steps,
                        packed.tile(0, nb),
                        nbs * 1024,
                        c.0.as_mut_ptr(),
                        rows == UNIT,
                    )
                };
                crate::simd::vectorized(
                    #[inline(always)]
                    || {
                        let c = &mut c.0[..rows * BLOCK_N];
                        spec.act.apply_bias_inline(c, &bias.0[..rows * BLOCK_N]);
                        let (mut oy, mut ox) = (b / l.ws, b % l.ws);
                        for (row, &on) in c.chunks_exact(BLOCK_N).zip(&active[b..b + rows]) {
                            if on {
                                output.px(oy, ox)[n0..n1].copy_from_slice(&row[..n1 - n0]);
                            }
                            ox += 1;
                            if ox == l.ws {
                                (oy, ox) = (oy + 1, 0);
                            }
                        }
                    },
                );
            }
        }
    });
}

/// The held pixels: `input` from its first cache line on, so every row of an A tile (64 bytes at
/// a multiple of 64 bytes from the start) is one cache line.
fn aligned(input: &mut [u16]) -> &mut [u16] {
    let skip = input.as_ptr().align_offset(64);
    &mut input[skip..]
}

/// A block of C on whole cache lines.
#[repr(align(64))]
struct CacheLines([f32; ROWS * BLOCK_N]);

/// Writes the held pixels [unit·16, unit·16 + 16) in bf16: the view's channels inside the map,
/// zeros in the padding and in channels past `cin`.
#[inline(always)]
fn convert_unit(
    spec: &ConvSpec,
    l: &Layout,
    input: &FeatRef,
    unit: usize,
    cpad: usize,
    dst: &mut [u16],
) {
    for (px, at) in dst.chunks_exact_mut(cpad).zip(l.pixels_from(unit * UNIT)) {
        let (py, pxl) = at.unwrap_or((usize::MAX, usize::MAX));
        let (iy, ix) = (py.wrapping_sub(spec.pad_t), pxl.wrapping_sub(spec.pad_l));
        if iy < input.h && ix < input.w {
            amx::to_bf16(input.px(iy, ix), &mut px[..spec.cin]);
            px[spec.cin..].fill(0);
        } else {
            px.fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::fixture;
    use super::*;
    use crate::model::act::Act;
    use crate::rng::Lcg;

    /// Every tap of every real output reads the padded pixel it should, inside the held planes,
    /// and no two held indices name the same pixel.
    #[test]
    fn layout_places_every_tap_on_its_padded_pixel() {
        let mut rng = Lcg(3);
        for (k, s, d, hi, wi) in [
            (3, 1, 1, 13, 13),
            (3, 2, 1, 52, 52),
            (1, 1, 1, 7, 5),
            (5, 2, 2, 29, 37),
            (1, 2, 1, 9, 9),
        ] {
            let spec = fixture::spec(&mut rng, k, s, (d, d), 16, 16, 1, Act::Identity);
            let what = format!("k{k} s{s} d{d} {hi}x{wi}");
            let (ho, wo) = (
                (hi + 2 * spec.pad_t - (k - 1) * d - 1) / s + 1,
                (wi + 2 * spec.pad_l - (k - 1) * d - 1) / s + 1,
            );
            let l = Layout::new(&spec, (hi, wi), (ho, wo));
            assert!(l.ws >= wo && l.outputs >= ho * l.ws, "{what}");
            for oy in 0..ho {
                for ox in 0..wo {
                    let i = oy * l.ws + ox;
                    for ky in 0..k {
                        for kx in 0..k {
                            let g = i + l.tap(ky * d, kx * d);
                            assert!(g < l.pixels(), "{what}");
                            let want = (s * oy + ky * d, s * ox + kx * d);
                            assert_eq!(l.pixel_at(g), Some(want), "{what}");
                        }
                    }
                }
            }
            let mut seen = std::collections::HashSet::new();
            for (g, walked) in l.pixels_from(0).take(l.pixels()).enumerate() {
                assert_eq!(walked, l.pixel_at(g), "{what}: index {g}");
                if let Some(p) = walked {
                    assert!(seen.insert(p), "{what}: {p:?} twice");
                }
            }
        }
    }

    /// The tile path against im2col + f32 GEMM on operands that bf16 holds exactly (weights and
    /// inputs rounded to bf16 first), so the two differ only in the order of f32 sums: strides,
    /// dilation, 1×1, 3×3 and 5×5 kernels, channel counts that are and are not multiples of 32,
    /// channel views into wider buffers, every tile and scattered tiles. Tiles it does not
    /// compute keep their contents exactly.
    #[test]
    fn in_place_conv_equals_the_f32_path_on_bf16_operands() {
        if !amx::available() {
            println!("SKIPPED: in_place_conv_equals_the_f32_path_on_bf16_operands: no AMX-BF16 on this CPU (or the kernel refused its tiles)");
            return;
        }
        let rounded = |x: f32| amx::f32_of(amx::bf16(x));
        let mut rng = Lcg(22);
        // (k, stride, dilation, cin, cout, activation)
        let cases = [
            (3, 1, 1, 32, 48, Act::LeakyRelu(0.1)),
            (3, 2, 1, 24, 40, Act::Relu),
            (1, 1, 1, 64, 20, Act::Identity),
            (3, 1, 2, 16, 16, Act::Sigmoid),
            (5, 2, 1, 40, 70, Act::Silu),
            (1, 2, 1, 33, 64, Act::Identity),
        ];
        for (k, stride, d, cin, cout, act) in cases {
            let mut spec = fixture::spec(&mut rng, k, stride, (d, d), cin, cout, 1, act);
            spec.weights.iter_mut().for_each(|w| *w = rounded(*w));
            assert!(applies(&spec));
            let maps = fixture::Maps::new(&spec, 5, 3);
            let wts = InPlaceWeights::new(&spec);
            let mut scratch = InPlaceScratch::default();
            fixture::against_gemm_on(
                &spec,
                &maps,
                &mut rng,
                rounded,
                |i, o, tiles| conv(&spec, &wts, &maps.grid, i, o, tiles, &mut scratch, 2),
                |got, want, base, tiles| {
                    let what = format!("k{k} s{stride} d{d} {cin}->{cout} {act:?}, {tiles} tiles");
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
                    assert!(worst < 1e-4, "{what}: worst relative error {worst}");
                },
            );
        }
    }
}

#[cfg(test)]
mod bench {
    use super::super::conv::fixture;
    use super::*;
    use crate::model::act::Act;
    use crate::model::plan::FeatureBuf;
    use crate::rng::Lcg;

    /// `cargo test --release --lib bench_in_place -- --ignored --nocapture`: milliseconds of each
    /// phase of a dense NanoDet-sized layer on two threads (best of 20).
    #[test]
    #[ignore]
    fn bench_in_place() {
        if !amx::available() {
            println!("no AMX");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut rng = Lcg(5);
        for (hw, s, cin, cout) in [
            (104, 1, 32, 32),
            (104, 1, 16, 16),
            (52, 1, 128, 128),
            (26, 2, 128, 128),
            (13, 1, 256, 256),
        ] {
            let spec = fixture::spec(&mut rng, 3, s, (1, 1), cin, cout, 1, Act::LeakyRelu(0.1));
            let (ih, oh) = (hw * s, hw);
            let specs = [
                FeatureBuf {
                    c: cin,
                    h: ih,
                    w: ih,
                    scale: 416 / ih,
                },
                FeatureBuf {
                    c: cout,
                    h: oh,
                    w: oh,
                    scale: 416 / oh,
                },
            ];
            let mut bufs = vec![rng.vec(specs[0].len(), 1.0), vec![0f32; specs[1].len()]];
            let grid = TileGrid::new(416, 416, 32);
            let tiles: Vec<u32> = (0..grid.len() as u32).collect();
            let wts = InPlaceWeights::new(&spec);
            let mut scratch = InPlaceScratch::default();
            let v = |buf, c| crate::model::plan::View { buf, c_off: 0, c };
            let input = FeatRef::new(&bufs, &specs, v(0, cin));
            let output = FeatMut::new(&mut bufs, &specs, v(1, cout));
            let l = Layout::new(&spec, (ih, ih), (oh, oh));
            scratch.fit(&spec, &l);
            let (mut t_sel, mut t_conv, mut t_comp) = (f64::MAX, f64::MAX, f64::MAX);
            pool.install(|| {
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    select(&spec, &l, &grid, &output, &tiles, &mut scratch);
                    t_sel = t_sel.min(t.elapsed().as_secs_f64());
                    let t = std::time::Instant::now();
                    convert(&spec, &l, &input, wts.cpad, &mut scratch, 2);
                    t_conv = t_conv.min(t.elapsed().as_secs_f64());
                    let t = std::time::Instant::now();
                    compute(&spec, &l, &wts, &output, &mut scratch, 2);
                    t_comp = t_comp.min(t.elapsed().as_secs_f64());
                }
            });
            let gmac = (oh * oh * 9 * cin * cout) as f64 / 1e9;
            println!(
                "{hw}x{hw} s{s} {cin}->{cout}: select {:.3} ms, convert {:.3} ms, compute {:.3} ms ({:.0} GMAC/s)",
                t_sel * 1e3,
                t_conv * 1e3,
                t_comp * 1e3,
                gmac / t_comp
            );
        }
    }
}
