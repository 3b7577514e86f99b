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

use crate::analyzer::{default_model_path, Analyzer, AnalyzerOptions};
use crate::backend::{BackendKind, Precision};
use crate::detect::{load_labels, DecodeParams, DecoderKind, COCO_LABELS};
use crate::engine::{EngineConfig, FrameStats};
use crate::error::{panic_text, Error};
use crate::mask::DiffMetric;
use crate::meta::{self, StatsReport};
use crate::model::store;
use crate::preprocess::{Letterbox, PackedFrame, PixelSource, Yuv420Frame};
use crate::track::{TrackParams, Tracker};

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

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRegionDropBackend")]
pub enum BackendChoice {
    #[default]
    #[enum_value(
        name = "Auto: CUDA when a usable GPU is found, else CPU",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 1,
    #[enum_value(name = "CUDA (error when unavailable)", nick = "cuda")]
    Cuda = 2,
}

impl From<BackendChoice> for BackendKind {
    fn from(b: BackendChoice) -> Self {
        match b {
            BackendChoice::Auto => BackendKind::Auto,
            BackendChoice::Cpu => BackendKind::Cpu,
            BackendChoice::Cuda => BackendKind::Cuda,
        }
    }
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRegionDropPrecision")]
pub enum PrecisionChoice {
    #[default]
    #[enum_value(name = "f32 everywhere", nick = "f32")]
    F32 = 0,
    #[enum_value(
        name = "f16 GEMM operands on the tensor cores, f32 accumulation (CUDA backend)",
        nick = "f16"
    )]
    F16 = 1,
    #[enum_value(
        name = "bf16 operands on the AMX tiles, f32 accumulation (CPU backend, Intel Sapphire Rapids and newer)",
        nick = "bf16"
    )]
    Bf16 = 2,
}

impl From<PrecisionChoice> for Precision {
    fn from(p: PrecisionChoice) -> Self {
        match p {
            PrecisionChoice::F32 => Precision::F32,
            PrecisionChoice::F16 => Precision::F16,
            PrecisionChoice::Bf16 => Precision::Bf16,
        }
    }
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRegionDropDecoder")]
pub enum DecoderChoice {
    #[default]
    #[enum_value(name = "Auto: chosen from the model's output shapes", nick = "auto")]
    Auto = 0,
    #[enum_value(
        name = "NanoDet: per-level class scores + distance distributions",
        nick = "nanodet"
    )]
    NanoDet = 1,
    #[enum_value(name = "YOLOv8: [1, 4+C, N]", nick = "yolov8")]
    YoloV8 = 2,
    #[enum_value(name = "YOLOv5: [1, N, 5+C] with objectness", nick = "yolov5")]
    YoloV5 = 3,
}

impl DecoderChoice {
    fn kind(self) -> Option<DecoderKind> {
        match self {
            DecoderChoice::Auto => None,
            DecoderChoice::NanoDet => Some(DecoderKind::NanoDet),
            DecoderChoice::YoloV8 => Some(DecoderKind::YoloV8),
            DecoderChoice::YoloV5 => Some(DecoderKind::YoloV5),
        }
    }
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRegionDropMetric")]
pub enum MetricChoice {
    #[default]
    #[enum_value(name = "Max: largest absolute difference in the tile", nick = "max")]
    Max = 0,
    #[enum_value(name = "Mean: mean absolute difference over the tile", nick = "mean")]
    Mean = 1,
}

impl From<MetricChoice> for DiffMetric {
    fn from(m: MetricChoice) -> Self {
        match m {
            MetricChoice::Max => DiffMetric::Max,
            MetricChoice::Mean => DiffMetric::Mean,
        }
    }
}

/// Properties that shape the network or its backend: they take effect at the next start, and
/// changing them while the element runs is refused.
const SET_WHILE_STOPPED: [&str; 9] = [
    "model",
    "input-size",
    "labels",
    "backend",
    "device-id",
    "precision",
    "tile-size",
    "threads",
    "decoder",
];

#[derive(Debug, Clone)]
struct Settings {
    model: PathBuf,
    input_size: String,
    labels: Option<PathBuf>,
    backend: BackendChoice,
    device_id: u32,
    precision: PrecisionChoice,
    threshold: f64,
    metric: MetricChoice,
    tile_size: u32,
    dilation: u32,
    margin: u32,
    growth_limit: u32,
    exact: bool,
    refresh_interval: u64,
    refresh_tiles: u32,
    conf_threshold: f64,
    iou_threshold: f64,
    max_detections: u32,
    classes: String,
    stats_interval: u32,
    threads: u32,
    decoder: DecoderChoice,
    tracking: bool,
    track_iou: f64,
    track_max_age: u32,
    /// Bumped on every change so the streaming thread re-applies live settings only when needed.
    revision: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let engine = EngineConfig::default();
        let decode = DecodeParams::default();
        let track = TrackParams::default();
        Settings {
            model: default_model_path(),
            input_size: String::new(),
            labels: None,
            backend: BackendChoice::Auto,
            device_id: 0,
            precision: PrecisionChoice::F32,
            threshold: engine.threshold as f64,
            metric: MetricChoice::Max,
            tile_size: engine.tile as u32,
            dilation: engine.dilation as u32,
            margin: engine.margin as u32,
            growth_limit: engine.growth_limit as u32,
            exact: engine.exact,
            refresh_interval: engine.refresh_interval,
            refresh_tiles: engine.refresh_tiles as u32,
            conf_threshold: decode.conf_threshold as f64,
            iou_threshold: decode.iou_threshold as f64,
            max_detections: decode.max_detections as u32,
            classes: String::new(),
            stats_interval: 30,
            threads: 0,
            decoder: DecoderChoice::Auto,
            tracking: false,
            track_iou: track.min_iou as f64,
            track_max_age: track.max_age,
            revision: 0,
        }
    }
}

impl Settings {
    /// Copies the settings that may change between frames into `opts`.
    fn apply_live(&self, opts: &mut AnalyzerOptions, classes: Vec<u32>) {
        let e = &mut opts.engine;
        e.threshold = self.threshold as f32;
        e.metric = self.metric.into();
        e.dilation = self.dilation as usize;
        e.margin = self.margin as usize;
        e.growth_limit = self.growth_limit as usize;
        e.exact = self.exact;
        e.refresh_interval = self.refresh_interval;
        e.refresh_tiles = self.refresh_tiles as usize;
        let d = &mut opts.decode;
        d.conf_threshold = self.conf_threshold as f32;
        d.iou_threshold = self.iou_threshold as f32;
        d.max_detections = self.max_detections as usize;
        d.classes = classes;
    }

    fn track_params(&self) -> TrackParams {
        TrackParams {
            min_iou: self.track_iou as f32,
            max_age: self.track_max_age,
        }
    }
}

/// Figures accumulated between two stats messages.
#[derive(Default)]
struct Interval {
    frames: u64,
    active: f64,
    work: f64,
    dense: u64,
    ms: f64,
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
    /// Kept while tracking is off (with no tracks), so that ids never repeat until a restart.
    tracker: Tracker,
    /// The last frame's track id of each detection.
    track_ids: Vec<u64>,
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
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Settings::default();
            let ready = glib::ParamFlags::READWRITE | gst::PARAM_FLAG_MUTABLE_READY;
            let live = glib::ParamFlags::READWRITE | gst::PARAM_FLAG_MUTABLE_PLAYING;
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("ONNX detection model (NCHW image input). Loaded at start; changing it while running is refused")
                    .default_value(Some(d.model.to_string_lossy().as_ref()))
                    .flags(ready)
                    .build(),
                glib::ParamSpecString::builder("input-size")
                    .nick("Input size")
                    .blurb("Network input WxH (e.g. 640x384) for models with dynamic input dims; empty: the model's fixed size, else the frame size rounded up to the network's largest stride, longest side capped at 1280")
                    .default_value(Some(""))
                    .flags(ready)
                    .build(),
                glib::ParamSpecString::builder("labels")
                    .nick("Labels")
                    .blurb("Class labels file, one label per line (line N = class id N); empty: the 80 COCO labels")
                    .flags(ready)
                    .build(),
                glib::ParamSpecEnum::builder_with_default("backend", d.backend)
                    .nick("Backend")
                    .blurb("Where the network runs: auto (CUDA when a usable GPU is found, else CPU), cpu or cuda")
                    .flags(ready)
                    .build(),
                glib::ParamSpecUInt::builder("device-id")
                    .nick("Device id")
                    .blurb("CUDA device index (cuda and auto backends)")
                    .default_value(d.device_id)
                    .flags(ready)
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", d.precision)
                    .nick("Precision")
                    .blurb("Number format of the convolutions' operands, summed in f32: f32; f16 on the CUDA backend's tensor cores; bf16 on the CPU backend's AMX tiles (Intel Sapphire Rapids and newer). Scores differ slightly from f32; a backend asked for the other's format computes in f32 and warns")
                    .flags(ready)
                    .build(),
                glib::ParamSpecDouble::builder("threshold")
                    .nick("Change threshold")
                    .blurb("Per-tile difference, in 0-255 pixel units, above which a tile is recomputed; higher skips more work and tolerates more noise. May change while playing")
                    .minimum(0.0)
                    .maximum(255.0)
                    .default_value(d.threshold)
                    .flags(live)
                    .build(),
                glib::ParamSpecEnum::builder_with_default("metric", d.metric)
                    .nick("Difference metric")
                    .blurb("How a tile's difference from its reference is measured: max or mean absolute difference. May change while playing")
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("tile-size")
                    .nick("Tile size")
                    .blurb("Tile side in network-input pixels; must be a multiple of the network's largest stride (32 for YOLO-family models)")
                    .minimum(1)
                    .maximum(1024)
                    .default_value(d.tile_size)
                    .flags(ready)
                    .build(),
                glib::ParamSpecUInt::builder("dilation")
                    .nick("Dilation")
                    .blurb("Tiles to grow the change mask by before use (more accuracy near moving objects, more work). May change while playing")
                    .maximum(64)
                    .default_value(d.dilation)
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("margin")
                    .nick("Margin")
                    .blurb("Input pixels to grow the change mask by, beyond dilation, from the changed 8-pixel cells of the tiles that fire: a step finer than whole tiles (with dilation=0, margin=tile-size recomputes what dilation=1 does and margin=16 fewer tiles, at some accuracy). 0 = whole tiles only. May change while playing")
                    .maximum(1024)
                    .default_value(d.margin)
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("growth-limit")
                    .nick("Growth limit")
                    .blurb("Tiles beyond the change mask into which deeper layers may still grow by their reach, recomputing features whose receptive field saw the change (0 = one common mask for every layer; on the sample clip, 1 raised the 300-frame agreement with dense from 0.91 to 0.98 for 1.6x the work). Ignored with exact=true. May change while playing")
                    .maximum(64)
                    .default_value(d.growth_limit)
                    .flags(live)
                    .build(),
                glib::ParamSpecBoolean::builder("exact")
                    .nick("Exact")
                    .blurb("Grow the mask per layer by each layer's reach so sparse results equal dense results (more work). May change while playing")
                    .default_value(d.exact)
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt64::builder("refresh-interval")
                    .nick("Refresh interval")
                    .blurb("Run a full dense frame every N frames (0 = never; the first frame and frames after a flush, discont or caps change are always dense). May change while playing")
                    .default_value(d.refresh_interval)
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("refresh-tiles")
                    .nick("Rolling refresh tiles")
                    .blurb("Recompute this many extra tiles per frame in round robin, so no tile stays stale for more than (tiles / N) frames; 0 = off. May change while playing")
                    .default_value(d.refresh_tiles)
                    .maximum(4096)
                    .flags(live)
                    .build(),
                glib::ParamSpecDouble::builder("conf-threshold")
                    .nick("Confidence threshold")
                    .blurb("Minimum detection confidence. May change while playing")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.conf_threshold)
                    .flags(live)
                    .build(),
                glib::ParamSpecDouble::builder("iou-threshold")
                    .nick("IoU threshold")
                    .blurb("Non-maximum suppression: boxes of one class overlapping a better one by more than this IoU are dropped. May change while playing")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.iou_threshold)
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("max-detections")
                    .nick("Max detections")
                    .blurb("Most detections attached per frame, best first. May change while playing")
                    .minimum(1)
                    .maximum(10_000)
                    .default_value(d.max_detections)
                    .flags(live)
                    .build(),
                glib::ParamSpecString::builder("classes")
                    .nick("Classes")
                    .blurb("Keep only these classes: comma-separated class ids or labels (e.g. \"person,car\" or \"0,2\"); empty: all. May change while playing")
                    .default_value(Some(""))
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("stats-interval")
                    .nick("Stats interval")
                    .blurb("Post a regiondrop-stats element message every N frames (frames, active-fraction, work-fraction, mode, inference-ms, backend, precision, detections, active-x/y/width/height); 0 = never")
                    .default_value(d.stats_interval)
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb("CPU backend worker threads (0 = all cores); with several cameras in one process, cores / cameras each")
                    .maximum(1024)
                    .default_value(d.threads)
                    .flags(ready)
                    .build(),
                glib::ParamSpecEnum::builder_with_default("decoder", d.decoder)
                    .nick("Decoder")
                    .blurb("Detection head layout: auto (from the model's output shapes), nanodet, yolov8 ([1,4+C,N]) or yolov5 ([1,N,5+C])")
                    .flags(ready)
                    .build(),
                glib::ParamSpecBoolean::builder("tracking")
                    .nick("Tracking")
                    .blurb("Give each detection the id of the object it continues from earlier frames (track-id in its detection structure). May change while playing")
                    .default_value(d.tracking)
                    .flags(live)
                    .build(),
                glib::ParamSpecDouble::builder("track-iou")
                    .nick("Track IoU")
                    .blurb("Tracking: lowest IoU between a track's predicted box and a detection of the same class that continues it. May change while playing")
                    .minimum(0.01)
                    .maximum(1.0)
                    .default_value(d.track_iou)
                    .flags(live)
                    .build(),
                glib::ParamSpecUInt::builder("track-max-age")
                    .nick("Track max age")
                    .blurb("Tracking: frames a track waits for its object to be detected again before its id ends. May change while playing")
                    .maximum(10_000)
                    .default_value(d.track_max_age)
                    .flags(live)
                    .build(),
                glib::ParamSpecDouble::builder("active-fraction")
                    .nick("Active fraction")
                    .blurb("Fraction of tiles recomputed on the last frame (1 on dense frames)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(0.0)
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-processed")
                    .nick("Frames processed")
                    .blurb("Frames analysed since the element started")
                    .read_only()
                    .build(),
            ]
        });
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
        match name {
            "model" => {
                s.model = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(default_model_path)
            }
            "input-size" => {
                let v = value.get::<Option<String>>().unwrap().unwrap_or_default();
                if let Err(e) = parse_input_size(&v) {
                    gst::warning!(CAT, imp = self, "{e}; the element will refuse to start");
                }
                s.input_size = v;
            }
            "labels" => {
                s.labels = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            }
            "backend" => s.backend = value.get().unwrap(),
            "device-id" => s.device_id = value.get().unwrap(),
            "precision" => s.precision = value.get().unwrap(),
            "threshold" => s.threshold = value.get().unwrap(),
            "metric" => s.metric = value.get().unwrap(),
            "tile-size" => s.tile_size = value.get().unwrap(),
            "dilation" => s.dilation = value.get().unwrap(),
            "margin" => s.margin = value.get().unwrap(),
            "growth-limit" => s.growth_limit = value.get().unwrap(),
            "exact" => s.exact = value.get().unwrap(),
            "refresh-interval" => s.refresh_interval = value.get().unwrap(),
            "refresh-tiles" => s.refresh_tiles = value.get().unwrap(),
            "conf-threshold" => s.conf_threshold = value.get().unwrap(),
            "iou-threshold" => s.iou_threshold = value.get().unwrap(),
            "max-detections" => s.max_detections = value.get().unwrap(),
            "classes" => s.classes = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "stats-interval" => s.stats_interval = value.get().unwrap(),
            "threads" => s.threads = value.get().unwrap(),
            "decoder" => s.decoder = value.get().unwrap(),
            "tracking" => s.tracking = value.get().unwrap(),
            "track-iou" => s.track_iou = value.get().unwrap(),
            "track-max-age" => s.track_max_age = value.get().unwrap(),
            _ => unimplemented!(),
        }
        s.revision += 1;
        gst::debug!(CAT, imp = self, "{name} set");
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "active-fraction" => {
                f64::from_bits(self.last_active.load(Ordering::Relaxed)).to_value()
            }
            "frames-processed" => self.frames_processed.load(Ordering::Relaxed).to_value(),
            name => {
                let s = self.settings.lock().unwrap();
                match name {
                    "model" => s.model.to_string_lossy().to_string().to_value(),
                    "input-size" => s.input_size.to_value(),
                    "labels" => s
                        .labels
                        .as_ref()
                        .map(|p| p.to_string_lossy().to_string())
                        .to_value(),
                    "backend" => s.backend.to_value(),
                    "device-id" => s.device_id.to_value(),
                    "precision" => s.precision.to_value(),
                    "threshold" => s.threshold.to_value(),
                    "metric" => s.metric.to_value(),
                    "tile-size" => s.tile_size.to_value(),
                    "dilation" => s.dilation.to_value(),
                    "margin" => s.margin.to_value(),
                    "growth-limit" => s.growth_limit.to_value(),
                    "exact" => s.exact.to_value(),
                    "refresh-interval" => s.refresh_interval.to_value(),
                    "refresh-tiles" => s.refresh_tiles.to_value(),
                    "conf-threshold" => s.conf_threshold.to_value(),
                    "iou-threshold" => s.iou_threshold.to_value(),
                    "max-detections" => s.max_detections.to_value(),
                    "classes" => s.classes.to_value(),
                    "stats-interval" => s.stats_interval.to_value(),
                    "threads" => s.threads.to_value(),
                    "decoder" => s.decoder.to_value(),
                    "tracking" => s.tracking.to_value(),
                    "track-iou" => s.track_iou.to_value(),
                    "track-max-age" => s.track_max_age.to_value(),
                    _ => unimplemented!(),
                }
            }
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
        *self.state.lock().unwrap() = Some(state);
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

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => self.reset_caches_and_tracks("flush"),
            gst::EventView::StreamStart(_) => self.reset_caches_and_tracks("stream-start"),
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
        let stats_interval = {
            let settings = self.settings.lock().unwrap();
            if state.applied_revision != settings.revision {
                self.apply_live_settings(state, &settings);
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
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| tracker.update(&detections, ids)))
            {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("Tracking panicked: {}", panic_text(&panic))
                );
                return Err(gst::FlowError::Error);
            }
            Some(&state.track_ids[..])
        } else {
            None
        };
        if CAT.above_threshold(gst::DebugLevel::Debug) {
            let listed: Vec<String> = detections
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let (x, y, w, h) = meta::frame_rect(d.bbox, fw, fh);
                    let track = track_ids.map_or(String::new(), |t| format!(" #{}", t[i]));
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
        let report = self.account(
            state,
            &stats,
            frames,
            detections.len() as u32,
            stats_interval,
            fw,
            fh,
        );
        drop(guard);

        if let Some(report) = report {
            let msg = gst::message::Element::builder(report.to_structure())
                .src(&*self.obj())
                .build();
            let _ = self.obj().post_message(msg);
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
        };
        s.apply_live(&mut opts, classes);

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
            tracker: Tracker::new(s.track_params()),
            track_ids: Vec::new(),
        })
    }

    fn apply_live_settings(&self, state: &mut State, s: &Settings) {
        let classes = match parse_classes(&s.classes, &state.labels) {
            Ok(c) => c,
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Settings,
                    ("{}; keeping the previous class filter", e)
                );
                state.opts.decode.classes.clone()
            }
        };
        s.apply_live(&mut state.opts, classes);
        state.tracker.params = s.track_params();
        if state.tracking && !s.tracking {
            state.end_tracks();
        }
        state.tracking = s.tracking;
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
        }
        gst::debug!(
            CAT,
            imp = self,
            "Live settings applied (revision {})",
            s.revision
        );
    }

    fn reset_caches_and_tracks(&self, why: &str) {
        if let Some(state) = self.state.lock().unwrap().as_mut() {
            gst::debug!(CAT, imp = self, "{why}: caches and tracks reset");
            state.reset();
            state.end_tracks();
        }
    }

    /// Adds the frame to the interval figures; returns the report when one is due.
    #[allow(clippy::too_many_arguments)]
    fn account(
        &self,
        state: &mut State,
        stats: &FrameStats,
        frames: u64,
        detections: u32,
        interval: u32,
        fw: u32,
        fh: u32,
    ) -> Option<StatsReport> {
        let iv = &mut state.interval;
        iv.frames += 1;
        iv.active += stats.active_fraction;
        iv.work += stats.work_fraction;
        iv.dense += stats.dense as u64;
        iv.ms += stats.ms;
        if interval == 0 {
            state.interval = Interval::default();
            return None;
        }
        if iv.frames < interval as u64 {
            return None;
        }
        let n = iv.frames as f64;
        let analyzer = state.analyzer.as_ref()?;
        let report = StatsReport {
            frames,
            interval_frames: iv.frames,
            active_fraction: iv.active / n,
            work_fraction: iv.work / n,
            dense_frames: iv.dense,
            dense: stats.dense,
            inference_ms: iv.ms / n,
            backend: analyzer.engine().backend_name().to_string(),
            precision: analyzer.engine().precision().to_string(),
            detections,
            active_rect: active_rect(analyzer, fw, fh),
        };
        state.interval = Interval::default();
        Some(report)
    }
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

/// "WxH" → Some((W, H)); empty → None.
fn parse_input_size(s: &str) -> Result<Option<(usize, usize)>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("input-size `{s}` is not WxH (e.g. 640x384)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok(Some((w, h)))
}

/// Comma-separated class ids or labels (case-insensitive) → class ids.
fn parse_classes(spec: &str, labels: &[String]) -> Result<Vec<u32>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>().or_else(|_| {
                labels
                    .iter()
                    .position(|l| l.eq_ignore_ascii_case(t))
                    .map(|i| i as u32)
                    .ok_or_else(|| {
                        format!("classes: `{t}` is neither a class id nor a known label")
                    })
            })
        })
        .collect()
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
    fn input_size_parses() {
        assert_eq!(parse_input_size(""), Ok(None));
        assert_eq!(parse_input_size("640x384"), Ok(Some((640, 384))));
        assert!(parse_input_size("640").is_err());
        assert!(parse_input_size("0x5").is_err());
    }

    #[test]
    fn classes_take_ids_and_labels() {
        let labels: Vec<String> = COCO_LABELS.iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_classes("", &labels), Ok(vec![]));
        assert_eq!(parse_classes("person, 2,Car", &labels), Ok(vec![0, 2, 2]));
        assert!(parse_classes("unicorn", &labels).is_err());
    }

    #[test]
    fn dynamic_size_rounds_up_and_caps() {
        assert_eq!(dynamic_input_size(768, 576, 32), (768, 576));
        assert_eq!(dynamic_input_size(750, 570, 32), (768, 576));
        assert_eq!(dynamic_input_size(1920, 1080, 32), (1280, 736));
    }
}
