//! Translates an ONNX graph into a `Plan`: folds constant subgraphs, fuses BatchNorm, Pad and
//! activations into convolutions, turns concat/split into channel views, and places every op on
//! either the tiled spatial path or the dense tensor path. Fails at load time, naming op and node.
//!
//! Here: the entry points, the `Builder` that walks the nodes and its dispatch by op. The op
//! families are in `conv` (Pad, Conv, BatchNorm), `spatial` (activations, pooling, Resize),
//! `channels` (Split, Concat, binary ops) and `tail` (rearrangements, slots, generic ops); graph
//! rewrites before and after the walk are in `rewrite`.

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

mod channels;
mod conv;
mod rewrite;
mod spatial;
mod tail;

use rewrite::{as_affine, fold_affine_into_pointwise, fuse_gated_activations, fuse_hardswish};

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

    /// Names `view` as the feature map `name` (no pad pending).
    fn set_feature(&mut self, name: &str, view: View) {
        self.set(name, Val::Feature { view, pad: None });
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
}

/// Pads (top, left, bottom, right) of `auto_pad` SAME_UPPER or SAME_LOWER: the output keeps
/// ⌈len / stride⌉ pixels per axis, and the odd pixel of padding goes after (UPPER) or before.
/// `axes`: (kernel, stride, dilation, input length) of the height and width axes.
fn same_pads(p: &mut [usize], auto_pad: &str, axes: [(usize, usize, usize, usize); 2]) {
    for (axis, (k, st, dl, len)) in axes.into_iter().enumerate() {
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
