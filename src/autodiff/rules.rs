//! One vector-Jacobian product rule per op, in one exhaustive `match` over `Op`: a new
//! op does not compile until it gets a rule here, or an explicit "no rule yet" arm.
//!
//! A rule gets the forward node, the upstream gradient `dy` (a node shaped as the
//! forward's output) and which operand slots need a gradient, and emits the backward
//! nodes through the graph-editing API. It returns one entry per operand slot: the
//! gradient node, or `None` where none was asked for (or none exists: running
//! statistics, the labels).

use super::AutodiffError;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, TrainOp};
use petgraph::stable_graph::NodeIndex;

/// Emits backward nodes for one forward node; names them `<layer>.grad_<what>`.
struct Emit<'a> {
    g: &'a mut Graph,
    node: NodeIndex,
}

impl Emit<'_> {
    fn op(
        &mut self,
        op: Op,
        operands: &[NodeIndex],
        what: &str,
    ) -> Result<NodeIndex, AutodiffError> {
        let fwd = self.g.node(self.node);
        let (name, span) = (format!("{}.grad_{what}", fwd.name), fwd.span);
        self.g
            .add_op(op, operands, name, span)
            .map_err(|e| AutodiffError::internal(self.g.node(self.node), &e.0))
    }

    fn train(
        &mut self,
        op: TrainOp,
        operands: &[NodeIndex],
        what: &str,
    ) -> Result<NodeIndex, AutodiffError> {
        self.op(Op::Train(op), operands, what)
    }
}

/// The rule of `node`'s op; `want[i]` says whether operand slot `i` needs a gradient.
pub(super) fn vjp(
    g: &mut Graph,
    node: NodeIndex,
    dy: NodeIndex,
    want: &[bool],
) -> Result<Vec<Option<NodeIndex>>, AutodiffError> {
    let ops = g.operands(node);
    let fwd = g.node(node);
    let (op, layer, span) = (fwd.op.clone(), fwd.name.clone(), fwd.span);
    let mut e = Emit { g, node };
    let mut out: Vec<Option<NodeIndex>> = vec![None; ops.len()];
    // Only the gradients asked for are built: a frozen weight gets none.
    macro_rules! grad {
        ($slot:expr, $make:expr) => {
            if want[$slot] {
                out[$slot] = Some($make);
            }
        };
    }
    let no_rule = |why: &str| Err(AutodiffError::no_rule(&layer, span, op.name(), why));
    match &op {
        // Leaves: the pass never asks them for operand gradients.
        Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::CoordGrid { .. } => {}
        Op::Conv(c) => {
            grad!(
                0,
                e.train(
                    TrainOp::ConvBackwardData(c.clone()),
                    &[dy, ops[1], ops[0]],
                    "input"
                )?
            );
            grad!(
                1,
                e.train(
                    TrainOp::ConvBackwardFilter(c.clone()),
                    &[ops[0], dy, ops[1]],
                    "weight"
                )?
            );
            if c.bias {
                grad!(2, e.train(TrainOp::SumToChannels, &[dy], "bias")?);
            }
        }
        Op::Linear { bias } => {
            grad!(
                0,
                e.train(TrainOp::LinearBackwardData, &[dy, ops[1]], "input")?
            );
            grad!(
                1,
                e.train(TrainOp::LinearBackwardFilter, &[ops[0], dy], "weight")?
            );
            if *bias {
                grad!(2, e.train(TrainOp::SumToChannels, &[dy], "bias")?);
            }
        }
        // Batch statistics in forward and backward (run the training graph in training
        // mode); the running statistics (slots 3, 4 or 1, 2) are buffers: no gradient.
        Op::BatchNorm { eps, affine, .. } => {
            let eps = *eps;
            let data = TrainOp::BatchNormBackwardData {
                eps,
                affine: *affine,
            };
            let operands: Vec<NodeIndex> = if *affine {
                vec![ops[0], dy, ops[1]]
            } else {
                vec![ops[0], dy]
            };
            grad!(0, e.train(data, &operands, "input")?);
            if *affine {
                grad!(
                    1,
                    e.train(
                        TrainOp::BatchNormBackwardGamma { eps },
                        &[ops[0], dy],
                        "weight"
                    )?
                );
                grad!(2, e.train(TrainOp::SumToChannels, &[dy], "bias")?);
            }
        }
        // Masked by the output (`relu(x) > 0` exactly where `x > 0`): the backward then
        // keeps the output, which the next layer keeps anyway, alive instead of the
        // input (a batch norm's or a residual add's output), which dies after the
        // forward. ResNet-20's step at batch 64 needs 40 MiB less (docs/performance.md).
        Op::Relu => grad!(0, e.train(TrainOp::ReluBackward, &[node, dy], "input")?),
        // The forward becomes `x · mask`, so the backward reads the mask it used.
        Op::Dropout { p } => {
            let mask = e.train(TrainOp::DropoutMask { p: *p }, &[ops[0]], "mask")?;
            let y = e.op(Op::Mul, &[ops[0], mask], "masked")?;
            e.g.replace_uses(node, y)
                .map_err(|err| AutodiffError::internal(e.g.node(node), &err.0))?;
            grad!(0, e.op(Op::Mul, &[dy, mask], "input")?);
        }
        Op::Pool(spec) => grad!(
            0,
            e.train(TrainOp::PoolBackward(spec.clone()), &[ops[0], dy], "input")?
        ),
        Op::Slot { active, pool, .. } => {
            if *active {
                grad!(
                    0,
                    e.train(TrainOp::PoolBackward(pool.clone()), &[ops[0], dy], "input")?
                );
            } else {
                grad!(0, dy);
            }
        }
        Op::GlobalAvgPool => {
            grad!(
                0,
                e.train(TrainOp::GlobalAvgPoolBackward, &[ops[0], dy], "input")?
            )
        }
        Op::Flatten => grad!(0, e.train(TrainOp::ReshapeLike, &[dy, ops[0]], "input")?),
        Op::Add => {
            grad!(0, dy);
            grad!(1, dy);
        }
        Op::Mul => {
            grad!(0, e.op(Op::Mul, &[dy, ops[1]], "lhs")?);
            grad!(1, e.op(Op::Mul, &[dy, ops[0]], "rhs")?);
        }
        Op::Scale { factor } => grad!(0, e.op(Op::Scale { factor: *factor }, &[dy], "input")?),
        Op::Gelu => grad!(0, e.train(TrainOp::GeluBackward, &[ops[0], dy], "input")?),
        Op::LastStep => grad!(
            0,
            e.train(TrainOp::LastStepBackward, &[ops[0], dy], "input")?
        ),
        Op::Concat { axis } => {
            let mut start = 0;
            for (slot, &o) in ops.iter().enumerate() {
                let len = e.g.node(o).ty.shape[*axis].known().unwrap_or(0);
                let slice = TrainOp::Slice {
                    axis: *axis,
                    start,
                    len,
                };
                grad!(slot, e.train(slice, &[dy], &format!("input{slot}"))?);
                start += len;
            }
        }
        Op::ShortcutA { stride, .. } => {
            let back = TrainOp::ShortcutABackward { stride: *stride };
            grad!(0, e.train(back, &[ops[0], dy], "input")?)
        }
        // The crop is a constant within one step: no gradient to the mask through it.
        Op::MaskCrop { .. } => {}
        Op::Magnet { layers, .. } => {
            for slot in 1..ops.len() {
                let back = TrainOp::MagnetBackward {
                    layers: *layers,
                    slot: slot - 1,
                };
                grad!(
                    slot,
                    e.train(back, &[&[dy][..], &ops].concat(), &format!("p{}", slot - 1))?
                );
            }
        }
        // The grid (slot 0) is constant.
        Op::GaussMask => grad!(
            1,
            e.train(TrainOp::GaussMaskBackward, &[ops[0], ops[1], dy], "mask")?
        ),
        Op::MaskMul => {
            grad!(0, e.op(Op::MaskMul, &[dy, ops[1]], "kernel")?);
            grad!(
                1,
                e.train(TrainOp::MaskMulBackwardMask, &[dy, ops[0]], "mask")?
            );
        }
        Op::FlexKernel { .. } => flex_kernel(&mut e, &op, &ops, dy, want, &mut out)?,
        // A frozen basis is never asked for its gradient (pruning: it is no source).
        Op::LcFold => {
            grad!(
                0,
                e.train(TrainOp::LcFoldBackwardBasis, &[dy, ops[1]], "basis")?
            );
            grad!(
                1,
                e.train(TrainOp::LcFoldBackwardCoeff, &[dy, ops[0], ops[1]], "coeff")?
            );
        }
        Op::BnFold { .. } => {
            return no_rule(
                "a folded batch norm is an inference rewrite; differentiate the unfolded graph",
            )
        }
        Op::FusedConv { .. } => {
            return no_rule("a fused conv is an inference rewrite; differentiate before fusing")
        }
        Op::Train(_) => return no_rule("a training graph cannot be differentiated again"),
    }
    Ok(out)
}

/// The fused kernel synthesis, differentiated as its chain (`coord_grid`, `mask_crop`,
/// `magnet`, `gauss_mask`, `mask_mul`, `scale`): the backward recomputes the grid, the
/// crop, the unmasked kernel and the mask as forward nodes of its own, so the fused
/// forward stays as it is and the crop is the forward's (same parameters, same rule).
fn flex_kernel(
    e: &mut Emit<'_>,
    op: &Op,
    ops: &[NodeIndex],
    dy: NodeIndex,
    want: &[bool],
    out: &mut [Option<NodeIndex>],
) -> Result<(), AutodiffError> {
    let Op::FlexKernel {
        layers,
        hidden,
        out_channels,
        in_channels,
        horizon,
        threshold,
        causal,
        scale,
        ..
    } = op
    else {
        return Ok(());
    };
    let grid = e.op(
        Op::CoordGrid {
            horizon: horizon.clone(),
        },
        &[],
        "grid",
    )?;
    let (mask, net_slot) = match threshold {
        Some(_) => (Some(ops[0]), 1),
        None => (None, 0),
    };
    let grid = match (mask, threshold) {
        (Some(m), Some(t)) => e.op(
            Op::MaskCrop {
                threshold: *t,
                causal: *causal,
            },
            &[grid, m],
            "crop",
        )?,
        _ => grid,
    };
    let net = &ops[net_slot..];
    let dk = if *scale != 1.0 {
        e.op(Op::Scale { factor: *scale }, &[dy], "scaled")?
    } else {
        dy
    };
    let dk = match mask {
        Some(m) => {
            let values = e.op(Op::GaussMask, &[grid, m], "mask_values")?;
            if want[0] {
                let magnet = Op::Magnet {
                    layers: *layers,
                    hidden: *hidden,
                    out_channels: *out_channels,
                    in_channels: *in_channels,
                };
                let k = e.op(magnet, &[&[grid][..], net].concat(), "unmasked")?;
                let dm = e.train(TrainOp::MaskMulBackwardMask, &[dk, k], "mask_values")?;
                out[0] = Some(e.train(TrainOp::GaussMaskBackward, &[grid, m, dm], "mask")?);
            }
            e.op(Op::MaskMul, &[dk, values], "kernel")?
        }
        None => dk,
    };
    for (i, _) in net.iter().enumerate() {
        if want[net_slot + i] {
            let back = TrainOp::MagnetBackward {
                layers: *layers,
                slot: i,
            };
            let operands = [&[dk, grid][..], net].concat();
            out[net_slot + i] = Some(e.train(back, &operands, &format!("p{i}"))?);
        }
    }
    Ok(())
}
