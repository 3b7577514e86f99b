//! Per-tile change detection against the reference: the pixels the caches currently reflect.

use super::{Growth, RegionMask, TileGrid};

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
    /// The changed cells where the mask grows by pixels (sized for the last cell grid used).
    cells: RegionMask,
    cells_scratch: RegionMask,
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
            cells: RegionMask::default(),
            cells_scratch: RegionMask::default(),
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
        growth: Growth,
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
            // Cells as large as the tiles (no margin, or tiles of at most a cell).
            changed(&g, mask);
            mask.dilate(growth.cell_radius(g.tile), &mut self.scratch);
        } else {
            if self.cells.len() != cells.len() {
                self.cells = RegionMask::empty(&cells);
                self.cells_scratch = RegionMask::empty(&cells);
            }
            changed(&cells, &mut self.cells);
            growth.spread(&g, &mut self.cells, &mut self.cells_scratch, mask);
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

    #[test]
    fn slow_drift_accumulates_until_it_fires() {
        let grid = TileGrid::new(64, 32, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![100u8; 64 * 32 * 3];
        det.detect(&img, 10.0, DiffMetric::Max, Growth::tiles(0), &mut mask);
        assert!(mask.is_full(), "first frame is entirely changed");
        // Drift the right tile by 4 per frame: fires on the third step (12 > 10), not before.
        let mut fired = Vec::new();
        for _ in 0..3 {
            for y in 0..32 {
                for x in 32..64 {
                    img[(y * 64 + x) * 3] += 4;
                }
            }
            det.detect(&img, 10.0, DiffMetric::Max, Growth::tiles(0), &mut mask);
            fired.push((mask.get(0), mask.get(1)));
        }
        assert_eq!(fired, vec![(false, false), (false, false), (false, true)]);
        // After firing, the reference holds the new pixels: no change now.
        det.detect(&img, 10.0, DiffMetric::Max, Growth::tiles(0), &mut mask);
        assert_eq!(mask.count(), 0);
    }

    #[test]
    fn rolling_refresh_visits_every_tile_and_updates_the_reference() {
        let grid = TileGrid::new(96, 64, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![0u8; 96 * 64 * 3];
        det.detect(&img, 10.0, DiffMetric::Max, Growth::tiles(0), &mut mask);
        img.iter_mut().for_each(|v| *v = 5); // below threshold everywhere
        let mut seen = RegionMask::empty(&grid);
        for _ in 0..3 {
            det.detect(&img, 10.0, DiffMetric::Max, Growth::tiles(0), &mut mask);
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

    /// A margin of one tile grows the mask exactly as one tile of dilation; a half-tile margin
    /// reaches a neighbour only where the change is within half a tile of it.
    #[test]
    fn pixel_margins_grow_from_the_changed_cells() {
        let grid = TileGrid::new(100, 70, 32);
        let run = |img: &[u8], base: &[u8], growth: Growth| {
            let mut det = ChangeDetector::new(grid);
            let mut mask = RegionMask::empty(&grid);
            det.detect(base, 10.0, DiffMetric::Max, growth, &mut mask);
            det.detect(img, 10.0, DiffMetric::Max, growth, &mut mask);
            let mut tiles = Vec::new();
            mask.active_tiles(&mut tiles);
            (tiles, det.reference().to_vec())
        };
        let base = vec![0u8; 100 * 70 * 3];
        let mut rng = crate::rng::Lcg(11);
        for _ in 0..20 {
            let mut img = base.clone();
            for _ in 0..1 + rng.next_u32() % 4 {
                let p = rng.next_u32() as usize % (100 * 70);
                img[p * 3 + 1] = 200;
            }
            for d in 0..3 {
                let pixels = Growth {
                    tiles: 0,
                    pixels: 32 * d,
                };
                assert_eq!(run(&img, &base, pixels), run(&img, &base, Growth::tiles(d)));
            }
        }
        // Margin 16 (two cells): (40, 40) grows to pixels 24..64 both ways, tiles 0, 1, 4 and 5;
        // (90, 10) to x 72..100, y 0..32, tiles 2 and 3 but not 1 (which ends at x 64).
        let mut img = base.clone();
        img[(40 * 100 + 40) * 3] = 99;
        img[(10 * 100 + 90) * 3] = 99;
        let (tiles, reference) = run(
            &img,
            &base,
            Growth {
                tiles: 0,
                pixels: 16,
            },
        );
        assert_eq!(tiles, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(reference, img, "both changes are taken into the reference");
        // Margin 8 (one cell): (44, 52) grows to x 32..56, y 40..64, inside tile 5 alone.
        let mut img = base.clone();
        img[(52 * 100 + 44) * 3] = 99;
        img[(10 * 100 + 90) * 3] = 99;
        let (tiles, _) = run(
            &img,
            &base,
            Growth {
                tiles: 0,
                pixels: 8,
            },
        );
        assert_eq!(tiles, vec![2, 3, 5]);
    }

    #[test]
    fn mean_metric_ignores_a_single_hot_pixel() {
        let grid = TileGrid::new(32, 32, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![0u8; 32 * 32 * 3];
        det.detect(&img, 1.0, DiffMetric::Mean, Growth::tiles(0), &mut mask);
        img[0] = 255;
        det.detect(&img, 1.0, DiffMetric::Mean, Growth::tiles(0), &mut mask);
        assert_eq!(mask.count(), 0);
        det.detect(&img, 1.0, DiffMetric::Max, Growth::tiles(0), &mut mask);
        assert_eq!(mask.count(), 1);
    }
}
