//! Broken models give errors, never panics: the real models with their graphs mutated at random
//! (ops swapped, inputs and attributes dropped or rewired, attribute values out of range,
//! initializer dims changed, nodes removed) are imported, and those that still import run dense
//! and sparse frames on the CPU backend. Each must end in `Ok` or in an `Err`.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use gstregiondrop::backend::BackendKind;
use gstregiondrop::engine::{Engine, EngineConfig};
use gstregiondrop::error::panic_text;
use gstregiondrop::model::{import::translate, onnx, ImportOptions};
use gstregiondrop::preprocess::InputNorm;
use gstregiondrop::rng::Lcg;
use gstregiondrop::tensor::Tensor;
use onnx_protobuf::{GraphProto, Message, ModelProto};

const CASES_PER_MODEL: usize = 150;

const OPS: [&str; 20] = [
    "Conv",
    "Relu",
    "Add",
    "Mul",
    "Concat",
    "Reshape",
    "Transpose",
    "Slice",
    "Resize",
    "MaxPool",
    "Sigmoid",
    "Split",
    "Softmax",
    "Gather",
    "ConvTranspose",
    "BatchNormalization",
    "Identity",
    "Pad",
    "Flatten",
    "GlobalAveragePool",
];

/// Applies one random mutation to `g`; returns what it did.
fn mutate(g: &mut GraphProto, rng: &mut Lcg) -> String {
    let names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.clone())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .collect();
    let ni = rng.below(g.node.len());
    match rng.below(8) {
        5 => {
            g.node.remove(ni);
            format!("node {ni} removed")
        }
        6 => {
            let k = rng.below(g.initializer.len().max(1));
            let Some(t) = g.initializer.get_mut(k) else {
                return "nothing".into();
            };
            if t.dims.is_empty() {
                return "nothing".into();
            }
            let d = rng.below(t.dims.len());
            if rng.below(2) == 0 {
                // Empty, with no data: still a well-formed tensor.
                t.dims[d] = 0;
                t.raw_data.clear();
                t.float_data.clear();
                t.int64_data.clear();
                return format!("initializer {} emptied", t.name);
            }
            t.dims[d] = [0i64, 1, 2, 1000][rng.below(4)];
            format!("initializer {} dim {d} changed", t.name)
        }
        kind => mutate_node(&mut g.node[ni], kind, &names, rng),
    }
}

/// Mutation `kind` of one node (see [`mutate`]).
fn mutate_node(
    node: &mut onnx_protobuf::NodeProto,
    kind: usize,
    names: &[String],
    rng: &mut Lcg,
) -> String {
    let (inputs, attrs) = (node.input.len(), node.attribute.len());
    let name = node.name.clone();
    match kind {
        0 => {
            node.op_type = OPS[rng.below(OPS.len())].into();
            format!("{name} becomes {}", node.op_type)
        }
        1 if inputs > 0 => {
            node.input.remove(rng.below(inputs));
            format!("{name} loses an input")
        }
        2 if inputs > 0 => {
            node.input[rng.below(inputs)] = names[rng.below(names.len())].clone();
            format!("{name} reads another value")
        }
        3 if attrs > 0 => {
            let a = &mut node.attribute[rng.below(attrs)];
            let v = [0i64, -1, 1 << 40, 3, 7][rng.below(5)];
            a.i = v;
            for x in a.ints.iter_mut() {
                if rng.below(2) == 0 {
                    *x = v;
                }
            }
            if rng.below(3) == 0 {
                a.ints.pop();
            }
            format!("{name} attribute {} set to {v}", a.name)
        }
        4 if attrs > 0 => {
            node.attribute.remove(rng.below(attrs));
            format!("{name} loses an attribute")
        }
        7 if !node.output.is_empty() => {
            node.output[0] = names[rng.below(names.len())].clone();
            format!("{name} writes another value")
        }
        _ => "nothing".into(),
    }
}

/// Imports `bytes` and, where that succeeds, runs it on the CPU: one dense frame of mid-grey as a
/// tensor, then (RGB models) two image frames, the second one sparse.
fn import_and_run(bytes: &[u8], m: &common::RealModel) -> gstregiondrop::error::Result<()> {
    let graph = onnx::parse(bytes, std::path::Path::new(m.path))?;
    let plan = Arc::new(translate(graph, &ImportOptions { input_size: m.size })?);
    let (c, h, w) = (plan.input_c, plan.input_h, plan.input_w);
    let cfg = EngineConfig {
        backend: BackendKind::Cpu,
        threads: 1,
        ..Default::default()
    };
    let mut engine = Engine::new(plan, InputNorm::unit_rgb(), cfg)?;
    engine.process_tensor(&Tensor::new(vec![1, c, h, w], vec![0.5; c * h * w]))?;
    engine.outputs().map(drop)?;
    if c == 3 {
        // Two image frames, the second changed in its top third: a sparse run after a dense one.
        let mut rng = Lcg(5);
        let first: Vec<u8> = (0..w * h * 3).map(|_| rng.below(256) as u8).collect();
        let mut second = first.clone();
        for v in &mut second[..w * 3 * (h / 3)] {
            *v = v.wrapping_add(60);
        }
        engine.process(&first)?;
        engine.process(&second)?;
        engine.outputs().map(drop)?;
    }
    Ok(())
}

#[test]
fn mutated_real_models_fail_with_errors_not_panics() {
    let mut panics = Vec::new();
    for (mi, m) in common::real_models().iter().enumerate() {
        let base = ModelProto::parse_from_bytes(&std::fs::read(common::asset(m.path)).unwrap())
            .expect("the real model parses");
        let mut rng = Lcg(11 + mi as u64);
        let (mut ok, mut err) = (0, 0);
        for case in 0..CASES_PER_MODEL {
            let mut model = base.clone();
            let g = model.graph.as_mut().unwrap();
            let what: Vec<String> = (0..1 + rng.below(2)).map(|_| mutate(g, &mut rng)).collect();
            let bytes = model.write_to_bytes().unwrap();
            match catch_unwind(AssertUnwindSafe(|| import_and_run(&bytes, m))) {
                Ok(Ok(())) => ok += 1,
                Ok(Err(_)) => err += 1,
                Err(p) => panics.push(format!(
                    "{} case {case} ({}): {}",
                    m.path,
                    what.join(", "),
                    panic_text(&p)
                )),
            }
        }
        println!(
            "{}: {ok} mutated models ran, {err} were refused with an error",
            m.path
        );
        assert!(err > 0, "no mutation of {} was refused", m.path);
    }
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}

/// Out-of-range spatial attributes are refused by name, with the node and the value.
#[test]
fn out_of_range_attributes_are_named() {
    use common::onnx_build::{temp_model, Builder, A};
    let conv = |stride, pad, dilation| {
        move |b: &mut Builder| b.conv("x", 4, 8, 3, stride, pad, 1, dilation)
    };
    let pool = |attrs: Vec<(&'static str, Vec<i64>)>| {
        move |b: &mut Builder| {
            let attrs: Vec<(&str, A)> = attrs.iter().map(|(k, v)| (*k, A::Is(v.clone()))).collect();
            b.node("MaxPool", &["x"], &attrs)
        }
    };
    type AddNode = Box<dyn Fn(&mut Builder) -> String>;
    let cases: Vec<(&str, AddNode, &str)> = vec![
        (
            "Conv",
            Box::new(conv(0, 1, 1)),
            "strides value 0 is outside 1..=",
        ),
        (
            "Conv",
            Box::new(conv(1, -1, 1)),
            "pads value -1 is outside 0..=",
        ),
        (
            "Conv",
            Box::new(conv(1, 1, 1 << 40)),
            "dilations value 1099511627776",
        ),
        (
            "Conv",
            Box::new(|b: &mut Builder| {
                let w = b.random(&[8, 4, 3, 3], 0.1);
                b.node("Conv", &["x", &w], &[("group", A::I(-1))])
            }),
            "group value -1 is outside 1..=",
        ),
        (
            "MaxPool",
            Box::new(pool(vec![
                ("kernel_shape", vec![2, 2]),
                ("strides", vec![0, 2]),
            ])),
            "strides value 0 is outside 1..=",
        ),
        (
            "MaxPool",
            Box::new(pool(vec![
                ("kernel_shape", vec![2, 2]),
                ("pads", vec![0, 0, 1]),
            ])),
            "pads has 3 values where 4 are expected",
        ),
    ];
    for (i, (op, build, want)) in cases.iter().enumerate() {
        let mut b = Builder::new(4, 32, 32);
        let y = build(&mut b);
        let path = temp_model(&format!("bad-attr-{i}"), &b.bytes(&[&y], op));
        let Err(e) = gstregiondrop::model::import(&path, &ImportOptions::default()) else {
            panic!("{want}: the model was accepted")
        };
        let msg = e.to_string();
        assert!(
            msg.contains(want) && msg.contains(&format!("({op})")),
            "{msg}"
        );
        std::fs::remove_file(path).ok();
    }
}
