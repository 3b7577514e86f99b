//! `REGIONDROP_CUDA_LANES=auto`: the frame's graphs are captured on lanes and on one stream, and
//! whole frames of each are replayed at start-up; the faster set is kept. Whether lanes pay
//! depends on the GPU (how many small kernels it overlaps, what a cross-stream edge costs) and
//! on the model, so it is measured, as the fused convolutions are. The default: on an H100,
//! lanes replayed NanoDet's f16 frame in 0.561 ms against 0.653 on one stream, and YOLOv8n's
//! (1280 × 736, f32) in 1.164 against 1.494 (BENCHMARKS.md, eighteenth session).

use std::time::Instant;

use cudarc::driver::{sys, CudaEvent};

use super::graphs::Graphs;
use super::streams::LaneSet;
use super::tune::{first_tiles, Timed, TuneKey};
use super::CudaBackend;
use crate::backend::cuda::driver::drv;
use crate::backend::cuda::lanes::{frame_items, Item};
use crate::backend::cuda::layers::step_fused;
use crate::error::Result;

/// Frames replayed per timing, after one to warm up.
const FRAMES: usize = 10;
/// Timings of each set, taking turns; the best is kept.
const ROUNDS: usize = 3;
/// The share of the tiles of the larger timed frame (about the sample clip's); the smallest
/// bucket is timed too.
const FRACTION: f64 = 0.35;

/// How the two sets of graphs timed, in milliseconds a frame (both frames summed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaneTiming {
    pub lanes: usize,
    pub laned_ms: f32,
    pub one_stream_ms: f32,
}

impl LaneTiming {
    fn lanes_win(&self) -> bool {
        self.laned_ms < self.one_stream_ms
    }

    /// How the timing went, for the graphs' note; `when` says when it was taken.
    fn note(&self, when: &str) -> String {
        let (laned, one) = (self.laned_ms, self.one_stream_ms);
        match self.lanes_win() {
            true => {
                format!(" (timed {when}: {laned:.3} ms a frame against {one:.3} on one stream)")
            }
            false => format!(
                " on one stream (timed {when}: {one:.3} ms a frame against {laned:.3} on {} lanes)",
                self.lanes
            ),
        }
    }
}

/// What decides the lane timing: the convolutions' timing key, which of them run fused, the
/// graph segments and each step's lane. Later backends of a process on the same model take the
/// first one's choice.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct LaneKey {
    tune: TuneKey,
    fused: Vec<bool>,
    segments: Vec<(usize, usize)>,
    lane: Vec<usize>,
}

static LANES_TIMED: Timed<LaneKey, LaneTiming> = Timed::new();

impl CudaBackend {
    /// The frame's graphs, on the lanes already built or on one stream, whichever replays a
    /// frame faster: timed here, or by an earlier backend of this process with the same `key`.
    pub(super) fn capture_timed(&mut self, key: TuneKey) -> Result<Graphs> {
        let steps = self.plan.steps.len();
        let key = LaneKey {
            tune: key,
            fused: (0..steps)
                .map(|si| step_fused(&self.plan, &self.addrs, si))
                .collect(),
            segments: frame_items(&self.plan, &self.addrs.steps, &self.tail, &self.generic)
                .into_iter()
                .filter_map(|it| match it {
                    Item::Segment(r) => Some((r.start, r.end)),
                    _ => None,
                })
                .collect(),
            lane: self.lanes.lanes.lane.clone(),
        };
        if let Some(t) = LANES_TIMED.get(&key) {
            self.lane_timing = Some(t);
            self.lane_note = t.note("earlier in this process");
            if !t.lanes_win() {
                self.lanes = LaneSet::one(steps);
            }
            return self.capture_graphs();
        }
        let laned = self.capture_graphs()?;
        let g = self.keep_faster_graphs(laned);
        if let Some(t) = self.lane_timing {
            LANES_TIMED.insert(key, t);
        }
        Ok(g)
    }

    /// `laned`, the graphs captured on lanes, timed against the same captured on one stream:
    /// returns the faster set (freeing the lanes where one stream wins) and says how they timed
    /// in the graphs' note. Where the one-stream capture or the timing fails, the lanes stay.
    fn keep_faster_graphs(&mut self, mut laned: Graphs) -> Graphs {
        let started = Instant::now();
        let steps = self.plan.steps.len();
        let lanes = std::mem::replace(&mut self.lanes, LaneSet::one(steps));
        let one = self.capture_graphs();
        self.lanes = lanes;
        let timed = one.and_then(|mut one| {
            let (mut t_one, mut t_laned) = (f32::INFINITY, f32::INFINITY);
            for _ in 0..ROUNDS {
                t_one = t_one.min(self.frame_ms(&mut one)?);
                t_laned = t_laned.min(self.frame_ms(&mut laned)?);
            }
            Ok((one, t_one, t_laned))
        });
        match timed {
            Ok((one, t_one, t_laned)) => {
                let t = LaneTiming {
                    lanes: self.lanes.lanes.count,
                    laned_ms: t_laned,
                    one_stream_ms: t_one,
                };
                self.lane_timing = Some(t);
                let ms = started.elapsed().as_secs_f64() * 1e3;
                self.lane_note = t.note(&format!("in {ms:.0} ms"));
                if t.lanes_win() {
                    laned
                } else {
                    self.lanes = LaneSet::one(steps);
                    one
                }
            }
            Err(e) => {
                // A one-stream capture that failed half-way leaves the stream capturing.
                let _ = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
                let _ = self.ctx.check_err();
                self.lane_note = format!(" (not timed against one stream: {e})");
                laned
            }
        }
    }

    /// Milliseconds a frame of `g`'s graphs take over the first tiles of the grid: a frame in
    /// the smallest bucket plus one of about `FRACTION` of the tiles. The replays write the
    /// feature buffers, so the next frame must recompute every tile, as a first frame does.
    fn frame_ms(&mut self, g: &mut Graphs) -> Result<f32> {
        let (start, end) = self.timing_events()?;
        let grid = self.grid;
        let wanted = ((grid.len() as f64 * FRACTION).ceil() as usize).clamp(1, grid.len());
        let larger = g.levels.iter().position(|&l| l >= wanted);
        let mut total = 0.0;
        for bucket in std::iter::once(0).chain(larger.filter(|&b| b > 0)) {
            let lists = first_tiles(&self.plan, g.levels[bucket]);
            self.upload_graph_lists(g, &lists, bucket)?;
            self.stream.synchronize().map_err(drv("synchronize"))?;
            total += self.replay_ms(g, bucket, &start, &end)?;
        }
        Ok(total)
    }

    /// Milliseconds a frame of bucket `bucket`'s graphs takes, replayed `FRAMES` times after
    /// one warm-up frame (host steps between segments left out).
    fn replay_ms(
        &self,
        g: &Graphs,
        bucket: usize,
        start: &CudaEvent,
        end: &CudaEvent,
    ) -> Result<f32> {
        let frame = || -> Result<()> {
            for graph in g.segments(bucket) {
                graph.launch().map_err(drv("graph launch"))?;
            }
            Ok(())
        };
        frame()?;
        start.record(&self.stream).map_err(drv("timing event"))?;
        for _ in 0..FRAMES {
            frame()?;
        }
        end.record(&self.stream).map_err(drv("timing event"))?;
        end.synchronize().map_err(drv("timing event"))?;
        let ms = start.elapsed_ms(end).map_err(drv("timing event"))?;
        Ok(ms / FRAMES as f32)
    }
}
