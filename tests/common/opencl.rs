//! Helpers for the OpenCL tests: one shared backend (and context), and the
//! differential check against the reference interpreter, both through
//! `fnet::backend`.

// Re-exported so each OpenCL test imports its helpers from one module; a test crate
// that uses none of them would warn.
#[allow(unused_imports)]
pub use super::models::{example, input, noise_f32, program, weights};
use fnet::backend::{Backend, OpenClBackend, Prepared, ReferenceBackend};
use fnet::eval::Module;
use fnet::ir::graph::Graph;
use fnet::kernel_ir::plan::Target;
use fnet::opencl::{target_for, ClContext, DeviceSel};
use fnet::runtime::{ParamStore, RunError};
use fnet::tensor::Tensor;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The backend the tests run on: the default device, or `FNET_TEST_DEVICE` (a
/// number, `cpu` or `gpu`); programs are cached in memory only.
pub fn backend() -> &'static OpenClBackend {
    static BACKEND: OnceLock<OpenClBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let sel = std::env::var("FNET_TEST_DEVICE")
            .ok()
            .map(|s| s.parse::<DeviceSel>().expect("FNET_TEST_DEVICE"))
            .unwrap_or_default();
        OpenClBackend::open(sel, None).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The test device's context.
pub fn ctx() -> &'static ClContext {
    backend().context()
}

/// One forward of `graph` on the test device, through the backend interface.
pub fn run_opencl(
    graph: &Graph,
    store: &ParamStore<f32>,
    inputs: &[Tensor<f32>],
) -> Result<Vec<Tensor<f32>>, RunError> {
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    backend()
        .prepare_plan(graph, store, &shapes)?
        .forward(inputs)
}

/// Runs `m` on both backends and compares, the tolerance scaled to the magnitude.
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
            .unwrap_or_else(|e| panic!("{what} ({target:?}): opencl: {e}"));
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(&want) {
            super::assert_close(&format!("{what} ({target:?})"), g, w, 2e-5);
        }
    }
}

/// The code-generation targets to test on this device: on a CPU both CPU tiles
/// (8 × 8 and the AVX-512 16 × 8: which one `target_for` picks depends on the
/// machine), on a GPU the GPU's.
pub fn targets() -> Vec<Target> {
    if ctx().info.is_gpu {
        vec![target_for(&ctx().info)]
    } else {
        vec![Target::cpu(), Target::cpu_wide()]
    }
}

/// Runs `cmd` with the ICD loader pointed at an empty vendor directory, so that no
/// OpenCL platform is visible; its output and how long it took. `None` when the
/// command succeeded all the same: only possible when this machine's loader ignores
/// `OCL_ICD_VENDORS` (Khronos' loader in NVIDIA's CUDA images does), so the
/// no-platform path cannot be reached this way. ocl-icd, which `scripts/setup.sh`
/// installs, honours it.
pub fn without_platforms(mut cmd: Command) -> Option<(Output, f64)> {
    let empty = std::env::temp_dir().join(format!("fnet-no-vendors-{}", std::process::id()));
    let start = std::time::Instant::now();
    let out = cmd
        .env("OCL_ICD_VENDORS", &empty)
        .env("OPENCL_VENDOR_PATH", &empty)
        .output()
        .expect("fnetc");
    let secs = start.elapsed().as_secs_f64();
    if out.status.success() {
        eprintln!("the ICD loader ignores OCL_ICD_VENDORS here: no-platform path not exercised");
        return None;
    }
    Some((out, secs))
}
