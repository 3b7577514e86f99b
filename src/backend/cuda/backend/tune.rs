//! `REGIONDROP_CUDA_FUSED_K=auto`: every convolution the fused kernel can run is timed once at
//! start-up both ways, as gather + GEMM + scatter and fused, over the tiles of a typical sparse
//! frame, and from then on runs the fastest way (`Addrs::fuse`). With
//! `REGIONDROP_CUDA_FUSED_PIPE=auto`, the convolutions the pipelined kernel can run are timed
//! pipelined too (`ConvWay::Piped`, and `PipedT44` on the tensor cores). Which way wins depends
//! on the layer's shape and on the GPU (launch latency against arithmetic), so it is measured, not
//! guessed. Each way is timed as frames run: launches captured in a CUDA graph and replayed, so
//! the host's launch rate, which eager launches would add to the way with more kernels, is not
//! part of the comparison.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

use cudarc::driver::{sys, CudaEvent, CudaGraph};

use super::CudaBackend;
use crate::backend::cuda::driver::{drv, setup_guard};
use crate::backend::cuda::geometry;
use crate::backend::cuda::layers::{self, Addrs, ConvWay, LayerLists, StepPtrs};
use crate::error::{Error, Result};
use crate::model::plan::{LayerOp, Plan, Step};

/// The share of the grid's tiles the timing frame recomputes (about the sample clip's).
const TUNE_FRACTION: f64 = 0.35;
/// Launches of the step in each timed graph (replayed once to warm up, then timed).
const TUNE_REPS: usize = 20;
/// Timed replays of each way's graph.
const TUNE_ROUNDS: usize = 2;

/// What decides a start-up timing: the same model at the same input size and tile, on the same
/// GPU with the same kernels, times the same. Later backends of a process (more cameras on one
/// model) take the first one's choice instead of timing again, on a GPU the earlier ones now
/// keep busy.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct TuneKey {
    /// Per fusable convolution: its step and shape (see [`conv_shapes`]).
    pub convs: Vec<[usize; 12]>,
    pub input: (usize, usize),
    pub tile: usize,
    pub device: usize,
    /// f16, tensor cores, 4 × 4 blocks, cuBLAS, programmatic dependent launch, pipelined
    /// wherever fused, pipelined timed.
    pub kernels: [bool; 7],
}

/// The step and shape of each convolution of `plan` that `time_fusion` times: what its timings
/// mean, whichever file the plan came from.
pub(crate) fn conv_shapes(plan: &Plan) -> Vec<[usize; 12]> {
    plan.steps
        .iter()
        .enumerate()
        .filter_map(|(si, step)| {
            let Step::Layer(l) = step else { return None };
            let LayerOp::Conv(c) = &l.op else { return None };
            let b = &plan.buffers[l.output.buf];
            geometry::fusable(c).then_some([
                si, c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.cin, c.cout, c.groups, b.h, b.w,
            ])
        })
        .collect()
}

/// Start-up timings kept for the life of the process, by what decides them.
pub(crate) struct Timed<K, V>(OnceLock<Mutex<HashMap<K, V>>>);

impl<K: Hash + Eq, V: Clone> Timed<K, V> {
    pub const fn new() -> Self {
        Timed(OnceLock::new())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        let map = self.0.get_or_init(Default::default);
        map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What an earlier backend of this process measured for `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.map().get(key).cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        self.map().insert(key, value);
    }

    /// The timing of `key`: from an earlier backend of this process, else from `time` (kept
    /// when it succeeds).
    pub fn once(&self, key: K, time: impl FnOnce() -> Result<V>) -> Result<V> {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        // Not held while timing: a backend being built on another thread may time too.
        let v = time()?;
        self.insert(key, v.clone());
        Ok(v)
    }
}

/// The fusion timings of each key.
pub(crate) static FUSION_TIMED: Timed<TuneKey, Vec<FusionTiming>> = Timed::new();

/// One fusable convolution as timed at start-up: microseconds per launch of the step, each way.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionTiming {
    /// The plan step.
    pub step: usize,
    /// Gather, GEMM and scatter.
    pub apart_us: f32,
    /// The fused kernel.
    pub fused_us: f32,
    /// The pipelined fused kernel, and in its larger blocks (infinite where not timed).
    pub piped_us: f32,
    pub piped_t44_us: f32,
}

impl FusionTiming {
    /// The fastest way to run the step.
    pub fn way(&self) -> ConvWay {
        let ways = [
            (ConvWay::Apart, self.apart_us),
            (ConvWay::Fused, self.fused_us),
            (ConvWay::Piped, self.piped_us),
            (ConvWay::PipedT44, self.piped_t44_us),
        ];
        // The first of the fastest: a tie keeps the simpler way.
        ways.iter()
            .fold(ways[0], |best, &w| if w.1 < best.1 { w } else { best })
            .0
    }

    /// The fastest time of the step, whichever way.
    pub fn best_us(&self) -> f32 {
        self.apart_us
            .min(self.fused_us)
            .min(self.piped_us)
            .min(self.piped_t44_us)
    }
}

/// Per step, the first `n` tiles of the grid for every layer (nothing for the other steps): the
/// tile lists of the start-up timings.
pub(super) fn first_tiles(plan: &Plan, n: usize) -> Vec<Vec<u32>> {
    let tiles: Vec<u32> = (0..n as u32).collect();
    plan.steps
        .iter()
        .map(|s| match s {
            Step::Layer(_) => tiles.clone(),
            _ => Vec::new(),
        })
        .collect()
}

impl CudaBackend {
    /// A start and an end event that record times.
    pub(super) fn timing_events(&self) -> Result<(CudaEvent, CudaEvent)> {
        let event = || {
            self.ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("timing event"))
        };
        Ok((event()?, event()?))
    }

    /// Every fusable convolution timed each way, in step order, over a typical sparse frame.
    pub(super) fn tune_fusion(&mut self) -> Result<Vec<FusionTiming>> {
        self.time_fusion(TUNE_FRACTION)
    }

    /// Every fusable convolution timed each way, in step order, over the first `fraction` of
    /// the grid's tiles (at least one), for `examples/fusion_costs`. The timing launches write
    /// the feature buffers, so the next frame must recompute every tile, as a backend's first
    /// frame does. Captures graphs under the process's set-up lock, as every capture does.
    #[doc(hidden)]
    pub fn time_fusion(&mut self, fraction: f64) -> Result<Vec<FusionTiming>> {
        // Held already while the backend is built.
        let _guard = self.setup.is_none().then(setup_guard);
        let plan = self.plan.clone();
        let grid = self.grid;
        let n = ((grid.len() as f64 * fraction).ceil() as usize).clamp(1, grid.len());
        let base = self.upload_eager_lists(&first_tiles(&plan, n))?;
        let (start, end) = self.timing_events()?;
        let unfused = Addrs {
            fused_conv_k: 0,
            fuse: Vec::new(),
            ..self.addrs.clone()
        };
        let fused = Addrs {
            fused_conv_k: usize::MAX,
            ..unfused.clone()
        };
        let piped = Addrs {
            fused_pipe: true,
            fused_tile44: false,
            ..fused.clone()
        };
        let piped_t44 = Addrs {
            fused_tile44: true,
            ..piped.clone()
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
            let ip = plan.buffers[l.input.buf].c;
            // The larger blocks only on the tensor cores (f32 pipelines in 2 × 4 blocks alone).
            let tc = self.addrs.fused_tc
                && matches!(self.addrs.steps[si], StepPtrs::Conv { w16: Some(_), .. });
            let pipes = self.pipe_timed && geometry::pipeable(c, ip, l.input.c_off);
            let piped = pipes.then(|| capture(&piped)).transpose()?;
            let piped_t44 = (pipes && tc).then(|| capture(&piped_t44)).transpose()?;
            // Each way timed TUNE_ROUNDS times, taking turns, its best time kept: a clock that
            // changes during the timing (a GPU leaving its idle state) favours neither way.
            let mut t = FusionTiming {
                step: si,
                apart_us: f32::INFINITY,
                fused_us: f32::INFINITY,
                piped_us: f32::INFINITY,
                piped_t44_us: f32::INFINITY,
            };
            for _ in 0..TUNE_ROUNDS {
                t.apart_us = t.apart_us.min(time(&apart)?);
                t.fused_us = t.fused_us.min(time(&fused)?);
                if let Some(g) = &piped {
                    t.piped_us = t.piped_us.min(time(g)?);
                }
                if let Some(g) = &piped_t44 {
                    t.piped_t44_us = t.piped_t44_us.min(time(g)?);
                }
            }
            timings.push(t);
        }
        self.stream.synchronize().map_err(drv("synchronize"))?;
        Ok(timings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tile: usize) -> TuneKey {
        TuneKey {
            convs: vec![[3, 3, 3, 1, 1, 1, 1, 32, 32, 1, 52, 52]],
            input: (416, 416),
            tile,
            device: 0,
            kernels: [true, true, false, true, false, false, true],
        }
    }

    fn timing(step: usize) -> Vec<FusionTiming> {
        vec![FusionTiming {
            step,
            apart_us: 2.0,
            fused_us: 1.0,
            piped_us: f32::INFINITY,
            piped_t44_us: f32::INFINITY,
        }]
    }

    #[test]
    fn each_step_runs_the_fastest_way_and_ties_keep_the_simpler() {
        let t = |a, f, p, p44| FusionTiming {
            step: 0,
            apart_us: a,
            fused_us: f,
            piped_us: p,
            piped_t44_us: p44,
        };
        let inf = f32::INFINITY;
        assert_eq!(t(2.0, 3.0, inf, inf).way(), ConvWay::Apart);
        assert_eq!(t(2.0, 1.0, inf, inf).way(), ConvWay::Fused);
        assert_eq!(t(2.0, 1.0, 0.5, 0.7).way(), ConvWay::Piped);
        assert_eq!(t(2.0, 1.0, 0.5, 0.4).way(), ConvWay::PipedT44);
        assert_eq!(t(1.0, 1.0, 1.0, 1.0).way(), ConvWay::Apart);
        assert_eq!(t(2.0, 1.0, 1.0, 1.0).way(), ConvWay::Fused);
        assert_eq!(t(2.0, 1.0, 0.5, 0.4).best_us(), 0.4);
    }

    #[test]
    fn each_key_is_timed_once_and_failures_are_not_kept() {
        let timed = Timed::new();
        let mut calls = 0;
        let mut time = |step| {
            calls += 1;
            Ok(timing(step))
        };
        assert!(timed
            .once(key(7), || Err(crate::error::Error::Backend(
                "no GPU".into()
            )))
            .is_err());
        assert_eq!(timed.once(key(7), || time(1)).unwrap(), timing(1));
        // The same key: the first timing, without timing again.
        assert_eq!(timed.once(key(7), || time(2)).unwrap(), timing(1));
        // Another tile: timed.
        assert_eq!(timed.once(key(9), || time(3)).unwrap(), timing(3));
        assert_eq!(calls, 2);
    }
}
