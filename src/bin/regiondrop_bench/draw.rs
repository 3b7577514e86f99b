//! A small RGB raster: filled and outlined rectangles, thick lines, a built-in 5×8 bitmap font,
//! alpha blending and PNG output (the `png` crate). Enough for annotated frames, the change-mask
//! picture and the threshold plot, with no system fonts or graphics libraries.

use std::path::Path;

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];

pub struct Canvas {
    pub w: usize,
    pub h: usize,
    /// Packed RGB, row-major, no padding.
    pub px: Vec<u8>,
}

impl Canvas {
    pub fn new(w: usize, h: usize, bg: Rgb) -> Self {
        let mut px = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            px.extend_from_slice(&bg);
        }
        Canvas { w, h, px }
    }

    pub fn from_rgb(w: usize, h: usize, data: &[u8]) -> Self {
        assert_eq!(data.len(), w * h * 3, "packed RGB of {w}x{h}");
        Canvas {
            w,
            h,
            px: data.to_vec(),
        }
    }

    #[inline]
    pub fn put(&mut self, x: i64, y: i64, c: Rgb) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let p = (y as usize * self.w + x as usize) * 3;
        self.px[p..p + 3].copy_from_slice(&c);
    }

    /// out = (1 - a)·pixel + a·c
    #[inline]
    pub fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f32) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let p = (y as usize * self.w + x as usize) * 3;
        for (dst, &src) in self.px[p..p + 3].iter_mut().zip(&c) {
            let v = *dst as f32 * (1.0 - a) + src as f32 * a;
            *dst = v.round().clamp(0.0, 255.0) as u8;
        }
    }

    /// Fills [x0, x1) × [y0, y1), clipped.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        let (x0, x1) = (x0.max(0), x1.min(self.w as i64));
        let (y0, y1) = (y0.max(0), y1.min(self.h as i64));
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, c);
            }
        }
    }

    pub fn blend_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb, a: f32) {
        let (x0, x1) = (x0.max(0), x1.min(self.w as i64));
        let (y0, y1) = (y0.max(0), y1.min(self.h as i64));
        for y in y0..y1 {
            for x in x0..x1 {
                self.blend(x, y, c, a);
            }
        }
    }

    /// Outline of [x0, x1) × [y0, y1), `t` pixels thick, drawn inwards.
    pub fn rect_outline(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb, t: i64) {
        self.fill_rect(x0, y0, x1, y0 + t, c);
        self.fill_rect(x0, y1 - t, x1, y1, c);
        self.fill_rect(x0, y0, x0 + t, y1, c);
        self.fill_rect(x1 - t, y0, x1, y1, c);
    }

    #[allow(clippy::too_many_arguments)]
    /// A line `t` pixels thick; with `dash` > 0, drawn as dashes of that many pixels.
    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: Rgb, t: i64, dash: usize) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        let r0 = -(t - 1) / 2;
        for s in 0..=steps {
            if dash > 0 && (s / dash) % 2 == 1 {
                continue;
            }
            let f = s as f64 / steps as f64;
            let (x, y) = (
                (x0 + (x1 - x0) * f).round() as i64,
                (y0 + (y1 - y0) * f).round() as i64,
            );
            for dy in r0..r0 + t {
                for dx in r0..r0 + t {
                    self.put(x + dx, y + dy, c);
                }
            }
        }
    }

    /// Draws `s` with its top-left corner at (x, y), each font pixel `scale`×`scale`; returns the
    /// width drawn. Upper-case letters are drawn as lower-case; unknown characters as '?'.
    pub fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, scale: i64) -> i64 {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for (col, b) in bits.bytes().enumerate() {
                    if b == b'#' {
                        let (px, py) = (cx + col as i64 * scale, y + row as i64 * scale);
                        self.fill_rect(px, py, px + scale, py + scale, c);
                    }
                }
            }
            cx += ADVANCE * scale;
        }
        cx - x
    }

    pub fn save_png(&self, path: &Path) -> Result<(), String> {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut enc =
            png::Encoder::new(std::io::BufWriter::new(file), self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writer
            .write_image_data(&self.px)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writer
            .finish()
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Glyph cell: 5 columns of ink plus 1 column of spacing; 8 rows (the last for descenders).
pub const ADVANCE: i64 = 6;
pub const GLYPH_H: i64 = 8;

pub fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * ADVANCE * scale
}

/// A distinct colour per class id.
pub fn class_colour(id: u32) -> Rgb {
    const PALETTE: [Rgb; 12] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [170, 110, 40],
    ];
    PALETTE[id as usize % PALETTE.len()]
}

fn glyph(ch: char) -> &'static [&'static str; 8] {
    let ch = ch.to_ascii_lowercase();
    FONT.iter()
        .find(|(c, _)| *c == ch)
        .or_else(|| FONT.iter().find(|(c, _)| *c == '?'))
        .map(|(_, g)| g)
        .expect("the font has '?'")
}

// Drawn for this tool: 5×8 cells, '#' = ink.
#[rustfmt::skip]
const FONT: &[(char, [&str; 8])] = &[
    (' ', [".....", ".....", ".....", ".....", ".....", ".....", ".....", "....."]),
    ('0', [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###.", "....."]),
    ('1', ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###.", "....."]),
    ('2', [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####", "....."]),
    ('3', ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###.", "....."]),
    ('4', ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.", "....."]),
    ('5', ["#####", "#....", "####.", "....#", "....#", "#...#", ".###.", "....."]),
    ('6', ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###.", "....."]),
    ('7', ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#...", "....."]),
    ('8', [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###.", "....."]),
    ('9', [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##..", "....."]),
    ('a', [".....", ".....", ".###.", "....#", ".####", "#...#", ".####", "....."]),
    ('b', ["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####.", "....."]),
    ('c', [".....", ".....", ".###.", "#....", "#....", "#...#", ".###.", "....."]),
    ('d', ["....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####", "....."]),
    ('e', [".....", ".....", ".###.", "#...#", "#####", "#....", ".###.", "....."]),
    ('f', ["..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#...", "....."]),
    ('g', [".....", ".....", ".####", "#...#", "#...#", ".####", "....#", ".###."]),
    ('h', ["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#", "....."]),
    ('i', ["..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###.", "....."]),
    ('j', ["...#.", ".....", "..##.", "...#.", "...#.", "...#.", "#..#.", ".##.."]),
    ('k', ["#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "....."]),
    ('l', [".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###.", "....."]),
    ('m', [".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#", "....."]),
    ('n', [".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#", "....."]),
    ('o', [".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###.", "....."]),
    ('p', [".....", ".....", "####.", "#...#", "#...#", "####.", "#....", "#...."]),
    ('q', [".....", ".....", ".####", "#...#", "#...#", ".####", "....#", "....#"]),
    ('r', [".....", ".....", "#.##.", "##..#", "#....", "#....", "#....", "....."]),
    ('s', [".....", ".....", ".####", "#....", ".###.", "....#", "####.", "....."]),
    ('t', [".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##.", "....."]),
    ('u', [".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#", "....."]),
    ('v', [".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#..", "....."]),
    ('w', [".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#.", "....."]),
    ('x', [".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "....."]),
    ('y', [".....", ".....", "#...#", "#...#", "#...#", ".####", "....#", ".###."]),
    ('z', [".....", ".....", "#####", "...#.", "..#..", ".#...", "#####", "....."]),
    ('.', [".....", ".....", ".....", ".....", ".....", ".##..", ".##..", "....."]),
    (',', [".....", ".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."]),
    (':', [".....", ".##..", ".##..", ".....", ".##..", ".##..", ".....", "....."]),
    ('-', [".....", ".....", ".....", ".###.", ".....", ".....", ".....", "....."]),
    ('+', [".....", "..#..", "..#..", "#####", "..#..", "..#..", ".....", "....."]),
    ('=', [".....", ".....", "#####", ".....", "#####", ".....", ".....", "....."]),
    ('/', ["....#", "....#", "...#.", "..#..", ".#...", "#....", "#....", "....."]),
    ('%', ["##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##", "....."]),
    ('(', ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#.", "....."]),
    (')', [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#...", "....."]),
    ('_', [".....", ".....", ".....", ".....", ".....", ".....", "#####", "....."]),
    ('>', [".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#...", "....."]),
    ('<', ["...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#.", "....."]),
    ('?', [".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#..", "....."]),
    ('#', [".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#.", "....."]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_cells_are_5x8() {
        for (c, g) in FONT {
            for row in g {
                assert_eq!(row.len(), 5, "glyph {c:?}");
                assert!(row.bytes().all(|b| b == b'#' || b == b'.'), "glyph {c:?}");
            }
        }
    }
}
