//! Builds small ONNX models in memory for per-op tests.
#![allow(dead_code)]

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use super::Lcg;

pub struct Builder {
    g: GraphProto,
    rng: Lcg,
    n: usize,
}

pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
    S(&'static str),
}

impl Builder {
    /// A graph with one NCHW float input `x` of [1, c, h, w].
    pub fn new(c: i64, h: i64, w: i64) -> Self {
        let mut g = GraphProto::new();
        g.name = "test".into();
        g.input.push(value_info("x", &[1, c, h, w]));
        Builder {
            g,
            rng: Lcg(42),
            n: 0,
        }
    }

    /// The same graph with its input's height and width symbolic (`h`, `w`).
    pub fn symbolic_size(mut self) -> Self {
        let tt = self.g.input[0].type_.as_mut().unwrap().mut_tensor_type();
        let shape = tt.shape.as_mut().unwrap();
        for (d, name) in shape.dim[2..].iter_mut().zip(["h", "w"]) {
            d.set_dim_param(name.into());
        }
        self
    }

    pub fn init(&mut self, dims: &[i64], values: Vec<f32>) -> String {
        self.n += 1;
        let name = format!("w{}", self.n);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = dims.to_vec();
        t.data_type = DataType::FLOAT as i32;
        t.float_data = values;
        self.g.initializer.push(t);
        name
    }

    pub fn init_i64(&mut self, values: &[i64]) -> String {
        self.n += 1;
        let name = format!("i{}", self.n);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = vec![values.len() as i64];
        t.data_type = DataType::INT64 as i32;
        t.int64_data = values.to_vec();
        self.g.initializer.push(t);
        name
    }

    pub fn random(&mut self, dims: &[i64], scale: f32) -> String {
        let n: i64 = dims.iter().product();
        let v = (0..n)
            .map(|_| (self.rng.unit() - 0.5) * 2.0 * scale)
            .collect();
        self.init(dims, v)
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, A)]) -> String {
        self.n += 1;
        let out = format!("{}_{}", op.to_lowercase(), self.n);
        let mut nd = NodeProto::new();
        nd.op_type = op.into();
        nd.name = format!("{op}_{}", self.n);
        nd.input = inputs.iter().map(|s| s.to_string()).collect();
        nd.output = vec![out.clone()];
        for (k, v) in attrs {
            let mut a = AttributeProto::new();
            a.name = k.to_string();
            match v {
                A::I(i) => {
                    a.type_ = AttributeType::INT.into();
                    a.i = *i;
                }
                A::F(f) => {
                    a.type_ = AttributeType::FLOAT.into();
                    a.f = *f;
                }
                A::Is(is) => {
                    a.type_ = AttributeType::INTS.into();
                    a.ints = is.clone();
                }
                A::S(s) => {
                    a.type_ = AttributeType::STRING.into();
                    a.s = s.as_bytes().to_vec();
                }
            }
            nd.attribute.push(a);
        }
        self.g.node.push(nd);
        out
    }

    /// Conv with random weights and bias.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        pad: i64,
        group: i64,
        dilation: i64,
    ) -> String {
        let w = self.random(
            &[cout, cin / group, k, k],
            0.5 / ((cin / group * k * k) as f32).sqrt(),
        );
        let b = self.random(&[cout], 0.1);
        self.node(
            "Conv",
            &[x, &w, &b],
            &[
                ("kernel_shape", A::Is(vec![k, k])),
                ("strides", A::Is(vec![stride, stride])),
                ("pads", A::Is(vec![pad; 4])),
                ("group", A::I(group)),
                ("dilations", A::Is(vec![dilation, dilation])),
            ],
        )
    }

    pub fn bytes(mut self, outputs: &[&str], op: &str) -> Vec<u8> {
        for o in outputs {
            let mut v = ValueInfoProto::new();
            v.name = o.to_string();
            self.g.output.push(v);
        }
        let _ = op;
        let mut m = ModelProto::new();
        m.ir_version = 8;
        let mut os = OperatorSetIdProto::new();
        os.version = 17;
        m.opset_import.push(os);
        m.graph = Some(self.g).into();
        m.write_to_bytes().unwrap()
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for &d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        shape.dim.push(dim);
    }
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = DataType::FLOAT as i32;
    tt.shape = Some(shape).into();
    let mut tp = TypeProto::new();
    tp.set_tensor_type(tt);
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(tp).into();
    v
}

/// Writes `bytes` to a fresh temporary .onnx file.
pub fn temp_model(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "regiondrop-test-{}-{name}.onnx",
        std::process::id()
    ));
    std::fs::write(&p, bytes).unwrap();
    p
}
