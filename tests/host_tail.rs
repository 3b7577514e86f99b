//! The host tail of the real models as the backends run it (`backend::generic`: prepared
//! kernels, copy chains composed, unread copies skipped) against the reference evaluator run node
//! by node, on random values in every slot the network would fill.

use gstregiondrop::backend::generic;
use gstregiondrop::model::eval::eval;
use gstregiondrop::model::plan::Step;
use gstregiondrop::tensor::Tensor;

mod common;

#[test]
fn prepared_tail_equals_the_evaluator_node_by_node() {
    let mut composed_any = false;
    for m in common::real_models() {
        let plan = common::load(&m);
        let steps = generic::prepare(&plan);
        let mut slots = plan.stand_in_slots(11, 2.0);
        let mut reference = slots.clone();
        let mut skipped = 0;
        for (si, step) in plan.steps.iter().enumerate() {
            let Step::Generic {
                node,
                inputs,
                outputs,
            } = step
            else {
                continue;
            };
            let g = steps[si].as_ref().expect("every Generic step is prepared");
            g.run(&mut slots).unwrap();
            skipped += (0..outputs.len()).filter(|&k| !g.writes_output(k)).count();
            let args: Vec<Option<&Tensor>> =
                inputs.iter().map(|s| s.map(|i| &reference[i])).collect();
            let outs = eval(node, &args).unwrap();
            for (&o, t) in outputs.iter().zip(outs) {
                reference[o] = t;
            }
        }
        println!(
            "{}: {} Generic steps, {skipped} copy outputs composed away",
            m.path,
            steps.iter().flatten().count()
        );
        composed_any |= skipped > 0;
        for (name, o) in &plan.outputs {
            let (got, want) = (&slots[*o], &reference[*o]);
            assert_eq!(got.shape, want.shape, "{}: output {name}", m.path);
            for (i, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{}: output {name}[{i}] = {a}, evaluator {b}",
                    m.path
                );
            }
        }
    }
    // YOLOv8n's head: Concat -> Split -> Reshape -> Transpose copies compose.
    assert!(composed_any, "no copy chain was composed");
}
