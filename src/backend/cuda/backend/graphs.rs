//! CUDA graphs: the frame split into device segments and host work, each segment captured once
//! per tile-count bucket over fixed-layout tile lists, and a frame replayed from them.

use std::ops::Range;

use cudarc::driver::{sys, CudaEvent, CudaGraph, CudaSlice};

use super::{upload_lists, CudaBackend};
use crate::backend::cuda::driver::drv;
use crate::backend::cuda::geometry::{self, FixedPacker};
use crate::backend::cuda::lanes::{frame_items, Item};
use crate::backend::cuda::layers::LayerLists;
use crate::backend::StepTiles;
use crate::error::{Error, Result};
use crate::model::plan::{Plan, Step};

/// Events of one segment's capture: the fork of its lanes from the frame's stream, their joins
/// back (lanes 1..), and one after each step another lane waits for.
struct LaneEvents {
    start: usize,
    fork: CudaEvent,
    joins: Vec<CudaEvent>,
    after: Vec<Option<CudaEvent>>,
}

impl LaneEvents {
    fn after(&self, si: usize) -> Result<&CudaEvent> {
        self.after
            .get(si.wrapping_sub(self.start))
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::Backend(format!("step {si}: a lane waits for it unrecorded")))
    }
}

/// A captured, instantiated graph.
struct Graph(CudaGraph);

// SAFETY: CUDA graph objects may be used from any thread as long as calls on one graph are
// serialized; a Graph is owned by one backend, which is `Send` but not `Sync` and launches it
// only through `&mut self`.
unsafe impl Send for Graph {}

/// CUDA graphs of the frame's device segments, one set per tile-count bucket.
pub(super) struct Graphs {
    pub(super) levels: Vec<usize>,
    /// `[bucket][segment]`, segments in schedule order.
    exec: Vec<Vec<Graph>>,
    schedule: Vec<Item>,
    packer: FixedPacker,
    /// The fixed-layout lists (never reallocated: the graphs hold its address).
    pub(super) dev: CudaSlice<u32>,
    /// What `dev` holds: the bucket and the per-step lists last uploaded (None: not known).
    /// A frame with the same lists (every dense frame after the first) uploads nothing.
    uploaded: Option<(usize, Vec<Vec<u32>>)>,
}

impl Graphs {
    /// The device segments' graphs of bucket `bucket`, in schedule order.
    pub(super) fn segments(&self, bucket: usize) -> impl Iterator<Item = &CudaGraph> {
        self.exec[bucket].iter().map(|g| &g.0)
    }
}

impl CudaBackend {
    /// Splits the plan into device segments and host work, and captures every segment once per
    /// tile-count bucket, launched over the fixed-layout lists of that bucket.
    pub(super) fn capture_graphs(&self) -> Result<Graphs> {
        let plan = self.plan.clone();
        let schedule = frame_items(&plan, &self.addrs.steps, &self.tail, &self.generic);
        let levels = geometry::bucket_levels(self.grid.len());
        let dev = self
            .stream
            .alloc_zeros::<u32>(FixedPacker::capacity_for(&plan, &self.grid))
            .map_err(drv("alloc"))?;
        let base = self.ptr(&dev);
        let mut exec = Vec::with_capacity(levels.len());
        for &b in &levels {
            let mut set = Vec::new();
            for item in &schedule {
                let Item::Segment(r) = item else { continue };
                set.push(self.capture_segment(&plan, r.clone(), b, base)?);
            }
            exec.push(set);
        }
        Ok(Graphs {
            levels,
            exec,
            schedule,
            packer: FixedPacker::default(),
            dev,
            uploaded: None,
        })
    }

    /// Captures segment `r` of the frame for bucket `b` (the fixed-layout lists at `base`) into
    /// an instantiated graph.
    fn capture_segment(&self, plan: &Plan, r: Range<usize>, b: usize, base: u64) -> Result<Graph> {
        let events = self.lane_events(r.clone())?;
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(drv("begin capture"))?;
        if let Err(e) = self.record_segment(plan, r, b, base, &events) {
            // End the capture (with every lane that joined it) before anything is freed.
            let _ = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
            return Err(e);
        }
        let g = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(drv("end capture"))?
            .ok_or_else(|| Error::Backend("empty graph".into()))?;
        g.upload().map_err(drv("graph upload"))?;
        Ok(Graph(g))
    }

    /// Launches segment `r`'s steps on their lanes into the capture under way: each lane forks
    /// from the frame's stream, waits for the steps of other lanes it reads, and joins back.
    fn record_segment(
        &self,
        plan: &Plan,
        r: Range<usize>,
        b: usize,
        base: u64,
        events: &LaneEvents,
    ) -> Result<()> {
        events.fork.record(&self.stream).map_err(drv("record"))?;
        let lanes = &self.lanes.lanes;
        let mut joined = vec![false; lanes.count.max(1)];
        joined[0] = true;
        for si in r.clone() {
            let (t0, r0) = FixedPacker::offsets(si, b);
            let m = match &plan.steps[si] {
                Step::Layer(l) => geometry::bucket_rows(&self.grid, &plan.buffers[l.output.buf], b),
                _ => 0,
            };
            let ll = LayerLists {
                tiles: base + (t0 * 4) as u64,
                rows: base + (r0 * 4) as u64,
                n: b,
                m,
            };
            let l = lanes.lane[si];
            let stream = self.lane(l).stream;
            if !joined[l] {
                stream.wait(&events.fork).map_err(drv("lane fork"))?;
                joined[l] = true;
            }
            for &d in &lanes.waits[si] {
                stream.wait(events.after(d)?).map_err(drv("lane wait"))?;
            }
            self.launch_on_lane(si, ll)?;
            if let Some(e) = &events.after[si - r.start] {
                e.record(stream).map_err(drv("record"))?;
            }
        }
        for (l, _) in joined.iter().enumerate().skip(1).filter(|(_, &j)| j) {
            let done = &events.joins[l - 1];
            done.record(self.lane(l).stream).map_err(drv("record"))?;
            self.stream.wait(done).map_err(drv("lane join"))?;
        }
        Ok(())
    }

    /// The events a segment's capture forks and orders its lanes with, made before the capture.
    fn lane_events(&self, r: Range<usize>) -> Result<LaneEvents> {
        let new = || self.ctx.new_event(None).map_err(drv("event"));
        let signals = &self.lanes.lanes.signals;
        Ok(LaneEvents {
            start: r.start,
            fork: new()?,
            joins: (1..self.lanes.lanes.count)
                .map(|_| new())
                .collect::<Result<_>>()?,
            after: r
                .map(|si| signals[si].then(new).transpose())
                .collect::<Result<_>>()?,
        })
    }

    /// Makes `g.dev` hold the lists `per_step` in bucket `bucket`'s fixed layout: packed and
    /// uploaded, unless they are the lists it already holds.
    pub(super) fn upload_graph_lists(
        &mut self,
        g: &mut Graphs,
        per_step: &[Vec<u32>],
        bucket: usize,
    ) -> Result<()> {
        // Not known while it is being replaced (an upload that fails leaves it unknown).
        let mut uploaded = g.uploaded.take();
        let same = |(b, lists): &(usize, Vec<Vec<u32>>)| *b == bucket && lists == per_step;
        if !uploaded.as_ref().is_some_and(same) {
            let len = g
                .packer
                .pack(&self.plan, &self.grid, per_step, g.levels[bucket]);
            upload_lists(
                &mut self.lists_host,
                &self.stream,
                &g.packer.data[..len],
                &g.dev,
            )?;
            let (b, lists) = uploaded.get_or_insert_with(|| (bucket, Vec::new()));
            *b = bucket;
            per_step.clone_into(lists);
        }
        g.uploaded = uploaded;
        Ok(())
    }

    /// One frame by graph replay: one upload of the fixed-layout lists, then per segment one
    /// graph launch (host steps and operand uploads in between, as in the eager order).
    pub(super) fn run_graphs(&mut self, tiles: &StepTiles, bucket: usize) -> Result<()> {
        let Some(mut g) = self.graphs.take() else {
            return self.run_eager(tiles);
        };
        let r = (|| -> Result<()> {
            self.upload_graph_lists(&mut g, &tiles.per_step, bucket)?;
            let mut seg = 0;
            for item in &g.schedule {
                match item {
                    Item::Segment(r) => {
                        g.exec[bucket][seg]
                            .0
                            .launch()
                            .map_err(drv("graph launch"))?;
                        seg += 1;
                        for si in r.clone() {
                            if self.downloads_now(si) {
                                self.pending.push(si);
                            }
                        }
                    }
                    Item::Upload(si) => {
                        if tiles.per_step.get(*si).is_some_and(|t| !t.is_empty()) {
                            self.upload_rhs(*si)?;
                        }
                    }
                    Item::Host(si) => self.run_host(*si)?,
                }
            }
            Ok(())
        })();
        self.graphs = Some(g);
        r?;
        self.flush()
    }
}
