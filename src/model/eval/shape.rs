//! Ops that move values without computing them: Reshape, Transpose, Gather, Concat, Slice, Split.

use super::*;

/// Axes given as attribute (old opsets) or as the input at `idx` (new opsets).
pub(super) fn axes_input(node: &Node, inputs: &[Option<&Tensor>], idx: usize) -> Option<Vec<i64>> {
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

pub(super) fn gather(x: &Tensor, idx: &Tensor, axis: i64) -> Result<Tensor> {
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

pub(super) fn slice(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
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

pub(super) fn split(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
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
