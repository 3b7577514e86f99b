//! The kernels machines without AVX-512 (or without AVX2) run: dense against onnxruntime, exact
//! sparse against dense, and sparse frames against this machine's widest kernels, with
//! `REGIONDROP_SIMD` lowering the level the CPU backend uses (it is read once per process, so each
//! level runs in a child process of this test binary).

mod common;
use common::*;

use gstregiondrop::engine::{EngineConfig, RunMode};
use gstregiondrop::simd::{level, Level};

/// Outputs of every frame of a sparse run (default threshold, the common mask), flattened.
fn sparse_outputs() -> Vec<f32> {
    let m = &real_models()[0];
    let plan = load(m);
    let cfg = EngineConfig {
        mode: RunMode::Sparse,
        ..Default::default()
    };
    let mut e = engine(&plan, &m.norm, cfg);
    let mut all = Vec::new();
    for f in &clip_frames(&plan, 100, 4) {
        e.process(f).unwrap();
        for t in e.outputs().unwrap() {
            all.extend(t.data);
        }
    }
    all
}

/// Runs `checks_at_the_capped_level` in a child process for each lower level this CPU has.
#[test]
fn real_models_agree_on_the_avx2_and_baseline_kernels() {
    let widest = sparse_outputs();
    for (cap, want) in [("avx2", Level::Avx2), ("baseline", Level::Baseline)] {
        if level() < want {
            println!("SKIPPED: this CPU has no {cap} kernels to test");
            continue;
        }
        let file = std::env::temp_dir().join(format!(
            "regiondrop-portable-{cap}-{}.f32",
            std::process::id()
        ));
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "checks_at_the_capped_level",
                "--ignored",
                "--nocapture",
            ])
            .env("REGIONDROP_SIMD", cap)
            .env("REGIONDROP_PORTABLE_OUT", &file)
            .output()
            .expect("run the test binary again");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        println!("--- REGIONDROP_SIMD={cap}\n{text}");
        assert!(out.status.success(), "checks failed at level {cap}");
        assert!(
            text.contains("1 passed"),
            "the child ran no test at level {cap}"
        );
        // Sparse frames (same masks, other kernels) against this machine's widest kernels.
        let bytes = std::fs::read(&file).expect("the child's sparse outputs");
        std::fs::remove_file(&file).ok();
        let theirs: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(theirs.len(), widest.len());
        let scale = widest.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = theirs
            .iter()
            .zip(&widest)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "{cap}: sparse frames vs the widest kernels, max difference {diff:.2e} of {scale:.2}"
        );
        assert!(
            diff <= 1e-4 * scale,
            "{cap}: sparse outputs differ by {diff}"
        );
    }
}

/// Run by the test above with `REGIONDROP_SIMD` set; not on its own.
#[test]
#[ignore]
fn checks_at_the_capped_level() {
    let cap = std::env::var("REGIONDROP_SIMD").expect("started by the test above");
    let want = if cap == "avx2" {
        Level::Avx2
    } else {
        Level::Baseline
    };
    assert_eq!(
        level(),
        want,
        "REGIONDROP_SIMD={cap} is not the level in use"
    );
    let m = &real_models()[0];
    let plan = load(m);
    let frames = clip_frames(&plan, 100, 4);
    // Dense against onnxruntime.
    let mut dense = engine(&plan, &m.norm, dense_cfg());
    dense.process(&frames[0]).unwrap();
    let nchw = m.norm.to_nchw(&frames[0], plan.input_w, plan.input_h);
    let ort = gstregiondrop::baseline::run(
        &asset(m.path),
        &[nchw],
        [1, 3, plan.input_h, plan.input_w],
        2,
        1,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rel = gstregiondrop::baseline::rel_l2(&dense.outputs().unwrap(), &ort.frames[0]);
    println!("{cap}: dense relative L2 vs onnxruntime {rel:.2e}");
    assert!(rel <= 1e-4, "{cap}: relative L2 {rel}");
    // Exact sparse against dense on consecutive frames (threshold 0: the input is the frame).
    let mut sparse = engine(&plan, &m.norm, exact_cfg(0.0));
    let mut worst = 0f64;
    for f in &frames {
        sparse.process(f).unwrap();
        dense.process(f).unwrap();
        worst = worst.max(rel_max_diff(
            &sparse.outputs().unwrap(),
            &dense.outputs().unwrap(),
        ));
    }
    println!("{cap}: exact sparse vs dense, max relative difference {worst:.2e}");
    assert!(worst <= 1e-4, "{cap}: sparse differs from dense by {worst}");
    // Sparse frames for the parent to compare with its own kernels.
    let path = std::env::var("REGIONDROP_PORTABLE_OUT").expect("started by the test above");
    let bytes: Vec<u8> = sparse_outputs()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).unwrap();
}
