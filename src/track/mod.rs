//! Tracking: gives each detection the id of the object it continues from earlier frames.
//!
//! SORT-style, on the detections alone (no appearance features): every track predicts where its
//! box is now ([`motion::BoxMotion`]); detections are matched to the predicted boxes of the same
//! class so that the total IoU is largest (Hungarian assignment from `pathfinding`), pairs under
//! `min_iou` are not matched; a detection left over starts a new track, and a track left without a
//! detection for more than `max_age` frames ends. A new track is tentative: it gets its id once
//! `min_hits` frames in a row have detected it, and ends at its first miss, so that a box seen
//! for a frame or two (a false positive, a flicker) takes no id. Tracks with ids are matched
//! first; tentative ones take the detections left over. Ids count up from 1 and are never reused
//! by one tracker, also across [`Tracker::reset`]. At most [`MAX_TRACKS`] tracks live at once:
//! beyond that, tentative ones end first, then those missed longest.

mod agreement;
mod crossing;
mod motion;

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

use crate::detect::{iou, Detection};
pub use agreement::{track_agreement, TrackAgreement};
pub use crossing::{parse_lines, CountLine, Crossing, LineCounter};
pub use motion::BoxMotion;

/// A frame's ranked detections as the tracker takes them with its defaults: those at or above
/// `threshold` (the detections) and those from [`LOW_SCORE`] up to it (which only continue
/// tracks); lower ones are left out.
pub fn split_scores(frame: &[Detection], threshold: f32) -> (Vec<Detection>, Vec<Detection>) {
    frame
        .iter()
        .filter(|d| d.confidence >= LOW_SCORE.min(threshold))
        .cloned()
        .partition(|d| d.confidence >= threshold)
}

/// (class, box) of each detection, as [`match_boxes`] takes them.
fn class_boxes<'a>(dets: impl IntoIterator<Item = &'a Detection>) -> Vec<(u32, [f32; 4])> {
    dets.into_iter().map(|d| (d.class_id, d.bbox)).collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrackParams {
    /// Lowest IoU between a track's predicted box and a detection that continues it.
    pub min_iou: f32,
    /// Frames a track survives without a detection before its id ends.
    pub max_age: u32,
    /// Frames in a row a new track must be detected on before it gets an id (1: at once).
    pub min_hits: u32,
}

impl Default for TrackParams {
    fn default() -> Self {
        TrackParams {
            min_iou: 0.3,
            max_age: 30,
            min_hits: 1,
        }
    }
}

#[derive(Clone, Debug)]
struct Track {
    /// None while tentative (detected on fewer than `min_hits` frames in a row).
    id: Option<u64>,
    class_id: u32,
    motion: BoxMotion,
    /// Frames since the last detection.
    misses: u32,
    /// Frames detected since the track started, counted until it gets its id.
    hits: u32,
}

/// Most tracks alive at once (a detector that fires at random would otherwise start
/// `max_age` × detections of them).
pub const MAX_TRACKS: usize = 4096;

/// Default score above which detections under the operating threshold keep tracks going (the
/// second association of [`Tracker::update_with_low`]).
pub const LOW_SCORE: f32 = 0.1;

/// Lowest IoU at which a detection under the operating threshold continues a track (ByteTrack's
/// second association; stricter than the first, since such boxes are less sure).
const LOW_MIN_IOU: f32 = 0.5;

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

    /// Tracks alive now (matched within the last `max_age` frames), tentative ones included.
    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// Track ids given so far (the highest one).
    pub fn ids_started(&self) -> u64 {
        self.next_id - 1
    }

    /// Ends every track (after a seek or a new stream); later ids still count on.
    pub fn reset(&mut self) {
        self.tracks.clear();
    }

    /// Advances one frame: `ids` receives the track id of each detection, in order (None for a
    /// detection of a tentative track).
    pub fn update(&mut self, detections: &[Detection], ids: &mut Vec<Option<u64>>) {
        self.update_with_low(detections, &[], ids);
    }

    /// [`Self::update`], and then (as ByteTrack does) the tracks with ids that no detection
    /// continued are matched to `low`, detections under the operating threshold, which keep them
    /// alive and steer their motion but get no id and start no track.
    pub fn update_with_low(
        &mut self,
        detections: &[Detection],
        low: &[Detection],
        ids: &mut Vec<Option<u64>>,
    ) {
        for t in &mut self.tracks {
            t.motion.predict();
            t.misses += 1;
        }
        // Tracks with ids first; tentative ones take what they leave, so that a duplicate box
        // does not take an established object's detection.
        let (confirmed, tentative): (Vec<usize>, Vec<usize>) =
            (0..self.tracks.len()).partition(|&t| self.tracks[t].id.is_some());
        let mut matched = self.assign(&confirmed, detections, self.params.min_iou);
        if !tentative.is_empty() {
            let rest: Vec<usize> = (0..detections.len())
                .filter(|&d| matched[d].is_none())
                .collect();
            let rest_dets = rest.iter().map(|&d| &detections[d]);
            let found = self.assign(&tentative, rest_dets, self.params.min_iou);
            for (&d, m) in rest.iter().zip(found) {
                matched[d] = m;
            }
        }
        if !low.is_empty() {
            let mut taken = vec![false; self.tracks.len()];
            for &t in matched.iter().flatten() {
                taken[t] = true;
            }
            let left: Vec<usize> = confirmed.into_iter().filter(|&t| !taken[t]).collect();
            for (d, m) in low.iter().zip(self.assign(&left, low, LOW_MIN_IOU)) {
                if let Some(ti) = m {
                    let t = &mut self.tracks[ti];
                    t.motion.update(&d.bbox);
                    t.misses = 0;
                }
            }
        }
        ids.clear();
        for (d, track) in detections.iter().zip(matched) {
            let ti = match track {
                Some(ti) => {
                    let t = &mut self.tracks[ti];
                    t.motion.update(&d.bbox);
                    t.misses = 0;
                    if t.id.is_none() {
                        t.hits += 1;
                    }
                    ti
                }
                None => {
                    self.tracks.push(Track {
                        id: None,
                        class_id: d.class_id,
                        motion: BoxMotion::new(&d.bbox),
                        misses: 0,
                        hits: 1,
                    });
                    self.tracks.len() - 1
                }
            };
            let t = &mut self.tracks[ti];
            if t.id.is_none() && t.hits >= self.params.min_hits {
                t.id = Some(self.next_id);
                self.next_id += 1;
            }
            ids.push(t.id);
        }
        let max_age = self.params.max_age;
        // A tentative track ends at its first miss.
        self.tracks
            .retain(|t| t.misses == 0 || (t.id.is_some() && t.misses <= max_age));
        if self.tracks.len() > MAX_TRACKS {
            // Tentative tracks go first, then those missed longest.
            self.tracks.sort_by_key(|t| (t.id.is_none(), t.misses));
            self.tracks.truncate(MAX_TRACKS);
        }
    }

    /// For each detection, the track among `tracks` (indices into `self.tracks`) that continues
    /// into it.
    fn assign<'a>(
        &self,
        tracks: &[usize],
        detections: impl IntoIterator<Item = &'a Detection>,
        min_iou: f32,
    ) -> Vec<Option<usize>> {
        let predicted: Vec<(u32, [f32; 4])> = tracks
            .iter()
            .map(|&t| (self.tracks[t].class_id, self.tracks[t].motion.bbox()))
            .collect();
        match_boxes(&predicted, &class_boxes(detections), min_iou)
            .into_iter()
            .map(|m| m.map(|k| tracks[k]))
            .collect()
    }
}

/// Matches boxes `b` to boxes `a` of the same class (class id, box) so that the total IoU is
/// largest, pairs under `min_iou` left out: for each of `b`, the index of its match in `a`. Boxes
/// with a NaN or infinite coordinate match nothing.
///
/// Boxes that may pair form groups (connected through pairs that overlap enough); each group is
/// assigned on its own, so the cost grows with the size of the largest crowd, not with all boxes.
pub fn match_boxes(
    a: &[(u32, [f32; 4])],
    b: &[(u32, [f32; 4])],
    min_iou: f32,
) -> Vec<Option<usize>> {
    let finite = |r: &[f32; 4]| r.iter().all(|v| v.is_finite());
    let mut pairs: Vec<(usize, usize, i64)> = Vec::new();
    for (ia, (ca, ra)) in a.iter().enumerate().filter(|(_, x)| finite(&x.1)) {
        for (ib, (_, rb)) in b
            .iter()
            .enumerate()
            .filter(|(_, x)| x.0 == *ca && finite(&x.1))
        {
            let v = iou(ra, rb);
            if v >= min_iou && v > 0.0 {
                pairs.push((ia, ib, (v * IOU_UNITS).round() as i64));
            }
        }
    }
    // Groups: union-find over the boxes of `a` (0..a.len()) and of `b` (after them).
    let mut parent: Vec<usize> = (0..a.len() + b.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &(ia, ib, _) in &pairs {
        let (ra, rb) = (root(&mut parent, ia), root(&mut parent, a.len() + ib));
        parent[ra] = rb;
    }
    let mut groups: Vec<(usize, (usize, usize, i64))> =
        pairs.iter().map(|&p| (root(&mut parent, p.0), p)).collect();
    groups.sort_unstable_by_key(|g| g.0);

    let mut matched = vec![None; b.len()];
    for group in groups.chunk_by(|x, y| x.0 == y.0) {
        let pairs: Vec<(usize, usize, i64)> = group.iter().map(|g| g.1).collect();
        for (ia, ib) in assign_group(&pairs) {
            matched[ib] = Some(ia);
        }
    }
    matched
}

/// The largest-total assignment among `pairs` (index in `a`, index in `b`, weight > 0).
fn assign_group(pairs: &[(usize, usize, i64)]) -> Vec<(usize, usize)> {
    if let [(ia, ib, _)] = pairs {
        return vec![(*ia, *ib)];
    }
    let sorted = |f: fn(&(usize, usize, i64)) -> usize| -> Vec<usize> {
        let mut v: Vec<usize> = pairs.iter().map(f).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (ai, bi) = (sorted(|p| p.0), sorted(|p| p.1));
    // The assignment wants no more rows than columns; zeros are the pairs that may not match.
    let a_rows = ai.len() <= bi.len();
    let (rows, cols) = if a_rows {
        (ai.len(), bi.len())
    } else {
        (bi.len(), ai.len())
    };
    let mut m = Matrix::new(rows, cols, 0i64);
    for &(ia, ib, w) in pairs {
        let (x, y) = (
            ai.binary_search(&ia).unwrap(),
            bi.binary_search(&ib).unwrap(),
        );
        m[if a_rows { (x, y) } else { (y, x) }] = w;
    }
    let (_, cols_of_rows) = kuhn_munkres(&m);
    cols_of_rows
        .into_iter()
        .enumerate()
        .filter(|&(r, c)| m[(r, c)] > 0)
        .map(|(r, c)| {
            if a_rows {
                (ai[r], bi[c])
            } else {
                (ai[c], bi[r])
            }
        })
        .collect()
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

    /// The ids of `frame`'s detections, all of which must have one.
    fn run(tracker: &mut Tracker, frame: &[Detection]) -> Vec<u64> {
        let mut ids = Vec::new();
        tracker.update(frame, &mut ids);
        assert_eq!(ids.len(), frame.len());
        ids.into_iter().map(|i| i.expect("an id")).collect()
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
            ..TrackParams::default()
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
    fn a_nan_box_takes_no_track_and_the_tracks_stay_bounded() {
        let mut t = Tracker::new(TrackParams::default());
        run(&mut t, &[det(0, 0.0, 0.0)]);
        // NaN makes iou() see an empty box with a large overlap; it must not win the track.
        let nan = Detection {
            bbox: [f32::NAN, 0.0, 30.0, 80.0],
            ..det(0, 0.0, 0.0)
        };
        assert_eq!(run(&mut t, &[nan, det(0, 1.0, 0.0)]), vec![2, 1]);

        // A detector firing at random never continues a track: the tracks stop at MAX_TRACKS.
        let mut t = Tracker::new(TrackParams {
            min_iou: 0.3,
            max_age: 1000,
            ..TrackParams::default()
        });
        for f in 0..50 {
            let frame: Vec<Detection> = (0..100)
                .map(|i| det(0, 1000.0 * i as f32, 100.0 * f as f32))
                .collect();
            run(&mut t, &frame);
        }
        assert_eq!(t.live_tracks(), MAX_TRACKS);
        // The newest tracks are the ones kept.
        let last: Vec<Detection> = (0..100)
            .map(|i| det(0, 1000.0 * i as f32, 4900.0))
            .collect();
        assert_eq!(run(&mut t, &last), (4901..=5000).collect::<Vec<u64>>());
    }

    #[test]
    fn scores_under_the_threshold_keep_a_track_going() {
        // A person whose score dips under the threshold for five frames while walking on: with
        // the low detections the track follows and keeps its id; without, it ends (max_age 2).
        let params = TrackParams {
            min_iou: 0.3,
            max_age: 2,
            ..TrackParams::default()
        };
        let (mut with_low, mut without) = (Tracker::new(params.clone()), Tracker::new(params));
        let mut ids = Vec::new();
        for f in 0..12 {
            let d = det(0, 5.0 * f as f32, 0.0);
            let dipped = (3..8).contains(&f);
            let (high, low) = if dipped {
                (vec![], vec![d])
            } else {
                (vec![d], vec![])
            };
            with_low.update_with_low(&high, &low, &mut ids);
            if !dipped {
                assert_eq!(ids, vec![Some(1)], "frame {f} with the low detections");
            }
            without.update(&high, &mut ids);
        }
        assert_eq!(
            ids,
            vec![Some(2)],
            "without them the person comes back as a new track"
        );
        assert_eq!(with_low.ids_started(), 1);
    }

    #[test]
    fn new_tracks_get_ids_after_min_hits_frames_in_a_row() {
        let params = TrackParams {
            min_hits: 3,
            ..TrackParams::default()
        };
        let mut t = Tracker::new(params);
        let mut ids = Vec::new();
        // A walker detected on every frame, and a flicker at one place on frames 0-1 and 3-4:
        // each of its runs ends at a miss before it is confirmed, and takes no id.
        for f in 0..6 {
            let walker = det(0, 5.0 * f as f32, 0.0);
            let mut frame = vec![walker];
            if f != 2 && f != 5 {
                frame.push(det(0, 400.0, 0.0));
            }
            t.update(&frame, &mut ids);
            let want_walker = (f >= 2).then_some(1);
            assert_eq!(ids[0], want_walker, "frame {f}");
            assert!(ids[1..].iter().all(|i| i.is_none()), "frame {f}: {ids:?}");
        }
        assert_eq!(t.ids_started(), 1);
        // A confirmed track survives misses up to max_age as before.
        t.update(&[], &mut ids);
        t.update(&[det(0, 35.0, 0.0)], &mut ids);
        assert_eq!(ids, vec![Some(1)]);

        // Detections under the threshold continue confirmed tracks only: a tentative track
        // missed by the confident ones ends, and the object starts over when it comes back.
        let mut t = Tracker::new(TrackParams {
            min_hits: 2,
            ..TrackParams::default()
        });
        let d = &[det(0, 0.0, 0.0)];
        t.update_with_low(d, &[], &mut ids);
        t.update_with_low(&[], d, &mut ids);
        assert_eq!(t.live_tracks(), 0);
        t.update_with_low(d, &[], &mut ids);
        assert_eq!(ids, vec![None]);
        t.update_with_low(d, &[], &mut ids);
        assert_eq!(ids, vec![Some(1)]);
        t.update_with_low(&[], d, &mut ids);
        assert_eq!(
            t.live_tracks(),
            1,
            "a confirmed track continues on a low detection"
        );
    }

    #[test]
    fn a_tentative_duplicate_does_not_take_a_tracked_objects_detection() {
        let mut t = Tracker::new(TrackParams {
            min_hits: 2,
            ..TrackParams::default()
        });
        let mut ids = Vec::new();
        let person = det(0, 100.0, 0.0);
        t.update(std::slice::from_ref(&person), &mut ids);
        t.update(std::slice::from_ref(&person), &mut ids);
        assert_eq!(ids, vec![Some(1)]);
        // A duplicate box starts a tentative track right next to the person's box.
        t.update(&[person.clone(), det(0, 104.0, 0.0)], &mut ids);
        assert_eq!(ids, vec![Some(1), None]);
        // Next frame only a box where the duplicate was is seen: it overlaps the tentative track
        // more than the person's, but the tracked person takes it.
        t.update(&[det(0, 104.0, 0.0)], &mut ids);
        assert_eq!(ids, vec![Some(1)]);
        assert_eq!(t.live_tracks(), 1, "the tentative track ended at its miss");
    }

    #[test]
    fn the_assignment_maximises_total_overlap() {
        // Greedy matching would give the first detection to track 1 (IoU 0.6 beats 0.5) and
        // leave the second unmatched; the best total keeps both tracks.
        let mut t = Tracker::new(TrackParams {
            min_iou: 0.2,
            max_age: 30,
            ..TrackParams::default()
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
