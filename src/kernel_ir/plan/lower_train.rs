//! Lowering of the training graph's ops (`Op::Train`): the loss and the backward ops
//! the autodiff pass emits. One arm per `TrainOp`, no catch-all, so a new backward op
//! does not compile until the kernel lowering handles it (or says it cannot yet).

use super::{unsupported, Builder, Val};
use crate::ir::train_ops::TrainOp;
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;

impl Builder<'_> {
    pub(super) fn train_op(&mut self, id: NodeIndex, op: &TrainOp) -> Result<Val, RunError> {
        let node = self.graph.node(id);
        let not_yet = || Err(unsupported(node, &format!("`{}`", op.name())));
        match op {
            // Convolutions, linear layers and the LC fold (`lower_conv_backward`).
            TrainOp::ConvBackwardData(c) => self.conv_backward_data(id, c),
            TrainOp::ConvBackwardFilter(c) => self.conv_backward_filter(id, c),
            TrainOp::LinearBackwardData => self.linear_backward_data(id),
            TrainOp::LinearBackwardFilter => self.linear_backward_filter(id),
            TrainOp::LcFoldBackwardBasis => self.lc_fold_backward_basis(id),
            TrainOp::LcFoldBackwardCoeff => self.lc_fold_backward_coeff(id),
            // FlexConv's kernel synthesis.
            TrainOp::MagnetBackward { layers, slot } => {
                self.magnet_backward(id, *layers as usize, *slot)
            }
            TrainOp::GaussMaskBackward => self.gauss_mask_backward(id),
            TrainOp::MaskMulBackwardMask => self.mask_mul_backward_mask(id),
            // The loss, normalisation, pooling and elementwise backward ops.
            TrainOp::CrossEntropy { .. }
            | TrainOp::CrossEntropyBackward { .. }
            | TrainOp::SumToChannels
            | TrainOp::ReluBackward
            | TrainOp::PoolBackward(_)
            | TrainOp::GlobalAvgPoolBackward
            | TrainOp::BatchNormBackwardData { .. }
            | TrainOp::BatchNormBackwardGamma { .. }
            | TrainOp::ReshapeLike
            | TrainOp::GeluBackward
            | TrainOp::LastStepBackward
            | TrainOp::Slice { .. }
            | TrainOp::ShortcutABackward { .. }
            | TrainOp::DropoutMask { .. }
            | TrainOp::RunningStatUpdate { .. } => not_yet(),
        }
    }
}
