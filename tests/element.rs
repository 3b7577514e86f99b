//! The `regiondrop` element in real pipelines: detections on real frames, change masks on static and
//! moving scenes, renegotiation and resets, error reporting, and every input format.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstregiondrop::analyzer::{default_model_path, default_video_path, Analyzer, AnalyzerOptions};
use gstregiondrop::detect::{iou, DecodeParams, Detection};
use gstregiondrop::engine::{EngineConfig, RunMode};
use gstregiondrop::meta::{
    frame_rect, read_detections, MetaDetection, StatsReport, CROSSING_MESSAGE,
};
use gstregiondrop::preprocess::PackedFrame;
use gstregiondrop::track::{TrackParams, Tracker, LOW_SCORE};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        // GStreamer may have loaded the built plug-in from GST_PLUGIN_PATH already (scanning
        // in this process with GST_REGISTRY_FORK=no): registering it again would fail.
        if gst::ElementFactory::find("regiondrop").is_none() {
            gstregiondrop::plugin_register_static().expect("register the regiondrop plugin");
        }
    });
}

/// An error or warning posted on the bus.
#[derive(Debug, Clone)]
struct Posted {
    src: String,
    message: String,
    debug: String,
}

impl Posted {
    fn text(&self) -> String {
        format!("{} ({})", self.message, self.debug)
    }
}

#[derive(Default)]
struct Run {
    samples: Vec<gst::Sample>,
    stats: Vec<StatsReport>,
    errors: Vec<Posted>,
    warnings: Vec<Posted>,
    /// `regiondrop-crossing` messages.
    crossings: Vec<gst::Structure>,
    /// `frames-processed` and `active-fraction` read at the end, before stopping.
    frames_processed: u64,
    last_active: f64,
}

impl Run {
    fn assert_clean(&self) {
        assert!(self.errors.is_empty(), "errors: {:?}", self.errors);
    }

    fn detections(&self, i: usize) -> Vec<MetaDetection> {
        read_detections(self.samples[i].buffer().unwrap())
    }
}

fn collect(msg: &gst::Message, run: &mut Run) {
    let src = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
    match msg.view() {
        gst::MessageView::Error(e) => run.errors.push(Posted {
            src,
            message: e.error().to_string(),
            debug: e.debug().map(|d| d.to_string()).unwrap_or_default(),
        }),
        gst::MessageView::Warning(w) => run.warnings.push(Posted {
            src,
            message: w.error().to_string(),
            debug: w.debug().map(|d| d.to_string()).unwrap_or_default(),
        }),
        gst::MessageView::Element(e) => {
            if let Some(r) = e.structure().and_then(StatsReport::from_structure) {
                run.stats.push(r);
            }
            if let Some(s) = e.structure().filter(|s| s.name() == CROSSING_MESSAGE) {
                run.crossings.push(s.to_owned());
            }
        }
        _ => {}
    }
}

/// Runs `desc` (an `appsink name=sink` at the end, a `regiondrop name=rd`) until EOS, an error, or
/// `max_samples` samples. `feed` runs once the pipeline is playing (to push into an appsrc);
/// `on_sample` sees each sample as it arrives.
fn run_pipeline(
    desc: &str,
    max_samples: usize,
    feed: impl FnOnce(&gst::Pipeline),
    mut on_sample: impl FnMut(&gst::Pipeline, usize),
) -> Run {
    init();
    let pipeline = gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("cannot build `{desc}`: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .map(|e| e.downcast::<gst_app::AppSink>().unwrap());
    let bus = pipeline.bus().unwrap();
    let mut run = Run::default();
    let mut eos = false;
    if pipeline.set_state(gst::State::Playing).is_ok() {
        feed(&pipeline);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            while let Some(msg) = bus.pop() {
                eos |= msg.type_() == gst::MessageType::Eos;
                collect(&msg, &mut run);
            }
            if !run.errors.is_empty() || run.samples.len() >= max_samples {
                break;
            }
            assert!(Instant::now() < deadline, "`{desc}` did not finish");
            let sample = match &sink {
                Some(sink) => sink.try_pull_sample(gst::ClockTime::from_mseconds(50)),
                None => {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
            };
            match sample {
                Some(s) => {
                    run.samples.push(s);
                    on_sample(&pipeline, run.samples.len());
                }
                // The pipeline's EOS comes after the sink's last sample.
                None if eos => break,
                None => {}
            }
        }
    }
    if let Some(rd) = pipeline.by_name("rd") {
        run.frames_processed = rd.property("frames-processed");
        run.last_active = rd.property("active-fraction");
    }
    // Going to NULL flushes the bus: read what is there first.
    while let Some(msg) = bus.pop() {
        collect(&msg, &mut run);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    run
}

fn push_frames(pipeline: &gst::Pipeline, frames: Vec<(gst::Caps, gst::Buffer)>) {
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    for (caps, buf) in frames {
        let sample = gst::Sample::builder().buffer(&buf).caps(&caps).build();
        src.push_sample(&sample).unwrap();
    }
    src.end_of_stream().unwrap();
}

fn video_caps(format: &str, w: usize, h: usize) -> gst::Caps {
    init();
    format!("video/x-raw,format={format},width={w},height={h},framerate=10/1")
        .parse()
        .unwrap()
}

fn buffer(data: Vec<u8>, index: u64) -> gst::Buffer {
    init();
    let mut buf = gst::Buffer::from_mut_slice(data);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(100 * index));
        b.set_duration(gst::ClockTime::from_mseconds(100));
    }
    buf
}

/// Packed RGB: grey background with a white `side`-pixel square at (x, y).
fn square_frame(w: usize, h: usize, x: usize, y: usize, side: usize) -> Vec<u8> {
    let mut rgb = vec![100u8; w * h * 3];
    for yy in y..(y + side).min(h) {
        for xx in x..(x + side).min(w) {
            rgb[(yy * w + xx) * 3..(yy * w + xx) * 3 + 3].fill(240);
        }
    }
    rgb
}

fn rgb_to_bgrx(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks(3)
        .flat_map(|p| [p[2], p[1], p[0], 255])
        .collect()
}

/// Element detections must equal the analyzer's (same frame, same settings) up to rounding.
fn assert_same_detections(got: &[MetaDetection], want: &[Detection], w: u32, h: u32, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: element {got:?} vs analyzer {want:?}"
    );
    for (g, d) in got.iter().zip(want) {
        assert_eq!(g.class_id, d.class_id, "{what}");
        assert!(
            (g.confidence - d.confidence as f64).abs() < 1e-3,
            "{what}: {g:?} vs {d:?}"
        );
        let r = frame_rect(d.bbox, w, h);
        let close = |a: u32, b: u32| a.abs_diff(b) <= 1;
        assert!(
            close(g.rect.0, r.0)
                && close(g.rect.1, r.1)
                && close(g.rect.2, r.2)
                && close(g.rect.3, r.3),
            "{what}: element rect {:?} vs analyzer {:?}",
            g.rect,
            r
        );
    }
}

fn as_box(r: (u32, u32, u32, u32)) -> [f32; 4] {
    [
        r.0 as f32,
        r.1 as f32,
        (r.0 + r.2) as f32,
        (r.1 + r.3) as f32,
    ]
}

/// Every confident detection of `a` has a same-class counterpart in `b` overlapping it.
fn covered(
    a: &[MetaDetection],
    b: &[MetaDetection],
    min_conf: f64,
    min_iou: f32,
) -> Result<(), String> {
    for d in a.iter().filter(|d| d.confidence >= min_conf) {
        let best = b
            .iter()
            .filter(|o| o.class_id == d.class_id)
            .map(|o| iou(&as_box(o.rect), &as_box(d.rect)))
            .fold(0f32, f32::max);
        if best < min_iou {
            return Err(format!("{d:?} has no match (best IoU {best:.2})"));
        }
    }
    Ok(())
}

fn video_path() -> String {
    default_video_path().to_string_lossy().into_owned()
}

/// The detections `analyzer` gives for a packed RGB sample, and the sample's video info.
fn analyze_sample(
    analyzer: &mut Analyzer,
    sample: &gst::Sample,
) -> (Vec<Detection>, gst_video::VideoInfo) {
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let frame = PackedFrame {
        data: &map,
        width: info.width() as usize,
        height: info.height() as usize,
        stride: info.stride()[0] as usize,
        bytes_per_px: 3,
        rgb_offsets: [0, 1, 2],
    };
    let (_, dets) = analyzer.process(&frame).unwrap();
    (dets, info)
}

#[test]
fn people_on_a_real_video_match_the_analyzer() {
    const FRAMES: usize = 4;
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \
         regiondrop name=rd stats-interval=1 ! appsink name=sink sync=false",
        video_path()
    );
    let run = run_pipeline(&desc, FRAMES, |_| {}, |_, _| {});
    run.assert_clean();
    assert_eq!(run.samples.len(), FRAMES);

    // The same frames through the analyzer directly: the first one also against a dense-only engine.
    let mut analyzer = Analyzer::new(&default_model_path(), AnalyzerOptions::default()).unwrap();
    let dense_opts = AnalyzerOptions {
        engine: EngineConfig {
            mode: RunMode::Dense,
            ..EngineConfig::default()
        },
        ..AnalyzerOptions::default()
    };
    let mut dense = Analyzer::new(&default_model_path(), dense_opts).unwrap();
    for (i, sample) in run.samples.iter().enumerate() {
        let (want, info) = analyze_sample(&mut analyzer, sample);
        let got = run.detections(i);
        assert_same_detections(
            &got,
            &want,
            info.width(),
            info.height(),
            &format!("frame {i}"),
        );
        assert!(
            got.iter().all(|d| d.track_id.is_none()),
            "track ids with tracking off: {got:?}"
        );
        if i == 0 {
            let (dense_dets, _) = analyze_sample(&mut dense, sample);
            assert_same_detections(
                &got,
                &dense_dets,
                info.width(),
                info.height(),
                "first frame vs dense",
            );
            let people: Vec<_> = got
                .iter()
                .filter(|d| d.label == "person" && d.confidence > 0.5)
                .collect();
            assert!(people.len() >= 2, "people on the first frame: {got:?}");
            for p in people {
                assert_eq!(p.roi_type, "person");
                let (x, y, w, h) = p.rect;
                assert!(
                    w > 10 && h > 30 && x + w <= info.width() && y + h <= info.height(),
                    "{p:?}"
                );
                assert!(h > w, "a standing person is taller than wide: {p:?}");
            }
        }
    }
    assert_eq!(run.stats.len(), FRAMES);
    assert!(
        run.stats[0].dense && run.stats[0].active_fraction > 0.99,
        "{:?}",
        run.stats[0]
    );
    assert!(
        run.stats[1..]
            .iter()
            .all(|s| !s.dense && s.active_fraction < 0.9),
        "{:?}",
        run.stats
    );
    assert_eq!(run.stats.last().unwrap().frames, FRAMES as u64);
    assert!(run.stats.iter().all(|s| s.new_tracks.is_none()));
    assert!(run
        .stats
        .iter()
        .all(|s| s.backend == "cpu" || s.backend == "cuda"));
}

/// The clip through `regiondrop tracking=true` into an appsink that holds one buffer, for `n`
/// samples; `on_sample` as in [`run_pipeline`]. Checks that no error was posted.
fn tracked_clip(n: usize, on_sample: impl FnMut(&gst::Pipeline, usize)) -> Run {
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! regiondrop name=rd tracking=true ! \
         appsink name=sink sync=false max-buffers=1",
        video_path()
    );
    let run = run_pipeline(&desc, n, |_| {}, on_sample);
    run.assert_clean();
    run
}

/// Track ids of the confident people on sample `i`.
fn people_ids(run: &Run, i: usize) -> Vec<u64> {
    run.detections(i)
        .iter()
        .filter(|d| d.label == "person" && d.confidence > 0.5)
        .filter_map(|d| d.track_id)
        .collect()
}

/// A frame's detections as the tracker takes them: at conf-threshold, and under it.
type TrackerInput = (Vec<Detection>, Vec<Detection>);

/// Runs `frames` frames of the clip through `regiondrop tracking=true PROPS` and checks, frame by
/// frame, that each detection carries the id a [`Tracker`] with `params` gives the analyzer's
/// detections of the same frames, and that the stats' new-tracks add up to the highest id. Returns
/// the run, the replica tracker and each frame's detections as it took them (at and under
/// conf-threshold).
fn check_tracking_replica(
    props: &str,
    params: TrackParams,
    frames: usize,
) -> (Run, Tracker, Vec<TrackerInput>) {
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \
         regiondrop name=rd tracking=true {props} stats-interval=5 ! appsink name=sink sync=false",
        video_path()
    );
    let run = run_pipeline(&desc, frames, |_| {}, |_, _| {});
    run.assert_clean();
    assert_eq!(run.samples.len(), frames);

    // The element decodes down to track-low-threshold (0.1): detections under conf-threshold
    // (0.35) only continue tracks, and are not attached.
    let opts = AnalyzerOptions {
        decode: DecodeParams {
            conf_threshold: LOW_SCORE,
            ..DecodeParams::default()
        },
        ..AnalyzerOptions::default()
    };
    let mut analyzer = Analyzer::new(&default_model_path(), opts).unwrap();
    let mut tracker = Tracker::new(params);
    let mut want_ids = Vec::new();
    let mut low_boxes = 0;
    let mut taken = Vec::new();
    for (i, sample) in run.samples.iter().enumerate() {
        let (all, info) = analyze_sample(&mut analyzer, sample);
        let (want, low): (Vec<_>, Vec<_>) = all.into_iter().partition(|d| d.confidence >= 0.35);
        low_boxes += low.len();
        tracker.update_with_low(&want, &low, &mut want_ids);
        let got = run.detections(i);
        assert_same_detections(&got, &want, info.width(), info.height(), "tracked");
        let got_ids: Vec<Option<u64>> = got.iter().map(|d| d.track_id).collect();
        assert_eq!(got_ids, want_ids, "frame {i}");
        taken.push((want, low));
    }
    assert!(
        low_boxes > 0,
        "no detection between 0.1 and 0.35 to test with"
    );
    // The stats count the ids started: every id was started once, on a detection.
    let started: u64 = run.stats.iter().map(|s| s.new_tracks.unwrap()).sum();
    let highest = (0..frames)
        .flat_map(|i| run.detections(i))
        .filter_map(|d| d.track_id)
        .max()
        .unwrap();
    assert_eq!(run.stats.len(), frames / 5, "{:?}", run.stats);
    assert_eq!(started, highest, "{:?}", run.stats);
    (run, tracker, taken)
}

/// `tracking=true`: every detection carries the id a [`Tracker`] gives the analyzer's detections
/// of the same frames, and the people of the first frame keep their ids while they walk.
#[test]
fn tracking_gives_people_ids_that_last() {
    // 30 frames: on the 23rd the detections under conf-threshold change an id.
    let params = TrackParams {
        min_iou: 0.25,
        max_age: 5,
        ..TrackParams::default()
    };
    let (run, _, _) = check_tracking_replica("track-iou=0.25 track-max-age=5", params, 30);
    let people = |i: usize| people_ids(&run, i);
    // Over a second of video, at least two of the first frame's people keep their ids.
    let (first, later) = (people(0), people(11));
    let kept = first.iter().filter(|id| later.contains(id)).count();
    assert!(
        first.len() >= 2 && kept >= 2,
        "people's ids on the first frame {first:?}, on the 12th {later:?}"
    );
}

/// `track-min-hits=3`: a new object's first two detections are attached without an id, and boxes
/// seen for fewer frames in a row take none, so fewer ids start than with ids at once.
#[test]
fn track_min_hits_holds_ids_back_until_confirmed() {
    const FRAMES: usize = 40;
    let confirmed = TrackParams {
        min_hits: 3,
        ..TrackParams::default()
    };
    let (run, tracker, taken) = check_tracking_replica("track-min-hits=3", confirmed, FRAMES);
    let ids =
        |i: usize| -> Vec<Option<u64>> { run.detections(i).iter().map(|d| d.track_id).collect() };
    for i in 0..2 {
        assert!(
            !ids(i).is_empty() && ids(i).iter().all(|t| t.is_none()),
            "frame {i}: {:?}",
            ids(i)
        );
    }
    assert!(ids(2).iter().any(|t| t.is_some()), "{:?}", ids(2));

    // The same frames' detections tracked with ids at once start more ids.
    let mut at_once = Tracker::new(TrackParams::default());
    let mut scratch = Vec::new();
    for (high, low) in &taken {
        at_once.update_with_low(high, low, &mut scratch);
    }
    assert!(
        tracker.ids_started() < at_once.ids_started(),
        "ids started with min-hits 3: {}, at once: {}",
        tracker.ids_started(),
        at_once.ids_started()
    );
}

/// The regions' ids are the track ids, and they survive a videoconvert after the element, which on
/// GStreamer 1.22 drops the `detection` structures.
#[test]
fn track_ids_survive_videoconvert_as_region_ids() {
    const FRAMES: usize = 10;
    let run = |after: &str| {
        let desc = format!(
            "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \
             regiondrop tracking=true ! {after} appsink name=sink sync=false",
            video_path()
        );
        let run = run_pipeline(&desc, FRAMES, |_| {}, |_, _| {});
        run.assert_clean();
        run
    };
    let region_ids = |run: &Run, i: usize| -> Vec<i32> {
        let buf = run.samples[i].buffer().unwrap();
        buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| m.id())
            .collect()
    };
    let (plain, converted) = (run(""), run("videoconvert ! video/x-raw,format=I420 !"));
    for i in 0..FRAMES {
        let tracks: Vec<i32> = plain
            .detections(i)
            .iter()
            .map(|d| d.track_id.unwrap() as i32)
            .collect();
        assert!(!tracks.is_empty(), "frame {i}");
        assert_eq!(region_ids(&plain, i), tracks, "frame {i}");
        assert_eq!(
            region_ids(&converted, i),
            tracks,
            "frame {i} after videoconvert"
        );
    }
}

/// Tracking turned off while playing stops the ids; turned on again, ids start past the old ones.
#[test]
fn tracking_switches_while_playing() {
    let run = tracked_clip(14, |p, n| {
        let rd = p.by_name("rd").unwrap();
        match n {
            3 => rd.set_property("tracking", false),
            8 => rd.set_property("tracking", true),
            _ => {}
        }
    });
    let ids =
        |i: usize| -> Vec<Option<u64>> { run.detections(i).iter().map(|d| d.track_id).collect() };
    let first = ids(0);
    assert!(
        !first.is_empty() && first.iter().all(|t| t.is_some()),
        "{first:?}"
    );
    let off: Vec<usize> = (0..14)
        .filter(|&i| !ids(i).is_empty() && ids(i).iter().all(|t| t.is_none()))
        .collect();
    assert!(!off.is_empty(), "no frame without ids after tracking=false");
    let last = ids(13);
    assert!(
        !last.is_empty() && last.iter().all(|t| t.is_some()),
        "{last:?}"
    );
    // A fresh tracker would start at 1 again; the element's keeps counting.
    let old_max = first.iter().flatten().max().copied().unwrap();
    assert!(
        last.iter().flatten().all(|&t| t > old_max),
        "ids after re-enabling {last:?}, first frame {first:?}"
    );
}

/// A flushing seek ends the tracks: the people on the first frame after it get new ids, although
/// the seek goes back to the last frame received, where they stood a frame or two before.
#[test]
fn a_flushing_seek_ends_the_tracks() {
    let run = tracked_clip(8, |p, n| {
        if n == 4 {
            // The clip runs at 10 frames/s: the fourth frame starts at 300 ms.
            let at = gst::ClockTime::from_mseconds(300);
            p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, at)
                .unwrap();
        }
    });
    let pts: Vec<_> = run
        .samples
        .iter()
        .map(|s| s.buffer().unwrap().pts())
        .collect();
    let after = (1..pts.len())
        .find(|&i| pts[i] <= pts[i - 1])
        .unwrap_or_else(|| panic!("no frame after the seek: {pts:?}"));
    let ids = |i: usize| -> Vec<u64> {
        run.detections(i)
            .iter()
            .filter_map(|d| d.track_id)
            .collect()
    };
    let before: Vec<u64> = (0..after).flat_map(ids).collect();
    let (last, first) = (ids(after - 1), ids(after));
    assert!(
        !last.is_empty() && !first.is_empty(),
        "{last:?} / {first:?}"
    );
    assert!(
        first.iter().all(|id| !before.contains(id)),
        "ids before the seek {before:?}, on its first frame {first:?}"
    );
}

/// Two cameras in one process: a tee feeds the clip to two `regiondrop` elements with different
/// change settings, on threads of their own. Each branch gives, frame by frame, the detections of
/// an analyzer with its own settings: the elements share no masks, caches or settings.
#[test]
fn two_elements_in_one_pipeline_keep_their_own_state() {
    const FRAMES: usize = 5;
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! tee name=t \
         t. ! queue ! regiondrop name=rd threads=1 ! appsink name=sink sync=false \
         t. ! queue ! regiondrop name=rd2 threads=1 dilation=0 threshold=12 refresh-tiles=0 ! \
         appsink name=sink2 sync=false",
        video_path()
    );
    let mut second = Vec::new();
    let run = run_pipeline(
        &desc,
        FRAMES,
        |_| {},
        |pipeline, _| {
            let sink2 = pipeline
                .by_name("sink2")
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap();
            let s = sink2.try_pull_sample(gst::ClockTime::from_seconds(60));
            second.push(s.expect("the second branch keeps up"));
        },
    );
    run.assert_clean();
    assert_eq!((run.samples.len(), second.len()), (FRAMES, FRAMES));
    let analyzer = |engine: EngineConfig| {
        let opts = AnalyzerOptions {
            engine,
            ..AnalyzerOptions::default()
        };
        Analyzer::new(&default_model_path(), opts).unwrap()
    };
    let mut first_a = analyzer(EngineConfig {
        threads: 1,
        ..EngineConfig::default()
    });
    let mut second_a = analyzer(EngineConfig {
        threads: 1,
        dilation: 0,
        threshold: 12.0,
        refresh_tiles: 0,
        ..EngineConfig::default()
    });
    let mut differ = false;
    for (i, (s1, s2)) in run.samples.iter().zip(&second).enumerate() {
        let got = [run.detections(i), read_detections(s2.buffer().unwrap())];
        let (want1, info) = analyze_sample(&mut first_a, s1);
        let (want2, _) = analyze_sample(&mut second_a, s2);
        for (g, (w, branch)) in got.iter().zip([(&want1, "first"), (&want2, "second")]) {
            let what = format!("{branch} branch, frame {i}");
            assert_same_detections(g, w, info.width(), info.height(), &what);
        }
        differ |= got[0].len() != got[1].len()
            || got[0]
                .iter()
                .zip(&got[1])
                .any(|(a, b)| a.confidence != b.confidence);
    }
    assert!(
        differ,
        "the branches' settings differ, so must some confidence"
    );
}

#[test]
fn static_scene_goes_inactive_after_the_first_frame() {
    let desc = "videotestsrc pattern=solid-color foreground-color=0xff406080 num-buffers=5 ! \
                video/x-raw,format=RGB,width=320,height=240 ! regiondrop name=rd stats-interval=1 refresh-tiles=0 ! \
                appsink name=sink sync=false";
    let run = run_pipeline(desc, usize::MAX, |_| {}, |_, _| {});
    run.assert_clean();
    assert_eq!(run.samples.len(), 5);
    assert_eq!(run.stats.len(), 5);
    assert!(run.stats[0].dense, "{:?}", run.stats[0]);
    for s in &run.stats[1..] {
        assert!(
            s.active_fraction < 1e-9,
            "static frame recomputed tiles: {s:?}"
        );
        assert_eq!(s.mode(), "sparse");
        assert_eq!(s.active_rect, (0, 0, 0, 0));
    }
    assert_eq!(run.frames_processed, 5);
    assert!(run.last_active < 1e-9);
    // With the default rolling refresh, a static scene recomputes exactly refresh-tiles tiles.
    let desc = "videotestsrc pattern=solid-color foreground-color=0xff406080 num-buffers=4 ! \
                video/x-raw,format=RGB,width=320,height=240 ! regiondrop name=rd stats-interval=1 refresh-tiles=13 ! \
                appsink name=sink sync=false";
    let run = run_pipeline(desc, usize::MAX, |_| {}, |_, _| {});
    run.assert_clean();
    for s in &run.stats[1..] {
        // The default model's 416x416 input has 13x13 tiles.
        assert!(
            (s.active_fraction - 13.0 / 169.0).abs() < 1e-9,
            "rolling refresh: {s:?}"
        );
    }
}

/// `videotestsrc` allocates its frames from the pool the element proposes. On the CUDA backend
/// that pool is page-locked memory and every frame is uploaded from it in place, with the same
/// detections as without the pool (`frame-pool=false`); the CPU backend proposes none, and its
/// frames pass as before.
#[test]
fn frames_from_the_proposed_pool_upload_in_place_on_cuda() {
    let off = |var: &str| std::env::var(var).is_ok_and(|v| v == "0");
    let mut detections = Vec::new();
    for (backend, pool) in [("cpu", true), ("cuda", true), ("cuda", false)] {
        if backend == "cuda" {
            if let Err(e) = gstregiondrop::backend::cuda::available(0) {
                println!("SKIPPED: the CUDA half of the pool test (frame-pool={pool}): {e}");
                continue;
            }
        }
        let desc = format!(
            "videotestsrc num-buffers=4 pattern=ball ! video/x-raw,format=RGB,width=320,height=240 ! \
             regiondrop name=rd backend={backend} frame-pool={pool} stats-interval=1 ! \
             appsink name=sink sync=false"
        );
        let run = run_pipeline(&desc, usize::MAX, |_| {}, |_, _| {});
        run.assert_clean();
        assert_eq!(run.samples.len(), 4, "{desc}");
        let last = run.stats.last().expect("stats");
        assert_eq!((last.backend.as_str(), last.frames), (backend, 4));
        // The device letterbox, and so the pool, needs change detection on the device.
        let in_place = backend == "cuda"
            && pool
            && !off("REGIONDROP_CUDA_LETTERBOX")
            && !off("REGIONDROP_CUDA_DETECT");
        let want = if in_place { 4 } else { 0 };
        assert_eq!(last.uploads_in_place, want, "{desc}: {last:?}");
        if backend == "cuda" {
            detections.push(run.stats.iter().map(|s| s.detections).collect::<Vec<_>>());
        }
    }
    if let [with, without] = &detections[..] {
        assert_eq!(
            with, without,
            "detections a frame, with and without the pool"
        );
    }
}

/// Two test-pattern frames through the element on the CPU backend with `precision`, a stats
/// message per frame: the run, checked clean, with both frames and their stats.
fn two_cpu_frames_in(precision: &str) -> Run {
    let desc = format!(
        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=320,height=240 ! \
         regiondrop name=rd backend=cpu precision={precision} stats-interval=1 ! appsink name=sink sync=false"
    );
    let run = run_pipeline(&desc, usize::MAX, |_| {}, |_, _| {});
    run.assert_clean();
    assert_eq!(run.samples.len(), 2);
    assert!(!run.stats.is_empty());
    run
}

#[test]
fn precision_f16_on_the_cpu_warns_and_runs_in_f32() {
    let run = two_cpu_frames_in("f16");
    assert!(
        run.warnings
            .iter()
            .any(|w| w.text().contains("precision f16") && w.text().contains("f32")),
        "no warning that the CPU computes in f32: {:?}",
        run.warnings
    );
    assert!(
        run.stats.iter().all(|s| s.precision == "f32"),
        "{:?}",
        run.stats
    );
}

/// `precision=bf16` on the CPU backend: bf16 kernels where the CPU has them (AMX tiles or
/// AVX512-BF16; stats say bf16, no warning), else f32 with a warning that names both.
#[test]
fn precision_bf16_on_the_cpu_runs_in_bf16_or_warns() {
    let run = two_cpu_frames_in("bf16");
    let bf16 = gstregiondrop::backend::cpu::CpuBackend::bf16_available();
    let warned = run.warnings.iter().any(|w| {
        let t = w.text();
        t.contains("precision bf16") && t.contains("AMX") && t.contains("AVX512-BF16")
    });
    assert_eq!(warned, !bf16, "bf16 {bf16}, warnings {:?}", run.warnings);
    let want = if bf16 { "bf16" } else { "f32" };
    assert!(
        run.stats.iter().all(|s| s.precision == want),
        "bf16 {bf16}: {:?}",
        run.stats
    );
}

#[test]
fn a_moving_square_activates_only_the_tiles_around_it() {
    let (w, h, side) = (320, 240, 24);
    let pos = |i: usize| (40 + 12 * i, 100);
    let frames: Vec<_> = (0..6)
        .map(|i| {
            let (x, y) = pos(i);
            (
                video_caps("RGB", w, h),
                buffer(square_frame(w, h, x, y, side), i as u64),
            )
        })
        .collect();
    let desc = "appsrc name=src format=time ! regiondrop name=rd stats-interval=1 dilation=0 refresh-tiles=0 ! appsink name=sink sync=false";
    let run = run_pipeline(desc, usize::MAX, |p| push_frames(p, frames), |_, _| {});
    run.assert_clean();
    assert_eq!(run.stats.len(), 6);
    assert!(run.stats[0].dense);
    // 416/320: one 32-pixel network tile is ~25 frame pixels.
    let tile = 32.0 * 320.0 / 416.0;
    for (i, s) in run.stats.iter().enumerate().skip(1) {
        assert!(!s.dense, "frame {i}: {s:?}");
        assert!(
            s.active_fraction > 0.0 && s.active_fraction < 0.1,
            "frame {i}: {s:?}"
        );
        let (ax, ay, aw, ah) = s.active_rect;
        let ((x0, y), (x1, _)) = (pos(i - 1), pos(i));
        // The active region holds the square's new position...
        assert!(
            ax as usize <= x1
                && ay as usize <= y
                && (ax + aw) as usize >= x1 + side
                && (ay + ah) as usize >= y + side,
            "frame {i}: active {:?} misses the square at {:?}",
            s.active_rect,
            pos(i)
        );
        // ...and stays within a tile of the old and new positions.
        let margin = tile as u32 + 1;
        assert!(
            ax + margin >= x0 as u32
                && ay + margin >= y as u32
                && ax + aw <= (x1 + side) as u32 + margin
                && ay + ah <= (y + side) as u32 + margin,
            "frame {i}: active {:?} reaches too far from the square",
            s.active_rect
        );
    }
    assert_eq!(run.frames_processed, 6);
    assert!(run.last_active > 0.0);
}

/// The stats of frames 1.. of `n` frames of a 24-pixel square moving right on 320×240 RGB,
/// through `regiondrop stats-interval=1 refresh-tiles=0 {props}` (frame 0 is the dense first).
fn moving_square_stats(props: &str, n: usize) -> Vec<StatsReport> {
    let (w, h, side) = (320, 240, 24);
    let frames = (0..n)
        .map(|i| {
            (
                video_caps("RGB", w, h),
                buffer(square_frame(w, h, 40 + 12 * i, 100, side), i as u64),
            )
        })
        .collect::<Vec<_>>();
    let desc = format!(
        "appsrc name=src format=time ! regiondrop name=rd stats-interval=1 refresh-tiles=0 {props} ! appsink name=sink sync=false"
    );
    let run = run_pipeline(&desc, usize::MAX, |p| push_frames(p, frames), |_, _| {});
    run.assert_clean();
    assert_eq!(run.stats.len(), n, "{props}");
    run.stats.into_iter().skip(1).collect()
}

/// The margin property grows the mask by pixels: `dilation=0 margin=32` recomputes what
/// `dilation=1` does (tile-size 32), frame for frame, and `margin=8` lies between that and no
/// growth.
#[test]
fn margin_grows_the_mask_between_whole_tiles() {
    let active = |props: &str| {
        moving_square_stats(props, 5)
            .iter()
            .map(|s| s.active_fraction)
            .collect::<Vec<_>>()
    };
    let (none, tile, px32, px8) = (
        active("dilation=0"),
        active("dilation=1"),
        active("dilation=0 margin=32"),
        active("dilation=0 margin=8"),
    );
    assert_eq!(px32, tile);
    let why = format!("no growth {none:?}, margin 8 {px8:?}, one tile {tile:?}");
    for i in 0..none.len() {
        assert!(
            none[i] <= px8[i] && px8[i] <= tile[i],
            "frame {}: {why}",
            i + 1
        );
    }
    // The margin takes effect: more than no growth, less than a whole tile.
    assert!((0..none.len()).any(|i| none[i] < px8[i]), "{why}");
    assert!((0..none.len()).any(|i| px8[i] < tile[i]), "{why}");
}

/// The growth-limit property lets deeper layers grow past the change mask by their reach: the
/// same tiles change, more work is done, and more with a larger limit.
#[test]
fn growth_limit_grows_deeper_layers_beyond_the_mask() {
    let stats = |props: &str| {
        moving_square_stats(props, 4)
            .iter()
            .map(|s| (s.active_fraction, s.work_fraction))
            .collect::<Vec<_>>()
    };
    let (g0, g1, g2) = (
        stats("growth-limit=0"),
        stats("growth-limit=1"),
        stats("growth-limit=2"),
    );
    let why = format!("(active, work) at limits 0, 1, 2: {g0:?} {g1:?} {g2:?}");
    for i in 0..g0.len() {
        assert!(g0[i].0 == g1[i].0 && g1[i].0 == g2[i].0, "{why}");
        assert!((g0[i].1 - g0[i].0).abs() < 1e-9, "one common mask: {why}");
        assert!(g0[i].1 < g1[i].1 && g1[i].1 < g2[i].1, "{why}");
    }
}

#[test]
fn caps_renegotiation_mid_stream_and_discont_reset_the_caches() {
    let (w1, h1, w2, h2) = (320, 240, 256, 200);
    let mut frames = Vec::new();
    for i in 0..3 {
        frames.push((
            video_caps("RGB", w1, h1),
            buffer(square_frame(w1, h1, 50, 50, 20), i),
        ));
    }
    for i in 3..6 {
        let rgb = square_frame(w2, h2, 50, 50, 20);
        frames.push((video_caps("BGRx", w2, h2), buffer(rgb_to_bgrx(&rgb), i)));
    }
    // A static frame again, but flagged DISCONT.
    let mut last = buffer(rgb_to_bgrx(&square_frame(w2, h2, 50, 50, 20)), 6);
    last.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
    frames.push((video_caps("BGRx", w2, h2), last));

    let desc = "appsrc name=src format=time ! regiondrop name=rd stats-interval=1 refresh-tiles=0 ! appsink name=sink sync=false";
    let run = run_pipeline(desc, usize::MAX, |p| push_frames(p, frames), |_, _| {});
    run.assert_clean();
    assert_eq!(run.samples.len(), 7);
    let sizes: Vec<(u32, u32)> = run
        .samples
        .iter()
        .map(|s| {
            let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
            (info.width(), info.height())
        })
        .collect();
    assert_eq!(sizes[..3], [(w1 as u32, h1 as u32); 3]);
    assert_eq!(sizes[3..], [(w2 as u32, h2 as u32); 4]);
    let dense: Vec<bool> = run.stats.iter().map(|s| s.dense).collect();
    assert_eq!(
        dense,
        [true, false, false, true, false, false, true],
        "{:?}",
        run.stats
    );
    assert!(run.stats[4].active_fraction < 1e-9 && run.stats[5].active_fraction < 1e-9);
}

/// With tracking, a DISCONT buffer keeps the tracks (a lost packet; the people are still there),
/// and a new frame size ends them (boxes of the old size would match at the wrong places).
#[test]
fn tracks_survive_a_discont_and_end_with_a_new_frame_size() {
    let clip = gstregiondrop::video::decode_rgb(&default_video_path(), 0, 8).unwrap();
    let (w, h) = (clip[0].width, clip[0].height);
    // The same pictures cut to a lower height: people keep their frame coordinates.
    let h2 = h - 96;
    let mut frames = Vec::new();
    for (i, f) in clip.iter().enumerate() {
        let (rows, caps) = if i < 5 {
            (h, video_caps("RGB", w, h))
        } else {
            (h2, video_caps("RGB", w, h2))
        };
        let mut b = buffer(f.data[..w * rows * 3].to_vec(), i as u64);
        if i == 4 {
            b.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
        }
        frames.push((caps, b));
    }
    let desc = "appsrc name=src format=time ! regiondrop name=rd tracking=true ! \
                appsink name=sink sync=false";
    let run = run_pipeline(desc, usize::MAX, |p| push_frames(p, frames), |_, _| {});
    run.assert_clean();
    assert_eq!(run.samples.len(), 8);
    let people = |i: usize| people_ids(&run, i);
    let (before, discont) = (people(3), people(4));
    let kept = discont.iter().filter(|id| before.contains(id)).count();
    assert!(
        kept >= 2,
        "people's ids before the DISCONT {before:?}, on it {discont:?}"
    );
    let old_max = (0..5).flat_map(people).max().unwrap();
    let resized = people(5);
    assert!(
        !resized.is_empty() && resized.iter().all(|&id| id > old_max),
        "ids up to {old_max} before the new size, on its first frame {resized:?}"
    );
}

#[test]
fn a_flushing_seek_resets_the_caches() {
    let desc = "videotestsrc pattern=solid-color ! video/x-raw,format=RGB,width=160,height=120 ! \
                regiondrop name=rd stats-interval=1 ! appsink name=sink sync=false max-buffers=1";
    let run = run_pipeline(
        desc,
        8,
        |_| {},
        |p, n| {
            if n == 4 {
                p.seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)
                    .unwrap();
            }
        },
    );
    run.assert_clean();
    let dense = run.stats.iter().filter(|s| s.dense).count();
    assert!(
        dense >= 2,
        "no dense frame after the flush: {:?}",
        run.stats
    );
}

#[test]
fn thresholds_change_while_playing_and_the_model_does_not() {
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! regiondrop name=rd stats-interval=0 ! \
         appsink name=sink sync=false max-buffers=1",
        video_path()
    );
    let run = run_pipeline(
        &desc,
        8,
        |_| {},
        |p, n| {
            if n == 2 {
                let rd = p.by_name("rd").unwrap();
                rd.set_property("conf-threshold", 0.999f64);
                rd.set_property("threshold", 30.0f64);
                rd.set_property("model", "/elsewhere/other.onnx");
                assert_eq!(rd.property::<f64>("threshold"), 30.0);
                assert_ne!(rd.property::<String>("model"), "/elsewhere/other.onnx");
            }
        },
    );
    run.assert_clean();
    assert!(!run.detections(0).is_empty());
    assert!(
        run.detections(7).is_empty(),
        "conf-threshold 0.999 did not apply: {:?}",
        run.detections(7)
    );
    assert!(
        run.warnings
            .iter()
            .any(|w| w.src == "rd" && w.message.contains("model")),
        "no warning for the refused model change: {:?}",
        run.warnings
    );
}

/// Crossing messages and the stats' per-line counts of `run`: every crossing is of a person
/// detected with that track id on the frame of its `pts`, and the counts add up to the messages.
fn check_crossings(run: &Run) {
    for c in &run.crossings {
        let pts = c.get::<gst::ClockTime>("pts").unwrap();
        let id = c.get::<u64>("track-id").unwrap();
        let sample = run
            .samples
            .iter()
            .position(|s| s.buffer().unwrap().pts() == Some(pts))
            .unwrap_or_else(|| panic!("no frame at {pts} for {c:?}"));
        let ids: Vec<u64> = run
            .detections(sample)
            .iter()
            .filter_map(|d| d.track_id)
            .collect();
        assert!(ids.contains(&id), "{c:?} on a frame with ids {ids:?}");
        assert_eq!(c.get::<&str>("label").unwrap(), "person");
    }
    let messages = |dir: &str| {
        run.crossings
            .iter()
            .filter(|c| c.get::<&str>("direction").unwrap() == dir)
            .count() as u64
    };
    let counted = |pick: fn(&(u64, u64)) -> u64| -> u64 {
        run.stats
            .iter()
            .filter_map(|s| s.crossings.as_ref())
            .map(|c| c.iter().map(pick).sum::<u64>())
            .sum()
    };
    assert_eq!(counted(|c| c.0), messages("forward"), "{:?}", run.stats);
    assert_eq!(counted(|c| c.1), messages("backward"), "{:?}", run.stats);
}

/// `count-lines`: people walking across a vertical line post crossing messages, each for a
/// person detected on that frame, and the stats' per-line counts add up to the messages, also
/// when the line moves while playing.
#[test]
fn people_crossing_a_line_are_counted() {
    const FRAMES: usize = 120;
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! identity eos-after={FRAMES} ! \
         regiondrop name=rd tracking=true track-min-hits=3 classes=person \
         count-lines=\"400,100,400,450\" stats-interval=50 ! appsink name=sink sync=false",
        video_path()
    );
    let run = run_pipeline(&desc, usize::MAX, |_| {}, |_, _| {});
    run.assert_clean();
    // identity's eos-after has let one buffer fewer through on a loaded machine.
    let n = run.samples.len();
    assert!((FRAMES - 2..=FRAMES).contains(&n), "{n} frames");
    assert!(!run.crossings.is_empty(), "nobody crossed in {n} frames");
    assert_eq!(
        run.stats.len(),
        n.div_ceil(50),
        "full intervals and the rest at EOS"
    );
    check_crossings(&run);

    // The line moves a pixel at frame 40, after the first crossings of the interval: the counts
    // so far are reported with the old line.
    let moved = run_pipeline(
        &desc,
        usize::MAX,
        |_| {},
        |p, n| {
            if n == 40 {
                let rd = p.by_name("rd").unwrap();
                rd.set_property("count-lines", "401,100,401,450");
            }
        },
    );
    moved.assert_clean();
    check_crossings(&moved);
    let first = &moved.stats[0];
    assert!(
        first.interval_frames < 50 && first.crossings.as_ref().unwrap()[0] != (0, 0),
        "the change closes the interval with its counts: {first:?}"
    );

    // Without tracking nothing is counted, and the element says why.
    let untracked = desc.replace("tracking=true", "tracking=false");
    let run = run_pipeline(&untracked, usize::MAX, |_| {}, |_, _| {});
    assert!(run.samples.len() >= FRAMES - 2);
    assert!(run.crossings.is_empty());
    assert!(
        run.warnings
            .iter()
            .any(|w| w.message.contains("count-lines needs tracking=true")),
        "{:?}",
        run.warnings
    );
}

/// The frames after the last full stats interval are reported at the end of the stream, so
/// that figures summed over the messages (such as new-tracks) miss no frame.
#[test]
fn the_last_partial_interval_is_reported_at_eos() {
    let desc = "videotestsrc pattern=ball num-buffers=12 ! video/x-raw,width=320,height=240 ! \
                videoconvert ! regiondrop stats-interval=5 tracking=true ! \
                appsink name=sink sync=false";
    let run = run_pipeline(desc, usize::MAX, |_| {}, |_, _| {});
    run.assert_clean();
    assert_eq!(run.samples.len(), 12);
    let seen: Vec<(u64, u64)> = run
        .stats
        .iter()
        .map(|s| (s.frames, s.interval_frames))
        .collect();
    assert_eq!(seen, vec![(5, 5), (10, 5), (12, 2)]);
    assert!(run.stats.iter().all(|s| s.new_tracks.is_some()));
}

/// `ignore-regions` set while playing stops an on-screen clock from firing tiles; a bad value
/// later is refused with a warning and the regions stay.
#[test]
fn ignore_regions_silence_a_clock_while_playing() {
    const FRAMES: usize = 16;
    // A still test card with a patch of noise at its top left standing in for a clock (new
    // pixels every frame, drawn by plugins-base alone: no fonts), no rolling refresh: only the
    // patch changes.
    let desc = "compositor name=mix ! video/x-raw,width=768,height=576,framerate=10/1 ! \
         videoconvert ! regiondrop name=rd stats-interval=1 refresh-tiles=0 ! \
         appsink name=sink sync=false max-buffers=1 \
         videotestsrc pattern=colors num-buffers=16 ! \
         video/x-raw,width=768,height=576,framerate=10/1 ! mix.sink_0 \
         videotestsrc pattern=snow num-buffers=16 ! \
         video/x-raw,width=240,height=48,framerate=10/1 ! mix.sink_1";
    let run = run_pipeline(
        desc,
        FRAMES,
        |_| {},
        |p, n| {
            let rd = p.by_name("rd").unwrap();
            match n {
                3 => rd.set_property("ignore-regions", "0,0,400,80"),
                8 => rd.set_property("ignore-regions", "0,0,400"),
                _ => {}
            }
        },
    );
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.stats.len(), FRAMES);
    let active = |f: usize| run.stats[f].active_fraction;
    for f in 1..3 {
        let (x, y, w, h) = run.stats[f].active_rect;
        assert!(active(f) > 0.0, "frame {f}: the clock fires no tile");
        assert!(
            x + w <= 500 && y + h <= 160,
            "frame {f}: {:?}",
            run.stats[f]
        );
    }
    for f in 7..FRAMES {
        assert_eq!(active(f), 0.0, "frame {f}: {:?}", run.stats[f]);
    }
    assert!(
        run.warnings
            .iter()
            .any(|w| w.src == "rd" && w.message.contains("ignore-regions: `0,0,400`")),
        "no warning for the bad regions: {:?}",
        run.warnings
    );
}

fn expect_error(desc: &str, feed: impl FnOnce(&gst::Pipeline), needles: &[&str]) -> Posted {
    let run = run_pipeline(desc, usize::MAX, feed, |_, _| {});
    let err = run
        .errors
        .iter()
        .find(|e| e.src == "rd")
        .unwrap_or_else(|| panic!("no error from regiondrop for `{desc}`: {:?}", run.errors))
        .clone();
    for n in needles {
        assert!(
            err.text().contains(n),
            "error `{}` does not name `{n}`",
            err.text()
        );
    }
    err
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("regiondrop-element-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A one-node ONNX model: image [1,3,64,64] → `op` → output.
fn one_node_model(op: &str, node: &str) -> Vec<u8> {
    use onnx_protobuf::{
        tensor_shape_proto, type_proto, GraphProto, Message, ModelProto, NodeProto,
        OperatorSetIdProto, TypeProto, ValueInfoProto,
    };
    let value = |name: &str, dims: &[i64]| {
        let mut shape = onnx_protobuf::TensorShapeProto::new();
        for &d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.set_dim_value(d);
            shape.dim.push(dim);
        }
        let mut tensor = type_proto::Tensor::new();
        tensor.elem_type = 1;
        tensor.shape = Some(shape).into();
        let mut tp = TypeProto::new();
        tp.set_tensor_type(tensor);
        let mut v = ValueInfoProto::new();
        v.name = name.into();
        v.type_ = Some(tp).into();
        v
    };
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = node.into();
    n.input = vec!["images".into()];
    n.output = vec!["out".into()];
    let mut g = GraphProto::new();
    g.name = "g".into();
    g.node.push(n);
    g.input.push(value("images", &[1, 3, 64, 64]));
    g.output.push(value("out", &[1, 3, 64, 64]));
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut opset = OperatorSetIdProto::new();
    opset.version = 13;
    m.opset_import.push(opset);
    m.graph = Some(g).into();
    m.write_to_bytes().unwrap()
}

fn with_model(model: &Path, extra: &str) -> String {
    format!(
        "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=64 ! regiondrop name=rd model={} {extra} ! fakesink",
        model.display()
    )
}

#[test]
fn model_errors_name_the_file_and_the_op() {
    let missing = Path::new("/nonexistent/regiondrop/missing-model.onnx");
    let e = expect_error(&with_model(missing, ""), |_| {}, &["missing-model.onnx"]);
    assert!(e.text().contains("No such file"), "{}", e.text());

    let junk = temp_file("junk.onnx", b"this is a text file, not a protobuf model\n");
    expect_error(
        &with_model(&junk, ""),
        |_| {},
        &["junk.onnx", "not a valid ONNX model"],
    );

    let lstm = temp_file("lstm.onnx", &one_node_model("LSTM", "the_lstm"));
    expect_error(
        &with_model(&lstm, ""),
        |_| {},
        &["lstm.onnx", "LSTM", "the_lstm"],
    );

    expect_error(
        &with_model(&default_model_path(), "tile-size=20"),
        |_| {},
        &["tile-size 20"],
    );
    expect_error(
        &with_model(&default_model_path(), "classes=unicorn"),
        |_| {},
        &["unicorn"],
    );
    expect_error(
        &with_model(&default_model_path(), "count-lines=\"5,5,5,5\""),
        |_| {},
        &["count-lines", "5,5,5,5"],
    );
    expect_error(
        &with_model(&default_model_path(), "ignore-regions=\"0,0,-4,4\""),
        |_| {},
        &["ignore-regions", "0,0,-4,4"],
    );
}

#[test]
fn unsupported_caps_are_named() {
    let frames = vec![(video_caps("GRAY8", 64, 48), buffer(vec![0u8; 64 * 48], 0))];
    let desc = "appsrc name=src format=time ! regiondrop name=rd ! fakesink";
    expect_error(desc, |p| push_frames(p, frames), &["GRAY8", "videoconvert"]);
}

#[test]
fn every_format_gives_the_same_detections() {
    let frame = gstregiondrop::video::decode_rgb(&default_video_path(), 0, 1)
        .unwrap()
        .remove(0);
    // Crop to a size that is not a multiple of the tile (even, for the 4:2:0 formats).
    let (w, h) = (frame.width - 2, frame.height - 6);
    // GStreamer's RGB rows are padded to 4 bytes.
    let stride = (w * 3).next_multiple_of(4);
    let mut rgb = vec![0u8; stride * h];
    for y in 0..h {
        rgb[y * stride..y * stride + w * 3]
            .copy_from_slice(&frame.data[y * frame.width * 3..(y * frame.width + w) * 3]);
    }
    let detect = |format: &str| {
        let desc = format!(
            "appsrc name=src format=time ! videoconvert ! video/x-raw,format={format} ! \
             regiondrop name=rd ! appsink name=sink sync=false"
        );
        let frames = vec![(video_caps("RGB", w, h), buffer(rgb.clone(), 0))];
        let run = run_pipeline(&desc, usize::MAX, |p| push_frames(p, frames), |_, _| {});
        run.assert_clean();
        assert_eq!(run.samples.len(), 1, "{format}");
        let caps = run.samples[0]
            .caps()
            .unwrap()
            .structure(0)
            .unwrap()
            .get::<String>("format")
            .unwrap();
        assert_eq!(caps, format);
        run.detections(0)
    };
    let reference = detect("RGB");
    assert!(
        reference
            .iter()
            .filter(|d| d.label == "person" && d.confidence > 0.5)
            .count()
            >= 2,
        "{reference:?}"
    );
    for format in ["RGBA", "BGR", "BGRx", "BGRA", "RGBx", "I420", "NV12"] {
        let got = detect(format);
        let packed = !matches!(format, "I420" | "NV12");
        if packed {
            // Same pixels, another layout: identical results.
            assert_eq!(got, reference, "{format}");
        } else {
            // Chroma subsampling changes the pixels a little: confident boxes must still agree.
            covered(&reference, &got, 0.5, 0.7)
                .map_err(|e| format!("{format}: lost {e}"))
                .unwrap();
            covered(&got, &reference, 0.5, 0.7)
                .map_err(|e| format!("{format}: extra {e}"))
                .unwrap();
        }
    }
}
