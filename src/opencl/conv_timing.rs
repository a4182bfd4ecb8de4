//! Timing one convolution on an OpenCL device, for fitting the OpenCL cost tables
//! (`examples/fit_cost.rs --backend opencl-cpu|opencl-gpu`). The conv is written as a
//! one-layer `.fnet` program with its `algo:` fixed, compiled without passes and
//! lowered as `fnetc run --backend opencl` lowers it, so the launches timed are the
//! ones a model would run: the zero-padding copy and the conv, or the FFT's pack,
//! Stockham stages, multiply-accumulate and crop.

use super::{target_for, ClContext, Executable};
use crate::cost::fit::best_seconds;
pub use crate::cost::source::conv_source;
use crate::cost::ConvShape;
use crate::driver::compile_str;
use crate::eval::Options;
use crate::ir::op::ConvAlgo;
use crate::kernel_ir::plan::build_plan;
use crate::runtime::{initialise, RunError};
use crate::tensor::Tensor;

/// Best-of-N seconds of the launches `shape` lowers to with `algo` on `ctx`'s device
/// (inputs already on the device; at least 3 runs, more while the total stays under
/// 0.2 s, at most 20).
pub fn time_conv(
    ctx: &ClContext,
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
    let plan = build_plan(&module.graph, &store, &[dims], target_for(&ctx.info))?;
    let exe = Executable::new(ctx, plan)?;
    exe.write_inputs(&[x])?;
    exe.launch()?;
    best_seconds(3, 20, 0.2, || exe.launch())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::Padding;

    #[test]
    fn sources_compile_to_one_conv_with_the_algorithm_fixed() {
        let mut strided = ConvShape::plain(
            2,
            4,
            8,
            &[16, 16],
            &[3, 3],
            Padding::Explicit(vec![(1, 1); 2]),
        );
        strided.stride = vec![2, 2];
        let causal = ConvShape::plain(1, 3, 5, &[100], &[9], Padding::Causal);
        for (shape, algo) in [(strided, ConvAlgo::Direct), (causal, ConvAlgo::Fft)] {
            let src = conv_source(&shape, algo).expect("writable");
            let (_, m) = compile_str("t.fnet", &src, &Options::default())
                .unwrap_or_else(|r| panic!("{}\n{}", src, r.render()));
            let convs: Vec<_> = m
                .graph
                .g
                .node_weights()
                .filter_map(|n| match &n.op {
                    crate::ir::op::Op::Conv(c) => Some((c.algo, c.stride.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(convs, vec![(algo, shape.stride.clone())], "{src}");
        }
        let uneven = ConvShape::plain(1, 1, 1, &[8], &[2], Padding::Explicit(vec![(0, 1)]));
        assert!(conv_source(&uneven, ConvAlgo::Direct).is_none());
    }
}
