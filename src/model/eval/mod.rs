//! Reference semantics of the non-spatial ONNX ops, on row-major tensors. Used to fold constant
//! subgraphs at load time and to run the (small) detection-head tail densely each frame.
//!
//! Here: which ops are generic, and `eval`'s dispatch by op. The ops themselves are in `math`
//! (element-wise, softmax, means), `shape` (ops that move values) and `linear` (MatMul and the
//! dense convolution).

use super::act::Act;
use super::onnx::Node;
use crate::error::{tensor_err, Result};
use crate::tensor::{
    broadcast_index_map, broadcast_shape, checked_len, norm_axis, strides_of, DType, Tensor,
};

mod linear;
mod math;
mod shape;

pub use linear::*;
pub use math::*;
pub use shape::*;

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
                    without_axes(&x.shape, &axes)
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

/// `shape` with the dims at `axes` left out (Squeeze, and reductions without keepdims).
fn without_axes(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect()
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
