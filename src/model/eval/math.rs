//! Element-wise math: unary, cast, clip and binary functions (with broadcasting), softmax, and
//! the mean over axes.

use super::*;

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
                *d = crate::model::act::exp(v - m);
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

pub(super) fn reduce_mean(x: &Tensor, axes: &[usize], keep: bool) -> Tensor {
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
        without_axes(&x.shape, axes)
    };
    Tensor::new(shape, sums.iter().map(|s| (s / cnt) as f32).collect())
}
