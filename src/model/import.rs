//! Translates an ONNX graph into a `Plan`: folds constant subgraphs, fuses BatchNorm, Pad and
//! activations into convolutions, turns concat/split into channel views, and places every op on
//! either the tiled spatial path or the dense tensor path. Fails at load time, naming op and node.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::act::Act;
use super::eval::{self, clip_bounds, is_generic};
use super::onnx::{self, Node, OnnxGraph};
use super::plan::*;
use crate::error::{Error, Result};
use crate::tensor::{norm_axis, Tensor};

/// Largest network input side we accept for dynamic-size models.
pub const MAX_INPUT_SIDE: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Network input (width, height) for models with symbolic spatial dims.
    pub input_size: Option<(usize, usize)>,
}

/// Loads and translates `path`.
pub fn import(path: &Path, opts: &ImportOptions) -> Result<Plan> {
    let graph = onnx::load(path)?;
    translate(graph, opts)
}

/// The spatial input dims an ONNX model declares: (channels, height, width), None where symbolic.
pub fn declared_input(graph: &OnnxGraph) -> Result<(String, usize, Option<usize>, Option<usize>)> {
    let bad = |reason: String| Error::BadModel {
        path: graph.path.clone(),
        reason,
    };
    let inp = match graph.inputs.as_slice() {
        [one] => one,
        [] => return Err(bad("the graph has no input".into())),
        more => {
            return Err(bad(format!(
                "the graph has {} inputs; only single-input image models are supported",
                more.len()
            )))
        }
    };
    if inp.dims.len() != 4 {
        return Err(bad(format!(
            "input `{}` has rank {}; expected an NCHW image [N,C,H,W]",
            inp.name,
            inp.dims.len()
        )));
    }
    let c = match inp.dims[1] {
        Some(c) if c <= 4 => c,
        _ if inp.dims[3] == Some(3) => {
            return Err(bad(format!(
                "input `{}` looks channels-last {:?}; only NCHW models are supported",
                inp.name, inp.dims
            )))
        }
        other => return Err(bad(format!("input `{}` has {other:?} channels", inp.name))),
    };
    if let Some(n) = inp.dims[0] {
        if n != 1 {
            return Err(bad(format!(
                "input batch is fixed at {n}; batch 1 is required"
            )));
        }
    }
    Ok((inp.name.clone(), c, inp.dims[2], inp.dims[3]))
}

/// The input (width, height) a model declares, None where symbolic.
pub type DeclaredDims = (Option<usize>, Option<usize>);

/// The network input (width, height) of the model at `path`, given the dims it declares and the
/// size asked for (`ImportOptions::input_size`).
pub fn input_dims(
    path: &Path,
    declared: DeclaredDims,
    asked: Option<(usize, usize)>,
) -> Result<(usize, usize)> {
    let (w, h) = match (declared, asked) {
        ((Some(w), Some(h)), Some((ow, oh))) if (w, h) != (ow, oh) => {
            return Err(Error::Settings(format!(
                "{} has a fixed input of {w}x{h}; input-size {ow}x{oh} cannot be used",
                path.display()
            )))
        }
        ((Some(w), Some(h)), _) => (w, h),
        ((dw, dh), Some((ow, oh))) => (dw.unwrap_or(ow), dh.unwrap_or(oh)),
        _ => {
            return Err(Error::Settings(format!(
                "{} has a dynamic input size; set input-size",
                path.display()
            )))
        }
    };
    if w == 0 || h == 0 || w > MAX_INPUT_SIDE || h > MAX_INPUT_SIDE {
        return Err(Error::Settings(format!(
            "input size {w}x{h} is out of range"
        )));
    }
    Ok((w, h))
}

pub fn translate(mut graph: OnnxGraph, opts: &ImportOptions) -> Result<Plan> {
    let (input_name, c, dh, dw) = declared_input(&graph)?;
    let (w, h) = input_dims(&graph.path, (dw, dh), opts.input_size)?;
    fuse_gated_activations(&mut graph.nodes);
    fuse_hardswish(&mut graph);
    let mut b = Builder::new(&graph, input_name.clone(), c, w, h);
    for node in &graph.nodes {
        b.node(node)?;
    }
    let mut outputs = Vec::new();
    for o in &graph.outputs {
        let slot = b.materialize(&o.name, "graph output")?;
        outputs.push((o.name.clone(), slot));
    }
    let max_scale = b.buffers.iter().map(|f| f.scale).max().unwrap_or(1);
    let mut steps = b.steps;
    fold_affine_into_pointwise(&mut steps);
    Ok(Plan {
        model_path: graph.path.clone(),
        input_name,
        input_w: w,
        input_h: h,
        input_c: c,
        max_scale,
        buffers: b.buffers,
        steps,
        slots: b.const_slots,
        slot_shapes: b.slot_shapes,
        outputs,
    })
}

/// `x op v` (per-channel constants) as `x·scale + shift`, for the ops that are exactly that
/// (multiply, add, subtract; not divide).
fn as_affine(op: BinOp, v: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
    let c = v.len();
    match op {
        BinOp::Mul => Some((v.to_vec(), vec![0.0; c])),
        BinOp::Add => Some((vec![1.0; c], v.to_vec())),
        BinOp::Sub => Some((vec![1.0; c], v.iter().map(|x| -x).collect())),
        BinOp::Div => None,
    }
}

/// Folds an affine layer without activation into the 1×1 convolution that alone reads its output
/// (no padding, no groups): `W·(x·s + t) + b = (W·s)·x + (b + W·t)` exactly, as a 1×1 kernel
/// reads no padding. The convolution then reads the affine layer's input and the layer goes.
fn fold_affine_into_pointwise(steps: &mut Vec<Step>) {
    let reads = |st: &Step, buf: usize| -> bool {
        match st {
            Step::Layer(l) => {
                l.input.buf == buf
                    || matches!(&l.op, LayerOp::Binary { rhs: Operand::View(v), .. } if v.buf == buf)
            }
            Step::GlobalPool { input, .. } | Step::Export { input, .. } => input.buf == buf,
            Step::Rearrange { .. } | Step::Generic { .. } => false,
        }
    };
    let mut removed = vec![false; steps.len()];
    for i in 0..steps.len() {
        let Step::Layer(a) = &steps[i] else { continue };
        let LayerOp::Affine {
            scale,
            shift,
            act: Act::Identity,
        } = &a.op
        else {
            continue;
        };
        let (out, input) = (a.output, a.input);
        let readers: Vec<usize> = (0..steps.len())
            .filter(|&j| j != i && !removed[j] && reads(&steps[j], out.buf))
            .collect();
        let [j] = readers[..] else { continue };
        let (scale, shift) = (scale.clone(), shift.clone());
        let Step::Layer(l) = &mut steps[j] else {
            continue;
        };
        let LayerOp::Conv(cs) = &mut l.op else {
            continue;
        };
        let pointwise = (cs.kh, cs.kw, cs.pad_t, cs.pad_l, cs.groups) == (1, 1, 0, 0, 1)
            && !cs.transposed
            && cs.cin == scale.len();
        if j < i || !pointwise || l.input != out {
            continue;
        }
        let n = cs.cout;
        for co in 0..n {
            let dot: f32 = (0..cs.cin)
                .map(|ci| cs.weights[ci * n + co] * shift[ci])
                .sum();
            cs.bias[co] += dot;
        }
        for (row, &s) in cs.weights.chunks_exact_mut(n).zip(&scale) {
            row.iter_mut().for_each(|w| *w *= s);
        }
        l.input = input;
        removed[i] = true;
    }
    let mut k = 0;
    steps.retain(|_| {
        k += 1;
        !removed[k - 1]
    });
}

/// Rewrites `Mul(x, Sigmoid(x))` into SiLU(x) and `Mul(x, HardSigmoid(x))` (1/6, 0.5) into
/// HardSwish(x), so they fuse into the producing convolution like any activation.
fn fuse_gated_activations(nodes: &mut Vec<Node>) {
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in nodes.iter() {
        for i in &n.inputs {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    let producer: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.clone(), i)))
        .collect();
    let mut dead = HashSet::new();
    for mi in 0..nodes.len() {
        if nodes[mi].op != "Mul" || nodes[mi].inputs.len() != 2 {
            continue;
        }
        for (gate_pos, x_pos) in [(1, 0), (0, 1)] {
            let gate = nodes[mi].inputs[gate_pos].clone();
            let x = nodes[mi].inputs[x_pos].clone();
            let Some(&gi) = producer.get(&gate) else {
                continue;
            };
            let g = &nodes[gi];
            let new_op = match g.op.as_str() {
                "Sigmoid" => "SiLU",
                "HardSigmoid"
                    if (g.float("alpha", 0.2) - 1.0 / 6.0).abs() < 1e-4
                        && (g.float("beta", 0.5) - 0.5).abs() < 1e-6 =>
                {
                    "HardSwish"
                }
                _ => continue,
            };
            if g.inputs.first() != Some(&x) || uses.get(&gate) != Some(&1) {
                continue;
            }
            dead.insert(gi);
            let m = &mut nodes[mi];
            m.op = new_op.to_string();
            m.inputs = vec![x];
            m.attrs.clear();
            break;
        }
    }
    let mut i = 0;
    nodes.retain(|_| {
        i += 1;
        !dead.contains(&(i - 1))
    });
}

/// Rewrites `Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)` — HardSwish as exporters such as paddle2onnx
/// write it out — into HardSwish(x), one activation that fuses into the producer of x instead of
/// four passes over the map. Only where the intermediate values have no other use.
fn fuse_hardswish(graph: &mut OnnxGraph) {
    let nodes = &graph.nodes;
    // A scalar constant's value, from an initializer or a Constant node.
    let mut consts: HashMap<&str, f32> = HashMap::new();
    for (name, t) in &graph.initializers {
        if t.len() == 1 {
            consts.insert(name, t.data[0]);
        }
    }
    for n in nodes.iter().filter(|n| n.op == "Constant") {
        if let (Some(t), Some(o)) = (n.tensor("value"), n.outputs.first()) {
            if t.len() == 1 {
                consts.insert(o, t.data[0]);
            }
        }
    }
    let is = |name: &str, v: f32| consts.get(name).is_some_and(|&c| c == v);
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        for i in &n.inputs {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.outputs {
        *uses.entry(o.name.as_str()).or_default() += 1;
    }
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    // The node producing `name` if it is an `op` whose output nothing else uses.
    let sole = |name: &str, op: &str| {
        producer
            .get(name)
            .copied()
            .filter(|&i| nodes[i].op == op && uses.get(name) == Some(&1))
    };
    let mut rewrites = Vec::new();
    for (di, d) in nodes.iter().enumerate() {
        if d.op != "Div" || d.inputs.len() != 2 || !is(&d.inputs[1], 6.0) {
            continue;
        }
        let Some(mi) = sole(&d.inputs[0], "Mul") else {
            continue;
        };
        let m = &nodes[mi];
        if m.inputs.len() != 2 {
            continue;
        }
        for (x_pos, c_pos) in [(0, 1), (1, 0)] {
            let x = &m.inputs[x_pos];
            let Some(ci) = sole(&m.inputs[c_pos], "Clip") else {
                continue;
            };
            let c = &nodes[ci];
            let bounds_0_6 = if c.inputs.len() == 3 {
                is(&c.inputs[1], 0.0) && is(&c.inputs[2], 6.0)
            } else {
                c.float("min", f32::MIN) == 0.0 && c.float("max", f32::MAX) == 6.0
            };
            let Some(ai) = c.inputs.first().and_then(|a| sole(a, "Add")) else {
                continue;
            };
            let a = &nodes[ai];
            let adds_3 = a.inputs.len() == 2
                && ((a.inputs[0] == *x && is(&a.inputs[1], 3.0))
                    || (a.inputs[1] == *x && is(&a.inputs[0], 3.0)));
            if bounds_0_6 && adds_3 {
                rewrites.push((di, x.clone(), [mi, ci, ai]));
                break;
            }
        }
    }
    let mut dead = HashSet::new();
    for (di, x, gone) in rewrites {
        let d = &mut graph.nodes[di];
        d.op = "HardSwish".into();
        d.inputs = vec![x];
        d.attrs.clear();
        dead.extend(gone);
    }
    let mut i = 0;
    graph.nodes.retain(|_| {
        i += 1;
        !dead.contains(&(i - 1))
    });
}

/// A spatial Pad (top, left, bottom, right) waiting to be absorbed by the consumer.
#[derive(Clone, Copy, Debug)]
struct PendingPad {
    px: [usize; 4],
    value: f32,
}

#[derive(Clone, Debug)]
enum Val {
    Const(Tensor),
    /// A spatial feature map, possibly with a zero Pad (t, l, b, r) not yet absorbed.
    Feature {
        view: View,
        pad: Option<PendingPad>,
    },
    /// A runtime tensor on the dense path.
    Slot(usize),
    /// A pure rearrangement of a feature view: value.flat[i] = base_nchw.flat[index[i]].
    Layout {
        base: View,
        index: Tensor,
    },
}

struct Builder<'g> {
    g: &'g OnnxGraph,
    vals: HashMap<String, Val>,
    uses: HashMap<String, usize>,
    buffers: Vec<FeatureBuf>,
    steps: Vec<Step>,
    /// Step index of the layer that writes the whole of each buffer.
    producer: HashMap<usize, usize>,
    aliased: HashSet<usize>,
    const_slots: Vec<Option<Tensor>>,
    slot_shapes: Vec<Vec<usize>>,
    /// Dry-run values (zeros for runtime slots) to learn the tail's shapes at load time.
    dry: Vec<Tensor>,
    exported: HashMap<(usize, usize, usize), usize>,
    w: usize,
    h: usize,
}

impl<'g> Builder<'g> {
    fn new(g: &'g OnnxGraph, input_name: String, c: usize, w: usize, h: usize) -> Self {
        let mut uses: HashMap<String, usize> = HashMap::new();
        for n in &g.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &g.outputs {
            *uses.entry(o.name.clone()).or_default() += 1;
        }
        let mut vals = HashMap::new();
        for (k, t) in &g.initializers {
            vals.insert(k.clone(), Val::Const(t.clone()));
        }
        vals.insert(
            input_name,
            Val::Feature {
                view: View {
                    buf: 0,
                    c_off: 0,
                    c,
                },
                pad: None,
            },
        );
        Builder {
            g,
            vals,
            uses,
            buffers: vec![FeatureBuf { c, h, w, scale: 1 }],
            steps: Vec::new(),
            producer: HashMap::new(),
            aliased: HashSet::new(),
            const_slots: Vec::new(),
            slot_shapes: Vec::new(),
            dry: Vec::new(),
            exported: HashMap::new(),
            w,
            h,
        }
    }

    /// [`Node::spatial`], its error naming the node.
    fn spatial_attr(
        &self,
        n: &Node,
        key: &str,
        len: usize,
        min: i64,
        default: i64,
    ) -> Result<Vec<usize>> {
        n.spatial(key, len, min, default)
            .map_err(|reason| self.err(n, reason))
    }

    fn err(&self, n: &Node, reason: impl Into<String>) -> Error {
        Error::BadNode {
            path: self.g.path.clone(),
            op: n.op.clone(),
            node: n.name.clone(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, n: &Node, detail: impl Into<String>) -> Error {
        Error::UnsupportedOp {
            path: self.g.path.clone(),
            op: n.op.clone(),
            node: n.name.clone(),
            detail: detail.into(),
        }
    }

    fn val(&self, n: &Node, i: usize) -> Result<Option<Val>> {
        match n.input(i) {
            None => Ok(None),
            Some(name) => self.vals.get(name).cloned().map(Some).ok_or_else(|| {
                self.err(
                    n,
                    format!("input `{name}` is not produced by any earlier node"),
                )
            }),
        }
    }

    fn konst(&self, n: &Node, i: usize, what: &str) -> Result<Tensor> {
        match self.val(n, i)? {
            Some(Val::Const(t)) => Ok(t),
            Some(_) => Err(self.err(n, format!("{what} must be a constant"))),
            None => Err(self.err(n, format!("{what} is missing"))),
        }
    }

    fn set(&mut self, name: &str, v: Val) {
        self.vals.insert(name.to_string(), v);
    }

    fn new_buffer(&mut self, c: usize, h: usize, w: usize, scale: usize) -> View {
        self.buffers.push(FeatureBuf { c, h, w, scale });
        View {
            buf: self.buffers.len() - 1,
            c_off: 0,
            c,
        }
    }

    fn push_layer(&mut self, layer: Layer) {
        let whole = layer.output.c_off == 0 && layer.output.c == self.buffers[layer.output.buf].c;
        if whole {
            self.producer.insert(layer.output.buf, self.steps.len());
        }
        self.steps.push(Step::Layer(layer));
    }

    fn new_slot(&mut self, t: Tensor, constant: bool) -> usize {
        self.slot_shapes.push(t.shape.clone());
        self.const_slots.push(constant.then(|| t.clone()));
        self.dry.push(t);
        self.slot_shapes.len() - 1
    }

    /// Checks that a map of h×w at `scale` lines up with the tile grid.
    fn aligned(&self, n: &Node, h: usize, w: usize, scale: usize) -> Result<()> {
        if scale == 0 || h * scale != self.h || w * scale != self.w {
            return Err(self.err(
                n,
                format!(
                    "output map {w}x{h} does not divide the input {}x{} evenly (stride {scale}); \
                     choose an input size that is a multiple of the network stride",
                    self.w, self.h
                ),
            ));
        }
        Ok(())
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        let ins: Vec<Option<Val>> = (0..n.inputs.len())
            .map(|i| self.val(n, i))
            .collect::<Result<_>>()?;
        let all_const = ins.iter().all(|v| matches!(v, None | Some(Val::Const(_))));
        if all_const && is_generic(&n.op) {
            let ts: Vec<Option<&Tensor>> = ins
                .iter()
                .map(|v| match v {
                    Some(Val::Const(t)) => Some(t),
                    _ => None,
                })
                .collect();
            let outs =
                eval::eval(&self.with_opset(n), &ts).map_err(|e| self.err(n, e.to_string()))?;
            for (name, t) in n.outputs.iter().zip(outs) {
                self.set(name, Val::Const(t));
            }
            return Ok(());
        }
        let first = ins.first().cloned().flatten();
        match (&n.op[..], &first) {
            ("Shape", Some(v)) => {
                let shape = self.shape_of(v);
                let mut node = n.clone();
                node.op = "Shape".into();
                let t = eval::eval(&node, &[Some(&Tensor::zeros(shape))])
                    .map_err(|e| self.err(n, e.to_string()))?;
                self.set(&n.outputs[0], Val::Const(t.into_iter().next().unwrap()));
                Ok(())
            }
            ("Identity" | "Dropout", Some(v)) => {
                let v = v.clone();
                self.set(&n.outputs[0], v);
                Ok(())
            }
            ("Pad", Some(Val::Feature { view, pad: None })) => self.pad(n, *view),
            (_, Some(Val::Feature { pad: Some(_), .. }))
                if !matches!(&n.op[..], "Conv" | "AveragePool" | "MaxPool") =>
            {
                Err(self.unsupported(
                    n,
                    " after a Pad (a spatial Pad must feed a Conv or a pooling layer)",
                ))
            }
            ("Conv" | "ConvTranspose", Some(Val::Feature { view, pad })) => {
                self.conv(n, *view, *pad)
            }
            ("BatchNormalization", Some(Val::Feature { view, .. })) => self.batchnorm(n, *view),
            ("MaxPool" | "AveragePool", Some(Val::Feature { view, pad })) => {
                self.pool(n, *view, *pad)
            }
            ("GlobalAveragePool", Some(Val::Feature { view, .. })) => {
                let slot = self.new_slot(Tensor::zeros(vec![1, view.c, 1, 1]), false);
                self.steps.push(Step::GlobalPool { input: *view, slot });
                self.set(&n.outputs[0], Val::Slot(slot));
                Ok(())
            }
            ("Resize" | "Upsample", Some(Val::Feature { view, .. })) => self.resize(n, *view),
            ("Concat", _) if self.spatial_axis1(n, &ins) => self.concat(n, &ins),
            ("Split", Some(Val::Feature { view, .. })) if self.axis_is(n, 1, 0) => {
                self.split(n, *view)
            }
            ("Add" | "Sub" | "Mul" | "Div", _)
                if ins
                    .iter()
                    .flatten()
                    .any(|v| matches!(v, Val::Feature { .. } | Val::Layout { .. })) =>
            {
                self.binary(n, &ins)
            }
            (op, Some(Val::Feature { view, .. }))
                if Act::from_onnx(op, n).is_some() || op == "Clip" =>
            {
                let act = if op == "Clip" {
                    let consts: Vec<Option<Tensor>> = (0..n.inputs.len())
                        .map(|i| match self.val(n, i) {
                            Ok(Some(Val::Const(t))) => Some(t),
                            _ => None,
                        })
                        .collect();
                    let refs: Vec<Option<&Tensor>> = consts.iter().map(|t| t.as_ref()).collect();
                    let (lo, hi) = clip_bounds(n, &refs);
                    Act::Clip(lo, hi)
                } else {
                    Act::from_onnx(op, n).unwrap()
                };
                self.activation(n, *view, act)
            }
            (
                "Reshape" | "Transpose" | "Flatten" | "Squeeze" | "Unsqueeze" | "Slice" | "Split"
                | "Gather",
                Some(Val::Feature { .. } | Val::Layout { .. }),
            ) => self.rearrange(n, &ins),
            (op, _) if Act::from_onnx(op, n).is_some() || matches!(op, "Conv" | "Clip") => {
                self.generic(n, &ins)
            }
            (op, Some(Val::Layout { .. })) if self.is_spatial_op(op) => {
                let mut ins = ins.clone();
                ins[0] = Some(self.layout_to_feature(n, ins[0].clone().unwrap())?);
                let v = ins[0].clone().unwrap();
                self.set(&format!("{}#feature", n.name), v);
                // Re-dispatch with the materialised feature as the first input.
                let mut m = n.clone();
                m.inputs[0] = format!("{}#feature", n.name);
                self.node(&m)
            }
            _ => self.generic(n, &ins),
        }
    }

    fn with_opset(&self, n: &Node) -> Node {
        let mut m = n.clone();
        m.attrs
            .insert("_opset".into(), onnx::Attr::Int(self.g.opset));
        m
    }

    fn is_spatial_op(&self, op: &str) -> bool {
        matches!(
            op,
            "Conv"
                | "ConvTranspose"
                | "BatchNormalization"
                | "MaxPool"
                | "AveragePool"
                | "Resize"
                | "Upsample"
                | "GlobalAveragePool"
                | "Pad"
        ) || Act::from_onnx(
            op,
            &Node {
                op: op.into(),
                name: String::new(),
                inputs: vec![],
                outputs: vec![],
                attrs: HashMap::new(),
            },
        )
        .is_some()
    }

    fn shape_of(&self, v: &Val) -> Vec<usize> {
        match v {
            Val::Const(t) => t.shape.clone(),
            Val::Feature { view, .. } => {
                let b = &self.buffers[view.buf];
                vec![1, view.c, b.h, b.w]
            }
            Val::Slot(s) => self.slot_shapes[*s].clone(),
            Val::Layout { index, .. } => index.shape.clone(),
        }
    }

    fn axis_is(&self, n: &Node, want: usize, input: usize) -> bool {
        let rank = self
            .val(n, input)
            .ok()
            .flatten()
            .map(|v| self.shape_of(&v).len())
            .unwrap_or(4);
        norm_axis(n.int("axis", 0), rank) == Some(want)
    }

    /// Concat along channels of spatial values at one scale.
    fn spatial_axis1(&self, n: &Node, ins: &[Option<Val>]) -> bool {
        if !self.axis_is(n, 1, 0) {
            return false;
        }
        let mut scale = None;
        for v in ins.iter().flatten() {
            let s = match v {
                Val::Feature { view, pad: None } => self.buffers[view.buf].scale,
                Val::Layout { base, index } if index.rank() == 4 => {
                    let b = &self.buffers[base.buf];
                    if index.shape[2..] != [b.h, b.w] {
                        return false;
                    }
                    b.scale
                }
                _ => return false,
            };
            if *scale.get_or_insert(s) != s {
                return false;
            }
        }
        scale.is_some()
    }

    fn pad(&mut self, n: &Node, view: View) -> Result<()> {
        let mode = n.string("mode", "constant");
        let pads = match n.ints("pads") {
            Some(p) => p,
            None => self.konst(n, 1, "pads")?.as_i64(),
        };
        let value = match self.val(n, 2)? {
            Some(Val::Const(t)) => t.data.first().copied().unwrap_or(0.0),
            _ => n.float("value", 0.0),
        };
        if mode != "constant" || !(value == 0.0 || value == f32::NEG_INFINITY) {
            return Err(self.unsupported(n, format!(" with mode {mode} value {value} (only constant 0 before Conv/AveragePool or -inf before MaxPool)")));
        }
        if pads.len() != 8
            || pads[0] != 0
            || pads[1] != 0
            || pads[4] != 0
            || pads[5] != 0
            || pads.iter().any(|&p| p < 0)
        {
            return Err(self.unsupported(
                n,
                format!(" with pads {pads:?} (only spatial zero padding)"),
            ));
        }
        let px = [
            pads[2] as usize,
            pads[3] as usize,
            pads[6] as usize,
            pads[7] as usize,
        ];
        self.set(
            &n.outputs[0],
            Val::Feature {
                view,
                pad: Some(PendingPad { px, value }),
            },
        );
        Ok(())
    }

    fn conv(&mut self, n: &Node, input: View, extra_pad: Option<PendingPad>) -> Result<()> {
        let transposed = n.op == "ConvTranspose";
        let wt = self.konst(n, 1, "weight")?;
        let bias_t = match self.val(n, 2)? {
            Some(Val::Const(t)) => Some(t),
            None => None,
            Some(_) => return Err(self.err(n, "bias must be a constant")),
        };
        if wt.rank() != 4 {
            return Err(
                self.unsupported(n, format!(" with a {}-D kernel (only 2-D)", wt.rank() - 2))
            );
        }
        if wt.shape.contains(&0) {
            return Err(self.err(n, format!("weights {:?} have an empty dimension", wt.shape)));
        }
        let inb = self.buffers[input.buf].clone();
        let groups = n.group().map_err(|reason| self.err(n, reason))?;
        let (kh, kw) = (wt.shape[2], wt.shape[3]);
        let (cin, cout) = if transposed {
            (wt.shape[0], wt.shape[1] * groups)
        } else {
            (wt.shape[1] * groups, wt.shape[0])
        };
        if cin != input.c || cout % groups != 0 {
            return Err(self.err(
                n,
                format!(
                    "weights {:?} do not fit {} input channels",
                    wt.shape, input.c
                ),
            ));
        }
        let s = self.spatial_attr(n, "strides", 2, 1, 1)?;
        let d = self.spatial_attr(n, "dilations", 2, 1, 1)?;
        let (sh, sw, dh, dw) = (s[0], s[1], d[0], d[1]);
        let mut p = self.spatial_attr(n, "pads", 4, 0, 0)?;
        let auto_pad = n.string("auto_pad", "NOTSET");
        if auto_pad.starts_with("SAME") {
            if transposed {
                return Err(self.unsupported(n, " with auto_pad SAME"));
            }
            for (axis, (k, st, dl, len)) in [(kh, sh, dh, inb.h), (kw, sw, dw, inb.w)]
                .into_iter()
                .enumerate()
            {
                let out = len.div_ceil(st);
                let total = ((out - 1) * st + (k - 1) * dl + 1).saturating_sub(len);
                let small = total / 2;
                let (lo, hi) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                p[axis] = lo;
                p[axis + 2] = hi;
            }
        }
        if let Some(PendingPad { px: e, value }) = extra_pad {
            if transposed || value != 0.0 {
                return Err(self.unsupported(n, format!(" after a Pad of {value}")));
            }
            p[0] += e[0];
            p[1] += e[1];
            p[2] += e[2];
            p[3] += e[3];
        }
        if n.ints("output_shape").is_some() {
            return Err(self.unsupported(n, " with output_shape"));
        }
        let (oh, ow, scale) = if transposed {
            let op = self.spatial_attr(n, "output_padding", 2, 0, 0)?;
            let oh = (inb.h - 1) * sh + dh * (kh - 1) + 1 + op[0];
            let ow = (inb.w - 1) * sw + dw * (kw - 1) + 1 + op[1];
            let (oh, ow) = (
                (oh).saturating_sub(p[0] + p[2]),
                ow.saturating_sub(p[1] + p[3]),
            );
            if sh != sw || !inb.scale.is_multiple_of(sh) {
                return Err(self.err(
                    n,
                    format!("upsampling stride {sh}x{sw} does not fit the tile grid"),
                ));
            }
            (oh, ow, inb.scale / sh)
        } else {
            let oh = (inb.h + p[0] + p[2])
                .checked_sub(dh * (kh - 1) + 1)
                .map(|v| v / sh + 1);
            let ow = (inb.w + p[1] + p[3])
                .checked_sub(dw * (kw - 1) + 1)
                .map(|v| v / sw + 1);
            match (oh, ow) {
                (Some(oh), Some(ow)) if sh == sw => (oh, ow, inb.scale * sh),
                _ => {
                    return Err(
                        self.err(n, "kernel larger than the padded input, or unequal strides")
                    )
                }
            }
        };
        self.aligned(n, oh, ow, scale)?;
        let cig = cin / groups;
        let cog = cout / groups;
        let depthwise = !transposed && groups > 1 && groups == cin && cout == cin;
        let mut weights = vec![0f32; kh * kw * cig * cout];
        if depthwise {
            for c in 0..cin {
                for k in 0..kh * kw {
                    weights[k * cin + c] = wt.data[c * kh * kw + k];
                }
            }
        } else {
            let kg = kh * kw * cig;
            for g in 0..groups {
                for col in 0..cog {
                    for ci in 0..cig {
                        for k in 0..kh * kw {
                            let src = if transposed {
                                ((g * cig + ci) * cog + col) * kh * kw + k
                            } else {
                                ((g * cog + col) * cig + ci) * kh * kw + k
                            };
                            weights[g * kg * cog + (k * cig + ci) * cog + col] = wt.data[src];
                        }
                    }
                }
            }
        }
        let bias = bias_t.map(|t| t.data).unwrap_or_else(|| vec![0.0; cout]);
        if bias.len() != cout {
            return Err(self.err(
                n,
                format!("bias has {} values for {cout} output channels", bias.len()),
            ));
        }
        let halo_px_in = if transposed {
            // Spill of an input tile's outputs beyond the aligned output tile, in output pixels.
            let spill = p[0]
                .max(p[1])
                .max((dh * (kh - 1)).saturating_sub(p[0] + sh - 1));
            (spill as f64 / (sh as f64)).ceil() as usize
        } else {
            p[0].max(p[1])
                .max((dh * (kh - 1)).saturating_sub(p[0] + sh - 1))
                .max((dw * (kw - 1)).saturating_sub(p[1] + sw - 1))
        };
        let spec = ConvSpec {
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pad_t: p[0],
            pad_l: p[1],
            cin,
            cout,
            groups,
            transposed,
            weights,
            bias,
            act: Act::Identity,
        };
        let macs = (oh * ow * cout * kh * kw * cig) as f64;
        let output = self.new_buffer(cout, oh, ow, scale);
        self.push_layer(Layer {
            name: n.name.clone(),
            op: LayerOp::Conv(spec),
            input,
            output,
            halo: halo_tiles(halo_px_in, inb.scale),
            global: false,
            macs,
        });
        self.set(
            &n.outputs[0],
            Val::Feature {
                view: output,
                pad: None,
            },
        );
        Ok(())
    }

    /// The layer writing all of `view`'s buffer, if `name` (its value) has no other consumer.
    fn fusable_producer(&self, name: &str, view: View) -> Option<usize> {
        let b = &self.buffers[view.buf];
        if view.c_off != 0 || view.c != b.c || self.uses.get(name).copied().unwrap_or(0) != 1 {
            return None;
        }
        self.producer.get(&view.buf).copied()
    }

    fn batchnorm(&mut self, n: &Node, view: View) -> Result<()> {
        let [gamma, beta, mean, var] =
            [1, 2, 3, 4].map(|i| self.konst(n, i, "batch-norm parameter"));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let eps = n.float("epsilon", 1e-5);
        let c = view.c;
        if gamma.len() != c || beta.len() != c || mean.len() != c || var.len() != c {
            return Err(self.err(n, "parameter length differs from the channel count"));
        }
        let scale: Vec<f32> = (0..c)
            .map(|i| gamma.data[i] / (var.data[i] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|i| beta.data[i] - mean.data[i] * scale[i])
            .collect();
        if self.fold_affine(&n.inputs[0], view, &scale, &shift) {
            self.set(&n.outputs[0], Val::Feature { view, pad: None });
            return Ok(());
        }
        self.simple_layer(
            n,
            view,
            LayerOp::Affine {
                scale,
                shift,
                act: Act::Identity,
            },
            0,
        )
    }

    /// Folds `x·scale + shift` (per channel) into the layer producing `name` (`view`): a
    /// convolution or an affine layer without activation, or an element-wise multiply, add or
    /// subtract by constants without activation, when nothing else reads its output. Whether it
    /// did.
    fn fold_affine(&mut self, name: &str, view: View, scale: &[f32], shift: &[f32]) -> bool {
        let Some(si) = self.fusable_producer(name, view) else {
            return false;
        };
        let Step::Layer(l) = &mut self.steps[si] else {
            return false;
        };
        let c = scale.len();
        match &mut l.op {
            LayerOp::Conv(cs) if cs.act == Act::Identity && cs.cout == c => {
                let n_out = cs.cout;
                let cols = if cs.depthwise() {
                    n_out
                } else {
                    cs.n_per_group()
                };
                let depthwise = cs.depthwise();
                let per_group = cs.k_per_group() * cols;
                for (i, wv) in cs.weights.iter_mut().enumerate() {
                    let co = if depthwise {
                        i % n_out
                    } else {
                        (i / per_group) * cols + i % cols
                    };
                    *wv *= scale[co];
                }
                for co in 0..n_out {
                    cs.bias[co] = cs.bias[co] * scale[co] + shift[co];
                }
                true
            }
            LayerOp::Affine {
                scale: s0,
                shift: t0,
                act: Act::Identity,
            } if s0.len() == c => {
                for i in 0..c {
                    s0[i] *= scale[i];
                    t0[i] = t0[i] * scale[i] + shift[i];
                }
                true
            }
            LayerOp::Binary {
                op: op0,
                rhs: Operand::Channels(v),
                act: Act::Identity,
            } if v.len() == c => {
                // x op0 v, then the new step: one affine layer.
                let Some((s0, t0)) = as_affine(*op0, v) else {
                    return false;
                };
                l.op = LayerOp::Affine {
                    scale: (0..c).map(|i| s0[i] * scale[i]).collect(),
                    shift: (0..c).map(|i| t0[i] * scale[i] + shift[i]).collect(),
                    act: Act::Identity,
                };
                true
            }
            _ => false,
        }
    }

    /// A layer with one spatial input and a new output buffer of the same shape.
    fn simple_layer(&mut self, n: &Node, input: View, op: LayerOp, halo: usize) -> Result<()> {
        let b = self.buffers[input.buf].clone();
        let output = self.new_buffer(input.c, b.h, b.w, b.scale);
        let global = matches!(
            op,
            LayerOp::Binary {
                rhs: Operand::Slot(_),
                ..
            }
        );
        self.push_layer(Layer {
            name: n.name.clone(),
            op,
            input,
            output,
            halo,
            global,
            macs: b.h as f64 * b.w as f64 * input.c as f64,
        });
        self.set(
            &n.outputs[0],
            Val::Feature {
                view: output,
                pad: None,
            },
        );
        Ok(())
    }

    fn activation(&mut self, n: &Node, view: View, act: Act) -> Result<()> {
        if let Some(si) = self.fusable_producer(&n.inputs[0], view) {
            if let Step::Layer(l) = &mut self.steps[si] {
                if let Some(a) = l.act_mut() {
                    if *a == Act::Identity {
                        *a = act;
                        self.set(&n.outputs[0], Val::Feature { view, pad: None });
                        return Ok(());
                    }
                }
            }
        }
        self.simple_layer(n, view, LayerOp::Unary(act), 0)
    }

    fn pool(&mut self, n: &Node, input: View, extra_pad: Option<PendingPad>) -> Result<()> {
        match n.ints("kernel_shape") {
            None => return Err(self.err(n, "kernel_shape is missing")),
            Some(k) if k.len() != 2 => return Err(self.unsupported(n, " (only 2-D pooling)")),
            Some(_) => {}
        }
        let k = self.spatial_attr(n, "kernel_shape", 2, 1, 1)?;
        let (kh, kw) = (k[0], k[1]);
        let s = self.spatial_attr(n, "strides", 2, 1, 1)?;
        let (sh, sw) = (s[0], s[1]);
        if n.ints("dilations")
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err(self.unsupported(n, " with dilations"));
        }
        let inb = self.buffers[input.buf].clone();
        let mut p = self.spatial_attr(n, "pads", 4, 0, 0)?;
        let auto_pad = n.string("auto_pad", "NOTSET");
        if auto_pad.starts_with("SAME") {
            for (axis, (k, st, len)) in [(kh, sh, inb.h), (kw, sw, inb.w)].into_iter().enumerate() {
                let out = len.div_ceil(st);
                let total = ((out - 1) * st + k).saturating_sub(len);
                let small = total / 2;
                let (lo, hi) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                p[axis] = lo;
                p[axis + 2] = hi;
            }
        }
        let kind = if n.op == "MaxPool" {
            PoolKind::Max
        } else {
            PoolKind::Avg(
                n.int("count_include_pad", 0) != 0 || extra_pad.is_some_and(|p| p.value == 0.0),
            )
        };
        if let Some(PendingPad { px: e, value }) = extra_pad {
            let fits = match kind {
                PoolKind::Max => value == f32::NEG_INFINITY,
                PoolKind::Avg(_) => value == 0.0,
            };
            if !fits
                || (kind != PoolKind::Max
                    && n.int("count_include_pad", 0) == 0
                    && p.iter().any(|&v| v > 0))
            {
                return Err(self.unsupported(n, format!(" after a Pad of {value}")));
            }
            for i in 0..4 {
                p[i] += e[i];
            }
        }
        let ceil = n.int("ceil_mode", 0) != 0;
        let out = |len: usize, pa: usize, pb: usize, k: usize, s: usize| {
            let span = (len + pa + pb).saturating_sub(k);
            if ceil {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            }
        };
        let oh = out(inb.h, p[0], p[2], kh, sh);
        let ow = out(inb.w, p[1], p[3], kw, sw);
        if sh != sw {
            return Err(self.unsupported(n, " with unequal strides"));
        }
        let scale = inb.scale * sh;
        self.aligned(n, oh, ow, scale)?;
        let halo_px = p[0]
            .max(p[1])
            .max((kh - 1).saturating_sub(p[0] + sh - 1))
            .max((kw - 1).saturating_sub(p[1] + sw - 1));
        let output = self.new_buffer(input.c, oh, ow, scale);
        self.push_layer(Layer {
            name: n.name.clone(),
            op: LayerOp::Pool(PoolSpec {
                kind,
                kh,
                kw,
                sh,
                sw,
                pad_t: p[0],
                pad_l: p[1],
            }),
            input,
            output,
            halo: halo_tiles(halo_px, inb.scale),
            global: false,
            macs: (oh * ow * input.c * kh * kw) as f64,
        });
        self.set(
            &n.outputs[0],
            Val::Feature {
                view: output,
                pad: None,
            },
        );
        Ok(())
    }

    fn resize(&mut self, n: &Node, input: View) -> Result<()> {
        let inb = self.buffers[input.buf].clone();
        let scales: Option<Vec<f32>> = if n.op == "Upsample" {
            n.floats("scales")
                .map(Ok)
                .or_else(|| Some(self.konst(n, 1, "scales").map(|t| t.data)))
                .transpose()?
        } else {
            let sc = if self.g.opset <= 10 { 1 } else { 2 };
            match self.val(n, sc)? {
                Some(Val::Const(t)) if !t.is_empty() => Some(t.data),
                Some(Val::Const(_)) | None => None,
                Some(_) => return Err(self.err(n, "scales must be a constant")),
            }
        };
        let (oh, ow) = if let Some(s) = &scales {
            if s.len() != 4 || s[0] != 1.0 || s[1] != 1.0 {
                return Err(
                    self.unsupported(n, format!(" with scales {s:?} (only spatial scaling)"))
                );
            }
            (
                (inb.h as f32 * s[2]).floor() as usize,
                (inb.w as f32 * s[3]).floor() as usize,
            )
        } else {
            let sizes = self.konst(n, 3, "sizes")?.as_i64();
            if sizes.len() != 4 {
                return Err(self.unsupported(n, " with non-4-D sizes"));
            }
            (sizes[2] as usize, sizes[3] as usize)
        };
        let up = oh >= inb.h && oh % inb.h == 0 && ow % inb.w == 0 && oh / inb.h == ow / inb.w;
        let down = oh > 0
            && ow > 0
            && oh < inb.h
            && inb.h.is_multiple_of(oh)
            && inb.w.is_multiple_of(ow)
            && inb.h / oh == inb.w / ow;
        if !(up || down) {
            return Err(self.unsupported(
                n,
                format!(
                    " from {}x{} to {ow}x{oh} (only equal integer up- or downscaling)",
                    inb.w, inb.h
                ),
            ));
        }
        let out_scale = if up {
            let f = oh / inb.h;
            if !inb.scale.is_multiple_of(f) {
                return Err(self.err(n, "upscaling beyond the input resolution"));
            }
            inb.scale / f
        } else {
            inb.scale * (inb.h / oh)
        };
        let mode = n.string("mode", "nearest");
        let linear = match mode.as_str() {
            "nearest" => false,
            "linear" | "bilinear" => true,
            m => return Err(self.unsupported(n, format!(" with mode {m}"))),
        };
        let default_ct = if n.op == "Upsample" || self.g.opset <= 10 {
            "asymmetric"
        } else {
            "half_pixel"
        };
        let ct = n.string("coordinate_transformation_mode", default_ct);
        let nearest_mode = n.string(
            "nearest_mode",
            if n.op == "Upsample" {
                "floor"
            } else {
                "round_prefer_floor"
            },
        );
        // ONNX maps coordinates with the given scale, which may differ from out/in after flooring.
        let (sy, sx) = match &scales {
            Some(s) => (s[2] as f64, s[3] as f64),
            None => (oh as f64 / inb.h as f64, ow as f64 / inb.w as f64),
        };
        let y = resize_taps(inb.h, oh, sy, linear, &ct, &nearest_mode)
            .map_err(|e| self.unsupported(n, e))?;
        let x = resize_taps(inb.w, ow, sx, linear, &ct, &nearest_mode)
            .map_err(|e| self.unsupported(n, e))?;
        let reach = |t: &ResizeTaps| {
            let len_in = if std::ptr::eq(t, &y) { inb.h } else { inb.w };
            let len_out = t.i0.len();
            (0..len_out)
                .map(|o| {
                    // The input pixel aligned with output pixel o on the tile grid.
                    let a = (o * len_in / len_out) as i64;
                    let d0 = (t.i0[o] as i64 - a).abs();
                    let d1 = if t.frac[o] != 0.0 {
                        (t.i1[o] as i64 - a).abs()
                    } else {
                        0
                    };
                    d0.max(d1) as usize
                })
                .max()
                .unwrap_or(0)
        };
        let halo_px = reach(&y).max(reach(&x));
        let output = self.new_buffer(input.c, oh, ow, out_scale);
        self.push_layer(Layer {
            name: n.name.clone(),
            op: LayerOp::Resize { y, x },
            input,
            output,
            halo: halo_tiles(halo_px, inb.scale),
            global: false,
            macs: (oh * ow * input.c) as f64,
        });
        self.set(
            &n.outputs[0],
            Val::Feature {
                view: output,
                pad: None,
            },
        );
        Ok(())
    }

    fn split(&mut self, n: &Node, view: View) -> Result<()> {
        let split_in = match self.val(n, 1)? {
            Some(Val::Const(t)) => Some(t),
            _ => None,
        };
        let sizes = eval::split_sizes(n, split_in.as_ref(), view.c).map_err(|e| match e {
            Error::Tensor { reason, .. } => self.err(n, reason),
            e => e,
        })?;
        if sizes.len() != n.outputs.len() {
            return Err(self.err(
                n,
                format!("split sizes {sizes:?} do not cover {} channels", view.c),
            ));
        }
        let mut off = view.c_off;
        for (name, s) in n.outputs.iter().zip(sizes) {
            self.set(
                name,
                Val::Feature {
                    view: View {
                        buf: view.buf,
                        c_off: off,
                        c: s,
                    },
                    pad: None,
                },
            );
            off += s;
        }
        Ok(())
    }

    fn concat(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        let mut views = Vec::new();
        for v in ins.iter().flatten() {
            match self.layout_to_feature(n, v.clone())? {
                Val::Feature { view, .. } => views.push(view),
                _ => unreachable!(),
            }
        }
        let b0 = self.buffers[views[0].buf].clone();
        let total: usize = views.iter().map(|v| v.c).sum();
        let out = self.new_buffer(total, b0.h, b0.w, b0.scale);
        let mut off = 0;
        for (i, v) in views.iter().enumerate() {
            let whole = v.c_off == 0 && v.c == self.buffers[v.buf].c;
            let repeated = views.iter().filter(|u| u.buf == v.buf).count() > 1;
            let can_alias = whole
                && !repeated
                && v.buf != 0
                && !self.aliased.contains(&v.buf)
                && self.producer.contains_key(&v.buf);
            if can_alias {
                self.alias_buffer(v.buf, out.buf, off);
            } else {
                let dst = View {
                    buf: out.buf,
                    c_off: off,
                    c: v.c,
                };
                self.steps.push(Step::Layer(Layer {
                    name: format!("{}/copy{i}", n.name),
                    op: LayerOp::Gather {
                        perm: (0..v.c).collect(),
                    },
                    input: *v,
                    output: dst,
                    halo: 0,
                    global: false,
                    macs: (b0.h * b0.w * v.c) as f64,
                }));
            }
            off += v.c;
        }
        self.aliased.insert(out.buf);
        self.set(
            &n.outputs[0],
            Val::Feature {
                view: out,
                pad: None,
            },
        );
        Ok(())
    }

    /// Makes every reference to buffer `from` point into `to` at channel offset `off`.
    fn alias_buffer(&mut self, from: usize, to: usize, off: usize) {
        let fix = |v: &mut View| {
            if v.buf == from {
                v.buf = to;
                v.c_off += off;
            }
        };
        for s in &mut self.steps {
            match s {
                Step::Layer(l) => {
                    fix(&mut l.input);
                    fix(&mut l.output);
                    if let LayerOp::Binary {
                        rhs: Operand::View(v),
                        ..
                    } = &mut l.op
                    {
                        fix(v);
                    }
                }
                Step::GlobalPool { input, .. } | Step::Export { input, .. } => fix(input),
                _ => {}
            }
        }
        for v in self.vals.values_mut() {
            match v {
                Val::Feature { view, .. } => fix(view),
                Val::Layout { base, .. } => fix(base),
                _ => {}
            }
        }
        self.exported.retain(|k, _| k.0 != from);
        self.producer.remove(&from);
        self.aliased.insert(from);
        self.buffers[from].c = 0;
    }

    fn binary(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        let op = BinOp::from_onnx(&n.op).unwrap_or(BinOp::Div);
        let mut a = ins[0].clone().ok_or_else(|| self.err(n, "missing input"))?;
        let mut b = ins
            .get(1)
            .cloned()
            .flatten()
            .ok_or_else(|| self.err(n, "missing input"))?;
        let is_feat = |v: &Val| matches!(v, Val::Feature { .. } | Val::Layout { .. });
        let mut feat_input = &n.inputs[0];
        if !is_feat(&a) {
            if matches!(op, BinOp::Add | BinOp::Mul) {
                std::mem::swap(&mut a, &mut b);
                feat_input = &n.inputs[1];
            } else {
                return Err(self.unsupported(
                    n,
                    " with a non-spatial left operand and a spatial right operand",
                ));
            }
        }
        // Layouts that are not plain feature maps go to the dense path.
        let a = match self.layout_to_feature(n, a.clone()) {
            Ok(v) => v,
            Err(_) => return self.generic(n, ins),
        };
        let Val::Feature { view, .. } = a else {
            unreachable!()
        };
        let fb = self.buffers[view.buf].clone();
        let rhs = match b {
            Val::Feature { .. } | Val::Layout { .. } => {
                let bv = match self.layout_to_feature(n, b.clone()) {
                    Ok(Val::Feature { view, .. }) => view,
                    _ => return self.generic(n, ins),
                };
                let bb = &self.buffers[bv.buf];
                if bv.c != view.c || bb.h != fb.h || bb.w != fb.w {
                    return self.generic(n, ins);
                }
                Operand::View(bv)
            }
            Val::Const(t) => {
                if t.len() == 1 {
                    Operand::Channels(vec![t.data[0]; view.c])
                } else if t.len() == view.c
                    && t.shape.iter().filter(|&&d| d != 1).count() == 1
                    && (t.rank() < 3 || t.shape[t.rank() - 3] == view.c)
                {
                    Operand::Channels(t.data.clone())
                } else {
                    return self.generic(n, ins);
                }
            }
            Val::Slot(s) => {
                let sh = &self.slot_shapes[s];
                let len: usize = sh.iter().product();
                if len == view.c && (sh.len() < 3 || sh[sh.len() - 3] == view.c) || len == 1 {
                    Operand::Slot(s)
                } else {
                    return self.generic(n, ins);
                }
            }
        };
        // Multiplying, adding or subtracting constants right after a convolution or another
        // such step folds into it.
        if let Operand::Channels(v) = &rhs {
            if let Some((scale, shift)) = as_affine(op, v) {
                if self.fold_affine(&feat_input.clone(), view, &scale, &shift) {
                    self.set(&n.outputs[0], Val::Feature { view, pad: None });
                    return Ok(());
                }
            }
        }
        self.simple_layer(
            n,
            view,
            LayerOp::Binary {
                op,
                rhs,
                act: Act::Identity,
            },
            0,
        )
    }

    /// Starts or extends a rearrangement chain on a feature map.
    fn rearrange(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        let (base, index) = match ins[0].clone().unwrap() {
            Val::Feature { view, .. } => {
                let b = &self.buffers[view.buf];
                let len = view.c * b.h * b.w;
                if len >= 1 << 24 {
                    return self.generic(n, ins);
                }
                (
                    view,
                    Tensor::new(
                        vec![1, view.c, b.h, b.w],
                        (0..len).map(|i| i as f32).collect(),
                    ),
                )
            }
            Val::Layout { base, index } => (base, index),
            _ => unreachable!(),
        };
        let mut args: Vec<Option<&Tensor>> = vec![Some(&index)];
        let consts: Vec<Option<Tensor>> = ins[1..]
            .iter()
            .map(|v| match v {
                Some(Val::Const(t)) => Some(t.clone()),
                _ => None,
            })
            .collect();
        if ins[1..]
            .iter()
            .zip(&consts)
            .any(|(v, c)| v.is_some() && c.is_none())
        {
            return self.generic(n, ins);
        }
        args.extend(consts.iter().map(|c| c.as_ref()));
        let outs =
            eval::eval(&self.with_opset(n), &args).map_err(|e| self.err(n, e.to_string()))?;
        for (name, t) in n.outputs.iter().zip(outs) {
            self.set(name, Val::Layout { base, index: t });
        }
        Ok(())
    }

    /// Turns a layout that is a channel selection of its base into a feature view (or a gather layer).
    fn layout_to_feature(&mut self, n: &Node, v: Val) -> Result<Val> {
        let (base, index) = match v {
            Val::Layout { base, index } => (base, index),
            other => return Ok(other),
        };
        let b = self.buffers[base.buf].clone();
        let hw = b.h * b.w;
        let not_plain = || {
            self.unsupported(
                n,
                " on a rearranged feature map that is not a channel selection",
            )
        };
        if index.rank() != 4
            || index.shape[0] != 1
            || index.shape[2] != b.h
            || index.shape[3] != b.w
        {
            return Err(not_plain());
        }
        let c = index.shape[1];
        let mut perm = Vec::with_capacity(c);
        for ch in 0..c {
            let first = index.data[ch * hw] as usize;
            if !first.is_multiple_of(hw) {
                return Err(not_plain());
            }
            let src_c = first / hw;
            if (0..hw).any(|p| index.data[ch * hw + p] as usize != src_c * hw + p) {
                return Err(not_plain());
            }
            perm.push(src_c);
        }
        let contiguous = perm.windows(2).all(|w| w[1] == w[0] + 1);
        if contiguous {
            return Ok(Val::Feature {
                view: View {
                    buf: base.buf,
                    c_off: base.c_off + perm[0],
                    c,
                },
                pad: None,
            });
        }
        let output = self.new_buffer(c, b.h, b.w, b.scale);
        self.push_layer(Layer {
            name: format!("{}/shuffle", n.name),
            op: LayerOp::Gather { perm },
            input: base,
            output,
            halo: 0,
            global: false,
            macs: (hw * c) as f64,
        });
        Ok(Val::Feature {
            view: output,
            pad: None,
        })
    }

    /// The slot holding value `name` on the dense path, adding export steps as needed.
    fn materialize(&mut self, name: &str, ctx: &str) -> Result<usize> {
        let v = self
            .vals
            .get(name)
            .cloned()
            .ok_or_else(|| Error::BadModel {
                path: self.g.path.clone(),
                reason: format!("{ctx} `{name}` is not produced by any node"),
            })?;
        self.materialize_val(v)
    }

    fn materialize_val(&mut self, v: Val) -> Result<usize> {
        Ok(match v {
            Val::Const(t) => self.new_slot(t, true),
            Val::Slot(s) => s,
            Val::Feature { view, .. } => self.export(view),
            Val::Layout { base, index } => {
                let src = self.export(base);
                let out = self.new_slot(Tensor::zeros(index.shape.clone()), false);
                self.steps.push(Step::Rearrange {
                    input: src,
                    index,
                    output: out,
                });
                out
            }
        })
    }

    fn export(&mut self, view: View) -> usize {
        let key = (view.buf, view.c_off, view.c);
        if let Some(&s) = self.exported.get(&key) {
            return s;
        }
        let b = &self.buffers[view.buf];
        let slot = self.new_slot(Tensor::zeros(vec![1, view.c, b.h, b.w]), false);
        self.steps.push(Step::Export { input: view, slot });
        self.exported.insert(key, slot);
        slot
    }

    /// Runs the node densely on the tensor path.
    fn generic(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        if !is_generic(&n.op) {
            return Err(self.unsupported(n, ""));
        }
        if ins
            .iter()
            .flatten()
            .any(|v| matches!(v, Val::Feature { pad: Some(_), .. }))
        {
            return Err(self.unsupported(n, " after a Pad"));
        }
        let mut slots = Vec::new();
        for v in ins {
            slots.push(match v {
                None => None,
                Some(v) => Some(self.materialize_val(v.clone())?),
            });
        }
        let node = self.with_opset(n);
        let args: Vec<Option<&Tensor>> = slots.iter().map(|s| s.map(|i| &self.dry[i])).collect();
        let outs = eval::eval(&node, &args).map_err(|e| self.err(n, e.to_string()))?;
        let mut out_slots = Vec::new();
        for (name, t) in n.outputs.iter().zip(outs) {
            let s = self.new_slot(t, false);
            self.set(name, Val::Slot(s));
            out_slots.push(s);
        }
        self.steps.push(Step::Generic {
            node,
            inputs: slots,
            outputs: out_slots,
        });
        Ok(())
    }
}

/// Tiles of growth for a reach of `px` pixels in a map whose tiles are `tile/scale` wide. The tile
/// size is not known at load time, so the halo is kept in pixels-per-scale units: see `halo_for`.
fn halo_tiles(px: usize, scale: usize) -> usize {
    // Encodes reach in input pixels; converted to tiles once the tile size is chosen.
    px * scale
}

/// Tiles a layer's change spreads by, for a tile of `tile` input pixels.
pub fn halo_for(layer: &Layer, tile: usize) -> usize {
    layer.halo.div_ceil(tile)
}

fn resize_taps(
    len: usize,
    out: usize,
    s: f64,
    linear: bool,
    ct: &str,
    nearest_mode: &str,
) -> std::result::Result<ResizeTaps, String> {
    let mut t = ResizeTaps {
        i0: Vec::with_capacity(out),
        i1: Vec::with_capacity(out),
        frac: Vec::with_capacity(out),
    };
    for o in 0..out {
        let of = o as f64;
        let x = match ct {
            "half_pixel" => (of + 0.5) / s - 0.5,
            "pytorch_half_pixel" => {
                if out > 1 {
                    (of + 0.5) / s - 0.5
                } else {
                    0.0
                }
            }
            // ONNX uses the unrounded resized length here.
            "align_corners" => {
                let out_f = len as f64 * s;
                if out_f > 1.0 {
                    of * (len as f64 - 1.0) / (out_f - 1.0)
                } else {
                    0.0
                }
            }
            "asymmetric" => of / s,
            "tf_half_pixel_for_nn" => (of + 0.5) / s,
            m => return Err(format!(" with coordinate_transformation_mode {m}")),
        };
        let last = len as f64 - 1.0;
        if linear {
            let xc = x.clamp(0.0, last);
            let i0 = xc.floor();
            t.i0.push(i0 as u32);
            t.i1.push((i0 + 1.0).min(last) as u32);
            t.frac.push((xc - i0) as f32);
        } else {
            let i = match nearest_mode {
                "round_prefer_floor" => {
                    if x.fract() == 0.5 {
                        x.floor()
                    } else {
                        x.round()
                    }
                }
                "round_prefer_ceil" => x.round(),
                "floor" => x.floor(),
                "ceil" => x.ceil(),
                m => return Err(format!(" with nearest_mode {m}")),
            };
            let i = i.clamp(0.0, last) as u32;
            t.i0.push(i);
            t.i1.push(i);
            t.frac.push(0.0);
        }
    }
    Ok(t)
}
