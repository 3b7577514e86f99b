//! A hand-built plan with every layer kind (partial border tiles, channel-slice views, groups,
//! transposed and dilated convs, slot operands), for comparing the CUDA kernels with the CPU
//! backend (tests/cuda_backend.rs on a GPU, tests/cuda_kernels_host.rs on the host).

use gstregiondrop::backend::StepTiles;
use gstregiondrop::model::act::Act;
use gstregiondrop::model::plan::{
    BinOp, ConvSpec, FeatureBuf, Layer, LayerOp, Operand, Plan, PoolKind, PoolSpec, ResizeTaps,
    Step, View,
};
use gstregiondrop::rng::Lcg;

pub fn conv(c: ConvSpec, input: View, output: View) -> Step {
    Step::Layer(Layer {
        name: "conv".into(),
        op: LayerOp::Conv(c),
        input,
        output,
        halo: 0,
        global: false,
        macs: 1.0,
    })
}

pub fn layer(name: &str, op: LayerOp, input: View, output: View) -> Step {
    Step::Layer(Layer {
        name: name.into(),
        op,
        input,
        output,
        halo: 0,
        global: false,
        macs: 1.0,
    })
}

#[allow(clippy::too_many_arguments)]
pub fn conv_spec(
    r: &mut Lcg,
    k: usize,
    s: usize,
    d: usize,
    pad: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    transposed: bool,
    act: Act,
) -> ConvSpec {
    let kk = k * k * (cin / groups);
    ConvSpec {
        kh: k,
        kw: k,
        sh: s,
        sw: s,
        dh: d,
        dw: d,
        pad_t: pad,
        pad_l: pad,
        cin,
        cout,
        groups,
        transposed,
        weights: r.vec(kk * cout, (1.0 / kk as f32).sqrt()),
        bias: r.vec(cout, 0.1),
        act,
    }
}

pub fn nearest(out: usize, inp: usize) -> ResizeTaps {
    let i0: Vec<u32> = (0..out)
        .map(|o| ((o * inp) / out).min(inp - 1) as u32)
        .collect();
    ResizeTaps {
        i1: i0.clone(),
        i0,
        frac: vec![0.0; out],
    }
}

pub fn bilinear(out: usize, inp: usize) -> ResizeTaps {
    let mut t = ResizeTaps {
        i0: vec![],
        i1: vec![],
        frac: vec![],
    };
    for o in 0..out {
        let x = ((o as f32 + 0.5) * inp as f32 / out as f32 - 0.5).max(0.0);
        let i = (x.floor() as usize).min(inp - 1);
        t.i0.push(i as u32);
        t.i1.push((i + 1).min(inp - 1) as u32);
        t.frac.push(x - i as f32);
    }
    t
}

/// Every layer kind, on a 100x70 input (partial border tiles at tile 32).
pub fn synthetic_plan() -> Plan {
    let mut r = Lcg(7);
    let (w, h) = (100usize, 70usize);
    let (w2, h2) = (50usize, 35usize);
    let (w4, h4) = (25usize, 18usize);
    let fb = |c, h, w, scale| FeatureBuf { c, h, w, scale };
    let v = |buf, c_off, c| View { buf, c_off, c };
    let buffers = vec![
        fb(3, h, w, 1),    // 0 input
        fb(24, h2, w2, 2), // 1 concat buffer: [0,16) conv, [16,24) grouped conv
        fb(16, h2, w2, 2), // 2 depthwise
        fb(24, h2, w2, 2), // 3 max pool
        fb(24, h4, w4, 4), // 4 avg pool s2
        fb(48, h2, w2, 2), // 5 [0,24) nearest up, [24,48) bilinear up
        fb(24, h2, w2, 2), // 6 affine
        fb(24, h2, w2, 2), // 7 add
        fb(24, h2, w2, 2), // 8 mul channels, then sub scalar in place
        fb(24, h2, w2, 2), // 9 sigmoid
        fb(24, h2, w2, 2), // 10 gather
        fb(8, h, w, 1),    // 11 transposed conv
        fb(8, h, w, 1),    // 12 dilated conv
        fb(8, h, w, 1),    // 13 mul slot
        fb(80, h2, w2, 2), // 14 wide conv (more output channels than one block of the fused kernel)
    ];
    let steps = vec![
        conv(
            conv_spec(&mut r, 3, 2, 1, 1, 3, 16, 1, false, Act::LeakyRelu(0.1)),
            v(0, 0, 3),
            v(1, 0, 16),
        ),
        conv(
            conv_spec(&mut r, 3, 1, 1, 1, 16, 16, 16, false, Act::Silu),
            v(1, 0, 16),
            v(2, 0, 16),
        ),
        conv(
            conv_spec(&mut r, 1, 1, 1, 0, 16, 8, 2, false, Act::HardSwish),
            v(2, 0, 16),
            v(1, 16, 8),
        ),
        layer(
            "maxpool",
            LayerOp::Pool(PoolSpec {
                kind: PoolKind::Max,
                kh: 3,
                kw: 3,
                sh: 1,
                sw: 1,
                pad_t: 1,
                pad_l: 1,
            }),
            v(1, 0, 24),
            v(3, 0, 24),
        ),
        layer(
            "avgpool",
            LayerOp::Pool(PoolSpec {
                kind: PoolKind::Avg(false),
                kh: 3,
                kw: 3,
                sh: 2,
                sw: 2,
                pad_t: 1,
                pad_l: 1,
            }),
            v(3, 0, 24),
            v(4, 0, 24),
        ),
        layer(
            "up_nearest",
            LayerOp::Resize {
                y: nearest(h2, h4),
                x: nearest(w2, w4),
            },
            v(4, 0, 24),
            v(5, 0, 24),
        ),
        layer(
            "up_bilinear",
            LayerOp::Resize {
                y: bilinear(h2, h4),
                x: bilinear(w2, w4),
            },
            v(4, 0, 24),
            v(5, 24, 24),
        ),
        layer(
            "affine",
            LayerOp::Affine {
                scale: r.vec(24, 1.0),
                shift: r.vec(24, 0.5),
                act: Act::Tanh,
            },
            v(5, 24, 24),
            v(6, 0, 24),
        ),
        layer(
            "add",
            LayerOp::Binary {
                op: BinOp::Add,
                rhs: Operand::View(v(5, 0, 24)),
                act: Act::Relu,
            },
            v(6, 0, 24),
            v(7, 0, 24),
        ),
        layer(
            "mul_ch",
            LayerOp::Binary {
                op: BinOp::Mul,
                rhs: Operand::Channels(r.vec(24, 2.0)),
                act: Act::Identity,
            },
            v(7, 0, 24),
            v(8, 0, 24),
        ),
        layer(
            "sub_scalar",
            LayerOp::Binary {
                op: BinOp::Sub,
                rhs: Operand::Channels(vec![0.25]),
                act: Act::Clip(-1.0, 3.0),
            },
            v(8, 0, 24),
            v(8, 0, 24),
        ),
        layer(
            "sigmoid",
            LayerOp::Unary(Act::Sigmoid),
            v(8, 0, 24),
            v(9, 0, 24),
        ),
        layer(
            "gather",
            LayerOp::Gather {
                perm: (0..24).rev().collect(),
            },
            v(9, 0, 24),
            v(10, 0, 24),
        ),
        conv(
            conv_spec(&mut r, 2, 2, 1, 0, 24, 8, 1, true, Act::Identity),
            v(10, 0, 24),
            v(11, 0, 8),
        ),
        conv(
            conv_spec(&mut r, 3, 1, 2, 2, 8, 8, 1, false, Act::Clip(-0.5, 0.5)),
            v(11, 0, 8),
            v(12, 0, 8),
        ),
        Step::GlobalPool {
            input: v(12, 0, 8),
            slot: 1,
        },
        layer(
            "mul_slot",
            LayerOp::Binary {
                op: BinOp::Mul,
                rhs: Operand::Slot(1),
                act: Act::HardSigmoid(0.2, 0.5),
            },
            v(12, 0, 8),
            v(13, 0, 8),
        ),
        Step::Export {
            input: v(13, 0, 8),
            slot: 0,
        },
        Step::Export {
            input: v(10, 0, 24),
            slot: 2,
        },
        conv(
            conv_spec(&mut r, 3, 1, 1, 1, 24, 80, 1, false, Act::Relu),
            v(10, 0, 24),
            v(14, 0, 80),
        ),
        Step::Export {
            input: v(14, 0, 80),
            slot: 3,
        },
    ];
    Plan {
        model_path: "synthetic.onnx".into(),
        input_name: "x".into(),
        input_w: w,
        input_h: h,
        input_c: 3,
        max_scale: 4,
        buffers,
        steps,
        slots: vec![None, None, None, None],
        slot_shapes: vec![
            vec![1, 8, h, w],
            vec![1, 8, 1, 1],
            vec![1, 24, h2, w2],
            vec![1, 80, h2, w2],
        ],
        outputs: vec![("y".into(), 0), ("mid".into(), 2), ("wide".into(), 3)],
    }
}

pub fn step_tiles(plan: &Plan, tiles: &[u32]) -> StepTiles {
    StepTiles {
        per_step: plan
            .steps
            .iter()
            .map(|s| {
                // Exports copy the tiles that changed in their buffer: here, the computed ones.
                if matches!(s, Step::Layer(_) | Step::Export { .. }) {
                    tiles.to_vec()
                } else {
                    Vec::new()
                }
            })
            .collect(),
    }
}

/// `reference` (a packed RGB `w`×`h` image, at least 91×41) changed in a few places for the
/// change-detection tests: single pixels in tile 1 and in the bottom-right (partial) tile, and a
/// block of +20 in tile 6 of a 32-pixel grid.
pub fn changed_frame(reference: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut img = reference.to_vec();
    img[(5 * w + 40) * 3] ^= 0x80;
    img[((h - 1) * w + w - 1) * 3 + 2] ^= 0x40;
    for y in 32..40 {
        for x in 64..90 {
            img[(y * w + x) * 3 + 1] = img[(y * w + x) * 3 + 1].wrapping_add(20);
        }
    }
    img
}

pub fn image(w: usize, h: usize, seed: u64) -> Vec<u8> {
    let mut r = Lcg(seed);
    (0..w * h * 3)
        .map(|i| ((i % 251) as u32 ^ (r.next_u32() & 63)) as u8)
        .collect()
}
