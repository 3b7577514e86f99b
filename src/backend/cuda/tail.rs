//! Which results of the plan's dense tail stay on the device. A Rearrange step whose input slot
//! was last written by a device result (Export, GlobalPool or another device step) runs as a
//! gather kernel on that result; with the device tail on, so does every Generic step whose device
//! form ([`DeviceForm`]) reads only device results and constants. A device result is downloaded
//! into its slot only where the host reads that slot (a graph output, a host step's input, a
//! Binary layer's slot operand that no device step wrote).

use super::geometry::{act_code, binop_code};
use super::layers::TailPtrs;
use crate::backend::generic::{DeviceForm, GenericStep};
use crate::model::plan::{LayerOp, Operand, Plan, Step};

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceTail {
    /// Per step: for a Rearrange run on the device, the step whose device result it reads.
    pub rearrange_from: Vec<Option<usize>>,
    /// Per step: for a Generic step run on the device, the slot it writes.
    pub generic_out: Vec<Option<usize>>,
    /// Per slot: the device step that writes it, where one does.
    pub writer: Vec<Option<usize>>,
    /// Per step: its device result is downloaded into its slot after the step.
    pub download: Vec<bool>,
    /// Per step: downloaded only because its slot is a graph output (no host step reads it), so
    /// the download can wait until the outputs are asked for.
    pub output_only: Vec<bool>,
    /// Per step: an Export whose result only one device Rearrange reads. That Rearrange reads
    /// the exported feature buffer directly, through its index composed with the export's
    /// layout ([`DeviceTail::rearrange_index`]); the Export launches nothing and has no result.
    pub folded: Vec<bool>,
}

/// Where a device Rearrange step reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RearrangeSource {
    /// The device result of this step.
    Result(usize),
    /// This feature buffer (a folded Export's input), indexed from its start.
    Buffer(usize),
}

impl DeviceTail {
    /// The decisions for `plan` and its prepared Generic steps (`generic`, indexed like the
    /// steps); `device_tail` puts the Generic steps that can run there on the device, else they
    /// all run on the host. A host Generic step makes the slots it reads host-read (a composed
    /// copy reads its sources, not its plan inputs).
    pub fn of(plan: &Plan, generic: &[Option<GenericStep>], device_tail: bool) -> Self {
        let n = plan.steps.len();
        let mut t = DeviceTail {
            rearrange_from: vec![None; n],
            generic_out: vec![None; n],
            writer: vec![None; plan.slot_shapes.len()],
            download: vec![false; n],
            output_only: vec![false; n],
            folded: vec![false; n],
        };
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::GlobalPool { slot, .. } | Step::Export { slot, .. } => {
                    t.writer[*slot] = Some(si)
                }
                Step::Rearrange {
                    input,
                    index,
                    output,
                } => {
                    let from = t.writer[*input].filter(|&w| {
                        let len = t.len_of(plan, w);
                        index.data.iter().all(|&i| i >= 0.0 && (i as usize) < len)
                    });
                    t.rearrange_from[si] = from;
                    t.writer[*output] = from.map(|_| si);
                }
                Step::Generic { outputs, .. } => {
                    let g = generic[si].as_ref().filter(|_| device_tail);
                    let on_device = g.and_then(|g| {
                        let form = g.device_form()?;
                        let readable = |s: usize| plan.slots[s].is_some() || t.writer[s].is_some();
                        form.reads()
                            .into_iter()
                            .all(readable)
                            .then(|| g.written_output())?
                    });
                    for &o in outputs {
                        t.writer[o] = None;
                    }
                    // The tail kernels index with 32-bit ints.
                    let fits = |o: usize| {
                        plan.slot_shapes[o].iter().product::<usize>() <= i32::MAX as usize
                    };
                    if let Some(o) = on_device.filter(|&o| fits(o)) {
                        t.generic_out[si] = Some(o);
                        t.writer[o] = Some(si);
                    }
                }
                Step::Layer(_) => {}
            }
        }
        // Slots the host steps read (graph outputs aside).
        let mut host_reads = vec![false; plan.slot_shapes.len()];
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::Rearrange { input, .. } if t.rearrange_from[si].is_none() => {
                    host_reads[*input] = true
                }
                Step::Generic { inputs, .. } if t.generic_out[si].is_none() => {
                    // What the host step reads after its copies were composed (not always its
                    // inputs in the plan); unprepared, all its inputs.
                    let reads = generic[si].as_ref().map_or_else(
                        || inputs.iter().flatten().copied().collect(),
                        GenericStep::reads,
                    );
                    for i in reads {
                        host_reads[i] = true;
                    }
                }
                Step::Layer(l) => {
                    // A slot operand a device step wrote is copied on the device.
                    if let LayerOp::Binary {
                        rhs: Operand::Slot(s),
                        ..
                    } = &l.op
                    {
                        host_reads[*s] |= t.writer[*s].is_none();
                    }
                }
                _ => {}
            }
        }
        let mut is_output = vec![false; plan.slot_shapes.len()];
        for (_, s) in &plan.outputs {
            is_output[*s] = true;
        }
        // An Export read by exactly one step, a device Rearrange, and by nothing on the host.
        let readers = slot_readers(plan, generic);
        for si in 0..n {
            let Some(from) = t.rearrange_from[si] else {
                continue;
            };
            let Step::Export { slot, .. } = &plan.steps[from] else {
                continue;
            };
            t.folded[from] = readers[*slot] == 1 && !host_reads[*slot] && !is_output[*slot];
        }
        for si in (0..n).filter(|&si| !t.folded[si]) {
            let Some(s) = t.slot_of(plan, si).filter(|_| t.on_device(plan, si)) else {
                continue;
            };
            t.download[si] = host_reads[s] || is_output[s];
            t.output_only[si] = is_output[s] && !host_reads[s];
        }
        t
    }

    /// Where device Rearrange step `si` reads (None: it runs on the host).
    pub fn rearrange_source(&self, plan: &Plan, si: usize) -> Option<RearrangeSource> {
        let from = self.rearrange_from[si]?;
        Some(match &plan.steps[from] {
            Step::Export { input, .. } if self.folded[from] => RearrangeSource::Buffer(input.buf),
            _ => RearrangeSource::Result(from),
        })
    }

    /// The index device Rearrange step `si` gathers with: its own, or composed with the layout
    /// of the Export it folded (NCHW value j of the view is NHWC offset p·pitch + c_off + ch of
    /// its buffer, p = j mod h·w, ch = j div h·w).
    pub fn rearrange_index(&self, plan: &Plan, si: usize) -> Vec<u32> {
        let Step::Rearrange { index, .. } = &plan.steps[si] else {
            return Vec::new();
        };
        let exported = self.rearrange_from[si]
            .filter(|&f| self.folded[f])
            .and_then(|f| match &plan.steps[f] {
                Step::Export { input, .. } => Some(input),
                _ => None,
            });
        match exported {
            Some(v) => {
                let b = &plan.buffers[v.buf];
                let hw = b.h * b.w;
                index
                    .data
                    .iter()
                    .map(|&j| {
                        let j = j as usize;
                        ((j % hw) * b.c + v.c_off + j / hw) as u32
                    })
                    .collect()
            }
            None => index.data.iter().map(|&i| i as u32).collect(),
        }
    }

    /// The device step whose result holds graph output `i` (None: the host computes it).
    pub fn output_writer(&self, plan: &Plan, i: usize) -> Option<usize> {
        self.writer[plan.outputs.get(i)?.1]
    }

    /// Whether step `si` has a result on the device.
    pub fn on_device(&self, plan: &Plan, si: usize) -> bool {
        match &plan.steps[si] {
            Step::Export { .. } => !self.folded[si],
            Step::GlobalPool { .. } => true,
            Step::Rearrange { .. } => self.rearrange_from[si].is_some(),
            Step::Generic { .. } => self.generic_out[si].is_some(),
            Step::Layer(_) => false,
        }
    }

    /// The slot step `si`'s device result belongs in.
    pub fn slot_of(&self, plan: &Plan, si: usize) -> Option<usize> {
        match &plan.steps[si] {
            Step::GlobalPool { slot, .. } | Step::Export { slot, .. } => Some(*slot),
            Step::Rearrange { output, .. } => Some(*output),
            Step::Generic { .. } => self.generic_out[si],
            Step::Layer(_) => None,
        }
    }

    /// Number of values of step `si`'s device result (0: the step has none).
    pub fn len_of(&self, plan: &Plan, si: usize) -> usize {
        match &plan.steps[si] {
            Step::GlobalPool { input, .. } => input.c,
            Step::Export { input, .. } => {
                let b = &plan.buffers[input.buf];
                input.c * b.h * b.w
            }
            Step::Rearrange { index, .. } => index.data.len(),
            Step::Generic { .. } => {
                self.generic_out[si].map_or(0, |o| plan.slot_shapes[o].iter().product())
            }
            Step::Layer(_) => 0,
        }
    }
}

/// How many steps read each slot (a prepared Generic step: what it reads after its copies were
/// composed; unprepared, all its inputs).
fn slot_readers(plan: &Plan, generic: &[Option<GenericStep>]) -> Vec<usize> {
    let mut n = vec![0; plan.slot_shapes.len()];
    for (si, step) in plan.steps.iter().enumerate() {
        let reads: Vec<usize> = match step {
            Step::Rearrange { input, .. } => vec![*input],
            Step::Generic { inputs, .. } => generic[si].as_ref().map_or_else(
                || inputs.iter().flatten().copied().collect(),
                GenericStep::reads,
            ),
            Step::Layer(l) => match &l.op {
                LayerOp::Binary {
                    rhs: Operand::Slot(s),
                    ..
                } => vec![*s],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        for s in reads {
            n[s] += 1;
        }
    }
    n
}

/// What a device Generic step uploads once besides its result: u32 arrays (copy runs' output
/// starts, source starts and table indices; or the broadcast maps) and the slots its copy runs'
/// pointer table lists.
pub struct TailUpload {
    pub u32s: Vec<Vec<u32>>,
    pub table_slots: Vec<usize>,
}

impl TailUpload {
    pub fn of(form: &DeviceForm) -> Self {
        match form {
            DeviceForm::Copy { runs } => {
                let table_slots = form.reads();
                let index =
                    |s: u32| table_slots.iter().position(|&t| t == s as usize).unwrap() as u32;
                TailUpload {
                    u32s: vec![
                        runs.iter().map(|r| r[0]).collect(),
                        runs.iter().map(|r| r[1]).collect(),
                        runs.iter().map(|r| index(r[2])).collect(),
                    ],
                    table_slots,
                }
            }
            DeviceForm::Binary { a_map, b_map, .. } => TailUpload {
                u32s: [a_map, b_map]
                    .iter()
                    .map(|m| m.map_or(Vec::new(), <[u32]>::to_vec))
                    .collect(),
                table_slots: Vec::new(),
            },
            _ => TailUpload {
                u32s: Vec::new(),
                table_slots: Vec::new(),
            },
        }
    }
}

/// The launch addresses of a device Generic step: `slot(s)` is slot `s`'s device address,
/// `u32s` the addresses of its [`TailUpload`] arrays (in order), `table` that of its uploaded
/// pointer table, `out` that of its result of `n` values.
pub fn tail_ptrs(
    form: &DeviceForm,
    slot: impl Fn(usize) -> u64,
    u32s: &[u64],
    table: u64,
    out: u64,
    n: usize,
) -> TailPtrs {
    match form {
        DeviceForm::Copy { runs } => TailPtrs::Copy {
            table,
            dst: u32s[0],
            src: u32s[1],
            slot: u32s[2],
            runs: runs.len(),
            out,
            n,
        },
        DeviceForm::Act { input, act } => TailPtrs::Act {
            x: slot(*input),
            act: act_code(*act),
            out,
            n,
        },
        DeviceForm::Binary {
            a,
            b,
            op,
            a_map,
            b_map,
        } => TailPtrs::Binary {
            a: slot(*a),
            a_map: a_map.map(|_| u32s[0]),
            b: slot(*b),
            b_map: b_map.map(|_| u32s[1]),
            op: binop_code(*op),
            out,
            n,
        },
        DeviceForm::Softmax { input, extents } => TailPtrs::Softmax {
            x: slot(*input),
            extents: *extents,
            out,
        },
        DeviceForm::Conv { x, w, b, geom: g } => TailPtrs::Conv {
            x: slot(*x),
            w: slot(*w),
            b: b.map(&slot),
            g: [
                g.c as i32,
                g.h as i32,
                g.w as i32,
                g.co as i32,
                g.cig as i32,
                g.kh as i32,
                g.kw as i32,
                g.group as i32,
                g.strides[0] as i32,
                g.strides[1] as i32,
                g.dilations[0] as i32,
                g.dilations[1] as i32,
                g.pads[0] as i32,
                g.pads[1] as i32,
                g.oh as i32,
                g.ow as i32,
            ],
            out,
            n,
        },
    }
}
