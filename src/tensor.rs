//! A small row-major tensor in ONNX (NCHW) order, used for constants, folding and the dense tail.

/// Element type as ONNX declared it. Data is always held as f32; integers are exact up to 2^24,
/// which covers every shape and index value a CNN graph computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    Float,
    Int,
    Bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub dtype: DType,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor {
            shape,
            data,
            dtype: DType::Float,
        }
    }

    pub fn ints(shape: Vec<usize>, values: &[i64]) -> Self {
        Tensor {
            shape,
            data: values.iter().map(|&v| v as f32).collect(),
            dtype: DType::Int,
        }
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor::new(shape, vec![0.0; n])
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Values as integers (shape vectors, axes, indices).
    pub fn as_i64(&self) -> Vec<i64> {
        self.data
            .iter()
            .map(|&v| {
                if v >= 9.2e18 {
                    i64::MAX
                } else if v <= -9.2e18 {
                    i64::MIN
                } else {
                    v as i64
                }
            })
            .collect()
    }

    pub fn strides(&self) -> Vec<usize> {
        strides_of(&self.shape)
    }
}

pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

/// The most elements a tensor computed from a model's constants and shapes may have (1 GiB of
/// f32): a larger one comes from a broken model, not from a network.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The element count of `shape`, or an error naming `op` where it exceeds [`MAX_ELEMENTS`].
pub fn checked_len(op: &str, shape: &[usize]) -> crate::error::Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            crate::error::tensor_err(
                op,
                format!("shape {shape:?} has more than {MAX_ELEMENTS} elements"),
            )
        })
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// For each element of `out_shape`, the flat index into a tensor of `shape` broadcast to it.
pub fn broadcast_index_map(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let r = out_shape.len();
    let pad = r - shape.len();
    let src_strides = strides_of(shape);
    let mut eff = vec![0; r];
    for i in 0..shape.len() {
        eff[i + pad] = if shape[i] == 1 { 0 } else { src_strides[i] };
    }
    let total: usize = out_shape.iter().product();
    let mut idx = vec![0usize; r];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        out.push(idx.iter().zip(&eff).map(|(i, s)| i * s).sum());
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}
