//! Helpers for the JIT tests: one shared backend (so one compiled-kernel cache), and
//! the differential check against the reference interpreter through `fnet::backend`,
//! on every JIT target worth testing.

use fnet::backend::{Backend, JitBackend, ReferenceBackend};
use fnet::eval::Module;
use fnet::kernel_ir::plan::Target;
use fnet::runtime::ParamStore;
use fnet::tensor::Tensor;
use std::sync::OnceLock;

pub fn backend() -> &'static JitBackend {
    static BACKEND: OnceLock<JitBackend> = OnceLock::new();
    BACKEND.get_or_init(|| JitBackend::new().unwrap_or_else(|e| panic!("{e}")))
}

/// The targets the JIT is tested with: its default (16 lanes × 4 channels), the CPU
/// tiles (8 × 8 and 16 × 8) and the GPU's (4 × 2), so values of one, two and four
/// `f32x4` parts and every tile shape are exercised.
pub fn targets() -> Vec<Target> {
    vec![
        JitBackend::default_target(),
        Target::cpu(),
        Target::cpu_wide(),
        Target::gpu(),
    ]
}

/// Runs `m` on the interpreter and on the JIT with every target, and compares, the
/// tolerance scaled to the magnitude.
pub fn agree(what: &str, m: &Module, store: &ParamStore<f32>, x: Tensor<f32>) {
    let shapes = vec![x.shape.clone()];
    let want = ReferenceBackend
        .prepare(m.graph.clone(), store.clone(), &shapes)
        .and_then(|mut p| p.forward(std::slice::from_ref(&x)))
        .unwrap_or_else(|e| panic!("{what}: reference: {e}"));
    for target in targets() {
        let got = backend()
            .with_target(target)
            .prepare(m.graph.clone(), store.clone(), &shapes)
            .and_then(|mut p| p.forward(std::slice::from_ref(&x)))
            .unwrap_or_else(|e| panic!("{what} ({target:?}): jit: {e}"));
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(&want) {
            super::assert_close(&format!("{what} ({target:?})"), g, w, 2e-5);
        }
    }
}

/// One forward of `graph` on the JIT, through the backend interface.
pub fn run_jit(
    graph: &fnet::ir::graph::Graph,
    store: &ParamStore<f32>,
    inputs: &[Tensor<f32>],
) -> Result<Vec<Tensor<f32>>, fnet::runtime::RunError> {
    use fnet::backend::Prepared;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    backend()
        .prepare_plan(graph, store, &shapes)?
        .forward(inputs)
}
