//! Change detection, once per frame: the tile grid, the region mask and the reference it compares with.

mod detector;
pub use detector::{ChangeDetector, DiffMetric};

/// Side of the cells change is measured on when the mask grows by pixels rather than whole tiles
/// (or the largest divisor of the tile below it).
pub const CELL: usize = 8;

/// How far the change mask grows around the changed pixels before it is rounded to tiles: whole
/// tiles, plus a margin in pixels. With no margin, change is measured per tile and the mask grows by
/// whole tiles; with one, change is measured per cell ([`CELL`] pixels), the changed cells grow by
/// the whole distance (rounded up to cells), and a tile is recomputed where any grown cell lies.
/// A margin of one tile's width grows the mask exactly as one tile of dilation does. Tiles of at
/// most a cell are their own cells, and a margin grows them by whole tiles (rounded up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Growth {
    pub tiles: usize,
    pub pixels: usize,
}

impl Growth {
    /// Whole tiles only.
    pub fn tiles(tiles: usize) -> Self {
        Growth { tiles, pixels: 0 }
    }

    /// The side of the squares change is measured on, for tiles of `tile` pixels.
    pub fn cell(&self, tile: usize) -> usize {
        if self.pixels == 0 {
            tile
        } else {
            gcd(tile, CELL)
        }
    }

    /// How many cells of [`Growth::cell`] the changed cells grow by.
    pub fn cell_radius(&self, tile: usize) -> usize {
        (self.tiles * tile + self.pixels).div_ceil(self.cell(tile))
    }

    /// The grid of cells change is measured on, for the tile grid `g`.
    pub fn cell_grid(&self, g: &TileGrid) -> TileGrid {
        TileGrid::new(g.width, g.height, self.cell(g.tile))
    }

    /// The most cells any growth measures change on, for the tile grid `g` (buffer sizes).
    pub fn max_cells(g: &TileGrid) -> usize {
        Growth {
            tiles: 0,
            pixels: 1,
        }
        .cell_grid(g)
        .len()
        .max(g.len())
    }

    /// Grows the changed cells `cells` (a mask of [`Growth::cell_grid`]) in place and sets
    /// `tiles` (a mask of `g`) to the tiles they reach. `scratch` has the size of `cells`.
    pub fn spread(
        &self,
        g: &TileGrid,
        cells: &mut RegionMask,
        scratch: &mut RegionMask,
        tiles: &mut RegionMask,
    ) {
        cells.dilate(self.cell_radius(g.tile), scratch);
        cells.project_cells(&self.cell_grid(g), g, tiles);
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

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

    /// Grows the mask by `r` tiles in every direction (Chebyshev distance), in place.
    /// `scratch` must have the same size; it avoids an allocation per call.
    pub fn dilate(&mut self, r: usize, scratch: &mut RegionMask) {
        if r == 0 {
            return;
        }
        scratch.bits.copy_from_slice(&self.bits);
        let (c, rr) = (self.cols as isize, self.rows as isize);
        let r = r as isize;
        for y in 0..rr {
            for x in 0..c {
                if !scratch.bits[(y * c + x) as usize] {
                    continue;
                }
                for yy in (y - r).max(0)..=(y + r).min(rr - 1) {
                    for xx in (x - r).max(0)..=(x + r).min(c - 1) {
                        self.bits[(yy * c + xx) as usize] = true;
                    }
                }
            }
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
        debug_assert!(tile_grid.tile.is_multiple_of(cell_grid.tile));
        let per = tile_grid.tile / cell_grid.tile;
        tiles.fill(false);
        for (i, _) in self.bits.iter().enumerate().filter(|(_, &b)| b) {
            let (x, y) = (i % cell_grid.cols / per, i / cell_grid.cols / per);
            tiles.bits[y * tile_grid.cols + x] = true;
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
    fn growth_cells_and_radius() {
        assert_eq!(
            (Growth::tiles(2).cell(32), Growth::tiles(2).cell_radius(32)),
            (32, 2)
        );
        let g = Growth {
            tiles: 1,
            pixels: 12,
        };
        // 32 + 12 pixels in cells of 8: 6 cells (48 px; the margin rounds up).
        assert_eq!((g.cell(32), g.cell_radius(32)), (8, 6));
        // A tile smaller than a cell, or not a multiple of it: the largest common divisor.
        let g = Growth {
            tiles: 0,
            pixels: 5,
        };
        assert_eq!((g.cell(4), g.cell_radius(4)), (4, 2));
        assert_eq!((g.cell(12), g.cell_radius(12)), (4, 2));
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
