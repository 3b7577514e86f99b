//! Convolutions on AMX tiles without im2col rows (`precision=bf16` on CPUs with AMX). Every tile
//! of A is loaded straight from the padded bf16 copy of the input (`bf16_input`): for 16
//! consecutive flattened outputs, one `tileloadd` per tap and 32 input channels.
//!
//! Work goes in the copy's blocks of 32 flattened outputs (two A tiles), or 16 where the next 16
//! hold no active output. On sparse frames only the blocks holding an output pixel of an active
//! tile are computed, and only the active pixels are written back.

use rayon::prelude::*;

use super::amx::{self, round_up, PackedB, BLOCK_N, STEP_K, TILE_N};
use super::bf16_input::{Bf16Input, Layout, Reads, ROWS, UNIT};
use super::feature::{FeatMut, FeatRef};
use crate::mask::TileGrid;
use crate::model::plan::ConvSpec;

/// Whether this path computes the convolution: an ordinary (not grouped or transposed) one with
/// equal strides and at least [`MIN_CIN`] input channels. Fewer channels would be padded to 32,
/// wasting most of each tile.
pub fn applies(spec: &ConvSpec) -> bool {
    !spec.transposed && spec.groups == 1 && spec.sh == spec.sw && spec.cin >= MIN_CIN
}

/// Input channels below which a layer keeps the f32 kernels (a first layer on 3 channels).
pub const MIN_CIN: usize = 16;

/// Channels held per input pixel: the input's, padded to a whole step of K.
pub fn channels_held(spec: &ConvSpec) -> usize {
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

/// Computes the output pixels of the given tiles (every tile on a dense frame). `scratch` must
/// have been fit to this layer with [`channels_held`]; [`amx::available`] must be true.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    spec: &ConvSpec,
    wts: &InPlaceWeights,
    grid: &TileGrid,
    input: FeatRef,
    output: FeatMut,
    tiles: &[u32],
    scratch: &mut Bf16Input,
    threads: usize,
) {
    assert!(amx::available(), "the AMX path needs AMX-BF16");
    let (cpad, reads) = (wts.cpad, Reads::Blocks);
    if let Some(l) = scratch.prepare(spec, grid, &input, &output, tiles, cpad, reads, threads) {
        list_steps(wts.cpad, scratch);
        compute(spec, &l, wts, &output, scratch, threads);
    }
}

/// The byte offset of each step of K (one tap's 32 channels) from a block's first A row.
fn list_steps(cpad: usize, scratch: &mut Bf16Input) {
    scratch.steps.clear();
    for &px in &scratch.taps {
        let steps = (0..cpad / STEP_K).map(|cb| (px * cpad + cb * STEP_K) * 2);
        scratch.steps.extend(steps);
    }
}

/// Runs the blocks on the tiles and writes their active outputs with bias and activation.
fn compute(
    spec: &ConvSpec,
    l: &Layout,
    wts: &InPlaceWeights,
    output: &FeatMut,
    scratch: &Bf16Input,
    threads: usize,
) {
    let cpad = wts.cpad;
    let packed = &wts.packed;
    let (n, nbs) = (spec.cout, packed.n_pad / TILE_N);
    let (padded, steps) = (scratch.held(), &scratch.steps[..]);
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
                        for (i, row) in (b..b + rows).zip(c.chunks_exact(BLOCK_N)) {
                            if scratch.active(i) {
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

/// A block of C on whole cache lines.
#[repr(align(64))]
struct CacheLines([f32; ROWS * BLOCK_N]);

#[cfg(test)]
mod tests {
    use super::super::bf16_input::check;
    use super::*;

    /// The tile path against im2col + f32 GEMM on bf16-exact operands ([`check`]).
    #[test]
    fn in_place_conv_equals_the_f32_path_on_bf16_operands() {
        if !amx::available() {
            println!("SKIPPED: in_place_conv_equals_the_f32_path_on_bf16_operands: no AMX-BF16 on this CPU (or the kernel refused its tiles)");
            return;
        }
        check::equals_the_f32_path(applies, |spec, grid, input, output, tiles, scratch| {
            let wts = InPlaceWeights::new(spec);
            conv(spec, &wts, grid, input, output, tiles, scratch, 2)
        });
    }
}

#[cfg(test)]
mod bench {
    use super::super::conv::fixture::BenchLayer;
    use super::*;
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
            let mut layer = BenchLayer::new(&mut rng, hw, s, 3, cin, cout);
            let (spec, grid, tiles, gmac) = (
                layer.spec.clone(),
                layer.grid,
                layer.tiles.clone(),
                layer.gmac(),
            );
            let wts = InPlaceWeights::new(&spec);
            let mut scratch = Bf16Input::default();
            let (input, output) = layer.maps();
            let (cpad, reads) = (wts.cpad, Reads::Blocks);
            let (mut t_prep, mut t_comp) = (f64::MAX, f64::MAX);
            pool.install(|| {
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    let l = scratch
                        .prepare(&spec, &grid, &input, &output, &tiles, cpad, reads, 2)
                        .expect("every tile");
                    list_steps(wts.cpad, &mut scratch);
                    t_prep = t_prep.min(t.elapsed().as_secs_f64());
                    let t = std::time::Instant::now();
                    compute(&spec, &l, &wts, &output, &scratch, 2);
                    t_comp = t_comp.min(t.elapsed().as_secs_f64());
                }
            });
            println!(
                "{hw}x{hw} s{s} {cin}->{cout}: select and convert {:.3} ms, compute {:.3} ms ({:.0} GMAC/s)",
                t_prep * 1e3,
                t_comp * 1e3,
                gmac / t_comp
            );
        }
    }
}
