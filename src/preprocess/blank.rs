//! Regions of the frame the network is not shown (`ignore-regions`): they are painted the
//! letterbox grey in the network input before change detection, so that what changes there (an
//! on-screen clock, swaying trees, a road nobody watches) fires no tiles and gives no detections.

use super::{Letterbox, PAD_VALUE};

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
    spec.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let bad = |why: &str| format!("ignore-regions: `{r}`: {why}");
            let v: Vec<u32> = r
                .split(',')
                .map(|n| n.trim().parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad("expected four whole numbers of pixels, x,y,width,height"))?;
            let [x, y, width, height] = v[..] else {
                return Err(bad("expected four numbers, x,y,width,height"));
            };
            if width == 0 || height == 0 {
                return Err(bad("width and height must be at least 1"));
            }
            Ok(FrameRect {
                x,
                y,
                width,
                height,
            })
        })
        .collect()
}

impl Letterbox {
    /// The network-input pixels that frame rectangle `r` touches, within the `nw`×`nh` input
    /// (None when it lies outside the frame).
    pub fn to_net_rect(&self, r: &FrameRect, nw: usize, nh: usize) -> Option<NetRect> {
        let fx0 = (r.x as usize).min(self.frame_w) as f32;
        let fy0 = (r.y as usize).min(self.frame_h) as f32;
        let fx1 = (r.x as usize + r.width as usize).min(self.frame_w) as f32;
        let fy1 = (r.y as usize + r.height as usize).min(self.frame_h) as f32;
        if fx0 >= fx1 || fy0 >= fy1 {
            return None;
        }
        let to_net = |v: f32, off: f32, max: usize, round: fn(f32) -> f32| {
            (round(v * self.scale + off).max(0.0) as usize).min(max)
        };
        Some(NetRect {
            x0: to_net(fx0, self.off_x, nw, f32::floor),
            y0: to_net(fy0, self.off_y, nh, f32::floor),
            x1: to_net(fx1, self.off_x, nw, f32::ceil),
            y1: to_net(fy1, self.off_y, nh, f32::ceil),
        })
    }
}

/// Paints `rects` of the packed RGB image `rgb` (`width` pixels a row) the letterbox grey.
pub fn blank_rects(rgb: &mut [u8], width: usize, rects: &[NetRect]) {
    for r in rects {
        for row in rgb.chunks_exact_mut(width * 3).take(r.y1).skip(r.y0) {
            row[r.x0 * 3..r.x1 * 3].fill(PAD_VALUE);
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
    fn frame_rects_cover_their_network_pixels() {
        // 1280×720 into 416×416: scale 0.325, 416×234 placed 91 rows down.
        let lb = Letterbox::fit(1280, 720, 416, 416);
        let r = FrameRect {
            x: 100,
            y: 10,
            width: 301,
            height: 30,
        };
        let n = lb.to_net_rect(&r, 416, 416).unwrap();
        // 100 × 0.325 = 32.5 → 32; 401 × 0.325 = 130.3 → 131; rows 91 + 3.25 → 94, 91 + 13 = 104.
        assert_eq!(
            n,
            NetRect {
                x0: 32,
                y0: 94,
                x1: 131,
                y1: 104
            }
        );
        // Clipped to the frame, and nothing for a rectangle outside it.
        let past = FrameRect {
            x: 1200,
            y: 700,
            width: 500,
            height: 500,
        };
        let n = lb.to_net_rect(&past, 416, 416).unwrap();
        assert_eq!((n.x1, n.y1), (416, 325));
        let outside = FrameRect { x: 1280, ..past };
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
        blank_rects(&mut rgb, w, &[r]);
        for y in 0..h {
            for x in 0..w {
                let inside = (2..5).contains(&x) && (1..3).contains(&y);
                let want = if inside { PAD_VALUE } else { 7 };
                assert_eq!(&rgb[(y * w + x) * 3..][..3], &[want; 3], "({x}, {y})");
            }
        }
    }
}
