//! The plan's Generic steps (the detection head's tail ops on NCHW tensor slots), prepared once per
//! backend so that a frame runs them into the slots' own storage without allocating:
//! - data-movement ops (Reshape, Transpose, Slice, Split, Concat, Gather with constant indices,
//!   ...) become copy runs, found by evaluating the op once with `model::eval` on inputs whose
//!   values are their own element numbers — the reference semantics decide where each value goes
//!   — and composed through chains of such steps (`copies`);
//! - element-wise ops, Softmax and the tail's small convolutions keep their geometry and
//!   broadcast maps, and use the same per-element functions as `model::eval`;
//! - anything else runs through `model::eval`, which allocates its results.
//!
//! The kernels split their outputs into chunks run in parallel (rayon: the CPU backend's pool, or
//! the global one on the CUDA backend's host), compiled for the widest vector instructions.

use rayon::prelude::*;

mod copies;

use copies::{compose_moves, move_runs, moved_inputs, MoveOut};

use crate::backend::cpu::feature::SharedMut;
use crate::error::{Error, Result};
use crate::model::act::Act;
use crate::model::eval::{self, ConvGeom, Dest};
use crate::model::onnx::Node;
use crate::model::plan::{BinOp, Plan, Step};
use crate::tensor::{broadcast_index_map, DType, Tensor};

/// Elements of one parallel task: small enough to share a frame's work among the threads, large
/// enough that a task costs more than handing it out.
const CHUNK: usize = 16 * 1024;

/// A binary op: one of the layers' four (its function inlined into the loop), or another
/// element-wise function of the evaluator.
#[derive(Clone, Copy)]
enum BinFn {
    Common(BinOp),
    Other(fn(f32, f32) -> f32),
}

impl BinFn {
    fn of(op: &str) -> Option<Self> {
        Some(match BinOp::from_onnx(op) {
            Some(b) => BinFn::Common(b),
            None => BinFn::Other(eval::binary_fn(op)?),
        })
    }
}

/// An output array that parallel tasks write in disjoint spans.
struct Disjoint(SharedMut);

impl Dest for Disjoint {
    #[inline(always)]
    fn span(&mut self, off: usize, len: usize) -> &mut [f32] {
        // SAFETY: every caller below hands each task spans no other task writes, inside the
        // output array the pointer was taken from.
        unsafe { self.0.slice(off, len) }
    }
}

enum Kernel {
    /// One list of runs per output.
    Move(Vec<MoveOut>),
    Act {
        input: usize,
        act: Act,
    },
    Map {
        input: usize,
        f: fn(f32) -> f32,
    },
    /// out[j] = f(a[a_map[j]], b[b_map[j]]); a map is None where the input has the output's shape.
    Binary {
        a: usize,
        b: usize,
        f: BinFn,
        trunc: bool,
        a_map: Option<Vec<u32>>,
        b_map: Option<Vec<u32>>,
    },
    Softmax {
        input: usize,
        extents: (usize, usize, usize),
    },
    Conv {
        x: usize,
        w: usize,
        b: Option<usize>,
        geom: ConvGeom,
    },
    /// The reference evaluator (allocates its outputs).
    Eval,
}

/// One Generic step, ready to run.
pub struct GenericStep {
    node: Node,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    /// The outputs' element types, as the reference evaluator gives them.
    dtypes: Vec<DType>,
    kernel: Kernel,
    /// Per output: whether a frame writes it (copies that only fed other copies are composed
    /// into their readers and skipped, see `compose_moves`).
    live: Vec<bool>,
}

/// Prepares every Generic step of `plan` (None for the other steps).
pub fn prepare(plan: &Plan) -> Vec<Option<GenericStep>> {
    // The tail is evaluated once on stand-in values (constants, zeros elsewhere) so that each
    // step sees its inputs' real shapes and element types.
    let mut template = plan.initial_slots();
    let constant: Vec<bool> = plan.slots.iter().map(Option::is_some).collect();
    let mut known = vec![true; plan.slots.len()];
    let mut steps = plan
        .steps
        .iter()
        .map(|step| match step {
            Step::Generic {
                node,
                inputs,
                outputs,
            } => Some(GenericStep::new(
                node,
                inputs,
                outputs,
                &mut template,
                &constant,
                &mut known,
            )),
            _ => None,
        })
        .collect::<Vec<_>>();
    compose_moves(plan, &mut steps);
    steps
}

impl GenericStep {
    /// Prepares `node` reading slots `inputs` and writing slots `outputs`; `template` holds
    /// stand-in values of every slot with the real shapes and types (the outputs are updated),
    /// `constant[s]` says whether slot `s` keeps its value from frame to frame, and `known[s]`
    /// whether its stand-in is trustworthy: a step whose stand-in evaluation failed leaves its
    /// outputs unknown, and steps reading them run through the evaluator.
    pub fn new(
        node: &Node,
        inputs: &[Option<usize>],
        outputs: &[usize],
        template: &mut [Tensor],
        constant: &[bool],
        known: &mut [bool],
    ) -> Self {
        let args: Vec<Option<&Tensor>> = inputs.iter().map(|s| s.map(|i| &template[i])).collect();
        let inputs_known = inputs.iter().flatten().all(|&i| known[i]);
        let results = eval::eval(node, &args).ok().filter(|_| inputs_known);
        let fits = results.as_ref().is_some_and(|r| {
            r.len() >= outputs.len()
                && outputs
                    .iter()
                    .zip(r)
                    .all(|(&o, t)| t.shape == template[o].shape)
                && !outputs.iter().any(|o| inputs.contains(&Some(*o)))
        });
        let kernel = if fits {
            let out_shape = &template[outputs[0]].shape;
            kernel_for(node, inputs, outputs.len(), &args, out_shape, constant)
                .unwrap_or(Kernel::Eval)
        } else {
            Kernel::Eval
        };
        let mut dtypes = vec![DType::Float; outputs.len()];
        for &o in outputs {
            known[o] = fits;
        }
        if let Some(results) = results.filter(|_| fits) {
            for ((&o, t), d) in outputs.iter().zip(results).zip(&mut dtypes) {
                *d = t.dtype;
                template[o] = t;
            }
        }
        GenericStep {
            node: node.clone(),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
            live: vec![true; outputs.len()],
            dtypes,
            kernel,
        }
    }
}

fn kernel_for(
    node: &Node,
    inputs: &[Option<usize>],
    n_outputs: usize,
    args: &[Option<&Tensor>],
    out_shape: &[usize],
    constant: &[bool],
) -> Option<Kernel> {
    let op = node.op.as_str();
    let input = |i: usize| inputs.get(i).copied().flatten();
    if let Some(moved) = moved_inputs(op, inputs.len()) {
        return move_runs(node, inputs, n_outputs, args, moved, constant)
            .map(|outs| Kernel::Move(outs.into_iter().map(MoveOut::new).collect()));
    }
    if let Some(act) = Act::from_onnx(op, node) {
        return Some(Kernel::Act {
            input: input(0)?,
            act,
        });
    }
    Some(match op {
        // Bounds given as inputs are taken now, so they must not change from frame to frame.
        "Clip" if inputs.iter().skip(1).flatten().all(|&b| constant[b]) => {
            let (lo, hi) = eval::clip_bounds(node, args);
            Kernel::Act {
                input: input(0)?,
                act: Act::Clip(lo, hi),
            }
        }
        "Cast" => Kernel::Map {
            input: input(0)?,
            f: eval::cast_fn(node).ok()?.0,
        },
        "Softmax" => Kernel::Softmax {
            input: input(0)?,
            extents: eval::softmax_extents(node, &args[0]?.shape).ok()?,
        },
        "Conv" => Kernel::Conv {
            x: input(0)?,
            w: input(1)?,
            b: input(2),
            geom: ConvGeom::new(
                node,
                &args[0]?.shape,
                &args[1]?.shape,
                args.get(2).copied().flatten().map(|b| &b.shape[..]),
            )
            .ok()?,
        },
        _ if inputs.len() == 2 && eval::binary_fn(op).is_some() => {
            let (a, b) = (args[0]?, args[1]?);
            let map = |t: &Tensor| {
                (t.shape != out_shape)
                    .then(|| {
                        broadcast_index_map(&t.shape, out_shape)
                            .into_iter()
                            .map(|i| i as u32)
                    })
                    .map(Iterator::collect)
            };
            Kernel::Binary {
                a: input(0)?,
                b: input(1)?,
                f: BinFn::of(op)?,
                trunc: eval::truncates(op, a.dtype, b.dtype),
                a_map: map(a),
                b_map: map(b),
            }
        }
        _ => Kernel::Map {
            input: input(0)?,
            f: eval::unary_fn(op)?,
        },
    })
}

/// A slot's tensor, moved out (no allocation) so it can be written while other slots are read.
fn take(slots: &mut [Tensor], i: usize) -> Tensor {
    std::mem::replace(
        &mut slots[i],
        Tensor {
            shape: Vec::new(),
            data: Vec::new(),
            dtype: DType::Float,
        },
    )
}

/// Runs `f(first element, chunk)` over CHUNK-element chunks of `out`, in parallel when there
/// are several (a small output stays on the calling thread).
fn chunked(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() <= CHUNK {
        f(0, out)
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, d)| f(i * CHUNK, d));
    }
}

/// out[j] = f(a[a_map[j]], b[b_map[j]]) (truncated where `trunc`), chunks in parallel; inputs of
/// the output's shape (no map) are read straight, so that loop vectorises.
#[inline(always)]
fn binary(
    f: impl Fn(f32, f32) -> f32 + Copy + Sync,
    a: &[f32],
    b: &[f32],
    (a_map, b_map): (Option<&[u32]>, Option<&[u32]>),
    trunc: bool,
    out: &mut [f32],
) {
    chunked(out, |j0, dst| {
        crate::simd::vectorized(
            #[inline(always)]
            || {
                match (a_map, b_map) {
                    (None, None) => {
                        for ((d, &x), &y) in dst.iter_mut().zip(&a[j0..]).zip(&b[j0..]) {
                            *d = f(x, y);
                        }
                    }
                    _ => {
                        let at = |m: Option<&[u32]>, j: usize| m.map_or(j, |m| m[j] as usize);
                        for (k, d) in dst.iter_mut().enumerate() {
                            let j = j0 + k;
                            *d = f(a[at(a_map, j)], b[at(b_map, j)]);
                        }
                    }
                }
                if trunc {
                    for d in dst.iter_mut() {
                        *d = d.trunc();
                    }
                }
            },
        )
    });
}

/// A Generic step in the form the CUDA backend runs it on the device (`backend::cuda::tail`):
/// the same computation as the host kernel, on flat NCHW arrays.
pub enum DeviceForm<'a> {
    /// The step's one written output as copy runs `[dst, src, source slot]`, in output order.
    Copy {
        runs: Vec<[u32; 3]>,
    },
    Act {
        input: usize,
        act: Act,
    },
    Binary {
        a: usize,
        b: usize,
        op: BinOp,
        a_map: Option<&'a [u32]>,
        b_map: Option<&'a [u32]>,
    },
    Softmax {
        input: usize,
        extents: (usize, usize, usize),
    },
    Conv {
        x: usize,
        w: usize,
        b: Option<usize>,
        geom: &'a ConvGeom,
    },
}

/// The source slots of copy runs `[dst, src, slot]`, each once, in slot order.
fn distinct_sources(runs: &[[u32; 3]]) -> Vec<usize> {
    let mut v: Vec<usize> = runs.iter().map(|r| r[2] as usize).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl DeviceForm<'_> {
    /// The slots the step reads.
    pub fn reads(&self) -> Vec<usize> {
        match self {
            DeviceForm::Copy { runs } => distinct_sources(runs),
            DeviceForm::Act { input, .. } | DeviceForm::Softmax { input, .. } => vec![*input],
            DeviceForm::Binary { a, b, .. } => vec![*a, *b],
            DeviceForm::Conv { x, w, b, .. } => {
                [Some(*x), Some(*w), *b].into_iter().flatten().collect()
            }
        }
    }
}

impl GenericStep {
    /// The slot of the one output a frame writes (None where it writes several).
    pub fn written_output(&self) -> Option<usize> {
        let mut live = self.outputs.iter().zip(&self.live).filter(|(_, &l)| l);
        match (live.next(), live.next()) {
            (Some((&o, _)), None) => Some(o),
            _ => None,
        }
    }

    /// The step as the device runs it: None for steps with several written outputs, those the
    /// evaluator or a host-only function runs, Clip-like maps and integer divisions.
    pub fn device_form(&self) -> Option<DeviceForm<'_>> {
        let o = self.written_output()?;
        if self.dtypes[self.outputs.iter().position(|&x| x == o)?] != DType::Float {
            return None;
        }
        Some(match &self.kernel {
            Kernel::Move(outs) => {
                let k = self.outputs.iter().position(|&x| x == o)?;
                DeviceForm::Copy {
                    runs: outs[k].flat_runs(),
                }
            }
            Kernel::Act { input, act } => DeviceForm::Act {
                input: *input,
                act: *act,
            },
            Kernel::Binary {
                a,
                b,
                f,
                trunc: false,
                a_map,
                b_map,
            } => DeviceForm::Binary {
                a: *a,
                b: *b,
                op: match f {
                    BinFn::Common(op) => *op,
                    BinFn::Other(_) => return None,
                },
                a_map: a_map.as_deref(),
                b_map: b_map.as_deref(),
            },
            Kernel::Softmax { input, extents } => DeviceForm::Softmax {
                input: *input,
                extents: *extents,
            },
            Kernel::Conv { x, w, b, geom } => DeviceForm::Conv {
                x: *x,
                w: *w,
                b: *b,
                geom,
            },
            _ => return None,
        })
    }

    /// Whether a frame writes any output (false where every output was composed away).
    pub fn writes_any(&self) -> bool {
        self.live.iter().any(|&l| l)
    }

    /// The slots a frame reads: a copy step's composed sources (which need not be its inputs in
    /// the plan), every other step's inputs.
    pub fn reads(&self) -> Vec<usize> {
        match &self.kernel {
            Kernel::Move(outs) => {
                let runs: Vec<[u32; 3]> = outs
                    .iter()
                    .zip(&self.live)
                    .filter(|(_, &l)| l)
                    .flat_map(|(mv, _)| mv.flat_runs())
                    .collect();
                distinct_sources(&runs)
            }
            _ => self.inputs.iter().flatten().copied().collect(),
        }
    }

    /// Whether a frame writes output `k` (false where the copies that read it were composed
    /// through it, see `compose_moves`).
    pub fn writes_output(&self, k: usize) -> bool {
        self.live[k]
    }

    /// Whether frames run this step through the allocating reference evaluator.
    pub fn uses_eval(&self) -> bool {
        matches!(self.kernel, Kernel::Eval)
    }

    pub fn run(&self, slots: &mut [Tensor]) -> Result<()> {
        let Kernel::Move(per_output) = &self.kernel else {
            return self.run_one(slots);
        };
        for (k, ((&o, mv), &dtype)) in self
            .outputs
            .iter()
            .zip(per_output)
            .zip(&self.dtypes)
            .enumerate()
        {
            if !self.live[k] {
                continue;
            }
            let mut out = take(slots, o);
            mv.copy_into(&mut out.data, slots);
            out.dtype = dtype;
            slots[o] = out;
        }
        Ok(())
    }

    /// The kernels with one output.
    fn run_one(&self, slots: &mut [Tensor]) -> Result<()> {
        let o = self.outputs[0];
        let mut out = take(slots, o);
        match &self.kernel {
            Kernel::Act { input, act } => {
                let src = &slots[*input].data;
                chunked(&mut out.data, |j0, d| {
                    d.copy_from_slice(&src[j0..j0 + d.len()]);
                    act.apply_slice(d);
                });
            }
            Kernel::Map { input, f } => {
                let src = &slots[*input].data;
                chunked(&mut out.data, |j0, d| {
                    for (d, &s) in d.iter_mut().zip(&src[j0..]) {
                        *d = f(s);
                    }
                });
            }
            Kernel::Binary {
                a,
                b,
                f,
                trunc,
                a_map,
                b_map,
            } => {
                let (a, b) = (&slots[*a].data[..], &slots[*b].data[..]);
                let maps = (a_map.as_deref(), b_map.as_deref());
                let out = &mut out.data;
                match *f {
                    BinFn::Common(BinOp::Add) => binary(|x, y| x + y, a, b, maps, *trunc, out),
                    BinFn::Common(BinOp::Sub) => binary(|x, y| x - y, a, b, maps, *trunc, out),
                    BinFn::Common(BinOp::Mul) => binary(|x, y| x * y, a, b, maps, *trunc, out),
                    BinFn::Common(BinOp::Div) => binary(|x, y| x / y, a, b, maps, *trunc, out),
                    BinFn::Other(f) => binary(f, a, b, maps, *trunc, out),
                }
            }
            Kernel::Softmax { input, extents } => {
                let (x, (outer, n, inner)) = (&slots[*input].data, *extents);
                // The column tasks below write through a raw pointer: the shapes must agree.
                assert!(x.len() == outer * n * inner && out.data.len() == x.len());
                let cols = (CHUNK / n.max(1)).max(64);
                let per = inner.div_ceil(cols);
                let dst = SharedMut(out.data.as_mut_ptr());
                let task = |t: usize| {
                    let (o, c0) = (t / per, t % per * cols);
                    let mut to = Disjoint(dst);
                    crate::simd::vectorized(
                        #[inline(always)]
                        || eval::softmax_columns(x, &mut to, *extents, o, c0..inner.min(c0 + cols)),
                    )
                };
                match outer * per {
                    1 => task(0),
                    n => (0..n).into_par_iter().for_each(task),
                }
            }
            Kernel::Conv { x, w, b, geom } => {
                let (x, w, b) = (
                    &slots[*x].data,
                    &slots[*w].data,
                    b.map(|b| &slots[b].data[..]),
                );
                if out.data.len() <= CHUNK / 4 {
                    // Small (the squeeze-excitation convolutions of some heads): one task.
                    crate::simd::vectorized(
                        #[inline(always)]
                        || geom.run(x, w, b, &mut out.data),
                    )
                } else if geom.ow > 0 {
                    // Tasks of whole rows where rows are short, of row spans where they are long.
                    let (ow, span) = (geom.ow, CHUNK / 4);
                    let rows = (span / ow).max(1);
                    out.data
                        .par_chunks_mut(ow * rows)
                        .enumerate()
                        .for_each(|(t, block)| {
                            for (r, dst) in block.chunks_mut(ow).enumerate() {
                                dst.par_chunks_mut(span).enumerate().for_each(|(i, part)| {
                                    crate::simd::vectorized(
                                        #[inline(always)]
                                        || geom.run_span(x, w, b, t * rows + r, i * span, part),
                                    )
                                })
                            }
                        });
                }
            }
            Kernel::Move(_) => unreachable!("handled by run"),
            Kernel::Eval => {
                slots[o] = out;
                return self.run_eval(slots);
            }
        }
        out.dtype = self.dtypes[0];
        slots[o] = out;
        Ok(())
    }

    fn run_eval(&self, slots: &mut [Tensor]) -> Result<()> {
        let args: Vec<Option<&Tensor>> = self.inputs.iter().map(|s| s.map(|i| &slots[i])).collect();
        let outs = eval::eval(&self.node, &args)
            .map_err(|e| Error::Backend(format!("node `{}`: {e}", self.node.name)))?;
        for (o, t) in self.outputs.iter().zip(outs) {
            slots[*o] = t;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::Attr;
    use crate::rng::Lcg;

    fn node(op: &str, attrs: Vec<(&str, Attr)>, n_out: usize) -> Node {
        Node {
            op: op.into(),
            name: format!("test_{op}"),
            inputs: Vec::new(),
            outputs: (0..n_out).map(|i| format!("y{i}")).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    fn frame(shape: &[usize]) -> Input {
        Input::Frame(shape.to_vec())
    }

    enum Input {
        /// Changes every frame: random values of this shape.
        Frame(Vec<usize>),
        Constant(Tensor),
    }

    /// Prepares `node`, runs it on two frames of random inputs and compares every output with
    /// the reference evaluator; returns whether it fell back to the evaluator.
    fn check(node: Node, inputs: Vec<Input>) -> bool {
        let mut rng = Lcg(7);
        let ins: Vec<Option<usize>> = (0..inputs.len()).map(Some).collect();
        let constant: Vec<bool> = inputs
            .iter()
            .map(|i| matches!(i, Input::Constant(_)))
            .collect();
        let mut slots: Vec<Tensor> = inputs
            .iter()
            .map(|i| match i {
                Input::Frame(s) => Tensor::zeros(s.clone()),
                Input::Constant(t) => t.clone(),
            })
            .collect();
        let args: Vec<Option<&Tensor>> = slots.iter().map(Some).collect();
        let shapes: Vec<Vec<usize>> = eval::eval(&node, &args)
            .unwrap()
            .into_iter()
            .map(|t| t.shape)
            .collect();
        let outs: Vec<usize> = (slots.len()..slots.len() + shapes.len()).collect();
        slots.extend(shapes.iter().map(|s| Tensor::zeros(s.clone())));
        let mut constant = constant;
        constant.resize(slots.len(), false);
        let mut template = slots.clone();
        let mut known = vec![true; slots.len()];
        let step = GenericStep::new(&node, &ins, &outs, &mut template, &constant, &mut known);
        for _ in 0..2 {
            for (slot, i) in inputs.iter().enumerate() {
                if let Input::Frame(s) = i {
                    slots[slot] = Tensor::new(s.clone(), rng.vec(s.iter().product(), 3.0));
                }
            }
            step.run(&mut slots).unwrap();
            let args: Vec<Option<&Tensor>> = slots[..inputs.len()].iter().map(Some).collect();
            let want = eval::eval(&node, &args).unwrap();
            for (o, w) in outs.iter().zip(&want) {
                assert_eq!(slots[*o].shape, w.shape, "{}", node.op);
                assert_eq!(slots[*o].dtype, w.dtype, "{}", node.op);
                for (a, b) in slots[*o].data.iter().zip(&w.data) {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{}: {a} vs {b}",
                        node.op
                    );
                }
            }
        }
        step.uses_eval()
    }

    fn ints(v: &[i64]) -> Input {
        Input::Constant(Tensor::ints(vec![v.len()], v))
    }

    #[test]
    fn data_movement_becomes_copy_runs_equal_to_the_evaluator() {
        let concat = node("Concat", vec![("axis", Attr::Int(2))], 1);
        assert!(!check(
            concat,
            vec![frame(&[1, 3, 5]), frame(&[1, 3, 2]), frame(&[1, 3, 4])]
        ));
        let split = node("Split", vec![("axis", Attr::Int(1))], 2);
        assert!(!check(split, vec![frame(&[1, 5, 7]), ints(&[2, 3])]));
        let tr = node("Transpose", vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))], 1);
        assert!(!check(tr, vec![frame(&[1, 4, 3, 5])]));
        let rs = node("Reshape", vec![], 1);
        assert!(!check(rs, vec![frame(&[1, 4, 6]), ints(&[1, 2, -1, 3])]));
        let sl = node("Slice", vec![], 1);
        let slice_in = vec![
            frame(&[1, 6, 9]),
            ints(&[1, 8]),
            ints(&[5, 0]),
            ints(&[1, 2]),
            ints(&[1, -3]),
        ];
        assert!(!check(sl, slice_in));
        let ga = node("Gather", vec![("axis", Attr::Int(1))], 1);
        assert!(!check(ga, vec![frame(&[2, 5, 3]), ints(&[4, 0, -1])]));
        // Indices that change each frame cannot be fixed runs: the evaluator takes over.
        let ga = node("Gather", vec![("axis", Attr::Int(0))], 1);
        assert!(check(ga, vec![frame(&[5]), frame(&[1])]));
    }

    /// Outputs of several parallel chunks (CHUNK elements, softmax column blocks, conv row spans
    /// of CHUNK / 4) give the evaluator's values, chunk borders included.
    #[test]
    fn outputs_split_into_parallel_chunks_equal_the_evaluator() {
        let concat = node("Concat", vec![("axis", Attr::Int(2))], 1);
        assert!(!check(
            concat,
            vec![frame(&[1, 8, 5000]), frame(&[1, 8, 3001])]
        ));
        let tr = node("Transpose", vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))], 1);
        assert!(!check(tr, vec![frame(&[1, 4, 16, 1201])]));
        let sm = node("Softmax", vec![("axis", Attr::Int(1))], 1);
        assert!(!check(sm, vec![frame(&[1, 16, 4, 1301])]));
        let mul = node("Mul", vec![], 1);
        assert!(!check(mul, vec![frame(&[1, 4, 20003]), frame(&[1, 20003])]));
        let add = node("Add", vec![], 1);
        assert!(!check(add, vec![frame(&[1, 40001]), frame(&[1, 40001])]));
        assert!(!check(node("Sigmoid", vec![], 1), vec![frame(&[50001])]));
        let mut w = Lcg(5);
        let dfl = node("Conv", vec![], 1);
        assert!(!check(
            dfl,
            vec![
                frame(&[1, 16, 4, 9001]),
                Input::Constant(Tensor::new(vec![1, 16, 1, 1], w.vec(16, 1.0))),
            ]
        ));
        let conv3 = node("Conv", vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))], 1);
        assert!(!check(
            conv3,
            vec![
                frame(&[1, 2, 3, 9001]),
                Input::Constant(Tensor::new(vec![3, 2, 3, 3], w.vec(54, 1.0))),
                Input::Constant(Tensor::new(vec![3], w.vec(3, 1.0))),
            ]
        ));
    }

    #[test]
    fn element_wise_softmax_and_conv_equal_the_evaluator() {
        let mul = node("Mul", vec![], 1);
        assert!(!check(mul, vec![frame(&[1, 4, 6]), frame(&[1, 6])]));
        let div = node("Div", vec![], 1);
        let scalar = Input::Constant(Tensor::new(vec![], vec![8.0]));
        assert!(!check(div, vec![frame(&[1, 2, 5]), scalar]));
        let sub = node("Sub", vec![], 1);
        assert!(!check(sub, vec![frame(&[3, 1]), frame(&[1, 4])]));
        for op in ["Sigmoid", "Relu", "Exp", "Neg"] {
            assert!(!check(node(op, vec![], 1), vec![frame(&[2, 7])]));
        }
        let hs = node("HardSigmoid", vec![("alpha", Attr::Float(0.25))], 1);
        assert!(!check(hs, vec![frame(&[9])]));
        let clip = node("Clip", vec![], 1);
        let bound = |v| Input::Constant(Tensor::new(vec![], vec![v]));
        assert!(!check(clip, vec![frame(&[9]), bound(-1.0), bound(0.5)]));
        let cast = node("Cast", vec![("to", Attr::Int(7))], 1);
        assert!(!check(cast, vec![frame(&[9])]));
        let sm = node("Softmax", vec![("axis", Attr::Int(1))], 1);
        assert!(!check(sm, vec![frame(&[1, 16, 4, 5])]));
        let mut w = Lcg(3);
        let conv1 = node("Conv", vec![], 1);
        let (wt, b) = (w.vec(24 * 8, 1.0), w.vec(24, 1.0));
        assert!(!check(
            conv1,
            vec![
                frame(&[1, 8, 1, 1]),
                Input::Constant(Tensor::new(vec![24, 8, 1, 1], wt)),
                Input::Constant(Tensor::new(vec![24], b)),
            ]
        ));
        let conv3 = node(
            "Conv",
            vec![
                ("group", Attr::Int(2)),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ("strides", Attr::Ints(vec![2, 1])),
            ],
            1,
        );
        let wt = w.vec(6 * 2 * 9, 1.0);
        assert!(!check(
            conv3,
            vec![
                frame(&[1, 4, 5, 6]),
                Input::Constant(Tensor::new(vec![6, 2, 3, 3], wt)),
            ]
        ));
    }
}
