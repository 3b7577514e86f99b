//! --streams N: a multi-camera process. N engines, each on its own thread, run the same frames at
//! once (on one GPU, their kernels interleave on N streams); frames per second of all streams
//! together, dense then sparse, one JSON line each. On the CPU backend, for each way of giving the
//! engines their worker threads ([`Pools`]), side by side.

use std::time::Instant;

use serde::Serialize;

use super::{dense_cfg, print_json, running, sparse_cfg, Cli, Fail, Setup};
use gstregiondrop::cpu_time::process_cpu_ms;
use gstregiondrop::engine::EngineConfig;

/// How N CPU engines get their worker threads (each engine has a pool of its own).
#[derive(Clone, Copy, Debug)]
enum Pools {
    /// Each engine threads / N workers.
    Split,
    /// Each engine all the threads (N times as many in all): N elements left at `threads=0`.
    Each,
}

impl Pools {
    fn name(self) -> &'static str {
        match self {
            Pools::Split => "split",
            Pools::Each => "each",
        }
    }

    /// The engines' `threads` setting for `n` streams and `threads` in all.
    fn engine_threads(self, n: usize, threads: usize) -> usize {
        match self {
            Pools::Split => (threads / n).max(1),
            Pools::Each => threads,
        }
    }
}

#[derive(Serialize)]
struct StreamsReport<'a> {
    model: String,
    backend: &'a str,
    precision: &'a str,
    streams: usize,
    /// How the CPU engines got their threads: split (threads / N each) or each (all the threads
    /// each); null on the CUDA backend.
    pools: Option<&'static str>,
    /// Frames each stream ran (the first, a dense warm-up, included).
    frames: usize,
    mode: &'static str,
    /// Frames of all streams per second of wall time.
    fps_total: f64,
    fps_per_stream: f64,
    /// Wall milliseconds per frame, as one stream sees it.
    ms_per_frame: f64,
    /// Mean active fraction over the streams' frames.
    active_fraction: f64,
    /// The process's CPU time (every thread, user and system) per frame of all streams: what
    /// one camera's frame costs the host.
    cpu_ms_per_frame: f64,
    /// What the engines say they hold (caches, scratch, weights), summed: weights they share
    /// count once per engine.
    memory_bytes: usize,
    /// CUDA: how much the device's free memory fell while the engines were built, shared
    /// weights counted once (null on the CPU backend).
    device_bytes: Option<usize>,
}

pub fn streams_run(cli: &Cli, s: &Setup, n: usize) -> Result<(), Fail> {
    if s.backend != "cpu" {
        return streams_with(cli, s, n, None);
    }
    for pools in [Pools::Split, Pools::Each] {
        streams_with(cli, s, n, Some(pools))?;
    }
    Ok(())
}

/// One dense and one sparse line of `n` streams, the CPU engines' threads given by `pools`.
fn streams_with(cli: &Cli, s: &Setup, n: usize, pools: Option<Pools>) -> Result<(), Fail> {
    let threads = pools.map_or(s.threads, |p| p.engine_threads(n, s.threads));
    let modes: [(&'static str, EngineConfig); 2] = [
        ("dense", dense_cfg(cli, threads)),
        ("sparse", sparse_cfg(cli, threads)),
    ];
    for (mode, cfg) in modes {
        // Engines are built before the clock starts (CUDA set-up is serialised in the process),
        // with the decoder's gate, as the main run sets it (at the scoring floor, which selects
        // more candidates than the element's operating threshold): where the backend selects
        // the candidates, only they come down.
        let device_free = || {
            (s.backend == "cuda")
                .then(|| gstregiondrop::backend::cuda::device_free_bytes(cfg.device_id).ok())
                .flatten()
        };
        let free_before = device_free();
        let mut engines = (0..n)
            .map(|_| {
                let mut e = s.engine(cfg.clone())?;
                s.set_gate(&mut e)?;
                Ok(e)
            })
            .collect::<Result<Vec<_>, Fail>>()?;
        let device_bytes = free_before
            .zip(device_free())
            .map(|(before, after)| before.saturating_sub(after));
        let memory_bytes = engines.iter().map(|e| e.memory_bytes()).sum();
        let start = Instant::now();
        let cpu0 = process_cpu_ms();
        let active: Vec<f64> = std::thread::scope(|scope| {
            let workers: Vec<_> = engines
                .iter_mut()
                .map(|e| {
                    scope.spawn(move || -> Result<f64, Fail> {
                        let mut active = 0.0;
                        for rgb in &s.net {
                            active += e.process(rgb).map_err(running)?.active_fraction;
                        }
                        Ok(active / s.net.len() as f64)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(Fail::Run("a stream thread panicked".into())))
                })
                .collect::<Result<_, Fail>>()
        })?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = process_cpu_ms() - cpu0;
        let frames = s.net.len();
        let report = StreamsReport {
            model: s.model.display().to_string(),
            backend: &s.backend,
            precision: &s.precision,
            streams: n,
            pools: pools.map(Pools::name),
            frames,
            mode,
            fps_total: (n * frames) as f64 / secs,
            fps_per_stream: frames as f64 / secs,
            ms_per_frame: secs * 1e3 / frames as f64,
            active_fraction: active.iter().sum::<f64>() / n as f64,
            cpu_ms_per_frame: cpu / (n * frames) as f64,
            memory_bytes,
            device_bytes,
        };
        print_json(&report)?;
    }
    Ok(())
}
