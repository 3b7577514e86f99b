use gstregiondrop::engine::{Engine, EngineConfig, RunMode};
use gstregiondrop::backend::BackendKind;
use gstregiondrop::model::{import, ImportOptions};
use gstregiondrop::preprocess::{letterbox, InputNorm};
use std::path::Path;
use std::sync::Arc;

#[test]
fn ort_agreement() {
    let frames = gstregiondrop::video::decode_rgb(Path::new("data/video/vtest.avi"), 50, 1).unwrap();
    for (m, size, norm) in [
        ("data/models/nanodet-416.onnx", None, InputNorm { mean: [103.53, 116.28, 123.675], std: [57.375, 57.12, 58.395], bgr: true }),
        ("data/models/yolov8n-nudenet-320.onnx", Some((320, 320)), InputNorm::unit_rgb()),
        ("data/models/ppocr-det.onnx", Some((640, 384)), InputNorm { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], bgr: false }),
    ] {
        let plan = Arc::new(import(Path::new(m), &ImportOptions { input_size: size }).unwrap());
        let (w, h) = (plan.input_w, plan.input_h);
        let mut rgb = vec![0u8; w * h * 3];
        letterbox(&frames[0].source(), w, h, &mut rgb);
        let cfg = EngineConfig { backend: BackendKind::Cpu, mode: RunMode::Dense, threads: 2, ..Default::default() };
        let mut e = Engine::new(plan.clone(), norm.clone(), cfg).unwrap();
        let mut times = vec![];
        for _ in 0..5 { times.push(e.process(&rgb).unwrap().ms); }
        let ours = e.outputs().unwrap();
        let r = gstregiondrop::onnxruntime::run(Path::new(m), &[norm.to_nchw(&rgb, w, h)], [1, 3, h, w], 2, 5).unwrap();
        let rel = gstregiondrop::onnxruntime::rel_l2(&ours, &r.frames[0]);
        println!("{m}: rel_l2 {rel:.3e} ours {:?} ms, ort {:.1} ms", times, r.ms_median);
    }
}
