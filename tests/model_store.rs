//! The process-wide plan store: engines on the same model file and input size share one plan
//! (its weights); a changed file, another size or a dropped plan means a new import.

mod common;

use std::sync::Arc;

use common::onnx_build::{temp_model, Builder};
use gstregiondrop::model::store;

/// A two-convolution model on 64×64 (or symbolic) input; `extra` adds a third convolution.
fn model(symbolic: bool, extra: bool) -> Vec<u8> {
    let mut b = Builder::new(3, 64, 64);
    let mut x = b.conv("x", 3, 8, 3, 2, 1, 1, 1);
    x = b.conv(&x, 8, 8, 3, 1, 1, 1, 1);
    if extra {
        x = b.conv(&x, 8, 8, 3, 1, 1, 1, 1);
    }
    let b = if symbolic { b.symbolic_size() } else { b };
    b.bytes(&[&x], "store")
}

fn layers(plan: &gstregiondrop::model::Plan) -> usize {
    plan.layers().count()
}

#[test]
fn engines_on_one_model_file_share_its_plan() {
    let path = temp_model("store-shared", &model(false, false));
    let first = store::load(&path, None, None).unwrap();
    let second = store::load(&path, None, None).unwrap();
    assert!(
        !first.shared && second.shared,
        "only the second load shares"
    );
    let (a, b) = (first.plan, second.plan);
    assert!(
        Arc::ptr_eq(&a, &b),
        "the second load imported the file again"
    );
    // Another spelling of the path, and the size the model declares asked for explicitly.
    let dir = path.parent().unwrap();
    let spelled = dir.join(".").join(path.file_name().unwrap());
    let c = store::plan(&spelled, Some((64, 64))).unwrap();
    assert!(
        Arc::ptr_eq(&a, &c),
        "the same file and size got a plan of its own"
    );
    // A size the model does not declare is the import's error, named as such.
    let Err(e) = store::plan(&path, Some((96, 64))) else {
        panic!("a conflicting size was accepted")
    };
    assert!(e.to_string().contains("fixed input of 64x64"), "{e}");

    // The store holds no plan alive by itself.
    let weak = Arc::downgrade(&a);
    drop((a, b, c));
    assert!(
        weak.upgrade().is_none(),
        "the store kept a plan nobody holds"
    );
    assert_eq!(layers(&store::plan(&path, None).unwrap()), 2);
    std::fs::remove_file(path).ok();
}

#[test]
fn another_size_or_a_changed_file_gets_its_own_plan() {
    let path = temp_model("store-sizes", &model(true, false));
    // Symbolic dims and no size: the probe, and the caller is told the size is its to pick.
    let probe = store::load(&path, None, Some((64, 64))).unwrap();
    assert!(probe.follows_frames);
    assert_eq!((probe.plan.input_w, probe.plan.input_h), (64, 64));
    let Err(e) = store::plan(&path, None) else {
        panic!("no size for symbolic dims was accepted")
    };
    assert!(e.to_string().contains("dynamic input size"), "{e}");

    let wide = store::load(&path, Some((128, 64)), Some((64, 64))).unwrap();
    assert!(
        !wide.follows_frames,
        "an asked-for size was taken as the probe"
    );
    assert_eq!((wide.plan.input_w, wide.plan.input_h), (128, 64));
    assert!(!Arc::ptr_eq(&wide.plan, &probe.plan));
    // The probe's size asked for explicitly is the same plan.
    let same = store::plan(&path, Some((64, 64))).unwrap();
    assert!(Arc::ptr_eq(&same, &probe.plan));

    // The file rewritten with a third layer: the next engine imports it, the running ones keep
    // what they have.
    std::fs::write(&path, model(true, true)).unwrap();
    let changed = store::plan(&path, Some((64, 64))).unwrap();
    assert_eq!(layers(&changed), 3);
    assert_eq!(layers(&probe.plan), 2);
    std::fs::remove_file(path).ok();
}

#[test]
fn a_missing_file_is_named() {
    let path = std::env::temp_dir().join("regiondrop-test-no-such-model.onnx");
    let Err(e) = store::plan(&path, None) else {
        panic!("a missing file loaded")
    };
    assert!(
        e.to_string().contains("regiondrop-test-no-such-model.onnx"),
        "{e}"
    );
}

#[test]
fn engines_starting_together_import_once() {
    let path = temp_model("store-together", &model(false, false));
    let barrier = std::sync::Barrier::new(4);
    let plans: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store::plan(&path, None).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for p in &plans[1..] {
        assert!(
            Arc::ptr_eq(&plans[0], p),
            "two engines imported the file at once"
        );
    }
    std::fs::remove_file(path).ok();
}

#[test]
fn a_file_written_again_with_the_same_length_is_read_again() {
    let path = temp_model("store-rewritten", &model(false, false));
    let before = store::plan(&path, None).unwrap();
    // The same bytes: only the file's times tell the store it was written.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, model(false, false)).unwrap();
    let after = store::plan(&path, None).unwrap();
    assert!(
        !Arc::ptr_eq(&before, &after),
        "a rewritten file kept its old plan"
    );
    std::fs::remove_file(path).ok();
}
