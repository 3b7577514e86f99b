//! Reference semantics of the non-spatial ONNX ops, on row-major tensors. Used to fold constant
//! subgraphs at load time and to run the (small) detection-head tail densely each frame.

use super::act::Act;
use super::onnx::Node;
use crate::error::{tensor_err, Result};
use crate::tensor::{
    broadcast_index_map, broadcast_shape, checked_len, norm_axis, strides_of, DType, Tensor,
};

/// The ops `eval` understands.
pub const GENERIC_OPS: &[&str] = &[
    "Identity",
    "Constant",
    "Cast",
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Concat",
    "Reshape",
    "Range",
    "ConstantOfShape",
    "Expand",
    "Transpose",
    "Slice",
    "Split",
    "Softmax",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Min",
    "Max",
    "Equal",
    "Less",
    "Greater",
    "Where",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Floor",
    "Ceil",
    "Abs",
    "Reciprocal",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "SiLU",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Conv",
    "GlobalAveragePool",
    "ReduceMean",
    "MatMul",
    "Not",
];

pub fn is_generic(op: &str) -> bool {
    GENERIC_OPS.contains(&op)
}

/// Evaluates one node. `inputs[i]` is None for an omitted optional input.
pub fn eval(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let op = node.op.as_str();
    let req = |i: usize| -> Result<&Tensor> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| tensor_err(op, format!("input {i} is missing")))
    };
    let out = match op {
        "Identity" => req(0)?.clone(),
        "Constant" => {
            if let Some(t) = node.tensor("value") {
                t.clone()
            } else if let Some(v) = node.floats("value_floats") {
                Tensor::new(vec![v.len()], v)
            } else if let Some(v) = node.ints("value_ints") {
                Tensor::ints(vec![v.len()], &v)
            } else if node.attrs.contains_key("value_float") {
                Tensor::new(vec![], vec![node.float("value_float", 0.0)])
            } else if node.attrs.contains_key("value_int") {
                Tensor::ints(vec![], &[node.int("value_int", 0)])
            } else {
                return Err(tensor_err(op, "no supported value attribute"));
            }
        }
        "Cast" => {
            let mut t = req(0)?.clone();
            let (f, dtype) = cast_fn(node)?;
            t.data.iter_mut().for_each(|v| *v = f(*v));
            t.dtype = dtype;
            t
        }
        "Shape" => {
            let s: Vec<i64> = req(0)?.shape.iter().map(|&d| d as i64).collect();
            let r = s.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(node.int("start", 0));
            let end = clampi(node.int("end", r));
            let s = &s[start..end.max(start)];
            Tensor::ints(vec![s.len()], s)
        }
        "Size" => Tensor::ints(vec![], &[req(0)?.len() as i64]),
        "Gather" => gather(req(0)?, req(1)?, node.int("axis", 0))?,
        "Unsqueeze" => {
            let x = req(0)?;
            let axes = axes_input(node, inputs, 1).unwrap_or_default();
            let r = x.rank() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, r).ok_or_else(|| tensor_err(op, "bad axis")))
                .collect::<Result<_>>()?;
            axes.sort();
            if axes.windows(2).any(|w| w[0] == w[1]) {
                return Err(tensor_err(op, "repeated axis"));
            }
            let mut shape = x.shape.clone();
            for a in axes {
                shape.insert(a, 1);
            }
            Tensor { shape, ..x.clone() }
        }
        "Squeeze" => {
            let x = req(0)?;
            let axes = axes_input(node, inputs, 1);
            let shape: Vec<usize> = match axes {
                Some(axes) => {
                    let axes: Vec<usize> = axes
                        .iter()
                        .filter_map(|&a| norm_axis(a, x.rank()))
                        .collect();
                    x.shape
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, &d)| d)
                        .collect()
                }
                None => x.shape.iter().copied().filter(|&d| d != 1).collect(),
            };
            Tensor { shape, ..x.clone() }
        }
        "Flatten" => {
            let x = req(0)?;
            let a = norm_axis(node.int("axis", 1), x.rank() + 1)
                .ok_or_else(|| tensor_err(op, "bad axis"))?;
            let outer: usize = x.shape[..a].iter().product();
            Tensor {
                shape: vec![outer, x.len() / outer.max(1)],
                ..x.clone()
            }
        }
        "Concat" => {
            let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
            concat(&ts, node.int("axis", 0))?
        }
        "Reshape" => reshape(req(0)?, &req(1)?.as_i64(), node.int("allowzero", 0) != 0)?,
        "Range" => {
            let scalar = |i| {
                req(i)?
                    .data
                    .first()
                    .copied()
                    .ok_or_else(|| tensor_err(op, format!("input {i} is empty")))
            };
            let (s, l, d) = (scalar(0)?, scalar(1)?, scalar(2)?);
            if d == 0.0 {
                return Err(tensor_err(op, "delta is zero"));
            }
            let n = (((l - s) / d).ceil()).max(0.0) as usize;
            checked_len(op, &[n])?;
            let data: Vec<f32> = (0..n).map(|i| s + i as f32 * d).collect();
            Tensor {
                shape: vec![n],
                data,
                dtype: req(0)?.dtype,
            }
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = req(0)?.as_i64().iter().map(|&d| d as usize).collect();
            let (v, dt) = node
                .tensor("value")
                .map(|t| (t.data.first().copied().unwrap_or(0.0), t.dtype))
                .unwrap_or((0.0, DType::Float));
            let n = checked_len(op, &shape)?;
            Tensor {
                shape,
                data: vec![v; n],
                dtype: dt,
            }
        }
        "Expand" => {
            let x = req(0)?;
            let want: Vec<usize> = req(1)?.as_i64().iter().map(|&d| d as usize).collect();
            let shape = broadcast_shape(&x.shape, &want)
                .ok_or_else(|| tensor_err(op, "shapes do not broadcast"))?;
            checked_len(op, &shape)?;
            let map = broadcast_index_map(&x.shape, &shape);
            Tensor {
                data: map.iter().map(|&i| x.data[i]).collect(),
                shape,
                dtype: x.dtype,
            }
        }
        "Transpose" => {
            let x = req(0)?;
            let perm: Vec<usize> = node
                .ints("perm")
                .map(|p| p.iter().map(|&a| a as usize).collect())
                .unwrap_or_else(|| (0..x.rank()).rev().collect());
            transpose(x, &perm)?
        }
        "Slice" => slice(node, inputs)?,
        "Split" => return split(node, inputs),
        "Softmax" => {
            let x = req(0)?;
            let mut out = x.clone();
            softmax_into(&x.data, &mut out.data, softmax_extents(node, &x.shape)?);
            out
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Min" | "Max" | "Equal" | "Less" | "Greater" => {
            let mut acc = req(0)?.clone();
            for i in 1..inputs.len() {
                acc = binary(op, &acc, req(i)?)?;
            }
            acc
        }
        "Where" => {
            let (c, a, b) = (req(0)?, req(1)?, req(2)?);
            let s = broadcast_shape(
                &broadcast_shape(&c.shape, &a.shape).unwrap_or_default(),
                &b.shape,
            )
            .ok_or_else(|| tensor_err(op, "shapes do not broadcast"))?;
            checked_len(op, &s)?;
            let (mc, ma, mb) = (
                broadcast_index_map(&c.shape, &s),
                broadcast_index_map(&a.shape, &s),
                broadcast_index_map(&b.shape, &s),
            );
            let data = (0..mc.len())
                .map(|i| {
                    if c.data[mc[i]] != 0.0 {
                        a.data[ma[i]]
                    } else {
                        b.data[mb[i]]
                    }
                })
                .collect();
            Tensor {
                shape: s,
                data,
                dtype: a.dtype,
            }
        }
        "Not" | "Sqrt" | "Exp" | "Log" | "Neg" | "Floor" | "Ceil" | "Abs" | "Reciprocal" => {
            let mut t = req(0)?.clone();
            let f = unary_fn(op).expect("listed unary op");
            t.data.iter_mut().for_each(|v| *v = f(*v));
            if op == "Not" {
                t.dtype = DType::Bool;
            }
            t
        }
        "Clip" => {
            let mut t = req(0)?.clone();
            let (lo, hi) = clip_bounds(node, inputs);
            Act::Clip(lo, hi).apply_slice(&mut t.data);
            t
        }
        "Conv" => {
            let (x, w) = (req(0)?, req(1)?);
            let b = inputs.get(2).copied().flatten();
            let geom = ConvGeom::new(node, &x.shape, &w.shape, b.map(|b| &b.shape[..]))?;
            let mut out = Tensor::zeros(geom.out_shape());
            geom.run(&x.data, &w.data, b.map(|b| &b.data[..]), &mut out.data);
            out
        }
        "GlobalAveragePool" => {
            let x = req(0)?;
            reduce_mean(x, &(2..x.rank()).collect::<Vec<_>>(), true)
        }
        "ReduceMean" => {
            let x = req(0)?;
            let axes = axes_input(node, inputs, 1)
                .map(|a| {
                    a.iter()
                        .filter_map(|&v| norm_axis(v, x.rank()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_else(|| (0..x.rank()).collect());
            reduce_mean(x, &axes, node.int("keepdims", 1) != 0)
        }
        "MatMul" => matmul(req(0)?, req(1)?)?,
        _ => {
            if let Some(act) = Act::from_onnx(op, node) {
                let mut t = req(0)?.clone();
                act.apply_slice(&mut t.data);
                t
            } else {
                return Err(tensor_err(op, "not supported by the generic evaluator"));
            }
        }
    };
    Ok(vec![out])
}

/// Clip's bounds: attributes before opset 11, optional inputs after.
pub fn clip_bounds(node: &Node, inputs: &[Option<&Tensor>]) -> (f32, f32) {
    let lo = inputs
        .get(1)
        .copied()
        .flatten()
        .map(|t| t.data[0])
        .unwrap_or(node.float("min", f32::MIN));
    let hi = inputs
        .get(2)
        .copied()
        .flatten()
        .map(|t| t.data[0])
        .unwrap_or(node.float("max", f32::MAX));
    (lo, hi)
}

/// A per-element function of one value.
pub type UnaryFn = fn(f32) -> f32;

/// The per-element function of a unary math op (the activations are `Act`'s).
pub fn unary_fn(op: &str) -> Option<UnaryFn> {
    Some(match op {
        "Not" => |v| (v == 0.0) as u8 as f32,
        "Sqrt" => f32::sqrt,
        "Exp" => f32::exp,
        "Log" => f32::ln,
        "Neg" => |v| -v,
        "Floor" => f32::floor,
        "Ceil" => f32::ceil,
        "Abs" => f32::abs,
        "Reciprocal" => |v| 1.0 / v,
        _ => return None,
    })
}

/// Cast's per-element function and result type. ONNX type codes: 1 float, 10 f16, 11 double,
/// 9 bool, 8 string, 16 bfloat16, the others integer.
pub fn cast_fn(node: &Node) -> Result<(UnaryFn, DType)> {
    Ok(match node.int("to", 1) {
        1 | 10 | 11 => (|v| v, DType::Float),
        8 | 16 => {
            return Err(tensor_err(
                "Cast",
                "casting to string or bfloat16 is not supported",
            ))
        }
        9 => (|v| (v != 0.0) as u8 as f32, DType::Bool),
        _ => (f32::trunc, DType::Int),
    })
}

/// The per-element function of a binary op.
pub fn binary_fn(op: &str) -> Option<fn(f32, f32) -> f32> {
    Some(match op {
        "Add" => |x, y| x + y,
        "Sub" => |x, y| x - y,
        "Mul" => |x, y| x * y,
        "Div" => |x, y| x / y,
        "Pow" => f32::powf,
        "Min" => f32::min,
        "Max" => f32::max,
        "Equal" => |x, y| (x == y) as u8 as f32,
        "Less" => |x, y| (x < y) as u8 as f32,
        "Greater" => |x, y| (x > y) as u8 as f32,
        _ => return None,
    })
}

/// Whether a binary op's results are truncated: integer division.
pub fn truncates(op: &str, a: DType, b: DType) -> bool {
    op == "Div" && a == DType::Int && b == DType::Int
}

/// The softmax axis of a node for an input of rank `rank`, as (outer, n, inner) extents.
pub fn softmax_extents(node: &Node, shape: &[usize]) -> Result<(usize, usize, usize)> {
    let default_axis = if node.int("_opset", 13) < 13 { 1 } else { -1 };
    let a = norm_axis(node.int("axis", default_axis), shape.len())
        .ok_or_else(|| tensor_err("Softmax", "bad axis"))?;
    Ok((
        shape[..a].iter().product(),
        shape[a],
        shape[a + 1..].iter().product(),
    ))
}

/// Where a kernel writes: spans of an output array by flat offset. A plain slice, or (in the
/// backends' parallel drivers) a view of which each task writes a disjoint part.
pub trait Dest {
    fn span(&mut self, off: usize, len: usize) -> &mut [f32];
}

impl Dest for [f32] {
    #[inline(always)]
    fn span(&mut self, off: usize, len: usize) -> &mut [f32] {
        &mut self[off..off + len]
    }
}

/// Softmax of `x` over the middle extent of (outer, n, inner), into `out`.
pub fn softmax_into(x: &[f32], out: &mut [f32], ext: (usize, usize, usize)) {
    for o in 0..ext.0 {
        softmax_columns(x, out, ext, o, 0..ext.2);
    }
}

/// Softmax over the middle extent of (outer, n, inner) for outer block `o` and inner columns
/// `cols`, written through `out` (indexed like `x`). The inner index runs innermost, 64 at a time,
/// so the loops read contiguous values and vectorise.
#[inline(always)]
pub fn softmax_columns(
    x: &[f32],
    out: &mut (impl Dest + ?Sized),
    (_, n, inner): (usize, usize, usize),
    o: usize,
    cols: std::ops::Range<usize>,
) {
    const W: usize = 64;
    for i0 in cols.clone().step_by(W) {
        let w = W.min(cols.end - i0);
        let at = |k: usize| (o * n + k) * inner + i0;
        let mut max = [f32::MIN; W];
        for k in 0..n {
            for (m, &v) in max.iter_mut().zip(&x[at(k)..at(k) + w]) {
                *m = m.max(v);
            }
        }
        let mut sum = [0f32; W];
        for k in 0..n {
            let (src, dst) = (&x[at(k)..at(k) + w], out.span(at(k), w));
            for (((d, &v), &m), s) in dst.iter_mut().zip(src).zip(&max).zip(&mut sum) {
                *d = super::act::exp(v - m);
                *s += *d;
            }
        }
        for k in 0..n {
            for (d, &s) in out.span(at(k), w).iter_mut().zip(&sum) {
                *d /= s;
            }
        }
    }
}

/// Axes given as attribute (old opsets) or as the input at `idx` (new opsets).
fn axes_input(node: &Node, inputs: &[Option<&Tensor>], idx: usize) -> Option<Vec<i64>> {
    node.ints("axes")
        .or_else(|| inputs.get(idx).copied().flatten().map(|t| t.as_i64()))
}

pub fn reshape(x: &Tensor, want: &[i64], allowzero: bool) -> Result<Tensor> {
    let mut shape: Vec<i64> = want
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d == 0 && !allowzero {
                x.shape.get(i).map(|&v| v as i64).unwrap_or(0)
            } else {
                d
            }
        })
        .collect();
    let known: i64 = shape.iter().filter(|&&d| d >= 0).product();
    if let Some(p) = shape.iter().position(|&d| d == -1) {
        if known == 0 {
            return Err(tensor_err("Reshape", "cannot infer -1 with a zero dim"));
        }
        shape[p] = x.len() as i64 / known;
    }
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    if shape.iter().product::<usize>() != x.len() {
        return Err(tensor_err(
            "Reshape",
            format!("cannot reshape {:?} to {:?}", x.shape, want),
        ));
    }
    Ok(Tensor {
        shape,
        data: x.data.clone(),
        dtype: x.dtype,
    })
}

pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    if perm.len() != x.rank() {
        return Err(tensor_err("Transpose", "perm length differs from rank"));
    }
    let mut seen = vec![false; perm.len()];
    for &p in perm {
        if p >= perm.len() || std::mem::replace(&mut seen[p], true) {
            return Err(tensor_err(
                "Transpose",
                format!("perm {perm:?} is not a permutation of the axes"),
            ));
        }
    }
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let src_strides = x.strides();
    let strides: Vec<usize> = perm.iter().map(|&p| src_strides[p]).collect();
    let mut data = Vec::with_capacity(x.len());
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..x.len() {
        data.push(x.data[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(Tensor {
        shape,
        data,
        dtype: x.dtype,
    })
}

fn gather(x: &Tensor, idx: &Tensor, axis: i64) -> Result<Tensor> {
    let a = norm_axis(axis, x.rank()).ok_or_else(|| tensor_err("Gather", "bad axis"))?;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let n = x.shape[a] as i64;
    let mut shape = x.shape[..a].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&x.shape[a + 1..]);
    let mut data = Vec::with_capacity(checked_len("Gather", &shape)?);
    let indices = idx.as_i64();
    for o in 0..outer {
        for &i in &indices {
            let i = if i < 0 { i + n } else { i };
            if !(0..n).contains(&i) {
                return Err(tensor_err("Gather", format!("index {i} out of range {n}")));
            }
            let base = (o * x.shape[a] + i as usize) * inner;
            data.extend_from_slice(&x.data[base..base + inner]);
        }
    }
    Ok(Tensor {
        shape,
        data,
        dtype: x.dtype,
    })
}

pub fn concat(ts: &[&Tensor], axis: i64) -> Result<Tensor> {
    let first = ts
        .first()
        .ok_or_else(|| tensor_err("Concat", "no inputs"))?;
    let a = norm_axis(axis, first.rank()).ok_or_else(|| tensor_err("Concat", "bad axis"))?;
    let outer: usize = first.shape[..a].iter().product();
    let mut shape = first.shape.clone();
    shape[a] = 0;
    for t in ts {
        if t.rank() != first.rank()
            || t.shape[..a] != first.shape[..a]
            || t.shape[a + 1..] != first.shape[a + 1..]
        {
            return Err(tensor_err(
                "Concat",
                format!(
                    "shapes {:?} and {:?} differ off axis {a}",
                    first.shape, t.shape
                ),
            ));
        }
        shape[a] += t.shape[a];
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for t in ts {
            let chunk = t.len() / outer.max(1);
            data.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(Tensor {
        shape,
        data,
        dtype: first.dtype,
    })
}

fn slice(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| tensor_err("Slice", "no input"))?;
    let get = |i: usize, attr: &str| -> Option<Vec<i64>> {
        node.ints(attr)
            .or_else(|| inputs.get(i).copied().flatten().map(|t| t.as_i64()))
    };
    let starts = get(1, "starts").ok_or_else(|| tensor_err("Slice", "no starts"))?;
    let ends = get(2, "ends").ok_or_else(|| tensor_err("Slice", "no ends"))?;
    let axes = get(3, "axes").unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = inputs
        .get(4)
        .copied()
        .flatten()
        .map(|t| t.as_i64())
        .unwrap_or_else(|| vec![1; starts.len()]);
    if [ends.len(), axes.len(), steps.len()]
        .iter()
        .any(|&l| l != starts.len())
    {
        return Err(tensor_err(
            "Slice",
            "starts, ends, axes and steps differ in length",
        ));
    }
    let r = x.rank();
    let mut begin = vec![0i64; r];
    let mut step = vec![1i64; r];
    let mut count: Vec<usize> = x.shape.clone();
    for k in 0..starts.len() {
        let a = norm_axis(axes[k], r).ok_or_else(|| tensor_err("Slice", "bad axis"))?;
        let d = x.shape[a] as i64;
        if steps[k] == 0 {
            return Err(tensor_err("Slice", "step 0"));
        }
        // A step longer than the axis takes one element at most: clamped, the counts below
        // cannot overflow.
        let s = steps[k].clamp(-(d + 1), d + 1);
        let fix = |v: i64| if v < 0 { v + d } else { v };
        let (b, e) = if s > 0 {
            (fix(starts[k]).clamp(0, d), fix(ends[k]).clamp(0, d))
        } else {
            (
                fix(starts[k]).clamp(-1, d - 1),
                fix(ends[k]).clamp(-1, d - 1),
            )
        };
        let n = if s > 0 {
            ((e - b + s - 1) / s).max(0)
        } else {
            ((b - e + (-s) - 1) / (-s)).max(0)
        };
        begin[a] = b;
        step[a] = s;
        count[a] = n as usize;
    }
    let strides = x.strides();
    let total: usize = count.iter().product();
    let mut data = Vec::with_capacity(total);
    let mut idx = vec![0usize; r];
    for _ in 0..total {
        let off: i64 = (0..r)
            .map(|d| (begin[d] + idx[d] as i64 * step[d]) * strides[d] as i64)
            .sum();
        data.push(x.data[off as usize]);
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < count[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(Tensor {
        shape: count,
        data,
        dtype: x.dtype,
    })
}

/// Split sizes from the attribute (old opsets), the input (new) or equal parts; an error unless
/// they are non-negative and add up to `dim`.
pub fn split_sizes(node: &Node, split_input: Option<&Tensor>, dim: usize) -> Result<Vec<usize>> {
    let n_out = node.outputs.len().max(1);
    let sizes: Vec<usize> = match node
        .ints("split")
        .or_else(|| split_input.map(|t| t.as_i64()))
    {
        Some(v) => v
            .iter()
            .map(|&s| {
                usize::try_from(s).map_err(|_| tensor_err("Split", format!("split size {s}")))
            })
            .collect::<Result<_>>()?,
        None => {
            let n = node.int("num_outputs", n_out as i64);
            if !(1..=dim.max(n_out) as i64).contains(&n) {
                return Err(tensor_err("Split", format!("num_outputs {n}")));
            }
            let (n, part) = (n as usize, dim.div_ceil(n as usize));
            (0..n)
                .map(|i| part.min(dim - (part * i).min(dim)))
                .collect()
        }
    };
    if sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(dim) {
        return Err(tensor_err(
            "Split",
            format!("split sizes {sizes:?} do not add up to {dim}"),
        ));
    }
    Ok(sizes)
}

fn split(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| tensor_err("Split", "no input"))?;
    let a =
        norm_axis(node.int("axis", 0), x.rank()).ok_or_else(|| tensor_err("Split", "bad axis"))?;
    let sizes = split_sizes(node, inputs.get(1).copied().flatten(), x.shape[a])?;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let mut outs = Vec::new();
    let mut off = 0;
    for s in sizes {
        let mut data = Vec::with_capacity(outer * s * inner);
        for o in 0..outer {
            let base = (o * x.shape[a] + off) * inner;
            data.extend_from_slice(&x.data[base..base + s * inner]);
        }
        let mut shape = x.shape.clone();
        shape[a] = s;
        outs.push(Tensor {
            shape,
            data,
            dtype: x.dtype,
        });
        off += s;
    }
    Ok(outs)
}

pub fn binary(op: &str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = broadcast_shape(&a.shape, &b.shape).ok_or_else(|| {
        tensor_err(
            op,
            format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape),
        )
    })?;
    checked_len(op, &shape)?;
    let trunc = truncates(op, a.dtype, b.dtype);
    let f = binary_fn(op).ok_or_else(|| tensor_err(op, "not a binary op"))?;
    let (ma, mb) = (
        broadcast_index_map(&a.shape, &shape),
        broadcast_index_map(&b.shape, &shape),
    );
    let data = ma
        .iter()
        .zip(&mb)
        .map(|(&i, &j)| {
            let v = f(a.data[i], b.data[j]);
            if trunc {
                v.trunc()
            } else {
                v
            }
        })
        .collect();
    let dtype = match op {
        "Equal" | "Less" | "Greater" => DType::Bool,
        _ => a.dtype,
    };
    Ok(Tensor { shape, data, dtype })
}

fn reduce_mean(x: &Tensor, axes: &[usize], keep: bool) -> Tensor {
    let out_full: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let n_out: usize = out_full.iter().product();
    let mut sums = vec![0f64; n_out];
    let ostr = strides_of(&out_full);
    let mut idx = vec![0usize; x.rank()];
    for &v in &x.data {
        let o: usize = (0..x.rank())
            .map(|d| {
                if axes.contains(&d) {
                    0
                } else {
                    idx[d] * ostr[d]
                }
            })
            .sum();
        sums[o] += v as f64;
        for d in (0..x.rank()).rev() {
            idx[d] += 1;
            if idx[d] < x.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let cnt = (x.len() / n_out.max(1)) as f64;
    let shape = if keep {
        out_full
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    Tensor::new(shape, sums.iter().map(|s| (s / cnt) as f32).collect())
}

fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() < 2 || b.rank() != 2 || a.shape[a.rank() - 1] != b.shape[0] {
        return Err(tensor_err(
            "MatMul",
            format!("unsupported shapes {:?} x {:?}", a.shape, b.shape),
        ));
    }
    let k = b.shape[0];
    let n = b.shape[1];
    let m: usize = a.shape[..a.rank() - 1].iter().product();
    checked_len("MatMul", &[m, n])?;
    let mut data = vec![0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a.data[i * k + p];
            for j in 0..n {
                data[i * n + j] += av * b.data[p * n + j];
            }
        }
    }
    let mut shape = a.shape.clone();
    *shape.last_mut().unwrap() = n;
    Ok(Tensor::new(shape, data))
}

/// The geometry of a 2-D NCHW convolution of the small tail tensors (e.g. YOLOv8's DFL 1x1 conv
/// or a squeeze-excitation block's 1x1 convs).
#[derive(Clone, Debug)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub cig: usize,
    pub kh: usize,
    pub kw: usize,
    pub group: usize,
    pub strides: [i64; 2],
    pub dilations: [i64; 2],
    /// Top and left padding.
    pub pads: [i64; 2],
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// From the node and the shapes of its input, weights and bias.
    pub fn new(node: &Node, x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<Self> {
        if x.len() != 4 || w.len() != 4 {
            return Err(tensor_err("Conv", "only 2-D convolution is supported"));
        }
        let (c, h, wd) = (x[1], x[2], x[3]);
        let (co, cig, kh, kw) = (w[0], w[1], w[2], w[3]);
        if w.contains(&0) {
            return Err(tensor_err(
                "Conv",
                format!("weights {w:?} have an empty dimension"),
            ));
        }
        let group = node.group().map_err(|reason| tensor_err("Conv", reason))?;
        let attr = |key, len, min, default| {
            node.spatial(key, len, min, default)
                .map(|v| v.into_iter().map(|x| x as i64).collect::<Vec<_>>())
                .map_err(|reason| tensor_err("Conv", reason))
        };
        let s = attr("strides", 2, 1, 1)?;
        let d = attr("dilations", 2, 1, 1)?;
        let p = attr("pads", 4, 0, 0)?;
        if node.string("auto_pad", "NOTSET") != "NOTSET" && !(kh == 1 && kw == 1) {
            return Err(tensor_err("Conv", "auto_pad in the tail is not supported"));
        }
        if cig * group != c || co % group != 0 {
            return Err(tensor_err("Conv", "channel count does not match weights"));
        }
        if b.is_some_and(|b| b.iter().product::<usize>() != co) {
            return Err(tensor_err(
                "Conv",
                "bias length differs from the output channels",
            ));
        }
        let span = |len: usize, lo: i64, hi: i64, d: i64, k: usize| {
            len as i64 + lo + hi - d * (k as i64 - 1) - 1
        };
        let (span_h, span_w) = (
            span(h, p[0], p[2], d[0], kh),
            span(wd, p[1], p[3], d[1], kw),
        );
        if span_h < 0 || span_w < 0 {
            return Err(tensor_err("Conv", "kernel larger than the padded input"));
        }
        let (oh, ow) = (span_h / s[0] + 1, span_w / s[1] + 1);
        checked_len("Conv", &[co, oh as usize, ow as usize])?;
        Ok(ConvGeom {
            c,
            h,
            w: wd,
            co,
            cig,
            kh,
            kw,
            group,
            strides: [s[0], s[1]],
            dilations: [d[0], d[1]],
            pads: [p[0], p[1]],
            oh: oh as usize,
            ow: ow as usize,
        })
    }

    pub fn out_shape(&self) -> Vec<usize> {
        vec![1, self.co, self.oh, self.ow]
    }

    /// Convolves `x` ([1, C, H, W]) with `w` ([Co, C/g, kh, kw]) plus `b` into `out` ([1, Co, oh, ow]).
    pub fn run(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.c * self.h * self.w);
        if self.ow == 0 {
            return;
        }
        for (r, dst) in out.chunks_mut(self.ow).enumerate() {
            self.run_span(x, w, b, r, 0, dst);
        }
    }

    /// Outputs `ox0 .. ox0 + dst.len()` of output row `row` (= oc · oh + oy) into `dst`. Tap by tap
    /// over the span (contiguous, so the inner loop vectorises); each output sums its bias, then
    /// its taps in (ic, ky, kx) order, as one pixel at a time would.
    #[inline(always)]
    pub fn run_span(
        &self,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        row: usize,
        ox0: usize,
        dst: &mut [f32],
    ) {
        let (h, wd, cig, kh, kw) = (self.h as i64, self.w as i64, self.cig, self.kh, self.kw);
        let ([s0, s1], [d0, d1], [p0, p1]) = (self.strides, self.dilations, self.pads);
        let (oc, oy) = (row / self.oh, row % self.oh);
        let grp = oc / (self.co / self.group);
        let ox1 = ox0 + dst.len();
        dst.fill(b.map(|b| b[oc]).unwrap_or(0.0));
        for ic in 0..cig {
            let ci = grp * cig + ic;
            for ky in 0..kh {
                let iy = oy as i64 * s0 - p0 + ky as i64 * d0;
                if iy < 0 || iy >= h {
                    continue;
                }
                let src = &x[(ci * self.h + iy as usize) * self.w..][..self.w];
                for kx in 0..kw {
                    let wv = w[((oc * cig + ic) * kh + ky) * kw + kx];
                    // Output columns whose input column ox·s1 + off lies in the row.
                    let off = kx as i64 * d1 - p1;
                    let lo = if off >= 0 { 0 } else { (-off + s1 - 1) / s1 };
                    let hi = if wd - 1 - off < 0 {
                        0
                    } else {
                        (wd - 1 - off) / s1 + 1
                    };
                    let (lo, hi) = ((lo as usize).max(ox0), (hi as usize).min(ox1));
                    if lo >= hi {
                        continue;
                    }
                    if s1 == 1 {
                        let (a, n) = ((lo as i64 + off) as usize, hi - lo);
                        for (d, &v) in dst[lo - ox0..][..n].iter_mut().zip(&src[a..a + n]) {
                            *d += wv * v;
                        }
                    } else {
                        for ox in lo..hi {
                            dst[ox - ox0] += wv * src[(ox as i64 * s1 + off) as usize];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::Attr;
    use crate::rng::Lcg;

    /// One output at a time, every tap checked: the plain definition.
    fn conv_reference(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; g.co * g.oh * g.ow];
        let cog = g.co / g.group;
        for oc in 0..g.co {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = b[oc];
                    for ic in 0..g.cig {
                        let ci = oc / cog * g.cig + ic;
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = oy as i64 * g.strides[0] - g.pads[0]
                                    + ky as i64 * g.dilations[0];
                                let ix = ox as i64 * g.strides[1] - g.pads[1]
                                    + kx as i64 * g.dilations[1];
                                if iy < 0 || ix < 0 || iy >= g.h as i64 || ix >= g.w as i64 {
                                    continue;
                                }
                                acc += x[(ci * g.h + iy as usize) * g.w + ix as usize]
                                    * w[((oc * g.cig + ic) * g.kh + ky) * g.kw + kx];
                            }
                        }
                    }
                    out[(oc * g.oh + oy) * g.ow + ox] = acc;
                }
            }
        }
        out
    }

    /// The tail's convolution equals the plain definition bit for bit (same summation order),
    /// with strides, padding, dilation and groups.
    #[test]
    fn tail_conv_equals_the_definition() {
        let mut rng = Lcg(21);
        // (c, h, w, co, k, group, strides, pads, dilations)
        let cases = [
            (16, 4, 37, 1, 1, 1, [1, 1], [0, 0, 0, 0], [1, 1]),
            (4, 7, 9, 6, 3, 2, [2, 1], [1, 1, 1, 1], [1, 1]),
            (3, 8, 11, 5, 3, 1, [1, 3], [2, 0, 2, 1], [2, 1]),
            (2, 5, 5, 2, 5, 2, [1, 1], [0, 0, 0, 0], [1, 1]),
            (3, 6, 10, 4, 3, 1, [1, 2], [1, 1, 1, 1], [1, 1]),
            (2, 5, 13, 3, 3, 1, [2, 3], [1, 2, 0, 1], [1, 2]),
        ];
        for (c, h, w, co, k, group, strides, pads, dilations) in cases {
            let node = Node {
                op: "Conv".into(),
                name: "conv".into(),
                inputs: Vec::new(),
                outputs: vec!["y".into()],
                attrs: [
                    ("group".to_string(), Attr::Int(group)),
                    ("strides".to_string(), Attr::Ints(strides.to_vec())),
                    ("pads".to_string(), Attr::Ints(pads.to_vec())),
                    ("dilations".to_string(), Attr::Ints(dilations.to_vec())),
                ]
                .into_iter()
                .collect(),
            };
            let cig = c / group as usize;
            let g = ConvGeom::new(&node, &[1, c, h, w], &[co, cig, k, k], Some(&[co])).unwrap();
            let x = rng.vec(c * h * w, 1.0);
            let wt = rng.vec(co * cig * k * k, 1.0);
            let b = rng.vec(co, 1.0);
            let mut out = vec![f32::NAN; co * g.oh * g.ow];
            g.run(&x, &wt, Some(&b), &mut out);
            assert_eq!(
                out,
                conv_reference(&g, &x, &wt, &b),
                "case c{c} {h}x{w} k{k} g{group}"
            );
        }
    }

    /// Softmax over the middle axis against the textbook formula (library exp).
    #[test]
    fn softmax_equals_the_formula() {
        let mut rng = Lcg(4);
        for (outer, n, inner) in [(1, 16, 8400), (3, 5, 7), (2, 80, 1), (1, 1, 70)] {
            let x = rng.vec(outer * n * inner, 8.0);
            let mut out = vec![f32::NAN; x.len()];
            softmax_into(&x, &mut out, (outer, n, inner));
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| (o * n + k) * inner + i;
                    let m = (0..n).map(|k| x[at(k)]).fold(f32::MIN, f32::max);
                    let sum: f64 = (0..n).map(|k| ((x[at(k)] - m) as f64).exp()).sum();
                    for k in 0..n {
                        let want = ((x[at(k)] - m) as f64).exp() / sum;
                        let got = out[at(k)] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * want.max(1e-3),
                            "{got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
