//! The learned FlexConv kernels of a run, read from its `model.fnc`.
//!
//! A FlexConv's kernel is not a weight: it is synthesised from the kernel network
//! (MAGNet) and the Gaussian mask, then cropped where the mask falls below its
//! threshold. So `final.safetensors` does not hold it. `fnetc train` also writes
//! `model.fnc`, compiled for inference with the trained weights bound, and there the
//! `fuse-mask` pass has evaluated each FlexConv's kernel once and folded it to a
//! constant node named `<layer>.kernel`, already cropped: the kernel the model
//! actually convolves with. Those constants are what is drawn.

use crate::io::artifact::read_artifact;
use crate::ir::op::Op;
use crate::runtime::RunError;
use crate::tensor::Tensor;
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
    let artifact = read_artifact(path)?;
    let graph = &artifact.graph;
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
    Ok(found)
}
