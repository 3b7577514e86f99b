//! Head decoders, chosen once from the model's output shapes.

use super::gate::{best_class, Candidates, Gate, GateLevel};
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
    let shapes: Vec<Vec<usize>> = outs.iter().map(|t| t.borrow().shape.clone()).collect();
    let gate = Gate::new(kind, &shapes, in_w, in_h, p.conf_threshold)?;
    let mut cands = Candidates::default();
    gate.select(outs, &mut cands)?;
    decode_candidates(&gate, &cands, p)
}

/// Decodes the anchors a gate selected (on the host or on the device) into boxes in
/// network-input pixels: the score test again at `p.conf_threshold`, the class filter, the box,
/// then NMS. The threshold may not be below the one the candidates were selected at.
pub fn decode_candidates(
    gate: &Gate,
    cands: &Candidates,
    p: &DecodeParams,
) -> Result<Vec<Detection>, String> {
    if p.conf_threshold < cands.threshold {
        return Err(format!(
            "confidence threshold {} is below the {} the candidates were selected at",
            p.conf_threshold, cands.threshold
        ));
    }
    let keep = |c: usize| p.classes.is_empty() || p.classes.contains(&(c as u32));
    let mut dets = Vec::new();
    for &k in &cands.order {
        let id = cands.ids[k as usize];
        let (level, anchor) = gate
            .locate(id)
            .ok_or_else(|| format!("candidate anchor {id} is outside the outputs"))?;
        let row = &cands.row(k)[..level.row_len()];
        let Some((c, s)) = best_class(row, level, p.conf_threshold) else {
            continue;
        };
        if !keep(c) {
            continue;
        }
        let bbox = match gate.kind {
            DecoderKind::YoloV8 | DecoderKind::YoloV5 => {
                let (cx, cy, w, h) = (row[0], row[1], row[2], row[3]);
                [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
            }
            DecoderKind::NanoDet => nanodet_box(row, level, anchor),
        };
        dets.push(Detection {
            class_id: c as u32,
            confidence: s,
            bbox,
        });
    }
    Ok(nms(dets, p.iou_threshold, p.max_detections))
}

/// A NanoDet box: each side's distance is the expectation of a softmax over its bins, in
/// strides, from the centre of the anchor's cell.
fn nanodet_box(row: &[f32], level: &GateLevel, cell: usize) -> [f32; 4] {
    let reg = &row[level.parts[0].feats..];
    let bins = reg.len() / 4;
    let stride = level.stride as f32;
    let mut dist = [0f32; 4];
    for (side, d) in dist.iter_mut().enumerate() {
        let r = &reg[side * bins..(side + 1) * bins];
        let m = r.iter().copied().fold(f32::MIN, f32::max);
        let (mut num, mut den) = (0.0, 0.0);
        for (k, &v) in r.iter().enumerate() {
            let e = (v - m).exp();
            num += e * k as f32;
            den += e;
        }
        *d = num / den * stride;
    }
    let cx = ((cell % level.cols) as f32 + 0.5) * stride;
    let cy = ((cell / level.cols) as f32 + 0.5) * stride;
    [cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]]
}
