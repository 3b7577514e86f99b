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
        // A box the model computed as NaN or infinite is no detection (and would match any
        // other box in NMS and tracking).
        if !bbox.iter().all(|v| v.is_finite()) {
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DecodeParams {
        DecodeParams::default()
    }

    fn dets(kind: DecoderKind, outs: &[Tensor], w: usize, h: usize) -> Vec<(u32, f32, [f32; 4])> {
        decode(kind, outs, w, h, &params())
            .unwrap()
            .into_iter()
            .map(|d| (d.class_id, d.confidence, d.bbox))
            .collect()
    }

    /// Boxes worked out by hand for each head. A NaN score never wins a class (the old YOLO
    /// decoder let a NaN score or objectness through as a NaN confidence), and a box with a NaN or
    /// infinite coordinate is dropped.
    #[test]
    fn heads_decode_to_the_boxes_worked_out_by_hand() {
        let nan = f32::NAN;
        // YOLOv8 [1, 4 + 2, 4], feature-major.
        let v8 = Tensor::new(
            vec![1, 6, 4],
            vec![
                10., 0., 50., 90., // cx
                20., 0., 50., 90., // cy
                4., 1., 10., 2., // w
                6., 1., 10., 2., // h
                0.9, 0.2, 0.4, nan, // class 0
                0.1, 0.3, 0.8, 0.6, // class 1
            ],
        );
        assert_eq!(
            dets(DecoderKind::YoloV8, &[v8], 100, 100),
            vec![
                (0, 0.9, [8., 17., 12., 23.]),
                (1, 0.8, [45., 45., 55., 55.]),
                (1, 0.6, [89., 89., 91., 91.]),
            ]
        );
        // YOLOv5 [1, 4, 5 + 2], anchor-major: the objectness multiplies the class scores and
        // must itself reach the threshold.
        let inf = f32::INFINITY;
        let v5 = Tensor::new(
            vec![1, 6, 7],
            vec![
                10., 10., 2., 2., 0.5, 0.9, 0.2, // 0.45, class 0
                30., 30., 2., 2., 0.3, 1.0, 1.0, // objectness below 0.35
                50., 50., 2., 2., 0.9, 0.3, 0.3, // 0.27 < 0.35
                70., 70., 2., 2., nan, 0.9, 0.9, // NaN objectness: nothing
                nan, 70., 2., 2., 0.9, 0.9, 0.1, // NaN centre
                80., 80., inf, 2., 0.9, 0.9, 0.1, // infinite width
            ],
        );
        assert_eq!(
            dets(DecoderKind::YoloV5, &[v5], 100, 100),
            vec![(0, 0.45, [9., 9., 11., 11.])]
        );
        // NanoDet, one level on a 4x4 input: 4 cells of stride 2, 2 classes, 2 bins per side.
        // Equal logits put each side at half a bin (1 px) from the cell centre (3, 3).
        let cls = Tensor::new(vec![1, 4, 2], vec![0.1, 0.2, 0., 0., 0., 0., 0.3, 0.7]);
        let mut reg = vec![0f32; 4 * 8];
        reg[3 * 8] = 5.0; // cell 3, left side: almost all weight on bin 0
        let reg = Tensor::new(vec![1, 4, 8], reg);
        let got = dets(DecoderKind::NanoDet, &[cls, reg], 4, 4);
        assert_eq!(got.len(), 1);
        let (c, s, b) = got[0];
        assert_eq!((c, s), (1, 0.7));
        let left = 2.0 / (1.0 + 5f32.exp()); // expectation of bins (0, 1) × stride 2
        for (g, w) in b.iter().zip([3.0 - left, 2.0, 4.0, 4.0]) {
            assert!((g - w).abs() < 1e-5, "{b:?}");
        }
    }
}
