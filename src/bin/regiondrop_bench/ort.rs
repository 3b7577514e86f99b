//! --onnxruntime: onnxruntime beside our engines, its outputs (for the error figure) and its
//! time on each frame, measured between our runs of the same frame.

use super::*;

/// onnxruntime beside our engines: its outputs on some frames (for the error figure), and a
/// session that times single frames between ours, so both are measured on the machine as it is
/// at that moment.
pub struct OrtInfo {
    /// The frame indices it ran, and its outputs on each.
    pub idx: Vec<usize>,
    pub outs: Vec<Vec<Tensor>>,
    timer: gstregiondrop::onnxruntime::OrtTimer,
}

impl OrtInfo {
    /// onnxruntime's milliseconds on frame `i` of the clip. Both thread pools spin for a while
    /// after a run before they sleep: a pause on each side keeps one from slowing the other.
    pub fn time(&mut self, s: &Setup, i: usize) -> Result<f64, Fail> {
        let input = s.norm.to_nchw(&s.net[i], s.w, s.h);
        std::thread::sleep(POOL_SETTLE);
        let ms = self
            .timer
            .time(&input)
            .map_err(|e| Fail::Run(format!("--onnxruntime: {e}")))?;
        std::thread::sleep(POOL_SETTLE);
        Ok(ms)
    }
}

pub fn run_ort(s: &Setup) -> Result<OrtInfo, Fail> {
    let n = s.n();
    let k = ORT_FRAMES.min(n);
    let idx: Vec<usize> = (0..k).map(|j| j * n / k).collect();
    let inputs: Vec<Vec<f32>> = idx
        .iter()
        .map(|&i| s.norm.to_nchw(&s.net[i], s.w, s.h))
        .collect();
    let pb = spinner("onnxruntime");
    let r = gstregiondrop::onnxruntime::run(&s.model, &inputs, [1, 3, s.h, s.w], s.threads, 1)
        .map_err(|e| Fail::Input(format!("--onnxruntime: {e}")))?;
    pb.finish_and_clear();
    if r.frames.len() != idx.len() {
        return Err(Fail::Run(format!(
            "onnxruntime returned {} frames for {}",
            r.frames.len(),
            idx.len()
        )));
    }
    let timer = gstregiondrop::onnxruntime::OrtTimer::new(&s.model, [1, 3, s.h, s.w], s.threads)
        .map_err(|e| Fail::Input(format!("--onnxruntime: {e}")))?;
    Ok(OrtInfo {
        idx,
        outs: r.frames,
        timer,
    })
}
