//! The execution plan: what the backends run. Spatial layers work on NHWC feature buffers, tile by
//! tile; generic steps run densely on small row-major tensors (global pooling vectors, the head tail).

use super::act::Act;
use super::onnx::Node;
use crate::mask::TileGrid;
use crate::tensor::Tensor;

/// An NHWC feature map in which one tile of the grid is `grid.tile / scale` pixels wide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureBuf {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub scale: usize,
}

impl FeatureBuf {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A channel range of a buffer. Concat outputs and Split/Slice results are views: no copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub buf: usize,
    pub c_off: usize,
    pub c: usize,
}

#[derive(Clone, Debug)]
pub struct ConvSpec {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pad_t: usize,
    pub pad_l: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    /// ConvTranspose: output pixel o takes input (o + pad - k*d) / stride where that divides.
    pub transposed: bool,
    /// Per group, a K×N row-major matrix with K = kh·kw·(cin/groups) ordered (ky, kx, ci) and
    /// N = cout/groups. For depthwise convs (groups == cin == cout): kh·kw×C.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub act: Act,
}

impl ConvSpec {
    pub fn depthwise(&self) -> bool {
        !self.transposed && self.groups > 1 && self.groups == self.cin && self.cout == self.cin
    }
    pub fn k_per_group(&self) -> usize {
        self.kh * self.kw * (self.cin / self.groups)
    }
    pub fn n_per_group(&self) -> usize {
        self.cout / self.groups
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    /// Average; `true` counts padded pixels in the divisor.
    Avg(bool),
}

#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub kind: PoolKind,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub pad_t: usize,
    pub pad_l: usize,
}

/// Per-axis source taps for a resize: for output index o, value = `in[i0]*(1-f) + in[i1]*f`.
#[derive(Clone, Debug)]
pub struct ResizeTaps {
    pub i0: Vec<u32>,
    pub i1: Vec<u32>,
    pub frac: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    /// The op of an ONNX Add / Sub / Mul / Div node.
    pub fn from_onnx(op: &str) -> Option<Self> {
        Some(match op {
            "Add" => BinOp::Add,
            "Sub" => BinOp::Sub,
            "Mul" => BinOp::Mul,
            "Div" => BinOp::Div,
            _ => return None,
        })
    }

    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
        }
    }
}

/// The right operand of a binary layer.
#[derive(Clone, Debug)]
pub enum Operand {
    /// A feature view of the same shape.
    View(View),
    /// One value per channel (or a single value repeated), fixed at load time.
    Channels(Vec<f32>),
    /// A `[1,C,1,1]` (or scalar) runtime tensor in the tensor store (e.g. squeeze-excite scales).
    Slot(usize),
}

#[derive(Clone, Debug)]
pub enum LayerOp {
    Conv(ConvSpec),
    Pool(PoolSpec),
    Resize {
        y: ResizeTaps,
        x: ResizeTaps,
    },
    /// `out = act(in * scale[c] + shift[c])`: a BatchNormalization that could not be folded.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
        act: Act,
    },
    Unary(Act),
    Binary {
        op: BinOp,
        rhs: Operand,
        act: Act,
    },
    /// Copies input channels `perm[i]` to output channel i (concat pieces, channel shuffles).
    Gather {
        perm: Vec<usize>,
    },
}

#[derive(Clone, Debug)]
pub struct Layer {
    /// The ONNX node this layer came from.
    pub name: String,
    pub op: LayerOp,
    /// Spatial inputs (the first is the main input; Binary with Operand::View has a second).
    pub input: View,
    pub output: View,
    /// Exact mode: how far (in network-input pixels) a change at the input spreads to the output;
    /// `import::halo_for` turns it into tiles.
    pub halo: usize,
    /// Reads a whole-frame value (a global pooling result): exact mode must recompute everything.
    pub global: bool,
    /// Multiply-accumulates for the whole map (for choosing dense vs sparse).
    pub macs: f64,
}

impl Layer {
    pub fn act_mut(&mut self) -> Option<&mut Act> {
        match &mut self.op {
            LayerOp::Conv(c) => Some(&mut c.act),
            LayerOp::Affine { act, .. } | LayerOp::Binary { act, .. } => Some(act),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Step {
    Layer(Layer),
    /// Mean over the whole map of a view into tensor slot `slot` (`[1,C,1,1]`).
    GlobalPool {
        input: View,
        slot: usize,
    },
    /// Copies a view into slot `slot` as an NCHW tensor `[1,C,H,W]`.
    Export {
        input: View,
        slot: usize,
    },
    /// `out = in.flat[index]` (index has the output's shape): a folded chain of reshapes/transposes/slices.
    Rearrange {
        input: usize,
        index: Tensor,
        output: usize,
    },
    /// A generic ONNX op on tensor slots (None = omitted optional input).
    Generic {
        node: Node,
        inputs: Vec<Option<usize>>,
        outputs: Vec<usize>,
    },
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub model_path: std::path::PathBuf,
    pub input_name: String,
    /// Network input (width, height); the input buffer is buffer 0, 3 channels... or C channels.
    pub input_w: usize,
    pub input_h: usize,
    pub input_c: usize,
    /// The largest downscale of any feature map: the tile size must be a multiple of it.
    pub max_scale: usize,
    pub buffers: Vec<FeatureBuf>,
    pub steps: Vec<Step>,
    /// Tensor slots: constants are filled at load time, the rest each frame.
    pub slots: Vec<Option<Tensor>>,
    pub slot_shapes: Vec<Vec<usize>>,
    /// Graph outputs, as (name, slot).
    pub outputs: Vec<(String, usize)>,
}

impl Plan {
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.steps.iter().filter_map(|s| match s {
            Step::Layer(l) => Some(l),
            _ => None,
        })
    }

    pub fn total_macs(&self) -> f64 {
        self.layers().map(|l| l.macs).sum()
    }

    pub fn grid(&self, tile: usize) -> TileGrid {
        TileGrid::new(self.input_w, self.input_h, tile)
    }

    /// A backend's tensor slots before the first frame: the constants, zeros elsewhere.
    pub fn initial_slots(&self) -> Vec<Tensor> {
        self.slot_shapes
            .iter()
            .zip(&self.slots)
            .map(|(s, c)| c.clone().unwrap_or_else(|| Tensor::zeros(s.clone())))
            .collect()
    }

    /// The initial slots with stand-in values, uniform in ±`scale`, in every slot the network
    /// fills (constants kept): the input of tests and timings of the tail on its own.
    pub fn stand_in_slots(&self, seed: u64, scale: f32) -> Vec<Tensor> {
        let mut rng = crate::rng::Lcg(seed);
        let mut slots = self.initial_slots();
        for (s, c) in slots.iter_mut().zip(&self.slots) {
            if c.is_none() {
                s.data = rng.vec(s.data.len(), scale);
            }
        }
        slots
    }

    /// The output shapes, in graph order.
    pub fn output_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.outputs
            .iter()
            .map(|(n, s)| (n.clone(), self.slot_shapes[*s].clone()))
            .collect()
    }

    /// The output shapes alone, in graph order (what the detection decoders take).
    pub fn output_dims(&self) -> Vec<Vec<usize>> {
        self.outputs
            .iter()
            .map(|(_, s)| self.slot_shapes[*s].clone())
            .collect()
    }
}
