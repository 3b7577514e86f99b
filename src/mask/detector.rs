//! Per-tile change detection against the reference: the pixels the caches currently reflect.

use super::{CellGrower, MaskGrowth, RegionMask, TileGrid};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiffMetric {
    /// Largest absolute difference of any channel of any pixel in the tile.
    #[default]
    Max,
    /// Mean absolute difference over the tile's pixels and channels.
    Mean,
}

impl std::str::FromStr for DiffMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "max" => Ok(DiffMetric::Max),
            "mean" => Ok(DiffMetric::Mean),
            _ => Err(format!("unknown metric `{s}` (expected max or mean)")),
        }
    }
}

/// Holds the reference image (packed RGB u8 at network input size) and decides which tiles changed.
pub struct ChangeDetector {
    pub grid: TileGrid,
    reference: Vec<u8>,
    valid: bool,
    scratch: RegionMask,
    /// Where the mask grows by a margin: the changed cells, grown into tiles.
    cells: CellGrower,
    /// One row of per-byte differences folded over a band of rows (see `band_scores`).
    fold: Fold,
    /// One band's scores.
    scores: Vec<f32>,
    /// Next tile of the rolling refresh.
    cursor: usize,
}

impl ChangeDetector {
    pub fn new(grid: TileGrid) -> Self {
        ChangeDetector {
            grid,
            reference: vec![0; grid.width * grid.height * 3],
            valid: false,
            scratch: RegionMask::empty(&grid),
            cells: CellGrower::default(),
            fold: Fold {
                max: vec![0; grid.width * 3],
                sum: vec![0; grid.width * 3],
            },
            scores: Vec::new(),
            cursor: 0,
        }
    }

    /// Forgets the reference: the next frame is entirely changed.
    pub fn reset(&mut self) {
        self.valid = false;
    }

    /// Compares `image` (packed RGB, grid.width × grid.height) with the reference. Fills `mask` with
    /// the tiles whose difference exceeds `threshold`, grown by `growth`, and copies those tiles
    /// into the reference. Tiles below threshold keep their old reference so that slow change
    /// accumulates until it fires.
    pub fn detect(
        &mut self,
        image: &[u8],
        threshold: f32,
        metric: DiffMetric,
        growth: MaskGrowth,
        mask: &mut RegionMask,
    ) {
        let g = self.grid;
        assert_eq!(
            image.len(),
            self.reference.len(),
            "image size differs from the grid"
        );
        if !self.valid {
            mask.fill(true);
            self.reference.copy_from_slice(image);
            self.valid = true;
            return;
        }
        let cells = growth.cell_grid(&g);
        let (fold, scores) = (&mut self.fold, &mut self.scores);
        let mut changed = |grid: &TileGrid, mask: &mut RegionMask| {
            scores.resize(grid.cols, 0.0);
            for row in 0..grid.rows {
                band_scores(image, &self.reference, grid, row, metric, fold, scores);
                for (x, &score) in scores.iter().enumerate() {
                    mask.set(row * grid.cols + x, score > threshold);
                }
            }
        };
        if cells == g {
            changed(&g, mask);
            mask.dilate(growth.tile_radius(g.tile), &mut self.scratch);
        } else {
            // Under the max metric a tile fires exactly where one of its cells does; under the
            // mean a cell can pass where its tile does not, so the tiles are scored too.
            let fired = (metric == DiffMetric::Mean).then(|| {
                changed(&g, &mut self.scratch);
                &self.scratch
            });
            changed(&cells, self.cells.cells(&cells));
            self.cells.grow(growth, &g, fired, mask);
        }
        for i in 0..g.len() {
            if !mask.get(i) {
                continue;
            }
            let (x0, y0, x1, y1) = g.rect(i, 1, g.width, g.height);
            for y in y0..y1 {
                let r = (y * g.width + x0) * 3..(y * g.width + x1) * 3;
                self.reference[r.clone()].copy_from_slice(&image[r]);
            }
        }
    }

    /// Rolling refresh: adds the next `n` tiles (round robin over the grid) to `mask` and takes
    /// their pixels into the reference, so every tile is recomputed at least every
    /// `tiles / n` frames whatever the threshold. Returns how many tiles it added.
    pub fn refresh(&mut self, image: &[u8], n: usize, mask: &mut RegionMask) -> usize {
        self.refresh_tiles(Some(image), n, mask)
    }

    /// `refresh` for a frame whose reference is kept elsewhere (the CUDA backend's, for frames
    /// letterboxed on the device): only the mask and the cursor move.
    pub fn refresh_mask(&mut self, n: usize, mask: &mut RegionMask) -> usize {
        self.refresh_tiles(None, n, mask)
    }

    fn refresh_tiles(&mut self, image: Option<&[u8]>, n: usize, mask: &mut RegionMask) -> usize {
        let g = self.grid;
        let mut added = 0;
        for _ in 0..n.min(g.len()) {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % g.len();
            if mask.get(i) {
                continue;
            }
            mask.set(i, true);
            added += 1;
            let Some(image) = image else { continue };
            let (x0, y0, x1, y1) = g.rect(i, 1, g.width, g.height);
            for y in y0..y1 {
                let r = (y * g.width + x0) * 3..(y * g.width + x1) * 3;
                self.reference[r.clone()].copy_from_slice(&image[r]);
            }
        }
        added
    }

    pub fn reference(&self) -> &[u8] {
        &self.reference
    }
}

/// Per-byte differences of a band of rows, folded column-wise: the largest, and the sum.
struct Fold {
    max: Vec<u8>,
    sum: Vec<u32>,
}

/// The scores of the cells of row `row` of the grid `g` between two packed RGB images of its size:
/// each cell's largest absolute difference of any byte, or its mean absolute difference. The
/// band's rows are first folded into one row (whole-row loops, compiled for the CPU's widest
/// vectors), then each cell reduces its span of that row.
fn band_scores(
    a: &[u8],
    b: &[u8],
    g: &TileGrid,
    row: usize,
    metric: DiffMetric,
    fold: &mut Fold,
    out: &mut [f32],
) {
    let stride = g.width * 3;
    let (y0, y1) = (row * g.tile, ((row + 1) * g.tile).min(g.height));
    let rows = (y0..y1).map(|y| y * stride..(y + 1) * stride);
    crate::simd::vectorized(
        #[inline(always)]
        || match metric {
            DiffMetric::Max => {
                fold.max.fill(0);
                for r in rows {
                    for ((m, &p), &q) in fold.max.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
                        *m = (*m).max(p.abs_diff(q));
                    }
                }
            }
            DiffMetric::Mean => {
                fold.sum.fill(0);
                for r in rows {
                    for ((s, &p), &q) in fold.sum.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
                        *s += p.abs_diff(q) as u32;
                    }
                }
            }
        },
    );
    for (x, score) in out.iter_mut().enumerate().take(g.cols) {
        let span = x * g.tile * 3..((x + 1) * g.tile).min(g.width) * 3;
        *score = match metric {
            DiffMetric::Max => fold.max[span].iter().copied().max().unwrap_or(0) as f32,
            DiffMetric::Mean => {
                let bytes = (span.len() * (y1 - y0)).max(1);
                fold.sum[span].iter().map(|&v| v as u64).sum::<u64>() as f32 / bytes as f32
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No growth around the changed tiles.
    const NONE: MaskGrowth = MaskGrowth {
        tiles: 0,
        margin: 0,
    };

    #[test]
    fn slow_drift_accumulates_until_it_fires() {
        let grid = TileGrid::new(64, 32, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![100u8; 64 * 32 * 3];
        det.detect(&img, 10.0, DiffMetric::Max, NONE, &mut mask);
        assert!(mask.is_full(), "first frame is entirely changed");
        // Drift the right tile by 4 per frame: fires on the third step (12 > 10), not before.
        let mut fired = Vec::new();
        for _ in 0..3 {
            for y in 0..32 {
                for x in 32..64 {
                    img[(y * 64 + x) * 3] += 4;
                }
            }
            det.detect(&img, 10.0, DiffMetric::Max, NONE, &mut mask);
            fired.push((mask.get(0), mask.get(1)));
        }
        assert_eq!(fired, vec![(false, false), (false, false), (false, true)]);
        // After firing, the reference holds the new pixels: no change now.
        det.detect(&img, 10.0, DiffMetric::Max, NONE, &mut mask);
        assert_eq!(mask.count(), 0);
    }

    #[test]
    fn rolling_refresh_visits_every_tile_and_updates_the_reference() {
        let grid = TileGrid::new(96, 64, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![0u8; 96 * 64 * 3];
        det.detect(&img, 10.0, DiffMetric::Max, NONE, &mut mask);
        img.iter_mut().for_each(|v| *v = 5); // below threshold everywhere
        let mut seen = RegionMask::empty(&grid);
        for _ in 0..3 {
            det.detect(&img, 10.0, DiffMetric::Max, NONE, &mut mask);
            assert_eq!(mask.count(), 0);
            assert_eq!(det.refresh(&img, 2, &mut mask), 2);
            seen.union_with(&mask);
        }
        assert!(seen.is_full(), "6 refreshed tiles cover the 3x2 grid");
        assert!(det.reference().iter().all(|&v| v == 5));
    }

    /// The band scores equal a plain per-pixel computation, for tiles and for cells, on partial
    /// edge tiles too.
    #[test]
    fn tile_scores_equal_a_plain_computation() {
        let mut rng = crate::rng::Lcg(3);
        let n = 100 * 70 * 3;
        let a: Vec<u8> = (0..n).map(|_| rng.next_u32() as u8).collect();
        let b: Vec<u8> = a
            .iter()
            .map(|&v| v.wrapping_add((rng.next_u32() % 7) as u8))
            .collect();
        let mut fold = Fold {
            max: vec![0; 300],
            sum: vec![0; 300],
        };
        for side in [32, 8] {
            let grid = TileGrid::new(100, 70, side);
            let mut scores = vec![0f32; grid.cols];
            for (metric, plain) in [(DiffMetric::Max, 0), (DiffMetric::Mean, 1)] {
                for row in 0..grid.rows {
                    band_scores(&a, &b, &grid, row, metric, &mut fold, &mut scores);
                    for (x, &score) in scores.iter().enumerate() {
                        let (x0, y0, x1, y1) = grid.rect(row * grid.cols + x, 1, 100, 70);
                        let (mut max, mut sum) = (0u8, 0u64);
                        for y in y0..y1 {
                            for j in (y * 100 + x0) * 3..(y * 100 + x1) * 3 {
                                max = max.max(a[j].abs_diff(b[j]));
                                sum += a[j].abs_diff(b[j]) as u64;
                            }
                        }
                        let mean = sum as f32 / ((x1 - x0) * (y1 - y0) * 3) as f32;
                        let want = [max as f32, mean][plain];
                        assert_eq!(score, want, "{side}-px {metric:?} at ({x}, {row})");
                    }
                }
            }
        }
    }

    /// Runs a detector on `base` then `img` and returns the second frame's tiles and reference.
    fn second_frame(
        grid: TileGrid,
        base: &[u8],
        img: &[u8],
        metric: DiffMetric,
        threshold: f32,
        growth: MaskGrowth,
    ) -> (Vec<u32>, Vec<u8>) {
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        det.detect(base, threshold, metric, growth, &mut mask);
        det.detect(img, threshold, metric, growth, &mut mask);
        let mut tiles = Vec::new();
        mask.active_tiles(&mut tiles);
        (tiles, det.reference().to_vec())
    }

    /// A frame of `w` x `h` with a few random pixels changed from zero.
    fn sparse_change(w: usize, h: usize, rng: &mut crate::rng::Lcg) -> Vec<u8> {
        let mut img = vec![0u8; w * h * 3];
        for _ in 0..1 + rng.next_u32() % 4 {
            let p = rng.next_u32() as usize % (w * h * 3);
            img[p] = 20 + (rng.next_u32() % 200) as u8;
        }
        img
    }

    /// A margin of one tile-size grows the mask exactly as one more tile of dilation, under both
    /// metrics.
    #[test]
    fn a_margin_of_a_tile_is_a_tile_of_dilation() {
        let grid = TileGrid::new(100, 70, 32);
        let base = vec![0u8; 100 * 70 * 3];
        let mut rng = crate::rng::Lcg(11);
        for _ in 0..20 {
            let img = sparse_change(100, 70, &mut rng);
            for (metric, t) in [(DiffMetric::Max, 10.0), (DiffMetric::Mean, 0.01)] {
                for d in 1..3 {
                    let margin = MaskGrowth {
                        tiles: d - 1,
                        margin: 32,
                    };
                    let tiles = MaskGrowth::whole_tiles(d);
                    let run = |g| second_frame(grid, &base, &img, metric, t, g);
                    assert_eq!(run(margin), run(tiles), "{metric:?} {d}");
                }
            }
        }
    }

    /// Hand-worked margins: a neighbour is reached only from the cells near it.
    #[test]
    fn pixel_margins_grow_from_the_changed_cells() {
        let grid = TileGrid::new(100, 70, 32);
        let base = vec![0u8; 100 * 70 * 3];
        let run = |img: &[u8], margin| {
            let growth = MaskGrowth { tiles: 0, margin };
            second_frame(grid, &base, img, DiffMetric::Max, 10.0, growth)
        };
        // Margin 16 (two cells): (40, 40) grows to pixels 24..64 both ways, tiles 0, 1, 4 and 5;
        // (90, 10) to x 72..100, y 0..32, tiles 2 and 3 but not 1 (which ends at x 64).
        let mut img = base.clone();
        img[(40 * 100 + 40) * 3] = 99;
        img[(10 * 100 + 90) * 3] = 99;
        let (tiles, reference) = run(&img, 16);
        assert_eq!(tiles, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(reference, img, "both changes are taken into the reference");
        // Margin 8 (one cell): (44, 52) grows to x 32..56, y 40..64, inside tile 5 alone.
        let mut img = base.clone();
        img[(52 * 100 + 44) * 3] = 99;
        img[(10 * 100 + 90) * 3] = 99;
        assert_eq!(run(&img, 8).0, vec![2, 3, 5]);
    }

    /// Tiles of 12 pixels (cells of 4, partial tiles and cells at the right and bottom) against a
    /// brute force: a tile is recomputed where a cell that passes, inside a tile that passes, lies
    /// within the margin (in cells) of one of its cells.
    #[test]
    fn margins_on_tiles_of_12_match_a_brute_force() {
        let (w, h, tile, cell) = (100usize, 70usize, 12usize, 4usize);
        let grid = TileGrid::new(w, h, tile);
        let cells = TileGrid::new(w, h, cell);
        let base = vec![0u8; w * h * 3];
        let mut rng = crate::rng::Lcg(17);
        let score = |img: &[u8], g: &TileGrid, i: usize, metric: DiffMetric| {
            let (x0, y0, x1, y1) = g.rect(i, 1, w, h);
            let px = (y0..y1).flat_map(|y| (y * w + x0) * 3..(y * w + x1) * 3);
            let n = ((x1 - x0) * (y1 - y0) * 3) as f32;
            match metric {
                DiffMetric::Max => px.map(|j| img[j]).max().unwrap_or(0) as f32,
                DiffMetric::Mean => px.map(|j| img[j] as u32).sum::<u32>() as f32 / n,
            }
        };
        for _ in 0..30 {
            let img = sparse_change(w, h, &mut rng);
            for (metric, t) in [(DiffMetric::Max, 10.0), (DiffMetric::Mean, 0.4)] {
                for margin in [4usize, 8, 12, 20] {
                    let growth = MaskGrowth { tiles: 0, margin };
                    let r = margin.div_ceil(cell) as isize;
                    let got = second_frame(grid, &base, &img, metric, t, growth).0;
                    let tile_of = |c: usize| {
                        let (x, y) = (c % cells.cols * cell / tile, c / cells.cols * cell / tile);
                        y * grid.cols + x
                    };
                    let passing: Vec<usize> = (0..cells.len())
                        .filter(|&c| score(&img, &cells, c, metric) > t)
                        .filter(|&c| score(&img, &grid, tile_of(c), metric) > t)
                        .collect();
                    let want: Vec<u32> = (0..grid.len())
                        .filter(|&tt| {
                            (0..cells.len()).filter(|&c| tile_of(c) == tt).any(|c| {
                                passing.iter().any(|&p| {
                                    let dx = (p % cells.cols) as isize - (c % cells.cols) as isize;
                                    let dy = (p / cells.cols) as isize - (c / cells.cols) as isize;
                                    dx.abs() <= r && dy.abs() <= r
                                })
                            })
                        })
                        .map(|tt| tt as u32)
                        .collect();
                    assert_eq!(got, want, "{metric:?} margin {margin}");
                }
            }
        }
    }

    /// Under the mean metric a margin does not make detection more sensitive: a change too small
    /// for its tile's mean fires nothing, though it passes its cell's mean.
    #[test]
    fn a_margin_keeps_the_mean_metrics_threshold_per_tile() {
        let grid = TileGrid::new(64, 32, 32);
        let base = vec![0u8; 64 * 32 * 3];
        let mut img = base.clone();
        for y in 0..8 {
            for x in 0..8 {
                img[(y * 64 + x) * 3] = 30; // cell mean 10, tile mean 0.625
            }
        }
        let growth = MaskGrowth {
            tiles: 0,
            margin: 16,
        };
        let run = |t| second_frame(grid, &base, &img, DiffMetric::Mean, t, growth).0;
        assert_eq!(run(1.0), Vec::<u32>::new());
        assert_eq!(run(0.5), vec![0]);
    }

    #[test]
    fn mean_metric_ignores_a_single_hot_pixel() {
        let grid = TileGrid::new(32, 32, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![0u8; 32 * 32 * 3];
        det.detect(&img, 1.0, DiffMetric::Mean, NONE, &mut mask);
        img[0] = 255;
        det.detect(&img, 1.0, DiffMetric::Mean, NONE, &mut mask);
        assert_eq!(mask.count(), 0);
        det.detect(&img, 1.0, DiffMetric::Max, NONE, &mut mask);
        assert_eq!(mask.count(), 1);
    }
}
