//! Reads an ONNX file into plain nodes, attributes and constant tensors.
//! Import translates; it never executes (see `plan.rs` for the translation into layers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use onnx_protobuf::{attribute_proto::AttributeType, Message, ModelProto, TensorProto};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The largest stride, dilation, pad, pooling window or group count the importer takes: no real
/// network comes near it, and size arithmetic on larger values could overflow.
pub const MAX_SPATIAL_ATTR: i64 = 1 << 16;

#[derive(Clone, Debug)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Str(String),
    Tensor(Tensor),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: String,
    pub name: String,
    /// Input value names; an empty string is an omitted optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: HashMap<String, Attr>,
}

impl Node {
    pub fn int(&self, key: &str, default: i64) -> i64 {
        match self.attrs.get(key) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }
    pub fn float(&self, key: &str, default: f32) -> f32 {
        match self.attrs.get(key) {
            Some(Attr::Float(v)) => *v,
            _ => default,
        }
    }
    pub fn ints(&self, key: &str) -> Option<Vec<i64>> {
        match self.attrs.get(key) {
            Some(Attr::Ints(v)) => Some(v.clone()),
            _ => None,
        }
    }
    /// The spatial attribute `key` (kernel_shape, strides, dilations, pads, output_padding):
    /// exactly `len` values, each from `min` to [`MAX_SPATIAL_ATTR`]; `default` for each where the
    /// attribute is absent. The error says which attribute and value are wrong.
    pub fn spatial(
        &self,
        key: &str,
        len: usize,
        min: i64,
        default: i64,
    ) -> std::result::Result<Vec<usize>, String> {
        // An empty list counts as absent, as onnxruntime reads it.
        let v = match self.ints(key) {
            Some(v) if !v.is_empty() => v,
            _ => vec![default; len],
        };
        if v.len() != len {
            return Err(format!(
                "{key} has {} values where {len} are expected",
                v.len()
            ));
        }
        match v.iter().find(|&&x| !(min..=MAX_SPATIAL_ATTR).contains(&x)) {
            Some(bad) => Err(format!(
                "{key} value {bad} is outside {min}..={MAX_SPATIAL_ATTR}"
            )),
            None => Ok(v.into_iter().map(|x| x as usize).collect()),
        }
    }

    /// The `group` attribute of a convolution: 1 where absent, an error unless 1 to
    /// [`MAX_SPATIAL_ATTR`].
    pub fn group(&self) -> std::result::Result<usize, String> {
        let g = self.int("group", 1);
        if (1..=MAX_SPATIAL_ATTR).contains(&g) {
            Ok(g as usize)
        } else {
            Err(format!("group value {g} is outside 1..={MAX_SPATIAL_ATTR}"))
        }
    }

    pub fn floats(&self, key: &str) -> Option<Vec<f32>> {
        match self.attrs.get(key) {
            Some(Attr::Floats(v)) => Some(v.clone()),
            _ => None,
        }
    }
    pub fn string(&self, key: &str, default: &str) -> String {
        match self.attrs.get(key) {
            Some(Attr::Str(v)) => v.clone(),
            _ => default.to_string(),
        }
    }
    pub fn tensor(&self, key: &str) -> Option<&Tensor> {
        match self.attrs.get(key) {
            Some(Attr::Tensor(t)) => Some(t),
            _ => None,
        }
    }
    /// The n-th input name if present and non-empty.
    pub fn input(&self, n: usize) -> Option<&str> {
        self.inputs
            .get(n)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }
}

/// A declared graph input or output: name and dims (None = symbolic).
#[derive(Clone, Debug)]
pub struct ValueInfo {
    pub name: String,
    pub dims: Vec<Option<usize>>,
}

#[derive(Clone, Debug)]
pub struct OnnxGraph {
    pub path: PathBuf,
    pub opset: i64,
    pub nodes: Vec<Node>,
    pub initializers: HashMap<String, Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

pub fn load(path: &Path) -> Result<OnnxGraph> {
    let bytes = std::fs::read(path).map_err(|source| Error::ModelIo {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

pub fn parse(bytes: &[u8], path: &Path) -> Result<OnnxGraph> {
    let decode_err = |reason: String| Error::ModelDecode {
        path: path.to_path_buf(),
        reason,
    };
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| decode_err(e.to_string()))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| decode_err("the file holds no graph".into()))?;
    if graph.node.is_empty() {
        return Err(decode_err("the graph has no nodes".into()));
    }
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0);

    let mut initializers = HashMap::new();
    for t in &graph.initializer {
        let tensor = tensor_from_proto(t).map_err(|reason| Error::BadModel {
            path: path.to_path_buf(),
            reason: format!("initializer `{}`: {reason}", t.name),
        })?;
        initializers.insert(t.name.clone(), tensor);
    }

    let mut nodes = Vec::with_capacity(graph.node.len());
    for (i, n) in graph.node.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{i}", n.op_type)
        } else {
            n.name.clone()
        };
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(Error::UnsupportedOp {
                path: path.to_path_buf(),
                op: format!("{}::{}", n.domain, n.op_type),
                node: name,
                detail: " (custom operator domain)".into(),
            });
        }
        let mut attrs = HashMap::new();
        for a in &n.attribute {
            let v = match a.type_.enum_value_or_default() {
                AttributeType::INT => Attr::Int(a.i),
                AttributeType::FLOAT => Attr::Float(a.f),
                AttributeType::INTS => Attr::Ints(a.ints.clone()),
                AttributeType::FLOATS => Attr::Floats(a.floats.clone()),
                AttributeType::STRING => Attr::Str(String::from_utf8_lossy(&a.s).into_owned()),
                AttributeType::TENSOR => {
                    let t = a.t.as_ref().cloned().unwrap_or_default();
                    Attr::Tensor(tensor_from_proto(&t).map_err(|reason| Error::BadNode {
                        path: path.to_path_buf(),
                        op: n.op_type.clone(),
                        node: name.clone(),
                        reason: format!("attribute {}: {reason}", a.name),
                    })?)
                }
                // Graph-valued and other attributes are not used by any supported op.
                _ => continue,
            };
            attrs.insert(a.name.clone(), v);
        }
        nodes.push(Node {
            op: n.op_type.clone(),
            name,
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
        });
    }

    let value_info = |v: &onnx_protobuf::ValueInfoProto| {
        let dims = v
            .type_
            .as_ref()
            .and_then(|t| t.tensor_type().shape.as_ref().cloned())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| {
                        if d.has_dim_value() && d.dim_value() > 0 {
                            Some(d.dim_value() as usize)
                        } else {
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        ValueInfo {
            name: v.name.clone(),
            dims,
        }
    };
    let inputs = graph
        .input
        .iter()
        .filter(|v| !initializers.contains_key(&v.name))
        .map(value_info)
        .collect();
    let outputs = graph.output.iter().map(value_info).collect();
    Ok(OnnxGraph {
        path: path.to_path_buf(),
        opset,
        nodes,
        initializers,
        inputs,
        outputs,
    })
}

/// Decodes a TensorProto into our tensor. Supported element types: float, double, float16,
/// int8..int64, uint8..uint64 and bool.
pub fn tensor_from_proto(t: &TensorProto) -> std::result::Result<Tensor, String> {
    if !t.external_data.is_empty() {
        return Err("external data files are not supported".into());
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = shape.iter().product();
    let raw = &t.raw_data;
    // ONNX TensorProto.DataType codes.
    let (data, dtype): (Vec<f32>, DType) = match t.data_type {
        1 => (
            if raw.is_empty() {
                t.float_data.clone()
            } else {
                le_chunks::<4>(raw).map(f32::from_le_bytes).collect()
            },
            DType::Float,
        ),
        11 => (
            if raw.is_empty() {
                t.double_data.iter().map(|&v| v as f32).collect()
            } else {
                le_chunks::<8>(raw)
                    .map(|b| f64::from_le_bytes(b) as f32)
                    .collect()
            },
            DType::Float,
        ),
        10 => (
            if raw.is_empty() {
                t.int32_data.iter().map(|&v| f16_to_f32(v as u16)).collect()
            } else {
                le_chunks::<2>(raw)
                    .map(|b| f16_to_f32(u16::from_le_bytes(b)))
                    .collect()
            },
            DType::Float,
        ),
        16 => (
            if raw.is_empty() {
                t.int32_data.iter().map(|&v| f32::from_bits((v as u32) << 16)).collect()
            } else {
                le_chunks::<2>(raw)
                    .map(|b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16))
                    .collect()
            },
            DType::Float,
        ),
        7 => (
            if raw.is_empty() {
                t.int64_data.iter().map(|&v| v as f32).collect()
            } else {
                le_chunks::<8>(raw)
                    .map(|b| i64::from_le_bytes(b) as f32)
                    .collect()
            },
            DType::Int,
        ),
        6 => (
            if raw.is_empty() {
                t.int32_data.iter().map(|&v| v as f32).collect()
            } else {
                le_chunks::<4>(raw)
                    .map(|b| i32::from_le_bytes(b) as f32)
                    .collect()
            },
            DType::Int,
        ),
        2 | 3 | 4 | 5 | 9 => {
            let signed = matches!(t.data_type, 3 | 5);
            let width = match t.data_type {
                4 | 5 => 2,
                _ => 1,
            };
            let vals: Vec<f32> = if raw.is_empty() {
                t.int32_data.iter().map(|&v| v as f32).collect()
            } else if width == 1 {
                raw.iter()
                    .map(|&b| if signed { b as i8 as f32 } else { b as f32 })
                    .collect()
            } else {
                le_chunks::<2>(raw)
                    .map(|b| {
                        let u = u16::from_le_bytes(b);
                        if signed {
                            u as i16 as f32
                        } else {
                            u as f32
                        }
                    })
                    .collect()
            };
            let dt = if t.data_type == 9 {
                DType::Bool
            } else {
                DType::Int
            };
            (vals, dt)
        }
        12 | 13 => (
            if raw.is_empty() {
                t.uint64_data.iter().map(|&v| v as f32).collect()
            } else if t.data_type == 12 {
                le_chunks::<4>(raw)
                    .map(|b| u32::from_le_bytes(b) as f32)
                    .collect()
            } else {
                le_chunks::<8>(raw)
                    .map(|b| u64::from_le_bytes(b) as f32)
                    .collect()
            },
            DType::Int,
        ),
        other => {
            return Err(format!(
                "unsupported tensor element type {other} (string, bfloat16 and complex tensors are not supported)"
            ))
        }
    };
    if data.len() != n {
        return Err(format!(
            "holds {} values but its shape {:?} needs {n}",
            data.len(),
            shape
        ));
    }
    Ok(Tensor { shape, data, dtype })
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert!((f16_to_f32(0x0001) - 5.96e-8).abs() < 1e-9);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = parse(b"this is not a protobuf at all", Path::new("x.onnx")).unwrap_err();
        assert!(err.to_string().contains("x.onnx"), "{err}");
    }
}
