//! Letterboxing video frames into the network's input image, and the input normalisation.

/// How packed RGB u8 pixels become network input values: (v - mean) / std per channel, in the
/// channel order the model wants.
#[derive(Clone, Debug, PartialEq)]
pub struct InputNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Feed channels as B, G, R instead of R, G, B.
    pub bgr: bool,
}

impl InputNorm {
    /// 0..1 scaling, RGB (YOLO).
    pub fn unit_rgb() -> Self {
        InputNorm {
            mean: [0.0; 3],
            std: [255.0; 3],
            bgr: false,
        }
    }

    /// Per output channel: (source RGB channel, mean, 1/std).
    #[inline]
    pub fn channel_taps(&self) -> [(usize, f32, f32); 3] {
        let src = if self.bgr { [2, 1, 0] } else { [0, 1, 2] };
        [0, 1, 2].map(|c| (src[c], self.mean[c], 1.0 / self.std[c]))
    }
}

/// Where the frame lands inside the network input: frame = (net - offset) / scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub off_x: f32,
    pub off_y: f32,
    pub frame_w: usize,
    pub frame_h: usize,
}

impl Letterbox {
    /// Fits a frame of `fw`×`fh` into `nw`×`nh` keeping its aspect ratio, centred.
    pub fn fit(fw: usize, fh: usize, nw: usize, nh: usize) -> Self {
        let scale = (nw as f32 / fw as f32).min(nh as f32 / fh as f32);
        let (sw, sh) = ((fw as f32 * scale).round(), (fh as f32 * scale).round());
        Letterbox {
            scale,
            off_x: ((nw as f32 - sw) / 2.0).floor(),
            off_y: ((nh as f32 - sh) / 2.0).floor(),
            frame_w: fw,
            frame_h: fh,
        }
    }

    /// Network-input coordinates back to frame coordinates, clamped to the frame.
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            ((x - self.off_x) / self.scale).clamp(0.0, self.frame_w as f32),
            ((y - self.off_y) / self.scale).clamp(0.0, self.frame_h as f32),
        )
    }
}

/// Grey used for the letterbox border (the value YOLO-family training pads with).
pub const PAD_VALUE: u8 = 114;

/// Reads RGB at integer pixel (x, y) of a frame, whatever its memory format.
pub trait PixelSource: Sync {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    fn rgb(&self, x: usize, y: usize) -> [u8; 3];
}

/// Packed 3- or 4-byte-per-pixel frames with a channel order.
pub struct PackedFrame<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub bytes_per_px: usize,
    /// Byte offsets of R, G and B within a pixel.
    pub rgb_offsets: [usize; 3],
}

impl PixelSource for PackedFrame<'_> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    #[inline]
    fn rgb(&self, x: usize, y: usize) -> [u8; 3] {
        let p = y * self.stride + x * self.bytes_per_px;
        self.rgb_offsets.map(|o| self.data[p + o])
    }
}

/// Planar or semi-planar 4:2:0 YUV (I420 / NV12), BT.601 limited range.
pub struct Yuv420Frame<'a> {
    pub y: &'a [u8],
    pub y_stride: usize,
    /// I420: U and V planes. NV12: `u` holds interleaved UV and `v` is unused.
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub uv_stride: usize,
    pub interleaved: bool,
    pub width: usize,
    pub height: usize,
}

impl PixelSource for Yuv420Frame<'_> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    #[inline]
    fn rgb(&self, x: usize, y: usize) -> [u8; 3] {
        let yy = self.y[y * self.y_stride + x] as f32;
        let (cx, cy) = (x / 2, y / 2);
        let (u, v) = if self.interleaved {
            let p = cy * self.uv_stride + cx * 2;
            (self.u[p], self.u[p + 1])
        } else {
            (
                self.u[cy * self.uv_stride + cx],
                self.v[cy * self.uv_stride + cx],
            )
        };
        let c = 1.164 * (yy - 16.0);
        let (d, e) = (u as f32 - 128.0, v as f32 - 128.0);
        let cl = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        [
            cl(c + 1.596 * e),
            cl(c - 0.392 * d - 0.813 * e),
            cl(c + 2.017 * d),
        ]
    }
}

/// Letterboxes `src` into `dst` (packed RGB, `nw`×`nh`) with bilinear sampling.
pub fn letterbox(src: &dyn PixelSource, nw: usize, nh: usize, dst: &mut [u8]) -> Letterbox {
    use rayon::prelude::*;
    let lb = Letterbox::fit(src.width(), src.height(), nw, nh);
    let (fw, fh) = (src.width() as f32, src.height() as f32);
    dst.par_chunks_mut(nw * 3).enumerate().for_each(|(y, row)| {
        for x in 0..nw {
            let fx = (x as f32 + 0.5 - lb.off_x) / lb.scale - 0.5;
            let fy = (y as f32 + 0.5 - lb.off_y) / lb.scale - 0.5;
            let out = &mut row[x * 3..x * 3 + 3];
            if fx < -0.5 || fy < -0.5 || fx > fw - 0.5 || fy > fh - 0.5 {
                out.fill(PAD_VALUE);
                continue;
            }
            let (fx, fy) = (fx.clamp(0.0, fw - 1.0), fy.clamp(0.0, fh - 1.0));
            let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
            let (x1, y1) = (
                (x0 + 1).min(src.width() - 1),
                (y0 + 1).min(src.height() - 1),
            );
            let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
            let (p00, p01, p10, p11) = (
                src.rgb(x0, y0),
                src.rgb(x1, y0),
                src.rgb(x0, y1),
                src.rgb(x1, y1),
            );
            for c in 0..3 {
                let top = p00[c] as f32 * (1.0 - ax) + p01[c] as f32 * ax;
                let bot = p10[c] as f32 * (1.0 - ax) + p11[c] as f32 * ax;
                out[c] = (top * (1.0 - ay) + bot * ay).round() as u8;
            }
        }
    });
    lb
}

impl InputNorm {
    /// The normalised image as an NCHW tensor (for reference runs).
    pub fn to_nchw(&self, rgb: &[u8], w: usize, h: usize) -> Vec<f32> {
        let mut out = vec![0f32; 3 * w * h];
        for (ch, (src, mean, inv)) in self.channel_taps().into_iter().enumerate() {
            for p in 0..w * h {
                out[ch * w * h + p] = (rgb[p * 3 + src] as f32 - mean) * inv;
            }
        }
        out
    }
}
