//! The main run: dense and sparse over the same frames, timed side by side, with agreement,
//! tracking, exactness and baseline-engine figures, and the annotated output.

use gstregiondrop::cpu_time::process_cpu_ms;
use serde::Serialize;

use super::*;

#[derive(Serialize)]
struct MainReport {
    model: String,
    video: String,
    frames: usize,
    input: [usize; 2],
    backend: String,
    backend_details: String,
    precision: String,
    threads: usize,
    mode: &'static str,
    threshold: f32,
    tile_size: usize,
    dilation: usize,
    margin: usize,
    exact: bool,
    #[serde(flatten)]
    figures: Figures,
    /// Frames (after the first) the sparse engine ran densely (auto fallback or refresh).
    sparse_dense_frames: usize,
    agreement_map50: Option<f64>,
    /// AP@0.5 per reference class: label → [reference boxes, AP] (rare classes weigh as much as
    /// frequent ones in the mean).
    agreement_ap50_per_class: std::collections::BTreeMap<String, (usize, f64)>,
    /// The per-class APs weighted by their reference boxes (`detect::ap50_weighted`).
    agreement_ap50_weighted: Option<f64>,
    detections_dense: usize,
    detections_sparse: usize,
    /// MOTA of the tracks on the sparse detections, the tracks on the dense ones as ground truth
    /// (`track::track_agreement`, the element's default tracking settings but `track_min_hits`).
    tracking_mota: Option<f64>,
    /// Frames in a row a new track is detected on before it gets an id (`--track-min-hits`).
    track_min_hits: u32,
    tracking_id_switches: usize,
    /// Track ids given over the run, on the dense and on the sparse detections.
    tracks_dense: usize,
    tracks_sparse: usize,
    exact_max_abs_diff: Option<f64>,
    /// Median over the same frames, each timed just before our dense and sparse runs of it.
    onnxruntime_ms: Option<f64>,
    /// onnxruntime_ms / sparse_ms.
    vs_onnxruntime: Option<f64>,
    /// dense_ms / onnxruntime_ms: our dense engine's time relative to onnxruntime's.
    dense_vs_onnxruntime: Option<f64>,
    onnxruntime_rel_l2: Option<f64>,
    /// OpenVINO's dense time, in the precision it ran in (its own pick unless --openvino named
    /// one), and the same ratios as onnxruntime's.
    openvino_ms: Option<f64>,
    openvino_precision: Option<String>,
    vs_openvino: Option<f64>,
    dense_vs_openvino: Option<f64>,
    memory_bytes: usize,
    /// The process's CPU time a frame (every thread, user and system; `cpu_time`), mean over
    /// the timed frames of our dense and of our sparse engine: what a camera costs the host.
    dense_cpu_ms: Option<f64>,
    sparse_cpu_ms: Option<f64>,
    /// Milliseconds to build the dense engine, then the sparse one (the first of a process pays
    /// for one-off work such as compiling or reading GPU code and timing the convolutions).
    start_ms: [f64; 2],
}

pub fn main_run(cli: &Cli, s: &Setup, baselines: &mut Baselines) -> Result<(), Fail> {
    let n = s.n();
    let grid = s.grid(cli);
    let full = RegionMask::full(&grid);
    let t0 = std::time::Instant::now();
    let mut dense = s.engine(dense_cfg(cli, s.threads))?;
    let t1 = std::time::Instant::now();
    let mut sparse = s.engine(sparse_cfg(cli, s.threads))?;
    let start_ms = [t1 - t0, t1.elapsed()].map(|d| d.as_secs_f64() * 1e3);
    let dense_gate = s.set_gate(&mut dense)?;
    let sparse_gate = s.set_gate(&mut sparse)?;
    let (mut dense_ms, mut sparse_ms, mut active, mut work) = (vec![], vec![], vec![], vec![]);
    let (mut dense_cpu, mut sparse_cpu) = (0.0, 0.0);
    // Both ranked down to the scoring floor: the tracker takes the low ones too.
    let (mut dranked, mut sdets) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut masks = Vec::new();
    let mut sparse_dense_frames = 0;
    let (mut max_diff, mut max_abs) = (0f64, 0f64);
    let mut rel_l2: Option<f64> = None;

    // Exact mode is checked against dense on the input the sparse engine actually holds: the frame
    // on the tiles it updated, the older pixels elsewhere (tiles below threshold keep their reference).
    let mut exact_ref = if cli.exact {
        Some((s.engine(dense_cfg(cli, s.threads))?, s.net[0].clone()))
    } else {
        None
    };

    let pb = bar(n, "dense + sparse");
    for i in 0..n {
        let rgb = &s.net[i];
        // The dense baseline gets the full mask directly: no change detection in its time.
        // The baselines first (each stopped again once it has answered), then our dense run,
        // then sparse, back to back.
        baselines.time(s, i)?;
        let c0 = process_cpu_ms();
        let ds = dense.process_with_mask(rgb, &full).map_err(running)?;
        let c1 = process_cpu_ms();
        dranked.push(s.detections(&mut dense, &dense_gate, true)?);
        let c2 = process_cpu_ms();
        let ss = sparse.process(rgb).map_err(running)?;
        let c3 = process_cpu_ms();
        sdets.push(s.detections(&mut sparse, &sparse_gate, true)?);
        if i > 0 {
            dense_ms.push(ds.ms);
            sparse_ms.push(ss.ms);
            dense_cpu += c1 - c0;
            sparse_cpu += c3 - c2;
            active.push(ss.active_fraction);
            work.push(ss.work_fraction);
            sparse_dense_frames += ss.dense as usize;
        }
        if let Some((ref_engine, ref_img)) = &mut exact_ref {
            copy_tiles(ref_img, rgb, &grid, sparse.mask());
            ref_engine
                .process_with_mask(ref_img, &full)
                .map_err(running)?;
            let rout = ref_engine.outputs().map_err(running)?;
            let sout = sparse.outputs().map_err(running)?;
            for (a, b) in sout.iter().zip(&rout) {
                if a.shape != b.shape {
                    return Err(Fail::Run(format!(
                        "output shapes differ: {:?} vs {:?}",
                        a.shape, b.shape
                    )));
                }
                for (&x, &y) in a.data.iter().zip(&b.data) {
                    max_diff = max_diff.max((x - y).abs() as f64);
                    max_abs = max_abs.max(y.abs() as f64);
                }
            }
        }
        if let Some(reference) = baselines.ort_outputs(i) {
            let dout = dense.outputs().map_err(running)?;
            let r = gstregiondrop::baseline::rel_l2(&dout, reference);
            rel_l2 = Some(rel_l2.map_or(r, |m: f64| m.max(r)));
        }
        if cli.annotate.is_some() {
            masks.push(sparse.mask().clone());
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    print_profile("dense engine", &dense, 0.05);
    print_profile("sparse engine", &sparse, 0.02);

    let (d, sp) = (median(&dense_ms), median(&sparse_ms));
    let (onnxruntime_ms, openvino_ms) = baselines.figures(1.0);
    let (vs_onnxruntime, vs_openvino) = baselines.figures(1.0 / sp);
    let dense_vs = |b: Option<f64>| b.and_then(|b| round(d / b, 3));
    // The reference: dense detections at the operating threshold.
    let ddets = s.shown(&dranked);
    let per_class = detect::ap50_per_class(&ddets[1..], &sdets[1..]);
    let agreement = detect::mean_ap50(&per_class, &sdets[1..]);
    let shown = s.shown(&sdets);
    let threshold = s.params.conf_threshold;
    let tracking = track_agreement(&dranked[1..], &sdets[1..], threshold, &s.track);
    let report = MainReport {
        model: s.model.display().to_string(),
        video: s.video.display().to_string(),
        frames: n,
        input: [s.w, s.h],
        backend: s.backend.clone(),
        backend_details: s.backend_details.clone(),
        precision: s.precision.clone(),
        threads: s.threads,
        mode: match cli.mode {
            ModeArg::Sparse => "sparse",
            ModeArg::Auto => "auto",
        },
        threshold: cli.threshold,
        tile_size: cli.tile_size,
        dilation: cli.dilation,
        margin: cli.margin,
        exact: cli.exact,
        figures: Figures::new(d, sp, mean(&active), mean(&work)),
        sparse_dense_frames,
        agreement_map50: round(agreement, 4),
        agreement_ap50_weighted: round(detect::ap50_weighted(&per_class).unwrap_or(f64::NAN), 4),
        agreement_ap50_per_class: per_class
            .into_iter()
            .map(|c| {
                let label = s
                    .labels
                    .get(c.class_id as usize)
                    .cloned()
                    .unwrap_or_else(|| c.class_id.to_string());
                (label, (c.references, (c.ap * 1e4).round() / 1e4))
            })
            .collect(),
        detections_dense: ddets[1..].iter().map(Vec::len).sum(),
        detections_sparse: sdets[1..]
            .iter()
            .flatten()
            .filter(|d| d.confidence >= s.params.conf_threshold)
            .count(),
        tracking_mota: tracking.mota().and_then(|m| round(m, 4)),
        tracking_id_switches: tracking.id_switches,
        track_min_hits: s.track.min_hits,
        tracks_dense: tracking.reference_tracks,
        tracks_sparse: tracking.other_tracks,
        exact_max_abs_diff: cli.exact.then(|| {
            if max_abs > 0.0 {
                max_diff / max_abs
            } else {
                max_diff
            }
        }),
        onnxruntime_ms,
        vs_onnxruntime,
        dense_vs_onnxruntime: dense_vs(onnxruntime_ms),
        onnxruntime_rel_l2: rel_l2,
        openvino_ms,
        openvino_precision: baselines
            .openvino
            .as_ref()
            .map(|t| t.precision().to_string()),
        vs_openvino,
        dense_vs_openvino: dense_vs(openvino_ms),
        memory_bytes: sparse.memory_bytes(),
        dense_cpu_ms: round(dense_cpu / dense_ms.len().max(1) as f64, 3),
        sparse_cpu_ms: round(sparse_cpu / sparse_ms.len().max(1) as f64, 3),
        start_ms,
    };

    if let Some(dir) = &cli.annotate {
        let pb = spinner("annotating");
        let files = annotate::write(&annotate::Annotation {
            dir,
            frames: &s.frames,
            net: &s.net,
            net_w: s.w,
            net_h: s.h,
            lb: s.lb,
            grid,
            masks: &masks,
            dets: &shown,
            track_ids: &track_ids(&sdets, threshold, &s.track),
            labels: &s.labels,
            fps: 10,
        })
        .map_err(Fail::Run)?;
        pb.finish_and_clear();
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    print_json(&report)
}

/// The tracker's ids of each frame's detections at `threshold`, from ranked detections.
fn track_ids(
    ranked: &[Vec<Detection>],
    threshold: f32,
    params: &TrackParams,
) -> Vec<Vec<Option<u64>>> {
    let mut tracker = Tracker::new(params.clone());
    ranked
        .iter()
        .map(|f| {
            let (shown, low) = split_scores(f, threshold);
            let mut ids = Vec::new();
            tracker.update_with_low(&shown, &low, &mut ids);
            ids
        })
        .collect()
}

/// Copies the tiles set in `mask` from `src` into `dst` (packed RGB at the grid's size).
fn copy_tiles(dst: &mut [u8], src: &[u8], grid: &TileGrid, mask: &RegionMask) {
    for t in 0..grid.len() {
        if !mask.get(t) {
            continue;
        }
        let (x0, y0, x1, y1) = grid.rect(t, 1, grid.width, grid.height);
        for y in y0..y1 {
            let r = (y * grid.width + x0) * 3..(y * grid.width + x1) * 3;
            dst[r.clone()].copy_from_slice(&src[r]);
        }
    }
}
