//! Memory stays flat: 10,000 frames of change detection + sparse runs allocate nothing that lasts.

mod common;
use common::onnx_build::{temp_model, Builder, A};
use common::*;

use std::sync::Arc;

use gstregiondrop::engine::{EngineConfig, RunMode};
use gstregiondrop::model::{import, ImportOptions};
use gstregiondrop::preprocess::InputNorm;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn ten_thousand_frames_do_not_grow_memory() {
    let (w, h) = (128usize, 96usize);
    let mut b = Builder::new(3, h as i64, w as i64);
    let c1 = b.conv("x", 3, 8, 3, 2, 1, 1, 1);
    let c2 = b.conv(&c1, 8, 16, 3, 2, 1, 1, 1);
    let mp = b.node(
        "MaxPool",
        &[&c2],
        &[
            ("kernel_shape", A::Is(vec![2, 2])),
            ("strides", A::Is(vec![2, 2])),
        ],
    );
    let scales = b.init(&[4], vec![1.0, 1.0, 2.0, 2.0]);
    let up = b.node("Resize", &[&mp, "", &scales], &[("mode", A::S("nearest"))]);
    let cat = b.node("Concat", &[&c2, &up], &[("axis", A::I(1))]);
    let out = b.conv(&cat, 32, 8, 1, 1, 0, 1, 1);
    let path = temp_model("memory", &b.bytes(&[&out], "memory"));
    let plan = Arc::new(import(&path, &ImportOptions::default()).unwrap());
    let mut e = engine(
        &plan,
        &InputNorm::unit_rgb(),
        EngineConfig {
            mode: RunMode::Auto,
            threshold: 8.0,
            ..Default::default()
        },
    );
    let mut rng = Lcg(11);
    let mut image = vec![100u8; w * h * 3];
    let mut step = |e: &mut gstregiondrop::engine::Engine, i: usize| {
        // A small square moving over a still background, plus a full change now and then.
        let (x0, y0) = ((i * 3) % (w - 16), (i * 5) % (h - 16));
        for y in y0..y0 + 16 {
            for x in x0..x0 + 16 {
                image[(y * w + x) * 3] = (rng.next_u32() % 256) as u8;
            }
        }
        if i.is_multiple_of(997) {
            image.iter_mut().for_each(|v| *v = v.wrapping_add(40));
        }
        e.process(&image).unwrap();
        e.outputs().unwrap();
    };
    for i in 0..500 {
        step(&mut e, i);
    }
    let (rss0, held0) = (resident_bytes(), e.memory_bytes());
    for i in 500..10_500 {
        step(&mut e, i);
    }
    let (rss1, held1) = (resident_bytes(), e.memory_bytes());
    println!("resident {rss0} -> {rss1} bytes, engine buffers {held0} -> {held1} bytes");
    assert_eq!(held0, held1, "engine buffers changed size");
    assert!(
        rss1 <= rss0 + (1 << 20),
        "resident memory grew by {} bytes over 10,000 frames",
        rss1 - rss0
    );
    std::fs::remove_file(path).ok();
}

/// Where a direct kernel computes every run of a convolution (AVX-512), the backend holds no
/// im2col matrix for it: a second 3×3 convolution of 32 channels on a 64×64 map adds its cache and
/// weight copies, not the 4.7 MB matrix of its gathered rows.
#[test]
fn convolutions_on_direct_kernels_hold_no_gather_scratch() {
    if gstregiondrop::simd::level() != gstregiondrop::simd::Level::Avx512 {
        println!("SKIPPED: convolutions_on_direct_kernels_hold_no_gather_scratch: this CPU has no AVX-512 (its convolutions gather)");
        return;
    }
    let side = 64usize;
    let held = |convs: usize| {
        let mut b = Builder::new(3, side as i64, side as i64);
        let mut x = b.conv("x", 3, 32, 3, 1, 1, 1, 1);
        for _ in 1..convs {
            x = b.conv(&x, 32, 32, 3, 1, 1, 1, 1);
        }
        let path = temp_model(&format!("scratch{convs}"), &b.bytes(&[&x], "scratch"));
        let plan = Arc::new(import(&path, &ImportOptions::default()).unwrap());
        std::fs::remove_file(path).ok();
        engine(&plan, &InputNorm::unit_rgb(), EngineConfig::default()).memory_bytes()
    };
    let (one, two) = (held(1), held(2));
    let cache = side * side * 32 * 4;
    let weights = 9 * 32 * 32 * 4;
    let gathered = side * side * 9 * 32 * 4;
    println!("one conv {one} bytes, two {two}: +{}", two - one);
    assert!(
        two - one <= cache + 2 * weights + 4096,
        "the second convolution added {} bytes: its cache is {cache}, its weights {weights}, \
         an im2col matrix of its rows {gathered}",
        two - one
    );
}
