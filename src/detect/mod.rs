//! Detections from the network outputs: head decoders (NanoDet, YOLOv8, YOLOv5), NMS, labels,
//! and the agreement score (mAP@0.5 of one detector's output against another's).

mod decode;
mod gate;
mod labels;
mod score;

pub use decode::{decode, decode_candidates, DecoderKind};
pub use gate::{best_class, Candidates, Gate, GateLevel, RowPart};
pub use labels::{load_labels, COCO_LABELS};
pub use score::{ap50_per_class, ap50_weighted, iou, map50, mean_ap50, ClassAp};

/// Lowest confidence kept when predictions are ranked for mAP (agreement_map50): the reference
/// detections are taken at the operating threshold, the scored ones down to this floor.
pub const SCORING_CONF_FLOOR: f32 = 0.05;

/// One detected object, box in network-input pixels (x0, y0, x1, y1).
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub class_id: u32,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

#[derive(Clone, Debug)]
pub struct DecodeParams {
    pub conf_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
    /// Keep only these class ids (empty = all).
    pub classes: Vec<u32>,
}

impl Default for DecodeParams {
    fn default() -> Self {
        DecodeParams {
            conf_threshold: 0.35,
            iou_threshold: 0.5,
            max_detections: 100,
            classes: Vec::new(),
        }
    }
}

/// Class-aware greedy non-maximum suppression; keeps at most `max` boxes, best first.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32, max: usize) -> Vec<Detection> {
    dets.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let mut keep: Vec<Detection> = Vec::new();
    for d in dets {
        if keep.len() >= max {
            break;
        }
        if keep
            .iter()
            .all(|k| k.class_id != d.class_id || iou(&k.bbox, &d.bbox) <= iou_threshold)
        {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(c: u32, s: f32, b: [f32; 4]) -> Detection {
        Detection {
            class_id: c,
            confidence: s,
            bbox: b,
        }
    }

    #[test]
    fn nms_suppresses_overlaps_of_the_same_class_only() {
        let out = nms(
            vec![
                det(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
                det(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
                det(1, 0.8, [1.0, 1.0, 11.0, 11.0]),
                det(0, 0.7, [50.0, 50.0, 60.0, 60.0]),
            ],
            0.5,
            10,
        );
        let got: Vec<(u32, f32)> = out.iter().map(|d| (d.class_id, d.confidence)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.8), (0, 0.7)]);
    }
}
