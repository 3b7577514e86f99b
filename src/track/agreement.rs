//! How far tracking on the sparse engine's detections follows tracking on the dense engine's:
//! the CLEAR MOT counts (Bernardin and Stiefelhagen, 2008) with the dense tracks as ground truth.

use super::{class_boxes, match_boxes, split_scores, TrackParams, Tracker};
use crate::detect::{iou, Detection};

/// IoU at which a detection of `other` counts as finding one of `reference` (as mAP@0.5 does).
const MATCH_IOU: f32 = 0.5;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackAgreement {
    /// Detections of the reference, over all frames.
    pub reference_boxes: usize,
    /// Reference detections found by a detection of the other run.
    pub matched: usize,
    /// Found reference detections whose object the other run now tracks under another id than
    /// when it last found that object.
    pub id_switches: usize,
    /// Detections of the other run that match none of the reference.
    pub false_positives: usize,
    /// Distinct track ids of each run.
    pub reference_tracks: usize,
    pub other_tracks: usize,
}

impl TrackAgreement {
    /// MOTA: 1 − (misses + false positives + id switches) / reference detections. None without
    /// reference detections.
    pub fn mota(&self) -> Option<f64> {
        if self.reference_boxes == 0 {
            return None;
        }
        let misses = self.reference_boxes - self.matched;
        let errors = misses + self.false_positives + self.id_switches;
        Some(1.0 - errors as f64 / self.reference_boxes as f64)
    }
}

/// Tracks both runs with `params` (a tracker each) and counts, frame by frame, how the other run's
/// detections and ids follow the reference's. As CLEAR MOT asks, a pair of the previous frame
/// that still overlaps by `MATCH_IOU` stays paired; the other boxes are matched by largest total
/// IoU. Both runs must have the same number of frames.
///
/// The runs' detections are those at or above `threshold`. Where a run also lists lower-scored
/// ones (ranked detections), those down to [`LOW_SCORE`](super::LOW_SCORE) continue tracks, as in the element with
/// its default `track-low-threshold`, and are otherwise left out ([`split_scores`]). Only what
/// the trackers report counts: the detections of tentative tracks (no id yet) are left out on
/// both sides.
pub fn track_agreement(
    reference: &[Vec<Detection>],
    other: &[Vec<Detection>],
    threshold: f32,
    params: &TrackParams,
) -> TrackAgreement {
    assert_eq!(reference.len(), other.len(), "frames of the two runs");
    let (mut ref_tracker, mut other_tracker) =
        (Tracker::new(params.clone()), Tracker::new(params.clone()));
    let (mut ref_ids, mut other_ids) = (Vec::new(), Vec::new());
    // Reference id → the other run's id when it was last found.
    let mut last_seen = std::collections::HashMap::new();
    let mut a = TrackAgreement::default();
    // (class, box) of the detections `idx` of a frame.
    let boxes = |f: &[Detection], idx: &[usize]| class_boxes(idx.iter().map(|&i| &f[i]));
    for (r, o) in reference.iter().zip(other) {
        let ((r, r_low), (o, o_low)) = (split_scores(r, threshold), split_scores(o, threshold));
        ref_tracker.update_with_low(&r, &r_low, &mut ref_ids);
        other_tracker.update_with_low(&o, &o_low, &mut other_ids);
        // What each tracker reports: the detections with ids (tentative tracks' have none).
        let (r, ref_ids) = tracked(r, &ref_ids);
        let (o, other_ids) = tracked(o, &other_ids);
        let (r, o) = (&r[..], &o[..]);
        // For each detection of `o`, the detection of `r` it finds.
        let mut found: Vec<Option<usize>> = vec![None; o.len()];
        let mut paired = vec![false; r.len()];
        for (oi, od) in o.iter().enumerate() {
            let kept = (0..r.len()).find(|&ri| {
                !paired[ri]
                    && r[ri].class_id == od.class_id
                    && last_seen.get(&ref_ids[ri]) == Some(&other_ids[oi])
                    && iou(&r[ri].bbox, &od.bbox) >= MATCH_IOU
            });
            if let Some(ri) = kept {
                found[oi] = Some(ri);
                paired[ri] = true;
            }
        }
        let rest_r: Vec<usize> = (0..r.len()).filter(|&i| !paired[i]).collect();
        let rest_o: Vec<usize> = (0..o.len()).filter(|&i| found[i].is_none()).collect();
        let rest = match_boxes(&boxes(r, &rest_r), &boxes(o, &rest_o), MATCH_IOU);
        for (&oi, m) in rest_o.iter().zip(rest) {
            found[oi] = m.map(|j| rest_r[j]);
        }
        a.reference_boxes += r.len();
        for (oi, ri) in found.iter().enumerate() {
            let Some(ri) = *ri else {
                a.false_positives += 1;
                continue;
            };
            a.matched += 1;
            let now = other_ids[oi];
            if let Some(before) = last_seen.insert(ref_ids[ri], now) {
                a.id_switches += (before != now) as usize;
            }
        }
    }
    a.reference_tracks = ref_tracker.ids_started() as usize;
    a.other_tracks = other_tracker.ids_started() as usize;
    a
}

/// The detections of `dets` that have an id in `ids`, and those ids.
fn tracked(dets: Vec<Detection>, ids: &[Option<u64>]) -> (Vec<Detection>, Vec<u64>) {
    dets.into_iter()
        .zip(ids)
        .filter_map(|(d, id)| Some((d, (*id)?)))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(x: f32) -> Detection {
        Detection {
            class_id: 0,
            confidence: 0.9,
            bbox: [x, 0.0, x + 40.0, 80.0],
        }
    }

    /// Two people walking apart for `n` frames.
    fn walk(n: usize) -> Vec<Vec<Detection>> {
        (0..n)
            .map(|f| {
                vec![
                    person(100.0 - 4.0 * f as f32),
                    person(300.0 + 4.0 * f as f32),
                ]
            })
            .collect()
    }

    #[test]
    fn the_same_detections_agree_fully() {
        let a = track_agreement(&walk(20), &walk(20), 0.35, &TrackParams::default());
        assert_eq!(a.reference_boxes, 40);
        assert_eq!((a.matched, a.id_switches, a.false_positives), (40, 0, 0));
        assert_eq!((a.reference_tracks, a.other_tracks), (2, 2));
        assert_eq!(a.mota(), Some(1.0));
    }

    #[test]
    fn a_lost_track_counts_misses_and_a_switch() {
        let reference = walk(20);
        let mut other = walk(20);
        // The other run loses the first person for longer than max_age: when found again, the
        // person has a new id.
        for f in &mut other[5..10] {
            f.remove(0);
        }
        let params = TrackParams {
            max_age: 2,
            ..TrackParams::default()
        };
        let a = track_agreement(&reference, &other, 0.35, &params);
        assert_eq!(a.matched, 35);
        assert_eq!(a.id_switches, 1);
        assert_eq!(a.false_positives, 0);
        assert_eq!((a.reference_tracks, a.other_tracks), (2, 3));
        assert_eq!(a.mota(), Some(1.0 - 6.0 / 40.0));
    }

    #[test]
    fn a_box_of_another_class_is_a_miss_and_a_false_positive() {
        let reference = walk(3);
        let mut other = walk(3);
        other[1][0].class_id = 5;
        let a = track_agreement(&reference, &other, 0.35, &TrackParams::default());
        assert_eq!((a.matched, a.false_positives), (5, 1));
        assert_eq!(a.mota(), Some(1.0 - 2.0 / 6.0));
    }

    #[test]
    fn a_score_dip_costs_misses_but_no_switch() {
        let reference = walk(12);
        let mut other = walk(12);
        // The other run scores the first person 0.2 for four frames: not a detection there, but
        // it carries the track over (max_age 1 would end it otherwise).
        for f in &mut other[4..8] {
            f[0].confidence = 0.2;
        }
        let params = TrackParams {
            max_age: 1,
            ..TrackParams::default()
        };
        let a = track_agreement(&reference, &other, 0.35, &params);
        assert_eq!((a.matched, a.id_switches, a.false_positives), (20, 0, 0));
        assert_eq!(a.other_tracks, 2);
        // Without the low scores (all of them under LOW_SCORE), the person comes back new.
        for f in &mut other[4..8] {
            f[0].confidence = 0.01;
        }
        let b = track_agreement(&reference, &other, 0.35, &params);
        assert_eq!((b.id_switches, b.other_tracks), (1, 3));
    }

    #[test]
    fn only_confirmed_tracks_count() {
        // min_hits 3: neither run reports its first two frames, and the other run's one-frame
        // extra box never gets an id, so it is no false positive.
        let params = TrackParams {
            min_hits: 3,
            ..TrackParams::default()
        };
        let reference = walk(10);
        let mut other = walk(10);
        other[5].push(person(600.0));
        let a = track_agreement(&reference, &other, 0.35, &params);
        assert_eq!(a.reference_boxes, 16);
        assert_eq!((a.matched, a.false_positives, a.id_switches), (16, 0, 0));
        // The other run sees the second person from frame 1 on: it confirms that person a frame
        // later than the reference, one miss.
        let mut late = walk(10);
        late[0].pop();
        let b = track_agreement(&reference, &late, 0.35, &params);
        assert_eq!((b.matched, b.false_positives), (15, 0));
        assert_eq!(b.mota(), Some(1.0 - 1.0 / 16.0));
    }

    #[test]
    fn extra_boxes_are_false_positives() {
        let reference = walk(4);
        let mut other = walk(4);
        other[2].push(person(600.0));
        let a = track_agreement(&reference, &other, 0.35, &TrackParams::default());
        assert_eq!((a.false_positives, a.id_switches), (1, 0));
        assert_eq!(
            track_agreement(&[], &[], 0.35, &TrackParams::default()).mota(),
            None
        );
    }
}
