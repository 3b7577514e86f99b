//! The benchmark binary end to end, on the default model and the sample clip (real footage):
//! the JSON it prints, its modes, and its exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_regiondrop-bench");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn stdout_lines(o: &Output) -> Vec<Value> {
    let text = String::from_utf8(o.stdout.clone()).expect("utf-8 stdout");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key)
        .unwrap_or_else(|| panic!("key `{key}` missing in {v}"))
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

/// Exit code 2 and exactly one non-empty line on stderr, nothing on stdout; returns that line.
fn fails_with_one_line(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(
        o.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    lines[0].to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "regiondrop-bench-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p)
        .map(|b| b.len() > 100 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
        .unwrap_or(false)
}

const MAIN_KEYS: [&str; 26] = [
    "model",
    "video",
    "frames",
    "input",
    "backend",
    "threads",
    "dense_ms",
    "sparse_ms",
    "speedup",
    "active_fraction",
    "ideal_speedup",
    "efficiency",
    "agreement_map50",
    "exact_max_abs_diff",
    "onnxruntime_ms",
    "vs_onnxruntime",
    "dense_vs_onnxruntime",
    "onnxruntime_rel_l2",
    "memory_bytes",
    "work_fraction",
    "sparse_dense_frames",
    "tracking_mota",
    "tracking_id_switches",
    "tracks_dense",
    "tracks_sparse",
    "start_ms",
];

fn check_main_line(v: &Value, frames: u64) {
    for k in MAIN_KEYS {
        assert!(v.get(k).is_some(), "key `{k}` missing in {v}");
    }
    assert_eq!(v["frames"].as_u64(), Some(frames));
    let input: Vec<u64> = v["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(input.len(), 2);
    assert!(input.iter().all(|&d| d >= 32), "{input:?}");
    assert!(
        ["cpu", "cuda"].iter().any(|b| v["backend"] == *b),
        "{}",
        v["backend"]
    );
    // The details start with the backend's name (and say how it runs).
    let details = v["backend_details"].as_str().expect("backend_details");
    assert!(
        details.starts_with(v["backend"].as_str().unwrap()) || v["backend"] == "cuda",
        "{details}"
    );
    assert!(v["threads"].as_u64().unwrap() >= 1);
    let (dense, sparse, speedup) = (f(v, "dense_ms"), f(v, "sparse_ms"), f(v, "speedup"));
    assert!(dense > 0.0 && sparse > 0.0 && speedup > 0.0, "{v}");
    assert!(
        (speedup - dense / sparse).abs() < 0.01 * speedup + 1e-3,
        "speedup = dense/sparse: {v}"
    );
    let af = f(v, "active_fraction");
    assert!((0.0..=1.0).contains(&af), "{v}");
    if af > 0.0 {
        assert!((f(v, "ideal_speedup") - 1.0 / af).abs() < 0.01 / af, "{v}");
        assert!((f(v, "efficiency") - speedup * af).abs() < 0.01, "{v}");
    }
    let agreement = f(v, "agreement_map50");
    assert!((0.0..=1.0).contains(&agreement), "{v}");
    // The box-weighted mean of the per-class APs printed beside it.
    let per_class = v["agreement_ap50_per_class"].as_object().unwrap();
    let boxes: f64 = per_class.values().map(|c| c[0].as_f64().unwrap()).sum();
    if boxes > 0.0 {
        let weighted: f64 = per_class
            .values()
            .map(|c| c[0].as_f64().unwrap() * c[1].as_f64().unwrap())
            .sum::<f64>()
            / boxes;
        assert!(
            (f(v, "agreement_ap50_weighted") - weighted).abs() < 1e-3,
            "{v}"
        );
    }
    assert!(v["memory_bytes"].as_u64().unwrap() > 0);
    let start = v["start_ms"].as_array().unwrap();
    assert!(
        start.len() == 2 && start.iter().all(|t| t.as_f64().unwrap() > 0.0),
        "{v}"
    );
    // Tracks: the clip has people on every frame, so both runs give ids, and the sparse tracks
    // follow the dense ones (MOTA 0.94 and more on the clip's first 20 frames; 0.97 over 300).
    let tracks = |k: &str| v[k].as_u64().unwrap();
    assert!(
        tracks("tracks_dense") >= 1 && tracks("tracks_sparse") >= 1,
        "{v}"
    );
    let mota = f(v, "tracking_mota");
    assert!(mota > 0.5 && mota <= 1.0, "{v}");
    assert!(
        tracks("tracking_id_switches") <= tracks("detections_dense"),
        "{v}"
    );
}

#[test]
fn default_run_prints_one_json_line_with_the_figures() {
    let o = bench(&["--frames", "6"]);
    ok(&o);
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 1, "one line on stdout");
    let v = &lines[0];
    check_main_line(v, 6);
    // Without --exact / --onnxruntime those figures are null.
    for k in [
        "exact_max_abs_diff",
        "onnxruntime_ms",
        "vs_onnxruntime",
        "dense_vs_onnxruntime",
        "onnxruntime_rel_l2",
        "openvino_ms",
        "openvino_precision",
        "vs_openvino",
        "dense_vs_openvino",
    ] {
        assert!(v[k].is_null(), "{k} should be null: {v}");
    }
    assert!(v["model"].as_str().unwrap().ends_with(".onnx"));
    // Sample footage: people walk, so something changes, and not everything (fixed camera).
    let af = f(v, "active_fraction");
    assert!(af > 0.0 && af < 1.0, "{v}");
    assert!(
        v["detections_dense"].as_u64().unwrap() > 0,
        "the default model finds people: {v}"
    );
}

#[test]
fn exact_mode_matches_dense() {
    let o = bench(&["--frames", "4", "--exact", "--mode", "sparse"]);
    ok(&o);
    let v = &stdout_lines(&o)[0];
    check_main_line(v, 4);
    let d = f(v, "exact_max_abs_diff");
    assert!(
        (0.0..=1e-4).contains(&d),
        "exact mode differs from dense: {v}"
    );
}

#[test]
fn onnxruntime_figures() {
    let o = bench(&["--frames", "3", "--onnxruntime"]);
    ok(&o);
    let v = &stdout_lines(&o)[0];
    check_main_line(v, 3);
    let ort = f(v, "onnxruntime_ms");
    assert!(ort > 0.0);
    assert!(
        (f(v, "vs_onnxruntime") - ort / f(v, "sparse_ms")).abs()
            < 0.01 * f(v, "vs_onnxruntime") + 1e-3
    );
    assert!(
        (f(v, "dense_vs_onnxruntime") - f(v, "dense_ms") / ort).abs()
            < 0.01 * f(v, "dense_vs_onnxruntime") + 1e-3
    );
    let rel = f(v, "onnxruntime_rel_l2");
    assert!(
        (0.0..=1e-4).contains(&rel),
        "dense outputs differ from onnxruntime: {v}"
    );
}

#[test]
fn openvino_figures() {
    let o = bench(&["--frames", "3", "--openvino", "f32"]);
    ok(&o);
    let v = &stdout_lines(&o)[0];
    check_main_line(v, 3);
    assert_eq!(v["openvino_precision"], "f32", "{v}");
    let ov = f(v, "openvino_ms");
    assert!(ov > 0.0);
    assert!(
        (f(v, "vs_openvino") - ov / f(v, "sparse_ms")).abs() < 0.01 * f(v, "vs_openvino") + 1e-3
    );
    assert!(
        (f(v, "dense_vs_openvino") - f(v, "dense_ms") / ov).abs()
            < 0.01 * f(v, "dense_vs_openvino") + 1e-3
    );
    // Without a precision, the plugin picks one.
    let o = bench(&["--frames", "2", "--openvino"]);
    ok(&o);
    let v = &stdout_lines(&o)[0];
    let p = v["openvino_precision"].as_str().unwrap();
    assert!(p == "f32" || p == "bf16", "{v}");
}

#[test]
fn fractions_table_then_main_line() {
    let o = bench(&["--frames", "3", "--fractions"]);
    ok(&o);
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 6, "5 fraction lines + the main line");
    for (line, want) in lines.iter().zip([0.05, 0.10, 0.25, 0.50, 1.00]) {
        assert!((f(line, "fraction") - want).abs() < 1e-9, "{line}");
        let tiles = line["tiles"].as_u64().unwrap();
        let of = line["of_tiles"].as_u64().unwrap();
        assert!(tiles >= 1 && tiles <= of, "{line}");
        assert!((f(line, "active_fraction") - tiles as f64 / of as f64).abs() < 1e-3);
        for k in [
            "dense_ms",
            "sparse_ms",
            "speedup",
            "ideal_speedup",
            "efficiency",
            "auto_ms",
            "auto_speedup",
        ] {
            assert!(f(line, k) > 0.0, "{k}: {line}");
        }
        assert!(line["onnxruntime_ms"].is_null());
    }
    assert_eq!(f(&lines[4], "active_fraction"), 1.0);
    check_main_line(&lines[5], 3);
}

#[test]
fn streams_run_engines_at_once_dense_then_sparse() {
    let o = bench(&["--frames", "4", "--streams", "2"]);
    ok(&o);
    let lines = stdout_lines(&o);
    assert_eq!(
        lines.len(),
        4,
        "dense and sparse, threads split and threads each"
    );
    let expected = [
        ("split", "dense"),
        ("split", "sparse"),
        ("each", "dense"),
        ("each", "sparse"),
    ];
    for (line, (pools, mode)) in lines.iter().zip(expected) {
        assert_eq!(line["pools"], pools, "{line}");
        assert_eq!(line["mode"], mode, "{line}");
        assert_eq!(line["streams"], 2, "{line}");
        assert_eq!(line["frames"], 4, "{line}");
        let (total, per) = (f(line, "fps_total"), f(line, "fps_per_stream"));
        assert!(
            per > 0.0 && (total - 2.0 * per).abs() < 1e-6 * total,
            "{line}"
        );
        assert!(
            (f(line, "ms_per_frame") * per - 1e3).abs() < 1e-6 * 1e3,
            "{line}"
        );
        assert!(f(line, "memory_bytes") > 0.0, "{line}");
        assert!(line["device_bytes"].is_null(), "CPU: {line}");
        let a = f(line, "active_fraction");
        match mode {
            "dense" => assert_eq!(a, 1.0, "{line}"),
            _ => assert!(a > 0.0 && a < 1.0, "the clip changes in part: {line}"),
        }
    }
    let err = fails_with_one_line(&bench(&["--streams", "2", "--calibrate"]));
    assert!(
        err.contains("--streams") || err.contains("--calibrate"),
        "{err}"
    );
}

#[test]
fn calibrate_picks_the_fastest_threshold_meeting_the_target_and_plots() {
    let dir = scratch("calibrate");
    let png = dir.join("sweep.png");
    let o = bench(&[
        "--frames",
        "4",
        "--calibrate",
        "--target-agreement",
        "0.5",
        "--thresholds",
        "4,16,48",
        "--margins",
        "16,0",
        "--plot",
        png.to_str().unwrap(),
    ]);
    ok(&o);
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert_eq!(f(v, "target_agreement"), 0.5);
    let sweep = v["sweep"].as_array().unwrap();
    let ts: Vec<(f64, f64)> = sweep
        .iter()
        .map(|r| (f(r, "margin"), f(r, "threshold")))
        .collect();
    let want = [0.0, 16.0].map(|m| [4.0, 16.0, 48.0].map(|t| (m, t)));
    assert_eq!(ts, want.concat());
    assert_eq!(v["margins"], serde_json::json!([0, 16]));
    for r in sweep {
        assert!(f(r, "speedup") > 0.0 && f(r, "sparse_ms") > 0.0, "{r}");
        assert!((0.0..=1.0).contains(&f(r, "agreement_map50")), "{r}");
        assert!((0.0..=1.0).contains(&f(r, "active_fraction")), "{r}");
    }
    // The pick is the fastest row at or above the target.
    let eligible: Vec<&Value> = sweep
        .iter()
        .filter(|r| f(r, "agreement_map50") >= 0.5)
        .collect();
    match eligible
        .iter()
        .map(|r| f(r, "speedup"))
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
    {
        Some(best) => assert_eq!(f(&v["pick"], "speedup"), best, "{v}"),
        None => assert!(v["pick"].is_null(), "{v}"),
    }
    assert!(is_png(&png), "plot written as PNG");
    for r in sweep {
        assert!(
            (0.0..=1.0).contains(&f(r, "agreement_ap50_weighted")),
            "{r}"
        );
    }
    assert_eq!(v["pick_by"], "agreement_map50");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--pick-by weighted` applies the target to the box-weighted agreement instead, `--pick-by
/// tracking` to the MOTA of the tracks on the sparse detections.
#[test]
fn calibrate_can_pick_by_another_figure() {
    for (by, figure) in [
        ("weighted", "agreement_ap50_weighted"),
        ("tracking", "tracking_mota"),
    ] {
        let o = bench(&[
            "--frames",
            "3",
            "--calibrate",
            "--thresholds",
            "8,64",
            "--pick-by",
            by,
            "--target-agreement",
            "0.2",
        ]);
        ok(&o);
        let v = &stdout_lines(&o)[0];
        assert_eq!(v["pick_by"], figure);
        let sweep = v["sweep"].as_array().unwrap();
        assert!(
            sweep.iter().all(|r| f(r, figure) <= 1.0),
            "{figure} in every row: {v}"
        );
        let best = sweep
            .iter()
            .filter(|r| f(r, figure) >= 0.2)
            .map(|r| f(r, "speedup"))
            .fold(f64::NAN, f64::max);
        if best.is_nan() {
            assert!(v["pick"].is_null(), "{v}");
        } else {
            assert_eq!(f(&v["pick"], "speedup"), best, "{v}");
        }
    }
}

/// `--growth-limits` sweeps how far deeper layers grow: the same tiles change, more work is done.
#[test]
fn calibrate_sweeps_growth_limits() {
    let o = bench(&[
        "--frames",
        "3",
        "--mode",
        "sparse",
        "--calibrate",
        "--thresholds",
        "8",
        "--growth-limits",
        "2,0",
    ]);
    ok(&o);
    let v = &stdout_lines(&o)[0];
    assert_eq!(v["growth_limits"], serde_json::json!([0, 2]));
    let sweep = v["sweep"].as_array().unwrap();
    let g: Vec<f64> = sweep.iter().map(|r| f(r, "growth_limit")).collect();
    assert_eq!(g, [0.0, 2.0]);
    let (r0, r2) = (&sweep[0], &sweep[1]);
    assert_eq!(f(r0, "active_fraction"), f(r2, "active_fraction"), "{v}");
    assert!(
        (f(r0, "work_fraction") - f(r0, "active_fraction")).abs() < 1e-3,
        "one common mask: {v}"
    );
    assert!(f(r2, "work_fraction") > f(r0, "work_fraction"), "{v}");
    // The same rows as a table on stderr, the pick marked.
    let err = String::from_utf8_lossy(&o.stderr);
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("growth-limit margin threshold"))
        .take(1 + sweep.len())
        .collect();
    assert_eq!(table.len(), 3, "{err}");
    assert!(table[1].trim_start().starts_with("0 ") && table[2].trim_start().starts_with("2 "));
    assert_eq!(
        table.iter().filter(|l| l.ends_with("<- pick")).count(),
        usize::from(!v["pick"].is_null()),
        "{err}"
    );
}

#[test]
fn annotate_writes_frames_mask_and_video() {
    let dir = scratch("annotate");
    let out = dir.join("out");
    let o = bench(&["--frames", "52", "--annotate", out.to_str().unwrap()]);
    ok(&o);
    check_main_line(&stdout_lines(&o)[0], 52);
    assert!(is_png(&out.join("frame_0050.png")));
    assert!(is_png(&out.join("mask.png")));
    let mkv = std::fs::read(out.join("annotated.mkv")).expect("annotated.mkv");
    assert!(
        mkv.len() > 10_000 && mkv.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]),
        "a Matroska file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["--frames", "abc"][..],
        &["--frames", "1"],
        &["--no-such-flag"],
        &["--backend", "gpu"],
        &["--mode", "fast"],
        &["--threshold", "-3"],
        &["--input-size", "640"],
        &["--target-agreement", "0.9"], // needs --calibrate
        &["--margins", "8"],            // needs --calibrate
        &["--growth-limits", "1"],      // needs --calibrate
        &["--calibrate", "--fractions"],
    ] {
        let line = fails_with_one_line(&bench(args));
        assert!(
            line.starts_with("regiondrop-bench: error:"),
            "{args:?}: {line}"
        );
    }
    // Settings the engine rejects: also 2, and the message says why.
    let line = fails_with_one_line(&bench(&["--frames", "2", "--tile-size", "30"]));
    assert!(line.contains("tile"), "{line}");
}

#[test]
fn missing_or_unusable_inputs_exit_2_naming_the_file() {
    let dir = scratch("inputs");
    let missing = dir.join("no-such-clip.avi");
    let line = fails_with_one_line(&bench(&["--video", missing.to_str().unwrap()]));
    assert!(line.contains(missing.to_str().unwrap()), "{line}");

    let text = dir.join("notes.avi");
    std::fs::write(&text, "this is not a video\n".repeat(100)).unwrap();
    let line = fails_with_one_line(&bench(&["--video", text.to_str().unwrap()]));
    assert!(line.contains(text.to_str().unwrap()), "{line}");

    let missing = dir.join("no-such-model.onnx");
    let line = fails_with_one_line(&bench(&["--model", missing.to_str().unwrap()]));
    assert!(line.contains(missing.to_str().unwrap()), "{line}");

    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, [0xffu8; 1000]).unwrap();
    let line = fails_with_one_line(&bench(&["--model", garbage.to_str().unwrap()]));
    assert!(line.contains(garbage.to_str().unwrap()), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
