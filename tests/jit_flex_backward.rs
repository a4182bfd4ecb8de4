//! `tests/opencl_flex_backward.rs` on the JIT backend (`--backend jit`); its doc:
//!
//! FlexConv's kernel synthesis in training on the OpenCL device against the reference
//! interpreter (which runs `reference::grad::magnet`), in f64: the backward ops
//! (`magnet_backward` for every parameter slot, `gauss_mask_backward`,
//! `mask_mul_backward_mask`) and the forward ops they recompute (`magnet`,
//! `gauss_mask`, `mask_mul`) over computed values, on random parameters; 2D and
//! causal 1D, cropped and uncropped grids, MAGNet with 0, 1 and 3 hidden layers.
//!
//! Every value a test checks is computed from graph inputs, so the lowering runs it
//! on the device; only the (cropped) grid is a host constant, as in a training plan.

mod common;

use common::jit::{backend, run_jit as run_backend};

const BACKEND: &str = "jit";

fn plan_target() -> fnet::kernel_ir::plan::Target {
    fnet::backend::JitBackend::default_target()
}

include!("shared/flex_backward_steps.rs");

/// The crop is a constant of one step: a written mask parameter that widens it is
/// the next step's crop (the backend re-plans), and that step's loss and gradients
/// are the interpreter's with the new mask.
#[test]
fn a_written_mask_parameter_sets_the_next_steps_crop() {
    use fnet::autodiff::{differentiate, Loss};
    use fnet::backend::{Backend, Prepared, ReferenceBackend};
    use fnet::runtime::Mode;
    let m = common::models::program(
        "model t {
  input x: f32[B, 2, 8, 8]
  seed 3
  h = x |> flexconv(3, horizon: 9, kernel: magnet(hidden: 8, layers: 1),
                    mask: gauss(sigma: 0.2, threshold: 0.1))
  return h |> batchnorm |> relu |> global_avg_pool
}",
    );
    let tg = differentiate(&m.graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut params: ParamStore<f32> = common::perturbed_weights(&m.graph, 5);
    let inputs = step_inputs(&m.graph, &[2, 2, 8, 8]);
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    // A backend of its own, so that its compiler counts only this model's kernels.
    let own = fnet::backend::JitBackend::new().unwrap_or_else(|e| panic!("{e}"));
    let mut jit = own
        .prepare_plan(&tg.graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    let name = "flexconv1.mask_params";
    let crop = |p: &ParamStore<f32>| {
        let axes = flex_kernel::crop_axes(&[9, 9], Some((&p[name], 0.1)), false).expect("crop");
        axes.iter().map(Vec::len).collect::<Vec<_>>()
    };
    let before = crop(&params);
    let original = params.clone();
    jit.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let wide = Tensor::from_vec(vec![2, 2], vec![0.05f32, 0.6, -0.05, 0.6]).expect("mask");
    params.insert(name.to_string(), wide.clone());
    assert_eq!(crop(&params), [9, 9]);
    assert_ne!(before, [9, 9], "the first step's crop is narrower");
    jit.write_param(name, &wide)
        .unwrap_or_else(|e| panic!("{e}"));
    let got = jit.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    // The reference backend through the same calls: a run (which stores the
    // updated running statistics, as OpenCL does), the mask written, a second run.
    let mut reference = ReferenceBackend
        .prepare(tg.graph.clone(), original.clone(), &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    reference.set_mode(Mode::Train).expect("train");
    reference.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    reference.write_param(name, &wide).expect("mask");
    let want = reference.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|g| format!("grad.{g}")))
        .chain(tg.buffers.iter().map(|b| format!("update.{b}")))
        .collect();
    assert!(names.contains(&format!("grad.{name}")));
    for ((n, g), w) in names.iter().zip(&got).zip(&want) {
        close_with(n, g, &w.cast::<f64>(), 1e-4, 1e-2);
    }
    assert_eq!(jit.plans_built(), 2, "the new crop built a plan");
    // Back to the first crop: the JIT plans again (it keeps no executables by crop),
    // but every kernel comes from its compiler's cache, and the plan is fed the
    // current values (the running statistics of both runs since) and inputs.
    let compiled = own.compiler().compiled();
    let narrow = original[name].clone();
    jit.write_param(name, &narrow).expect("mask");
    reference.write_param(name, &narrow).expect("mask");
    let got = jit.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let want = reference.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    for ((n, g), w) in names.iter().zip(&got).zip(&want) {
        close_with(n, g, &w.cast::<f64>(), 1e-4, 1e-2);
    }
    assert_eq!(jit.plans_built(), 3, "the first crop was planned again");
    assert_eq!(own.compiler().compiled(), compiled, "and compiled nothing");
}
