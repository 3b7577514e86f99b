//! --calibrate / --plot: the threshold sweep (with margins and growth limits), its table and the
//! pick of the fastest setting that keeps the target agreement.

use serde::Serialize;

use super::*;

const SWEEP: [f32; 9] = [2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0];

#[derive(Serialize, Clone)]
struct SweepRow {
    margin: usize,
    growth_limit: usize,
    threshold: f32,
    #[serde(flatten)]
    figures: Figures,
    agreement_map50: Option<f64>,
    agreement_ap50_weighted: Option<f64>,
    tracking_mota: Option<f64>,
}

#[derive(Serialize)]
struct SweepReport {
    model: String,
    video: String,
    frames: usize,
    input: [usize; 2],
    backend: String,
    threads: usize,
    mode: &'static str,
    tile_size: usize,
    dilation: usize,
    /// The margins and growth limits swept (each row has its own).
    margins: Vec<usize>,
    growth_limits: Vec<usize>,
    exact: bool,
    dense_ms: Option<f64>,
    target_agreement: f64,
    /// The figure the target applies to.
    pick_by: &'static str,
    sweep: Vec<SweepRow>,
    /// The fastest setting (threshold, margin, growth limit) whose agreement (`pick_by`) is at or above the
    /// target; null if none is.
    pick: Option<SweepRow>,
    plot: Option<String>,
}

/// The sweep as a table for the terminal (the JSON line on stdout holds the same figures), the
/// picked row marked.
fn sweep_table(rows: &[SweepRow], pick: Option<&SweepRow>) -> String {
    let f = |v: Option<f64>, nd: usize| v.map_or("-".to_string(), |v| format!("{v:.nd$}"));
    let mut t = String::from(
        "growth-limit margin threshold   active    work  speedup  agreement_map50  weighted  tracking\n",
    );
    for r in rows {
        let picked = pick.is_some_and(|p| {
            (p.growth_limit, p.margin, p.threshold) == (r.growth_limit, r.margin, r.threshold)
        });
        t += &format!(
            "{:>12} {:>6} {:>9} {:>8} {:>7} {:>8} {:>16} {:>9} {:>9}{}\n",
            r.growth_limit,
            r.margin,
            r.threshold,
            f(r.figures.active_fraction, 3),
            f(r.figures.work_fraction, 3),
            f(r.figures.speedup, 2),
            f(r.agreement_map50, 4),
            f(r.agreement_ap50_weighted, 4),
            f(r.tracking_mota, 4),
            if picked { "  <- pick" } else { "" }
        );
    }
    t
}

pub fn sweep(cli: &Cli, s: &Setup) -> Result<(), Fail> {
    let n = s.n();
    let target = cli.target_agreement.unwrap_or(0.97);
    let mut thresholds = if cli.thresholds.is_empty() {
        SWEEP.to_vec()
    } else {
        cli.thresholds.clone()
    };
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    // A swept setting: the listed values in order, once each, or the single setting.
    let swept = |list: &[usize], single: usize| {
        let mut v = if list.is_empty() {
            vec![single]
        } else {
            list.to_vec()
        };
        v.sort();
        v.dedup();
        v
    };
    let margins = swept(&cli.margins, cli.margin);
    let growth_limits = swept(&cli.growth_limits, cli.growth_limit);
    let settings: Vec<(usize, usize, f32)> = growth_limits
        .iter()
        .flat_map(|&g| margins.iter().map(move |&m| (g, m)))
        .flat_map(|(g, m)| thresholds.iter().map(move |&t| (g, m, t)))
        .collect();
    let grid = s.grid(cli);
    let full = RegionMask::full(&grid);

    // Dense detections once; dense timings interleaved with every threshold's run (every other
    // frame), so each row's speedup compares times taken under the same machine load.
    let pb = bar(n * (settings.len() + 1), "threshold sweep");
    let mut dense = s.engine(dense_cfg(cli, s.threads))?;
    let dense_gate = s.set_gate(&mut dense)?;
    let mut dranked = Vec::with_capacity(n);
    let mut all_dms = vec![];
    for rgb in &s.net {
        dense.process_with_mask(rgb, &full).map_err(running)?;
        dranked.push(s.detections(&mut dense, &dense_gate, true)?);
        pb.inc(1);
    }
    // The reference: dense detections at the operating threshold.
    let ddets = s.shown(&dranked);

    let mut rows = Vec::new();
    for &(growth_limit, margin, t) in &settings {
        let mut sparse = s.engine(EngineConfig {
            threshold: t,
            margin,
            growth_limit,
            ..sparse_cfg(cli, s.threads)
        })?;
        let sparse_gate = s.set_gate(&mut sparse)?;
        let (mut dms, mut sms, mut act, mut work, mut sdets) =
            (vec![], vec![], vec![], vec![], Vec::with_capacity(n));
        for (i, rgb) in s.net.iter().enumerate() {
            if i % 2 == 1 {
                dms.push(dense.process_with_mask(rgb, &full).map_err(running)?.ms);
            }
            let st = sparse.process(rgb).map_err(running)?;
            if i > 0 {
                sms.push(st.ms);
                act.push(st.active_fraction);
                work.push(st.work_fraction);
            }
            sdets.push(s.detections(&mut sparse, &sparse_gate, true)?);
            pb.inc(1);
        }
        let (d, sp) = (median(&dms), median(&sms));
        all_dms.extend(dms);
        let per_class = detect::ap50_per_class(&ddets[1..], &sdets[1..]);
        rows.push(SweepRow {
            margin,
            growth_limit,
            threshold: t,
            figures: Figures::new(d, sp, mean(&act), mean(&work)),
            agreement_map50: round(detect::mean_ap50(&per_class, &sdets[1..]), 4),
            agreement_ap50_weighted: round(
                detect::ap50_weighted(&per_class).unwrap_or(f64::NAN),
                4,
            ),
            tracking_mota: track_agreement(
                &dranked[1..],
                &sdets[1..],
                s.params.conf_threshold,
                &s.track,
            )
            .mota()
            .and_then(|m| round(m, 4)),
        });
    }
    let d = median(&all_dms);
    pb.finish_and_clear();

    let agreement = |r: &SweepRow| match cli.pick_by {
        PickBy::Map50 => r.agreement_map50,
        PickBy::Weighted => r.agreement_ap50_weighted,
        PickBy::Tracking => r.tracking_mota,
    };
    let pick = rows
        .iter()
        .filter(|r| agreement(r).is_some_and(|a| a >= target))
        .max_by(|a, b| {
            a.figures
                .speedup
                .unwrap_or(0.0)
                .total_cmp(&b.figures.speedup.unwrap_or(0.0))
        })
        .cloned();
    eprint!("{}", sweep_table(&rows, pick.as_ref()));
    if rows.iter().all(|r| agreement(r).is_none()) {
        eprintln!(
            "regiondrop-bench: {} is undefined on these frames (dense detected nothing to \
             compare with): no pick",
            cli.pick_by.figure()
        );
    } else if pick.is_none() {
        eprintln!(
            "regiondrop-bench: no setting in the sweep keeps {} >= {target}",
            cli.pick_by.figure()
        );
    }
    if let Some(p) = &cli.plot {
        // One curve: the picked margin's and growth limit's thresholds (the first ones' without
        // a pick).
        let shown = pick.as_ref().map_or((margins[0], growth_limits[0]), |r| {
            (r.margin, r.growth_limit)
        });
        let pts: Vec<plot::Point> = rows
            .iter()
            .filter(|r| (r.margin, r.growth_limit) == shown)
            .map(|r| plot::Point {
                threshold: r.threshold as f64,
                speedup: r.figures.speedup.unwrap_or(f64::NAN),
                agreement: agreement(r).unwrap_or(f64::NAN),
            })
            .collect();
        let title = format!(
            "{}: {} frames, {}x{}, tile {}, margin {}, growth limit {}, {}",
            s.model
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
            n,
            s.w,
            s.h,
            cli.tile_size,
            shown.0,
            shown.1,
            s.backend
        );
        plot::plot_sweep(
            p,
            &title,
            &pts,
            Some(target),
            pick.as_ref().map(|r| r.threshold as f64),
            match cli.pick_by {
                PickBy::Map50 => "agreement map50",
                PickBy::Weighted => "agreement ap50 (box-weighted)",
                PickBy::Tracking => "tracking MOTA",
            },
        )
        .map_err(Fail::Run)?;
        eprintln!("wrote {}", p.display());
    }
    print_json(&SweepReport {
        model: s.model.display().to_string(),
        video: s.video.display().to_string(),
        frames: n,
        input: [s.w, s.h],
        backend: s.backend.clone(),
        threads: s.threads,
        mode: match cli.mode {
            ModeArg::Sparse => "sparse",
            ModeArg::Auto => "auto",
        },
        tile_size: cli.tile_size,
        dilation: cli.dilation,
        margins,
        growth_limits,
        exact: cli.exact,
        dense_ms: round(d, 3),
        target_agreement: target,
        pick_by: cli.pick_by.figure(),
        sweep: rows,
        pick,
        plot: cli.plot.as_ref().map(|p| p.display().to_string()),
    })
}
