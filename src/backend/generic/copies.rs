//! The Generic steps that only move values (Reshape, Transpose, Slice, Split, Concat, Gather
//! with constant indices, ...) as copy runs: found once by evaluating the op on inputs whose values
//! are their own element numbers, composed through chains of such steps, and skipped where nothing
//! reads their output.

use rayon::prelude::*;

use super::{GenericStep, Kernel, CHUNK};
use crate::backend::cpu::feature::SharedMut;
use crate::model::eval;
use crate::model::onnx::Node;
use crate::model::plan::{Plan, Step};
use crate::tensor::{DType, Tensor};

/// Data-movement ops, and which of their inputs carry data (the others must be constants).
pub(super) fn moved_inputs(op: &str, n_inputs: usize) -> Option<std::ops::Range<usize>> {
    match op {
        "Concat" => Some(0..n_inputs),
        "Identity" | "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Transpose" | "Slice"
        | "Split" | "Gather" | "Expand" => Some(0..1),
        _ => None,
    }
}

/// Values exactly representable in f32, so element numbers survive the trip through `eval`.
const MAX_ENCODED: usize = 1 << 24;

/// out.data[dst..dst + len] = slots[slot].data[src..src + len].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    slot: u32,
    src: u32,
    dst: u32,
    len: u32,
}

/// The runs of one output, in output order (they cover it without gaps), and the groups of
/// consecutive runs (about CHUNK elements each) that are copied in parallel.
pub(super) struct MoveOut {
    runs: Vec<Run>,
    groups: Vec<std::ops::Range<usize>>,
}

impl MoveOut {
    pub(super) fn new(runs: Vec<Run>) -> Self {
        // Long runs are cut into CHUNK pieces, then pieces are grouped up to CHUNK elements.
        let mut pieces = Vec::with_capacity(runs.len());
        for r in runs {
            let mut done = 0;
            while done < r.len {
                let len = (r.len - done).min(CHUNK as u32);
                pieces.push(Run {
                    src: r.src + done,
                    dst: r.dst + done,
                    len,
                    ..r
                });
                done += len;
            }
        }
        let mut groups = Vec::new();
        let (mut start, mut acc) = (0, 0usize);
        for (i, p) in pieces.iter().enumerate() {
            acc += p.len as usize;
            if acc >= CHUNK {
                groups.push(start..i + 1);
                (start, acc) = (i + 1, 0);
            }
        }
        if start < pieces.len() {
            groups.push(start..pieces.len());
        }
        MoveOut {
            runs: pieces,
            groups,
        }
    }
}

impl MoveOut {
    /// The runs as `[dst, src, source slot]`.
    pub(super) fn flat_runs(&self) -> Vec<[u32; 3]> {
        self.runs.iter().map(|r| [r.dst, r.src, r.slot]).collect()
    }

    /// out = the runs' values read from `slots`, the groups in parallel where there are several.
    pub(super) fn copy_into(&self, out: &mut [f32], slots: &[Tensor]) {
        // The runs were laid out for the prepared shapes; the raw writes below rely on it.
        assert!(self
            .runs
            .last()
            .is_none_or(|r| (r.dst + r.len) as usize <= out.len()));
        let dst = SharedMut(out.as_mut_ptr());
        let copy = |g: &std::ops::Range<usize>| {
            for r in &self.runs[g.clone()] {
                let len = r.len as usize;
                // SAFETY: the runs cover the output once (each element written by one run), and
                // a run belongs to one group.
                let to = unsafe { dst.slice(r.dst as usize, len) };
                to.copy_from_slice(&slots[r.slot as usize].data[r.src as usize..][..len]);
            }
        };
        match &self.groups[..] {
            [g] => copy(g),
            gs => gs.par_iter().for_each(copy),
        }
    }
}

/// Copies read through copies: a copy step's runs that read the output of an earlier copy step
/// are rewritten to read that step's sources, so a chain (Concat → Split → Reshape → Transpose)
/// copies each value once. Then every copy output that nothing reads any more (no later step,
/// host-read slot or graph output) is skipped.
pub(super) fn compose_moves(plan: &Plan, steps: &mut [Option<GenericStep>]) {
    // The copy step and output that wrote each slot (None: anything else, or written twice).
    let mut producer: Vec<Option<(usize, usize)>> = vec![None; plan.slots.len()];
    let mut writes = vec![0u32; plan.slots.len()];
    for step in &plan.steps {
        let written: &[usize] = match step {
            Step::Generic { outputs, .. } => outputs,
            Step::Rearrange { output, .. } => std::slice::from_ref(output),
            Step::GlobalPool { slot, .. } | Step::Export { slot, .. } => std::slice::from_ref(slot),
            Step::Layer(_) => &[],
        };
        for &o in written {
            writes[o] += 1;
        }
    }
    for si in 0..steps.len() {
        let Some(Kernel::Move(outs)) = steps[si].as_ref().map(|g| &g.kernel) else {
            continue;
        };
        let composed: Vec<Vec<Run>> = outs
            .iter()
            .map(|mv| {
                let mut runs: Vec<Run> = Vec::with_capacity(mv.runs.len());
                for r in &mv.runs {
                    let through = producer[r.slot as usize].and_then(|(p, k)| match &steps[p] {
                        Some(GenericStep {
                            kernel: Kernel::Move(po),
                            ..
                        }) => Some(&po[k].runs),
                        _ => None,
                    });
                    match through {
                        Some(pruns) => compose_run(*r, pruns, &mut runs),
                        None => push_run(&mut runs, *r),
                    }
                }
                runs
            })
            .collect();
        let g = steps[si].as_mut().expect("a copy step");
        g.kernel = Kernel::Move(composed.into_iter().map(MoveOut::new).collect());
        for (k, &o) in g.outputs.iter().enumerate() {
            if writes[o] == 1 {
                producer[o] = Some((si, k));
            }
        }
    }
    // Liveness, from the last step back: what the host, the layers and the outputs read is live.
    let mut read = vec![false; plan.slots.len()];
    for (_, s) in &plan.outputs {
        read[*s] = true;
    }
    for step in &plan.steps {
        match step {
            Step::Rearrange { input, .. } => read[*input] = true,
            Step::Layer(l) => {
                if let crate::model::plan::LayerOp::Binary {
                    rhs: crate::model::plan::Operand::Slot(s),
                    ..
                } = &l.op
                {
                    read[*s] = true;
                }
            }
            _ => {}
        }
    }
    for g in steps.iter_mut().rev().flatten() {
        match &g.kernel {
            Kernel::Move(outs) => {
                for (k, mv) in outs.iter().enumerate() {
                    g.live[k] = read[g.outputs[k]];
                    if g.live[k] {
                        for r in &mv.runs {
                            read[r.slot as usize] = true;
                        }
                    }
                }
            }
            _ => {
                for &i in g.inputs.iter().flatten() {
                    read[i] = true;
                }
            }
        }
    }
}

/// Appends `r`, merged into the last run where it continues it.
fn push_run(runs: &mut Vec<Run>, r: Run) {
    match runs.last_mut() {
        Some(l) if l.slot == r.slot && l.src + l.len == r.src && l.dst + l.len == r.dst => {
            l.len += r.len
        }
        _ => runs.push(r),
    }
}

/// Appends run `r` (which reads the output that `pruns` write) as runs reading `pruns`' sources.
fn compose_run(r: Run, pruns: &[Run], out: &mut Vec<Run>) {
    let (lo, hi) = (r.src, r.src + r.len);
    // pruns cover their output in order: the first run ending past `lo`.
    let first = pruns.partition_point(|p| p.dst + p.len <= lo);
    for p in &pruns[first..] {
        if p.dst >= hi {
            break;
        }
        let (a, b) = (lo.max(p.dst), hi.min(p.dst + p.len));
        push_run(
            out,
            Run {
                slot: p.slot,
                src: p.src + (a - p.dst),
                dst: r.dst + (a - lo),
                len: b - a,
            },
        );
    }
}

/// Where every output element of a data-movement op comes from, as copy runs: the data inputs
/// are numbered consecutively (input k's element i holds base_k + i) and evaluated.
pub(super) fn move_runs(
    node: &Node,
    inputs: &[Option<usize>],
    n_outputs: usize,
    args: &[Option<&Tensor>],
    moved: std::ops::Range<usize>,
    constant: &[bool],
) -> Option<Vec<Vec<Run>>> {
    // Parameters (shapes, axes, indices) must be constants: the runs are fixed.
    let params_fixed = inputs
        .iter()
        .enumerate()
        .all(|(i, s)| moved.contains(&i) || s.is_none_or(|s| constant[s]));
    if !params_fixed {
        return None;
    }
    let mut sources = Vec::new(); // (slot, base, len)
    let mut numbered: Vec<Option<Tensor>> = Vec::with_capacity(inputs.len());
    let mut next = 0usize;
    for (i, arg) in args.iter().enumerate() {
        numbered.push(match (moved.contains(&i), arg) {
            (true, Some(t)) => {
                sources.push((inputs[i]?, next, t.len()));
                let data = (next..next + t.len()).map(|v| v as f32).collect();
                next += t.len();
                Some(Tensor {
                    shape: t.shape.clone(),
                    data,
                    dtype: DType::Float,
                })
            }
            _ => None,
        });
    }
    if next > MAX_ENCODED {
        return None;
    }
    let args: Vec<Option<&Tensor>> = numbered
        .iter()
        .zip(args)
        .map(|(n, a)| n.as_ref().or(*a))
        .collect();
    let results = eval::eval(node, &args).ok()?;
    results
        .iter()
        .take(n_outputs)
        .map(|t| {
            let mut runs: Vec<Run> = Vec::new();
            for (dst, &v) in t.data.iter().enumerate() {
                let v = v as usize;
                let &(slot, base, _) = sources.iter().find(|&&(_, b, n)| v >= b && v < b + n)?;
                let (slot, src, dst) = (slot as u32, (v - base) as u32, dst as u32);
                match runs.last_mut() {
                    Some(r) if r.slot == slot && r.src + r.len == src && r.dst + r.len == dst => {
                        r.len += 1
                    }
                    _ => runs.push(Run {
                        slot,
                        src,
                        dst,
                        len: 1,
                    }),
                }
            }
            Some(runs)
        })
        .collect()
}
