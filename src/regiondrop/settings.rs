//! The element's properties: what each one means (the `glib::ParamSpec`s, with ranges and
//! defaults), the settings they set, and the enums they take.

use std::path::PathBuf;

use gst::glib;
use gst::prelude::*;

use crate::analyzer::{default_model_path, AnalyzerOptions};
use crate::backend::{BackendKind, Precision};
use crate::detect::{DecodeParams, DecoderKind};
use crate::engine::EngineConfig;
use crate::mask::DiffMetric;
use crate::preprocess::FrameRect;
use crate::track::{TrackParams, LOW_SCORE};

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
        name = "bf16 operands, f32 accumulation (CPU backend: AMX tiles on Intel Sapphire Rapids and newer, AVX512-BF16 on AMD Zen 4 and newer)",
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
    pub(super) fn kind(self) -> Option<DecoderKind> {
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
pub(super) const SET_WHILE_STOPPED: [&str; 9] = [
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
pub(super) struct Settings {
    pub(super) model: PathBuf,
    pub(super) input_size: String,
    pub(super) labels: Option<PathBuf>,
    pub(super) backend: BackendChoice,
    pub(super) device_id: u32,
    pub(super) precision: PrecisionChoice,
    pub(super) threshold: f64,
    pub(super) metric: MetricChoice,
    pub(super) tile_size: u32,
    pub(super) dilation: u32,
    pub(super) margin: u32,
    pub(super) growth_limit: u32,
    pub(super) exact: bool,
    pub(super) refresh_interval: u64,
    pub(super) refresh_tiles: u32,
    pub(super) conf_threshold: f64,
    pub(super) iou_threshold: f64,
    pub(super) max_detections: u32,
    pub(super) classes: String,
    pub(super) ignore_regions: String,
    pub(super) count_lines: String,
    pub(super) stats_interval: u32,
    pub(super) threads: u32,
    pub(super) decoder: DecoderChoice,
    pub(super) tracking: bool,
    pub(super) track_iou: f64,
    pub(super) track_max_age: u32,
    pub(super) track_low: f64,
    pub(super) track_min_hits: u32,
    pub(super) frame_pool: bool,
    /// Bumped on every change so the streaming thread re-applies live settings only when needed.
    pub(super) revision: u64,
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
            ignore_regions: String::new(),
            count_lines: String::new(),
            stats_interval: 30,
            threads: 0,
            decoder: DecoderChoice::Auto,
            tracking: false,
            track_iou: track.min_iou as f64,
            track_max_age: track.max_age,
            track_low: LOW_SCORE as f64,
            track_min_hits: track.min_hits,
            frame_pool: true,
            revision: 0,
        }
    }
}

impl Settings {
    /// Copies the settings that may change between frames into `opts`, with the class filter
    /// and ignored regions as parsed.
    pub(super) fn apply_live(
        &self,
        opts: &mut AnalyzerOptions,
        classes: Vec<u32>,
        ignore: Vec<FrameRect>,
    ) {
        opts.ignore = ignore;
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
        d.conf_threshold = self.decode_floor().unwrap_or(self.conf_threshold as f32);
        d.iou_threshold = self.iou_threshold as f32;
        d.max_detections = self.max_detections as usize;
        d.classes = classes;
    }

    /// The score the network's outputs are decoded down to when it is under `conf-threshold`:
    /// with tracking, for the detections that only keep tracks going (`track-low-threshold`).
    pub(super) fn decode_floor(&self) -> Option<f32> {
        (self.tracking && self.track_low > 0.0 && self.track_low < self.conf_threshold)
            .then_some(self.track_low as f32)
    }

    /// Where the decoded detections split, when they are decoded below `conf-threshold`: those
    /// under it only continue tracks.
    pub(super) fn split_at(&self) -> Option<f32> {
        self.decode_floor().map(|_| self.conf_threshold as f32)
    }

    pub(super) fn track_params(&self) -> TrackParams {
        TrackParams {
            min_iou: self.track_iou as f32,
            max_age: self.track_max_age,
            min_hits: self.track_min_hits,
        }
    }
}

/// Every property of the element, settings and read-only figures.
pub(super) fn param_specs() -> Vec<glib::ParamSpec> {
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
            .blurb("Number format of the convolutions' operands, summed in f32: f32; f16 on the CUDA backend's tensor cores; bf16 on the CPU backend (AMX tiles on Intel Sapphire Rapids and newer, AVX512-BF16 on AMD Zen 4 and newer). Scores differ slightly from f32; a backend or CPU that cannot compute the format asked for computes in f32 and warns")
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
        glib::ParamSpecString::builder("ignore-regions")
            .nick("Ignore regions")
            .blurb("Frame regions the network is not shown: x,y,width,height in frame pixels, ';' between rectangles (e.g. \"0,0,320,40\" for an on-screen clock). They are painted the letterbox grey before change detection, so changes there recompute nothing and the network sees nothing there (an object partly inside is seen by its visible part); empty: none. May change while playing")
            .default_value(Some(""))
            .flags(live)
            .build(),
        glib::ParamSpecUInt::builder("stats-interval")
            .nick("Stats interval")
            .blurb("Post a regiondrop-stats element message every N frames (frames, active-fraction, work-fraction, mode, inference-ms, backend, precision, detections, active-x/y/width/height, uploads-in-place, and new-tracks with tracking); at the end of the stream one more for the frames since the last; 0 = never")
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
        glib::ParamSpecBoolean::builder("frame-pool")
            .nick("Frame pool")
            .blurb("Offer upstream a buffer pool of memory the backend uploads frames from without a copy (the CUDA backend's page-locked memory; the CPU backend has none), ahead of a plain system-memory pool downstream offers. May change while playing (upstream is asked to renegotiate its allocation)")
            .default_value(d.frame_pool)
            .flags(live)
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
        glib::ParamSpecDouble::builder("track-low-threshold")
            .nick("Track low threshold")
            .blurb("Tracking: detections scored between this and conf-threshold are not attached, but continue tracks where an object's score dips (ByteTrack's second association, at IoU 0.5); 0: off. May change while playing")
            .minimum(0.0)
            .maximum(1.0)
            .default_value(d.track_low)
            .flags(live)
            .build(),
        glib::ParamSpecString::builder("count-lines")
            .nick("Count lines")
            .blurb("Tracking: segments x0,y0,x1,y1 in frame pixels, ';' between them, that tracked objects are counted crossing (the bottom centre of the box, where a person stands). Each crossing posts a regiondrop-crossing message (line, track-id, class-id, label, direction, pts); regiondrop-stats gets crossings-forward and crossings-backward per line. Forward is onto the right-hand side of the line drawn from its first point to its second (down the image for a line drawn left to right). Needs tracking=true; empty: none. May change while playing")
            .default_value(Some(""))
            .flags(live)
            .build(),
        glib::ParamSpecUInt::builder("track-min-hits")
            .nick("Track min hits")
            .blurb("Tracking: frames in a row a new object must be detected on before it gets a track id; its detections until then are attached without one, and a miss before then drops the track. 1: ids at once; higher keeps one-frame false positives from taking ids (and from new-tracks). May change while playing")
            .minimum(1)
            .maximum(1000)
            .default_value(d.track_min_hits)
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
}

impl Settings {
    /// Sets property `name`; an error names a value the element will refuse at start.
    pub(super) fn set(&mut self, name: &str, value: &glib::Value) -> Result<(), String> {
        let s = self;
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
                let checked = parse_input_size(&v).map(|_| ());
                s.input_size = v;
                return checked;
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
            "ignore-regions" => {
                s.ignore_regions = value.get::<Option<String>>().unwrap().unwrap_or_default()
            }
            "count-lines" => {
                s.count_lines = value.get::<Option<String>>().unwrap().unwrap_or_default()
            }
            "stats-interval" => s.stats_interval = value.get().unwrap(),
            "threads" => s.threads = value.get().unwrap(),
            "decoder" => s.decoder = value.get().unwrap(),
            "tracking" => s.tracking = value.get().unwrap(),
            "frame-pool" => s.frame_pool = value.get().unwrap(),
            "track-iou" => s.track_iou = value.get().unwrap(),
            "track-max-age" => s.track_max_age = value.get().unwrap(),
            "track-low-threshold" => s.track_low = value.get().unwrap(),
            "track-min-hits" => s.track_min_hits = value.get().unwrap(),
            _ => unimplemented!(),
        }
        Ok(())
    }

    /// Property `name`, None for those that are not settings.
    pub(super) fn get(&self, name: &str) -> Option<glib::Value> {
        let s = self;
        Some(match name {
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
            "ignore-regions" => s.ignore_regions.to_value(),
            "count-lines" => s.count_lines.to_value(),
            "stats-interval" => s.stats_interval.to_value(),
            "threads" => s.threads.to_value(),
            "decoder" => s.decoder.to_value(),
            "tracking" => s.tracking.to_value(),
            "frame-pool" => s.frame_pool.to_value(),
            "track-iou" => s.track_iou.to_value(),
            "track-max-age" => s.track_max_age.to_value(),
            "track-low-threshold" => s.track_low.to_value(),
            "track-min-hits" => s.track_min_hits.to_value(),
            _ => return None,
        })
    }
}

/// "WxH" → Some((W, H)); empty → None.
pub(super) fn parse_input_size(s: &str) -> Result<Option<(usize, usize)>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    crate::spec::parse_size(s)
        .map(Some)
        .map_err(|e| format!("input-size {e}"))
}

/// Comma-separated class ids or labels (case-insensitive) → class ids.
pub(super) fn parse_classes(spec: &str, labels: &[String]) -> Result<Vec<u32>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::COCO_LABELS;

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
}
