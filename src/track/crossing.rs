//! Counting lines (`count-lines`): a tracked object crosses a line when the bottom centre of its
//! box (where a person stands) goes from one side of the line to the other, and its path from
//! where it was last on the first side meets the line within the segment. A point nearer the line
//! than [`BAND`] of the box's height keeps the side it had, so that a box jittering on the line
//! does not count back and forth.

use std::collections::HashMap;

use crate::detect::Detection;
use crate::spec::parse_quads;

/// A segment in frame pixels, from `a` to `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CountLine {
    pub a: (f32, f32),
    pub b: (f32, f32),
}

/// One object crossing one line.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossing {
    /// Index of the line in `count-lines`.
    pub line: usize,
    pub track_id: u64,
    pub class_id: u32,
    /// Onto the right-hand side of the line as drawn from `a` to `b` on the image (for a line
    /// drawn left to right: moving down the image).
    pub forward: bool,
}

/// Parses `x0,y0,x1,y1` segments (frame pixels) separated by `;`. Empty: none.
pub fn parse_lines(spec: &str) -> Result<Vec<CountLine>, String> {
    parse_quads(spec, "count-lines", "x0,y0,x1,y1", |v: [f32; 4]| {
        let [x0, y0, x1, y1] = v;
        if v.iter().any(|c| !c.is_finite() || *c < 0.0) {
            return Err("coordinates must be finite and not negative".into());
        }
        if v.iter().any(|&c| c > MAX_COORD) {
            return Err("coordinates must be at most 1000000".into());
        }
        if (x1 - x0).hypot(y1 - y0) < 1.0 {
            return Err("the two ends must be at least a pixel apart".into());
        }
        Ok(CountLine {
            a: (x0, y0),
            b: (x1, y1),
        })
    })
}

/// Largest coordinate a line may have (frame pixels).
const MAX_COORD: f32 = 1.0e6;

/// Most objects whose sides are remembered; past it, only those seen on the last frame are kept.
const MAX_FOLLOWED: usize = 4 * crate::track::MAX_TRACKS;

/// Half-width of the band around a line, as a fraction of the crossing box's height, inside which
/// a point keeps the side it was on.
pub const BAND: f32 = 0.05;

impl CountLine {
    /// Signed distance of `p` from the line: positive on the right-hand side of its direction
    /// (image coordinates, y down).
    fn distance(&self, p: (f32, f32)) -> f32 {
        let (dx, dy) = (self.b.0 - self.a.0, self.b.1 - self.a.1);
        (dx * (p.1 - self.a.1) - dy * (p.0 - self.a.0)) / dx.hypot(dy)
    }

    /// The side `p` lies on when it is more than `band` pixels from the line: true on the right.
    fn side(&self, p: (f32, f32), band: f32) -> Option<bool> {
        let d = self.distance(p);
        (d.abs() > band).then_some(d > 0.0)
    }

    /// Whether the step from `p` to `q`, on either side of the line, meets it within the segment.
    fn met_between(&self, p: (f32, f32), q: (f32, f32)) -> bool {
        let (dp, dq) = (self.distance(p), self.distance(q));
        let f = dp / (dp - dq);
        let x = (p.0 + (q.0 - p.0) * f, p.1 + (q.1 - p.1) * f);
        let (dx, dy) = (self.b.0 - self.a.0, self.b.1 - self.a.1);
        let t = ((x.0 - self.a.0) * dx + (x.1 - self.a.1) * dy) / (dx * dx + dy * dy);
        (0.0..=1.0).contains(&t)
    }
}

/// The point of a box that crosses lines: its bottom centre.
fn anchor(d: &Detection) -> (f32, f32) {
    ((d.bbox[0] + d.bbox[2]) / 2.0, d.bbox[3])
}

/// The side of a line an object was last on, and where it was then.
type Side = Option<(bool, (f32, f32))>;

/// The side of every line each tracked object was last on.
#[derive(Default)]
pub struct LineCounter {
    lines: Vec<CountLine>,
    /// Track id → (side of each line, None until known; frame it was last seen on).
    last: HashMap<u64, (Vec<Side>, u64)>,
    frame: u64,
}

impl LineCounter {
    pub fn new(lines: Vec<CountLine>) -> Self {
        LineCounter {
            lines,
            ..LineCounter::default()
        }
    }

    pub fn lines(&self) -> &[CountLine] {
        &self.lines
    }

    /// New lines: the sides objects were on are forgotten.
    pub fn set_lines(&mut self, lines: Vec<CountLine>) {
        self.lines = lines;
        self.last.clear();
    }

    /// Forgets where objects were (their tracks ended).
    pub fn reset(&mut self) {
        self.last.clear();
    }

    /// Advances one frame: each detection with a track id (`ids`, in order) that crossed a line
    /// since its track's last detection is added to `out`. Tracks unseen for more than
    /// `forget_after` frames are forgotten.
    pub fn update(
        &mut self,
        detections: &[Detection],
        ids: &[Option<u64>],
        forget_after: u64,
        out: &mut Vec<Crossing>,
    ) {
        self.frame += 1;
        let n = self.lines.len();
        for (d, id) in detections.iter().zip(ids) {
            let Some(id) = *id else { continue };
            let q = anchor(d);
            if !(q.0.is_finite() && q.1.is_finite()) {
                continue;
            }
            let band = BAND * (d.bbox[3] - d.bbox[1]).max(1.0);
            let (sides, seen) = self.last.entry(id).or_insert((vec![None; n], 0));
            *seen = self.frame;
            for (line, (l, was)) in self.lines.iter().zip(sides.iter_mut()).enumerate() {
                let Some(now) = l.side(q, band) else { continue };
                if let Some((before, p)) = *was {
                    if before != now && l.met_between(p, q) {
                        out.push(Crossing {
                            line,
                            track_id: id,
                            class_id: d.class_id,
                            forward: now,
                        });
                    }
                }
                *was = Some((now, q));
            }
        }
        let frame = self.frame;
        self.last
            .retain(|_, (_, seen)| frame - *seen <= forget_after);
        if self.last.len() > MAX_FOLLOWED {
            self.last.retain(|_, (_, seen)| *seen == frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A person whose feet stand at (x, y).
    fn at(x: f32, y: f32) -> Detection {
        Detection {
            class_id: 0,
            confidence: 0.9,
            bbox: [x - 10.0, y - 60.0, x + 10.0, y],
        }
    }

    fn run(counter: &mut LineCounter, path: &[(f32, f32)], id: u64) -> Vec<Crossing> {
        let mut out = Vec::new();
        for &(x, y) in path {
            counter.update(&[at(x, y)], &[Some(id)], 30, &mut out);
        }
        out
    }

    #[test]
    fn lines_parse_and_bad_ones_are_named() {
        let lines = parse_lines("0,100,640,100; 320,0,320,480").unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].a, (320.0, 0.0));
        assert_eq!(parse_lines(""), Ok(vec![]));
        for bad in [
            "1,2,3",
            "a,b,c,d",
            "5,5,5,5",
            "5,5,5.5,5",
            "0,0,-1,4",
            "0,0,inf,4",
            "0,0,1e30,4",
        ] {
            let e = parse_lines(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn crossings_count_once_with_their_direction() {
        // A line across the image at y = 100, drawn left to right: forward is moving down.
        let mut c = LineCounter::new(parse_lines("0,100,640,100").unwrap());
        let down = run(
            &mut c,
            &[(50.0, 80.0), (52.0, 95.0), (54.0, 110.0), (56.0, 130.0)],
            1,
        );
        assert_eq!(
            down,
            vec![Crossing {
                line: 0,
                track_id: 1,
                class_id: 0,
                forward: true
            }]
        );
        // Back up, stopping exactly on the line first: one crossing, backward.
        let up = run(&mut c, &[(56.0, 100.0), (56.0, 90.0)], 1);
        assert_eq!(up.len(), 1);
        assert!(!up[0].forward);
        // Passing beside the segment's end crosses nothing.
        let mut short = LineCounter::new(parse_lines("0,100,40,100").unwrap());
        assert!(run(&mut short, &[(60.0, 80.0), (60.0, 120.0)], 2).is_empty());
        // Feet jittering 2 px around the line (inside the band of 5 % of a 60 px box) count
        // nothing; stepping off it on the far side counts once.
        let mut c = LineCounter::new(parse_lines("0,100,640,100").unwrap());
        let jitter = [
            (50.0, 90.0),
            (50.0, 102.0),
            (50.0, 98.0),
            (50.0, 102.0),
            (50.0, 99.0),
        ];
        assert!(run(&mut c, &jitter, 3).is_empty());
        assert_eq!(run(&mut c, &[(50.0, 110.0)], 3).len(), 1);
    }

    #[test]
    fn the_path_must_meet_the_segment() {
        let mut c = LineCounter::new(parse_lines("100,100,200,100").unwrap());
        // Crossing the segment and next seen beyond its end: counted.
        assert_eq!(run(&mut c, &[(190.0, 80.0), (206.0, 120.0)], 1).len(), 1);
        // Crossing the line outside the segment and landing beside it: not counted.
        let mut c = LineCounter::new(parse_lines("100,100,200,100").unwrap());
        assert!(run(&mut c, &[(60.0, 80.0), (120.0, 120.0)], 2).is_empty());
    }

    #[test]
    fn new_lines_forget_the_sides() {
        // A person standing still under a line that moves above them, or turns round, crosses
        // nothing.
        let mut c = LineCounter::new(parse_lines("0,300,640,300").unwrap());
        let mut out = Vec::new();
        c.update(&[at(50.0, 200.0)], &[Some(1)], 30, &mut out);
        c.set_lines(parse_lines("0,100,640,100").unwrap());
        c.update(&[at(50.0, 200.0)], &[Some(1)], 30, &mut out);
        c.set_lines(parse_lines("640,100,0,100").unwrap());
        c.update(&[at(50.0, 200.0)], &[Some(1)], 30, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn objects_are_followed_by_track_id_and_forgotten() {
        let mut c = LineCounter::new(parse_lines("320,0,320,480").unwrap());
        let mut out = Vec::new();
        // Two people swap sides of a vertical line in one step; a detection without an id (a
        // tentative track) is not followed.
        c.update(
            &[at(300.0, 200.0), at(340.0, 220.0)],
            &[Some(1), Some(2)],
            30,
            &mut out,
        );
        c.update(&[at(310.0, 400.0)], &[None], 30, &mut out);
        c.update(
            &[at(345.0, 200.0), at(290.0, 220.0)],
            &[Some(1), Some(2)],
            30,
            &mut out,
        );
        let dirs: Vec<(u64, bool)> = out.iter().map(|x| (x.track_id, x.forward)).collect();
        // Drawn top to bottom, the right-hand side is the image's left: 1 goes right (backward),
        // 2 goes left (forward).
        assert_eq!(dirs, vec![(1, false), (2, true)]);
        // A track unseen for longer than forget_after starts again from where it is found.
        out.clear();
        for _ in 0..5 {
            c.update(&[], &[], 3, &mut out);
        }
        c.update(&[at(300.0, 200.0)], &[Some(1)], 3, &mut out);
        assert!(out.is_empty());
    }
}
