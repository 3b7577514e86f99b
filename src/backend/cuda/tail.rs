//! Which results of the plan's dense tail stay on the device. A Rearrange step whose input slot
//! was last written by a device result (Export, GlobalPool or another such Rearrange) runs as a
//! gather kernel on that result; a device result is downloaded into its slot only where the host
//! reads that slot (a graph output, a host step's input, a Binary layer's slot operand).

use crate::model::plan::{LayerOp, Operand, Plan, Step};

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceTail {
    /// Per step: for a Rearrange run on the device, the step whose device result it reads.
    pub rearrange_from: Vec<Option<usize>>,
    /// Per step: its device result is downloaded into its slot after the step.
    pub download: Vec<bool>,
}

/// Number of values of step `si`'s device result (0: the step has none).
pub fn result_len(plan: &Plan, si: usize) -> usize {
    match &plan.steps[si] {
        Step::GlobalPool { input, .. } => input.c,
        Step::Export { input, .. } => {
            let b = &plan.buffers[input.buf];
            input.c * b.h * b.w
        }
        Step::Rearrange { index, .. } => index.data.len(),
        _ => 0,
    }
}

/// The slot a device result belongs in.
pub fn result_slot(step: &Step) -> Option<usize> {
    match step {
        Step::GlobalPool { slot, .. } | Step::Export { slot, .. } => Some(*slot),
        Step::Rearrange { output, .. } => Some(*output),
        _ => None,
    }
}

impl DeviceTail {
    pub fn of(plan: &Plan) -> Self {
        let n = plan.steps.len();
        let mut rearrange_from = vec![None; n];
        // The step whose device result last wrote each slot (None: the host wrote it).
        let mut writer: Vec<Option<usize>> = vec![None; plan.slot_shapes.len()];
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::GlobalPool { slot, .. } | Step::Export { slot, .. } => {
                    writer[*slot] = Some(si)
                }
                Step::Rearrange {
                    input,
                    index,
                    output,
                } => {
                    let from = writer[*input].filter(|&w| {
                        let len = result_len(plan, w);
                        index.data.iter().all(|&i| i >= 0.0 && (i as usize) < len)
                    });
                    rearrange_from[si] = from;
                    writer[*output] = from.map(|_| si);
                }
                Step::Generic { outputs, .. } => {
                    for &o in outputs {
                        writer[o] = None;
                    }
                }
                Step::Layer(_) => {}
            }
        }
        let mut host_reads = vec![false; plan.slot_shapes.len()];
        for (_, s) in &plan.outputs {
            host_reads[*s] = true;
        }
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::Rearrange { input, .. } if rearrange_from[si].is_none() => {
                    host_reads[*input] = true
                }
                Step::Generic { inputs, .. } => {
                    for &i in inputs.iter().flatten() {
                        host_reads[i] = true;
                    }
                }
                Step::Layer(l) => {
                    if let LayerOp::Binary {
                        rhs: Operand::Slot(s),
                        ..
                    } = &l.op
                    {
                        host_reads[*s] = true;
                    }
                }
                _ => {}
            }
        }
        let download = plan
            .steps
            .iter()
            .enumerate()
            .map(|(si, step)| {
                let on_device =
                    !matches!(step, Step::Rearrange { .. }) || rearrange_from[si].is_some();
                on_device && result_slot(step).is_some_and(|s| host_reads[s])
            })
            .collect();
        DeviceTail {
            rearrange_from,
            download,
        }
    }
}
