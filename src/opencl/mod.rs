//! The OpenCL backend: lowers a graph to kernel IR (`crate::kernel_ir`), renders it as
//! explicitly vectorised OpenCL C, builds it through a program cache and runs it with
//! the `ocl` crate, on PoCL (CPU) or any GPU driver. Models run through
//! `crate::backend::OpenClBackend`, which wraps the context and an `Executable`.

//!
//! Only the OpenCL C generation and the device description build without the
//! `opencl` cargo feature; everything that calls the OpenCL library needs it.

#[cfg(feature = "opencl")]
pub mod context;
#[cfg(feature = "opencl")]
pub mod conv_timing;
#[cfg(feature = "opencl")]
pub mod device;
pub mod device_sel;
#[cfg(feature = "opencl")]
pub mod exec;
pub mod local;
pub mod render;

#[cfg(feature = "opencl")]
pub use context::{default_cache_dir, CacheStats, ClContext};
#[cfg(feature = "opencl")]
pub use device::{list_devices, probe_platforms};
pub use device_sel::{DeviceInfoSummary, DeviceSel};
#[cfg(feature = "opencl")]
pub use exec::{plan_source, Executable};

/// The error every OpenCL entry point gives in a build without the `opencl` feature.
#[cfg(not(feature = "opencl"))]
pub fn not_built() -> crate::runtime::RunError {
    crate::runtime::RunError::new("this fnetc was built without OpenCL (the `opencl` cargo feature is off)")
        .hint("use --backend jit or --backend reference, or rebuild with the default features: `cargo build --release`")
}

use crate::kernel_ir::plan::Target;

/// Code generation choices for a device: CPUs (and accelerators that are neither)
/// get 8-lane vectors and 8 output channels per work-item, the register tile PoCL
/// needs to reach the FMA units, or 16 × 8 where the native float vector is 16 lanes
/// wide (AVX-512, [`Target::cpu_wide`]); GPUs get 4 × 2 tiles and more work-items
/// ([`Target::gpu`]). Work-group sizes are chosen per launch by [`local::choose`].
/// `FNET_CL_TILE=VxT` overrides the tile, for tuning.
pub fn target_for(info: &DeviceInfoSummary) -> Target {
    let target = if info.is_gpu {
        Target::gpu()
    } else if info.native_float_width >= 16 {
        Target::cpu_wide()
    } else {
        Target::cpu()
    };
    match tile_override() {
        Some((vector, tile_co)) => Target {
            vector,
            tile_co,
            ..target
        },
        None => target,
    }
}

/// `FNET_CL_TILE=VxT` (vector lanes × output channels per work-item), for tuning.
fn tile_override() -> Option<(u8, usize)> {
    let v = std::env::var("FNET_CL_TILE").ok()?;
    let (lanes, channels) = v.split_once('x')?;
    let vector: u8 = lanes.parse().ok()?;
    let tile_co: usize = channels.parse().ok()?;
    ([2, 4, 8, 16].contains(&vector) && [2, 4, 8, 16].contains(&tile_co))
        .then_some((vector, tile_co))
}

#[cfg(all(test, feature = "opencl"))]
mod tests {
    use super::*;
    use crate::driver::compile_str;
    use crate::eval::Options;
    use crate::kernel_ir::plan::build_plan;
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
            native_float_width: if gpu { 1 } else { 8 },
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
        let lanes = target_for(info).conv_tile(16).vector;
        assert!(plan_source(&plan).contains(&format!("float{lanes}")));
        conv.grid.clone()
    }

    #[test]
    fn gpus_get_smaller_tiles_and_more_work_items() {
        assert_eq!(target_for(&device(true)), Target::gpu());
        assert_eq!(target_for(&device(false)), Target::cpu());
        let avx512 = DeviceInfoSummary {
            native_float_width: 16,
            ..device(false)
        };
        assert_eq!(target_for(&avx512), Target::cpu_wide());
        // [row tiles, rows, batch × channel blocks]
        assert_eq!(conv_grid(&device(false)), vec![16 / 8, 16, 2 * 16 / 8]);
        assert_eq!(conv_grid(&device(true)), vec![16 / 4, 16, 2 * 16 / 2]);
        // 16-wide rows fill one 16-lane vector; 8 channels per work-item.
        assert_eq!(conv_grid(&avx512), vec![1, 16, 2 * 16 / 8]);
        // Narrow rows halve the vector while that wastes fewer lanes.
        let lanes = |t: Target, ow| t.conv_tile(ow).vector;
        assert_eq!(lanes(Target::cpu_wide(), 32), 16);
        assert_eq!(
            lanes(Target::cpu_wide(), 28),
            16,
            "2 × 16 and 4 × 8 both pad to 32"
        );
        assert_eq!(lanes(Target::cpu_wide(), 8), 8);
        assert_eq!(lanes(Target::cpu_wide(), 3), 4, "never below 4 lanes");
        assert_eq!(lanes(Target::cpu(), 784), 8);
        assert_eq!(Target::cpu_wide().conv_tile(8).tile_co, 8);
    }
}
