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

    /// Applies the activation to every element, vectorised for the CPU (see `crate::simd`).
    #[inline]
    pub fn apply_slice(self, xs: &mut [f32]) {
        apply_slice(self, xs)
    }

    /// `xs[i] = act(xs[i] + bias[i])`, vectorised for the CPU.
    #[inline]
    pub fn apply_bias(self, xs: &mut [f32], bias: &[f32]) {
        apply_bias(self, xs, bias)
    }

    /// [`Act::apply_bias`] inlined into the caller, for kernels that already run vectorised
    /// (`simd::vectorized`) and call it once per pixel.
    #[inline(always)]
    pub fn apply_bias_inline(self, xs: &mut [f32], bias: &[f32]) {
        apply_bias_plain(self, xs, bias)
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
    1.0 / (1.0 + exp(-x))
}

/// e^x without branches, library calls or float-to-int conversions, so loops over slices
/// vectorise: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor polynomial to r^7 (relative error
/// < 2e-7), times 2^n built in the exponent bits. n is rounded by adding 1.5·2^23, which leaves it
/// in the low mantissa bits. Inputs are clamped to the finite f32 range.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: t's mantissa ends in round(x·log2 e) as a two's-complement integer.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let t = x * LOG2E + ROUNDER;
    let n = t - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n + 127 lies in 1..=254, so its low 9 bits shifted into place are exactly the exponent.
    let scale = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_the_library_exp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp(-200.0), exp(-87.3));
        assert_eq!(exp(200.0), exp(88.0));
        assert!(exp(200.0).is_finite());
        assert!(
            (sigmoid(0.0) - 0.5).abs() < 1e-7 && sigmoid(-100.0) < 1e-30 && sigmoid(100.0) == 1.0
        );
    }
}

crate::simd::dispatch!(fn apply_slice(act: Act, xs: &mut [f32]) => apply_slice_plain);
crate::simd::dispatch!(fn apply_bias(act: Act, xs: &mut [f32], bias: &[f32]) => apply_bias_plain);

/// The match is hoisted out of the loop so each arm vectorises.
#[inline(always)]
fn apply_slice_plain(act: Act, xs: &mut [f32]) {
    match act {
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
        Act::Sigmoid => xs.iter_mut().for_each(|x| *x = sigmoid(*x)),
        Act::Silu => xs.iter_mut().for_each(|x| *x *= sigmoid(*x)),
        Act::Tanh => xs.iter_mut().for_each(|x| *x = x.tanh()),
    }
}

#[inline(always)]
fn apply_bias_plain(act: Act, xs: &mut [f32], bias: &[f32]) {
    for (x, &b) in xs.iter_mut().zip(bias) {
        *x += b;
    }
    apply_slice_plain(act, xs);
}
