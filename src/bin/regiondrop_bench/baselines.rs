//! --onnxruntime and --openvino: the dense engines a user would pick instead of ours, timed on
//! each frame between our runs of the same frame, and onnxruntime's outputs (for the error figure).

use super::*;
use gstregiondrop::baseline::{Baseline, BaselineTimer};

/// A baseline engine's session and its milliseconds on the frames timed so far (frame 0, the
/// warm-up, left out as it is for our engines).
pub struct Timed {
    timer: BaselineTimer,
    pub ms: Vec<f64>,
}

impl Timed {
    fn start(engine: Baseline, s: &Setup) -> Result<Self, Fail> {
        let flag = format!("--{}", engine.name());
        let timer = BaselineTimer::new(engine, &s.model, [1, 3, s.h, s.w], s.threads)
            .map_err(|e| Fail::Input(format!("{flag}: {e}")))?;
        Ok(Timed { timer, ms: vec![] })
    }

    /// Times frame `i` of the clip, given as the network's NCHW input. Its thread pools spin
    /// for a while after a run; the timer stops the helper between frames, so they cannot slow
    /// our runs. No pause between the runs: a machine left idle for 50 ms on each side slowed
    /// every engine's next run here, ours by 1.3–1.6× (two cores of a shared VM).
    fn time(&mut self, input: &[f32], i: usize) -> Result<(), Fail> {
        let ms = self
            .timer
            .time(input)
            .map_err(|e| Fail::Run(format!("--{}: {e}", self.timer.engine.name())))?;
        if i > 0 {
            self.ms.push(ms);
        }
        Ok(())
    }

    /// The precision the engine runs in, as it reports it.
    pub fn precision(&self) -> &str {
        &self.timer.precision
    }

    /// The median time, times `scale`, rounded.
    pub fn figure(&self, scale: f64) -> Option<f64> {
        (!self.ms.is_empty())
            .then(|| median(&self.ms) * scale)
            .and_then(|v| round(v, 3))
    }
}

/// The baselines the command line asked for.
#[derive(Default)]
pub struct Baselines {
    /// onnxruntime's outputs on the frames `ort_idx` (for the error figure), and its timer.
    pub ort: Option<Timed>,
    pub ort_idx: Vec<usize>,
    pub ort_outs: Vec<Vec<Tensor>>,
    pub openvino: Option<Timed>,
}

impl Baselines {
    pub fn start(cli: &Cli, s: &Setup) -> Result<Self, Fail> {
        let mut b = Baselines::default();
        if cli.onnxruntime {
            let n = s.n();
            let k = ORT_FRAMES.min(n);
            b.ort_idx = (0..k).map(|j| j * n / k).collect();
            let inputs: Vec<Vec<f32>> = b
                .ort_idx
                .iter()
                .map(|&i| s.norm.to_nchw(&s.net[i], s.w, s.h))
                .collect();
            let pb = spinner("onnxruntime");
            let r = gstregiondrop::baseline::run(&s.model, &inputs, [1, 3, s.h, s.w], s.threads, 1)
                .map_err(|e| Fail::Input(format!("--onnxruntime: {e}")))?;
            pb.finish_and_clear();
            if r.frames.len() != b.ort_idx.len() {
                return Err(Fail::Run(format!(
                    "onnxruntime returned {} frames for {}",
                    r.frames.len(),
                    b.ort_idx.len()
                )));
            }
            b.ort_outs = r.frames;
            b.ort = Some(Timed::start(Baseline::Onnxruntime, s)?);
        }
        if let Some(p) = cli.openvino {
            b.openvino = Some(Timed::start(Baseline::Openvino(p.hint()), s)?);
        }
        Ok(b)
    }

    /// Times frame `i` in each baseline, onnxruntime first.
    pub fn time(&mut self, s: &Setup, i: usize) -> Result<(), Fail> {
        if self.ort.is_none() && self.openvino.is_none() {
            return Ok(());
        }
        let input = s.norm.to_nchw(&s.net[i], s.w, s.h);
        for t in [&mut self.ort, &mut self.openvino].into_iter().flatten() {
            t.time(&input, i)?;
        }
        Ok(())
    }

    /// Forgets the times so far (between the rows of --fractions).
    pub fn clear_times(&mut self) {
        for t in [&mut self.ort, &mut self.openvino].into_iter().flatten() {
            t.ms.clear();
        }
    }

    /// onnxruntime's outputs on frame `i`, where it ran that frame.
    pub fn ort_outputs(&self, i: usize) -> Option<&[Tensor]> {
        let j = self.ort_idx.iter().position(|&k| k == i)?;
        Some(&self.ort_outs[j])
    }

    /// Each baseline's median ms, times `scale`: (onnxruntime, openvino).
    pub fn figures(&self, scale: f64) -> (Option<f64>, Option<f64>) {
        let f = |t: &Option<Timed>| t.as_ref().and_then(|t| t.figure(scale));
        (f(&self.ort), f(&self.openvino))
    }
}
