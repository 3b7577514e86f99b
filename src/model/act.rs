//! Element-wise activations that can be fused into the layer that produces their input.

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Identity,
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    /// x * sigmoid(x)
    Silu,
    Tanh,
    /// clamp(alpha * x + beta, 0, 1)
    HardSigmoid(f32, f32),
    /// x * clamp(x / 6 + 0.5, 0, 1)
    HardSwish,
    Clip(f32, f32),
}

impl Act {
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::Identity => x,
            Act::Relu => x.max(0.0),
            Act::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Act::Sigmoid => sigmoid(x),
            Act::Silu => x * sigmoid(x),
            Act::Tanh => x.tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Act::Clip(lo, hi) => x.max(lo).min(hi),
        }
    }

    /// Applies the activation to every element; the match is hoisted out of the loop so each
    /// arm vectorises.
    pub fn apply_slice(self, xs: &mut [f32]) {
        match self {
            Act::Identity => {}
            Act::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
            Act::LeakyRelu(a) => xs
                .iter_mut()
                .for_each(|x| *x = if *x >= 0.0 { *x } else { a * *x }),
            Act::Clip(lo, hi) => xs.iter_mut().for_each(|x| *x = x.max(lo).min(hi)),
            Act::HardSwish => xs
                .iter_mut()
                .for_each(|x| *x *= (*x / 6.0 + 0.5).clamp(0.0, 1.0)),
            Act::HardSigmoid(a, b) => xs
                .iter_mut()
                .for_each(|x| *x = (a * *x + b).clamp(0.0, 1.0)),
            other => xs.iter_mut().for_each(|x| *x = other.apply(*x)),
        }
    }

    /// xs[i] = act(xs[i] + bias[i]).
    #[inline]
    pub fn apply_bias(self, xs: &mut [f32], bias: &[f32]) {
        for (x, &b) in xs.iter_mut().zip(bias) {
            *x += b;
        }
        self.apply_slice(xs);
    }

    /// The activation for a unary ONNX op, if it is one (Clip bounds must be resolved by the caller).
    pub fn from_onnx(op: &str, node: &super::onnx::Node) -> Option<Act> {
        Some(match op {
            "Relu" => Act::Relu,
            "LeakyRelu" => Act::LeakyRelu(node.float("alpha", 0.01)),
            "Sigmoid" => Act::Sigmoid,
            "SiLU" | "Swish" => Act::Silu,
            "Tanh" => Act::Tanh,
            "HardSigmoid" => Act::HardSigmoid(node.float("alpha", 0.2), node.float("beta", 0.5)),
            "HardSwish" => Act::HardSwish,
            _ => return None,
        })
    }
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
