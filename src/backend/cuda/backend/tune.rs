//! `REGIONDROP_CUDA_FUSED_K=auto`: every convolution the fused kernel can run is timed once at
//! start-up both ways, as gather + GEMM + scatter and fused, over the tiles of a typical sparse
//! frame, and from then on runs the faster way (`Addrs::fuse`). Which way wins depends on the
//! layer's shape and on the GPU (launch latency against arithmetic), so it is measured, not
//! guessed.

use cudarc::driver::sys;

use super::CudaBackend;
use crate::backend::cuda::driver::drv;
use crate::backend::cuda::geometry;
use crate::backend::cuda::layers::{self, Addrs, LayerLists};
use crate::error::Result;
use crate::model::plan::{LayerOp, Step};

/// The share of the grid's tiles the timing frame recomputes (about the sample clip's).
const TUNE_FRACTION: f64 = 0.35;
/// Launches timed each way, after one warm-up launch.
const TUNE_REPS: usize = 5;

impl CudaBackend {
    /// Per step: whether its convolution runs faster fused (false for every other step).
    pub(super) fn tune_fusion(&mut self) -> Result<Vec<bool>> {
        let plan = self.plan.clone();
        let grid = self.grid;
        let n = ((grid.len() as f64 * TUNE_FRACTION).ceil() as usize).clamp(1, grid.len());
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
        let mut fuse = vec![false; plan.steps.len()];
        for (si, step) in plan.steps.iter().enumerate() {
            let Step::Layer(l) = step else { continue };
            let LayerOp::Conv(c) = &l.op else { continue };
            if !geometry::fusable(c) {
                continue;
            }
            let ll = LayerLists::at(base, self.packer.steps[si]);
            let time = |addrs: &Addrs| -> Result<f32> {
                layers::launch_step(self, &plan, &grid, addrs, si, ll)?;
                start.record(&self.stream).map_err(drv("timing event"))?;
                for _ in 0..TUNE_REPS {
                    layers::launch_step(self, &plan, &grid, addrs, si, ll)?;
                }
                end.record(&self.stream).map_err(drv("timing event"))?;
                end.synchronize().map_err(drv("timing event"))?;
                start.elapsed_ms(&end).map_err(drv("timing event"))
            };
            let apart = time(&unfused)?;
            fuse[si] = time(&fused)? < apart;
        }
        self.stream.synchronize().map_err(drv("synchronize"))?;
        Ok(fuse)
    }
}
