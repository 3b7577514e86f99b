//! The lanes of a graph segment (`backend::cuda::lanes`) on the host kernels: each lane's
//! launches are recorded in its own queue, with its waits, and replayed interleaved, one launch
//! at a time, in an order the waits allow but program order does not give. A missing wait or
//! scratch shared by steps that may run at once then reads stale or foreign values.

use std::cell::RefCell;
use std::collections::VecDeque;

use gstregiondrop::backend::cuda::geometry::Dims;
use gstregiondrop::backend::cuda::lanes::{Item, Lanes};
use gstregiondrop::backend::cuda::layers::{Addrs, KArg, Kernel, Launcher, Scratch};
use gstregiondrop::error::Result;
use gstregiondrop::model::plan::Plan;

/// Which ready lane goes next.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    /// The highest-numbered lane runs until it waits: as far from program order as the waits
    /// allow.
    HighestFirst,
    /// One launch from each lane in turn.
    RoundRobin,
}

enum LaneOp {
    Launch(Kernel, Dims, Vec<KArg>),
    Gemm([usize; 3], [u64; 3], bool),
    /// Floats copied from the first address to the second (a slot operand).
    Copy(u64, u64, usize),
    /// Wait until this step is done.
    Wait(usize),
    Done(usize),
}

/// Records launches instead of running them.
pub struct Recorder {
    ops: RefCell<Vec<LaneOp>>,
}

impl Launcher for Recorder {
    fn launch(&self, k: Kernel, dims: Dims, args: &[KArg]) -> Result<()> {
        self.ops
            .borrow_mut()
            .push(LaneOp::Launch(k, dims, args.to_vec()));
        Ok(())
    }

    fn gemm(&self, m: usize, n: usize, k: usize, a: u64, w: u64, c: u64, half: bool) -> Result<()> {
        self.ops
            .borrow_mut()
            .push(LaneOp::Gemm([m, n, k], [a, w, c], half));
        Ok(())
    }
}

/// A scratch slot on the host: gathered operand, its f16 twin, GEMM result, split counters.
type HostScratch = (Vec<f32>, Vec<u16>, Vec<f32>, Vec<u32>);

/// A frame's segments run on lanes.
pub struct LaneRun {
    pub lanes: Lanes,
    /// Per scratch slot: the addresses its steps launch with (slot 0: the device's own).
    addrs: Vec<Addrs>,
    /// Kept alive for `addrs` (slots 1..).
    _scratch: Vec<HostScratch>,
    queues: Vec<VecDeque<LaneOp>>,
    done: Vec<bool>,
    order: Order,
    /// Per step: the last of its segment.
    seg_end: Vec<bool>,
    /// Per step: in a segment (recorded on a lane, even where it launches nothing).
    in_seg: Vec<bool>,
}

impl LaneRun {
    /// `items` on at most `max` lanes, scratch slots 1.. sized as the backend sizes them; `main`
    /// is the device's own addresses.
    pub fn new(
        plan: &Plan,
        items: &[Item],
        weights: &[usize],
        main: &Addrs,
        max: usize,
        order: Order,
    ) -> Self {
        let lanes = Lanes::plan(plan, items, max, |si| weights[si]);
        let mut addrs = vec![main.clone()];
        let mut scratch: Vec<HostScratch> = Vec::new();
        for slot in 1..lanes.slots {
            let need = lanes.scratch(plan, slot, main.split.ws_len, |si| {
                gstregiondrop::backend::cuda::layers::step_fused(plan, main, si)
            });
            let mut s: HostScratch = (
                vec![0.0; need.a.max(1)],
                vec![0; need.a.max(1)],
                vec![0.0; need.c.max(1)],
                vec![0; need.counters.max(1)],
            );
            // As the backend: no f32 operand scratch where the operands are gathered in f16
            // (null, so that a use faults).
            let f16 = main.scratch_a16.is_some();
            addrs.push(main.with_scratch(Scratch {
                a: if f16 { 0 } else { s.0.as_mut_ptr() as u64 },
                a16: Some(s.1.as_mut_ptr() as u64),
                c: s.2.as_mut_ptr() as u64,
                c_len: s.2.len(),
                counters: s.3.as_mut_ptr() as u64,
                counters_len: s.3.len(),
            }));
            scratch.push(s);
        }
        let mut seg_end = vec![false; plan.steps.len()];
        let mut in_seg = vec![false; plan.steps.len()];
        for it in items {
            if let Item::Segment(r) = it {
                seg_end[r.end - 1] = true;
                in_seg[r.clone()].iter_mut().for_each(|s| *s = true);
            }
        }
        LaneRun {
            queues: (0..lanes.count).map(|_| VecDeque::new()).collect(),
            done: vec![false; plan.steps.len()],
            lanes,
            addrs,
            _scratch: scratch,
            order,
            seg_end,
            in_seg,
        }
    }

    /// Drops every wait: what the tests check that they would notice.
    pub fn without_waits(mut self) -> Self {
        self.lanes.waits.iter_mut().for_each(Vec::clear);
        self
    }

    /// Whether step `si` is in a segment: it runs on a lane, whatever it launches.
    pub fn in_segment(&self, si: usize) -> bool {
        self.in_seg[si]
    }

    /// Whether step `si` ends its segment (the graph ends there: every lane is joined).
    pub fn ends_segment(&self, si: usize) -> bool {
        self.seg_end[si]
    }

    /// Records step `si` on its lane: its waits, the operand copy (from, to, floats), then
    /// what `launch` launches with the lane's addresses.
    pub fn step(
        &mut self,
        si: usize,
        copy: Option<(u64, u64, usize)>,
        launch: impl FnOnce(&Recorder, &Addrs) -> Result<()>,
    ) {
        let l = self.lanes.lane[si];
        let rec = Recorder {
            ops: RefCell::new(Vec::new()),
        };
        launch(&rec, &self.addrs[self.lanes.slot[si]]).unwrap();
        let q = &mut self.queues[l];
        q.extend(self.lanes.waits[si].iter().map(|&d| LaneOp::Wait(d)));
        q.extend(copy.map(|(s, d, n)| LaneOp::Copy(s, d, n)));
        q.extend(rec.ops.into_inner());
        q.push_back(LaneOp::Done(si));
    }

    /// Runs everything recorded, interleaved in this run's order (the segment's end: every
    /// lane joins the frame's stream).
    pub fn drain(&mut self, emu: &impl Launcher) {
        let n = self.queues.len();
        let mut turn = 0;
        loop {
            if self.queues.iter().all(VecDeque::is_empty) {
                break;
            }
            let order: Vec<usize> = match self.order {
                Order::HighestFirst => (0..n).rev().collect(),
                Order::RoundRobin => (0..n).map(|i| (turn + i) % n).collect(),
            };
            let done = &self.done;
            let ready = order.into_iter().find(|&l| match self.queues[l].front() {
                Some(LaneOp::Wait(d)) => done[*d],
                Some(_) => true,
                None => false,
            });
            let Some(l) = ready else {
                panic!("lanes wait for each other: a wait on a step recorded later");
            };
            turn = l + 1;
            match self.queues[l].pop_front().unwrap() {
                LaneOp::Launch(k, dims, args) => emu.launch(k, dims, &args).unwrap(),
                LaneOp::Gemm([m, n, k], [a, w, c], half) => {
                    emu.gemm(m, n, k, a, w, c, half).unwrap()
                }
                // SAFETY: both are device buffers of at least n floats (as `run_frame` copies).
                LaneOp::Copy(s, d, n) => unsafe {
                    std::ptr::copy_nonoverlapping(s as *const f32, d as *mut f32, n)
                },
                LaneOp::Wait(_) => {}
                LaneOp::Done(si) => self.done[si] = true,
            }
        }
        self.done.iter_mut().for_each(|d| *d = false);
    }
}
