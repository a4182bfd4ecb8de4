//! The learned kernel size of every FlexConv: the extent its Gaussian mask keeps of the
//! kernel horizon, decided by the current mask parameters exactly as a step's
//! `mask_crop` decides it ([`mask_crop_size`]). The trainer
//! records it in each epoch's metrics record (`"kernel_sizes"`).

use crate::ir::graph::Graph;
use crate::ir::op::Op;
use crate::runtime::flex_kernel::mask_crop_size;
use crate::runtime::{ParamStore, RunError};
use std::collections::BTreeMap;

/// `{layer: [kh, kw]}` (or `[k]` in 1D) for each FlexConv of the model graph `graph`
/// (before the pass pipeline: a MAGNet node `<layer>.kernel` over a coordinate grid,
/// cropped by a `mask_crop` when the layer is masked), with `params`' mask values.
pub fn kernel_sizes(
    graph: &Graph,
    params: &ParamStore<f32>,
) -> Result<BTreeMap<String, Vec<usize>>, RunError> {
    let mut sizes = BTreeMap::new();
    for n in graph.node_ids() {
        let node = graph.node(n);
        let (Op::Magnet { .. }, Some(layer)) = (&node.op, node.name.strip_suffix(".kernel")) else {
            continue;
        };
        let Some(&coords) = graph.operands(n).first() else {
            continue;
        };
        let size = match mask_crop_size(graph, coords, params)? {
            Some(size) => size,
            // Unmasked: the whole horizon, the grid's trailing dimensions.
            None => {
                let horizon: Option<Vec<usize>> = graph.node(coords).ty.shape[1..]
                    .iter()
                    .map(|d| d.known().map(|k| k as usize))
                    .collect();
                let Some(horizon) = horizon else {
                    continue;
                };
                horizon
            }
        };
        sizes.insert(layer.to_string(), size);
    }
    Ok(sizes)
}
