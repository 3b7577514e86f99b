//! What the host spends laying out a frame's tile lists for the CUDA graphs
//! (`geometry::FixedPacker::pack`), for every tile (a dense frame) and for about a third of them,
//! in µs a frame. Runs on any machine: packing is host work.
//!
//! cargo run --release --example pack_costs -- MODEL.onnx [WxH]

use std::time::Instant;

use gstregiondrop::backend::cuda::geometry::{bucket_levels, bucket_of, FixedPacker};
use gstregiondrop::model::plan::Step;
use gstregiondrop::spec::parse_size;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().ok_or("usage: pack_costs MODEL.onnx [WxH]")?;
    let input_size = args.get(1).map(|s| parse_size(s)).transpose()?;
    let opts = gstregiondrop::model::ImportOptions { input_size };
    let plan = gstregiondrop::model::import(std::path::Path::new(model), &opts)
        .map_err(|e| format!("{model}: {e}"))?;
    let grid = plan.grid(32.max(plan.max_scale));
    let levels = bucket_levels(grid.len());
    for share in [1.0, 0.35] {
        let n = ((grid.len() as f64 * share).ceil() as usize).clamp(1, grid.len());
        // Every third tile or so, as a mask of that share spreads.
        let tiles: Vec<u32> = (0..grid.len() as u32)
            .filter(|t| (*t as usize * n) % grid.len() < n)
            .take(n)
            .collect();
        let per_step: Vec<Vec<u32>> = plan
            .steps
            .iter()
            .map(|s| match s {
                Step::Layer(_) => tiles.clone(),
                _ => Vec::new(),
            })
            .collect();
        let bucket = levels[bucket_of(&levels, tiles.len()).ok_or("no bucket")?];
        let mut packer = FixedPacker::default();
        let mut us = Vec::new();
        let mut len = 0;
        for _ in 0..50 {
            let t = Instant::now();
            len = packer.pack(&plan, &grid, &per_step, bucket);
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(f64::total_cmp);
        println!(
            "{model} {}x{}: {} of {} tiles (bucket {bucket}), {} steps: pack median {:.1} µs, \
             min {:.1} µs, {} KB to upload",
            plan.input_w,
            plan.input_h,
            tiles.len(),
            grid.len(),
            plan.steps.len(),
            us[us.len() / 2],
            us[0],
            len * 4 / 1024
        );
    }
    Ok(())
}
