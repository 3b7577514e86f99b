//! --fractions: forced random masks at 5, 10, 25, 50 and 100 % active, dense and sparse (and
//! auto) over the same frames, one JSON line each.

use serde::Serialize;

use super::*;

const FRACTIONS: [f64; 5] = [0.05, 0.10, 0.25, 0.50, 1.00];

fn random_mask(grid: &TileGrid, k: usize, rng: &mut Lcg, scratch: &mut Vec<usize>) -> RegionMask {
    let len = grid.len();
    scratch.clear();
    scratch.extend(0..len);
    for j in 0..k.min(len) {
        let r = j + rng.below(len - j);
        scratch.swap(j, r);
    }
    let mut m = RegionMask::empty(grid);
    for &t in &scratch[..k.min(len)] {
        m.set(t, true);
    }
    m
}

#[derive(Serialize)]
struct FractionReport {
    fraction: f64,
    tiles: usize,
    of_tiles: usize,
    active_fraction: Option<f64>,
    frames: usize,
    dense_ms: Option<f64>,
    sparse_ms: Option<f64>,
    speedup: Option<f64>,
    ideal_speedup: Option<f64>,
    efficiency: Option<f64>,
    /// The same masks through RunMode::Auto (falls back to dense when sparse would not pay).
    auto_ms: Option<f64>,
    auto_speedup: Option<f64>,
    auto_dense_frames: usize,
    onnxruntime_ms: Option<f64>,
    vs_onnxruntime: Option<f64>,
    openvino_ms: Option<f64>,
    vs_openvino: Option<f64>,
}

pub fn fractions(cli: &Cli, s: &Setup, baselines: &mut Baselines) -> Result<(), Fail> {
    let n = s.n();
    let grid = s.grid(cli);
    let full = RegionMask::full(&grid);
    let mut scratch = Vec::with_capacity(grid.len());
    // Each engine with the decoder's gate, as the main run sets it (at the scoring floor).
    let mut dense = s.engine(dense_cfg(cli, s.threads))?;
    s.set_gate(&mut dense)?;
    let pb = bar(n * FRACTIONS.len(), "fractions");
    for (fi, &f) in FRACTIONS.iter().enumerate() {
        let k = ((f * grid.len() as f64).round() as usize).clamp(1, grid.len());
        let mut sparse = s.engine(EngineConfig {
            mode: RunMode::Sparse,
            refresh_interval: 0,
            ..sparse_cfg(cli, s.threads)
        })?;
        let mut auto = s.engine(EngineConfig {
            mode: RunMode::Auto,
            refresh_interval: 0,
            ..sparse_cfg(cli, s.threads)
        })?;
        s.set_gate(&mut sparse)?;
        s.set_gate(&mut auto)?;
        let mut rng = Lcg(0x5eed_0000 + fi as u64);
        let (mut dm, mut sm, mut am) = (vec![], vec![], vec![]);
        baselines.clear_times();
        let mut auto_dense = 0;
        for i in 0..n {
            let rgb = &s.net[i];
            let mask = random_mask(&grid, k, &mut rng, &mut scratch);
            baselines.time(s, i)?;
            let d = dense.process_with_mask(rgb, &full).map_err(running)?;
            let sp = sparse.process_with_mask(rgb, &mask).map_err(running)?;
            let au = auto.process_with_mask(rgb, &mask).map_err(running)?;
            if i > 0 {
                dm.push(d.ms);
                sm.push(sp.ms);
                am.push(au.ms);
                auto_dense += au.dense as usize;
            }
            pb.inc(1);
        }
        pb.suspend(|| print_profile(&format!("sparse engine at {f} active"), &sparse, 0.02));
        let (d, sp, au) = (median(&dm), median(&sm), median(&am));
        let frac = k as f64 / grid.len() as f64;
        let (ideal, eff) = ideal_and_efficiency(d / sp, frac);
        let (onnxruntime_ms, openvino_ms) = baselines.figures(1.0);
        let (vs_onnxruntime, vs_openvino) = baselines.figures(1.0 / sp);
        let line = FractionReport {
            fraction: f,
            tiles: k,
            of_tiles: grid.len(),
            active_fraction: round(frac, 4),
            frames: n,
            dense_ms: round(d, 3),
            sparse_ms: round(sp, 3),
            speedup: round(d / sp, 3),
            ideal_speedup: ideal,
            efficiency: eff,
            auto_ms: round(au, 3),
            auto_speedup: round(d / au, 3),
            auto_dense_frames: auto_dense,
            onnxruntime_ms,
            vs_onnxruntime,
            openvino_ms,
            vs_openvino,
        };
        pb.suspend(|| print_json(&line))?;
    }
    pb.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_masks_have_exactly_k_tiles_and_are_deterministic() {
        let g = TileGrid::new(416, 416, 32);
        let mut scratch = Vec::new();
        for k in [1, 8, 85, 169] {
            let a = random_mask(&g, k, &mut Lcg(7), &mut scratch);
            let b = random_mask(&g, k, &mut Lcg(7), &mut scratch);
            assert_eq!(a.count(), k);
            assert_eq!(a, b);
        }
        let mut r = Lcg(1);
        let c = random_mask(&g, 40, &mut r, &mut scratch);
        let d = random_mask(&g, 40, &mut r, &mut scratch);
        assert_ne!(c, d, "successive masks differ");
    }
}
