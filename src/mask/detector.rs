//! Per-tile change detection against the reference: the pixels the caches currently reflect.

use super::{RegionMask, TileGrid};

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
            cursor: 0,
        }
    }

    /// Forgets the reference: the next frame is entirely changed.
    pub fn reset(&mut self) {
        self.valid = false;
    }

    /// Compares `image` (packed RGB, grid.width × grid.height) with the reference. Fills `mask` with
    /// the tiles whose difference exceeds `threshold`, grown by `dilation` tiles, and copies those
    /// tiles into the reference. Tiles below threshold keep their old reference so that slow change
    /// accumulates until it fires.
    pub fn detect(
        &mut self,
        image: &[u8],
        threshold: f32,
        metric: DiffMetric,
        dilation: usize,
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
        for i in 0..g.len() {
            let (x0, y0, x1, y1) = g.rect(i, 1, g.width, g.height);
            let mut max = 0u8;
            let mut sum = 0u64;
            for y in y0..y1 {
                let a = &image[(y * g.width + x0) * 3..(y * g.width + x1) * 3];
                let b = &self.reference[(y * g.width + x0) * 3..(y * g.width + x1) * 3];
                for (&p, &q) in a.iter().zip(b) {
                    let d = p.abs_diff(q);
                    max = max.max(d);
                    sum += d as u64;
                }
            }
            let score = match metric {
                DiffMetric::Max => max as f32,
                DiffMetric::Mean => sum as f32 / ((x1 - x0) * (y1 - y0) * 3).max(1) as f32,
            };
            mask.set(i, score > threshold);
        }
        mask.dilate(dilation, &mut self.scratch);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_drift_accumulates_until_it_fires() {
        let grid = TileGrid::new(64, 32, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![100u8; 64 * 32 * 3];
        det.detect(&img, 10.0, DiffMetric::Max, 0, &mut mask);
        assert!(mask.is_full(), "first frame is entirely changed");
        // Drift the right tile by 4 per frame: fires on the third step (12 > 10), not before.
        let mut fired = Vec::new();
        for _ in 0..3 {
            for y in 0..32 {
                for x in 32..64 {
                    img[(y * 64 + x) * 3] += 4;
                }
            }
            det.detect(&img, 10.0, DiffMetric::Max, 0, &mut mask);
            fired.push((mask.get(0), mask.get(1)));
        }
        assert_eq!(fired, vec![(false, false), (false, false), (false, true)]);
        // After firing, the reference holds the new pixels: no change now.
        det.detect(&img, 10.0, DiffMetric::Max, 0, &mut mask);
        assert_eq!(mask.count(), 0);
    }

    #[test]
    fn rolling_refresh_visits_every_tile_and_updates_the_reference() {
        let grid = TileGrid::new(96, 64, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![0u8; 96 * 64 * 3];
        det.detect(&img, 10.0, DiffMetric::Max, 0, &mut mask);
        img.iter_mut().for_each(|v| *v = 5); // below threshold everywhere
        let mut seen = RegionMask::empty(&grid);
        for _ in 0..3 {
            det.detect(&img, 10.0, DiffMetric::Max, 0, &mut mask);
            assert_eq!(mask.count(), 0);
            assert_eq!(det.refresh(&img, 2, &mut mask), 2);
            seen.union_with(&mask);
        }
        assert!(seen.is_full(), "6 refreshed tiles cover the 3x2 grid");
        assert!(det.reference().iter().all(|&v| v == 5));
    }

    #[test]
    fn mean_metric_ignores_a_single_hot_pixel() {
        let grid = TileGrid::new(32, 32, 32);
        let mut det = ChangeDetector::new(grid);
        let mut mask = RegionMask::empty(&grid);
        let mut img = vec![0u8; 32 * 32 * 3];
        det.detect(&img, 1.0, DiffMetric::Mean, 0, &mut mask);
        img[0] = 255;
        det.detect(&img, 1.0, DiffMetric::Mean, 0, &mut mask);
        assert_eq!(mask.count(), 0);
        det.detect(&img, 1.0, DiffMetric::Max, 0, &mut mask);
        assert_eq!(mask.count(), 1);
    }
}
