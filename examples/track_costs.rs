//! What tracking costs per frame: `Tracker::update` on synthetic people walking in a grid, for
//! several detections per frame, all of one class and spread over three classes (the assignment
//! runs per class, and grows with the cube of the overlapping boxes in one class).
//!
//! cargo run --release --example track_costs

use std::time::Instant;

use gstregiondrop::detect::Detection;
use gstregiondrop::track::{TrackParams, Tracker};

/// `n` boxes on a grid, each moving right by 0.7 px per frame (so every track continues).
fn frame(n: usize, classes: u32, f: usize) -> Vec<Detection> {
    (0..n)
        .map(|i| {
            let x = (i % 20) as f32 * 40.0 + f as f32 * 0.7;
            let y = (i / 20) as f32 * 90.0;
            Detection {
                class_id: i as u32 % classes,
                confidence: 0.9,
                bbox: [x, y, x + 30.0, y + 80.0],
            }
        })
        .collect()
}

fn main() {
    const FRAMES: usize = 2000;
    println!("detections  classes  µs per frame (median of {FRAMES})");
    for n in [10, 30, 100, 300] {
        for classes in [1, 3] {
            let mut t = Tracker::new(TrackParams::default());
            let mut ids = Vec::new();
            let mut us: Vec<f64> = (0..FRAMES)
                .map(|f| {
                    let dets = frame(n, classes, f);
                    let start = Instant::now();
                    t.update(&dets, &mut ids);
                    start.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            us.sort_by(f64::total_cmp);
            assert_eq!(t.live_tracks(), n, "every track continues");
            println!("{n:>10}  {classes:>7}  {:>12.1}", us[us.len() / 2]);
        }
    }
}
