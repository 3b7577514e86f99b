//! regiondrop-bench: dense vs region-sparse on real footage, in one process, printed as JSON.
//!
//! Default run: decode the clip once (GStreamer), letterbox every frame, run a dense engine and a
//! sparse engine over the same frames (interleaved frame by frame, so drift in machine load hits
//! both alike), decode the detections of both and print ONE line of JSON on stdout with the figures
//! of DESIGN.md ("Figures we measure"). Per-frame figures leave out frame 0, which both engines run
//! densely (warm-up, and the sparse engine's first frame is always dense).
//!
//! `--fractions`: forced random masks at 5/10/25/50/100 % active (one JSON line each), then the
//! main line. `--calibrate` / `--plot FILE.png`: a threshold sweep instead of the main line.
//! `--annotate DIR`: annotated PNGs, the change mask and an annotated video.
//!
//! Exit status: 0 ok; 2 bad arguments or unusable inputs (video, model, settings, onnxruntime
//! or OpenVINO missing); 1 a failure while running.

#[path = "regiondrop_bench/annotate.rs"]
mod annotate;
#[path = "regiondrop_bench/baselines.rs"]
mod baselines;
#[path = "regiondrop_bench/calibrate.rs"]
mod calibrate;
#[path = "regiondrop_bench/fractions.rs"]
mod fractions;
#[path = "regiondrop_bench/main_run.rs"]
mod main_run;
#[path = "regiondrop_bench/plot.rs"]
mod plot;
#[path = "regiondrop_bench/streams.rs"]
mod streams;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use baselines::Baselines;
use gstregiondrop::analyzer::{default_model_path, default_video_path, Analyzer};
use gstregiondrop::backend::{BackendKind, Precision};
use gstregiondrop::detect::{self, DecodeParams, DecoderKind, Detection, COCO_LABELS};
use gstregiondrop::engine::{Engine, EngineConfig, RunMode};
use gstregiondrop::mask::{DiffMetric, RegionMask, TileGrid};
use gstregiondrop::model::Plan;
use gstregiondrop::preprocess::{letterbox, InputNorm, Letterbox};
use gstregiondrop::rng::Lcg;
use gstregiondrop::spec::parse_size;
use gstregiondrop::tensor::Tensor;
use gstregiondrop::track::{split_scores, track_agreement, TrackParams, Tracker};
use gstregiondrop::video::RgbFrame;

/// Frames whose onnxruntime outputs are compared with ours (spread over the clip).
const ORT_FRAMES: usize = 20;

#[derive(Parser, Debug)]
#[command(
    name = "regiondrop-bench",
    version,
    about = "Dense vs region-sparse CNN inference on real footage: prints the figures as one JSON line",
    after_help = "Exit status: 0 ok, 2 bad arguments or unusable video/model/settings, 1 failure while running."
)]
struct Cli {
    /// ONNX model [default: the project's default model, or $REGIONDROP_MODEL]
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Video file [default: the sample clip, or $REGIONDROP_VIDEO]
    #[arg(long, value_name = "PATH")]
    video: Option<PathBuf>,
    /// Frames to run (the first is a dense warm-up, left out of the per-frame figures)
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..))]
    frames: u32,
    /// Frames to skip at the start of the clip
    #[arg(long, value_name = "N", default_value_t = 0)]
    skip: usize,
    /// Per-tile change threshold (pixel units, 0..255)
    #[arg(long, value_name = "T", default_value_t = EngineConfig::default().threshold, value_parser = parse_threshold)]
    threshold: f32,
    /// How a tile's change is measured
    #[arg(long, value_enum, default_value_t = MetricArg::Max)]
    metric: MetricArg,
    /// Tile size in input pixels (a multiple of the network's largest stride)
    #[arg(long, value_name = "PX", default_value_t = 32)]
    tile_size: usize,
    /// Also write the letterboxed frames (network-size RGB) to FILE.rgb; pass it as --video later
    /// to benchmark without decoding
    #[arg(long, value_name = "FILE.rgb")]
    save_frames: Option<PathBuf>,
    /// Grow the change mask by this many tiles
    #[arg(long, value_name = "D", default_value_t = EngineConfig::default().dilation)]
    dilation: usize,
    /// Input pixels to grow the change mask by beyond --dilation, from the changed 8-pixel cells
    /// of the tiles that fire (0 = whole tiles only)
    #[arg(long, value_name = "PX", default_value_t = EngineConfig::default().margin)]
    margin: usize,
    /// Tiles around the change mask that deeper layers may still grow into by their reach
    /// (0 = one common mask for all layers)
    #[arg(long, value_name = "G", default_value_t = EngineConfig::default().growth_limit)]
    growth_limit: usize,
    /// Exact mode (per-layer halo growth): sparse must equal dense; reports exact_max_abs_diff
    #[arg(long)]
    exact: bool,
    /// Full dense frame every N frames in the sparse engine (0 = never)
    #[arg(long, value_name = "N", default_value_t = 0)]
    refresh_interval: u64,
    /// Rolling refresh: extra tiles recomputed per frame, round robin (0 = off)
    #[arg(long, value_name = "N", default_value_t = EngineConfig::default().refresh_tiles)]
    refresh_tiles: usize,
    /// Sparse engine: always sparse, or auto (dense when sparse would not pay)
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Number format of the convolutions' GEMM operands: f32; f16 on the CUDA backend's tensor
    /// cores; bf16 on the CPU backend (AMX tiles or AVX512-BF16; each backend computes the
    /// other's in f32 and says so, as does a CPU without bf16)
    #[arg(long, value_name = "P", default_value = "f32")]
    precision: Precision,
    /// Worker threads (0 = all cores); onnxruntime gets the same number
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Network input size, for models with dynamic input dims
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    input_size: Option<(usize, usize)>,
    /// Detection head decoder: auto, nanodet, yolov8 or yolov5
    #[arg(long, value_name = "KIND", default_value = "auto", value_parser = parse_decoder)]
    decoder: DecoderArg,
    /// Detection confidence threshold
    #[arg(long, value_name = "C", default_value_t = 0.35, value_parser = parse_unit)]
    conf: f64,
    /// Tracking figures and annotations: frames in a row a new track must be detected on before
    /// it gets an id (the element's track-min-hits)
    #[arg(long, value_name = "N", default_value_t = TrackParams::default().min_hits,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    track_min_hits: u32,
    /// Class labels, one per line [default: COCO]
    #[arg(long, value_name = "PATH")]
    labels: Option<PathBuf>,
    /// Also run onnxruntime (the project's venv, same thread count) on every frame, just before our
    /// dense and sparse runs of it: onnxruntime_ms, vs_onnxruntime, dense_vs_onnxruntime,
    /// onnxruntime_rel_l2
    #[arg(long)]
    onnxruntime: bool,
    /// Also time OpenVINO's CPU plugin (the project's venv, same thread count, latency hint) on
    /// every frame beside ours: openvino_ms, openvino_precision, vs_openvino, dense_vs_openvino.
    /// PRECISION: default (the plugin's choice: bf16 on CPUs with AMX or AVX512-BF16, else f32),
    /// f32 or bf16
    #[arg(long, value_enum, value_name = "PRECISION", num_args = 0..=1,
          default_missing_value = "default")]
    openvino: Option<OpenvinoPrecision>,
    /// Sweep the threshold (and --margins, --growth-limits) and print the fastest setting that
    /// keeps the agreement (--pick-by) at the target
    #[arg(long, conflicts_with_all = ["fractions", "annotate"])]
    calibrate: bool,
    /// Agreement with dense (the --pick-by figure) the calibration must keep [default: 0.97]
    #[arg(long, value_name = "A", requires = "calibrate", value_parser = parse_unit)]
    target_agreement: Option<f64>,
    /// Thresholds to sweep (comma-separated) [default: 2,4,6,8,12,16,24,32,48]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_threshold)]
    thresholds: Vec<f32>,
    /// Margins (pixels, comma-separated) to sweep with every threshold [default: --margin]
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        requires = "calibrate"
    )]
    margins: Vec<usize>,
    /// Growth limits (tiles, comma-separated) to sweep with every threshold and margin
    /// [default: --growth-limit]
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        requires = "calibrate"
    )]
    growth_limits: Vec<usize>,
    /// The agreement figure --target-agreement applies to: map50 (mean over classes),
    /// weighted (classes weighted by their reference boxes, steadier where rare classes appear
    /// a few times), or tracking (MOTA of tracks on the sparse detections against tracks on the
    /// dense ones, for pipelines that track)
    #[arg(long, value_enum, default_value_t = PickBy::Map50, requires = "calibrate")]
    pick_by: PickBy,
    /// Sweep the threshold and draw speedup and agreement against it into this PNG
    #[arg(long, value_name = "FILE.png", conflicts_with_all = ["fractions", "annotate"])]
    plot: Option<PathBuf>,
    /// Forced random masks at 5, 10, 25, 50 and 100 % active: one JSON line each, then the main line
    #[arg(long)]
    fractions: bool,
    /// Write annotated PNGs, DIR/mask.png and DIR/annotated.mkv
    #[arg(long, value_name = "DIR")]
    annotate: Option<PathBuf>,
    /// A multi-camera process instead of the main line: N engines on N threads run the frames at
    /// once, dense then sparse; frames per second of all streams together (one JSON line each;
    /// on the CPU backend twice: threads split among the engines, and all threads each)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          conflicts_with_all = ["fractions", "annotate", "calibrate", "plot", "onnxruntime",
                                "openvino"])]
    streams: Option<u32>,
}

/// `--openvino`'s inference precision.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OpenvinoPrecision {
    Default,
    F32,
    Bf16,
}

impl OpenvinoPrecision {
    fn hint(self) -> Option<&'static str> {
        match self {
            OpenvinoPrecision::Default => None,
            OpenvinoPrecision::F32 => Some("f32"),
            OpenvinoPrecision::Bf16 => Some("bf16"),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PickBy {
    Map50,
    Weighted,
    Tracking,
}

impl PickBy {
    fn figure(self) -> &'static str {
        match self {
            PickBy::Map50 => "agreement_map50",
            PickBy::Weighted => "agreement_ap50_weighted",
            PickBy::Tracking => "tracking_mota",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MetricArg {
    Max,
    Mean,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Sparse,
    Auto,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Cpu,
    Cuda,
    Auto,
}

#[derive(Clone, Copy, Debug)]
struct DecoderArg(Option<DecoderKind>);

fn parse_decoder(s: &str) -> Result<DecoderArg, String> {
    if s == "auto" {
        Ok(DecoderArg(None))
    } else {
        s.parse().map(|k| DecoderArg(Some(k)))
    }
}

/// A number within `lo..=hi`, for clap.
fn parse_in<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    s: &str,
    lo: T,
    hi: T,
) -> Result<T, String> {
    let v: T = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(lo <= v && v <= hi) {
        return Err(format!("{v} is outside {lo}..{hi}"));
    }
    Ok(v)
}

fn parse_threshold(s: &str) -> Result<f32, String> {
    parse_in(s, 0.0, 255.0)
}

fn parse_unit(s: &str) -> Result<f64, String> {
    parse_in(s, 0.0, 1.0)
}

/// Why the run stopped: bad inputs (exit 2) or a failure while running (exit 1).
enum Fail {
    Input(String),
    Run(String),
}

fn input<E: std::fmt::Display>(e: E) -> Fail {
    Fail::Input(e.to_string())
}

fn running<E: std::fmt::Display>(e: E) -> Fail {
    Fail::Run(e.to_string())
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            // clap's message, on one line.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("regiondrop-bench: error: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Input(m)) => {
            eprintln!("regiondrop-bench: error: {}", one_line(&m));
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => {
            eprintln!("regiondrop-bench: failed: {}", one_line(&m));
            ExitCode::from(1)
        }
    }
}

/// Everything the phases share: the plan, the letterboxed frames, the settings.
struct Setup {
    model: PathBuf,
    video: PathBuf,
    plan: Arc<Plan>,
    kind: DecoderKind,
    norm: InputNorm,
    w: usize,
    h: usize,
    frames: Vec<RgbFrame>,
    net: Vec<Vec<u8>>,
    lb: Letterbox,
    threads: usize,
    params: DecodeParams,
    /// The tracker of the tracking figures and annotations.
    track: TrackParams,
    labels: Vec<String>,
    backend: String,
    /// How the backend runs (`Backend::describe`): device, opt-ins in effect.
    backend_details: String,
    precision: String,
}

impl Setup {
    fn n(&self) -> usize {
        self.net.len()
    }

    fn grid(&self, cli: &Cli) -> TileGrid {
        self.plan.grid(cli.tile_size)
    }

    fn engine(&self, cfg: EngineConfig) -> Result<Engine, Fail> {
        Engine::new(self.plan.clone(), self.norm.clone(), cfg).map_err(input)
    }

    /// The decode parameters of ranked predictions for mAP: every box down to the scoring floor,
    /// as mAP is defined over the whole precision/recall curve (the reference side stays at the
    /// operating threshold).
    fn ranked_params(&self) -> DecodeParams {
        DecodeParams {
            conf_threshold: self.params.conf_threshold.min(detect::SCORING_CONF_FLOOR),
            ..self.params.clone()
        }
    }

    /// Lets the engine select the candidates of ranked predictions where its outputs are (the
    /// CUDA backend, unless REGIONDROP_CUDA_SELECT=0); the gate for [`Setup::detections`].
    fn set_gate(&self, engine: &mut Engine) -> Result<detect::Gate, Fail> {
        let shapes = self.plan.output_dims();
        let threshold = self.ranked_params().conf_threshold;
        let gate =
            detect::Gate::new(self.kind, &shapes, self.w, self.h, threshold).map_err(Fail::Run)?;
        engine.set_gate(Some(&gate)).map_err(running)?;
        Ok(gate)
    }

    /// What a user sees of ranked detections: those at the operating threshold.
    fn shown(&self, ranked: &[Vec<Detection>]) -> Vec<Vec<Detection>> {
        ranked
            .iter()
            .map(|f| {
                f.iter()
                    .filter(|d| d.confidence >= self.params.conf_threshold)
                    .cloned()
                    .collect()
            })
            .collect()
    }

    /// The last frame's detections (`ranked`: down to the scoring floor), from the candidates
    /// the engine selected, else from its outputs.
    fn detections(
        &self,
        engine: &mut Engine,
        gate: &detect::Gate,
        ranked: bool,
    ) -> Result<Vec<Detection>, Fail> {
        let params = if ranked {
            self.ranked_params()
        } else {
            self.params.clone()
        };
        match engine.candidates() {
            Some(c) => detect::decode_candidates(gate, c, &params).map_err(Fail::Run),
            None => {
                let outs = engine.output_refs().map_err(running)?;
                detect::decode(self.kind, &outs, self.w, self.h, &params).map_err(Fail::Run)
            }
        }
    }
}

/// The backend's own profile (CUDA under REGIONDROP_PROFILE): the steps taking at least
/// `min_share` of the frame when it times steps, and its phase times (median and min ms).
fn print_profile(label: &str, engine: &Engine, min_share: f64) {
    if let Some(t) = engine.step_times() {
        eprintln!("{label}, per step (REGIONDROP_PROFILE):");
        eprint!(
            "{}",
            gstregiondrop::engine::profile::table(engine.plan(), t, min_share)
        );
    }
    let p = engine.phase_times();
    if !p.is_empty() {
        eprintln!("{label}:\n  median      min  phase of a frame");
        eprint!("{}", gstregiondrop::engine::profile::phases(p));
    }
}

fn sparse_cfg(cli: &Cli, threads: usize) -> EngineConfig {
    EngineConfig {
        tile: cli.tile_size,
        threshold: cli.threshold,
        metric: match cli.metric {
            MetricArg::Max => DiffMetric::Max,
            MetricArg::Mean => DiffMetric::Mean,
        },
        dilation: cli.dilation,
        margin: cli.margin,
        exact: cli.exact,
        growth_limit: cli.growth_limit,
        refresh_interval: cli.refresh_interval,
        refresh_tiles: cli.refresh_tiles,
        threads,
        backend: match cli.backend {
            BackendArg::Cpu => BackendKind::Cpu,
            BackendArg::Cuda => BackendKind::Cuda,
            BackendArg::Auto => BackendKind::Auto,
        },
        mode: match cli.mode {
            ModeArg::Sparse => RunMode::Sparse,
            ModeArg::Auto => RunMode::Auto,
        },
        precision: cli.precision,
        ..EngineConfig::default()
    }
}

fn dense_cfg(cli: &Cli, threads: usize) -> EngineConfig {
    EngineConfig {
        mode: RunMode::Dense,
        exact: false,
        refresh_interval: 0,
        ..sparse_cfg(cli, threads)
    }
}

fn bar(len: usize, msg: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template("{msg:>16} [{bar:32}] {pos}/{len} {elapsed}")
        .expect("valid template")
        .progress_chars("=> ");
    ProgressBar::new(len as u64)
        .with_style(style)
        .with_message(msg)
}

fn spinner(msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_message(msg);
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Reads network-size RGB frames written by --save-frames.
fn raw_frames(
    path: &std::path::Path,
    w: usize,
    h: usize,
    skip: usize,
    max: usize,
) -> Result<Vec<RgbFrame>, Fail> {
    let bytes = std::fs::read(path)
        .map_err(|e| Fail::Input(format!("cannot read {}: {e}", path.display())))?;
    let size = w * h * 3;
    if bytes.len() % size != 0 {
        return Err(Fail::Input(format!(
            "{}: {} bytes is not a whole number of {w}x{h} RGB frames",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(size)
        .skip(skip)
        .take(max)
        .map(|c| RgbFrame {
            width: w,
            height: h,
            data: c.to_vec(),
        })
        .collect())
}

fn setup(cli: &Cli) -> Result<Setup, Fail> {
    let model = cli.model.clone().unwrap_or_else(default_model_path);
    let video = cli.video.clone().unwrap_or_else(default_video_path);
    // Cheap checks first, so a typo fails at once.
    if !video.is_file() {
        let why = if video.is_dir() {
            "a directory"
        } else {
            "no such file"
        };
        return Err(Fail::Input(format!(
            "cannot read video file {}: {why}",
            video.display()
        )));
    }
    if let Err(e) = std::fs::File::open(&video) {
        return Err(Fail::Input(format!(
            "cannot read video file {}: {e}",
            video.display()
        )));
    }
    if !model.is_file() {
        let why = if model.is_dir() {
            "a directory"
        } else {
            "no such file"
        };
        return Err(Fail::Input(format!(
            "cannot read model file {}: {why}",
            model.display()
        )));
    }
    if cli.onnxruntime || cli.openvino.is_some() {
        let py = gstregiondrop::baseline::python();
        if !py.exists() {
            let flag = if cli.onnxruntime {
                "onnxruntime"
            } else {
                "openvino"
            };
            return Err(Fail::Input(format!(
                "--{flag}: {flag} is not installed ({} is missing; run scripts/setup-assets.sh)",
                py.display()
            )));
        }
    }
    if let Some(dir) = &cli.annotate {
        std::fs::create_dir_all(dir)
            .map_err(|e| Fail::Input(format!("--annotate {}: {e}", dir.display())))?;
    }
    if let Some(p) = &cli.plot {
        check_writable(p).map_err(|e| Fail::Input(format!("--plot {}: {e}", p.display())))?;
    }
    let labels = match &cli.labels {
        Some(p) => detect::load_labels(p).map_err(Fail::Input)?,
        None => COCO_LABELS.iter().map(|s| s.to_string()).collect(),
    };

    let threads = if cli.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        cli.threads
    };

    let pb = spinner("loading model");
    let plan = Analyzer::load_plan(&model, cli.input_size).map_err(input)?;
    let shapes = plan.output_dims();
    let kind = match cli.decoder.0 {
        Some(k) => k,
        None => DecoderKind::detect(&shapes)
            .map_err(|r| Fail::Input(format!("{}: {r}", model.display())))?,
    };
    let norm = kind.input_norm();
    let (w, h) = (plan.input_w, plan.input_h);
    if plan.input_c != 3 {
        return Err(Fail::Input(format!(
            "{}: the network takes {} input channels; the benchmark feeds RGB (3)",
            model.display(),
            plan.input_c
        )));
    }
    pb.finish_and_clear();

    // Settings are checked by building the sparse engine once (tile size, backend).
    let probe = Engine::new(plan.clone(), norm.clone(), sparse_cfg(cli, threads)).map_err(input)?;
    let backend = probe.backend_name().to_string();
    let backend_details = probe.backend_details();
    let precision = probe.precision().to_string();
    if let Some(w) = probe.backend_warning() {
        eprintln!("warning: {w}");
    }
    if backend == "cuda" {
        eprintln!("backend: {backend_details}");
    }
    drop(probe);

    let frames = if video.extension().is_some_and(|e| e == "rgb") {
        // Frames saved by --save-frames: already letterboxed to the network input, no decoding
        // (for machines without GStreamer's decoders).
        raw_frames(&video, w, h, cli.skip, cli.frames as usize)?
    } else {
        probe_video(&video).map_err(Fail::Input)?;
        let pb = spinner("decoding video");
        let f = gstregiondrop::video::decode_rgb(&video, cli.skip, cli.frames as usize)
            .map_err(input)?;
        pb.finish_and_clear();
        f
    };
    if frames.len() < 2 {
        return Err(Fail::Input(format!(
            "{}: {} frame(s) decoded after skipping {}; need at least 2",
            video.display(),
            frames.len(),
            cli.skip
        )));
    }
    let mut lb = None;
    let mut net = Vec::with_capacity(frames.len());
    for f in &frames {
        let mut rgb = vec![0u8; w * h * 3];
        let l = letterbox(&f.source(), w, h, &mut rgb);
        lb.get_or_insert(l);
        net.push(rgb);
    }
    if let Some(p) = &cli.save_frames {
        let bytes: Vec<u8> = net.concat();
        std::fs::write(p, bytes)
            .map_err(|e| Fail::Input(format!("--save-frames {}: {e}", p.display())))?;
    }
    Ok(Setup {
        model,
        video,
        plan,
        kind,
        norm,
        w,
        h,
        lb: lb.expect("at least one frame"),
        frames,
        net,
        threads,
        params: DecodeParams {
            conf_threshold: cli.conf as f32,
            ..DecodeParams::default()
        },
        track: TrackParams {
            min_hits: cli.track_min_hits,
            ..TrackParams::default()
        },
        labels,
        backend,
        backend_details,
        precision,
    })
}

/// Prerolls `filesrc ! decodebin ! fakesink` so a file GStreamer cannot decode fails at once with
/// its reason (pulling samples from such a file could wait forever).
fn probe_video(path: &Path) -> Result<(), String> {
    use gst::prelude::*;
    let bad = |m: String| format!("cannot read video file {}: {m}", path.display());
    gst::init().map_err(|e| bad(format!("GStreamer init failed: {e}")))?;
    let pipeline = gst::parse::launch("filesrc name=src ! decodebin ! fakesink")
        .map_err(|e| bad(format!("cannot build a decoding pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| bad("not a pipeline".into()))?;
    pipeline
        .by_name("src")
        .expect("named filesrc")
        .set_property("location", path.to_string_lossy().to_string());
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let r = match pipeline.set_state(gst::State::Paused) {
        Err(_) => Err(bus_error(&bus).unwrap_or_else(|| "cannot start decoding".into())),
        Ok(_) => match bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::AsyncDone, gst::MessageType::Error],
        ) {
            Some(m) => match m.view() {
                gst::MessageView::Error(e) => Err(e.error().to_string()),
                _ => Ok(()),
            },
            None => Err("no video could be decoded within 20 s".into()),
        },
    };
    let _ = pipeline.set_state(gst::State::Null);
    r.map_err(bad)
}

fn bus_error(bus: &gst::Bus) -> Option<String> {
    bus.pop_filtered(&[gst::MessageType::Error])
        .and_then(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
}

fn check_writable(p: &Path) -> std::io::Result<()> {
    let existed = p.exists();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)?;
    if !existed {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let s = setup(cli)?;
    if cli.calibrate || cli.plot.is_some() {
        return calibrate::sweep(cli, &s);
    }
    if let Some(n) = cli.streams {
        return streams::streams_run(cli, &s, n as usize);
    }
    let mut baselines = Baselines::start(cli, &s)?;
    if cli.fractions {
        fractions::fractions(cli, &s, &mut baselines)?;
        baselines.clear_times();
    }
    main_run::main_run(cli, &s, &mut baselines)
}

// ---------------------------------------------------------------------------------------------
// Figures

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Rounded for printing; non-finite values print as null.
fn round(x: f64, digits: i32) -> Option<f64> {
    if !x.is_finite() {
        return None;
    }
    let p = 10f64.powi(digits);
    Some((x * p).round() / p)
}

/// The speed and work figures of a sparse run beside dense (DESIGN.md's definitions), as the
/// main report and the calibration rows print them.
#[derive(Serialize, Clone)]
struct Figures {
    dense_ms: Option<f64>,
    sparse_ms: Option<f64>,
    speedup: Option<f64>,
    active_fraction: Option<f64>,
    /// MAC-weighted: above the active fraction where deeper layers grow (`growth_limit`).
    work_fraction: Option<f64>,
    ideal_speedup: Option<f64>,
    efficiency: Option<f64>,
}

impl Figures {
    /// From the median dense and sparse times and the mean active and work fractions.
    fn new(dense_ms: f64, sparse_ms: f64, active: f64, work: f64) -> Self {
        let speedup = dense_ms / sparse_ms;
        let (ideal_speedup, efficiency) = ideal_and_efficiency(speedup, active);
        Figures {
            dense_ms: round(dense_ms, 3),
            sparse_ms: round(sparse_ms, 3),
            speedup: round(speedup, 3),
            active_fraction: round(active, 4),
            work_fraction: round(work, 4),
            ideal_speedup,
            efficiency,
        }
    }
}

/// 1 / active fraction, and speedup / that.
fn ideal_and_efficiency(speedup: f64, active: f64) -> (Option<f64>, Option<f64>) {
    if active > 0.0 {
        (round(1.0 / active, 3), round(speedup * active, 4))
    } else {
        (None, None)
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<(), Fail> {
    let line = serde_json::to_string(v).map_err(running)?;
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
