//! The lanes of the frame's graphs (`cuda::lanes`) on the device. Lane 0 is the frame's own
//! stream with the backend's scratch; each further lane has a stream, a cuBLAS handle and
//! scratch of its own, sized for the layers it runs.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaStream};

use super::{CudaBackend, OnStream};
use crate::backend::cuda::driver::drv;
use crate::backend::cuda::lanes::{frame_items, step_weights, Lanes};
use crate::backend::cuda::layers::{self, Addrs, LayerLists, Scratch};
use crate::error::{Error, Result};

/// One lane beyond the frame's own stream.
pub(super) struct LaneDev {
    pub(super) stream: Arc<CudaStream>,
    blas: Option<CudaBlas>,
    /// The backend's addresses with this lane's scratch.
    addrs: Addrs,
    /// Kept alive for `addrs`: gathered operand, its f16 twin, GEMM result, split counters.
    scratch: (
        CudaSlice<f32>,
        Option<CudaSlice<u16>>,
        CudaSlice<f32>,
        CudaSlice<u32>,
    ),
}

/// The lane plan and the lanes beyond the frame's own stream.
pub(super) struct LaneSet {
    pub(super) lanes: Lanes,
    /// Lanes 1.. (lane 0 is the backend's own stream).
    pub(super) devs: Vec<LaneDev>,
}

impl LaneSet {
    /// Every step on the frame's own stream.
    pub(super) fn one(steps: usize) -> Self {
        LaneSet {
            lanes: Lanes::one(steps),
            devs: Vec::new(),
        }
    }

    /// Device bytes of the lanes' scratch.
    pub(super) fn bytes(&self) -> usize {
        self.devs
            .iter()
            .map(|d| {
                let (a, a16, c, n) = &d.scratch;
                (a.len() + c.len() + n.len()) * 4 + a16.as_ref().map_or(0, |h| h.len() * 2)
            })
            .sum()
    }
}

impl CudaBackend {
    /// Puts the steps of each graph segment on at most `max` lanes and sets up lanes 1.. (after
    /// the fusion choice, which decides the launches each step weighs).
    pub(super) fn build_lanes(&self, max: usize) -> Result<LaneSet> {
        let plan = &self.plan;
        let items = frame_items(plan, &self.addrs.steps, &self.tail, &self.generic);
        let weights = step_weights(plan, &self.addrs, &self.tail, &self.generic);
        let lanes = Lanes::plan(plan, &items, max, |si| weights[si]);
        let mut devs = Vec::new();
        for l in 1..lanes.count {
            let need = lanes.scratch(plan, l, self.addrs.split.ws_len, |si| {
                layers::step_fused(plan, &self.addrs, si)
            });
            let stream = self.ctx.new_stream().map_err(drv("lane stream"))?;
            // A handle (and its workspace) only where the lane multiplies with cuBLAS: it
            // runs unfused convolutions.
            let blas = match &self.blas {
                Some(_) if need.a > 0 => Some(CudaBlas::new(stream.clone()).map_err(|e| {
                    Error::Backend(format!("cublasCreate for lane {l} failed: {e:?}"))
                })?),
                _ => None,
            };
            let f32s = |n: usize| stream.alloc_zeros::<f32>(n.max(1)).map_err(drv("alloc"));
            let a = f32s(need.a)?;
            let a16 = match self.scratch_a16 {
                Some(_) => Some(
                    stream
                        .alloc_zeros::<u16>(need.a.max(1))
                        .map_err(drv("alloc"))?,
                ),
                None => None,
            };
            let c = f32s(need.c)?;
            let counters = stream
                .alloc_zeros::<u32>(need.counters.max(1))
                .map_err(drv("alloc"))?;
            let addrs = self.addrs.with_scratch(Scratch {
                a: self.ptr(&a),
                a16: a16.as_ref().map(|h| self.ptr(h)),
                c: self.ptr(&c),
                c_len: c.len(),
                counters: self.ptr(&counters),
                counters_len: counters.len(),
            });
            devs.push(LaneDev {
                stream,
                blas,
                addrs,
                scratch: (a, a16, c, counters),
            });
        }
        // The lanes' buffers are zeroed on their own streams: done before any frame uses them.
        for d in &devs {
            d.stream.synchronize().map_err(drv("synchronize"))?;
        }
        Ok(LaneSet { lanes, devs })
    }

    /// The stream (with its cuBLAS handle) and the addresses lane `l` launches with.
    pub(super) fn lane(&self, l: usize) -> (OnStream<'_>, &Addrs) {
        match l.checked_sub(1).and_then(|i| self.lanes.devs.get(i)) {
            Some(d) => (
                OnStream {
                    b: self,
                    stream: &d.stream,
                    blas: d.blas.as_ref(),
                },
                &d.addrs,
            ),
            None => (self.on_main(), &self.addrs),
        }
    }

    /// Launches step `si` on its lane (with the lane's operand copy, as `copy_operand`).
    pub(super) fn launch_on_lane(&self, si: usize, ll: LayerLists) -> Result<()> {
        let (on, addrs) = self.lane(self.lanes.lanes.lane.get(si).copied().unwrap_or(0));
        self.copy_operand(si, on.stream)?;
        layers::launch_step(&on, &self.plan, &self.grid, addrs, si, ll)
    }
}
