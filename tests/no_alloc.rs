//! Issue 2's "zero allocation per frame": after the first frames, a frame through the engine
//! (change detection, tile lists, every layer, the head's rearrangements and tail ops) allocates
//! nothing in our code, dense or sparse, on each of the three real models. A counting global allocator sees every
//! allocation of the process while a frame runs; each one's backtrace tells whether it comes from
//! inside the GEMM crate (which keeps small per-call bookkeeping, printed) or from anywhere else
//! (asserted to be none).

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gstregiondrop::backend::Precision;
use gstregiondrop::engine::{EngineConfig, RunMode};

struct Counting;
static WATCH: AtomicBool = AtomicBool::new(false);
static OURS: AtomicUsize = AtomicUsize::new(0);
static IN_GEMM: AtomicUsize = AtomicUsize::new(0);
static FIRST_OF_OURS: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

thread_local! {
    /// Set while this thread captures a backtrace (which allocates itself).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn classify() {
    if !WATCH.load(Ordering::Relaxed) || BUSY.with(|b| b.replace(true)) {
        return;
    }
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    if bt.contains("gemm_common::") || bt.contains("gemm_f32::") || bt.contains("gemm::gemm") {
        IN_GEMM.fetch_add(1, Ordering::Relaxed);
    } else {
        OURS.fetch_add(1, Ordering::Relaxed);
        let mut first = FIRST_OF_OURS.lock().unwrap();
        if first.is_none() {
            *first = Some(bt);
        }
    }
    BUSY.with(|b| b.set(false));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        classify();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        classify();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn frames_after_warm_up_allocate_nothing_in_our_code() {
    let mut failures = Vec::new();
    for m in &real_models() {
        let plan = load(m);
        let frames = clip_frames(&plan, 30, 8);
        // bf16 runs the bf16 kernels where the CPU has them (else f32 again).
        for (mode, precision) in [
            (RunMode::Dense, Precision::F32),
            (RunMode::Sparse, Precision::F32),
            (RunMode::Dense, Precision::Bf16),
            (RunMode::Sparse, Precision::Bf16),
        ] {
            let mut e = engine(
                &plan,
                &m.norm,
                EngineConfig {
                    mode,
                    precision,
                    ..Default::default()
                },
            );
            for f in &frames[..3] {
                e.process(f).unwrap();
            }
            OURS.store(0, Ordering::Relaxed);
            IN_GEMM.store(0, Ordering::Relaxed);
            for f in &frames[3..] {
                WATCH.store(true, Ordering::Relaxed);
                let st = e.process(f);
                WATCH.store(false, Ordering::Relaxed);
                st.unwrap();
            }
            let n = frames.len() - 3;
            let (ours, gemm) = (
                OURS.load(Ordering::Relaxed),
                IN_GEMM.load(Ordering::Relaxed),
            );
            println!(
            "{} {mode:?} {precision}: {n} frames, allocations: {ours} in our code, {gemm} inside the GEMM crate",
            m.path
        );
            let first = FIRST_OF_OURS.lock().unwrap().take();
            if ours != 0 {
                failures.push(format!(
                "{} {mode:?} {precision}: our code allocated {ours} times while running frames; the first:\n{}",
                m.path,
                first.unwrap_or_default()
            ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
