//! mAP@0.5 of predicted detections against reference detections (used as ground truth).

use super::Detection;

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Mean over reference classes of the average precision (all-point interpolation) at IoU 0.5,
/// matching per frame. With no reference boxes at all: 1 if nothing was predicted, else 0.
pub fn map50(reference: &[Vec<Detection>], predicted: &[Vec<Detection>]) -> f64 {
    mean_ap50(&ap50_per_class(reference, predicted), predicted)
}

/// [`map50`] from the per-class APs of `predicted`, already computed.
pub fn mean_ap50(per_class: &[ClassAp], predicted: &[Vec<Detection>]) -> f64 {
    if per_class.is_empty() {
        return if predicted.iter().all(|p| p.is_empty()) {
            1.0
        } else {
            0.0
        };
    }
    per_class.iter().map(|c| c.ap).sum::<f64>() / per_class.len() as f64
}

/// The per-class APs averaged with each class weighted by its reference boxes, so that a class
/// seen once weighs once rather than as much as one seen thousands of times (None without
/// reference boxes). It complements [`map50`], which classes with one or two boxes can move by
/// a tenth each.
pub fn ap50_weighted(per_class: &[ClassAp]) -> Option<f64> {
    let boxes: usize = per_class.iter().map(|c| c.references).sum();
    (boxes > 0).then(|| {
        per_class
            .iter()
            .map(|c| c.ap * c.references as f64)
            .sum::<f64>()
            / boxes as f64
    })
}

/// AP@0.5 of one class against the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAp {
    pub class_id: u32,
    /// Reference boxes of this class over all frames.
    pub references: usize,
    pub ap: f64,
}

/// AP@0.5 for every class present in the reference, by class id.
pub fn ap50_per_class(reference: &[Vec<Detection>], predicted: &[Vec<Detection>]) -> Vec<ClassAp> {
    assert_eq!(reference.len(), predicted.len(), "frame counts differ");
    let mut classes: Vec<u32> = reference.iter().flatten().map(|d| d.class_id).collect();
    classes.sort();
    classes.dedup();
    classes
        .into_iter()
        .map(|c| {
            let n_gt = reference
                .iter()
                .flatten()
                .filter(|d| d.class_id == c)
                .count();
            ClassAp {
                class_id: c,
                references: n_gt,
                ap: class_ap(reference, predicted, c, n_gt),
            }
        })
        .collect()
}

fn class_ap(
    reference: &[Vec<Detection>],
    predicted: &[Vec<Detection>],
    c: u32,
    n_gt: usize,
) -> f64 {
    // (confidence, frame, detection index)
    let mut preds: Vec<(f32, usize, usize)> = predicted
        .iter()
        .enumerate()
        .flat_map(|(f, ds)| {
            ds.iter()
                .enumerate()
                .filter(|(_, d)| d.class_id == c)
                .map(move |(i, d)| (d.confidence, f, i))
        })
        .collect();
    preds.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut used: Vec<Vec<bool>> = reference.iter().map(|r| vec![false; r.len()]).collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::with_capacity(preds.len());
    for &(_, f, i) in &preds {
        let p = &predicted[f][i];
        let best = reference[f]
            .iter()
            .enumerate()
            .filter(|(j, g)| g.class_id == c && !used[f][*j])
            .map(|(j, g)| (j, iou(&g.bbox, &p.bbox)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((j, v)) if v >= 0.5 => {
                used[f][j] = true;
                tp += 1
            }
            _ => fp += 1,
        }
        curve.push((tp as f64 / n_gt as f64, tp as f64 / (tp + fp) as f64));
    }
    // All-point interpolated area under the precision envelope.
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for k in 0..curve.len() {
        let (r, _) = curve[k];
        if r > prev_recall {
            let p_env = curve[k..].iter().map(|x| x.1).fold(0.0, f64::max);
            ap += (r - prev_recall) * p_env;
            prev_recall = r;
        }
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: u32, s: f32, x: f32) -> Detection {
        Detection {
            class_id: c,
            confidence: s,
            bbox: [x, 0.0, x + 10.0, 10.0],
        }
    }

    #[test]
    fn identical_detections_score_one() {
        let r = vec![vec![d(0, 0.9, 0.0), d(1, 0.8, 20.0)], vec![d(0, 0.7, 5.0)]];
        assert!((map50(&r, &r) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_missed_box_and_a_false_box_lower_the_score() {
        let r = vec![vec![d(0, 0.9, 0.0), d(0, 0.8, 40.0)]];
        let p = vec![vec![d(0, 0.9, 0.0), d(0, 0.95, 80.0)]];
        let m = map50(&r, &p);
        // Ranked: false (0.95) then true (0.9): recall 0.5 at precision 0.5.
        assert!((m - 0.25).abs() < 1e-9, "{m}");
    }

    #[test]
    fn weighted_ap_counts_each_reference_box_once() {
        // Class 0: three boxes, all found (AP 1); class 1: one box, missed (AP 0).
        let r = vec![
            vec![d(0, 0.9, 0.0), d(1, 0.8, 40.0)],
            vec![d(0, 0.9, 0.0)],
            vec![d(0, 0.9, 0.0)],
        ];
        let p = vec![
            vec![d(0, 0.9, 0.0)],
            vec![d(0, 0.9, 0.0)],
            vec![d(0, 0.9, 0.0)],
        ];
        let per_class = ap50_per_class(&r, &p);
        assert!((map50(&r, &p) - 0.5).abs() < 1e-9);
        assert!((ap50_weighted(&per_class).unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(ap50_weighted(&[]), None);
    }
}
