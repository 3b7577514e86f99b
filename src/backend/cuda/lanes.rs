//! Independent branches of a frame's device work, side by side in one CUDA graph.
//!
//! A frame replays its device steps as graphs, one per segment between host steps ([`Item`]).
//! Captured from one stream, a graph is a chain, so a kernel waits for every kernel before it,
//! even one on another branch of the network (the head's levels, a shuffle unit's two
//! branches). On small frames each launch costs a few microseconds whatever its work, so the
//! chain's length is the frame's floor. Here each segment's steps are put on *lanes*: streams
//! that the capture forks from the frame's stream and joins back, with an event wherever a step
//! reads what another lane wrote. The graph then holds only the edges the data needs, plus the
//! order of each lane.
//!
//! The dependencies come from what each step reads and writes: channel ranges of feature
//! buffers and tensor slots. Steps that launch nothing (composed Generic steps, folded Exports)
//! keep their place, so a dependency through them still orders their readers. Convolutions that
//! may run at the same time use different scratch slots (gathered operand, GEMM result, split-K
//! space), each sized for its own convolutions; ordered ones may share one.

use std::ops::Range;

use super::geometry;
use super::layers::{self, Addrs, StepPtrs};
use super::tail::DeviceTail;
use crate::backend::generic::GenericStep;
use crate::model::plan::{LayerOp, Operand, Plan, Step, View};

/// What a frame does, in order, when it replays graphs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Steps launched by one graph (Layer / GlobalPool / Export / device Rearrange and Generic
    /// steps).
    Segment(Range<usize>),
    /// Upload of a Binary layer's host operand (slot) before its segment.
    Upload(usize),
    /// A host Rearrange / Generic step.
    Host(usize),
}

/// Splits the plan into device segments and host work. `steps` are the device addresses of
/// each step (a device result marks a device step), `tail` and `generic` the backend's device
/// tail and prepared Generic steps.
pub fn frame_items(
    plan: &Plan,
    steps: &[StepPtrs],
    tail: &DeviceTail,
    generic: &[Option<GenericStep>],
) -> Vec<Item> {
    let mut items = Vec::new();
    let mut start: Option<usize> = None;
    let close = |items: &mut Vec<Item>, start: &mut Option<usize>, end: usize| {
        if let Some(s) = start.take() {
            items.push(Item::Segment(s..end));
        }
    };
    for (si, step) in plan.steps.iter().enumerate() {
        match step {
            Step::Layer(l) => {
                // A host operand is uploaded between graphs; one a device step wrote is copied
                // inside the graph.
                if let LayerOp::Binary {
                    rhs: Operand::Slot(s),
                    ..
                } = &l.op
                {
                    if tail.writer[*s].is_none() {
                        close(&mut items, &mut start, si);
                        items.push(Item::Upload(si));
                    }
                }
                start.get_or_insert(si);
            }
            _ if steps[si].result().is_some() => {
                start.get_or_insert(si);
            }
            // Copies composed into their readers: nothing to do, no reason to split.
            _ if writes_nothing(plan, tail, generic, si) => {}
            _ => {
                close(&mut items, &mut start, si);
                items.push(Item::Host(si));
            }
        }
    }
    close(&mut items, &mut start, plan.steps.len());
    items
}

/// A Generic step whose outputs were all composed into their readers, or an Export folded into
/// its Rearrange: it does nothing.
pub fn writes_nothing(
    plan: &Plan,
    tail: &DeviceTail,
    generic: &[Option<GenericStep>],
    si: usize,
) -> bool {
    match plan.steps[si] {
        Step::Generic { .. } => generic[si].as_ref().is_some_and(|g| !g.writes_any()),
        Step::Export { .. } => tail.folded[si],
        _ => false,
    }
}

/// Memory a step reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Channels `c0..c1` of a feature buffer.
    Buf {
        buf: usize,
        c0: usize,
        c1: usize,
    },
    Slot(usize),
}

impl Place {
    fn of(v: &View) -> Self {
        Place::Buf {
            buf: v.buf,
            c0: v.c_off,
            c1: v.c_off + v.c,
        }
    }

    fn overlaps(&self, o: &Place) -> bool {
        match (*self, *o) {
            (
                Place::Buf { buf, c0, c1 },
                Place::Buf {
                    buf: b,
                    c0: d0,
                    c1: d1,
                },
            ) => buf == b && c0 < d1 && d0 < c1,
            (Place::Slot(a), Place::Slot(b)) => a == b,
            _ => false,
        }
    }
}

/// What step `step` reads and what it writes.
fn access(step: &Step) -> (Vec<Place>, Vec<Place>) {
    match step {
        Step::Layer(l) => {
            let mut reads = vec![Place::of(&l.input)];
            if let LayerOp::Binary { rhs, .. } = &l.op {
                match rhs {
                    Operand::View(v) => reads.push(Place::of(v)),
                    Operand::Slot(s) => reads.push(Place::Slot(*s)),
                    Operand::Channels(_) => {}
                }
            }
            (reads, vec![Place::of(&l.output)])
        }
        Step::GlobalPool { input, slot } | Step::Export { input, slot } => {
            (vec![Place::of(input)], vec![Place::Slot(*slot)])
        }
        Step::Rearrange { input, output, .. } => {
            (vec![Place::Slot(*input)], vec![Place::Slot(*output)])
        }
        Step::Generic {
            inputs, outputs, ..
        } => (
            inputs.iter().flatten().map(|&s| Place::Slot(s)).collect(),
            outputs.iter().map(|&s| Place::Slot(s)).collect(),
        ),
    }
}

/// Whether a step that launches nothing (`weight` 0) reads a place that two steps write. Such a
/// step stands in for the reader behind it (a Rearrange reading a folded Export's buffer, a
/// Generic step reading a composed step's inputs): that orders the real read after the write
/// before it, but a second write (an in-place layer) would wait only for the stand-in.
fn stand_in_rewritten(rw: &[(Vec<Place>, Vec<Place>)], weight: impl Fn(usize) -> usize) -> bool {
    let rewritten = |p: &Place| {
        // The writes that touch p, by step: two of different steps on the same memory?
        let writes: Vec<(usize, &Place)> = rw
            .iter()
            .enumerate()
            .flat_map(|(si, (_, w))| w.iter().filter(|q| p.overlaps(q)).map(move |q| (si, q)))
            .collect();
        writes
            .iter()
            .enumerate()
            .any(|(i, (a, q))| writes[i + 1..].iter().any(|(b, r)| a != b && q.overlaps(r)))
    };
    rw.iter()
        .enumerate()
        .any(|(si, (r, _))| weight(si) == 0 && r.iter().any(rewritten))
}

/// Whether step `b` (later) must wait for step `a`: one writes what the other reads or writes.
fn conflict(a: &(Vec<Place>, Vec<Place>), b: &(Vec<Place>, Vec<Place>)) -> bool {
    let hits = |x: &[Place], y: &[Place]| x.iter().any(|p| y.iter().any(|q| p.overlaps(q)));
    hits(&a.1, &b.0) || hits(&a.1, &b.1) || hits(&a.0, &b.1)
}

/// The most lanes a graph gets: more would add scratch and streams for chains no model here
/// needs (four reach the data's own bound on the bundled models).
pub const MAX_LANES: usize = 8;

/// Each step's weight for [`Lanes::plan`]: the kernels it launches in a graph, 0 for a step
/// that does nothing.
pub fn step_weights(
    plan: &Plan,
    addrs: &Addrs,
    tail: &DeviceTail,
    generic: &[Option<GenericStep>],
) -> Vec<usize> {
    (0..plan.steps.len())
        .map(|si| match writes_nothing(plan, tail, generic, si) {
            true => 0,
            false => layers::step_launches(plan, addrs, si),
        })
        .collect()
}

/// Sizes of a scratch slot (see [`Lanes::scratch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneScratch {
    /// Floats of the gathered operand (and of its f16 twin).
    pub a: usize,
    /// Floats of the GEMM result, also the split K's partial sums.
    pub c: usize,
    /// Counters of the split K.
    pub counters: usize,
}

impl LaneScratch {
    /// The scratch the steps `on` takes need (see [`Lanes::scratch`]).
    pub fn of(
        plan: &Plan,
        on: impl Fn(usize) -> bool,
        main_ws: usize,
        fused: impl Fn(usize) -> bool,
    ) -> Self {
        let (a, c) = geometry::scratch_sizes_of(plan, |si| on(si) && !fused(si));
        let split = geometry::split_space_bound(plan, |si| on(si) && fused(si));
        LaneScratch {
            a,
            c: c.max(split.min(main_ws)),
            counters: geometry::fused_counters_len_of(plan, |si| on(si) && fused(si)),
        }
    }
}

/// Each step's lane, and the steps of other lanes it waits for.
#[derive(Clone, Debug, Default)]
pub struct Lanes {
    /// Per step (indexed like the plan's steps): its lane, 0 being the frame's own stream.
    pub lane: Vec<usize>,
    /// Per step: the steps of the same segment, on other lanes, it must wait for (beyond what
    /// its lane's order already gives it).
    pub waits: Vec<Vec<usize>>,
    /// Per step: another lane waits for it (an event is recorded after it).
    pub signals: Vec<bool>,
    /// Lanes used.
    pub count: usize,
    /// Per step: the scratch its convolution uses, 0 being the frame stream's own. Steps that
    /// may run at the same time use different scratch; ordered ones share it
    /// ([`Lanes::scratch_slots`]).
    pub slot: Vec<usize>,
    /// Scratch slots used.
    pub slots: usize,
}

impl Lanes {
    /// Every step on the frame's own stream.
    pub fn one(steps: usize) -> Self {
        Lanes {
            lane: vec![0; steps],
            waits: vec![Vec::new(); steps],
            signals: vec![false; steps],
            count: 1,
            slot: vec![0; steps],
            slots: 1,
        }
    }

    /// Puts each segment's steps on at most `max` lanes (at most [`MAX_LANES`]). A step
    /// continues the lane of the latest-finishing step it depends on, else takes a new lane
    /// while there is one, else the lane that is free soonest. `weight(si)` is a step's cost
    /// (its launches, 0 for a step that launches nothing) for that choice. A plan where a step
    /// that launches nothing reads a place written twice stays on one lane.
    pub fn plan(plan: &Plan, items: &[Item], max: usize, weight: impl Fn(usize) -> usize) -> Self {
        let n = plan.steps.len();
        let mut lanes = Lanes::one(n);
        let max = max.min(MAX_LANES);
        let rw: Vec<_> = plan.steps.iter().map(access).collect();
        if max <= 1 || stand_in_rewritten(&rw, &weight) {
            return lanes;
        }
        for item in items {
            let Item::Segment(r) = item else { continue };
            let dag = Dag::of(r.clone(), &rw, &weight);
            // Per lane: its last step so far.
            let mut tail: Vec<Option<usize>> = vec![None; max];
            for i in r.clone() {
                let ancestor = |t: Option<usize>| t.is_some_and(|t| dag.is_ancestor(t, i));
                let finish = |t: usize| dag.finish(t);
                let l = (0..max)
                    .filter(|&l| ancestor(tail[l]))
                    .max_by_key(|&l| tail[l].map_or(0, finish))
                    .or_else(|| (0..max).find(|&l| tail[l].is_none()))
                    .unwrap_or_else(|| {
                        (0..max)
                            .min_by_key(|&l| tail[l].map_or(0, finish))
                            .unwrap_or(0)
                    });
                let before = tail[l];
                let covered = |d: usize| before.is_some_and(|t| t == d || dag.is_ancestor(d, t));
                let waits: Vec<usize> = dag
                    .reduced(i)
                    .into_iter()
                    .filter(|&d| lanes.lane[d] != l && !covered(d))
                    .collect();
                for &d in &waits {
                    lanes.signals[d] = true;
                }
                lanes.lane[i] = l;
                lanes.waits[i] = waits;
                tail[l] = Some(i);
                lanes.count = lanes.count.max(l + 1);
            }
        }
        lanes.scratch_slots(plan, items);
        lanes
    }

    /// Gives each convolution a scratch slot: its lane's, or slot 0 (the frame stream's
    /// scratch, sized for every convolution) where this schedule orders it against every other
    /// convolution of slot 0 in its segment. Then the slots still used are numbered from 1.
    /// Segments are graphs that run one after another, and steps outside them run on the
    /// frame's own stream, so only steps of one segment can run at once.
    pub fn scratch_slots(&mut self, plan: &Plan, items: &[Item]) {
        let uses = scratch_users(plan);
        self.slot = (0..plan.steps.len())
            .map(|si| if uses[si] { self.lane[si] } else { 0 })
            .collect();
        for item in items {
            let Item::Segment(r) = item else { continue };
            let order = self.order(r.clone(), &|_| 0);
            let ordered = |a: usize, b: usize| a == b || order.is_ancestor(a.min(b), a.max(b));
            for i in r.clone() {
                if !uses[i] || self.slot[i] == 0 {
                    continue;
                }
                let mut main = r.clone().filter(|&j| uses[j] && self.slot[j] == 0);
                if main.all(|j| ordered(i, j)) {
                    self.slot[i] = 0;
                }
            }
        }
        let mut number = vec![None; self.count.max(1)];
        number[0] = Some(0);
        let mut slots = 1;
        for s in self.slot.iter_mut() {
            *s = *number[*s].get_or_insert_with(|| {
                slots += 1;
                slots - 1
            });
        }
        self.slots = slots;
    }

    /// The scratch slot `slot` needs: floats of the gathered operand and the GEMM result of its
    /// unfused convolutions, which also hold the split-K partial sums of its fused ones
    /// (`fused(si)`), and split counters. `main_ws` is the split space of the frame's own
    /// stream; a slot's split space holds what its convolutions split into there, so that they
    /// split the same way on every lane.
    pub fn scratch(
        &self,
        plan: &Plan,
        slot: usize,
        main_ws: usize,
        fused: impl Fn(usize) -> bool,
    ) -> LaneScratch {
        LaneScratch::of(plan, |si| self.slot.get(si) == Some(&slot), main_ws, fused)
    }

    /// The longest chain of `weight` through the segments, once with only the data's
    /// dependencies (as many lanes as help) and once with these lanes' order added: what a
    /// frame's launches cost end to end if each costs its weight.
    pub fn spans(
        &self,
        plan: &Plan,
        items: &[Item],
        weight: impl Fn(usize) -> usize,
    ) -> (usize, usize) {
        let rw: Vec<_> = plan.steps.iter().map(access).collect();
        let (mut free, mut laned) = (0, 0);
        for item in items {
            let Item::Segment(r) = item else { continue };
            let longest = |dag: Dag| r.clone().map(|i| dag.finish(i)).max().unwrap_or(0);
            free += longest(Dag::of(r.clone(), &rw, &weight));
            laned += longest(self.order(r.clone(), &weight));
        }
        (free, laned)
    }

    /// This schedule's order among the steps of segment `r`: each step after the one before it
    /// on its lane and after the steps it waits for.
    fn order(&self, r: Range<usize>, weight: &impl Fn(usize) -> usize) -> Dag {
        let start = r.start;
        let preds = |i: usize| -> Vec<usize> {
            let before = (start..i).rev().find(|&j| self.lane[j] == self.lane[i]);
            self.waits[i].iter().copied().chain(before).collect()
        };
        Dag::new(r, preds, weight)
    }

    /// Whether a schedule orders every pair of conflicting steps of each segment (the check the
    /// tests make of [`Lanes::plan`]): the later one is reached from the earlier one through
    /// lane order and waits. Two convolutions conflict where they read or write the same
    /// feature or tensor memory, or share a scratch slot. Returns the first pair that is not.
    pub fn unordered(&self, plan: &Plan, items: &[Item]) -> Option<(usize, usize)> {
        let rw: Vec<_> = plan.steps.iter().map(access).collect();
        let uses = scratch_users(plan);
        let scratch = |j: usize, i: usize| uses[j] && uses[i] && self.slot[j] == self.slot[i];
        for item in items {
            let Item::Segment(r) = item else { continue };
            let order = self.order(r.clone(), &|_| 0);
            for i in r.clone() {
                for j in r.start..i {
                    if (conflict(&rw[j], &rw[i]) || scratch(j, i)) && !order.is_ancestor(j, i) {
                        return Some((j, i));
                    }
                }
            }
        }
        None
    }
}

/// Per step: whether it uses scratch (the convolutions that are not depthwise).
fn scratch_users(plan: &Plan) -> Vec<bool> {
    let mut uses = vec![false; plan.steps.len()];
    for (si, u) in uses.iter_mut().enumerate() {
        *u = geometry::convs_where(plan, |s| s == si).next().is_some();
    }
    uses
}

/// The dependencies among one segment's steps.
struct Dag {
    start: usize,
    /// Per step of the segment: the earlier steps it comes after.
    deps: Vec<Vec<usize>>,
    /// Per step: its ancestors, as a bit per step of the segment.
    anc: Vec<Vec<bool>>,
    /// Per step: when it ends on the longest chain of dependencies, each step taking its weight.
    fin: Vec<usize>,
}

impl Dag {
    /// The data's dependencies among the steps of `r`: a step depends on each earlier one it
    /// conflicts with.
    fn of(
        r: Range<usize>,
        rw: &[(Vec<Place>, Vec<Place>)],
        weight: &impl Fn(usize) -> usize,
    ) -> Self {
        let start = r.start;
        let preds =
            |i: usize| -> Vec<usize> { (start..i).filter(|&j| conflict(&rw[j], &rw[i])).collect() };
        Dag::new(r, preds, weight)
    }

    /// The steps of `r`, each after `preds(i)` (earlier steps of `r`).
    fn new(
        r: Range<usize>,
        preds: impl Fn(usize) -> Vec<usize>,
        weight: &impl Fn(usize) -> usize,
    ) -> Self {
        let len = r.len();
        let mut deps = vec![Vec::new(); len];
        let mut anc = vec![vec![false; len]; len];
        let mut fin = vec![0usize; len];
        for i in r.clone() {
            let x = i - r.start;
            for j in preds(i) {
                let jx = j - r.start;
                anc[x][jx] = true;
                let row = anc[jx].clone();
                for (dst, src) in anc[x].iter_mut().zip(row) {
                    *dst |= src;
                }
                fin[x] = fin[x].max(fin[jx]);
                deps[x].push(j);
            }
            fin[x] += weight(i);
        }
        Dag {
            start: r.start,
            deps,
            anc,
            fin,
        }
    }

    /// Whether step `a` must happen before step `b`.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        a >= self.start && a < b && self.anc[b - self.start][a - self.start]
    }

    /// Step i's dependencies less those implied by another of them.
    fn reduced(&self, i: usize) -> Vec<usize> {
        let deps = &self.deps[i - self.start];
        deps.iter()
            .copied()
            .filter(|&d| !deps.iter().any(|&e| e != d && self.is_ancestor(d, e)))
            .collect()
    }

    /// When step i ends on the longest chain of dependencies.
    fn finish(&self, i: usize) -> usize {
        self.fin[i - self.start]
    }
}
