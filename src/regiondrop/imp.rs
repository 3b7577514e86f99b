//! `regiondrop`: BaseTransform, always in place. Per frame: map → pixel source → analyzer
//! (letterbox, change mask, sparse network, decode) → region-of-interest metas → stats message.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use super::pool::offer_frame_pool;
use super::settings::{self, parse_classes, parse_input_size, Settings, SET_WHILE_STOPPED};
use crate::analyzer::{Analyzer, AnalyzerOptions};
use crate::detect::{load_labels, DecodeParams, DecoderKind, COCO_LABELS};
use crate::engine::{EngineConfig, FrameStats};
use crate::error::{panic_text, Error};
use crate::meta::{self, StatsReport};
use crate::model::store;
use crate::preprocess::{parse_regions, Letterbox, PackedFrame, PixelSource, Yuv420Frame};
use crate::track::{parse_lines, LineCounter, Tracker};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "regiondrop",
        gst::DebugColorFlags::empty(),
        Some("Region-sparse CNN object detector"),
    )
});

/// The formats we read directly (no conversion inside the element).
const FORMATS: [gst_video::VideoFormat; 8] = [
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Nv12,
];
const FORMAT_NAMES: &str = "RGB, RGBA, BGR, BGRx, BGRA, RGBx, I420 or NV12";

/// Network input side cap for models with dynamic input dims and no `input-size`.
const MAX_AUTO_INPUT_SIDE: usize = 1280;
/// Size used to check a dynamic-input model at start, before the frame size is known.
const PROBE_INPUT_SIDE: usize = 640;

/// The warning for counting lines set while tracking is off.
const LINES_NEED_TRACKING: &str = "count-lines needs tracking=true: no crossings are counted";

/// Figures accumulated between two stats messages.
#[derive(Default)]
struct Interval {
    frames: u64,
    active: f64,
    work: f64,
    dense: u64,
    ms: f64,
    /// Track ids started.
    new_tracks: u64,
    /// Per counting line: crossings (forward, backward).
    crossings: Vec<(u64, u64)>,
    /// The interval's last frame, which the report describes where it reports one frame.
    last: Option<LastFrame>,
}

#[derive(Clone, Copy)]
struct LastFrame {
    /// Frames processed since the element started, this one included.
    frames: u64,
    dense: bool,
    detections: u32,
    fw: u32,
    fh: u32,
}

struct State {
    /// None until caps arrive for models with dynamic input dims and no `input-size`.
    analyzer: Option<Analyzer>,
    /// Options the analyzer was (or will be) built with, live settings included.
    opts: AnalyzerOptions,
    model: PathBuf,
    /// Largest stride of a dynamic-input model, whose input size follows the frame size.
    dynamic_stride: Option<usize>,
    labels: Vec<String>,
    info: Option<gst_video::VideoInfo>,
    applied_revision: u64,
    interval: Interval,
    /// Whether detections get track ids (`tracking`).
    tracking: bool,
    /// `conf-threshold` where the outputs are decoded below it: the detections under it only
    /// continue tracks.
    split_at: Option<f32>,
    /// Kept while tracking is off (with no tracks), so that ids never repeat until a restart.
    tracker: Tracker,
    /// The last frame's track id of each detection.
    track_ids: Vec<Option<u64>>,
    /// Where tracked objects were, for `count-lines`.
    counter: LineCounter,
    /// Stats reports made while settings were applied, posted once no lock is held.
    pending: Vec<StatsReport>,
}

impl State {
    fn reset(&mut self) {
        if let Some(a) = self.analyzer.as_mut() {
            a.reset();
        }
    }

    /// Ends the tracks (a seek or a new stream); a discontinuity alone keeps them, so ids survive
    /// a lost packet when the objects are still where they were.
    fn end_tracks(&mut self) {
        self.tracker.reset();
        self.counter.reset();
    }

    /// Whether crossings of the counting lines are counted.
    fn counting(&self) -> bool {
        self.tracking && !self.counter.lines().is_empty()
    }
}

#[derive(Default)]
pub struct RegionDrop {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Set between start() and stop(); read by set_property without waiting for a frame.
    running: AtomicBool,
    frames_processed: AtomicU64,
    /// f64 bits of the last frame's active fraction.
    last_active: AtomicU64,
}

#[glib::object_subclass]
impl ObjectSubclass for RegionDrop {
    const NAME: &'static str = "GstRegionDrop";
    type Type = super::RegionDrop;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for RegionDrop {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::param_specs);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if SET_WHILE_STOPPED.contains(&name) && self.running.load(Ordering::SeqCst) {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                ("Refusing to change `{}` while running", name),
                [
                    "`{}` shapes the loaded network; set it in the NULL or READY state",
                    name
                ]
            );
            return;
        }
        let mut s = self.settings.lock().unwrap();
        if let Err(e) = s.set(name, value) {
            gst::warning!(CAT, imp = self, "{e}; the element will refuse to start");
        }
        s.revision += 1;
        drop(s);
        gst::debug!(CAT, imp = self, "{name} set");
        if name == "frame-pool" && self.running.load(Ordering::SeqCst) {
            // Upstream asks for allocation again, and takes the pool or leaves it.
            self.obj()
                .sink_pad()
                .push_event(gst::event::Reconfigure::new());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "active-fraction" => {
                f64::from_bits(self.last_active.load(Ordering::Relaxed)).to_value()
            }
            "frames-processed" => self.frames_processed.load(Ordering::Relaxed).to_value(),
            name => self.settings.lock().unwrap().get(name).unwrap(),
        }
    }
}

impl GstObjectImpl for RegionDrop {}

impl ElementImpl for RegionDrop {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RegionDrop detector",
                "Filter/Analyzer/Video",
                "Detects objects with an ONNX CNN, recomputing only the tiles of a fixed camera's frame that \
                 changed; attaches detections as GstVideoRegionOfInterestMeta and posts regiondrop-stats messages",
                "regiondrop developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS)
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for RegionDrop {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let state = match catch_unwind(AssertUnwindSafe(|| self.build_state(&settings))) {
            Ok(r) => r?,
            Err(panic) => {
                return Err(gst::error_msg!(
                    gst::LibraryError::Init,
                    (
                        "Loading model {} failed: {}",
                        settings.model.display(),
                        panic_text(&panic)
                    )
                ))
            }
        };
        if let Some(a) = &state.analyzer {
            gst::info!(
                CAT,
                imp = self,
                "Loaded {} ({}x{} input, {:?} decoder, {} backend: {})",
                state.model.display(),
                a.engine().plan().input_w,
                a.engine().plan().input_h,
                a.decoder(),
                a.engine().backend_name(),
                a.engine().backend_details()
            );
        }
        let lines_unused = !state.tracking && !state.counter.lines().is_empty();
        *self.state.lock().unwrap() = Some(state);
        if lines_unused {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                ("{}", LINES_NEED_TRACKING)
            );
        }
        self.frames_processed.store(0, Ordering::Relaxed);
        self.last_active.store(0f64.to_bits(), Ordering::Relaxed);
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.running.store(false, Ordering::SeqCst);
        *self.state.lock().unwrap() = None;
        gst::info!(CAT, imp = self, "Stopped");
        Ok(())
    }

    fn accept_caps(&self, direction: gst::PadDirection, caps: &gst::Caps) -> bool {
        if self.parent_accept_caps(direction, caps) {
            return true;
        }
        // Fixed raw-video caps in system memory are let through on the sink side so that the caps
        // event reaches sink_event, which refuses them with an error naming the caps; a bare
        // not-negotiated would leave the user guessing.
        direction == gst::PadDirection::Sink
            && caps.is_fixed()
            && caps.structure(0).is_some_and(|s| s.name() == "video/x-raw")
            && in_system_memory(caps)
    }

    /// Where the backend uploads frames faster from memory of its own (the CUDA backend's
    /// page-locked blocks), upstream is offered a pool of such buffers first (`frame-pool`), so
    /// that a decoder or converter writes each frame where the upload reads it.
    fn propose_allocation(
        &self,
        decide_query: Option<&gst::query::Allocation>,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        // The element works in place: the query goes on downstream first.
        let downstream = self.parent_propose_allocation(decide_query, query);
        // Not under the settings lock: frames take the state lock first.
        let wanted = self.settings.lock().unwrap().frame_pool;
        let memory = wanted
            .then(|| {
                let state = self.state.lock().unwrap();
                state.as_ref()?.analyzer.as_ref()?.frame_memory()
            })
            .flatten();
        match memory.and_then(|m| offer_frame_pool(query, m)) {
            Some(caps) => {
                gst::debug!(
                    CAT,
                    imp = self,
                    "Offering a pool of frame memory for {caps}"
                );
                // Downstream that answers nothing (appsink, fakesink) still gets this pool.
                Ok(())
            }
            None => downstream,
        }
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => self.reset_caches_and_tracks("flush"),
            gst::EventView::StreamStart(_) => self.reset_caches_and_tracks("stream-start"),
            // The frames since the last stats message are reported before the stream ends.
            gst::EventView::Eos(_) => self.post_partial_stats(),
            gst::EventView::Caps(c) => {
                if let Err((msg, hint)) = check_caps(c.caps()) {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ("{}", msg),
                        ["{}", hint]
                    );
                    return false;
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "Cannot parse caps {}", incaps))?;
        let mut guard = self.state.lock().unwrap();
        let state = guard
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "Caps before start"))?;
        if let Some(stride) = state.dynamic_stride {
            let size = dynamic_input_size(info.width() as usize, info.height() as usize, stride);
            let current = state
                .analyzer
                .as_ref()
                .map(|a| (a.engine().plan().input_w, a.engine().plan().input_h));
            if current != Some(size) {
                let mut opts = state.opts.clone();
                opts.input_size = Some(size);
                let built = catch_unwind(AssertUnwindSafe(|| Analyzer::new(&state.model, opts)));
                match built {
                    Ok(Ok(a)) => {
                        gst::info!(
                            CAT,
                            imp = self,
                            "Network input {}x{} for {}x{} frames on the {}",
                            size.0,
                            size.1,
                            info.width(),
                            info.height(),
                            a.engine().backend_label()
                        );
                        self.warn_backend(&a);
                        state.analyzer = Some(a);
                    }
                    Ok(Err(e)) => {
                        let msg = error_message(&e);
                        self.post_error_message(msg);
                        return Err(gst::loggable_error!(
                            CAT,
                            "Cannot build the network for {}x{}: {}",
                            size.0,
                            size.1,
                            e
                        ));
                    }
                    Err(panic) => {
                        let text = panic_text(&panic);
                        gst::element_imp_error!(
                            self,
                            gst::LibraryError::Init,
                            ("Loading model {} failed: {}", state.model.display(), text)
                        );
                        return Err(gst::loggable_error!(CAT, "model load panicked: {}", text));
                    }
                }
            }
        }
        if state.info.as_ref() != Some(&info) {
            gst::debug!(CAT, imp = self, "New caps {}: caches reset", incaps);
            state.reset();
        }
        let size = |i: &gst_video::VideoInfo| (i.width(), i.height());
        if state
            .info
            .as_ref()
            .is_some_and(|old| size(old) != size(&info))
        {
            // Boxes of the old frame size would match new ones at the wrong places.
            gst::debug!(CAT, imp = self, "New frame size: tracks ended");
            state.end_tracks();
        }
        state.info = Some(info);
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("Buffer before start"));
            return Err(gst::FlowError::Error);
        };
        let Some(info) = state.info.clone() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("Buffer before caps"));
            return Err(gst::FlowError::NotNegotiated);
        };
        // Warnings about refused settings are posted once no lock is held: a sync bus handler
        // may read properties.
        let mut refused = Vec::new();
        let stats_interval = {
            let settings = self.settings.lock().unwrap();
            if state.applied_revision != settings.revision {
                refused = self.apply_live_settings(state, &settings);
                state.applied_revision = settings.revision;
            }
            settings.stats_interval
        };
        if buf.flags().contains(gst::BufferFlags::DISCONT) {
            gst::debug!(CAT, imp = self, "DISCONT buffer: caches reset");
            state.reset();
        }
        let Some(analyzer) = state.analyzer.as_mut() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("No network loaded: an earlier error stopped it")
            );
            return Err(gst::FlowError::NotNegotiated);
        };

        let (fw, fh) = (info.width(), info.height());
        let outcome = {
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(&*buf, &info).map_err(|e| {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Read,
                        ("Cannot map the video frame: {}", e)
                    );
                    gst::FlowError::Error
                })?;
            let source = frame_source(&frame).map_err(|e| {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e));
                gst::FlowError::NotNegotiated
            })?;
            catch_unwind(AssertUnwindSafe(|| analyzer.process(source.as_dyn())))
        };
        let (stats, detections) = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("Inference failed: {}", e)
                );
                return Err(gst::FlowError::Error);
            }
            Err(panic) => {
                let text = panic_text(&panic);
                // The caches may be half-written: drop the network rather than trust it again.
                state.analyzer = None;
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("Inference panicked: {}", text)
                );
                return Err(gst::FlowError::Error);
            }
        };
        // Decoded below conf-threshold for the tracker: those are not detections.
        let (detections, low): (Vec<_>, Vec<_>) = match state.split_at {
            Some(c) => detections.into_iter().partition(|d| d.confidence >= c),
            None => (detections, Vec::new()),
        };
        gst::trace!(
            CAT,
            imp = self,
            "frame {}: active {:.3}, {}, {:.1} ms, {} detections",
            stats.frame,
            stats.active_fraction,
            if stats.dense { "dense" } else { "sparse" },
            stats.ms,
            detections.len()
        );
        let track_ids = if state.tracking {
            let (tracker, ids) = (&mut state.tracker, &mut state.track_ids);
            let before = tracker.ids_started();
            let update = || tracker.update_with_low(&detections, &low, ids);
            if let Err(panic) = catch_unwind(AssertUnwindSafe(update)) {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("Tracking panicked: {}", panic_text(&panic))
                );
                return Err(gst::FlowError::Error);
            }
            state.interval.new_tracks += state.tracker.ids_started() - before;
            Some(&state.track_ids[..])
        } else {
            None
        };
        let mut crossed = Vec::new();
        if state.counting() {
            let forget = state.tracker.params.max_age as u64 + 1;
            state
                .counter
                .update(&detections, &state.track_ids, forget, &mut crossed);
            let counts = &mut state.interval.crossings;
            counts.resize(state.counter.lines().len(), (0, 0));
            for c in &crossed {
                let n = &mut counts[c.line];
                *(if c.forward { &mut n.0 } else { &mut n.1 }) += 1;
            }
        }
        let crossings: Vec<gst::Structure> = crossed
            .iter()
            .map(|c| {
                let label = meta::label_for(&state.labels, c.class_id);
                meta::crossing_structure(c, &label, buf.pts())
            })
            .collect();
        if CAT.above_threshold(gst::DebugLevel::Debug) {
            let listed: Vec<String> = detections
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let (x, y, w, h) = meta::frame_rect(d.bbox, fw, fh);
                    let track = match track_ids.map(|t| t[i]) {
                        Some(Some(id)) => format!(" #{id}"),
                        Some(None) => " #-".to_string(),
                        None => String::new(),
                    };
                    format!(
                        "{}{track} {:.2} [{x},{y} {w}x{h}]",
                        meta::label_for(&state.labels, d.class_id),
                        d.confidence
                    )
                })
                .collect();
            gst::debug!(
                CAT,
                imp = self,
                "frame {} pts {}: {} detections: {}",
                stats.frame,
                buf.pts().display(),
                listed.len(),
                listed.join(", ")
            );
        }
        meta::attach_detections(buf, &detections, track_ids, &state.labels, fw, fh);

        let frames = self.frames_processed.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_active
            .store(stats.active_fraction.to_bits(), Ordering::Relaxed);
        let last = LastFrame {
            frames,
            dense: stats.dense,
            detections: detections.len() as u32,
            fw,
            fh,
        };
        let report = account(state, &stats, last, stats_interval);
        let pending = std::mem::take(&mut state.pending);
        drop(guard);

        for report in pending {
            self.post_stats(report);
        }
        for text in refused {
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{}", text));
        }
        for s in crossings {
            let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
            let _ = self.obj().post_message(msg);
        }
        if let Some(report) = report {
            self.post_stats(report);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

impl RegionDrop {
    /// Posts a warning when the backend is not what the settings asked for (see
    /// `Engine::backend_warning`).
    fn warn_backend(&self, a: &Analyzer) {
        if let Some(w) = a.engine().backend_warning() {
            gst::element_imp_warning!(self, gst::LibraryError::Init, ("{}", w));
        }
    }

    /// Labels, class filter, options and (for fixed-size models) the analyzer; errors name the
    /// file, node/op or setting at fault.
    fn build_state(&self, s: &Settings) -> Result<State, gst::ErrorMessage> {
        let labels: Vec<String> = match &s.labels {
            Some(path) => load_labels(path).map_err(|e| {
                gst::error_msg!(gst::ResourceError::OpenRead, ("{}", e), ["labels property"])
            })?,
            None => COCO_LABELS.iter().map(|l| l.to_string()).collect(),
        };
        let classes = parse_classes(&s.classes, &labels)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        let input_size = parse_input_size(&s.input_size)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        let ignore = parse_regions(&s.ignore_regions)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        let lines = parse_lines(&s.count_lines)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        let mut opts = AnalyzerOptions {
            engine: EngineConfig {
                tile: s.tile_size as usize,
                threads: s.threads as usize,
                backend: s.backend.into(),
                device_id: s.device_id as usize,
                precision: s.precision.into(),
                ..EngineConfig::default()
            },
            decode: DecodeParams::default(),
            decoder: s.decoder.kind(),
            input_size,
            ignore: Vec::new(),
        };
        s.apply_live(&mut opts, classes, ignore);

        // A model with symbolic input dims is imported once at a probe size, so that unsupported
        // ops fail now, not at the first caps. Elements on the same file share its plan.
        let probe = Some((PROBE_INPUT_SIDE, PROBE_INPUT_SIDE));
        let store::Loaded {
            plan,
            follows_frames,
            shared,
        } = store::load(&s.model, input_size, probe).map_err(|e| error_message(&e))?;
        if shared {
            gst::info!(
                CAT,
                imp = self,
                "{} is already loaded by another element of this process: sharing its weights",
                s.model.display()
            );
        }
        let (analyzer, dynamic_stride) = if !follows_frames {
            let a = Analyzer::with_plan(plan, opts.clone()).map_err(|e| error_message(&e))?;
            gst::info!(
                CAT,
                imp = self,
                "Running on the {}",
                a.engine().backend_label()
            );
            self.warn_backend(&a);
            (Some(a), None)
        } else {
            if opts.decoder.is_none() {
                let shapes = plan.output_dims();
                DecoderKind::detect(&shapes).map_err(|reason| {
                    error_message(&Error::BadModel {
                        path: s.model.clone(),
                        reason,
                    })
                })?;
            }
            gst::info!(
                CAT,
                imp = self,
                "{} has dynamic input dims: input size follows the frame size",
                s.model.display()
            );
            (None, Some(plan.max_scale))
        };
        Ok(State {
            analyzer,
            opts,
            model: s.model.clone(),
            dynamic_stride,
            labels,
            info: None,
            applied_revision: s.revision,
            interval: Interval::default(),
            tracking: s.tracking,
            split_at: s.split_at(),
            tracker: Tracker::new(s.track_params()),
            track_ids: Vec::new(),
            counter: LineCounter::new(lines),
            pending: Vec::new(),
        })
    }

    /// Applies the live settings; returns the texts of the warnings for those refused (bad
    /// values keep the previous ones), for the caller to post once it holds no lock.
    fn apply_live_settings(&self, state: &mut State, s: &Settings) -> Vec<String> {
        let mut refused = Vec::new();
        let classes = parse_classes(&s.classes, &state.labels).unwrap_or_else(|e| {
            refused.push(format!("{e}; keeping the previous class filter"));
            state.opts.decode.classes.clone()
        });
        let ignore = parse_regions(&s.ignore_regions).unwrap_or_else(|e| {
            refused.push(format!("{e}; keeping the previous regions"));
            state.opts.ignore.clone()
        });
        let lines_before = state.counter.lines().len();
        let tracking_before = state.tracking;
        match parse_lines(&s.count_lines) {
            Ok(lines) if lines != state.counter.lines() => {
                // Counts are per line: the interval so far is reported with the old lines.
                if !state.interval.crossings.is_empty() {
                    let report = take_report(state);
                    state.pending.extend(report);
                }
                state.counter.set_lines(lines);
            }
            Ok(_) => {}
            Err(e) => refused.push(format!("{e}; keeping the previous lines")),
        }
        let lines = state.counter.lines().len();
        let changed = lines != lines_before || s.tracking != tracking_before;
        if !s.tracking && lines > 0 && changed {
            refused.push(LINES_NEED_TRACKING.into());
        }
        s.apply_live(&mut state.opts, classes, ignore);
        state.tracker.params = s.track_params();
        if state.tracking && !s.tracking {
            state.end_tracks();
        }
        state.tracking = s.tracking;
        state.split_at = s.split_at();
        if let Some(a) = state.analyzer.as_mut() {
            let cfg = a.engine_mut().config_mut();
            cfg.threshold = state.opts.engine.threshold;
            cfg.metric = state.opts.engine.metric;
            cfg.dilation = state.opts.engine.dilation;
            cfg.margin = state.opts.engine.margin;
            cfg.growth_limit = state.opts.engine.growth_limit;
            cfg.exact = state.opts.engine.exact;
            cfg.refresh_interval = state.opts.engine.refresh_interval;
            cfg.refresh_tiles = state.opts.engine.refresh_tiles;
            a.params = state.opts.decode.clone();
            a.ignore = state.opts.ignore.clone();
        }
        gst::debug!(
            CAT,
            imp = self,
            "Live settings applied (revision {})",
            s.revision
        );
        refused
    }

    fn reset_caches_and_tracks(&self, why: &str) {
        if let Some(state) = self.state.lock().unwrap().as_mut() {
            gst::debug!(CAT, imp = self, "{why}: caches and tracks reset");
            state.reset();
            state.end_tracks();
        }
    }

    /// At the end of the stream: the stats of the frames since the last message, if any (with
    /// `stats-interval` above 0), so that a count summed over the messages misses no frame.
    fn post_partial_stats(&self) {
        let interval = self.settings.lock().unwrap().stats_interval;
        let report = match self.state.lock().unwrap().as_mut() {
            Some(state) if interval > 0 => take_report(state),
            _ => None,
        };
        if let Some(report) = report {
            self.post_stats(report);
        }
    }

    fn post_stats(&self, report: StatsReport) {
        let msg = gst::message::Element::builder(report.to_structure())
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
    }
}

/// Adds the frame (`last`, with its `stats`) to the interval figures; returns the report when
/// one is due after `interval` frames.
fn account(
    state: &mut State,
    stats: &FrameStats,
    last: LastFrame,
    interval: u32,
) -> Option<StatsReport> {
    let iv = &mut state.interval;
    iv.frames += 1;
    iv.active += stats.active_fraction;
    iv.work += stats.work_fraction;
    iv.dense += stats.dense as u64;
    iv.ms += stats.ms;
    iv.last = Some(last);
    if interval == 0 {
        state.interval = Interval::default();
        return None;
    }
    if iv.frames < interval as u64 {
        return None;
    }
    take_report(state)
}

/// The report of the interval's frames (None before its first frame), and a new interval.
fn take_report(state: &mut State) -> Option<StatsReport> {
    let iv = std::mem::take(&mut state.interval);
    let (last, analyzer) = (iv.last?, state.analyzer.as_ref()?);
    let n = iv.frames as f64;
    Some(StatsReport {
        frames: last.frames,
        interval_frames: iv.frames,
        active_fraction: iv.active / n,
        work_fraction: iv.work / n,
        dense_frames: iv.dense,
        dense: last.dense,
        inference_ms: iv.ms / n,
        backend: analyzer.engine().backend_name().to_string(),
        precision: analyzer.engine().precision().to_string(),
        detections: last.detections,
        uploads_in_place: analyzer.engine().direct_uploads(),
        active_rect: active_rect(analyzer, last.fw, last.fh),
        new_tracks: state.tracking.then_some(iv.new_tracks),
        // Counted while the lines were set and tracking on, also where that ended during the
        // interval.
        crossings: (state.counting() || !iv.crossings.is_empty()).then(|| {
            let mut c = iv.crossings;
            c.resize(c.len().max(state.counter.lines().len()), (0, 0));
            c
        }),
    })
}

/// Bounding box, in frame pixels, of the tiles the last frame recomputed.
fn active_rect(analyzer: &Analyzer, fw: u32, fh: u32) -> (u32, u32, u32, u32) {
    let engine = analyzer.engine();
    let (grid, mask) = (engine.grid(), engine.mask());
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for i in 0..grid.len() {
        if mask.get(i) {
            let (a, b, c, d) = grid.rect(i, 1, grid.width, grid.height);
            (x0, y0, x1, y1) = (x0.min(a), y0.min(b), x1.max(c), y1.max(d));
        }
    }
    if x0 >= x1 || y0 >= y1 {
        return (0, 0, 0, 0);
    }
    let lb = Letterbox::fit(fw as usize, fh as usize, grid.width, grid.height);
    let (fx0, fy0) = lb.to_frame(x0 as f32, y0 as f32);
    let (fx1, fy1) = lb.to_frame(x1 as f32, y1 as f32);
    meta::frame_rect([fx0, fy0, fx1, fy1], fw, fh)
}

/// The frame's pixels as the analyzer reads them, whatever the memory layout.
enum FrameSource<'a> {
    Packed(PackedFrame<'a>),
    Yuv(Yuv420Frame<'a>),
}

impl FrameSource<'_> {
    fn as_dyn(&self) -> &dyn PixelSource {
        match self {
            FrameSource::Packed(p) => p,
            FrameSource::Yuv(y) => y,
        }
    }
}

fn frame_source<'a>(
    frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>,
) -> Result<FrameSource<'a>, String> {
    use gst_video::VideoFormat as F;
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let stride = |p: usize| frame.plane_stride()[p] as usize;
    let plane = |p: u32| frame.plane_data(p).map_err(|e| format!("plane {p}: {e}"));
    let packed = |bytes_per_px, rgb_offsets| -> Result<FrameSource<'a>, String> {
        Ok(FrameSource::Packed(PackedFrame {
            data: plane(0)?,
            width,
            height,
            stride: stride(0),
            bytes_per_px,
            rgb_offsets,
        }))
    };
    match frame.format() {
        F::Rgb => packed(3, [0, 1, 2]),
        F::Bgr => packed(3, [2, 1, 0]),
        F::Rgba | F::Rgbx => packed(4, [0, 1, 2]),
        F::Bgra | F::Bgrx => packed(4, [2, 1, 0]),
        F::I420 => Ok(FrameSource::Yuv(Yuv420Frame {
            y: plane(0)?,
            y_stride: stride(0),
            u: plane(1)?,
            v: plane(2)?,
            uv_stride: stride(1),
            interleaved: false,
            width,
            height,
        })),
        F::Nv12 => Ok(FrameSource::Yuv(Yuv420Frame {
            y: plane(0)?,
            y_stride: stride(0),
            u: plane(1)?,
            v: &[],
            uv_stride: stride(1),
            interleaved: true,
            width,
            height,
        })),
        other => Err(format!(
            "Unsupported video format {other:?}; regiondrop takes {FORMAT_NAMES}"
        )),
    }
}

fn in_system_memory(caps: &gst::CapsRef) -> bool {
    caps.features(0)
        .is_none_or(|f| f.is_empty() || f.contains(gst::CAPS_FEATURE_MEMORY_SYSTEM_MEMORY))
}

/// Refuses caps we cannot read, with a message naming them and what to do.
fn check_caps(caps: &gst::CapsRef) -> Result<(), (String, String)> {
    let hint = format!("regiondrop takes video/x-raw in {FORMAT_NAMES} (system memory); put videoconvert before it");
    let info = gst_video::VideoInfo::from_caps(caps)
        .map_err(|_| (format!("Unsupported caps {caps}"), hint.clone()))?;
    if !FORMATS.contains(&info.format()) {
        return Err((
            format!(
                "Unsupported caps {caps}: format {} is not handled",
                info.format().to_str()
            ),
            hint,
        ));
    }
    if !in_system_memory(caps) {
        return Err((
            format!("Unsupported caps {caps}: only system memory is handled"),
            hint,
        ));
    }
    Ok(())
}

/// A library error as a GStreamer error message in the matching domain; the text names the file,
/// node/op or setting at fault (see `crate::error::Error`).
fn error_message(e: &Error) -> gst::ErrorMessage {
    match e {
        Error::ModelIo { source, .. } if source.kind() == std::io::ErrorKind::NotFound => gst::error_msg!(
            gst::ResourceError::NotFound,
            ("{}", e),
            ["Set the model property to an ONNX file (scripts/setup-assets.sh builds the default model)"]
        ),
        Error::ModelIo { .. } => gst::error_msg!(gst::ResourceError::OpenRead, ("{}", e)),
        Error::ModelDecode { .. } | Error::BadModel { .. } => gst::error_msg!(
            gst::StreamError::WrongType,
            ("{}", e),
            ["The model must be an ONNX detection model with one NCHW image input"]
        ),
        Error::UnsupportedOp { .. } | Error::BadNode { .. } => gst::error_msg!(gst::LibraryError::Init, ("{}", e)),
        Error::Settings(_) => gst::error_msg!(gst::LibraryError::Settings, ("{}", e)),
        Error::Backend(_) | Error::Tensor { .. } => gst::error_msg!(gst::LibraryError::Init, ("{}", e)),
    }
}

/// Network input for a dynamic-input model: the frame size, scaled down so the longest side is at
/// most 1280, rounded up to the network's largest stride.
fn dynamic_input_size(fw: usize, fh: usize, stride: usize) -> (usize, usize) {
    let scale = (MAX_AUTO_INPUT_SIDE as f64 / fw.max(fh) as f64).min(1.0);
    let side = |v: usize| (((v as f64 * scale).round() as usize).max(1)).div_ceil(stride) * stride;
    (side(fw), side(fh))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_size_rounds_up_and_caps() {
        assert_eq!(dynamic_input_size(768, 576, 32), (768, 576));
        assert_eq!(dynamic_input_size(750, 570, 32), (768, 576));
        assert_eq!(dynamic_input_size(1920, 1080, 32), (1280, 736));
    }
}
