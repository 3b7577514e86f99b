//! The metadata contract (see DESIGN.md "Metadata contract"): detections travel as one
//! `GstVideoRegionOfInterestMeta` per object with a `detection` parameter structure, and the element
//! reports its figures in `regiondrop-stats` element messages. Writing and reading both live here
//! so the element, the tests and applications agree on names and types.

use crate::detect::Detection;

/// Name of the parameter structure attached to each region-of-interest meta.
pub const DETECTION_PARAM: &str = "detection";
/// Name of the element message posted every `stats-interval` frames.
pub const STATS_MESSAGE: &str = "regiondrop-stats";

/// A detection as carried on a buffer: rectangle in frame pixels plus the `detection` parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaDetection {
    /// (x, y, width, height) in frame pixels.
    pub rect: (u32, u32, u32, u32),
    pub roi_type: String,
    pub class_id: u32,
    pub label: String,
    pub confidence: f64,
    /// The object's track id, when the element tracks (`tracking=true`).
    pub track_id: Option<u64>,
}

/// The label of a class id: from `labels` when present and non-empty, else `class-<id>`.
pub fn label_for(labels: &[String], class_id: u32) -> String {
    match labels.get(class_id as usize) {
        Some(l) if !l.is_empty() => l.clone(),
        _ => format!("class-{class_id}"),
    }
}

/// A box (x0, y0, x1, y1) in frame pixels as an integer rectangle (x, y, w, h) that covers it,
/// clipped to the frame.
pub fn frame_rect(bbox: [f32; 4], frame_w: u32, frame_h: u32) -> (u32, u32, u32, u32) {
    let clip = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
    let x0 = clip(bbox[0].floor(), frame_w);
    let y0 = clip(bbox[1].floor(), frame_h);
    let x1 = clip(bbox[2].ceil(), frame_w).max(x0);
    let y1 = clip(bbox[3].ceil(), frame_h).max(y0);
    (x0, y0, x1 - x0, y1 - y0)
}

/// The `detection` parameter structure of one detection; `track-id` only when there is one.
pub fn detection_param(
    class_id: u32,
    label: &str,
    confidence: f64,
    track_id: Option<u64>,
) -> gst::Structure {
    gst::Structure::builder(DETECTION_PARAM)
        .field("class-id", class_id)
        .field("label", label)
        .field("confidence", confidence)
        .field_if_some("track-id", track_id)
        .build()
}

/// Attaches one region-of-interest meta per detection (boxes already in frame pixels).
/// `track_ids`, when tracking, holds each detection's track id (None where its track has none yet).
/// The meta's id is [`roi_id`].
pub fn attach_detections(
    buffer: &mut gst::BufferRef,
    detections: &[Detection],
    track_ids: Option<&[Option<u64>]>,
    labels: &[String],
    frame_w: u32,
    frame_h: u32,
) {
    for (i, d) in detections.iter().enumerate() {
        let label = label_for(labels, d.class_id);
        let rect = frame_rect(d.bbox, frame_w, frame_h);
        let mut meta = gst_video::VideoRegionOfInterestMeta::add(buffer, &label, rect);
        let track_id = track_ids.and_then(|t| t.get(i).copied().flatten());
        meta.set_id(roi_id(i, track_ids.is_some(), track_id));
        meta.add_param(detection_param(
            d.class_id,
            &label,
            d.confidence as f64,
            track_id,
        ));
    }
}

/// The id of the region-of-interest meta of detection `i`: its index without tracking; with
/// tracking, its track id, and -1, -2, ... (by index) for detections without one yet (or with one
/// past `i32::MAX`). The ids of a frame are unique. Unlike the `detection` structure, the id
/// survives elements that copy or scale the metas on GStreamer 1.22 (videoconvert, videoscale).
pub fn roi_id(i: usize, tracking: bool, track_id: Option<u64>) -> i32 {
    let untracked = -(i.min(i32::MAX as usize - 1) as i32) - 1;
    match (tracking, track_id) {
        (false, _) => i.min(i32::MAX as usize) as i32,
        (true, Some(t)) => i32::try_from(t).unwrap_or(untracked),
        (true, None) => untracked,
    }
}

/// Reads back the detections a `regiondrop` element attached to `buffer`, in attachment order.
/// Region-of-interest metas without a `detection` structure (from other elements) are skipped.
pub fn read_detections(buffer: &gst::BufferRef) -> Vec<MetaDetection> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter_map(|m| {
            let p = m.param(DETECTION_PARAM)?;
            Some(MetaDetection {
                rect: m.rect(),
                roi_type: m.roi_type().to_string(),
                class_id: p.get::<u32>("class-id").ok()?,
                label: p.get::<String>("label").ok()?,
                confidence: p.get::<f64>("confidence").ok()?,
                track_id: p.get::<u64>("track-id").ok(),
            })
        })
        .collect()
}

/// Figures of the frames since the last stats message (or since the start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsReport {
    /// Frames processed since start.
    pub frames: u64,
    /// Frames covered by this report.
    pub interval_frames: u64,
    /// Mean active fraction over the interval.
    pub active_fraction: f64,
    /// Mean MAC-weighted work fraction over the interval.
    pub work_fraction: f64,
    /// Frames of the interval that ran dense.
    pub dense_frames: u64,
    /// How the last frame ran.
    pub dense: bool,
    /// Mean inference time over the interval (change mask + network), milliseconds.
    pub inference_ms: f64,
    pub backend: String,
    /// Number format of the convolutions ("f32" or "f16").
    pub precision: String,
    /// Detections on the last frame.
    pub detections: u32,
    /// Frames so far that the backend read straight from the element's pool of frame memory,
    /// with no copy first (the CUDA backend, where upstream allocates from that pool).
    pub uploads_in_place: u64,
    /// Bounding box (x, y, w, h) in frame pixels of the tiles recomputed on the last frame;
    /// all zero when none was.
    pub active_rect: (u32, u32, u32, u32),
    /// Track ids started over the interval (objects that appeared), with tracking on.
    pub new_tracks: Option<u64>,
    /// With `count-lines` and tracking: per line, the crossings over the interval (forward,
    /// backward).
    pub crossings: Option<Vec<(u64, u64)>>,
}

impl StatsReport {
    pub fn mode(&self) -> &'static str {
        if self.dense {
            "dense"
        } else {
            "sparse"
        }
    }

    pub fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(STATS_MESSAGE)
            .field("frames", self.frames)
            .field("interval-frames", self.interval_frames)
            .field("active-fraction", self.active_fraction)
            .field("work-fraction", self.work_fraction)
            .field("dense-frames", self.dense_frames)
            .field("mode", self.mode())
            .field("inference-ms", self.inference_ms)
            .field("backend", &self.backend)
            .field("precision", &self.precision)
            .field("detections", self.detections)
            .field("uploads-in-place", self.uploads_in_place)
            .field("active-x", self.active_rect.0)
            .field("active-y", self.active_rect.1)
            .field("active-width", self.active_rect.2)
            .field("active-height", self.active_rect.3)
            .field_if_some("new-tracks", self.new_tracks)
            .field_if_some(
                "crossings-forward",
                self.crossings
                    .as_ref()
                    .map(|c| gst::Array::new(c.iter().map(|x| x.0))),
            )
            .field_if_some(
                "crossings-backward",
                self.crossings
                    .as_ref()
                    .map(|c| gst::Array::new(c.iter().map(|x| x.1))),
            )
            .build()
    }

    /// Parses a `regiondrop-stats` structure; None for any other structure.
    pub fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        if s.name() != STATS_MESSAGE {
            return None;
        }
        Some(StatsReport {
            frames: s.get("frames").ok()?,
            interval_frames: s.get("interval-frames").ok()?,
            active_fraction: s.get("active-fraction").ok()?,
            work_fraction: s.get("work-fraction").ok()?,
            dense_frames: s.get("dense-frames").ok()?,
            dense: s.get::<&str>("mode").ok()? == "dense",
            inference_ms: s.get("inference-ms").ok()?,
            backend: s.get("backend").ok()?,
            // Absent from messages of versions before the property: those ran in f32.
            precision: s
                .get::<String>("precision")
                .unwrap_or_else(|_| "f32".into()),
            detections: s.get("detections").ok()?,
            // Absent from messages of versions before the pool.
            uploads_in_place: s.get("uploads-in-place").unwrap_or(0),
            active_rect: (
                s.get("active-x").ok()?,
                s.get("active-y").ok()?,
                s.get("active-width").ok()?,
                s.get("active-height").ok()?,
            ),
            new_tracks: s.get("new-tracks").ok(),
            crossings: crossings_of(s),
        })
    }
}

/// The per-line (forward, backward) crossings of a stats structure, when it has them.
fn crossings_of(s: &gst::StructureRef) -> Option<Vec<(u64, u64)>> {
    let counts = |field: &str| -> Option<Vec<u64>> {
        let a = s.get::<gst::Array>(field).ok()?;
        a.iter().map(|v| v.get::<u64>().ok()).collect()
    };
    let (f, b) = (counts("crossings-forward")?, counts("crossings-backward")?);
    (f.len() == b.len()).then(|| f.into_iter().zip(b).collect())
}

/// Name of the element message posted for each line crossing.
pub const CROSSING_MESSAGE: &str = "regiondrop-crossing";

/// The `regiondrop-crossing` message structure: line index, track id, class, label, direction
/// and, when known, the frame's timestamp.
pub fn crossing_structure(
    c: &crate::track::Crossing,
    label: &str,
    pts: Option<gst::ClockTime>,
) -> gst::Structure {
    gst::Structure::builder(CROSSING_MESSAGE)
        .field("line", c.line as u32)
        .field("track-id", c.track_id)
        .field("class-id", c.class_id)
        .field("label", label)
        .field("direction", if c.forward { "forward" } else { "backward" })
        .field_if_some("pts", pts)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_with_crossings_round_trip() {
        gst::init().unwrap();
        let report = StatsReport {
            backend: "cpu".into(),
            precision: "f32".into(),
            new_tracks: Some(3),
            crossings: Some(vec![(2, 0), (1, 4)]),
            ..StatsReport::default()
        };
        let back = StatsReport::from_structure(&report.to_structure()).unwrap();
        assert_eq!(back, report);
        let plain = StatsReport {
            crossings: None,
            ..report
        };
        assert_eq!(
            StatsReport::from_structure(&plain.to_structure()),
            Some(plain)
        );
    }

    #[test]
    fn rect_covers_the_box_and_stays_in_the_frame() {
        assert_eq!(
            frame_rect([10.2, 20.7, 30.1, 40.0], 100, 100),
            (10, 20, 21, 20)
        );
        assert_eq!(
            frame_rect([-5.0, -1.0, 120.0, 50.0], 100, 40),
            (0, 0, 100, 40)
        );
    }

    #[test]
    fn detections_round_trip_through_the_buffer() {
        gst::init().unwrap();
        let mut buf = gst::Buffer::with_size(16).unwrap();
        let labels = vec!["person".to_string()];
        let dets = [
            Detection {
                class_id: 0,
                confidence: 0.75,
                bbox: [1.0, 2.0, 11.0, 22.0],
            },
            Detection {
                class_id: 7,
                confidence: 0.5,
                bbox: [0.0, 0.0, 5.0, 5.0],
            },
        ];
        attach_detections(buf.get_mut().unwrap(), &dets, None, &labels, 64, 64);
        let back = read_detections(&buf);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].track_id, None);
        assert_eq!(back[0].rect, (1, 2, 10, 20));
        assert_eq!(back[0].label, "person");
        assert_eq!(back[0].roi_type, "person");
        assert_eq!(back[1].label, "class-7");
        assert!((back[0].confidence - 0.75).abs() < 1e-6);

        let mut tracked = gst::Buffer::with_size(16).unwrap();
        attach_detections(
            tracked.get_mut().unwrap(),
            &dets,
            Some(&[Some(4), None]),
            &labels,
            64,
            64,
        );
        let ids: Vec<_> = read_detections(&tracked)
            .iter()
            .map(|d| d.track_id)
            .collect();
        // A tentative track's detection is attached without an id.
        assert_eq!(ids, vec![Some(4), None]);
        let roi_ids: Vec<i32> = tracked
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| m.id())
            .collect();
        assert_eq!(
            roi_ids,
            vec![4, -2],
            "track id, else minus the index plus one"
        );
        assert_eq!(roi_id(3, false, None), 3);
        assert_eq!(roi_id(0, true, Some(u64::MAX)), -1);
    }

    #[test]
    fn stats_round_trip() {
        gst::init().unwrap();
        let r = StatsReport {
            frames: 30,
            interval_frames: 30,
            active_fraction: 0.1,
            dense: true,
            backend: "cpu".into(),
            precision: "f32".into(),
            active_rect: (1, 2, 3, 4),
            uploads_in_place: 7,
            ..Default::default()
        };
        let s = r.to_structure();
        assert_eq!(s.get::<&str>("mode").unwrap(), "dense");
        assert!(!s.has_field("new-tracks"));
        assert_eq!(StatsReport::from_structure(&s), Some(r.clone()));
        let tracked = StatsReport {
            new_tracks: Some(3),
            ..r
        };
        let s = tracked.to_structure();
        assert_eq!(s.get::<u64>("new-tracks").unwrap(), 3);
        assert_eq!(StatsReport::from_structure(&s), Some(tracked));
    }
}
