//! Timing one convolution on the CPU JIT, for fitting its cost table
//! (`examples/fit_cost.rs --backend jit`). The conv is the one-layer program of
//! `cost::source` with its `algo:` fixed, lowered for the JIT's target with native
//! steps on `auto` (which follows the `algo:`), so what is timed is what a model's conv
//! runs: the generated direct kernel (with its padding copy), the im2col or Winograd
//! native step, or the FFT's launches. Weights are bound, so a Winograd filter is
//! transformed once, when the plan is loaded, as in inference.

use super::JitBackend;
use crate::cost::fit::best_seconds;
use crate::cost::source::conv_source;
use crate::cost::ConvShape;
use crate::driver::compile_str;
use crate::eval::Options;
use crate::ir::op::ConvAlgo;
use crate::jit::JitExecutable;
use crate::kernel_ir::native::NativeConvs;
use crate::kernel_ir::plan::{build_plan, Target};
use crate::runtime::{initialise, RunError};
use crate::tensor::Tensor;

/// Best-of-N seconds of one forward of `shape`'s conv with `algo` on the JIT of
/// `backend` (at least 3 runs, more while the total stays under 0.2 s, at most 20).
pub fn time_conv(
    backend: &JitBackend,
    shape: &ConvShape,
    algo: ConvAlgo,
    seed: u64,
) -> Result<f64, RunError> {
    let source = conv_source(shape, algo)
        .ok_or_else(|| RunError::new(format!("uneven explicit padding {:?}", shape.padding)))?;
    let (_, module) = compile_str("conv_timing.fnet", &source, &Options::default())
        .map_err(|r| RunError::new(r.render()))?;
    let store = initialise::<f32>(&module.graph, seed)?;
    let mut dims = vec![shape.batch as usize, shape.ci as usize];
    dims.extend(shape.input.iter().map(|&d| d as usize));
    let n: usize = dims.iter().product();
    let x = Tensor::from_vec(
        dims.clone(),
        (0..n)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect(),
    )?;
    let target = Target {
        native: NativeConvs::Auto,
        ..JitBackend::default_target()
    };
    let plan = build_plan(&module.graph, &store, &[dims], target)?;
    let exe = JitExecutable::new(backend.compiler(), plan)?;
    exe.write_inputs(&[x])?;
    // Timed on a worker of rayon's pool, where a model's plan runs its steps
    // (`jit::exec`): from outside it, a parallel step alone pays two thread wake-ups
    // that a step among others does not.
    rayon::scope(|_| {
        exe.launch();
        best_seconds(3, 20, 0.2, || {
            exe.launch();
            Ok::<(), RunError>(())
        })
    })
}
