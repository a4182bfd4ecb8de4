//! Training on the JIT against the reference interpreter (the OpenCL training tests,
//! `tests/opencl_train.rs`, on the JIT backend): small training graphs
//! (`autodiff::differentiate`) run on both backends in `Mode::Train` with the same
//! parameters, inputs, labels and seed (the interpreter in f64); the loss, every
//! `grad.*` and every `update.*` (and a regularised loss's parts) agree within f32
//! tolerance scaled to magnitude, and the running statistics both
//! backends store after the step agree too. Dropout masks are bit-equal.

mod common;

use common::jit::backend;
use common::models::{example, input, program};
use fnet::backend::JitBackend;
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
    // A backend of its own: its compiler's cache has seen only this model.
    let own = JitBackend::new().unwrap_or_else(|e| panic!("{e}"));
    let mut jit = own
        .prepare_plan(&tg.graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    jit.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let before = jit.executable().plan.kernels.clone();
    let compiled = own.compiler().compiled();
    assert_eq!(jit.compile_stats().compiled, compiled);
    let mut mask = params["f.mask_params"].clone();
    mask.data[1] *= 8.0; // a wider sigma keeps more of the kernel
    jit.write_param("f.mask_params", &mask)
        .unwrap_or_else(|e| panic!("{e}"));
    let got = jit.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        jit.executable().plan.kernels,
        before,
        "re-planned for the new crop"
    );
    // Only the kernels the crop changed were compiled: the cache kept the rest.
    let text = |ks: &[fnet::kernel_ir::Kernel]| -> Vec<String> {
        ks.iter().map(|k| format!("{k:?}")).collect()
    };
    let (old, now) = (text(&before), text(&jit.executable().plan.kernels));
    let new = now.iter().filter(|k| !old.contains(k)).count();
    assert!(
        new > 0 && new < now.len(),
        "{new} of {} kernels new",
        now.len()
    );
    assert_eq!(own.compiler().compiled() - compiled, new);
    assert_eq!(jit.plans_built(), 2);
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
