//! Timing one convolution on the CPU JIT, for fitting its cost table
//! (`examples/fit_cost.rs --backend jit`). The conv is the one-layer program of
//! `cost::source` with its `algo:` fixed, lowered for the JIT's target with native
//! steps on `auto` (which follows the `algo:`), so what is timed is what a model's conv
//! runs: the generated direct kernel (with its padding copy), the im2col or Winograd
//! native step, or the FFT's launches. Weights are bound, so a Winograd filter is
//! transformed once, when the plan is loaded, as in inference.
//!
//! A backward conv ([`time_backward`]) is timed as a training step's native step runs
//! it: `jit::native::backward_conv` with its scratch kept from run to run.

use super::JitBackend;
use crate::cost::fit::best_seconds;
use crate::cost::source::conv_source;
use crate::cost::{ConvShape, CostedAlgo};
use crate::driver::compile_str;
use crate::eval::Options;
use crate::ir::op::ConvAlgo;
use crate::jit::kernels::conv_backward::DataScratch;
use crate::jit::kernels::isa::Isa;
use crate::jit::native::backward_conv;
use crate::jit::JitExecutable;
use crate::kernel_ir::native::NativeConvs;
use crate::kernel_ir::native::{ConvGeometry, NativeOp};
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
    let x = Tensor::from_vec(dims.clone(), filled(n, 0))?;
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

/// Deterministic values in [−1, 1) for `len` floats.
fn filled(len: usize, seed: u64) -> Vec<f32> {
    let seed = seed as usize;
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// The native step of the backward routine `row` (`CostedAlgo::Filter` or `Data`)
/// of the forward conv `shape`, or why there is none.
fn backward_step(shape: &ConvShape, row: CostedAlgo) -> Result<NativeOp, RunError> {
    let geometry = ConvGeometry::of_shape(shape)
        .ok_or_else(|| RunError::new("asymmetric padding, or more than 2 spatial axes"))?;
    match row {
        CostedAlgo::Filter(algo) => Ok(NativeOp::ConvBackwardFilter { geometry, algo }),
        CostedAlgo::Data(algo) => Ok(NativeOp::ConvBackwardData { geometry, algo }),
        CostedAlgo::Forward(_) => Err(RunError::new("a forward conv is timed by time_conv")),
    }
}

/// Best-of-N seconds of the backward routine `row` of the forward conv `shape` (at
/// least 3 runs, more while the total stays under 0.2 s, at most 20), on a worker of
/// rayon's pool as in a training step.
pub fn time_backward(shape: &ConvShape, row: CostedAlgo, seed: u64) -> Result<f64, RunError> {
    let op = backward_step(shape, row)?;
    let isa = Isa::from_env().map_err(|e| RunError::new(e.to_string()))?;
    let out = shape
        .output()
        .ok_or_else(|| RunError::new("the kernel is larger than the padded input"))?;
    let per = |c: u64, dims: &[u64]| (shape.batch * c * dims.iter().product::<u64>()) as usize;
    let taps: u64 = shape.kernel.iter().product();
    let weights = (shape.co * (shape.ci / shape.groups.max(1)) * taps) as usize;
    let (x, dy) = (per(shape.ci, &shape.input), per(shape.co, &out));
    let (a, b, out_len) = match op {
        NativeOp::ConvBackwardFilter { .. } => (filled(x, seed), filled(dy, seed + 1), weights),
        _ => (filled(dy, seed + 1), filled(weights, seed + 2), x),
    };
    let mut result = vec![0.0f32; out_len];
    let mut scratch = DataScratch::default();
    let mut run = || {
        backward_conv(isa, &op, [&a, &b], &mut scratch, &mut result)
            .map_err(|e| RunError::new(format!("{}: {e}", row.name())))
    };
    rayon::scope(|_| {
        run()?;
        best_seconds(3, 20, 0.2, run)
    })
}
