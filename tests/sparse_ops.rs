//! Every layer type, sparse (exact mode, random masks, partial border tiles) against dense, and
//! dense against the reference semantics of the tensor path where those cover the op.

mod common;

use common::onnx_build::{temp_model, Builder, A};
use common::*;

use std::sync::Arc;

use gstregiondrop::engine::{EngineConfig, RunMode};
use gstregiondrop::mask::RegionMask;
use gstregiondrop::model::act::Act;
use gstregiondrop::model::plan::LayerOp;
use gstregiondrop::model::{import, ImportOptions};
use gstregiondrop::preprocess::InputNorm;
use gstregiondrop::tensor::Tensor;

/// 96×80 input: with 32-pixel tiles the bottom row of tiles is half height.
const W: i64 = 96;
const H: i64 = 80;

fn check(name: &str, bytes: Vec<u8>) {
    let path = temp_model(name, &bytes);
    let plan = Arc::new(
        import(&path, &ImportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}")),
    );
    let norm = InputNorm::unit_rgb();
    let grid = plan.grid(32);
    let mut rng = Lcg(name.len() as u64 * 7919);
    let mut image: Vec<u8> = (0..W * H * 3)
        .map(|_| (rng.next_u32() % 256) as u8)
        .collect();
    for exact in [true, false] {
        let mut sparse = engine(
            &plan,
            &norm,
            EngineConfig {
                mode: RunMode::Sparse,
                exact,
                ..Default::default()
            },
        );
        let mut dense = engine(&plan, &norm, dense_cfg());
        sparse
            .process_with_mask(&image, &RegionMask::full(&grid))
            .unwrap();
        for round in 0..4 {
            let mut mask = RegionMask::empty(&grid);
            for t in 0..grid.len() {
                mask.set(t, rng.unit() < 0.35);
            }
            if round == 3 {
                mask = RegionMask::full(&grid);
            }
            for t in 0..grid.len() {
                if mask.get(t) {
                    let (x0, y0, x1, y1) = grid.rect(t, 1, W as usize, H as usize);
                    for y in y0..y1 {
                        for x in x0..x1 {
                            for c in 0..3 {
                                image[(y * W as usize + x) * 3 + c] = (rng.next_u32() % 256) as u8;
                            }
                        }
                    }
                }
            }
            sparse.process_with_mask(&image, &mask).unwrap();
            dense.process(&image).unwrap();
            let d = rel_max_diff(&sparse.outputs().unwrap(), &dense.outputs().unwrap());
            // The common mask (not exact) is only guaranteed equal when every tile is recomputed.
            if exact || mask.is_full() {
                assert!(
                    d <= 1e-5,
                    "{name} exact={exact} round {round}: sparse vs dense {d:e}"
                );
            }
        }
    }
    std::fs::remove_file(path).ok();
}

/// For the model at `path`: the dense engine's outputs on a random image (from `seed`), and the
/// reference evaluator's value of every tensor the graph's first `nodes` nodes produce, by name
/// (`usize::MAX`: all of them).
fn dense_and_reference(
    path: &std::path::Path,
    plan: &Arc<gstregiondrop::model::Plan>,
    seed: u64,
    nodes: usize,
) -> (Vec<Tensor>, std::collections::HashMap<String, Tensor>) {
    let graph = gstregiondrop::model::onnx::load(path).unwrap();
    let norm = InputNorm::unit_rgb();
    let mut rng = Lcg(seed);
    let image: Vec<u8> = (0..W * H * 3)
        .map(|_| (rng.next_u32() % 256) as u8)
        .collect();
    let mut e = engine(plan, &norm, dense_cfg());
    e.process(&image).unwrap();
    let ours = e.outputs().unwrap();
    let mut vals: std::collections::HashMap<String, Tensor> = graph.initializers.clone();
    vals.insert(
        graph.inputs[0].name.clone(),
        Tensor::new(
            vec![1, 3, H as usize, W as usize],
            norm.to_nchw(&image, W as usize, H as usize),
        ),
    );
    for n in graph.nodes.iter().take(nodes) {
        let ins: Vec<Option<&Tensor>> = n.inputs.iter().map(|i| vals.get(i)).collect();
        let out = gstregiondrop::model::eval::eval(n, &ins).unwrap().remove(0);
        vals.insert(n.outputs[0].clone(), out);
    }
    (ours, vals)
}
#[test]
fn conv_stride2_odd_tiles_depthwise_pointwise() {
    let mut b = Builder::new(3, H, W);
    let c1 = b.conv("x", 3, 8, 3, 1, 1, 1, 1);
    let r1 = b.node("Relu", &[&c1], &[]);
    let c2 = b.conv(&r1, 8, 16, 3, 2, 1, 1, 1);
    let dw = b.conv(&c2, 16, 16, 3, 1, 1, 16, 1);
    let l = b.node("LeakyRelu", &[&dw], &[("alpha", A::F(0.1))]);
    let pw = b.conv(&l, 16, 12, 1, 1, 0, 1, 1);
    let g = b.conv(&pw, 12, 12, 3, 2, 1, 3, 1);
    check("conv", b.bytes(&[&g], "conv"));
}

#[test]
fn dilated_5x5_conv_and_hardswish_silu() {
    let mut b = Builder::new(3, H, W);
    let c = b.conv("x", 3, 8, 5, 1, 4, 1, 2);
    let hs = b.node("HardSwish", &[&c], &[]);
    let c2 = b.conv(&hs, 8, 8, 3, 1, 1, 1, 1);
    let s = b.node("Sigmoid", &[&c2], &[]);
    let silu = b.node("Mul", &[&c2, &s], &[]);
    check("dilated", b.bytes(&[&silu], "dilated"));
}

/// HardSwish written out as Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6), as paddle2onnx exports it,
/// becomes one activation fused into the convolution (no element-wise layers left), and runs
/// sparse like any other.
#[test]
fn written_out_hardswish_fuses_into_the_conv() {
    let mut b = Builder::new(3, H, W);
    let c = b.conv("x", 3, 8, 3, 1, 1, 1, 1);
    let (three, zero, six, six2) = (
        b.init(&[], vec![3.0]),
        b.init(&[], vec![0.0]),
        b.init(&[], vec![6.0]),
        b.init(&[1], vec![6.0]),
    );
    let add = b.node("Add", &[&c, &three], &[]);
    let clip = b.node("Clip", &[&add, &zero, &six], &[]);
    let mul = b.node("Mul", &[&clip, &c], &[]);
    let hs = b.node("Div", &[&mul, &six2], &[]);
    let bytes = b.bytes(&[&hs], "hardswish");
    let path = temp_model("hardswish-written-out", &bytes);
    let plan = import(&path, &ImportOptions::default()).unwrap();
    let layers: Vec<_> = plan.layers().collect();
    assert_eq!(layers.len(), 1, "{layers:?}");
    let gstregiondrop::model::plan::LayerOp::Conv(spec) = &layers[0].op else {
        panic!("not a conv: {:?}", layers[0].op)
    };
    assert_eq!(spec.act, gstregiondrop::model::act::Act::HardSwish);
    std::fs::remove_file(path).ok();
    check("hardswish-written-out", bytes);
}

/// Multiplying, adding and subtracting constants after a convolution (MobileOne-style scale and
/// shift) fold into it, and the chain after its activation becomes one affine layer; the result
/// equals the reference semantics node by node.
#[test]
fn constant_scale_and_shift_fold_into_their_producer() {
    let mut b = Builder::new(3, H, W);
    let c = b.conv("x", 3, 8, 3, 1, 1, 1, 1);
    let s8 = b.random(&[1, 8, 1, 1], 1.0);
    let t8 = b.random(&[1, 8, 1, 1], 0.5);
    let half = b.init(&[], vec![0.5]);
    let u8c = b.random(&[1, 8, 1, 1], 0.5);
    let m1 = b.node("Mul", &[&c, &s8], &[]);
    let a1 = b.node("Add", &[&t8, &m1], &[]);
    let r = b.node("Relu", &[&a1], &[]);
    let m2 = b.node("Mul", &[&r, &half], &[]);
    let s2 = b.node("Sub", &[&m2, &u8c], &[]);
    let m3 = b.node("Mul", &[&s2, &s8], &[]);
    let bytes = b.bytes(&[&m3], "fold");
    let path = temp_model("fold", &bytes);
    let plan = Arc::new(import(&path, &ImportOptions::default()).unwrap());
    let layers: Vec<_> = plan.layers().map(|l| &l.op).collect();
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert!(
        matches!(layers[0], LayerOp::Conv(c) if c.act == Act::Relu),
        "{layers:?}"
    );
    assert!(matches!(layers[1], LayerOp::Affine { .. }), "{layers:?}");
    // Dense against the reference evaluator, node by node.
    let (ours, vals) = dense_and_reference(&path, &plan, 3, usize::MAX);
    let d = rel_max_diff(&ours, &[vals[&m3].clone()]);
    assert!(d <= 1e-5, "dense vs reference: {d:e}");
    std::fs::remove_file(path).ok();
    check("fold", bytes);
}

/// A constant scale and shift before a 1×1 convolution fold into it (the affine layer goes);
/// before a padded 3×3 one they stay (padding would see the shift). Both equal the reference.
#[test]
fn scale_and_shift_before_a_pointwise_conv_fold_into_it() {
    for (k, pad, want_layers) in [(1i64, 0i64, 2usize), (3, 1, 3)] {
        let mut b = Builder::new(3, H, W);
        let c = b.conv("x", 3, 8, 3, 1, 1, 1, 1);
        let r = b.node("Relu", &[&c], &[]);
        let s8 = b.random(&[1, 8, 1, 1], 1.0);
        let t8 = b.random(&[1, 8, 1, 1], 0.5);
        let m = b.node("Mul", &[&r, &s8], &[]);
        let a = b.node("Add", &[&m, &t8], &[]);
        let out = b.conv(&a, 8, 6, k, 1, pad, 1, 1);
        let name = format!("fold-pointwise-{k}");
        let bytes = b.bytes(&[&out], &name);
        let path = temp_model(&name, &bytes);
        let plan = Arc::new(import(&path, &ImportOptions::default()).unwrap());
        let layers: Vec<_> = plan.layers().map(|l| &l.op).collect();
        assert_eq!(layers.len(), want_layers, "{name}: {layers:?}");
        let (ours, vals) = dense_and_reference(&path, &plan, 4, usize::MAX);
        let d = rel_max_diff(&ours, &[vals[&out].clone()]);
        assert!(d <= 1e-5, "{name}: dense vs reference: {d:e}");
        std::fs::remove_file(path).ok();
        check(&name, bytes);
    }
}

#[test]
fn pooling_5x5_and_average() {
    let mut b = Builder::new(3, H, W);
    let c = b.conv("x", 3, 8, 3, 1, 1, 1, 1);
    let mp = b.node(
        "MaxPool",
        &[&c],
        &[
            ("kernel_shape", A::Is(vec![5, 5])),
            ("pads", A::Is(vec![2; 4])),
        ],
    );
    let ap = b.node(
        "AveragePool",
        &[&mp],
        &[
            ("kernel_shape", A::Is(vec![3, 3])),
            ("strides", A::Is(vec![2, 2])),
            ("pads", A::Is(vec![1; 4])),
        ],
    );
    let mp2 = b.node(
        "MaxPool",
        &[&ap],
        &[
            ("kernel_shape", A::Is(vec![2, 2])),
            ("strides", A::Is(vec![2, 2])),
        ],
    );
    check("pool", b.bytes(&[&mp2], "pool"));
}

#[test]
fn upsample_concat_add_split() {
    let mut b = Builder::new(3, H, W);
    let c1 = b.conv("x", 3, 8, 3, 1, 1, 1, 1);
    let c2 = b.conv(&c1, 8, 8, 3, 2, 1, 1, 1);
    let scales = b.init(&[4], vec![1.0, 1.0, 2.0, 2.0]);
    let up = b.node("Resize", &[&c2, "", &scales], &[("mode", A::S("nearest"))]);
    let cat = b.node("Concat", &[&c1, &up], &[("axis", A::I(1))]);
    let c3 = b.conv(&cat, 16, 8, 3, 1, 1, 1, 1);
    let sum = b.node("Add", &[&c3, &c1], &[]);
    let lin = b.node("Resize", &[&c2, "", &scales], &[("mode", A::S("linear"))]);
    let cat2 = b.node("Concat", &[&sum, &lin], &[("axis", A::I(1))]);
    check("upcat", b.bytes(&[&cat2], "upcat"));
}

#[test]
fn transposed_conv_and_bilinear_downscale() {
    let mut b = Builder::new(3, H, W);
    let c1 = b.conv("x", 3, 8, 3, 2, 1, 1, 1);
    let half = b.init(&[4], vec![1.0, 1.0, 0.5, 0.5]);
    let down = b.node("Resize", &[&c1, "", &half], &[("mode", A::S("linear"))]);
    let w = b.random(&[8, 4, 2, 2], 0.3);
    let ct = b.node(
        "ConvTranspose",
        &[&down, &w],
        &[
            ("kernel_shape", A::Is(vec![2, 2])),
            ("strides", A::Is(vec![2, 2])),
        ],
    );
    check("convt", b.bytes(&[&ct], "convt"));
}

#[test]
fn dense_conv_matches_the_reference_semantics() {
    let mut b = Builder::new(3, H, W);
    let c1 = b.conv("x", 3, 6, 3, 2, 1, 1, 1);
    let c2 = b.conv(&c1, 6, 6, 3, 1, 1, 3, 1);
    let bytes = b.bytes(&[&c2], "ref");
    let path = temp_model("ref", &bytes);
    let plan = Arc::new(import(&path, &ImportOptions::default()).unwrap());
    // Node by node with the tensor path's naive NCHW convolution.
    let (ours, vals) = dense_and_reference(&path, &plan, 5, usize::MAX);
    let d = rel_max_diff(&ours, &[vals[&c2].clone()]);
    assert!(d <= 1e-5, "dense vs reference: {d:e}");
    std::fs::remove_file(path).ok();
}

/// Transposed convolutions whose kernel equals their stride (one tap per output pixel: the CPU
/// backend's own kernel for few output channels, and the generic one for more), dense, against
/// the reference semantics node by node.
#[test]
fn kernel_equals_stride_transposed_convs_match_the_reference_semantics() {
    for (cout, k) in [(1i64, 2i64), (5, 2), (24, 2)] {
        let mut b = Builder::new(3, H, W);
        let c1 = b.conv("x", 3, 24, 3, 2, 1, 1, 1);
        let w = b.random(&[24, cout, k, k], 0.3);
        let bias = b.random(&[cout], 0.2);
        let ct = b.node(
            "ConvTranspose",
            &[&c1, &w, &bias],
            &[
                ("kernel_shape", A::Is(vec![k, k])),
                ("strides", A::Is(vec![k, k])),
            ],
        );
        let name = format!("convt_k{k}_c{cout}");
        let bytes = b.bytes(&[&ct], &name);
        let path = temp_model(&name, &bytes);
        let plan = Arc::new(import(&path, &ImportOptions::default()).unwrap());
        // The convolution by the reference evaluator, the transposed one by its ONNX definition:
        // y[co][iy·k + ky][ix·k + kx] = b[co] + Σ_ci x[ci][iy][ix] · W[ci][co][ky][kx].
        let (ours, vals) = dense_and_reference(&path, &plan, 11, 1);
        let v = &vals[&c1];
        let (ci_n, ih, iw) = (v.shape[1], v.shape[2], v.shape[3]);
        let (co_n, k) = (cout as usize, k as usize);
        let (wt, bt) = (&vals[&w].data, &vals[&bias].data);
        let (oh, ow) = (ih * k, iw * k);
        let mut y = vec![0f32; co_n * oh * ow];
        for co in 0..co_n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (iy, ky, ix, kx) = (oy / k, oy % k, ox / k, ox % k);
                    let mut acc = bt[co];
                    for ci in 0..ci_n {
                        acc += v.data[(ci * ih + iy) * iw + ix]
                            * wt[((ci * co_n + co) * k + ky) * k + kx];
                    }
                    y[(co * oh + oy) * ow + ox] = acc;
                }
            }
        }
        let want = gstregiondrop::tensor::Tensor::new(vec![1, co_n, oh, ow], y);
        let d = rel_max_diff(&ours, &[want]);
        assert!(d <= 1e-5, "{name}: dense vs reference: {d:e}");
        std::fs::remove_file(path).ok();
    }
}

#[test]
fn bad_models_fail_at_load_with_named_errors() {
    let dir = std::env::temp_dir();
    // Not ONNX at all.
    let junk = dir.join(format!("regiondrop-junk-{}.onnx", std::process::id()));
    std::fs::write(&junk, b"GIF89a definitely not a model").unwrap();
    let e = import(&junk, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a valid ONNX model") && e.contains("regiondrop-junk"),
        "{e}"
    );
    // Truncated real model.
    let real = std::fs::read(asset("data/models/nanodet-416.onnx")).unwrap();
    let cut = dir.join(format!("regiondrop-cut-{}.onnx", std::process::id()));
    std::fs::write(&cut, &real[..real.len() / 3]).unwrap();
    let e = import(&cut, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("regiondrop-cut"), "{e}");
    // An op we do not support, named with its node and file.
    let mut b = Builder::new(3, H, W);
    let c = b.conv("x", 3, 4, 3, 1, 1, 1, 1);
    let bad = b.node("LpNormalization", &[&c], &[]);
    let p = temp_model("unsupported", &b.bytes(&[&bad], "x"));
    let e = import(&p, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("LpNormalization")
            && e.contains("LpNormalization_")
            && e.contains("unsupported"),
        "{e}"
    );
    // A convolution whose bias does not match its output channels.
    let mut b = Builder::new(3, H, W);
    let w = b.random(&[16, 3, 3, 3], 0.1);
    let short = b.random(&[15], 0.1);
    let conv = b.node(
        "Conv",
        &["x", &w, &short],
        &[
            ("kernel_shape", A::Is(vec![3, 3])),
            ("pads", A::Is(vec![1; 4])),
        ],
    );
    let p_bias = temp_model("short-bias", &b.bytes(&[&conv], "x"));
    let e = import(&p_bias, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("short-bias") && e.contains("Conv_") && e.contains("15 values for 16"),
        "{e}"
    );
    // A missing file.
    let e = import(&dir.join("no-such-model.onnx"), &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-model.onnx"), "{e}");
    for f in [junk, cut, p, p_bias] {
        std::fs::remove_file(f).ok();
    }
}

/// `precision=bf16` on a model whose convolutions all have too few input channels for the bf16
/// kernels: the engine reports f32, and its warning says why (no layer they take, or no bf16
/// kernel on this CPU at all).
#[test]
fn bf16_on_small_layers_stays_f32_and_says_why() {
    use gstregiondrop::backend::{cpu::CpuBackend, Precision};
    let mut b = Builder::new(3, H, W);
    let c1 = b.conv("x", 3, 8, 3, 1, 1, 1, 1);
    let out = b.conv(&c1, 8, 8, 3, 2, 1, 1, 1);
    let path = temp_model("bf16small", &b.bytes(&[&out], "bf16small"));
    let plan = Arc::new(import(&path, &ImportOptions::default()).unwrap());
    std::fs::remove_file(path).ok();
    let e = engine(
        &plan,
        &InputNorm::unit_rgb(),
        EngineConfig {
            precision: Precision::Bf16,
            ..Default::default()
        },
    );
    assert_eq!(e.precision(), Precision::F32);
    let warning = e.backend_warning().unwrap_or_default();
    let why = if CpuBackend::bf16_available() {
        "16 or more input channels"
    } else {
        "AVX512-BF16"
    };
    assert!(warning.contains(why), "{warning}");
}
