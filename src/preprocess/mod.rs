//! Letterboxing video frames into the network's input image, and the input normalisation.

mod blank;

pub use blank::{blank_rects, parse_regions, FrameRect, NetRect};

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

/// A frame's pixels, whatever its memory format. The letterbox blends a frame's own channels
/// (R, G, B of packed frames; Y, U, V of 4:2:0 ones, chroma at each pixel's 2×2 block) and turns
/// the blend into RGB once per output pixel.
pub trait PixelSource: Sync {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    /// The frame's own three channels at integer pixel (x, y).
    fn sample(&self, x: usize, y: usize) -> [u8; 3];
    /// `sample` of the pixels `(xs[i], y)` as f32 planes: `out[c][i]` (xs has at most [`CHUNK`]
    /// entries).
    #[inline(always)]
    fn row_samples(&self, y: usize, xs: &[usize], out: &mut [[f32; CHUNK]; 3]) {
        for (i, &x) in xs.iter().enumerate() {
            let p = self.sample(x, y);
            for c in 0..3 {
                out[c][i] = p[c] as f32;
            }
        }
    }
    /// RGB bytes of the first `n` blended samples of `planes`.
    fn to_rgb(&self, planes: &[[f32; CHUNK]; 3], n: usize, out: &mut [[u8; CHUNK]; 3]);
    /// `letterbox` of this frame, compiled for its pixel format (implementations call
    /// `letterbox_with(self, ...)`).
    fn letterbox_into(&self, nw: usize, nh: usize, dst: &mut [u8]) -> Letterbox;
    /// The frame's memory, for letterboxing elsewhere (the CUDA backend's kernel).
    fn planes(&self) -> FramePlanes<'_>;
}

/// A frame's memory as a letterbox kernel reads it.
#[derive(Clone, Copy)]
pub enum FramePlanes<'a> {
    Packed(&'a PackedFrame<'a>),
    Yuv420(&'a Yuv420Frame<'a>),
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
    fn sample(&self, x: usize, y: usize) -> [u8; 3] {
        let p = y * self.stride + x * self.bytes_per_px;
        self.rgb_offsets.map(|o| self.data[p + o])
    }
    /// The blend, rounded.
    #[inline(always)]
    fn to_rgb(&self, planes: &[[f32; CHUNK]; 3], n: usize, out: &mut [[u8; CHUNK]; 3]) {
        for (plane, rgb) in planes.iter().zip(out.iter_mut()) {
            for i in 0..n {
                rgb[i] = round_u8(plane[i]);
            }
        }
    }
    fn letterbox_into(&self, nw: usize, nh: usize, dst: &mut [u8]) -> Letterbox {
        letterbox_with(self, nw, nh, dst)
    }
    fn planes(&self) -> FramePlanes<'_> {
        FramePlanes::Packed(self)
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

/// Random frames of `w`×`h` in every layout `letterbox` reads (BGRx with padded rows, RGB, I420,
/// NV12), for the tests of the host and the device letterbox.
#[doc(hidden)]
pub struct RandomFrames {
    pub w: usize,
    pub h: usize,
    pub bgrx: Vec<u8>,
    pub rgb: Vec<u8>,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl RandomFrames {
    pub fn new(w: usize, h: usize, rng: &mut crate::rng::Lcg) -> Self {
        let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.next_u32() as u8).collect() };
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        RandomFrames {
            w,
            h,
            bgrx: bytes((w * 4 + 3) * h),
            rgb: bytes(w * 3 * h),
            y: bytes(w * h),
            u: bytes(cw * 2 * ch),
            v: bytes(cw * ch),
        }
    }

    pub fn bgrx(&self) -> PackedFrame<'_> {
        PackedFrame {
            data: &self.bgrx,
            width: self.w,
            height: self.h,
            stride: self.w * 4 + 3,
            bytes_per_px: 4,
            rgb_offsets: [2, 1, 0],
        }
    }

    pub fn rgb(&self) -> PackedFrame<'_> {
        PackedFrame {
            data: &self.rgb,
            width: self.w,
            height: self.h,
            stride: self.w * 3,
            bytes_per_px: 3,
            rgb_offsets: [0, 1, 2],
        }
    }

    pub fn i420(&self) -> Yuv420Frame<'_> {
        Yuv420Frame {
            y: &self.y,
            y_stride: self.w,
            u: &self.u,
            v: &self.v,
            uv_stride: self.w.div_ceil(2),
            interleaved: false,
            width: self.w,
            height: self.h,
        }
    }

    /// NV12: `u` read as interleaved UV.
    pub fn nv12(&self) -> Yuv420Frame<'_> {
        Yuv420Frame {
            uv_stride: self.w.div_ceil(2) * 2,
            interleaved: true,
            ..self.i420()
        }
    }
}

impl PixelSource for Yuv420Frame<'_> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    #[inline]
    fn sample(&self, x: usize, y: usize) -> [u8; 3] {
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
        [self.y[y * self.y_stride + x], u, v]
    }
    #[inline(always)]
    fn row_samples(&self, y: usize, xs: &[usize], out: &mut [[f32; CHUNK]; 3]) {
        let (yrow, crow) = (y * self.y_stride, (y / 2) * self.uv_stride);
        for (i, &x) in xs.iter().enumerate() {
            out[0][i] = self.y[yrow + x] as f32;
            let (u, v) = if self.interleaved {
                let p = crow + (x / 2) * 2;
                (self.u[p], self.u[p + 1])
            } else {
                (self.u[crow + x / 2], self.v[crow + x / 2])
            };
            out[1][i] = u as f32;
            out[2][i] = v as f32;
        }
    }
    /// BT.601 limited range, R = c + 1.596·e, G = c − 0.392·d − 0.813·e, B = c + 2.017·d with
    /// c = 1.164·(Y − 16), d = U − 128, e = V − 128, rounded (the CUDA kernel does the same
    /// float operations in the same order).
    #[inline(always)]
    fn to_rgb(&self, planes: &[[f32; CHUNK]; 3], n: usize, out: &mut [[u8; CHUNK]; 3]) {
        let [yp, up, vp] = planes;
        let [r, g, b] = out;
        for i in 0..n {
            let c = 1.164 * (yp[i] - 16.0);
            let (d, e) = (up[i] - 128.0, vp[i] - 128.0);
            r[i] = round_u8(c + 1.596 * e);
            g[i] = round_u8((c - 0.392 * d) - 0.813 * e);
            b[i] = round_u8(c + 2.017 * d);
        }
    }
    fn letterbox_into(&self, nw: usize, nh: usize, dst: &mut [u8]) -> Letterbox {
        letterbox_with(self, nw, nh, dst)
    }
    fn planes(&self) -> FramePlanes<'_> {
        FramePlanes::Yuv420(self)
    }
}

/// `v.round().clamp(0.0, 255.0) as u8` (halves rounded up, NaN to 0) without a call to the C
/// library's `roundf` and in a form that vectorises.
#[inline(always)]
fn round_u8(v: f32) -> u8 {
    // SAFETY: round_clamped gives an integer in [0, 255].
    unsafe { round_clamped(v).to_int_unchecked::<u8>() }
}

/// `v` clamped to [0, 255] and rounded, halves up (NaN gives 0): the integer part, plus one
/// where the (exact) fraction is at least a half.
#[inline(always)]
#[allow(clippy::manual_clamp)] // clamp keeps NaN; max/min turn it into 0
fn round_clamped(v: f32) -> f32 {
    let v = v.max(0.0).min(255.0);
    let f = v.floor();
    f + (v - f >= 0.5) as u32 as f32
}

/// Letterboxes `src` into `dst` (packed RGB, `nw`×`nh`) with bilinear sampling.
pub fn letterbox(src: &dyn PixelSource, nw: usize, nh: usize, dst: &mut [u8]) -> Letterbox {
    src.letterbox_into(nw, nh, dst)
}

/// The letterbox of a `fw`×`fh` frame into `nw`×`nh` and its bilinear taps as flat arrays, for a
/// device kernel: per output column `cols_i[2x]`, `cols_i[2x + 1]` are the source columns (-1:
/// border) and `cols_a[x]` the weight of the second; rows likewise. The same taps as `letterbox`.
pub struct LetterboxTaps {
    pub lb: Letterbox,
    pub cols_i: Vec<i32>,
    pub cols_a: Vec<f32>,
    pub rows_i: Vec<i32>,
    pub rows_a: Vec<f32>,
}

impl LetterboxTaps {
    pub fn new(fw: usize, fh: usize, nw: usize, nh: usize) -> Self {
        let lb = Letterbox::fit(fw, fh, nw, nh);
        let flat = |taps: Vec<Option<(usize, usize, f32)>>| {
            let mut idx = Vec::with_capacity(taps.len() * 2);
            let mut a = Vec::with_capacity(taps.len());
            for t in taps {
                let (i0, i1, w) = t.map_or((-1, -1, 0.0), |(i0, i1, w)| (i0 as i32, i1 as i32, w));
                idx.extend([i0, i1]);
                a.push(w);
            }
            (idx, a)
        };
        let (cols_i, cols_a) = flat(sampling(nw, lb.off_x, lb.scale, fw));
        let (rows_i, rows_a) = flat(sampling(nh, lb.off_y, lb.scale, fh));
        LetterboxTaps {
            lb,
            cols_i,
            cols_a,
            rows_i,
            rows_a,
        }
    }
}

/// Bilinear taps along one axis: output index i samples source indices i0, i1 with weight a on
/// i1; None for indices in the border.
fn sampling(
    n_out: usize,
    offset: f32,
    scale: f32,
    n_src: usize,
) -> Vec<Option<(usize, usize, f32)>> {
    let fmax = n_src as f32;
    (0..n_out)
        .map(|i| {
            let f = (i as f32 + 0.5 - offset) / scale - 0.5;
            if f < -0.5 || f > fmax - 0.5 {
                return None;
            }
            let f = f.clamp(0.0, fmax - 1.0);
            let i0 = f.floor() as usize;
            Some((i0, (i0 + 1).min(n_src - 1), f - i0 as f32))
        })
        .collect()
}

/// Output pixels per block of the letterbox's row loop (taps gathered, then blended in vectors).
pub const CHUNK: usize = 64;

/// `letterbox` for one pixel format: the taps of every column and row are computed once, rows in
/// parallel; per block of [`CHUNK`] output pixels the four taps' RGB are gathered into planes
/// (`PixelSource::row_samples`), blended in vector registers and turned into RGB.
pub fn letterbox_with<S: PixelSource + ?Sized>(
    src: &S,
    nw: usize,
    nh: usize,
    dst: &mut [u8],
) -> Letterbox {
    use rayon::prelude::*;
    let lb = Letterbox::fit(src.width(), src.height(), nw, nh);
    let cols = sampling(nw, lb.off_x, lb.scale, src.width());
    let rows = sampling(nh, lb.off_y, lb.scale, src.height());
    // Border columns are the ones at either end.
    let first = cols.iter().position(Option::is_some).unwrap_or(nw);
    let end = cols
        .iter()
        .rposition(Option::is_some)
        .map_or(first, |i| i + 1);
    dst.par_chunks_mut(nw * 3)
        .zip(rows.par_iter())
        .for_each(|(row, ry)| {
            let Some((y0, y1, ay)) = *ry else {
                row.fill(PAD_VALUE);
                return;
            };
            row[..first * 3].fill(PAD_VALUE);
            row[end * 3..].fill(PAD_VALUE);
            let mut c0 = first;
            while c0 < end {
                let n = (end - c0).min(CHUNK);
                blend_block(
                    src,
                    &cols[c0..c0 + n],
                    y0,
                    y1,
                    ay,
                    &mut row[c0 * 3..(c0 + n) * 3],
                );
                c0 += n;
            }
        });
    lb
}

/// Bilinear blend of up to [`CHUNK`] output pixels of one row (every column inside the image).
#[inline(always)]
fn blend_block<S: PixelSource + ?Sized>(
    src: &S,
    cols: &[Option<(usize, usize, f32)>],
    y0: usize,
    y1: usize,
    ay: f32,
    out: &mut [u8],
) {
    let n = cols.len();
    let (mut xs0, mut xs1, mut ax) = ([0usize; CHUNK], [0usize; CHUNK], [0f32; CHUNK]);
    for (i, c) in cols.iter().enumerate() {
        let (x0, x1, a) = c.expect("columns inside the image");
        (xs0[i], xs1[i], ax[i]) = (x0, x1, a);
    }
    let mut p = [[[0f32; CHUNK]; 3]; 4];
    src.row_samples(y0, &xs0[..n], &mut p[0]);
    src.row_samples(y0, &xs1[..n], &mut p[1]);
    src.row_samples(y1, &xs0[..n], &mut p[2]);
    src.row_samples(y1, &xs1[..n], &mut p[3]);
    let mut blend = [[0f32; CHUNK]; 3];
    let mut rgb = [[0u8; CHUNK]; 3];
    crate::simd::vectorized(
        #[inline(always)]
        || {
            for (c, plane) in blend.iter_mut().enumerate() {
                for i in 0..n {
                    let top = p[0][c][i] * (1.0 - ax[i]) + p[1][c][i] * ax[i];
                    let bot = p[2][c][i] * (1.0 - ax[i]) + p[3][c][i] * ax[i];
                    plane[i] = top * (1.0 - ay) + bot * ay;
                }
            }
            src.to_rgb(&blend, n, &mut rgb);
        },
    );
    for (i, px) in out.chunks_exact_mut(3).enumerate() {
        px.copy_from_slice(&[rgb[0][i], rgb[1][i], rgb[2][i]]);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Lcg;

    #[test]
    fn round_u8_is_round_then_clamp() {
        let mut v = -300.0f32;
        while v < 600.0 {
            assert_eq!(round_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
            v += 0.0011;
        }
        for v in [
            -0.5,
            -0.49999997,
            0.49999997,
            0.5,
            254.5,
            255.49998,
            1e9,
            -1e9,
        ] {
            assert_eq!(round_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }

    /// `round_u8` rounds halves up and clamps, like `round` then `clamp`: around every half and
    /// integer in and beyond [0, 255] (each with its neighbouring floats), and on a fine grid.
    #[test]
    fn round_u8_rounds_and_clamps() {
        let want = |v: f32| {
            if v.is_nan() {
                0
            } else {
                v.round().clamp(0.0, 255.0) as u8
            }
        };
        let mut vals = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e30,
            -1e30,
        ];
        for k in -20..=540 {
            let v = k as f32 * 0.5;
            vals.extend([
                v,
                f32::from_bits(v.to_bits() + 1),
                f32::from_bits(v.to_bits().max(1) - 1),
            ]);
        }
        vals.extend((-4096..300 * 4096).map(|i| i as f32 / 4096.0));
        for v in vals {
            assert_eq!(round_u8(v), want(v), "{v:e}");
        }
    }

    /// A 4:2:0 frame's conversion gives what the BT.601 formula gives, rounded and clamped, on
    /// a grid of Y, U and V values (the extremes included).
    #[test]
    fn yuv_conversion_equals_the_formula() {
        let f = RandomFrames::new(2, 2, &mut Lcg(1));
        let src = f.i420();
        let values: Vec<f32> = (0..=255).step_by(5).map(|v| v as f32).collect();
        let mut planes = [[0f32; CHUNK]; 3];
        let mut out = [[0u8; CHUNK]; 3];
        for &y in &values {
            for &u in &values {
                for (i, &v) in values.iter().enumerate() {
                    (planes[0][i], planes[1][i], planes[2][i]) = (y, u, v);
                }
                src.to_rgb(&planes, values.len(), &mut out);
                for (i, &v) in values.iter().enumerate() {
                    let c = 1.164 * (y - 16.0);
                    let (d, e) = (u - 128.0, v - 128.0);
                    let cl = |v: f32| v.round().clamp(0.0, 255.0) as u8;
                    let want = [
                        cl(c + 1.596 * e),
                        cl(c - 0.392 * d - 0.813 * e),
                        cl(c + 2.017 * d),
                    ];
                    assert_eq!([out[0][i], out[1][i], out[2][i]], want, "{y} {u} {v}");
                }
            }
        }
    }

    /// A per-pixel letterbox: each output pixel's four samples blended, then made RGB.
    fn reference(src: &dyn PixelSource, nw: usize, nh: usize) -> Vec<u8> {
        let lb = Letterbox::fit(src.width(), src.height(), nw, nh);
        let (fw, fh) = (src.width() as f32, src.height() as f32);
        let mut dst = vec![0u8; nw * nh * 3];
        for y in 0..nh {
            for x in 0..nw {
                let fx = (x as f32 + 0.5 - lb.off_x) / lb.scale - 0.5;
                let fy = (y as f32 + 0.5 - lb.off_y) / lb.scale - 0.5;
                let out = &mut dst[(y * nw + x) * 3..(y * nw + x) * 3 + 3];
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
                let p = [
                    src.sample(x0, y0),
                    src.sample(x1, y0),
                    src.sample(x0, y1),
                    src.sample(x1, y1),
                ];
                let mut blend = [[0f32; CHUNK]; 3];
                for c in 0..3 {
                    let top = p[0][c] as f32 * (1.0 - ax) + p[1][c] as f32 * ax;
                    let bot = p[2][c] as f32 * (1.0 - ax) + p[3][c] as f32 * ax;
                    blend[c][0] = top * (1.0 - ay) + bot * ay;
                }
                let mut rgb = [[0u8; CHUNK]; 3];
                src.to_rgb(&blend, 1, &mut rgb);
                out.copy_from_slice(&[rgb[0][0], rgb[1][0], rgb[2][0]]);
            }
        }
        dst
    }

    /// Byte for byte what the per-pixel code gave, for packed and 4:2:0 frames, down- and
    /// upscaling, wide and tall frames (border on either axis).
    #[test]
    fn letterbox_equals_the_per_pixel_reference() {
        let mut rng = Lcg(5);
        for (w, h, nw, nh) in [(641, 359, 416, 416), (97, 203, 160, 128), (13, 7, 64, 48)] {
            let f = RandomFrames::new(w, h, &mut rng);
            let (packed, i420, nv12) = (f.bgrx(), f.i420(), f.nv12());
            let sources: [&dyn PixelSource; 3] = [&packed, &i420, &nv12];
            for src in sources {
                let mut got = vec![0u8; nw * nh * 3];
                let lb = letterbox(src, nw, nh, &mut got);
                assert_eq!(lb, Letterbox::fit(w, h, nw, nh));
                assert!(got == reference(src, nw, nh), "{w}x{h} -> {nw}x{nh}");
            }
        }
    }
}
