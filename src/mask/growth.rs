//! How far the change mask grows around a change before the network sees it: whole tiles
//! (`dilation`) and a margin in pixels measured on cells smaller than the tiles.

use super::{RegionMask, TileGrid};

/// Side of the cells change is measured on when the mask grows by a margin.
pub const CELL: usize = 8;

/// Cells smaller than this are not worth their cost (a score per few bytes): tiles that no such
/// cell divides grow by whole tiles, the margin rounded up.
const MIN_CELL: usize = 4;

/// How far the change mask grows around the changed pixels: `tiles` whole tiles, plus `margin`
/// pixels.
///
/// Without a margin, change is measured per tile and the mask grows by whole tiles. With one, a
/// tile still fires as before (its own score above the threshold), but where the change lies
/// inside it is known to the cell ([`CELL`] pixels, or the largest divisor of the tile up to that,
/// at least 4): the changed cells of fired tiles grow by the margin (rounded up to cells), a tile
/// is recomputed where a grown cell lies, and the result grows by `tiles` more. A margin of one
/// tile-size grows the mask as one more tile of dilation does. Tiles that no cell of 4 to 8
/// pixels divides are their own cells, and the margin grows them by whole tiles (rounded up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaskGrowth {
    pub tiles: usize,
    pub margin: usize,
}

impl MaskGrowth {
    /// Whole tiles only.
    pub fn whole_tiles(tiles: usize) -> Self {
        MaskGrowth { tiles, margin: 0 }
    }

    /// The side of the squares change is located on, for tiles of `tile` pixels.
    pub fn cell(&self, tile: usize) -> usize {
        let cell = gcd(tile, CELL);
        if self.margin == 0 || cell < MIN_CELL {
            tile
        } else {
            cell
        }
    }

    /// The grid of cells change is located on, for the tile grid `g` (`g` itself where the
    /// growth is by whole tiles).
    pub fn cell_grid(&self, g: &TileGrid) -> TileGrid {
        TileGrid::new(g.width, g.height, self.cell(g.tile))
    }

    /// The tiles the mask grows by once the cells are tiles: `tiles`, plus the margin where the
    /// cells are the tiles themselves.
    pub fn tile_radius(&self, tile: usize) -> usize {
        if self.cell(tile) == tile {
            self.tiles + self.margin.div_ceil(tile)
        } else {
            self.tiles
        }
    }

    /// The most cells any growth locates change on, for the tile grid `g` (buffer sizes).
    pub fn max_cells(g: &TileGrid) -> usize {
        MaskGrowth {
            tiles: 0,
            margin: 1,
        }
        .cell_grid(g)
        .len()
        .max(g.len())
    }
}

/// The host's buffers for growing changed cells into tiles (no allocation per frame once the
/// cell grid stops changing).
#[derive(Default)]
pub struct CellGrower {
    cells: RegionMask,
    scratch: RegionMask,
    tile_scratch: RegionMask,
}

impl CellGrower {
    /// The mask of changed cells to fill, for the cell grid `cells`.
    pub fn cells(&mut self, cells: &TileGrid) -> &mut RegionMask {
        if self.cells.len() != cells.len() || self.cells.cols != cells.cols {
            self.cells = RegionMask::empty(cells);
            self.scratch = RegionMask::empty(cells);
        }
        &mut self.cells
    }

    /// Grows the cells filled through [`CellGrower::cells`] into `tiles` (a mask of `g`). Where
    /// `fired` is given (the tiles whose own score passed: the mean metric, where a cell can pass
    /// in a tile that does not), only the cells of fired tiles count.
    pub fn grow(
        &mut self,
        growth: MaskGrowth,
        g: &TileGrid,
        fired: Option<&RegionMask>,
        tiles: &mut RegionMask,
    ) {
        let cg = growth.cell_grid(g);
        debug_assert_eq!(self.cells.len(), cg.len());
        if let Some(fired) = fired {
            for i in 0..cg.len() {
                if !fired.get(g.holding(&cg, i)) {
                    self.cells.set(i, false);
                }
            }
        }
        self.cells
            .dilate(growth.margin.div_ceil(cg.tile), &mut self.scratch);
        self.cells.project_cells(&cg, g, tiles);
        if self.tile_scratch.len() != tiles.len() {
            self.tile_scratch = RegionMask::empty(g);
        }
        tiles.dilate(growth.tile_radius(g.tile), &mut self.tile_scratch);
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_radii() {
        let tiles = MaskGrowth::whole_tiles(2);
        assert_eq!((tiles.cell(32), tiles.tile_radius(32)), (32, 2));
        let g = MaskGrowth {
            tiles: 1,
            margin: 12,
        };
        assert_eq!((g.cell(32), g.tile_radius(32)), (8, 1));
        // Tiles of 12 are split into cells of 4; tiles of 8 are their own cells, and so are tiles
        // of 6 (cells of 2 would be too small): the margin rounds up to whole tiles there.
        assert_eq!((g.cell(12), g.tile_radius(12)), (4, 1));
        assert_eq!((g.cell(8), g.tile_radius(8)), (8, 3));
        assert_eq!((g.cell(6), g.tile_radius(6)), (6, 3));
        let grid = TileGrid::new(100, 70, 32);
        assert_eq!(MaskGrowth::max_cells(&grid), 13 * 9);
    }

    /// Growing the changed cells by the margin, then by whole tiles, equals growing them by the
    /// whole distance in cells (the composition the grower relies on), on random masks.
    #[test]
    fn growing_in_two_steps_equals_one_step() {
        let g = TileGrid::new(100, 70, 32);
        let cg = TileGrid::new(100, 70, 8);
        let mut rng = crate::rng::Lcg(5);
        let mut grower = CellGrower::default();
        for _ in 0..50 {
            let (tiles, margin) = (
                rng.next_u32() as usize % 3,
                1 + rng.next_u32() as usize % 40,
            );
            let growth = MaskGrowth { tiles, margin };
            let mut changed = RegionMask::empty(&cg);
            for _ in 0..rng.next_u32() % 4 {
                changed.set(rng.next_u32() as usize % cg.len(), true);
            }
            assert_eq!(growth.cell_grid(&g), cg);
            let mut got = RegionMask::empty(&g);
            grower.cells(&cg).copy_from(&changed);
            grower.grow(growth, &g, None, &mut got);
            let mut want = changed.clone();
            let r = (tiles * 32 + margin).div_ceil(8);
            want.dilate(r, &mut RegionMask::empty(&cg));
            let mut want_tiles = RegionMask::empty(&g);
            want.project_cells(&cg, &g, &mut want_tiles);
            assert_eq!(got, want_tiles, "{growth:?}");
        }
    }

    /// The separable dilation equals growing each set tile by a square.
    #[test]
    fn dilation_equals_squares_around_each_set_tile() {
        let g = TileGrid::new(9 * 8, 7 * 8, 8);
        let mut rng = crate::rng::Lcg(9);
        for r in 0..5 {
            let mut m = RegionMask::empty(&g);
            for _ in 0..4 {
                m.set(rng.next_u32() as usize % g.len(), true);
            }
            let mut want = RegionMask::empty(&g);
            for i in 0..g.len() {
                let (x, y) = ((i % g.cols) as isize, (i / g.cols) as isize);
                let near = (0..g.len()).any(|j| {
                    let (u, v) = ((j % g.cols) as isize, (j / g.cols) as isize);
                    m.get(j) && (u - x).abs() <= r && (v - y).abs() <= r
                });
                want.set(i, near);
            }
            m.dilate(r as usize, &mut RegionMask::empty(&g));
            assert_eq!(m, want, "radius {r}");
        }
    }

    /// Only the cells of fired tiles grow where the fired tiles are given.
    #[test]
    fn cells_outside_fired_tiles_do_not_grow() {
        let g = TileGrid::new(96, 32, 32);
        let growth = MaskGrowth {
            tiles: 0,
            margin: 8,
        };
        let cg = growth.cell_grid(&g);
        let mut grower = CellGrower::default();
        let cells = grower.cells(&cg);
        cells.set(3, true); // the last cell of tile 0's first row: reaches tile 1
        cells.set(4 * 2 + 1, true); // inside tile 2
        let mut fired = RegionMask::empty(&g);
        fired.set(0, true);
        let mut tiles = RegionMask::empty(&g);
        grower.grow(growth, &g, Some(&fired), &mut tiles);
        let mut on = Vec::new();
        tiles.active_tiles(&mut on);
        assert_eq!(on, vec![0, 1]);
    }
}
