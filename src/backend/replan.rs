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

/// The `mask_crop` nodes whose sizes key a plan; `None` when a crop is decided
/// elsewhere (a fused, thresholded `flex_kernel` in the graph given), where the plan
/// itself is rebuilt and compared instead.
pub(crate) fn crop_nodes(graph: &Graph) -> Option<Vec<NodeIndex>> {
    let fused = graph.g.node_indices().any(|n| {
        matches!(
            graph.node(n).op,
            Op::FlexKernel {
                threshold: Some(_),
                ..
            }
        )
    });
    (!fused).then(|| {
        graph
            .g
            .node_indices()
            .filter(|&n| matches!(graph.node(n).op, Op::MaskCrop { .. }))
            .collect()
    })
}

/// Every crop's kernel size with `params`' mask values.
pub(crate) fn crop_key(
    graph: &Graph,
    crops: &[NodeIndex],
    params: &ParamStore<f32>,
) -> Result<Vec<Vec<usize>>, RunError> {
    crops
        .iter()
        .map(|&n| {
            crate::runtime::flex_kernel::mask_crop_size(graph, n, params)
                .map(Option::unwrap_or_default)
        })
        .collect()
}
