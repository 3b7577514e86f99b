//! A readable per-step timing table (REGIONDROP_PROFILE=1): where a frame's time goes.

use crate::model::plan::{LayerOp, Plan, Step};

/// One line per plan step whose median is at least `min_ms`: index, kind, output shape, median
/// and minimum ms over the runs (the minimum is what A/B comparisons on a shared machine should
/// use), GMAC/s at the median for convolutions (whole-map MACs over the time: for a sparse run a
/// dense-equivalent rate), the ONNX node; then the totals.
pub fn table(plan: &Plan, times: &[Vec<f64>], min_ms: f64) -> String {
    let mut out = String::from(
        "step  kind                                  output            median      min   GMAC/s  node\n",
    );
    let (mut total_med, mut total_min) = (0.0, 0.0);
    for (i, (step, t)) in plan.steps.iter().zip(times).enumerate() {
        let (med, min) = median_min(t);
        total_med += med;
        total_min += min;
        if med < min_ms {
            continue;
        }
        let (kind, shape, gmacs, name) = describe(plan, step, med);
        out.push_str(&format!(
            "{i:4}  {kind:<37} {shape:<15} {med:8.3} {min:8.3} {gmacs:>8}  {name}\n"
        ));
    }
    out.push_str(&format!(
        "total median {total_med:.3} ms, min {total_min:.3} ms per run over {} steps\n",
        times.len()
    ));
    out
}

/// One line per phase: median and minimum ms over its samples, and the number of samples.
pub fn phases(phases: &[(&str, Vec<f64>)]) -> String {
    let mut out = String::new();
    for (name, t) in phases {
        let (med, min) = median_min(t);
        out.push_str(&format!(
            "{med:8.3} {min:8.3}  {name} ({} frames)\n",
            t.len()
        ));
    }
    out
}

fn median_min(t: &[f64]) -> (f64, f64) {
    if t.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = t.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

fn describe(plan: &Plan, step: &Step, ms: f64) -> (String, String, String, String) {
    match step {
        Step::Layer(l) => {
            let b = &plan.buffers[l.output.buf];
            let shape = format!("{}x{}x{}", l.output.c, b.h, b.w);
            let kind = match &l.op {
                LayerOp::Conv(c) => {
                    let dw = if c.depthwise() { " dw" } else { "" };
                    format!(
                        "conv {}x{}/{} {}->{}{dw} {:?}",
                        c.kh, c.kw, c.sh, c.cin, c.cout, c.act
                    )
                }
                LayerOp::Pool(p) => format!("pool {:?} {}x{}/{}", p.kind, p.kh, p.kw, p.sh),
                LayerOp::Resize { .. } => "resize".into(),
                LayerOp::Affine { act, .. } => format!("affine {act:?}"),
                LayerOp::Unary(a) => format!("unary {a:?}"),
                LayerOp::Binary { op, act, .. } => format!("binary {op:?} {act:?}"),
                LayerOp::Gather { .. } => "gather".into(),
            };
            let gmacs = if matches!(l.op, LayerOp::Conv(_)) && ms > 0.0 {
                format!("{:.1}", l.macs / (ms * 1e6))
            } else {
                String::new()
            };
            (kind, shape, gmacs, l.name.clone())
        }
        Step::GlobalPool { input, .. } => (
            "global pool".into(),
            view_shape(plan, input.buf, input.c),
            String::new(),
            String::new(),
        ),
        Step::Export { input, .. } => (
            "export".into(),
            view_shape(plan, input.buf, input.c),
            String::new(),
            String::new(),
        ),
        Step::Rearrange { index, .. } => (
            "rearrange".into(),
            format!("{:?}", index.shape),
            String::new(),
            String::new(),
        ),
        Step::Generic { node, .. } => (
            format!("generic {}", node.op),
            String::new(),
            String::new(),
            node.name.clone(),
        ),
    }
}

fn view_shape(plan: &Plan, buf: usize, c: usize) -> String {
    let b = &plan.buffers[buf];
    format!("{c}x{}x{}", b.h, b.w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_lines_give_median_min_and_count() {
        let p = [("upload", vec![3.0, 1.0, 2.0]), ("empty", vec![])];
        let text = phases(&p);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let f: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(&f[..3], &["2.000", "1.000", "upload"]);
        assert!(lines[0].ends_with("(3 frames)"));
        assert!(lines[1].contains("empty (0 frames)"));
    }
}
