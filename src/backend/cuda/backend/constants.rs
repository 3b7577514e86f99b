//! The steps' constants on the device, uploaded once when the backend is built: convolution
//! weights (with f16 copies for the tensor cores), Resize taps, affine constants, Gather indices,
//! fixed right operands of binary ops, and the constant slots the device tail reads; and the
//! buffers of the steps whose result lives on the device.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use cudarc::driver::{CudaSlice, CudaStream};

use crate::backend::cuda::driver::drv;
use crate::backend::cuda::geometry;
use crate::backend::cuda::tail::{DeviceTail, TailUpload};
use crate::backend::generic::GenericStep;
use crate::error::Result;
use crate::model::plan::{LayerOp, Operand, Plan, Step};

pub(super) struct ResizeDev {
    pub(super) y: [CudaSlice<u32>; 2],
    pub(super) yf: CudaSlice<f32>,
    pub(super) x: [CudaSlice<u32>; 2],
    pub(super) xf: CudaSlice<f32>,
}

/// One convolution's weights and bias on the device.
pub(super) struct ConvDev {
    pub(super) w: CudaSlice<f32>,
    pub(super) b: CudaSlice<f32>,
}

/// Device-side constants of one step.
pub(super) enum StepDev {
    None,
    /// Shared by every backend of the process that runs this plan on this device
    /// ([`SharedConsts`]).
    Conv {
        f32: Arc<ConvDev>,
        /// f16 copy of the weights (bits) for the tensor cores (precision f16, not depthwise).
        w16: Option<Arc<CudaSlice<u16>>>,
    },
    Resize(Box<ResizeDev>),
    Affine {
        scale: CudaSlice<f32>,
        shift: CudaSlice<f32>,
    },
    /// Right operand of a Binary layer: fixed channels, or a slot uploaded before each use.
    Rhs(CudaSlice<f32>),
    Gather(CudaSlice<u32>),
    /// Result of an Export / GlobalPool step.
    Out(CudaSlice<f32>),
    /// A Rearrange step run on the device: its index and its result.
    Rearranged {
        index: CudaSlice<u32>,
        out: CudaSlice<f32>,
    },
    /// A Generic step run on the device: its result, its [`TailUpload`] arrays and the pointer
    /// table of its copy runs' sources.
    Tail {
        out: CudaSlice<f32>,
        u32s: Vec<CudaSlice<u32>>,
        table: CudaSlice<u64>,
    },
}

impl StepDev {
    /// The step's result on the device (Export, GlobalPool, device Rearrange or Generic step).
    pub(super) fn result(&self) -> Option<&CudaSlice<f32>> {
        match self {
            StepDev::Out(o) | StepDev::Rearranged { out: o, .. } | StepDev::Tail { out: o, .. } => {
                Some(o)
            }
            _ => None,
        }
    }
}

/// What [`upload`] leaves on the device.
pub(super) struct Constants {
    /// Per step of the plan.
    pub(super) steps: Vec<StepDev>,
    /// Per slot: the constant slots the device Generic steps read.
    pub(super) slots: Vec<Option<CudaSlice<f32>>>,
    /// Bytes of convolution weights and biases (f32 and f16 copies), shared or not.
    pub(super) weight_bytes: usize,
}

/// Constants that every backend of the process running one plan on one device shares, by plan
/// step: the convolutions' weights, and their f16 copies. Like the plan itself
/// (`model::store`), they live while some backend holds them: cameras that run one model on one
/// GPU keep one copy of its weights. Backends are built one at a time (the set-up lock), and each
/// synchronises its stream before the next one starts, so a shared copy is complete when
/// another backend takes it; the last holder frees it while it is dropped, under the same lock.
struct SharedConsts<T>(Mutex<Vec<Held<T>>>);

/// One shared constant: its plan, device, step, and the constant.
type Held<T> = (Weak<Plan>, usize, usize, Weak<T>);

impl<T> SharedConsts<T> {
    const fn new() -> Self {
        SharedConsts(Mutex::new(Vec::new()))
    }

    /// Step `si`'s constant of `plan` on `stream`'s device: the one another backend uploaded,
    /// else `upload`'s.
    fn get(
        &self,
        plan: &Arc<Plan>,
        si: usize,
        stream: &CudaStream,
        upload: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        let device = stream.context().ordinal();
        let key = Arc::downgrade(plan);
        let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        shared.retain(|e| e.3.strong_count() > 0);
        if let Some(held) = shared
            .iter()
            .filter(|e| e.0.ptr_eq(&key) && (e.1, e.2) == (device, si))
            .find_map(|e| e.3.upgrade())
        {
            return Ok(held);
        }
        let value = Arc::new(upload()?);
        shared.push((key, device, si, Arc::downgrade(&value)));
        Ok(value)
    }
}

static CONV_WEIGHTS: SharedConsts<ConvDev> = SharedConsts::new();
static CONV_WEIGHTS_F16: SharedConsts<CudaSlice<u16>> = SharedConsts::new();

/// Uploads every step's constants on `stream` (with f16 weight copies when `f16`); the
/// convolutions' weights and f16 copies are shared with the process's other backends of the
/// same plan on the same device ([`SharedConsts`]). `weight_bytes` counts them all, shared or
/// not, as what this backend holds.
pub(super) fn upload(
    plan: &Arc<Plan>,
    stream: &Arc<CudaStream>,
    generic: &[Option<GenericStep>],
    tail: &DeviceTail,
    f16: bool,
) -> Result<Constants> {
    // The driver refuses empty allocations: an empty array goes up as one element.
    let zeros_f32 = |n: usize| stream.alloc_zeros::<f32>(n.max(1)).map_err(drv("alloc"));
    let up_f32 = |v: &[f32]| {
        stream
            .clone_htod(if v.is_empty() { &[0.0][..] } else { v })
            .map_err(drv("upload"))
    };
    let up_u32 = |v: &[u32]| {
        stream
            .clone_htod(if v.is_empty() { &[0][..] } else { v })
            .map_err(drv("upload"))
    };
    let mut weight_bytes = 0;
    let mut steps = Vec::with_capacity(plan.steps.len());
    for (si, step) in plan.steps.iter().enumerate() {
        steps.push(match step {
            Step::Layer(l) => match &l.op {
                LayerOp::Conv(c) => {
                    weight_bytes += (c.weights.len() + c.bias.len()) * 4;
                    let f32 = CONV_WEIGHTS.get(plan, si, stream, || {
                        Ok(ConvDev {
                            w: up_f32(&c.weights)?,
                            b: up_f32(&c.bias)?,
                        })
                    })?;
                    let w16 = if f16 && !c.depthwise() {
                        weight_bytes += c.weights.len() * 2;
                        Some(CONV_WEIGHTS_F16.get(plan, si, stream, || {
                            let bits = geometry::f16_bits(&c.weights);
                            stream.clone_htod(&bits).map_err(drv("upload"))
                        })?)
                    } else {
                        None
                    };
                    StepDev::Conv { f32, w16 }
                }
                LayerOp::Resize { y, x } => StepDev::Resize(Box::new(ResizeDev {
                    y: [up_u32(&y.i0)?, up_u32(&y.i1)?],
                    yf: up_f32(&y.frac)?,
                    x: [up_u32(&x.i0)?, up_u32(&x.i1)?],
                    xf: up_f32(&x.frac)?,
                })),
                LayerOp::Affine { scale, shift, .. } => StepDev::Affine {
                    scale: up_f32(scale)?,
                    shift: up_f32(shift)?,
                },
                LayerOp::Binary { rhs, .. } => match rhs {
                    Operand::View(_) => StepDev::None,
                    Operand::Channels(c) => StepDev::Rhs(up_f32(c)?),
                    Operand::Slot(s) => {
                        StepDev::Rhs(zeros_f32(plan.slot_shapes[*s].iter().product())?)
                    }
                },
                LayerOp::Gather { perm } => {
                    let p: Vec<u32> = perm.iter().map(|&i| i as u32).collect();
                    StepDev::Gather(up_u32(&p)?)
                }
                LayerOp::Pool(_) | LayerOp::Unary(_) => StepDev::None,
            },
            Step::GlobalPool { input, .. } => StepDev::Out(zeros_f32(input.c)?),
            Step::Export { .. } if tail.folded[si] => StepDev::None,
            Step::Export { input, .. } => {
                let b = &plan.buffers[input.buf];
                StepDev::Out(zeros_f32(input.c * b.h * b.w)?)
            }
            Step::Rearrange { .. } if tail.rearrange_from[si].is_some() => {
                let idx = tail.rearrange_index(plan, si);
                StepDev::Rearranged {
                    index: up_u32(&idx)?,
                    out: zeros_f32(idx.len())?,
                }
            }
            Step::Generic { .. } if tail.generic_out[si].is_some() => {
                let form = generic[si]
                    .as_ref()
                    .and_then(|g| g.device_form())
                    .expect("a device Generic step has a device form");
                let up = TailUpload::of(&form);
                StepDev::Tail {
                    out: zeros_f32(tail.len_of(plan, si))?,
                    u32s: up.u32s.iter().map(|v| up_u32(v)).collect::<Result<_>>()?,
                    table: stream
                        .alloc_zeros::<u64>(up.table_slots.len().max(1))
                        .map_err(drv("alloc"))?,
                }
            }
            Step::Rearrange { .. } | Step::Generic { .. } => StepDev::None,
        });
    }
    // Constant slots the device Generic steps read, once.
    let mut const_dev: Vec<Option<CudaSlice<f32>>> = plan.slots.iter().map(|_| None).collect();
    for g in generic
        .iter()
        .zip(&tail.generic_out)
        .filter_map(|(g, o)| o.and(g.as_ref()))
    {
        for s in g.device_form().map_or(Vec::new(), |f| f.reads()) {
            if let (Some(c), None) = (&plan.slots[s], &const_dev[s]) {
                const_dev[s] = Some(up_f32(&c.data)?);
            }
        }
    }
    Ok(Constants {
        steps,
        slots: const_dev,
        weight_bytes,
    })
}
