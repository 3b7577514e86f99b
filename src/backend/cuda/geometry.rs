//! Host-side logic of the CUDA backend that needs no GPU: kernel parameter codes, launch
//! geometry, per-frame tile-list packing (one upload per frame) and buffer sizes. Unit-tested on
//! the CPU.

use crate::error::{Error, Result};
use crate::mask::TileGrid;
use crate::model::act::Act;
use crate::model::plan::{BinOp, ConvSpec, FeatureBuf, LayerOp, Plan, PoolKind, Step};

/// Threads per block of the tile-wise kernels.
pub const TILE_BLOCK: u32 = 256;
/// Upper bound of gridDim.y (blocks per tile); kernels stride over the rest.
pub const MAX_BLOCKS_PER_TILE: u32 = 1024;
/// Threads per block of rd_tile_diff (must match RD_DIFF_THREADS in cuda/change.cu).
pub const DIFF_BLOCK: u32 = 256;
/// Threads of the single rd_mask_compact block (must match RD_COMPACT_THREADS).
pub const COMPACT_BLOCK: u32 = 1024;
/// Block edge of rd_sgemm_rm (must match RD_GEMM_TILE).
pub const GEMM_TILE: u32 = 16;
/// Block of rd_global_avg_pool (must match RD_GAP_CH, RD_GAP_ROWS).
pub const GAP_BLOCK: (u32, u32) = (32, 8);

/// (code, p0, p1) of an activation, as `rd_act` in cuda/common.cuh expects.
pub fn act_code(a: Act) -> (i32, f32, f32) {
    match a {
        Act::Identity => (0, 0.0, 0.0),
        Act::Relu => (1, 0.0, 0.0),
        Act::LeakyRelu(al) => (2, al, 0.0),
        Act::Sigmoid => (3, 0.0, 0.0),
        Act::Silu => (4, 0.0, 0.0),
        Act::Tanh => (5, 0.0, 0.0),
        Act::HardSigmoid(al, b) => (6, al, b),
        Act::HardSwish => (7, 0.0, 0.0),
        Act::Clip(lo, hi) => (8, lo, hi),
    }
}

/// `kind` of rd_pool.
pub fn pool_code(k: PoolKind) -> i32 {
    match k {
        PoolKind::Max => 0,
        PoolKind::Avg(false) => 1,
        PoolKind::Avg(true) => 2,
    }
}

/// `op` of rd_binary.
pub fn binop_code(op: BinOp) -> i32 {
    match op {
        BinOp::Add => 0,
        BinOp::Sub => 1,
        BinOp::Mul => 2,
        BinOp::Div => 3,
    }
}

/// Grid and block of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// The largest tile of a map, in pixels (w, h): the tile size at this scale, clipped to the map.
pub fn max_tile_px(grid: &TileGrid, buf: &FeatureBuf) -> (usize, usize) {
    let ts = grid.tile / buf.scale.max(1);
    (ts.min(buf.w), ts.min(buf.h))
}

/// Launch of a tile-wise kernel over `n_tiles` active tiles whose largest tile has `per_tile`
/// elements (pixels × per-pixel work). Errors when a tile's element count overflows the kernels'
/// `int` indices. None when there is nothing to do.
pub fn tile_launch(n_tiles: usize, per_tile: usize) -> Result<Option<Dims>> {
    if per_tile > i32::MAX as usize {
        return Err(Error::Backend(format!(
            "a tile has {per_tile} elements to compute, more than a kernel indexes: use a smaller tile-size"
        )));
    }
    if n_tiles > i32::MAX as usize {
        return Err(Error::Backend(format!(
            "{n_tiles} tiles is more than a grid holds"
        )));
    }
    if n_tiles == 0 || per_tile == 0 {
        return Ok(None);
    }
    let y = per_tile
        .div_ceil(TILE_BLOCK as usize)
        .min(MAX_BLOCKS_PER_TILE as usize) as u32;
    Ok(Some(Dims {
        grid: (n_tiles as u32, y, 1),
        block: (TILE_BLOCK, 1, 1),
    }))
}

/// A 1-D grid-stride launch over `n` elements.
pub fn linear_launch(n: usize) -> Option<Dims> {
    if n == 0 {
        return None;
    }
    let blocks = n.div_ceil(TILE_BLOCK as usize).min(65_535) as u32;
    Some(Dims {
        grid: (blocks, 1, 1),
        block: (TILE_BLOCK, 1, 1),
    })
}

/// rd_sgemm_rm over C [m × n].
pub fn gemm_launch(m: usize, n: usize) -> Result<Option<Dims>> {
    if m == 0 || n == 0 {
        return Ok(None);
    }
    let gy = m.div_ceil(GEMM_TILE as usize);
    if gy > 65_535 {
        return Err(Error::Backend(format!(
            "GEMM of {m} rows exceeds the fallback kernel's grid"
        )));
    }
    Ok(Some(Dims {
        grid: (n.div_ceil(GEMM_TILE as usize) as u32, gy as u32, 1),
        block: (GEMM_TILE, GEMM_TILE, 1),
    }))
}

/// Rows × output channels one block of rd_conv_rows computes, and of rd_conv_rows_n32 (for at
/// most 32 channels), and their threads.
pub const FUSED_CONV_BLOCK: (u32, u32) = (32, 64);
pub const FUSED_CONV_BLOCK_N32: (u32, u32) = (64, 32);
/// The same with 4 × 4 outputs per thread (rd_conv_rows_t44, rd_conv_rows_n32_t44).
pub const FUSED_CONV_BLOCK_T44: (u32, u32) = (64, 64);
pub const FUSED_CONV_BLOCK_N32_T44: (u32, u32) = (128, 32);
pub const FUSED_CONV_THREADS: u32 = 256;

/// Whether the fused kernels can run convolution `c`: not transposed or depthwise, and each tap
/// within what the kernels' packed taps hold (a reach of 255 pixels, 65535 channels per group).
pub fn fusable(c: &ConvSpec) -> bool {
    !c.transposed
        && !c.depthwise()
        && (c.kh - 1) * c.dh <= 255
        && (c.kw - 1) * c.dw <= 255
        && c.cin / c.groups <= 65_535
}

/// Whether the pipelined kernel (rd_conv_rows_pipe) can run fusable convolution `c`, reading
/// its input at channel `c_off` of a buffer of `pitch` channels: it copies four channels of one
/// tap, and four output channels of one weight row, as one aligned vector, so the channels per
/// group, the pitch, the offset and the output channels per group must be multiples of 4.
pub fn pipeable(c: &ConvSpec, pitch: usize, c_off: usize) -> bool {
    let cig = c.cin / c.groups;
    fusable(c)
        && cig > 0
        && [cig, pitch, c_off, c.n_per_group()]
            .iter()
            .all(|v| v % 4 == 0)
}

/// K values one step of rd_conv_rows consumes (RD_FR_BK).
pub const FUSED_CONV_BK: usize = 32;

/// Blocks a fused convolution aims for before it splits K: about two per SM of the largest GPUs
/// we ship for (132 SMs on an H100 or H200); a GPU with fewer SMs (Jetson Orin: 16) runs more waves.
pub const FUSED_CONV_TARGET_BLOCKS: usize = 264;

/// The most ways a fused convolution splits K. The last block of each output block adds every
/// split's partial sums, so splits cost time as well as save it: on an H100 (fifteenth session,
/// `examples/fusion_costs`), the 36- and 72-way splits of NanoDet's small maps made a fused
/// convolution cost about 32 µs whatever its size, against 8–10 µs apart.
pub const FUSED_CONV_MAX_SPLITS: usize = 16;

/// Where rd_conv_rows may split K: the partial sums' workspace and the per-block counters
/// (lengths in floats and in u32s; zero lengths: never split).
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitSpace {
    pub ws: u64,
    pub ws_len: usize,
    pub counters: u64,
    pub counters_len: usize,
}

/// A fused convolution's launch: its grid, the K splits (grid z) and whether it is the narrow
/// kernel (rd_conv_rows_n32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedLaunch {
    pub dims: Dims,
    pub splits: usize,
    pub narrow: bool,
}

/// rd_conv_rows (or rd_conv_rows_n32 for at most 32 channels; their _t44 variants with `tile44`)
/// over `m` gathered rows, `n` output channels and `k` taps. K is split when the row × channel
/// blocks alone would leave most of the GPU idle, as far as `space` holds the partial sums.
pub fn fused_conv_launch(
    m: usize,
    n: usize,
    k: usize,
    tile44: bool,
    space: &SplitSpace,
) -> Result<Option<FusedLaunch>> {
    if m == 0 || n == 0 {
        return Ok(None);
    }
    let narrow = n <= FUSED_CONV_BLOCK_N32.1 as usize;
    let (bm, bn) = match (narrow, tile44) {
        (false, false) => FUSED_CONV_BLOCK,
        (true, false) => FUSED_CONV_BLOCK_N32,
        (false, true) => FUSED_CONV_BLOCK_T44,
        (true, true) => FUSED_CONV_BLOCK_N32_T44,
    };
    let (gx, gy) = (m.div_ceil(bm as usize), n.div_ceil(bn as usize));
    if gx > i32::MAX as usize || gy > 65_535 {
        return Err(Error::Backend(format!(
            "fused convolution of {m} rows x {n} channels exceeds a grid"
        )));
    }
    let blocks = gx * gy;
    let per_split = blocks * (bm * bn) as usize;
    let steps = k.div_ceil(FUSED_CONV_BK).max(1);
    let splits = if blocks >= FUSED_CONV_TARGET_BLOCKS || space.counters_len < blocks {
        1
    } else {
        let wanted = FUSED_CONV_TARGET_BLOCKS
            .div_ceil(blocks)
            .min(steps)
            .min(space.ws_len / per_split)
            .clamp(1, FUSED_CONV_MAX_SPLITS);
        // The kernel gives each split ceil(steps / splits) steps: no more splits than that fills.
        steps.div_ceil(steps.div_ceil(wanted))
    };
    Ok(Some(FusedLaunch {
        dims: Dims {
            grid: (gx as u32, gy as u32, splits as u32),
            block: (FUSED_CONV_THREADS, 1, 1),
        },
        splits,
        narrow,
    }))
}

/// Counters rd_conv_rows needs to split K in any fused convolution of `plan`: one per output
/// block of its largest map (the narrow kernel's blocks are fewer).
pub fn fused_counters_len(plan: &Plan) -> usize {
    fused_counters_len_of(plan, |_| true)
}

/// [`fused_counters_len`] for the convolutions of the steps `keep` takes.
pub fn fused_counters_len_of(plan: &Plan, keep: impl Fn(usize) -> bool) -> usize {
    convs_where(plan, keep)
        .map(|(ob, c)| {
            (ob.h * ob.w).div_ceil(FUSED_CONV_BLOCK.0 as usize)
                * c.n_per_group().div_ceil(FUSED_CONV_BLOCK.1 as usize)
        })
        .max()
        .unwrap_or(0)
}

/// The most floats the split K of the convolutions of the steps `keep` takes can use as
/// partial sums, whatever the tile count and block shape: a split launch has fewer blocks than
/// `FUSED_CONV_TARGET_BLOCKS`, at most 16 splits and fewer than twice the target's blocks in
/// all (see [`fused_conv_launch`]).
pub fn split_space_bound(plan: &Plan, keep: impl Fn(usize) -> bool) -> usize {
    let shapes = [
        FUSED_CONV_BLOCK,
        FUSED_CONV_BLOCK_N32,
        FUSED_CONV_BLOCK_T44,
        FUSED_CONV_BLOCK_N32_T44,
    ];
    convs_where(plan, keep)
        .flat_map(|(ob, c)| {
            shapes.iter().map(move |&(bm, bn)| {
                let (bm, bn) = (bm as usize, bn as usize);
                let blocks = (ob.h * ob.w).div_ceil(bm) * c.n_per_group().div_ceil(bn);
                (2 * FUSED_CONV_TARGET_BLOCKS).min(FUSED_CONV_MAX_SPLITS * blocks) * bm * bn
            })
        })
        .max()
        .unwrap_or(0)
}

/// The output buffer and spec of each convolution (not depthwise) among the steps `keep` takes.
pub fn convs_where(
    plan: &Plan,
    keep: impl Fn(usize) -> bool,
) -> impl Iterator<Item = (&FeatureBuf, &ConvSpec)> {
    plan.steps
        .iter()
        .enumerate()
        .filter_map(move |(si, s)| match s {
            Step::Layer(l) if keep(si) => match &l.op {
                LayerOp::Conv(c) if !c.depthwise() => Some((&plan.buffers[l.output.buf], c)),
                _ => None,
            },
            _ => None,
        })
}

/// rd_global_avg_pool over `c` channels.
pub fn gap_launch(c: usize) -> Option<Dims> {
    (c > 0).then(|| Dims {
        grid: (c.div_ceil(GAP_BLOCK.0 as usize) as u32, 1, 1),
        block: (GAP_BLOCK.0, GAP_BLOCK.1, 1),
    })
}

/// First gathered row of each listed tile (the CPU backend's layout); returns M, the total rows.
pub fn row_offsets(grid: &TileGrid, buf: &FeatureBuf, tiles: &[u32], out: &mut Vec<u32>) -> usize {
    out.clear();
    let mut m = 0usize;
    for &t in tiles {
        out.push(m as u32);
        let (x0, y0, x1, y1) = grid.rect(t as usize, buf.scale, buf.w, buf.h);
        m += (x1 - x0) * (y1 - y0);
    }
    m
}

/// Where one step's lists live in the per-frame upload (element offsets into it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepLists {
    /// Offset and length of the tile list.
    pub tiles: usize,
    pub n: usize,
    /// Offset of the row offsets (convolutions that GEMM only) and M, the gathered rows.
    pub rows: usize,
    pub m: usize,
}

/// (list offset, list len, scale, map w, map h): row offsets depend on nothing else.
type RowsKey = (usize, usize, usize, usize, usize);

/// Packs all tile lists of one frame (and the row offsets each GEMM convolution needs) into one
/// u32 array, so a frame costs one host→device copy. Equal consecutive lists (the common mask)
/// are stored once, as are row offsets for the same list and map geometry.
#[derive(Default)]
pub struct TilePacker {
    pub data: Vec<u32>,
    pub steps: Vec<StepLists>,
    rows_scratch: Vec<u32>,
    rows_seen: Vec<(RowsKey, (usize, usize))>,
}

impl TilePacker {
    pub fn pack(&mut self, plan: &Plan, grid: &TileGrid, per_step: &[Vec<u32>]) {
        self.data.clear();
        self.steps.clear();
        self.rows_seen.clear();
        let mut last: Option<(usize, usize, usize)> = None; // (step index, offset, len)
        for (si, step) in plan.steps.iter().enumerate() {
            let tiles = per_step.get(si).map(Vec::as_slice).unwrap_or(&[]);
            let mut s = StepLists::default();
            let Step::Layer(l) = step else {
                self.steps.push(s);
                continue;
            };
            if tiles.is_empty() {
                self.steps.push(s);
                continue;
            }
            let off = match last {
                Some((li, off, len)) if len == tiles.len() && per_step[li] == tiles => off,
                _ => {
                    let off = self.data.len();
                    self.data.extend_from_slice(tiles);
                    off
                }
            };
            last = Some((si, off, tiles.len()));
            s.tiles = off;
            s.n = tiles.len();
            if let LayerOp::Conv(c) = &l.op {
                if !c.depthwise() {
                    let ob = &plan.buffers[l.output.buf];
                    let key = (off, tiles.len(), ob.scale, ob.w, ob.h);
                    if let Some(&(_, (r, m))) = self.rows_seen.iter().find(|(k, _)| *k == key) {
                        s.rows = r;
                        s.m = m;
                    } else {
                        let m = row_offsets(grid, ob, tiles, &mut self.rows_scratch);
                        s.rows = self.data.len();
                        s.m = m;
                        self.data.extend_from_slice(&self.rows_scratch);
                        self.rows_seen.push((key, (s.rows, m)));
                    }
                }
            }
            self.steps.push(s);
        }
    }

    /// The most u32s a frame can need (every step with its own full list), for sizing the device
    /// buffer once.
    pub fn capacity_for(plan: &Plan, grid: &TileGrid) -> usize {
        let per = grid.len();
        plan.steps
            .iter()
            .map(|s| match s {
                Step::Layer(l) => match &l.op {
                    LayerOp::Conv(c) if !c.depthwise() => 2 * per,
                    _ => per,
                },
                _ => 0,
            })
            .sum::<usize>()
            .max(1)
    }
}

/// Padding entry of a tile list: kernels treat it as an empty tile (RD_NO_TILE in common.cuh).
pub const NO_TILE: u32 = u32::MAX;

/// The tile counts CUDA graphs are captured for on a grid of `n_tiles` tiles: 4 · √2ᵏ below
/// `n_tiles`, then `n_tiles` itself. A frame is replayed with the smallest level that holds its
/// longest tile list, so a frame launches at most √2× (and ≥ 4) tile blocks per layer.
pub fn bucket_levels(n_tiles: usize) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    for k in 0.. {
        let l = (4.0 * 2f64.powf(k as f64 / 2.0)).round() as usize;
        if l >= n_tiles {
            break;
        }
        if v.last() != Some(&l) {
            v.push(l);
        }
    }
    v.push(n_tiles.max(1));
    v
}

/// Index of the smallest level holding `n` tiles.
pub fn bucket_of(levels: &[usize], n: usize) -> Option<usize> {
    levels.iter().position(|&l| l >= n)
}

/// GEMM rows of a convolution writing `buf` when launched for `bucket` tiles: an upper bound of
/// the frame's gathered rows (rows past the frame's M are computed but never scattered).
pub fn bucket_rows(grid: &TileGrid, buf: &FeatureBuf, bucket: usize) -> usize {
    let (tw, th) = max_tile_px(grid, buf);
    (bucket * tw * th).min(buf.w * buf.h)
}

/// Per-frame tile lists in the fixed layout the CUDA graphs of one bucket read: step `si` has its
/// tile list (padded with [`NO_TILE`]) at `si·2·bucket` and its GEMM row offsets right after it.
#[derive(Default)]
pub struct FixedPacker {
    pub data: Vec<u32>,
    /// Per grid and feature map (tile, grid columns, tiles, map scale, width, height): each
    /// tile's pixels in that map, so that a frame's row offsets are sums of table entries.
    areas: Vec<(AreaKey, Vec<u32>)>,
}

type AreaKey = (usize, usize, usize, usize, usize, usize);

impl FixedPacker {
    /// u32s of the device buffer (the largest bucket).
    pub fn capacity_for(plan: &Plan, grid: &TileGrid) -> usize {
        (plan.steps.len() * 2 * grid.len()).max(1)
    }

    /// (tile list offset, row offsets offset) of step `si` for `bucket`.
    pub fn offsets(si: usize, bucket: usize) -> (usize, usize) {
        (si * 2 * bucket, si * 2 * bucket + bucket)
    }

    /// Lays out `per_step` for `bucket` (every list must hold at most `bucket` tiles); returns the
    /// number of u32s to upload (`data[..len]`).
    pub fn pack(
        &mut self,
        plan: &Plan,
        grid: &TileGrid,
        per_step: &[Vec<u32>],
        bucket: usize,
    ) -> usize {
        let len = plan.steps.len() * 2 * bucket;
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
        for (si, step) in plan.steps.iter().enumerate() {
            let Step::Layer(l) = step else { continue };
            let tiles = per_step.get(si).map(Vec::as_slice).unwrap_or(&[]);
            debug_assert!(tiles.len() <= bucket);
            let (t0, r0) = Self::offsets(si, bucket);
            let n = tiles.len().min(bucket);
            self.data[t0..t0 + n].copy_from_slice(&tiles[..n]);
            self.data[t0 + n..t0 + bucket].fill(NO_TILE);
            if let LayerOp::Conv(c) = &l.op {
                if !c.depthwise() {
                    let ob = &plan.buffers[l.output.buf];
                    let key = (grid.tile, grid.cols, grid.len(), ob.scale, ob.w, ob.h);
                    let at = match self.areas.iter().position(|(k, _)| *k == key) {
                        Some(at) => at,
                        None => {
                            let area = |t: usize| {
                                let (x0, y0, x1, y1) = grid.rect(t, ob.scale, ob.w, ob.h);
                                ((x1 - x0) * (y1 - y0)) as u32
                            };
                            self.areas.push((key, (0..grid.len()).map(area).collect()));
                            self.areas.len() - 1
                        }
                    };
                    let areas = &self.areas[at].1;
                    let mut m = 0u32;
                    for (i, &t) in tiles[..n].iter().enumerate() {
                        self.data[r0 + i] = m;
                        m += areas[t as usize];
                    }
                    // Padding entries start past the last pixel: the offsets stay non-decreasing
                    // (rd_conv_rows searches them).
                    self.data[r0 + n..r0 + bucket].fill(m);
                }
            }
        }
        len
    }
}

/// f16 bits of `v`, rounded to nearest even and saturated at ±65504 like the device's
/// `rd_f16_bits` (cuda/common.cuh), so an f16 weight copy never holds an infinity.
pub fn f16_bits(v: &[f32]) -> Vec<u16> {
    v.iter()
        .map(|&x| {
            let x = if x.is_nan() {
                x
            } else {
                x.clamp(-65504.0, 65504.0)
            };
            half::f16::from_f32(x).to_bits()
        })
        .collect()
}

/// Scratch sizes (floats) for the gathered matrix A and the GEMM result C with every tile active.
pub fn scratch_sizes(plan: &Plan) -> (usize, usize) {
    scratch_sizes_of(plan, |_| true)
}

/// [`scratch_sizes`] for the convolutions of the steps `keep` takes.
pub fn scratch_sizes_of(plan: &Plan, keep: impl Fn(usize) -> bool) -> (usize, usize) {
    convs_where(plan, keep).fold((0, 0), |(a, c), (ob, cs)| {
        let m = ob.h * ob.w;
        (a.max(m * cs.k_per_group()), c.max(m * cs.n_per_group()))
    })
}

/// Checks, before any allocation, that every layer's launches fit the kernels' index types.
pub fn check_plan(plan: &Plan, grid: &TileGrid) -> Result<()> {
    for l in plan.layers() {
        let ob = &plan.buffers[l.output.buf];
        let (tw, th) = max_tile_px(grid, ob);
        let per_px = match &l.op {
            LayerOp::Conv(c) if !c.depthwise() => c.k_per_group().max(c.n_per_group()),
            _ => l.output.c,
        };
        tile_launch(1, tw * th * per_px)
            .map_err(|e| Error::Backend(format!("layer `{}`: {e}", l.name)))?;
    }
    if plan.input_c != 3 {
        return Err(Error::Backend(format!(
            "the CUDA backend feeds 3-channel images; the network wants {}",
            plan.input_c
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::plan::{ConvSpec, Layer, View};

    #[test]
    fn f16_weight_bits_round_and_saturate() {
        let tie = 1.0 / 2048.0; // half the f16 spacing at 1.0
        let v = [
            1.0,
            -2.5,
            65504.0,
            1e6,
            -1e6,
            1.0 + tie,
            1.0 + 3.0 * tie,
            1e-9,
            f32::NAN,
        ];
        let b = f16_bits(&v);
        assert_eq!(&b[..5], &[0x3c00, 0xc100, 0x7bff, 0x7bff, 0xfbff]);
        assert_eq!(&b[5..7], &[0x3c00, 0x3c02], "ties go to the even mantissa");
        assert_eq!(b[7], 0, "below the smallest subnormal: zero");
        assert!(half::f16::from_bits(b[8]).is_nan());
    }

    fn conv_layer(
        input: View,
        output: View,
        k: usize,
        stride: usize,
        cin: usize,
        cout: usize,
        groups: usize,
    ) -> Step {
        Step::Layer(Layer {
            name: "c".into(),
            op: LayerOp::Conv(ConvSpec {
                kh: k,
                kw: k,
                sh: stride,
                sw: stride,
                dh: 1,
                dw: 1,
                pad_t: k / 2,
                pad_l: k / 2,
                cin,
                cout,
                groups,
                transposed: false,
                weights: vec![0.0; k * k * (cin / groups) * cout],
                bias: vec![0.0; cout],
                act: Act::Relu,
            }),
            input,
            output,
            halo: 0,
            global: false,
            macs: 0.0,
        })
    }

    fn plan(width: usize, height: usize) -> Plan {
        let b0 = FeatureBuf {
            c: 3,
            h: height,
            w: width,
            scale: 1,
        };
        let b1 = FeatureBuf {
            c: 8,
            h: height.div_ceil(2),
            w: width.div_ceil(2),
            scale: 2,
        };
        let b2 = FeatureBuf {
            c: 8,
            h: height.div_ceil(2),
            w: width.div_ceil(2),
            scale: 2,
        };
        let v = |buf, c| View { buf, c_off: 0, c };
        Plan {
            model_path: "t.onnx".into(),
            input_name: "x".into(),
            input_w: width,
            input_h: height,
            input_c: 3,
            max_scale: 2,
            buffers: vec![b0, b1, b2],
            steps: vec![
                conv_layer(v(0, 3), v(1, 8), 3, 2, 3, 8, 1),
                conv_layer(v(1, 8), v(2, 8), 3, 1, 8, 8, 8), // depthwise
                conv_layer(v(2, 8), v(1, 8), 1, 1, 8, 8, 1),
                Step::Export {
                    input: v(1, 8),
                    slot: 0,
                },
            ],
            slots: vec![None],
            slot_shapes: vec![vec![1, 8, height.div_ceil(2), width.div_ceil(2)]],
            outputs: vec![("y".into(), 0)],
        }
    }

    #[test]
    fn activation_codes_carry_parameters() {
        assert_eq!(act_code(Act::Identity).0, 0);
        assert_eq!(act_code(Act::LeakyRelu(0.1)), (2, 0.1, 0.0));
        assert_eq!(act_code(Act::HardSigmoid(0.2, 0.5)), (6, 0.2, 0.5));
        assert_eq!(act_code(Act::Clip(-1.0, 6.0)), (8, -1.0, 6.0));
        assert_eq!(pool_code(PoolKind::Avg(true)), 2);
        assert_eq!(binop_code(BinOp::Div), 3);
    }

    #[test]
    fn tile_launch_geometry() {
        assert_eq!(tile_launch(0, 100).unwrap(), None);
        let d = tile_launch(7, 32 * 32 * 3).unwrap().unwrap();
        assert_eq!(d.grid, (7, 12, 1));
        assert_eq!(d.block, (256, 1, 1));
        // Capped blocks per tile: kernels stride over the rest.
        assert_eq!(
            tile_launch(1, 1 << 30).unwrap().unwrap().grid.1,
            MAX_BLOCKS_PER_TILE
        );
        assert!(tile_launch(1, 1 << 31).is_err());
        assert_eq!(gemm_launch(33, 17).unwrap().unwrap().grid, (2, 3, 1));
        assert_eq!(gap_launch(65).unwrap().grid, (3, 1, 1));
        assert_eq!(linear_launch(257).unwrap().grid, (2, 1, 1));
    }

    #[test]
    fn fused_convolutions_split_k_only_where_the_blocks_leave_the_gpu_idle() {
        let room = SplitSpace {
            ws: 0,
            ws_len: 1 << 24,
            counters: 0,
            counters_len: 1 << 12,
        };
        // 13x13 map, 256 channels, K = 2304 (72 steps): 6 x 4 blocks, split 11 ways (264 blocks).
        let launch = |m, n, k, space: &SplitSpace| {
            fused_conv_launch(m, n, k, false, space).unwrap().unwrap()
        };
        let f = launch(169, 256, 2304, &room);
        assert_eq!((f.dims.grid, f.splits, f.narrow), ((6, 4, 11), 11, false));
        // No more splits than K steps, and none left without a step: 9 steps wanted in 6
        // splits of 2 steps fill only 5.
        assert_eq!(launch(169, 256, 64, &room).splits, 2);
        assert_eq!(launch(1408, 64, 288, &room).splits, 5);
        // 32 channels: the narrow kernel's 64-row blocks; enough of them already, no split.
        let f = launch(21632, 32, 288, &room);
        assert_eq!((f.dims.grid, f.splits, f.narrow), ((338, 1, 1), 1, true));
        // No counters, or too little workspace: no split.
        assert_eq!(launch(169, 256, 2304, &SplitSpace::default()).splits, 1);
        let small = SplitSpace {
            ws_len: 3 * 24 * 32 * 64,
            ..room
        };
        assert_eq!(launch(169, 256, 2304, &small).splits, 3);
        // 4 x 4 per thread: 64 x 64 blocks, and 128 x 32 for at most 32 channels.
        let f = fused_conv_launch(169, 256, 2304, true, &room)
            .unwrap()
            .unwrap();
        // 22 splits would fill the GPU; at most 16, and 15 splits of 5 steps cover 72 steps.
        assert_eq!((f.dims.grid, f.splits), ((3, 4, 15), 15));
        let f = fused_conv_launch(21632, 32, 288, true, &room)
            .unwrap()
            .unwrap();
        assert_eq!((f.dims.grid, f.splits, f.narrow), ((169, 1, 2), 2, true));
    }

    #[test]
    fn row_offsets_match_clipped_tiles() {
        // 100x70 input, tile 32: 4x3 tiles, the last column 4 px wide, the last row 6 px high.
        let g = TileGrid::new(100, 70, 32);
        let b = FeatureBuf {
            c: 1,
            h: 70,
            w: 100,
            scale: 1,
        };
        let mut off = Vec::new();
        let m = row_offsets(&g, &b, &[0, 3, 11], &mut off);
        assert_eq!(off, vec![0, 1024, 1024 + 4 * 32]);
        assert_eq!(m, 1024 + 4 * 32 + 4 * 6);
        // At scale 2 a tile is 16 px; the map is 50x35.
        let b2 = FeatureBuf {
            c: 1,
            h: 35,
            w: 50,
            scale: 2,
        };
        let m2 = row_offsets(&g, &b2, &[3, 11], &mut off);
        assert_eq!(off, vec![0, 2 * 16]);
        assert_eq!(m2, 2 * 16 + 2 * 3);
        assert_eq!(max_tile_px(&g, &b2), (16, 16));
        assert_eq!(
            max_tile_px(
                &g,
                &FeatureBuf {
                    c: 1,
                    h: 3,
                    w: 5,
                    scale: 2
                }
            ),
            (5, 3)
        );
    }

    #[test]
    fn packer_shares_equal_lists_and_row_offsets() {
        let p = plan(100, 70);
        let g = p.grid(32);
        let list = vec![0u32, 3, 11];
        let mut pk = TilePacker::default();
        pk.pack(&p, &g, &[list.clone(), list.clone(), list.clone(), vec![]]);
        // One list, one row-offset array (both GEMM convs write scale-2 maps of the same size).
        assert_eq!(pk.data.len(), 3 + 3);
        assert_eq!(
            pk.steps[0],
            StepLists {
                tiles: 0,
                n: 3,
                rows: 3,
                m: 16 * 16 + 2 * 16 + 2 * 3
            }
        );
        assert_eq!(
            pk.steps[1],
            StepLists {
                tiles: 0,
                n: 3,
                rows: 0,
                m: 0
            }
        );
        assert_eq!(pk.steps[2], pk.steps[0]);
        assert_eq!(pk.steps[3], StepLists::default());
        assert_eq!(&pk.data[..3], &list[..]);
        assert_eq!(&pk.data[3..], &[0, 256, 256 + 32]);
        // Different lists per step (exact mode) are each stored.
        pk.pack(&p, &g, &[vec![0], vec![0, 1], vec![0, 1], vec![]]);
        assert_eq!(pk.steps[0].n, 1);
        assert_eq!(pk.steps[1].tiles, 2);
        assert_eq!(pk.steps[2].tiles, 2);
        assert_eq!(pk.steps[2].rows, 4);
        assert!(pk.data.len() <= TilePacker::capacity_for(&p, &g));
        // Empty lists cost nothing.
        pk.pack(&p, &g, &[vec![], vec![], vec![], vec![]]);
        assert!(pk.data.is_empty());
    }

    #[test]
    fn buckets_cover_every_count() {
        let l = bucket_levels(169);
        assert_eq!(l, vec![4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 169]);
        assert_eq!(bucket_levels(1), vec![1]);
        assert_eq!(bucket_levels(4), vec![4]);
        assert_eq!(bucket_levels(12), vec![4, 6, 8, 11, 12]);
        assert_eq!(bucket_of(&l, 0), Some(0));
        assert_eq!(bucket_of(&l, 5), Some(1));
        assert_eq!(bucket_of(&l, 169), Some(11));
        assert_eq!(bucket_of(&l, 170), None);
        let g = TileGrid::new(100, 70, 32);
        let b2 = FeatureBuf {
            c: 1,
            h: 35,
            w: 50,
            scale: 2,
        };
        assert_eq!(bucket_rows(&g, &b2, 2), 2 * 256);
        assert_eq!(bucket_rows(&g, &b2, 12), 50 * 35);
    }

    #[test]
    fn fixed_packer_pads_lists() {
        let p = plan(100, 70);
        let g = p.grid(32);
        let mut fp = FixedPacker::default();
        let len = fp.pack(&p, &g, &[vec![0, 3, 11], vec![0], vec![], vec![]], 4);
        assert_eq!(len, 4 * 2 * 4);
        assert!(len <= FixedPacker::capacity_for(&p, &g));
        assert_eq!(&fp.data[0..4], &[0, 3, 11, NO_TILE]);
        // Row offsets as the compact packer computes them.
        let mut rows = Vec::new();
        let m = row_offsets(&g, &p.buffers[1], &[0, 3, 11], &mut rows);
        assert_eq!(&fp.data[4..7], &rows[..]);
        // The padding entry starts past the last pixel (offsets stay non-decreasing).
        assert_eq!(fp.data[7] as usize, m);
        assert!(m <= bucket_rows(&g, &p.buffers[1], 4));
        assert_eq!(FixedPacker::offsets(1, 4), (8, 12));
        assert_eq!(&fp.data[8..12], &[0, NO_TILE, NO_TILE, NO_TILE]);
        assert_eq!(&fp.data[16..20], &[NO_TILE; 4]);
        // The same packer on another grid: its own table of tile areas.
        let p2 = plan(70, 100);
        let g2 = p2.grid(32);
        fp.pack(&p2, &g2, &[vec![2, 5, 11], vec![0], vec![], vec![]], 4);
        let m2 = row_offsets(&g2, &p2.buffers[1], &[2, 5, 11], &mut rows);
        assert_eq!(&fp.data[4..7], &rows[..]);
        assert_eq!(fp.data[7] as usize, m2);
    }

    #[test]
    fn scratch_and_plan_checks() {
        let p = plan(64, 64);
        // Largest A: 32x32 output pixels x K = 27 (first conv); C: 1024 x 8.
        assert_eq!(scratch_sizes(&p), (32 * 32 * 27, 32 * 32 * 8));
        check_plan(&p, &p.grid(32)).unwrap();
        let mut p4 = p.clone();
        p4.input_c = 4;
        assert!(check_plan(&p4, &p4.grid(32)).is_err());
    }

    #[test]
    fn fusable_convolutions_fit_the_packed_taps() {
        let conv = |k: usize, cin: usize, cout: usize, groups: usize| {
            let v = View {
                buf: 0,
                c_off: 0,
                c: cin,
            };
            let Step::Layer(l) = conv_layer(v, v, k, 1, cin, cout, groups) else {
                unreachable!()
            };
            let LayerOp::Conv(c) = l.op else {
                unreachable!()
            };
            c
        };
        assert!(fusable(&conv(3, 256, 256, 1)), "K = 2304");
        assert!(fusable(&conv(3, 1024, 8, 1)), "K = 9216");
        assert!(fusable(&conv(1, 65_535, 8, 1)), "65535 channels");
        assert!(
            !fusable(&conv(1, 65_536, 8, 1)),
            "a channel index past 16 bits"
        );
        assert!(!fusable(&conv(3, 32, 32, 32)), "depthwise");
        assert!(fusable(&conv(3, 64, 64, 2)), "grouped, not depthwise");
        let mut dilated = conv(3, 8, 8, 1);
        dilated.dh = 127;
        assert!(fusable(&dilated), "reach 254");
        dilated.dw = 128;
        assert!(!fusable(&dilated), "reach 256 does not pack into 8 bits");
        let mut t = conv(3, 8, 8, 1);
        t.transposed = true;
        assert!(!fusable(&t), "transposed");
    }

    #[test]
    fn pipeable_convolutions_copy_whole_aligned_chunks() {
        let conv = |cin: usize, cout: usize, groups: usize| {
            let v = View {
                buf: 0,
                c_off: 0,
                c: cin,
            };
            let Step::Layer(l) = conv_layer(v, v, 3, 1, cin, cout, groups) else {
                unreachable!()
            };
            let LayerOp::Conv(c) = l.op else {
                unreachable!()
            };
            c
        };
        assert!(pipeable(&conv(32, 64, 1), 32, 0));
        assert!(
            pipeable(&conv(16, 16, 2), 24, 8),
            "groups of 8 channels in a view"
        );
        assert!(!pipeable(&conv(3, 32, 1), 3, 0), "3 input channels");
        assert!(!pipeable(&conv(32, 64, 1), 34, 0), "a pitch of 34");
        assert!(!pipeable(&conv(32, 64, 1), 64, 2), "a view at channel 2");
        assert!(!pipeable(&conv(32, 30, 1), 32, 0), "30 output channels");
        assert!(
            !pipeable(&conv(12, 24, 2), 12, 0),
            "6 input channels a group"
        );
        assert!(!pipeable(&conv(32, 32, 32), 32, 0), "depthwise");
        let mut none = conv(32, 64, 1);
        none.cin = 0;
        assert!(!pipeable(&none, 32, 0), "no input channels");
    }

    /// The value of `#define NAME VALUE` in the kernel sources.
    fn kernel_define(name: &str) -> u64 {
        let sources = std::iter::once(super::super::kernels::COMMON)
            .chain(super::super::kernels::SOURCES.iter().map(|k| k.source));
        let value = sources
            .flat_map(str::lines)
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some("#define") && words.next() == Some(name))
                    .then(|| words.next())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no #define {name} in cuda/"));
        let v = value.trim_end_matches('u');
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => v.parse().unwrap(),
        }
    }

    #[test]
    fn launch_constants_match_the_kernels_defines() {
        assert_eq!(kernel_define("RD_GEMM_TILE"), GEMM_TILE as u64);
        assert_eq!(kernel_define("RD_FR_BK"), FUSED_CONV_BK as u64);
        assert_eq!(kernel_define("RD_FR_THREADS"), FUSED_CONV_THREADS as u64);
        assert_eq!(kernel_define("RD_NO_TILE"), NO_TILE as u64);
    }
}
