//! `REGIONDROP_CUDA_FUSED_K=auto`: every convolution the fused kernel can run is timed once at
//! start-up both ways, as gather + GEMM + scatter and fused, over the tiles of a typical sparse
//! frame, and from then on runs the faster way (`Addrs::fuse`). Which way wins depends on the
//! layer's shape and on the GPU (launch latency against arithmetic), so it is measured, not
//! guessed. Each way is timed as frames run: launches captured in a CUDA graph and replayed, so
//! the host's launch rate, which eager launches would add to the way with more kernels, is not
//! part of the comparison.

use cudarc::driver::{sys, CudaGraph};

use super::CudaBackend;
use crate::backend::cuda::driver::drv;
use crate::backend::cuda::geometry;
use crate::backend::cuda::layers::{self, Addrs, LayerLists};
use crate::error::{Error, Result};
use crate::model::plan::{LayerOp, Step};

/// The share of the grid's tiles the timing frame recomputes (about the sample clip's).
const TUNE_FRACTION: f64 = 0.35;
/// Launches of the step in each timed graph (replayed once to warm up, then timed).
const TUNE_REPS: usize = 20;
/// Timed replays of each way's graph.
const TUNE_ROUNDS: usize = 2;

/// One fusable convolution as timed at start-up: microseconds per launch of the step, each way.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionTiming {
    /// The plan step.
    pub step: usize,
    /// Gather, GEMM and scatter.
    pub apart_us: f32,
    /// The fused kernel.
    pub fused_us: f32,
}

impl FusionTiming {
    /// Whether the step runs fused.
    pub fn fused(&self) -> bool {
        self.fused_us < self.apart_us
    }
}

impl CudaBackend {
    /// Every fusable convolution timed both ways, in step order, over a typical sparse frame.
    pub(super) fn tune_fusion(&mut self) -> Result<Vec<FusionTiming>> {
        self.time_fusion(TUNE_FRACTION)
    }

    /// Every fusable convolution timed both ways, in step order, over the first `fraction` of
    /// the grid's tiles (at least one), for `examples/fusion_costs`. The timing launches write
    /// the feature buffers, so the next frame must recompute every tile, as a backend's first
    /// frame does.
    pub fn time_fusion(&mut self, fraction: f64) -> Result<Vec<FusionTiming>> {
        let plan = self.plan.clone();
        let grid = self.grid;
        let n = ((grid.len() as f64 * fraction).ceil() as usize).clamp(1, grid.len());
        let tiles: Vec<u32> = (0..n as u32).collect();
        let per_step: Vec<Vec<u32>> = plan
            .steps
            .iter()
            .map(|s| match s {
                Step::Layer(_) => tiles.clone(),
                _ => Vec::new(),
            })
            .collect();
        let base = self.upload_eager_lists(&per_step)?;
        let event = || {
            self.ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("timing event"))
        };
        let (start, end) = (event()?, event()?);
        let unfused = Addrs {
            fused_conv_k: 0,
            fuse: Vec::new(),
            ..self.addrs.clone()
        };
        let fused = Addrs {
            fused_conv_k: usize::MAX,
            ..unfused.clone()
        };
        let mut timings = Vec::new();
        for (si, step) in plan.steps.iter().enumerate() {
            let Step::Layer(l) = step else { continue };
            let LayerOp::Conv(c) = &l.op else { continue };
            if !geometry::fusable(c) {
                continue;
            }
            let ll = LayerLists::at(base, self.packer.steps[si]);
            let capture = |addrs: &Addrs| -> Result<CudaGraph> {
                self.stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                    .map_err(drv("begin capture"))?;
                let launched = (0..TUNE_REPS)
                    .try_for_each(|_| layers::launch_step(self, &plan, &grid, addrs, si, ll));
                // The capture ends whether or not every launch was recorded.
                let graph = self
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(drv("end capture"));
                launched?;
                let graph = graph?.ok_or_else(|| Error::Backend("empty timing graph".into()))?;
                graph.launch().map_err(drv("graph launch"))?;
                Ok(graph)
            };
            let time = |graph: &CudaGraph| -> Result<f32> {
                start.record(&self.stream).map_err(drv("timing event"))?;
                graph.launch().map_err(drv("graph launch"))?;
                end.record(&self.stream).map_err(drv("timing event"))?;
                end.synchronize().map_err(drv("timing event"))?;
                let ms = start.elapsed_ms(&end).map_err(drv("timing event"))?;
                Ok(ms * 1e3 / TUNE_REPS as f32)
            };
            let (apart, fused) = (capture(&unfused)?, capture(&fused)?);
            // Each way timed TUNE_ROUNDS times, taking turns, its best time kept: a clock that
            // changes during the timing (a GPU leaving its idle state) favours neither way.
            let mut t = FusionTiming {
                step: si,
                apart_us: f32::INFINITY,
                fused_us: f32::INFINITY,
            };
            for _ in 0..TUNE_ROUNDS {
                t.apart_us = t.apart_us.min(time(&apart)?);
                t.fused_us = t.fused_us.min(time(&fused)?);
            }
            timings.push(t);
        }
        self.stream.synchronize().map_err(drv("synchronize"))?;
        Ok(timings)
    }
}
