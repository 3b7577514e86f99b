//! Head decoders, chosen once from the model's output shapes.

use super::{nms, DecodeParams, Detection};
use crate::preprocess::InputNorm;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderKind {
    /// Per level: class scores [1, cells, C] (sigmoid applied) and box distributions
    /// [1, cells, 4·bins] (distances to the four sides, softmax over bins, × stride).
    NanoDet,
    /// [1, 4+C, N]: cx, cy, w, h then class scores.
    YoloV8,
    /// [1, N, 5+C]: cx, cy, w, h, objectness then class scores.
    YoloV5,
}

impl std::str::FromStr for DecoderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nanodet" => Ok(DecoderKind::NanoDet),
            "yolov8" => Ok(DecoderKind::YoloV8),
            "yolov5" => Ok(DecoderKind::YoloV5),
            _ => Err(format!(
                "unknown decoder `{s}` (expected auto, nanodet, yolov8 or yolov5)"
            )),
        }
    }
}

impl DecoderKind {
    /// Picks the decoder from output shapes, or explains why none fits.
    pub fn detect(shapes: &[Vec<usize>]) -> Result<DecoderKind, String> {
        match shapes {
            [s] if s.len() == 3 && s[0] == 1 => {
                if s[1] > 4 && s[1] < s[2] {
                    Ok(DecoderKind::YoloV8)
                } else if s[2] > 5 && s[1] > s[2] {
                    Ok(DecoderKind::YoloV5)
                } else {
                    Err(format!(
                        "output shape {s:?} is neither [1,4+C,N] nor [1,N,5+C]"
                    ))
                }
            }
            many if many.len() >= 2 && many.len() % 2 == 0 && many.iter().all(|s| s.len() == 3) => {
                Ok(DecoderKind::NanoDet)
            }
            other => Err(format!(
                "no detection head decoder fits the output shapes {other:?}"
            )),
        }
    }

    /// The input normalisation the head family was trained with.
    pub fn input_norm(self) -> InputNorm {
        match self {
            DecoderKind::NanoDet => InputNorm {
                mean: [103.53, 116.28, 123.675],
                std: [57.375, 57.12, 58.395],
                bgr: true,
            },
            DecoderKind::YoloV8 | DecoderKind::YoloV5 => InputNorm::unit_rgb(),
        }
    }
}

/// Decodes outputs of a network with input `in_w`×`in_h` into boxes in network-input pixels.
pub fn decode<T: std::borrow::Borrow<Tensor>>(
    kind: DecoderKind,
    outs: &[T],
    in_w: usize,
    in_h: usize,
    p: &DecodeParams,
) -> Result<Vec<Detection>, String> {
    let keep = |c: usize| p.classes.is_empty() || p.classes.contains(&(c as u32));
    let mut dets = Vec::new();
    match kind {
        DecoderKind::YoloV8 | DecoderKind::YoloV5 => {
            let t = outs.first().ok_or("no output")?.borrow();
            let v8 = kind == DecoderKind::YoloV8;
            let (rows, n) = if v8 {
                (t.shape[1], t.shape[2])
            } else {
                (t.shape[2], t.shape[1])
            };
            let at = |r: usize, i: usize| {
                if v8 {
                    t.data[r * n + i]
                } else {
                    t.data[i * rows + r]
                }
            };
            let first_class = if v8 { 4 } else { 5 };
            for i in 0..n {
                let obj = if v8 { 1.0 } else { at(4, i) };
                if obj < p.conf_threshold {
                    continue;
                }
                let (c, s) = (first_class..rows)
                    .map(|r| (r - first_class, at(r, i) * obj))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((0, 0.0));
                if s < p.conf_threshold || !keep(c) {
                    continue;
                }
                let (cx, cy, w, h) = (at(0, i), at(1, i), at(2, i), at(3, i));
                dets.push(Detection {
                    class_id: c as u32,
                    confidence: s,
                    bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                });
            }
        }
        DecoderKind::NanoDet => {
            let half = outs.len() / 2;
            for lvl in 0..half {
                let (a, b) = (outs[lvl].borrow(), outs[lvl + half].borrow());
                // The class tensor is the one whose width is not 4 × bins; check by cell count.
                let (cls, reg) =
                    if b.shape[2] % 4 == 0 && (a.shape[2] % 4 != 0 || a.shape[2] > b.shape[2]) {
                        (a, b)
                    } else {
                        (b, a)
                    };
                let cells = cls.shape[1];
                if reg.shape[1] != cells {
                    return Err(format!(
                        "NanoDet level {lvl}: {cells} class cells but {} box cells",
                        reg.shape[1]
                    ));
                }
                let stride = ((in_w * in_h) as f64 / cells as f64).sqrt().round() as usize;
                let cols = in_w / stride.max(1);
                let nc = cls.shape[2];
                let bins = reg.shape[2] / 4;
                let mut dist = [0f32; 4];
                for cell in 0..cells {
                    let scores = &cls.data[cell * nc..(cell + 1) * nc];
                    // Most cells score below the threshold: the best score first (a loop that
                    // vectorises, never NaN), its class only where it passes (the last of equal
                    // scores).
                    let s = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if s < p.conf_threshold {
                        continue;
                    }
                    let c = scores.iter().rposition(|&v| v == s).expect("the maximum");
                    if !keep(c) {
                        continue;
                    }
                    for (side, d) in dist.iter_mut().enumerate() {
                        let r = &reg.data
                            [cell * 4 * bins + side * bins..cell * 4 * bins + (side + 1) * bins];
                        let m = r.iter().copied().fold(f32::MIN, f32::max);
                        let (mut num, mut den) = (0.0, 0.0);
                        for (k, &v) in r.iter().enumerate() {
                            let e = (v - m).exp();
                            num += e * k as f32;
                            den += e;
                        }
                        *d = num / den * stride as f32;
                    }
                    let cx = ((cell % cols) as f32 + 0.5) * stride as f32;
                    let cy = ((cell / cols) as f32 + 0.5) * stride as f32;
                    dets.push(Detection {
                        class_id: c as u32,
                        confidence: s,
                        bbox: [cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]],
                    });
                }
            }
        }
    }
    Ok(nms(dets, p.iou_threshold, p.max_detections))
}
