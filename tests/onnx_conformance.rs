//! ONNX's own backend node tests (Debian's libonnx-testdata) through our importer and the dense
//! executor. Cases whose shapes the tiled engine cannot take (batch > 1, maps that do not divide
//! evenly, ...) are listed as skipped with the importer's reason; every case that imports must match.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gstregiondrop::backend::BackendKind;
use gstregiondrop::engine::{Engine, EngineConfig, RunMode};
use gstregiondrop::model::import::translate;
use std::collections::HashMap;

use gstregiondrop::model::eval::{eval, is_generic};
use gstregiondrop::model::onnx::{load, tensor_from_proto, Attr, OnnxGraph};
use gstregiondrop::model::ImportOptions;
use gstregiondrop::preprocess::InputNorm;
use gstregiondrop::tensor::Tensor;
use onnx_protobuf::{Message, TensorProto};

const DATA: &str = "/usr/share/libonnx-testdata/data/node";

/// Node-test name prefixes for the ops we support.
const PREFIXES: &[&str] = &[
    "test_conv",
    "test_convtranspose",
    "test_maxpool",
    "test_averagepool",
    "test_globalaveragepool",
    "test_resize",
    "test_upsample",
    "test_concat",
    "test_relu",
    "test_leakyrelu",
    "test_sigmoid",
    "test_hardswish",
    "test_hardsigmoid",
    "test_batchnorm",
    "test_tanh",
    "test_clip",
    "test_add",
    "test_mul",
    "test_sub",
    "test_div",
    "test_split",
    "test_slice",
    "test_transpose",
    "test_reshape",
    "test_softmax",
    "test_pad",
    "test_identity",
    "test_flatten",
    "test_squeeze",
    "test_unsqueeze",
    "test_gather_",
    "test_shape",
    "test_expand",
    "test_range",
    "test_constantofshape",
    "test_cast",
];

fn read_pb(p: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let t = TensorProto::parse_from_bytes(&bytes).map_err(|e| e.to_string())?;
    tensor_from_proto(&t)
}

/// How a case ran.
enum Ran {
    /// Through the importer and the tiled engine.
    Engine(f64),
    /// Through the dense tensor path (the engine's tail executor), node by node.
    Tail(f64),
}

fn compare(outs: &[Tensor], data: &Path) -> Result<f64, String> {
    let mut worst = 0f64;
    for (i, o) in outs.iter().enumerate() {
        let want = read_pb(&data.join(format!("output_{i}.pb")))?;
        if want.data.len() != o.data.len() {
            return Ok(f64::INFINITY);
        }
        for (&a, &b) in o.data.iter().zip(&want.data) {
            let err = (a - b).abs() as f64 / (1e-3 + b.abs() as f64);
            worst = worst.max(err);
        }
    }
    Ok(worst)
}

fn run_case(dir: &Path) -> Result<Ran, String> {
    let graph = load(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let data = dir.join("test_data_set_0");
    let inputs: Vec<Tensor> = (0..graph.inputs.len())
        .map(|i| read_pb(&data.join(format!("input_{i}.pb"))))
        .collect::<Result<_, _>>()?;
    match run_engine(graph.clone(), &inputs, &data) {
        Ok(err) => Ok(Ran::Engine(err)),
        Err(engine_reason) => {
            if !graph.nodes.iter().all(|n| is_generic(&n.op)) {
                return Err(engine_reason);
            }
            let mut vals: HashMap<String, Tensor> = graph.initializers.clone();
            for (vi, t) in graph.inputs.iter().zip(&inputs) {
                vals.insert(vi.name.clone(), t.clone());
            }
            for n in &graph.nodes {
                let mut node = n.clone();
                node.attrs.insert("_opset".into(), Attr::Int(graph.opset));
                let args: Vec<Option<&Tensor>> = n.inputs.iter().map(|i| vals.get(i)).collect();
                let outs = eval(&node, &args).map_err(|e| e.to_string())?;
                for (name, t) in n.outputs.iter().zip(outs) {
                    vals.insert(name.clone(), t);
                }
            }
            let outs: Vec<Tensor> = graph
                .outputs
                .iter()
                .map(|o| vals[&o.name].clone())
                .collect();
            Ok(Ran::Tail(compare(&outs, &data)?))
        }
    }
}

fn run_engine(mut graph: OnnxGraph, inputs: &[Tensor], data: &Path) -> Result<f64, String> {
    // The first input is the image; the others become constants.
    for (vi, t) in graph.inputs[1..].iter().zip(&inputs[1..]) {
        graph.initializers.insert(vi.name.clone(), t.clone());
    }
    let x = inputs.first().ok_or("no input")?.clone();
    graph.inputs.truncate(1);
    if x.rank() != 4 {
        return Err(format!("input rank {}", x.rank()));
    }
    graph.inputs[0].dims = x.shape.iter().map(|&d| Some(d)).collect();
    let plan = Arc::new(translate(graph, &ImportOptions::default()).map_err(|e| e.to_string())?);
    let cfg = EngineConfig {
        backend: BackendKind::Cpu,
        mode: RunMode::Dense,
        threads: 1,
        tile: plan.max_scale,
        ..Default::default()
    };
    let mut e = Engine::new(plan.clone(), InputNorm::unit_rgb(), cfg).map_err(|e| e.to_string())?;
    e.process_tensor(&x).map_err(|e| e.to_string())?;
    let outs = e.outputs().map_err(|e| e.to_string())?;
    compare(&outs, data)
}

#[test]
fn onnx_backend_node_tests() {
    let root = PathBuf::from(DATA);
    assert!(
        root.is_dir(),
        "{DATA} is missing: install Debian's libonnx-testdata (./regiondrop.sh setup does)"
    );
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            // bfloat16 data is not a type we support: those cases are not ours to run.
            PREFIXES.iter().any(|pre| n.starts_with(pre))
                && !n.ends_with("_expanded")
                && !n.contains("BFLOAT16")
        })
        .collect();
    cases.sort();
    let (mut passed, mut tail, mut failed, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in &cases {
        let name = c.file_name().unwrap().to_string_lossy().to_string();
        match run_case(c) {
            Ok(Ran::Engine(err)) if err <= 1e-3 => passed.push(name),
            Ok(Ran::Tail(err)) if err <= 1e-3 => tail.push(name),
            Ok(Ran::Engine(err) | Ran::Tail(err)) => {
                failed.push(format!("{name}: error {err:.3e}"))
            }
            Err(reason) => skipped.push(format!("{name}: {}", reason.lines().next().unwrap_or(""))),
        }
    }
    println!(
        "PASSED through the tiled engine ({}): {}",
        passed.len(),
        passed.join(" ")
    );
    println!(
        "PASSED through the dense tensor path ({}): {}",
        tail.len(),
        tail.join(" ")
    );
    println!("SKIPPED as unsupported ({}):", skipped.len());
    for s in &skipped {
        println!("  {s}");
    }
    println!("FAILED ({}): {:#?}", failed.len(), failed);
    println!(
        "conformance: {} passed ({} engine, {} tensor path), {} failed, {} skipped of {}",
        passed.len() + tail.len(),
        passed.len(),
        tail.len(),
        failed.len(),
        skipped.len(),
        cases.len()
    );
    assert!(
        failed.is_empty(),
        "cases that imported but disagree: {failed:#?}"
    );
    assert!(
        passed.len() >= 15 && passed.len() + tail.len() >= 80,
        "too few conformance cases ran"
    );
}
