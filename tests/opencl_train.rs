//! Training on OpenCL against the reference interpreter: small training graphs
//! (`autodiff::differentiate`) run on both backends in `Mode::Train` with the same
//! parameters, inputs, labels and seed (the interpreter in f64); the loss, every
//! `grad.*` and every `update.*` (and a regularised loss's parts) agree within f32
//! tolerance scaled to magnitude, and the running statistics both
//! backends store after the step agree too. Dropout masks are bit-equal.
//!
//! These tests need an OpenCL platform (PoCL); see `tests/opencl.rs`.
#![cfg(feature = "opencl")]

mod common;

use common::opencl::{backend, example, input, program};
include!("shared/train_steps.rs");

/// The crop is a constant of one step: a written mask parameter that widens the crop
/// makes the next run re-plan, and the step equals the interpreter's on the new value
/// (the inputs `forward` wrote before the run re-planned reach the new plan).
#[test]
fn a_new_mask_recrops_the_next_step() {
    let m = program(
        "model t {
           input x: f32[B, 2, 40]
           seed 3
           h = x |> flexconv(3, horizon: same, causal: true, mask: gauss(sigma: 0.05)) as f
           return h |> relu |> last
         }",
    );
    let tg = differentiate(&m.graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
    let params: ParamStore<f32> = perturbed_weights(&m.graph, 4);
    let inputs = vec![input(&[2, 2, 40], 5), labels(2, 3, 6)];
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let mut cl = backend()
        .prepare_plan(&tg.graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    cl.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let before = cl.executable().plan.kernels.clone();
    let mut mask = params["f.mask_params"].clone();
    mask.data[1] *= 8.0; // a wider sigma keeps more of the kernel
    cl.write_param("f.mask_params", &mask)
        .unwrap_or_else(|e| panic!("{e}"));
    let got = cl.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        cl.executable().plan.kernels,
        before,
        "re-planned for the new crop"
    );
    let mut moved = params.clone();
    moved.insert("f.mask_params".into(), mask);
    let mut reference = ReferenceBackend
        .prepare(tg.graph.clone(), moved, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    reference.set_mode(Mode::Train).unwrap();
    let want = reference.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("output {i}"), g, w, 1e-4);
    }
}
