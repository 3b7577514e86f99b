//! Rewrites around the translation: activations spelled as several ONNX nodes (gated
//! activations, HardSwish) become one node before it, and per-channel affine steps fold into the
//! pointwise convolutions that produce them after it.

use super::*;

/// `x op v` (per-channel constants) as `x·scale + shift`, for the ops that are exactly that
/// (multiply, add, subtract; not divide).
pub(super) fn as_affine(op: BinOp, v: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
    let c = v.len();
    match op {
        BinOp::Mul => Some((v.to_vec(), vec![0.0; c])),
        BinOp::Add => Some((vec![1.0; c], v.to_vec())),
        BinOp::Sub => Some((vec![1.0; c], v.iter().map(|x| -x).collect())),
        BinOp::Div => None,
    }
}

/// Folds an affine layer without activation into the 1×1 convolution that alone reads its output
/// (no padding, no groups): `W·(x·s + t) + b = (W·s)·x + (b + W·t)` exactly, as a 1×1 kernel
/// reads no padding. The convolution then reads the affine layer's input and the layer goes.
pub(super) fn fold_affine_into_pointwise(steps: &mut Vec<Step>) {
    let reads = |st: &Step, buf: usize| -> bool {
        match st {
            Step::Layer(l) => {
                l.input.buf == buf
                    || matches!(&l.op, LayerOp::Binary { rhs: Operand::View(v), .. } if v.buf == buf)
            }
            Step::GlobalPool { input, .. } | Step::Export { input, .. } => input.buf == buf,
            Step::Rearrange { .. } | Step::Generic { .. } => false,
        }
    };
    let mut removed = vec![false; steps.len()];
    for i in 0..steps.len() {
        let Step::Layer(a) = &steps[i] else { continue };
        let LayerOp::Affine {
            scale,
            shift,
            act: Act::Identity,
        } = &a.op
        else {
            continue;
        };
        let (out, input) = (a.output, a.input);
        let readers: Vec<usize> = (0..steps.len())
            .filter(|&j| j != i && !removed[j] && reads(&steps[j], out.buf))
            .collect();
        let [j] = readers[..] else { continue };
        let (scale, shift) = (scale.clone(), shift.clone());
        let Step::Layer(l) = &mut steps[j] else {
            continue;
        };
        let LayerOp::Conv(cs) = &mut l.op else {
            continue;
        };
        let pointwise = (cs.kh, cs.kw, cs.pad_t, cs.pad_l, cs.groups) == (1, 1, 0, 0, 1)
            && !cs.transposed
            && cs.cin == scale.len();
        if j < i || !pointwise || l.input != out {
            continue;
        }
        let n = cs.cout;
        for co in 0..n {
            let dot: f32 = (0..cs.cin)
                .map(|ci| cs.weights[ci * n + co] * shift[ci])
                .sum();
            cs.bias[co] += dot;
        }
        for (row, &s) in cs.weights.chunks_exact_mut(n).zip(&scale) {
            row.iter_mut().for_each(|w| *w *= s);
        }
        l.input = input;
        removed[i] = true;
    }
    let mut k = 0;
    steps.retain(|_| {
        k += 1;
        !removed[k - 1]
    });
}

/// Rewrites `Mul(x, Sigmoid(x))` into SiLU(x) and `Mul(x, HardSigmoid(x))` (1/6, 0.5) into
/// HardSwish(x), so they fuse into the producing convolution like any activation.
pub(super) fn fuse_gated_activations(nodes: &mut Vec<Node>) {
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in nodes.iter() {
        for i in &n.inputs {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    let producer: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.clone(), i)))
        .collect();
    let mut dead = HashSet::new();
    for mi in 0..nodes.len() {
        if nodes[mi].op != "Mul" || nodes[mi].inputs.len() != 2 {
            continue;
        }
        for (gate_pos, x_pos) in [(1, 0), (0, 1)] {
            let gate = nodes[mi].inputs[gate_pos].clone();
            let x = nodes[mi].inputs[x_pos].clone();
            let Some(&gi) = producer.get(&gate) else {
                continue;
            };
            let g = &nodes[gi];
            let new_op = match g.op.as_str() {
                "Sigmoid" => "SiLU",
                "HardSigmoid"
                    if (g.float("alpha", 0.2) - 1.0 / 6.0).abs() < 1e-4
                        && (g.float("beta", 0.5) - 0.5).abs() < 1e-6 =>
                {
                    "HardSwish"
                }
                _ => continue,
            };
            if g.inputs.first() != Some(&x) || uses.get(&gate) != Some(&1) {
                continue;
            }
            dead.insert(gi);
            let m = &mut nodes[mi];
            m.op = new_op.to_string();
            m.inputs = vec![x];
            m.attrs.clear();
            break;
        }
    }
    let mut i = 0;
    nodes.retain(|_| {
        i += 1;
        !dead.contains(&(i - 1))
    });
}

/// Rewrites `Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)` — HardSwish as exporters such as paddle2onnx
/// write it out — into HardSwish(x), one activation that fuses into the producer of x instead of
/// four passes over the map. Only where the intermediate values have no other use.
pub(super) fn fuse_hardswish(graph: &mut OnnxGraph) {
    let nodes = &graph.nodes;
    // A scalar constant's value, from an initializer or a Constant node.
    let mut consts: HashMap<&str, f32> = HashMap::new();
    for (name, t) in &graph.initializers {
        if t.len() == 1 {
            consts.insert(name, t.data[0]);
        }
    }
    for n in nodes.iter().filter(|n| n.op == "Constant") {
        if let (Some(t), Some(o)) = (n.tensor("value"), n.outputs.first()) {
            if t.len() == 1 {
                consts.insert(o, t.data[0]);
            }
        }
    }
    let is = |name: &str, v: f32| consts.get(name).is_some_and(|&c| c == v);
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        for i in &n.inputs {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.outputs {
        *uses.entry(o.name.as_str()).or_default() += 1;
    }
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    // The node producing `name` if it is an `op` whose output nothing else uses.
    let sole = |name: &str, op: &str| {
        producer
            .get(name)
            .copied()
            .filter(|&i| nodes[i].op == op && uses.get(name) == Some(&1))
    };
    let mut rewrites = Vec::new();
    for (di, d) in nodes.iter().enumerate() {
        if d.op != "Div" || d.inputs.len() != 2 || !is(&d.inputs[1], 6.0) {
            continue;
        }
        let Some(mi) = sole(&d.inputs[0], "Mul") else {
            continue;
        };
        let m = &nodes[mi];
        if m.inputs.len() != 2 {
            continue;
        }
        for (x_pos, c_pos) in [(0, 1), (1, 0)] {
            let x = &m.inputs[x_pos];
            let Some(ci) = sole(&m.inputs[c_pos], "Clip") else {
                continue;
            };
            let c = &nodes[ci];
            let bounds_0_6 = if c.inputs.len() == 3 {
                is(&c.inputs[1], 0.0) && is(&c.inputs[2], 6.0)
            } else {
                c.float("min", f32::MIN) == 0.0 && c.float("max", f32::MAX) == 6.0
            };
            let Some(ai) = c.inputs.first().and_then(|a| sole(a, "Add")) else {
                continue;
            };
            let a = &nodes[ai];
            let adds_3 = a.inputs.len() == 2
                && ((a.inputs[0] == *x && is(&a.inputs[1], 3.0))
                    || (a.inputs[1] == *x && is(&a.inputs[0], 3.0)));
            if bounds_0_6 && adds_3 {
                rewrites.push((di, x.clone(), [mi, ci, ai]));
                break;
            }
        }
    }
    let mut dead = HashSet::new();
    for (di, x, gone) in rewrites {
        let d = &mut graph.nodes[di];
        d.op = "HardSwish".into();
        d.inputs = vec![x];
        d.attrs.clear();
        dead.extend(gone);
    }
    let mut i = 0;
    graph.nodes.retain(|_| {
        i += 1;
        !dead.contains(&(i - 1))
    });
}
