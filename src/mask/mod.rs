//! Change detection, once per frame: the tile grid, the region mask and the reference it compares with.

mod detector;
mod growth;
pub use detector::{ChangeDetector, DiffMetric};
pub use growth::{CellGrower, MaskGrowth, CELL};

/// The grid of T×T input-pixel tiles that every layer shares (a layer of stride s sees T/s × T/s
/// feature pixels per tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGrid {
    pub tile: usize,
    /// Network input size in pixels.
    pub width: usize,
    pub height: usize,
    /// Tiles across and down (the last row/column may be partial).
    pub cols: usize,
    pub rows: usize,
}

impl TileGrid {
    pub fn new(width: usize, height: usize, tile: usize) -> Self {
        TileGrid {
            tile,
            width,
            height,
            cols: width.div_ceil(tile),
            rows: height.div_ceil(tile),
        }
    }

    pub fn len(&self) -> usize {
        self.cols * self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tile of this grid holding square `i` of `cells`, a grid of the same image whose squares
    /// divide the tiles.
    #[inline]
    pub fn holding(&self, cells: &TileGrid, i: usize) -> usize {
        debug_assert!(self.tile.is_multiple_of(cells.tile));
        let per = self.tile / cells.tile;
        i / cells.cols / per * self.cols + i % cells.cols / per
    }

    /// Pixel rectangle (x0, y0, x1, y1) of tile `i` in a map downscaled by `scale`.
    #[inline]
    pub fn rect(
        &self,
        i: usize,
        scale: usize,
        map_w: usize,
        map_h: usize,
    ) -> (usize, usize, usize, usize) {
        let ts = self.tile / scale;
        let (tx, ty) = (i % self.cols, i / self.cols);
        (
            (tx * ts).min(map_w),
            (ty * ts).min(map_h),
            ((tx + 1) * ts).min(map_w),
            ((ty + 1) * ts).min(map_h),
        )
    }
}

/// Writes, for each of `n` positions of a line, whether `get` is set within `r` positions of it:
/// one sweep each way, remembering the nearest set position behind.
fn spread_line(n: usize, r: usize, get: impl Fn(usize) -> bool, mut put: impl FnMut(usize, bool)) {
    let mut last = None;
    for i in 0..n {
        if get(i) {
            last = Some(i);
        }
        put(i, last.is_some_and(|l| i - l <= r));
    }
    let mut next = None;
    for i in (0..n).rev() {
        if get(i) {
            next = Some(i);
        }
        if next.is_some_and(|j| j - i <= r) {
            put(i, true);
        }
    }
}

/// One bit per tile: the tiles to recompute this frame.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegionMask {
    pub cols: usize,
    pub rows: usize,
    bits: Vec<bool>,
}

impl RegionMask {
    pub fn empty(grid: &TileGrid) -> Self {
        RegionMask {
            cols: grid.cols,
            rows: grid.rows,
            bits: vec![false; grid.len()],
        }
    }

    pub fn full(grid: &TileGrid) -> Self {
        RegionMask {
            cols: grid.cols,
            rows: grid.rows,
            bits: vec![true; grid.len()],
        }
    }

    pub fn len(&self) -> usize {
        self.bits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    pub fn get(&self, i: usize) -> bool {
        self.bits[i]
    }

    pub fn set(&mut self, i: usize, v: bool) {
        self.bits[i] = v;
    }

    pub fn fill(&mut self, v: bool) {
        self.bits.iter_mut().for_each(|b| *b = v);
    }

    pub fn count(&self) -> usize {
        self.bits.iter().filter(|&&b| b).count()
    }

    pub fn fraction(&self) -> f64 {
        if self.bits.is_empty() {
            0.0
        } else {
            self.count() as f64 / self.bits.len() as f64
        }
    }

    pub fn is_full(&self) -> bool {
        self.bits.iter().all(|&b| b)
    }

    pub fn union_with(&mut self, other: &RegionMask) {
        for (a, &b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    pub fn intersect_with(&mut self, other: &RegionMask) {
        for (a, &b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= b;
        }
    }

    pub fn copy_from(&mut self, other: &RegionMask) {
        self.bits.copy_from_slice(&other.bits);
    }

    /// Grows the mask by `r` tiles in every direction (Chebyshev distance), in place: a pass
    /// along the rows into `scratch` (same size; no allocation per call), then one down the
    /// columns back, each linear in the mask's size whatever `r`.
    pub fn dilate(&mut self, r: usize, scratch: &mut RegionMask) {
        if r == 0 {
            return;
        }
        let (c, rows) = (self.cols, self.rows);
        for y in 0..rows {
            let at = |x: usize| y * c + x;
            spread_line(c, r, |x| self.bits[at(x)], |x, v| scratch.bits[at(x)] = v);
        }
        for x in 0..c {
            let at = |y: usize| y * c + x;
            spread_line(
                rows,
                r,
                |y| scratch.bits[at(y)],
                |y, v| self.bits[at(y)] = v,
            );
        }
    }

    /// Sets in `tiles` (a mask of the grid `tile_grid`) every tile holding a set cell of this mask,
    /// a mask of `cell_grid` whose cells divide the tiles, and clears the others.
    pub fn project_cells(
        &self,
        cell_grid: &TileGrid,
        tile_grid: &TileGrid,
        tiles: &mut RegionMask,
    ) {
        tiles.fill(false);
        for (i, _) in self.bits.iter().enumerate().filter(|(_, &b)| b) {
            tiles.bits[tile_grid.holding(cell_grid, i)] = true;
        }
    }

    /// Writes the indices of set tiles into `out` (cleared first; no allocation once warmed up).
    pub fn active_tiles(&self, out: &mut Vec<u32>) {
        out.clear();
        out.extend(
            self.bits
                .iter()
                .enumerate()
                .filter(|(_, &b)| b)
                .map(|(i, _)| i as u32),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_partial_border_tiles() {
        let g = TileGrid::new(100, 70, 32);
        assert_eq!((g.cols, g.rows), (4, 3));
        assert_eq!(g.rect(3, 1, 100, 70), (96, 0, 100, 32));
        assert_eq!(g.rect(11, 1, 100, 70), (96, 64, 100, 70));
        // At stride 4 a tile is 8 feature pixels.
        assert_eq!(g.rect(5, 4, 25, 18), (8, 8, 16, 16));
    }

    #[test]
    fn dilation_grows_by_radius_and_clips_at_border() {
        let g = TileGrid::new(5 * 32, 4 * 32, 32);
        let mut m = RegionMask::empty(&g);
        m.set(0, true);
        m.set(2 * 5 + 3, true);
        let mut scratch = RegionMask::empty(&g);
        m.dilate(1, &mut scratch);
        let mut tiles = Vec::new();
        m.active_tiles(&mut tiles);
        assert_eq!(tiles, vec![0, 1, 5, 6, 7, 8, 9, 12, 13, 14, 17, 18, 19]);
        assert_eq!(m.count(), 13);
    }

    #[test]
    fn cells_project_onto_the_tiles_holding_them() {
        // 100 x 70 pixels: tiles of 32 (4 x 3, partial at the right and bottom), cells of 8.
        let tiles = TileGrid::new(100, 70, 32);
        let cells = TileGrid::new(100, 70, 8);
        assert_eq!((cells.cols, cells.rows), (13, 9));
        let mut c = RegionMask::empty(&cells);
        c.set(0, true); // tile 0
        c.set(3 * 13 + 4, true); // pixel (32, 24): tile 1
        c.set(8 * 13 + 12, true); // the partial corner cell: tile 11
        let mut t = RegionMask::full(&tiles);
        c.project_cells(&cells, &tiles, &mut t);
        let mut on = Vec::new();
        t.active_tiles(&mut on);
        assert_eq!(on, vec![0, 1, 11]);
    }
}
