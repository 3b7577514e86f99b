//! A small raster for drawing on RGB pixels: filled and outlined rectangles, thick lines, a
//! built-in 5×8 bitmap font (`font.rs`), alpha blending, labelled boxes, and PNG output (the `png`
//! crate). It draws in place on any layout of 8-bit R, G and B samples (packed RGB, BGRx, RGBA,
//! padded rows), so the overlay element draws on mapped video frames with the same code the
//! bench draws its pictures with. No system fonts or graphics libraries.

mod font;

use std::path::Path;

pub use font::{text_width, ADVANCE, GLYPH_H};

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];

/// Pixels of `w`×`h` in `px`: rows `stride` bytes apart, pixels `bpp` bytes apart, R, G and B at
/// byte offsets `rgb` within a pixel. `B` owns the bytes ([`Image`]) or borrows them (a mapped
/// frame).
pub struct Canvas<B> {
    pub w: usize,
    pub h: usize,
    pub stride: usize,
    pub bpp: usize,
    pub rgb: [usize; 3],
    pub px: B,
}

/// A canvas owning packed RGB pixels.
pub type Image = Canvas<Vec<u8>>;

impl Image {
    pub fn new(w: usize, h: usize, bg: Rgb) -> Self {
        Self::from_rgb(w, h, &bg.repeat(w * h))
    }

    pub fn from_rgb(w: usize, h: usize, data: &[u8]) -> Self {
        assert_eq!(data.len(), w * h * 3, "packed RGB of {w}x{h}");
        Canvas {
            w,
            h,
            stride: w * 3,
            bpp: 3,
            rgb: [0, 1, 2],
            px: data.to_vec(),
        }
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

impl<B: AsMut<[u8]>> Canvas<B> {
    /// The byte offset of pixel (x, y), None outside the canvas.
    #[inline]
    fn at(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && x < self.w as i64 && y < self.h as i64)
            .then(|| y as usize * self.stride + x as usize * self.bpp)
    }

    #[inline]
    pub fn put(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(p) = self.at(x, y) {
            let px = self.px.as_mut();
            for (&o, v) in self.rgb.iter().zip(c) {
                px[p + o] = v;
            }
        }
    }

    /// out = (1 - a)·pixel + a·c
    #[inline]
    pub fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f32) {
        if let Some(p) = self.at(x, y) {
            let px = self.px.as_mut();
            for (&o, src) in self.rgb.iter().zip(c) {
                let v = px[p + o] as f32 * (1.0 - a) + src as f32 * a;
                px[p + o] = v.round().clamp(0.0, 255.0) as u8;
            }
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
            for (row, bits) in font::glyph(ch).iter().enumerate() {
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

    /// A box [x0, x1) × [y0, y1) outlined `t` pixels thick in `col`, with `label` written on a
    /// strip of the same colour above it (inside it where there is no room above), in black or
    /// white, whichever reads better.
    #[allow(clippy::too_many_arguments)]
    pub fn labelled_box(
        &mut self,
        x0: i64,
        y0: i64,
        x1: i64,
        y1: i64,
        col: Rgb,
        t: i64,
        label: &str,
        scale: i64,
    ) {
        self.rect_outline(x0, y0, x1, y1, col, t);
        if label.is_empty() {
            return;
        }
        let (tw, th) = (text_width(label, scale) + 2 * scale, (GLYPH_H + 2) * scale);
        let ty = if y0 - th >= 0 { y0 - th } else { y0 };
        let tx = x0.min(self.w as i64 - tw).max(0);
        self.fill_rect(tx, ty, tx + tw, ty + th, col);
        let ink = if luma(col) > 140.0 { BLACK } else { WHITE };
        self.text(tx + scale, ty + scale, label, ink, scale);
    }
}

/// How a detection is written over its box: `label #track-id confidence`, each part after the
/// label only when known.
pub fn detection_label(label: &str, track_id: Option<u64>, confidence: Option<f64>) -> String {
    let id = track_id.map_or(String::new(), |id| format!(" #{id}"));
    let conf = confidence.map_or(String::new(), |c| format!(" {c:.2}"));
    format!("{label}{id}{conf}")
}

/// Perceived brightness of `c`, 0..255.
pub fn luma(c: Rgb) -> f32 {
    0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_on_a_padded_bgrx_view_matches_packed_rgb() {
        let (w, h) = (23, 17);
        let mut packed = Image::new(w, h, [10, 20, 30]);
        // BGRx rows padded to 100 bytes.
        let stride = 100;
        let mut bytes = vec![0u8; stride * h];
        for y in 0..h {
            for x in 0..w {
                bytes[y * stride + x * 4..][..4].copy_from_slice(&[30, 20, 10, 99]);
            }
        }
        let mut view = Canvas {
            w,
            h,
            stride,
            bpp: 4,
            rgb: [2, 1, 0],
            px: &mut bytes[..],
        };
        packed.labelled_box(2, 9, 20, 16, class_colour(3), 2, "car #7 0.91", 1);
        view.labelled_box(2, 9, 20, 16, class_colour(3), 2, "car #7 0.91", 1);
        packed.blend_rect(-5, -5, 4, 4, [255, 0, 0], 0.3);
        view.blend_rect(-5, -5, 4, 4, [255, 0, 0], 0.3);
        for y in 0..h {
            for x in 0..w {
                let p = &packed.px[(y * w + x) * 3..][..3];
                let v = &bytes[y * stride + x * 4..][..4];
                assert_eq!([v[2], v[1], v[0]], [p[0], p[1], p[2]], "({x}, {y})");
                assert_eq!(v[3], 99, "the padding byte is left alone");
            }
            assert!(bytes[y * stride + w * 4..(y + 1) * stride]
                .iter()
                .all(|&b| b == 0));
        }
        // Something was drawn: the outline's corner has the class colour.
        assert_eq!(&packed.px[(15 * w + 2) * 3..][..3], &class_colour(3));
    }
}
