//! The threshold trade-off plot: speedup (left axis) and agreement mAP@0.5 (right axis) against
//! the change threshold, with the target agreement and the picked threshold marked.

use std::path::Path;

use gstregiondrop::draw::{text_width, Image, Rgb, BLACK, GLYPH_H, WHITE};

pub struct Point {
    pub threshold: f64,
    pub speedup: f64,
    pub agreement: f64,
}

const SPEEDUP: Rgb = [31, 119, 180];
const AGREEMENT: Rgb = [230, 110, 20];
const PICK: Rgb = [44, 160, 44];
const GRID: Rgb = [225, 225, 225];

pub fn plot_sweep(
    path: &Path,
    title: &str,
    pts: &[Point],
    target: Option<f64>,
    pick: Option<f64>,
    agreement_label: &str,
) -> Result<(), String> {
    let (w, h) = (900i64, 560i64);
    let (left, right, top, bottom) = (90i64, 110i64, 70i64, 80i64);
    let mut c = Image::new(w as usize, h as usize, WHITE);
    let (pw, ph) = ((w - left - right) as f64, (h - top - bottom) as f64);

    let xmax = pts.iter().map(|p| p.threshold).fold(1.0, f64::max);
    let xmax = nice_ceil(xmax);
    let smax = pts
        .iter()
        .map(|p| p.speedup)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let smax = nice_ceil(smax * 1.1);
    let px = |x: f64| left as f64 + x / xmax * pw;
    let py_s = |s: f64| top as f64 + ph - s / smax * ph;
    let py_a = |a: f64| top as f64 + ph - a.clamp(0.0, 1.0) * ph;

    // Grid and ticks: 5 divisions on each axis.
    for k in 0..=5 {
        let f = k as f64 / 5.0;
        let y = top as f64 + ph - f * ph;
        c.line(left as f64, y, (w - right) as f64, y, GRID, 1, 0);
        let sl = fmt_tick(f * smax);
        c.text(
            left - 10 - text_width(&sl, 2),
            y as i64 - GLYPH_H,
            &sl,
            SPEEDUP,
            2,
        );
        let al = format!("{:.1}", f);
        c.text(w - right + 10, y as i64 - GLYPH_H, &al, AGREEMENT, 2);
        let x = left as f64 + f * pw;
        c.line(x, top as f64, x, (top as f64) + ph, GRID, 1, 0);
        let xl = fmt_tick(f * xmax);
        c.text(
            x as i64 - text_width(&xl, 2) / 2,
            h - bottom + 10,
            &xl,
            BLACK,
            2,
        );
    }
    // Axes.
    c.rect_outline(left, top, w - right + 1, h - bottom + 1, BLACK, 2);

    // Target agreement (dashed) and the picked threshold.
    if let Some(t) = target {
        let y = py_a(t);
        c.line(left as f64, y, (w - right) as f64, y, AGREEMENT, 1, 6);
        let l = format!("target {t:.2}");
        c.text(left + 8, y as i64 + 4, &l, AGREEMENT, 2);
    }
    if let Some(p) = pick {
        let x = px(p);
        c.line(x, top as f64, x, (top as f64) + ph, PICK, 2, 8);
        let l = format!("pick {}", fmt_tick(p));
        let lx = if x > left as f64 + pw / 2.0 {
            x as i64 - 6 - text_width(&l, 2)
        } else {
            x as i64 + 6
        };
        c.text(lx, top + ph as i64 / 2, &l, PICK, 2);
    }

    // Series: lines and square markers.
    for (colour, f) in [
        (
            SPEEDUP,
            &(|p: &Point| py_s(p.speedup)) as &dyn Fn(&Point) -> f64,
        ),
        (
            AGREEMENT,
            &(|p: &Point| py_a(p.agreement)) as &dyn Fn(&Point) -> f64,
        ),
    ] {
        let finite: Vec<&Point> = pts.iter().filter(|p| f(p).is_finite()).collect();
        for pair in finite.windows(2) {
            c.line(
                px(pair[0].threshold),
                f(pair[0]),
                px(pair[1].threshold),
                f(pair[1]),
                colour,
                3,
                0,
            );
        }
        for p in &finite {
            let (x, y) = (px(p.threshold) as i64, f(p) as i64);
            c.fill_rect(x - 4, y - 4, x + 5, y + 5, colour);
        }
    }

    // Labels.
    let tw = text_width(title, 2);
    c.text((w - tw) / 2, 14, title, BLACK, 2);
    let xl = "change threshold (pixel units)";
    c.text((w - text_width(xl, 2)) / 2, h - 40, xl, BLACK, 2);
    c.text(10, 44, "speedup (x)", SPEEDUP, 2);
    let al = agreement_label;
    c.text(w - 10 - text_width(al, 2), 44, al, AGREEMENT, 2);
    c.save_png(path)
}

/// 1, 2, 2.5, 5 × 10^k at or above `v`.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * e >= v - 1e-12 {
            return m * e;
        }
    }
    10.0 * e
}

fn fmt_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}
