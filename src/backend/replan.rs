//! What a backend that runs kernel-IR plans needs to know about a graph to re-plan
//! it (shared by the OpenCL and JIT backends): whether it is a training graph, where
//! its labels are, and which parameters decide a FlexConv crop (a constant of a
//! training step, so a new value may need a new plan).

use crate::ir::op::{Op, TrainOp};
use crate::ir::Graph;
use crate::runtime::{ParamStore, RunError};
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeSet;

/// Whether `graph` is a training graph (it holds the loss and backward ops).
pub(crate) fn is_training_graph(graph: &Graph) -> bool {
    graph
        .g
        .node_indices()
        .any(|n| matches!(graph.node(n).op, Op::Train(_)))
}

/// The labels input of a training graph and the number of classes, for the host check.
pub(crate) fn labels_check(graph: &Graph) -> Option<(usize, usize)> {
    let at = graph.inputs.iter().position(
        |&i| matches!(&graph.node(i).op, Op::Input { name } if name == crate::autodiff::LABELS),
    )?;
    let loss = graph
        .g
        .node_indices()
        .find(|&n| matches!(graph.node(n).op, Op::Train(TrainOp::CrossEntropy { .. })))?;
    let logits = graph.operands(loss)[0];
    let k = graph.node(logits).ty.shape.get(1)?.known()?;
    Some((at, k as usize))
}

/// The parameters that decide a FlexConv crop: a new value may change the plan.
pub(crate) fn crop_params(graph: &Graph) -> BTreeSet<String> {
    graph
        .g
        .node_indices()
        .filter(|&n| {
            matches!(
                graph.node(n).op,
                Op::MaskCrop { .. } | Op::FlexKernel { .. }
            )
        })
        .flat_map(|n| graph.operands(n))
        .filter(|&o| matches!(graph.node(o).op, Op::Param { .. }))
        .map(|o| graph.node(o).name.clone())
        .collect()
}

/// The nodes whose crop sizes key a plan: every `mask_crop`, and every fused,
/// thresholded `flex_kernel` (`fuse-mask`'s form, which crops inside the op). The
/// plan depends on the parameters only through these sizes (the kernels synthesise
/// the FlexConv kernel from the parameter buffers at run time), so equal sizes mean
/// an equal plan. `None` when the graph crops nothing.
pub(crate) fn crop_nodes(graph: &Graph) -> Option<Vec<NodeIndex>> {
    let nodes: Vec<NodeIndex> = graph
        .g
        .node_indices()
        .filter(|&n| {
            matches!(
                graph.node(n).op,
                Op::MaskCrop { .. }
                    | Op::FlexKernel {
                        threshold: Some(_),
                        ..
                    }
            )
        })
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// Every crop's kernel size with `params`' mask values (a crop whose mask is not a
/// parameter has a fixed size, keyed as empty).
pub(crate) fn crop_key(
    graph: &Graph,
    crops: &[NodeIndex],
    params: &ParamStore<f32>,
) -> Result<Vec<Vec<usize>>, RunError> {
    crops
        .iter()
        .map(|&n| match &graph.node(n).op {
            Op::FlexKernel {
                threshold: Some(t),
                horizon,
                causal,
                ..
            } => {
                let mask = graph.operands(n)[0];
                match params.get(&graph.node(mask).name) {
                    Some(values) => Ok(crate::runtime::flex_kernel::crop_extent(
                        horizon, values, *t, *causal,
                    )?
                    .into_iter()
                    .map(|e| e as usize)
                    .collect()),
                    None => Ok(Vec::new()),
                }
            }
            _ => crate::runtime::flex_kernel::mask_crop_size(graph, n, params)
                .map(Option::unwrap_or_default),
        })
        .collect()
}
