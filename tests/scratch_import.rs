use gstregiondrop::model::{import, ImportOptions};
use std::path::Path;

#[test]
fn import_all() {
    for (m, size) in [("data/models/nanodet-416.onnx", None), ("data/models/yolov8n-nudenet-320.onnx", Some((320, 320))), ("data/models/ppocr-det.onnx", Some((640, 384)))] {
        let r = import(Path::new(m), &ImportOptions { input_size: size });
        match r {
            Ok(p) => {
                println!("{m}: {}x{} layers {} steps {} bufs {} maxscale {} macs {:.2}G outputs {:?}", p.input_w, p.input_h, p.layers().count(), p.steps.len(), p.buffers.len(), p.max_scale, p.total_macs() / 1e9, p.output_shapes());
                let generic: Vec<String> = p.steps.iter().filter_map(|s| match s { gstregiondrop::model::plan::Step::Generic { node, .. } => Some(node.op.clone()), _ => None }).collect();
                println!("  generic: {:?}", generic);
            }
            Err(e) => println!("{m}: ERROR {e}"),
        }
    }
}
