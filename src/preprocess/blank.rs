//! Regions of the frame the network is not shown (`ignore-regions`): they are painted the
//! letterbox grey in the network input before change detection, so that what changes there (an
//! on-screen clock, swaying trees, a road nobody watches) fires no tiles and gives no detections.

use super::{Letterbox, PAD_VALUE};
use crate::spec::parse_quads;

/// A rectangle of frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A rectangle of network-input pixels, `x0..x1` × `y0..y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRect {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// Parses `x,y,width,height` rectangles (frame pixels) separated by `;`. Empty: none.
pub fn parse_regions(spec: &str) -> Result<Vec<FrameRect>, String> {
    parse_quads(
        spec,
        "ignore-regions",
        "x,y,width,height (whole, not negative)",
        |[x, y, width, height]: [u32; 4]| {
            if width == 0 || height == 0 {
                return Err("width and height must be at least 1".into());
            }
            Ok(FrameRect {
                x,
                y,
                width,
                height,
            })
        },
    )
}

impl Letterbox {
    /// The network-input pixels whose value the frame rectangle `r` enters, within the `nw`×`nh`
    /// input (None when it lies outside the frame). The letterbox blends two source pixels a
    /// direction (`sampling`): output pixel X reads frame pixels floor(f) and floor(f) + 1 at
    /// f = (X + 0.5 - offset) / scale - 0.5, so it reads the span [a, b) where
    /// a - 1 < f < b. Up to a pixel more is taken on each side where the bounds are whole.
    pub fn to_net_rect(&self, r: &FrameRect, nw: usize, nh: usize) -> Option<NetRect> {
        let span = |start: u32, len: u32, frame: usize| {
            let a = (start as u64).min(frame as u64);
            let b = (start as u64 + len as u64).min(frame as u64);
            (a < b).then_some((a as f64, b as f64))
        };
        let ((ax, bx), (ay, by)) = (
            span(r.x, r.width, self.frame_w)?,
            span(r.y, r.height, self.frame_h)?,
        );
        let s = self.scale as f64;
        let lo = |a: f64, off: f32, n: usize| {
            (((a - 0.5) * s + off as f64 - 0.5).floor().max(0.0) as usize).min(n)
        };
        let hi = |b: f64, off: f32, n: usize| {
            (((b + 0.5) * s + off as f64 - 0.5).ceil().max(0.0) as usize).min(n)
        };
        Some(NetRect {
            x0: lo(ax, self.off_x, nw),
            y0: lo(ay, self.off_y, nh),
            x1: hi(bx, self.off_x, nw),
            y1: hi(by, self.off_y, nh),
        })
    }
}

/// Paints `rects` of the packed RGB image `rgb` (`width` pixels a row) the letterbox grey, each
/// clipped to the image.
pub fn blank_rects(rgb: &mut [u8], width: usize, rects: &[NetRect]) {
    for r in rects {
        let (x0, x1) = (r.x0.min(width), r.x1.min(width));
        if x0 >= x1 {
            continue;
        }
        for row in rgb.chunks_exact_mut(width * 3).take(r.y1).skip(r.y0) {
            row[x0 * 3..x1 * 3].fill(PAD_VALUE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_parse_and_bad_ones_are_named() {
        assert_eq!(parse_regions(""), Ok(vec![]));
        assert_eq!(
            parse_regions("0,0,200,40; 10, 500,30,20;"),
            Ok(vec![
                FrameRect {
                    x: 0,
                    y: 0,
                    width: 200,
                    height: 40
                },
                FrameRect {
                    x: 10,
                    y: 500,
                    width: 30,
                    height: 20
                }
            ])
        );
        for bad in ["1,2,3", "1,2,3,4,5", "a,b,c,d", "0,0,-5,4", "0,0,0,4"] {
            let e = parse_regions(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn frame_rects_cover_every_network_pixel_they_enter() {
        use crate::preprocess::{letterbox, PackedFrame};
        // Downscaled, upscaled, and at scale 1 with offsets.
        for (fw, fh, nw, nh) in [
            (768, 576, 416, 416),
            (320, 240, 416, 416),
            (200, 100, 256, 256),
        ] {
            let lb = Letterbox::fit(fw, fh, nw, nh);
            let r = FrameRect {
                x: 37,
                y: 21,
                width: 51,
                height: 33,
            };
            let n = lb.to_net_rect(&r, nw, nh).unwrap();
            // Two frames that differ only inside the rectangle give the same network input
            // outside its network rectangle.
            let plain = vec![90u8; fw * fh * 3];
            let mut other = plain.clone();
            for y in r.y as usize..(r.y + r.height) as usize {
                other[(y * fw + r.x as usize) * 3..(y * fw + (r.x + r.width) as usize) * 3]
                    .fill(250);
            }
            let net = |data: &[u8]| {
                let src = PackedFrame {
                    data,
                    width: fw,
                    height: fh,
                    stride: fw * 3,
                    bytes_per_px: 3,
                    rgb_offsets: [0, 1, 2],
                };
                let mut out = vec![0u8; nw * nh * 3];
                letterbox(&src, nw, nh, &mut out);
                blank_rects(&mut out, nw, &[n]);
                out
            };
            let (a, b) = (net(&plain), net(&other));
            let differs = a.iter().zip(&b).position(|(p, q)| p != q);
            assert_eq!(
                differs.map(|i| (i / 3 % nw, i / 3 / nw)),
                None,
                "{fw}x{fh} into {nw}x{nh}: {n:?}"
            );
            // And the rectangle is not much wider than the frame rectangle scaled.
            let want_w = r.width as f32 * lb.scale;
            assert!(
                ((n.x1 - n.x0) as f32) < want_w + 2.0 * lb.scale.max(1.0) + 2.0,
                "{n:?}"
            );
        }
        // Clipped to the frame, nothing for a rectangle outside it, no overflow at u32::MAX.
        let lb = Letterbox::fit(1280, 720, 416, 416);
        let past = FrameRect {
            x: 1200,
            y: 700,
            width: u32::MAX,
            height: u32::MAX,
        };
        let n = lb.to_net_rect(&past, 416, 416).unwrap();
        assert_eq!((n.x1, n.y1), (416, 325));
        let outside = FrameRect {
            x: u32::MAX,
            ..past
        };
        assert_eq!(lb.to_net_rect(&outside, 416, 416), None);
    }

    #[test]
    fn blanking_paints_only_the_rectangles() {
        let (w, h) = (8, 6);
        let mut rgb = vec![7u8; w * h * 3];
        let r = NetRect {
            x0: 2,
            y0: 1,
            x1: 5,
            y1: 3,
        };
        // A rectangle reaching past the image is clipped.
        let past = NetRect {
            x0: 7,
            y0: 5,
            x1: 100,
            y1: 100,
        };
        blank_rects(&mut rgb, w, &[r, past]);
        for y in 0..h {
            for x in 0..w {
                let inside = (2..5).contains(&x) && (1..3).contains(&y) || (x == 7 && y == 5);
                let want = if inside { PAD_VALUE } else { 7 };
                assert_eq!(&rgb[(y * w + x) * 3..][..3], &[want; 3], "({x}, {y})");
            }
        }
    }
}
