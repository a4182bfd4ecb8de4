//! The OpenCL backend: lowers a graph to kernel IR (`crate::kernel_ir`), renders it as
//! explicitly vectorised OpenCL C, builds it through a program cache and runs it with
//! the `ocl` crate, on PoCL (CPU) or any GPU driver.

pub mod context;
pub mod device;
pub mod exec;
pub mod render;

pub use context::{default_cache_dir, CacheStats, ClContext};
pub use device::{list_devices, probe_platforms, DeviceInfoSummary, DeviceSel};
pub use exec::{plan_source, Executable};

use crate::ir::graph::Graph;
use crate::kernel_ir::plan::{build_plan, Target};
use crate::runtime::{ParamStore, RunError};
use crate::tensor::Tensor;

/// Code generation choices for a device: CPUs get 8-lane vectors and 4 output
/// channels per work-item; GPUs the same tiles for now (to be tuned per device).
pub fn target_for(info: &DeviceInfoSummary) -> Target {
    let _ = info;
    Target::cpu()
}

/// Runs `graph` forward once on `ctx` (evaluation mode, f32).
pub fn run_graph(
    ctx: &ClContext,
    graph: &Graph,
    params: &ParamStore<f32>,
    inputs: &[Tensor<f32>],
) -> Result<Vec<Tensor<f32>>, RunError> {
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let plan = build_plan(graph, params, &shapes, target_for(&ctx.info))?;
    Executable::new(ctx, plan)?.run(inputs)
}
