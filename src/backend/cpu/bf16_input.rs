//! The padded bf16 copy of a convolution's input that the bf16 kernels read in place: AMX tiles
//! (`conv_amx_in_place`) and AVX512-BF16 dot products (`conv_bf16_dot`). The copy is made once
//! per layer and frame, of the pixels the frame's active outputs read.
//!
//! The padded input is split by stride s into s² phase planes: plane (a, b) holds padded pixels
//! (s·r + a, s·c + b) at row r, column c, rows Ws = Wp / s pixels long. The output is flattened
//! as i = oy·Ws + ox. Tap (ky, kx) of output i then reads pixel i + (ky·dh / s)·Ws + kx·dw / s
//! of plane (ky·dh mod s, kx·dw mod s): consecutive outputs read consecutive pixels, and every
//! tap is one offset for all outputs. The Ws − Wo columns past the map's right edge are not
//! real outputs.
//!
//! The AMX kernel computes blocks of 32 flattened outputs (two units of 16) that start on a
//! multiple of 16, or of 16 where the next 16 hold no active output, and the copy holds what
//! those blocks read ([`Reads::Blocks`]). The dot kernel computes the active outputs alone, and
//! the copy holds what they read ([`Reads::Outputs`]).

use rayon::prelude::*;

use super::amx::{self, round_up};
use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// Flattened outputs per unit: one AMX tile's rows.
pub const UNIT: usize = 16;
/// Flattened outputs per block: two units.
pub const ROWS: usize = 2 * UNIT;

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
}

/// Per-frame scratch, sized at construction for the largest layer ([`Bf16Input::fit`]).
#[derive(Default)]
pub struct Bf16Input {
    /// The padded input in bf16, `cpad` values per pixel.
    input: Vec<u16>,
    /// Per padded input pixel: whether the kernel reads it.
    read: Vec<bool>,
    /// Per flattened output: whether it is a pixel of an active tile.
    active: Vec<bool>,
    /// Each block to compute: its first flattened output, and its rows (16 or 32).
    pub blocks: Vec<(usize, usize)>,
    /// The flattened outputs that are pixels of active tiles, in order.
    pub outputs: Vec<u32>,
    /// Each tap's first held pixel for output 0 ([`Layout::tap`]).
    pub taps: Vec<usize>,
    /// The AMX kernel's byte offset of each step of K (one tap's 32 channels) from a block's
    /// first A row.
    pub steps: Vec<usize>,
}

impl Bf16Input {
    /// Grows the buffers to hold a layer of `layout` with `cpad` values per pixel (at
    /// construction: no growth while running).
    pub fn fit(&mut self, spec: &ConvSpec, layout: &Layout, cpad: usize) {
        let grow = |n: usize, len: usize| len.max(n);
        // One cache line more, to start the held pixels on a cache line (`held`).
        self.input
            .resize(grow(layout.pixels() * cpad + 32, self.input.len()), 0);
        self.read
            .resize(grow(layout.pixels(), self.read.len()), false);
        self.active
            .resize(grow(layout.outputs + UNIT, self.active.len()), false);
        let taps = spec.kh * spec.kw;
        reserve(&mut self.blocks, layout.outputs / UNIT);
        reserve(&mut self.outputs, layout.outputs);
        reserve(&mut self.taps, taps);
        reserve(&mut self.steps, taps * cpad.div_ceil(amx::STEP_K));
    }

    /// Floats' worth of memory held.
    pub fn floats(&self) -> usize {
        let words = |n: usize| n * std::mem::size_of::<usize>() / 4;
        self.input.len() / 2
            + (self.read.len() + self.active.len()) / 4
            + self.outputs.capacity()
            + words(2 * self.blocks.capacity() + self.taps.capacity() + self.steps.capacity())
    }

    /// Lays out the layer, lists the outputs of `tiles` and each tap's offset (with
    /// [`Reads::Blocks`], also the blocks holding the outputs), and converts the input that
    /// `reads` names, `cpad` values per pixel. None when there is nothing to compute.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &mut self,
        spec: &ConvSpec,
        grid: &TileGrid,
        input: &FeatRef,
        output: &FeatMut,
        tiles: &[u32],
        cpad: usize,
        reads: Reads,
        threads: usize,
    ) -> Option<Layout> {
        let l = Layout::new(spec, (input.h, input.w), (output.h, output.w));
        self.fit(spec, &l, cpad);
        self.select(spec, &l, grid, output, tiles, reads);
        if self.outputs.is_empty() {
            return None;
        }
        self.convert(spec, &l, input, cpad, reads, threads);
        Some(l)
    }

    /// The held pixels, from the buffer's first cache line on, so that a pixel of 32 channels
    /// (64 bytes, at a multiple of 64 bytes from the start) is one cache line.
    pub fn held(&self) -> &[u16] {
        &self.input[self.input.as_ptr().align_offset(64)..]
    }

    /// Whether flattened output `i` is a pixel of an active tile.
    pub fn active(&self, i: usize) -> bool {
        self.active[i]
    }

    /// Lists and marks the flattened outputs of the tiles (tile by tile, row by row) and lists
    /// each tap's first pixel; with [`Reads::Blocks`], also the blocks holding the outputs.
    fn select(
        &mut self,
        spec: &ConvSpec,
        l: &Layout,
        grid: &TileGrid,
        output: &FeatMut,
        tiles: &[u32],
        reads: Reads,
    ) {
        self.outputs.clear();
        for &t in tiles {
            let (x0, y0, x1, y1) = output.rect(grid, t);
            for oy in y0..y1 {
                self.outputs
                    .extend((oy * l.ws + x0) as u32..(oy * l.ws + x1) as u32);
            }
        }
        let active = &mut self.active[..l.outputs + UNIT];
        active.fill(false);
        for &i in &self.outputs {
            active[i as usize] = true;
        }
        self.taps.clear();
        for ky in 0..spec.kh {
            for kx in 0..spec.kw {
                self.taps.push(l.tap(ky * spec.dh, kx * spec.dw));
            }
        }
        self.blocks.clear();
        if reads == Reads::Blocks {
            self.list_blocks(l);
        }
    }

    /// Lists the blocks of 16 or 32 outputs that hold the marked outputs.
    fn list_blocks(&mut self, l: &Layout) {
        let (active, blocks) = (&self.active, &mut self.blocks);
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
    }

    /// Converts the padded input pixels that `reads` names to bf16.
    fn convert(
        &mut self,
        spec: &ConvSpec,
        l: &Layout,
        input: &FeatRef,
        cpad: usize,
        reads: Reads,
        threads: usize,
    ) {
        let read = &mut self.read[..l.pixels()];
        read.fill(false);
        match reads {
            Reads::Blocks => {
                for &(b, rows) in &self.blocks {
                    for &tap in &self.taps {
                        read[b + tap..b + tap + rows].fill(true);
                    }
                }
            }
            Reads::Outputs => {
                // The active outputs' marks, shifted by each tap: a few vector passes, whatever
                // the number of tiles.
                let active = &self.active[..l.outputs];
                for &tap in &self.taps {
                    for (r, &a) in read[tap..tap + l.outputs].iter_mut().zip(active) {
                        *r |= a;
                    }
                }
            }
        }
        let skip = self.input.as_ptr().align_offset(64);
        let padded = &mut self.input[skip..][..l.pixels() * cpad];
        let per_task = (read.len() / (threads.max(1) * 4)).max(64);
        padded
            .par_chunks_mut(cpad * per_task)
            .zip(read.par_chunks(per_task))
            .enumerate()
            .for_each(|(task, (dst, flags))| {
                // Each run of wanted pixels in one call.
                let mut j = 0;
                while let Some(k) = flags[j..].iter().position(|&w| w) {
                    let first = j + k;
                    let run = flags[first..].iter().take_while(|&&w| w).count();
                    let g = task * per_task + first;
                    let dst = &mut dst[first * cpad..(first + run) * cpad];
                    convert_pixels(spec, l, input, g, cpad, dst);
                    j = first + run;
                }
            });
    }
}

/// Which input pixels a kernel reads, so which the copy must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// What whole blocks of outputs read (the AMX kernel computes every row of a block).
    Blocks,
    /// What the active outputs read (the dot kernel computes no other).
    Outputs,
}

/// Makes room for `n` items in `v`, which keeps what it holds.
fn reserve<T>(v: &mut Vec<T>, n: usize) {
    v.reserve(n.saturating_sub(v.len()));
}

/// Writes the held pixels from index `g` on (`dst.len() / cpad` of them) in bf16: the view's
/// channels inside the map, zeros in the padding and in channels past `cin`. The pixels are cut
/// where rows of a phase plane end; the pixels of a row inside the map convert in one call.
fn convert_pixels(
    spec: &ConvSpec,
    l: &Layout,
    input: &FeatRef,
    g: usize,
    cpad: usize,
    dst: &mut [u16],
) {
    let s = l.stride;
    let (mut g, end) = (g, g + dst.len() / cpad);
    let mut dst = dst;
    while g < end {
        let (phase, q) = (g / l.plane, g % l.plane);
        let (a, b) = (phase / s, phase % s);
        let (r, c) = (q / l.ws, q % l.ws);
        let n = (l.ws - c).min(end - g).min(l.plane - q);
        let (row, rest) = dst.split_at_mut(n * cpad);
        (dst, g) = (rest, g + n);
        // Held pixel c + k is input pixel (r·s + a − pad_t, (c + k)·s + b − pad_l).
        let iy = (r * s + a).wrapping_sub(spec.pad_t);
        let ix = |k: usize| ((c + k) * s + b).wrapping_sub(spec.pad_l);
        if iy >= input.h {
            row.fill(0);
            continue;
        }
        // Held pixels [k0, k1) lie inside the map.
        let k0 = (0..n).find(|&k| ix(k) < input.w).unwrap_or(n);
        let k1 = (k0..n).find(|&k| ix(k) >= input.w).unwrap_or(n);
        row[..k0 * cpad].fill(0);
        row[k1 * cpad..].fill(0);
        if k1 > k0 {
            let stride = s * input.pitch;
            let len = (k1 - k0 - 1) * stride + input.c;
            // SAFETY: pixels ix(k0), ix(k0) + s, … ix(k1 − 1) of row iy are in the map, and
            // the view's channels of the last end inside it.
            let src = unsafe { std::slice::from_raw_parts(input.ptr_at(iy, ix(k0)), len) };
            let held = &mut row[k0 * cpad..k1 * cpad];
            amx::pixels_to_bf16(src, stride, spec.cin, held, cpad);
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
            for g in 0..l.pixels() {
                if let Some(p) = l.pixel_at(g) {
                    assert!(seen.insert(p), "{what}: {p:?} twice");
                }
            }
        }
    }
}

/// The check every kernel reading the copy passes.
#[cfg(test)]
pub(super) mod check {
    use super::super::conv::fixture;
    use super::*;
    use crate::model::act::Act;
    use crate::rng::Lcg;

    /// `run` (a kernel on the copy: spec, grid, input, output, tiles) against im2col + f32 GEMM
    /// on operands that bf16 holds exactly (weights and inputs rounded to bf16 first), so the two
    /// differ only in the order of f32 sums: strides, dilation, 1×1, 3×3 and 5×5 kernels, channel
    /// counts that are and are not multiples of 32 (and odd ones), channel views into wider
    /// buffers and maps of whole pixels, every tile and scattered tiles. Tiles it does not
    /// compute keep their contents exactly. One scratch serves every run, its copy filled
    /// with NaN before each: a read of anything the run did not convert shows. Every case must
    /// be one the kernel `applies` to.
    pub fn equals_the_f32_path(
        applies: impl Fn(&ConvSpec) -> bool,
        mut run: impl FnMut(&ConvSpec, &TileGrid, FeatRef, FeatMut, &[u32], &mut Bf16Input),
    ) {
        let rounded = |x: f32| amx::f32_of(amx::bf16(x));
        let mut rng = Lcg(22);
        let mut scratch = Bf16Input::default();
        // (k, stride, dilation, cin, cout, activation)
        let cases = [
            (3, 1, (1, 1), 32, 48, Act::LeakyRelu(0.1)),
            (3, 2, (1, 1), 24, 40, Act::Relu),
            (1, 1, (1, 1), 64, 20, Act::Identity),
            (3, 1, (2, 2), 16, 16, Act::Sigmoid),
            (3, 1, (2, 1), 24, 32, Act::Relu),
            (5, 2, (1, 1), 40, 70, Act::Silu),
            (1, 2, (1, 1), 33, 64, Act::Identity),
        ];
        // (channels beside the input view, the view's first channel)
        let views = [(5, 3), (0, 0)];
        for ((k, stride, d, cin, cout, act), (extra, c_off)) in
            cases.into_iter().flat_map(|c| views.map(|v| (c, v)))
        {
            let mut spec = fixture::spec(&mut rng, k, stride, d, cin, cout, 1, act);
            spec.weights.iter_mut().for_each(|w| *w = rounded(*w));
            assert!(applies(&spec), "k{k} s{stride} {cin}->{cout}");
            let maps = fixture::Maps::new(&spec, extra, c_off);
            fixture::against_gemm_on(
                &spec,
                &maps,
                &mut rng,
                rounded,
                |i, o, tiles| {
                    scratch.input.fill(0x7fc0); // bf16 NaN
                    run(&spec, &maps.grid, i, o, tiles, &mut scratch)
                },
                |got, want, base, tiles| {
                    let what = format!(
                        "k{k} s{stride} d{d:?} {cin}->{cout} {act:?}, view {c_off}+{cin} of \
                         {}, {tiles} tiles",
                        cin + extra
                    );
                    let worst = fixture::worst_change(got, want, base, &what);
                    assert!(worst < 1e-4, "{what}: worst relative error {worst}");
                },
            );
        }
    }
}
