//! Where a frame's time goes on the CUDA backend. REGIONDROP_PROFILE=1: a timing event after
//! every plan step, read once the frame is done (the time between two events is what the GPU
//! timeline spent on that step, including any wait for the host to launch it), and the host wall
//! time of the phases around the network; step timing launches eagerly (no CUDA graphs) and its
//! event records add a little host time per step. REGIONDROP_PROFILE=phases: the phases alone,
//! with CUDA graphs kept.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream};

use crate::error::{Error, Result};

/// The host-side phases of a frame, in the order of [`Profile::phases`].
#[derive(Clone, Copy)]
pub(super) enum Phase {
    Detect = 0,
    Input = 1,
    Run = 2,
    Sync = 3,
    Letterbox = 4,
}

const PHASE_NAMES: [&str; 5] = [
    "change detection (frame upload, tile scores, mask download)",
    "input write (tile list upload, normalisation)",
    "network run (launches, host steps, output downloads)",
    "  of all phases: waiting in stream synchronisations",
    "letterbox on the device, host side (frame upload, launch; the kernel runs in the next wait)",
];

pub(super) struct Profile {
    start: CudaEvent,
    after: Vec<CudaEvent>,
    recorded: Vec<bool>,
    /// Milliseconds of each step, one sample per frame.
    pub steps: Vec<Vec<f64>>,
    /// Milliseconds of each phase, one sample per frame.
    pub phases: Vec<(&'static str, Vec<f64>)>,
    /// Time spent waiting in synchronisations since the last frame ended.
    sync_ms: f64,
    /// Whether every step is timed (REGIONDROP_PROFILE=1), not only the phases.
    pub times_steps: bool,
}

fn drv(e: impl std::fmt::Debug) -> Error {
    Error::Backend(format!("CUDA profiling event: {e:?}"))
}

pub(super) fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

impl Profile {
    /// A profile when REGIONDROP_PROFILE is 1 (steps and phases) or `phases`.
    pub fn from_env(ctx: &Arc<CudaContext>, steps: usize) -> Result<Option<Self>> {
        let times_steps = match std::env::var("REGIONDROP_PROFILE").as_deref() {
            Ok("1") => true,
            Ok("phases") => false,
            _ => return Ok(None),
        };
        let steps = if times_steps { steps } else { 0 };
        let timing = || {
            ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv)
        };
        Ok(Some(Profile {
            start: timing()?,
            after: (0..steps).map(|_| timing()).collect::<Result<_>>()?,
            recorded: vec![false; steps],
            steps: vec![Vec::new(); steps],
            phases: PHASE_NAMES.iter().map(|&n| (n, Vec::new())).collect(),
            sync_ms: 0.0,
            times_steps,
        }))
    }

    pub fn begin_frame(&mut self, stream: &CudaStream) -> Result<()> {
        self.recorded.fill(false);
        self.start.record(stream).map_err(drv)
    }

    pub fn step_done(&mut self, si: usize, stream: &CudaStream) -> Result<()> {
        if !self.times_steps {
            return Ok(());
        }
        self.recorded[si] = true;
        self.after[si].record(stream).map_err(drv)
    }

    /// Reads the frame's events (the stream has been synchronised) and closes its phases.
    pub fn end_frame(&mut self, run_ms: f64) -> Result<()> {
        let mut prev = &self.start;
        for (si, ev) in self.after.iter().enumerate() {
            let t = if self.recorded[si] {
                let t = prev.elapsed_ms(ev).map_err(drv)? as f64;
                prev = ev;
                t
            } else {
                0.0
            };
            self.steps[si].push(t);
        }
        self.add(Phase::Run, run_ms);
        let sync = std::mem::take(&mut self.sync_ms);
        self.add(Phase::Sync, sync);
        Ok(())
    }

    pub fn add(&mut self, phase: Phase, ms: f64) {
        self.phases[phase as usize].1.push(ms);
    }

    pub fn add_sync(&mut self, ms: f64) {
        self.sync_ms += ms;
    }
}
