//! The learned FlexConv kernels of a run, read from its `model.fnc`.
//!
//! A FlexConv's kernel is not a weight: it is synthesised from the kernel network
//! (MAGNet) and the Gaussian mask, then cropped where the mask falls below its
//! threshold. So `final.safetensors` does not hold it. `fnetc train` also writes
//! `model.fnc`, compiled for inference with the trained weights bound, and there the
//! `fuse-mask` pass has evaluated each FlexConv's kernel once and folded it to a
//! constant node named `<layer>.kernel`, already cropped: the kernel the model
//! actually convolves with. Those constants are what is drawn.
//!
//! A run killed before it finished has no `model.fnc`: then the model the run
//! recorded (`RUN_DIR/source.json`, `train::source`) is compiled the same way with a
//! checkpoint's weights bound, and its folded constants are drawn
//! ([`flex_kernels_of`]); `fnetc plot --checkpoint N` does that for any checkpoint.

use crate::io::artifact::read_artifact;
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::passes::pipeline::pipeline_for;
use crate::passes::{CompileMode, PassContext};
use crate::runtime::{ParamStore, RunError};
use crate::tensor::Tensor;
use crate::train::source::ModelSource;
use std::path::{Path, PathBuf};

/// One FlexConv's folded kernel.
#[derive(Clone, Debug)]
pub struct FoldedKernel {
    /// The FlexConv layer's name (`flexconv1`); the constant is `<layer>.kernel`.
    pub layer: String,
    /// The full (uncropped) horizon, per spatial axis.
    pub horizon: Vec<u64>,
    /// `[out, in, kh, kw]` (2D) or `[out, in, k]` (1D), cropped.
    pub tensor: Tensor<f32>,
}

/// Where `fnetc train` writes the inference artifact of a run.
pub fn model_path(run: &Path) -> PathBuf {
    run.join(crate::train::trainer::MODEL)
}

/// The folded FlexConv kernels of the artifact at `path`, in model order. A FlexConv
/// whose kernel was not folded (an artifact compiled without weights computes it at
/// run time) has none to draw and is left out; a damaged artifact is an error.
pub fn flex_kernels(path: &Path) -> Result<Vec<FoldedKernel>, RunError> {
    Ok(folded_in(&read_artifact(path)?.graph))
}

/// The folded FlexConv kernels of the model the run recorded (`source.json`) compiled
/// for inference with `weights` bound (a checkpoint's or the final weights, `file`
/// naming them), as `fnetc train` compiles `model.fnc` when it finishes: what a
/// `model.fnc` written at that point would hold. Optimiser state in a checkpoint is
/// left out; weights that do not fit the model are an error naming the first misfit.
pub fn flex_kernels_of(
    source: &ModelSource,
    weights: &ParamStore<f32>,
    file: &Path,
) -> Result<Vec<FoldedKernel>, RunError> {
    let module = source.module().map_err(|r| {
        RunError::new(format!(
            "the model recorded in the run's source.json ({}) does not compile:\n{}",
            source.file,
            r.render()
        ))
    })?;
    let mut graph = module.graph;
    let params: ParamStore<f32> = (weights.iter())
        .filter(|(name, _)| !name.starts_with("optimizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    crate::runtime::check_store(&graph, &params, &file.display().to_string())?;
    let pipeline = pipeline_for(CompileMode::Inference, module.recipe.as_ref())
        .map_err(|e| RunError::new(format!("{}: {e}", source.file)))?;
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.weights = Some(params);
    pipeline
        .run(&mut graph, &mut ctx, &mut |_| {})
        .map_err(|e| {
            RunError::new(format!("internal compiler error in {e}"))
                .hint("this is a bug in fnetc; please report it with the model")
        })?;
    Ok(folded_in(&graph))
}

/// The FlexConv kernels folded to constants in a compiled `graph`, in model order.
fn folded_in(graph: &Graph) -> Vec<FoldedKernel> {
    let mut found = Vec::new();
    for flex in &graph.flexconvs {
        let name = format!("{}.kernel", flex.name);
        let folded = graph.g.node_weights().find_map(|node| match &node.op {
            Op::Const { value, .. } if node.name == name => Some(value),
            _ => None,
        });
        let Some(value) = folded else { continue };
        // A convolution weight: out and in channels, then one axis per horizon axis.
        if value.shape.len() != 2 + flex.horizon.len() || !(3..=4).contains(&value.shape.len()) {
            continue;
        }
        found.push(FoldedKernel {
            layer: flex.name.clone(),
            horizon: flex.horizon.clone(),
            tensor: (**value).clone(),
        });
    }
    found
}
