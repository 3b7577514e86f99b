//! Tracking: gives each detection the id of the object it continues from earlier frames.
//!
//! SORT-style, on the detections alone (no appearance features): every track predicts where its
//! box is now ([`motion::BoxMotion`]); detections are matched to the predicted boxes of the same
//! class so that the total IoU is largest (Hungarian assignment from `pathfinding`), pairs under
//! `min_iou` are not matched; a detection left over starts a new track with a new id, and a track
//! left without a detection for more than `max_age` frames ends. Ids count up from 1 and are never
//! reused by one tracker, also across [`Tracker::reset`].

mod agreement;
mod motion;

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

use crate::detect::{iou, Detection};
pub use agreement::{track_agreement, TrackAgreement};
pub use motion::BoxMotion;

#[derive(Clone, Debug, PartialEq)]
pub struct TrackParams {
    /// Lowest IoU between a track's predicted box and a detection that continues it.
    pub min_iou: f32,
    /// Frames a track survives without a detection before its id ends.
    pub max_age: u32,
}

impl Default for TrackParams {
    fn default() -> Self {
        TrackParams {
            min_iou: 0.3,
            max_age: 30,
        }
    }
}

#[derive(Clone, Debug)]
struct Track {
    id: u64,
    class_id: u32,
    motion: BoxMotion,
    /// Frames since the last detection.
    misses: u32,
}

/// IoU in the integer weights of the assignment (kuhn_munkres needs a totally ordered type).
const IOU_UNITS: f32 = 1_000_000.0;

#[derive(Clone, Debug)]
pub struct Tracker {
    pub params: TrackParams,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(params: TrackParams) -> Self {
        Tracker {
            params,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Tracks alive now (matched within the last `max_age` frames).
    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// Ends every track (after a seek or a new stream); later ids still count on.
    pub fn reset(&mut self) {
        self.tracks.clear();
    }

    /// Advances one frame: `ids` receives the track id of each detection, in order.
    pub fn update(&mut self, detections: &[Detection], ids: &mut Vec<u64>) {
        for t in &mut self.tracks {
            t.motion.predict();
            t.misses += 1;
        }
        let matched = self.assign(detections);
        ids.clear();
        for (d, track) in detections.iter().zip(matched) {
            let id = match track {
                Some(ti) => {
                    let t = &mut self.tracks[ti];
                    t.motion.update(&d.bbox);
                    t.misses = 0;
                    t.id
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.tracks.push(Track {
                        id,
                        class_id: d.class_id,
                        motion: BoxMotion::new(&d.bbox),
                        misses: 0,
                    });
                    id
                }
            };
            ids.push(id);
        }
        let max_age = self.params.max_age;
        self.tracks.retain(|t| t.misses <= max_age);
    }

    /// For each detection, the track (index into `self.tracks`) that continues into it.
    fn assign(&self, detections: &[Detection]) -> Vec<Option<usize>> {
        let predicted: Vec<(u32, [f32; 4])> = self
            .tracks
            .iter()
            .map(|t| (t.class_id, t.motion.bbox()))
            .collect();
        let found: Vec<(u32, [f32; 4])> = detections.iter().map(|d| (d.class_id, d.bbox)).collect();
        match_boxes(&predicted, &found, self.params.min_iou)
    }
}

/// Matches boxes `b` to boxes `a` of the same class (class id, box) so that the total IoU is
/// largest, pairs under `min_iou` left out: for each of `b`, the index of its match in `a`.
pub fn match_boxes(
    a: &[(u32, [f32; 4])],
    b: &[(u32, [f32; 4])],
    min_iou: f32,
) -> Vec<Option<usize>> {
    let mut matched = vec![None; b.len()];
    let mut classes: Vec<u32> = b.iter().map(|x| x.0).collect();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let of = |v: &[(u32, [f32; 4])]| -> Vec<usize> {
            (0..v.len()).filter(|&i| v[i].0 == class).collect()
        };
        let (ai, bi) = (of(a), of(b));
        if ai.is_empty() {
            continue;
        }
        let weight = |x: usize, y: usize| -> i64 {
            let v = iou(&a[ai[x]].1, &b[bi[y]].1);
            if v >= min_iou && v > 0.0 {
                (v * IOU_UNITS).round() as i64
            } else {
                0
            }
        };
        // The assignment wants no more rows than columns.
        let a_rows = ai.len() <= bi.len();
        let (rows, cols) = if a_rows {
            (ai.len(), bi.len())
        } else {
            (bi.len(), ai.len())
        };
        let m = Matrix::from_fn(
            rows,
            cols,
            |(r, c)| {
                if a_rows {
                    weight(r, c)
                } else {
                    weight(c, r)
                }
            },
        );
        let (_, cols_of_rows) = kuhn_munkres(&m);
        for (r, c) in cols_of_rows.into_iter().enumerate() {
            // A zero weight is a pair under min_iou: the assignment pads with those.
            if m[(r, c)] > 0 {
                let (x, y) = if a_rows { (r, c) } else { (c, r) };
                matched[bi[y]] = Some(ai[x]);
            }
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: u32, x: f32, y: f32) -> Detection {
        Detection {
            class_id,
            confidence: 0.9,
            bbox: [x, y, x + 40.0, y + 80.0],
        }
    }

    fn run(tracker: &mut Tracker, frame: &[Detection]) -> Vec<u64> {
        let mut ids = Vec::new();
        tracker.update(frame, &mut ids);
        assert_eq!(ids.len(), frame.len());
        ids
    }

    #[test]
    fn moving_objects_keep_their_ids() {
        let mut t = Tracker::new(TrackParams::default());
        let first = run(&mut t, &[det(0, 0.0, 0.0), det(0, 300.0, 200.0)]);
        assert_eq!(first, vec![1, 2]);
        for f in 1..30 {
            let x = 6.0 * f as f32;
            // Listed in the other order: ids follow the boxes, not the positions in the list.
            let ids = run(&mut t, &[det(0, 300.0 - x, 200.0), det(0, x, 0.0)]);
            assert_eq!(ids, vec![2, 1], "frame {f}");
        }
        assert_eq!(t.live_tracks(), 2);
    }

    #[test]
    fn crossing_objects_keep_their_ids_through_the_overlap() {
        // Two people walk towards each other on one line and pass; 8 px per frame each.
        let mut t = Tracker::new(TrackParams::default());
        run(&mut t, &[det(0, 0.0, 0.0), det(0, 400.0, 4.0)]);
        for f in 1..50 {
            let a = 8.0 * f as f32;
            let ids = run(&mut t, &[det(0, a, 0.0), det(0, 400.0 - a, 4.0)]);
            assert_eq!(ids, vec![1, 2], "frame {f}");
        }
    }

    #[test]
    fn a_missed_object_keeps_its_id_for_max_age_frames() {
        let params = TrackParams {
            min_iou: 0.3,
            max_age: 3,
        };
        let mut t = Tracker::new(params);
        run(&mut t, &[det(0, 100.0, 100.0)]);
        for _ in 0..3 {
            run(&mut t, &[]);
        }
        assert_eq!(run(&mut t, &[det(0, 102.0, 100.0)]), vec![1]);
        for _ in 0..4 {
            run(&mut t, &[]);
        }
        assert_eq!(t.live_tracks(), 0);
        assert_eq!(run(&mut t, &[det(0, 102.0, 100.0)]), vec![2]);
    }

    #[test]
    fn classes_do_not_continue_each_other() {
        let mut t = Tracker::new(TrackParams::default());
        assert_eq!(run(&mut t, &[det(0, 50.0, 50.0)]), vec![1]);
        assert_eq!(run(&mut t, &[det(2, 50.0, 50.0)]), vec![2]);
        assert_eq!(
            run(&mut t, &[det(2, 52.0, 50.0), det(0, 50.0, 50.0)]),
            vec![2, 1]
        );
    }

    #[test]
    fn a_jump_past_min_iou_starts_a_new_track_and_reset_keeps_counting() {
        let mut t = Tracker::new(TrackParams::default());
        run(&mut t, &[det(0, 0.0, 0.0)]);
        // 30 px to the right of a 40 px wide box: IoU 10/70 < 0.3.
        assert_eq!(run(&mut t, &[det(0, 30.0, 0.0)]), vec![2]);
        t.reset();
        assert_eq!(t.live_tracks(), 0);
        assert_eq!(run(&mut t, &[det(0, 30.0, 0.0)]), vec![3]);
    }

    #[test]
    fn the_assignment_maximises_total_overlap() {
        // Greedy matching would give the first detection to track 1 (IoU 0.6 beats 0.5) and
        // leave the second unmatched; the best total keeps both tracks.
        let mut t = Tracker::new(TrackParams {
            min_iou: 0.2,
            max_age: 30,
        });
        let a = Detection {
            class_id: 0,
            confidence: 0.9,
            bbox: [0.0, 0.0, 100.0, 100.0],
        };
        let b = Detection {
            bbox: [60.0, 0.0, 160.0, 100.0],
            ..a.clone()
        };
        assert_eq!(run(&mut t, &[a.clone(), b.clone()]), vec![1, 2]);
        let mid = Detection {
            bbox: [25.0, 0.0, 125.0, 100.0],
            ..a.clone()
        };
        let left = Detection {
            bbox: [-40.0, 0.0, 60.0, 100.0],
            ..a.clone()
        };
        // IoU(track 1, mid) 0.6, (track 1, left) 0.43, (track 2, mid) 0.48, (track 2, left) 0.
        let ids = run(&mut t, &[mid, left]);
        assert_eq!(ids, vec![2, 1]);
    }
}
