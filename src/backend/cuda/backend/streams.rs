//! The lanes of the frame's graphs (`cuda::lanes`) on the device. Lane 0 is the frame's own
//! stream; each further lane has a stream, and a cuBLAS handle where it multiplies. Scratch
//! slot 0 is the backend's own scratch; each further slot, used by convolutions that may run
//! beside those of the slots before it, has scratch of its own, sized for its convolutions.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaStream};

use super::{CudaBackend, OnStream};
use crate::backend::cuda::driver::drv;
use crate::backend::cuda::geometry;
use crate::backend::cuda::lanes::{frame_items, step_weights, Lanes};
use crate::backend::cuda::layers::{self, Addrs, LayerLists, Scratch};
use crate::error::{Error, Result};

/// One lane beyond the frame's own stream.
pub(super) struct LaneDev {
    pub(super) stream: Arc<CudaStream>,
    blas: Option<CudaBlas>,
}

/// One scratch slot beyond the backend's own scratch.
pub(super) struct SlotDev {
    /// The backend's addresses with this slot's scratch.
    addrs: Addrs,
    /// Kept alive for `addrs`: gathered operand, its f16 twin, GEMM result, split counters.
    scratch: (
        CudaSlice<f32>,
        Option<CudaSlice<u16>>,
        CudaSlice<f32>,
        CudaSlice<u32>,
    ),
}

/// The lane plan, the lanes beyond the frame's own stream and the scratch slots beyond the
/// backend's own.
pub(super) struct LaneSet {
    pub(super) lanes: Lanes,
    /// Lanes 1.. (lane 0 is the backend's own stream).
    pub(super) devs: Vec<LaneDev>,
    /// Slots 1.. (slot 0 is the backend's own scratch).
    slots: Vec<SlotDev>,
}

impl LaneSet {
    /// Every step on the frame's own stream.
    pub(super) fn one(steps: usize) -> Self {
        LaneSet {
            lanes: Lanes::one(steps),
            devs: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// Device bytes of the scratch slots.
    pub(super) fn bytes(&self) -> usize {
        self.slots
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
        let fused = |si| layers::step_fused(plan, &self.addrs, si);
        let mut devs = Vec::new();
        for l in 1..lanes.count {
            let stream = self.ctx.new_stream().map_err(drv("lane stream"))?;
            // A handle (and its workspace) only where the lane multiplies with cuBLAS: it
            // runs unfused convolutions.
            let unfused = geometry::convs_where(plan, |si| lanes.lane[si] == l && !fused(si));
            let blas = match &self.blas {
                Some(_) if unfused.count() > 0 => {
                    Some(CudaBlas::new(stream.clone()).map_err(|e| {
                        Error::Backend(format!("cublasCreate for lane {l} failed: {e:?}"))
                    })?)
                }
                _ => None,
            };
            devs.push(LaneDev { stream, blas });
        }
        let mut slots = Vec::new();
        for s in 1..lanes.slots {
            let need = lanes.scratch(plan, s, self.addrs.split.ws_len, fused);
            let stream = &self.stream;
            let f32s = |n: usize| stream.alloc_zeros::<f32>(n.max(1)).map_err(drv("alloc"));
            // The operand goes to one of its scratch: f16 where the backend gathers in f16
            // (as the backend's own scratch_a), else f32.
            let (a, a16) = match self.scratch_a16 {
                Some(_) => (
                    f32s(0)?,
                    Some(
                        stream
                            .alloc_zeros::<u16>(need.a.max(1))
                            .map_err(drv("alloc"))?,
                    ),
                ),
                None => (f32s(need.a)?, None),
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
            slots.push(SlotDev {
                addrs,
                scratch: (a, a16, c, counters),
            });
        }
        // The slots are zeroed on the frame's stream: done before any lane uses them.
        self.stream.synchronize().map_err(drv("synchronize"))?;
        Ok(LaneSet { lanes, devs, slots })
    }

    /// The stream of lane `l`, with its cuBLAS handle.
    pub(super) fn lane(&self, l: usize) -> OnStream<'_> {
        debug_assert!(
            l <= self.lanes.devs.len(),
            "lane {l} of {}",
            self.lanes.devs.len()
        );
        match l.checked_sub(1).and_then(|i| self.lanes.devs.get(i)) {
            Some(d) => OnStream {
                b: self,
                stream: &d.stream,
                blas: d.blas.as_ref(),
            },
            None => self.on_main(),
        }
    }

    /// The addresses step `si` launches with: its scratch slot's.
    fn step_addrs(&self, si: usize) -> &Addrs {
        let slot = self.lanes.lanes.slot.get(si).copied().unwrap_or(0);
        debug_assert!(
            slot <= self.lanes.slots.len(),
            "slot {slot} of {}",
            self.lanes.slots.len()
        );
        match slot.checked_sub(1).and_then(|i| self.lanes.slots.get(i)) {
            Some(s) => &s.addrs,
            None => &self.addrs,
        }
    }

    /// Launches step `si` on its lane (with the lane's operand copy, as `copy_operand`).
    pub(super) fn launch_on_lane(&self, si: usize, ll: LayerLists) -> Result<()> {
        let on = self.lane(self.lanes.lanes.lane.get(si).copied().unwrap_or(0));
        self.copy_operand(si, on.stream)?;
        layers::launch_step(&on, &self.plan, &self.grid, self.step_addrs(si), si, ll)
    }
}
