//! CUDA graphs: the frame split into device segments and host work, each segment captured once
//! per tile-count bucket over fixed-layout tile lists, and a frame replayed from them.

use std::ops::Range;

use cudarc::driver::{sys, CudaGraph, CudaSlice};

use super::{upload_lists, CudaBackend};
use crate::backend::cuda::driver::drv;
use crate::backend::cuda::geometry::{self, FixedPacker};
use crate::backend::cuda::layers::LayerLists;
use crate::backend::StepTiles;
use crate::error::{Error, Result};
use crate::model::plan::{LayerOp, Operand, Step};

/// What a frame does, in order, when it replays graphs.
enum Item {
    /// Steps launched by one graph (Layer / GlobalPool / Export / device Rearrange steps).
    Segment(Range<usize>),
    /// Upload of a Binary layer's host operand (slot) before its segment.
    Upload(usize),
    /// A host Rearrange / Generic step.
    Host(usize),
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
    dev: CudaSlice<u32>,
}

impl CudaBackend {
    /// Splits the plan into device segments and host work, and captures every segment once per
    /// tile-count bucket, launched over the fixed-layout lists of that bucket.
    pub(super) fn capture_graphs(&self) -> Result<Graphs> {
        let plan = self.plan.clone();
        let mut schedule = Vec::new();
        let mut start: Option<usize> = None;
        let close = |schedule: &mut Vec<Item>, start: &mut Option<usize>, end: usize| {
            if let Some(s) = start.take() {
                schedule.push(Item::Segment(s..end));
            }
        };
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                Step::Layer(l) => {
                    // A host operand is uploaded between graphs; one a device step wrote is
                    // copied inside the graph.
                    if let LayerOp::Binary {
                        rhs: Operand::Slot(s),
                        ..
                    } = &l.op
                    {
                        if self.tail.writer[*s].is_none() {
                            close(&mut schedule, &mut start, si);
                            schedule.push(Item::Upload(si));
                        }
                    }
                    start.get_or_insert(si);
                }
                _ if self.steps[si].result().is_some() => {
                    start.get_or_insert(si);
                }
                // Copies composed into their readers: nothing to do, no reason to split.
                _ if self.writes_nothing(si) => {}
                _ => {
                    close(&mut schedule, &mut start, si);
                    schedule.push(Item::Host(si));
                }
            }
        }
        close(&mut schedule, &mut start, plan.steps.len());

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
                self.stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                    .map_err(drv("begin capture"))?;
                for si in r.clone() {
                    let (t0, r0) = FixedPacker::offsets(si, b);
                    let m = match &plan.steps[si] {
                        Step::Layer(l) => {
                            geometry::bucket_rows(&self.grid, &plan.buffers[l.output.buf], b)
                        }
                        _ => 0,
                    };
                    let ll = LayerLists {
                        tiles: base + (t0 * 4) as u64,
                        rows: base + (r0 * 4) as u64,
                        n: b,
                        m,
                    };
                    self.copy_operand(si)?;
                    self.launch_step(si, ll)?;
                }
                let g = self
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(drv("end capture"))?
                    .ok_or_else(|| Error::Backend("empty graph".into()))?;
                g.upload().map_err(drv("graph upload"))?;
                set.push(Graph(g));
            }
            exec.push(set);
        }
        Ok(Graphs {
            levels,
            exec,
            schedule,
            packer: FixedPacker::default(),
            dev,
        })
    }

    /// One frame by graph replay: one upload of the fixed-layout lists, then per segment one
    /// graph launch (host steps and operand uploads in between, as in the eager order).
    pub(super) fn run_graphs(&mut self, tiles: &StepTiles, bucket: usize) -> Result<()> {
        let plan = self.plan.clone();
        let Some(mut g) = self.graphs.take() else {
            return self.run_eager(tiles);
        };
        let r = (|| -> Result<()> {
            let level = g.levels[bucket];
            let len = g.packer.pack(&plan, &self.grid, &tiles.per_step, level);
            upload_lists(
                &mut self.lists_host,
                &self.stream,
                &g.packer.data[..len],
                &g.dev,
            )?;
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
