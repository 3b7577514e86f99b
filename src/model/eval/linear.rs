//! MatMul and the generic (dense) convolution.

use super::*;

pub(super) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() < 2 || b.rank() != 2 || a.shape[a.rank() - 1] != b.shape[0] {
        return Err(tensor_err(
            "MatMul",
            format!("unsupported shapes {:?} x {:?}", a.shape, b.shape),
        ));
    }
    let k = b.shape[0];
    let n = b.shape[1];
    let m: usize = a.shape[..a.rank() - 1].iter().product();
    checked_len("MatMul", &[m, n])?;
    let mut data = vec![0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a.data[i * k + p];
            for j in 0..n {
                data[i * n + j] += av * b.data[p * n + j];
            }
        }
    }
    let mut shape = a.shape.clone();
    *shape.last_mut().unwrap() = n;
    Ok(Tensor::new(shape, data))
}

/// The geometry of a 2-D NCHW convolution of the small tail tensors (e.g. YOLOv8's DFL 1x1 conv
/// or a squeeze-excitation block's 1x1 convs).
#[derive(Clone, Debug)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub cig: usize,
    pub kh: usize,
    pub kw: usize,
    pub group: usize,
    pub strides: [i64; 2],
    pub dilations: [i64; 2],
    /// Top and left padding.
    pub pads: [i64; 2],
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// From the node and the shapes of its input, weights and bias.
    pub fn new(node: &Node, x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<Self> {
        if x.len() != 4 || w.len() != 4 {
            return Err(tensor_err("Conv", "only 2-D convolution is supported"));
        }
        let (c, h, wd) = (x[1], x[2], x[3]);
        let (co, cig, kh, kw) = (w[0], w[1], w[2], w[3]);
        if w.contains(&0) {
            return Err(tensor_err(
                "Conv",
                format!("weights {w:?} have an empty dimension"),
            ));
        }
        let group = node.group().map_err(|reason| tensor_err("Conv", reason))?;
        let attr = |key, len, min, default| {
            node.spatial(key, len, min, default)
                .map(|v| v.into_iter().map(|x| x as i64).collect::<Vec<_>>())
                .map_err(|reason| tensor_err("Conv", reason))
        };
        let s = attr("strides", 2, 1, 1)?;
        let d = attr("dilations", 2, 1, 1)?;
        let p = attr("pads", 4, 0, 0)?;
        if node.string("auto_pad", "NOTSET") != "NOTSET" && !(kh == 1 && kw == 1) {
            return Err(tensor_err("Conv", "auto_pad in the tail is not supported"));
        }
        if cig * group != c || co % group != 0 {
            return Err(tensor_err("Conv", "channel count does not match weights"));
        }
        if b.is_some_and(|b| b.iter().product::<usize>() != co) {
            return Err(tensor_err(
                "Conv",
                "bias length differs from the output channels",
            ));
        }
        let span = |len: usize, lo: i64, hi: i64, d: i64, k: usize| {
            len as i64 + lo + hi - d * (k as i64 - 1) - 1
        };
        let (span_h, span_w) = (
            span(h, p[0], p[2], d[0], kh),
            span(wd, p[1], p[3], d[1], kw),
        );
        if span_h < 0 || span_w < 0 {
            return Err(tensor_err("Conv", "kernel larger than the padded input"));
        }
        let (oh, ow) = (span_h / s[0] + 1, span_w / s[1] + 1);
        checked_len("Conv", &[co, oh as usize, ow as usize])?;
        Ok(ConvGeom {
            c,
            h,
            w: wd,
            co,
            cig,
            kh,
            kw,
            group,
            strides: [s[0], s[1]],
            dilations: [d[0], d[1]],
            pads: [p[0], p[1]],
            oh: oh as usize,
            ow: ow as usize,
        })
    }

    pub fn out_shape(&self) -> Vec<usize> {
        vec![1, self.co, self.oh, self.ow]
    }

    /// Convolves `x` ([1, C, H, W]) with `w` ([Co, C/g, kh, kw]) plus `b` into `out` ([1, Co, oh, ow]).
    pub fn run(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.c * self.h * self.w);
        if self.ow == 0 {
            return;
        }
        for (r, dst) in out.chunks_mut(self.ow).enumerate() {
            self.run_span(x, w, b, r, 0, dst);
        }
    }

    /// Outputs `ox0 .. ox0 + dst.len()` of output row `row` (= oc · oh + oy) into `dst`. Tap by tap
    /// over the span (contiguous, so the inner loop vectorises); each output sums its bias, then
    /// its taps in (ic, ky, kx) order, as one pixel at a time would.
    #[inline(always)]
    pub fn run_span(
        &self,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        row: usize,
        ox0: usize,
        dst: &mut [f32],
    ) {
        let (h, wd, cig, kh, kw) = (self.h as i64, self.w as i64, self.cig, self.kh, self.kw);
        let ([s0, s1], [d0, d1], [p0, p1]) = (self.strides, self.dilations, self.pads);
        let (oc, oy) = (row / self.oh, row % self.oh);
        let grp = oc / (self.co / self.group);
        let ox1 = ox0 + dst.len();
        dst.fill(b.map(|b| b[oc]).unwrap_or(0.0));
        for ic in 0..cig {
            let ci = grp * cig + ic;
            for ky in 0..kh {
                let iy = oy as i64 * s0 - p0 + ky as i64 * d0;
                if iy < 0 || iy >= h {
                    continue;
                }
                let src = &x[(ci * self.h + iy as usize) * self.w..][..self.w];
                for kx in 0..kw {
                    let wv = w[((oc * cig + ic) * kh + ky) * kw + kx];
                    // Output columns whose input column ox·s1 + off lies in the row.
                    let off = kx as i64 * d1 - p1;
                    let lo = if off >= 0 { 0 } else { (-off + s1 - 1) / s1 };
                    let hi = if wd - 1 - off < 0 {
                        0
                    } else {
                        (wd - 1 - off) / s1 + 1
                    };
                    let (lo, hi) = ((lo as usize).max(ox0), (hi as usize).min(ox1));
                    if lo >= hi {
                        continue;
                    }
                    if s1 == 1 {
                        let (a, n) = ((lo as i64 + off) as usize, hi - lo);
                        for (d, &v) in dst[lo - ox0..][..n].iter_mut().zip(&src[a..a + n]) {
                            *d += wv * v;
                        }
                    } else {
                        for ox in lo..hi {
                            dst[ox - ox0] += wv * src[(ox as i64 * s1 + off) as usize];
                        }
                    }
                }
            }
        }
    }
}
