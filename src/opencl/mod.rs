//! The OpenCL backend: lowers a graph to kernel IR (`crate::kernel_ir`), renders it as
//! explicitly vectorised OpenCL C, builds it through a program cache and runs it with
//! the `ocl` crate, on PoCL (CPU) or any GPU driver.

pub mod context;
pub mod conv_timing;
pub mod device;
pub mod exec;
pub mod local;
pub mod render;

pub use context::{default_cache_dir, CacheStats, ClContext};
pub use device::{list_devices, probe_platforms, DeviceInfoSummary, DeviceSel};
pub use exec::{plan_source, Executable};

use crate::ir::graph::Graph;
use crate::kernel_ir::plan::{build_plan, Target};
use crate::runtime::{ParamStore, RunError};
use crate::tensor::Tensor;

/// Code generation choices for a device: CPUs (and accelerators that are neither)
/// get 8-lane vectors and 4 output channels per work-item, the register tile PoCL
/// needs to reach the FMA units; GPUs get 4 × 2 tiles and more work-items
/// ([`Target::gpu`]). Work-group sizes are chosen per launch by [`local::choose`].
pub fn target_for(info: &DeviceInfoSummary) -> Target {
    if info.is_gpu {
        Target::gpu()
    } else {
        Target::cpu()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::compile_str;
    use crate::eval::Options;
    use crate::runtime::initialise;

    fn device(gpu: bool) -> DeviceInfoSummary {
        DeviceInfoSummary {
            index: 0,
            name: if gpu { "Fake GPU" } else { "Fake CPU" }.into(),
            platform: "fake".into(),
            platform_version: "OpenCL 3.0".into(),
            driver_version: "1".into(),
            is_gpu: gpu,
            is_cpu: !gpu,
            compute_units: if gpu { 80 } else { 2 },
            max_work_group: 1024,
            max_work_items: vec![1024, 1024, if gpu { 64 } else { 1024 }],
        }
    }

    /// The conv launch of a 3×3 conv N2 C8→16 16×16 planned for `info`.
    fn conv_grid(info: &DeviceInfoSummary) -> Vec<usize> {
        let (_, m) = compile_str(
            "c.fnet",
            "model c {\n  input x: f32[B, 8, 16, 16]\n  return x |> conv2d(16, 3, padding: 1)\n}",
            &Options::default(),
        )
        .unwrap_or_else(|r| panic!("{}", r.render()));
        let store = initialise::<f32>(&m.graph, 0).expect("init");
        let plan =
            build_plan(&m.graph, &store, &[vec![2, 8, 16, 16]], target_for(info)).expect("plan");
        let conv = plan
            .kernels
            .iter()
            .find(|k| k.name.starts_with("conv"))
            .expect("a conv kernel");
        assert!(plan_source(&plan).contains(if info.is_gpu { "float4" } else { "float8" }));
        conv.grid.clone()
    }

    #[test]
    fn gpus_get_smaller_tiles_and_more_work_items() {
        assert_eq!(target_for(&device(true)), Target::gpu());
        assert_eq!(target_for(&device(false)), Target::cpu());
        // [row tiles, rows, batch × channel blocks]
        assert_eq!(conv_grid(&device(false)), vec![16 / 8, 16, 2 * 16 / 4]);
        assert_eq!(conv_grid(&device(true)), vec![16 / 4, 16, 2 * 16 / 2]);
    }
}
