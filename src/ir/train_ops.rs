//! The ops only a training graph holds: the loss and the backward ops the autodiff
//! pass's VJP rules emit. They live under one `Op::Train` variant so that the forward
//! passes and backends handle all of them in one arm (today: a clean "not supported
//! yet" error), while every match here is exhaustive over `TrainOp`, so a new backward
//! op must get its name, arity, type and printed form.
//!
//! Operands that a backward op reads only for their shape (the forward input of a
//! conv's backward to data, say) are ordinary operands: shape inference then sees
//! symbolic sizes such as the batch, and the backend sees the concrete size.

use super::op::{ConvAttrs, PoolSpec};
use super::shape::{conv, err, pool, same_dtype, shape_str, ShapeError};
use super::types::{Dim, TensorType};

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub enum TrainOp {
    /// (logits `[B, K]`, labels `[B]`) → `[1]`: the batch mean of the cross-entropy
    /// with label smoothing, over a stable log-softmax. Labels hold class indices.
    CrossEntropy { label_smoothing: f64 },
    /// (logits, labels) → `[B, K]`: the gradient of `CrossEntropy` to the logits.
    CrossEntropyBackward { label_smoothing: f64 },
    /// (dy, weight, x) → dx; `x` is read for its shape only (the conv is linear).
    ConvBackwardData(ConvAttrs),
    /// (x, dy, weight) → dweight; `weight` is read for its shape only.
    ConvBackwardFilter(ConvAttrs),
    /// (dy `[B, C, …]`) → `[C]`: the sum over every axis but the channel axis, the
    /// gradient of a bias (conv, linear) or of a batch norm's shift.
    SumToChannels,
    /// (dy `[B, O]`, weight `[O, F]`) → dx `[B, F]`.
    LinearBackwardData,
    /// (x `[B, F]`, dy `[B, O]`) → dweight `[O, F]`.
    LinearBackwardFilter,
    /// (x, dy) → dx: `dy` where `x > 0`. The autodiff rule passes the ReLU's output as
    /// `x` (positive exactly where its input is), so the input need not be kept.
    ReluBackward,
    /// (x, dy) → dx of max pooling (through its argmax) or average pooling.
    PoolBackward(PoolSpec),
    /// (x, dy `[B, C]`) → dx; `x` is read for its shape only.
    GlobalAvgPoolBackward,
    /// (x, dy[, gamma]) → dx of a training-mode batch norm (batch statistics).
    BatchNormBackwardData { eps: f64, affine: bool },
    /// (x, dy) → dgamma `[C]` of a training-mode batch norm.
    BatchNormBackwardGamma { eps: f64 },
    /// (dy, x) → dy viewed with `x`'s shape: the backward of `flatten`.
    ReshapeLike,
    /// (x, dy) → dx of the exact GELU.
    GeluBackward,
    /// (x `[B, C, T]`, dy `[B, C]`) → dx: `dy` at the last time step, zeros elsewhere.
    LastStepBackward,
    /// (dy) → `dy[…, start..start+len, …]` along `axis`: one operand's share of a
    /// concatenation's gradient.
    Slice { axis: usize, start: u64, len: u64 },
    /// (x, dy) → dx of the option-A shortcut: the middle channels of `dy` scattered to
    /// the positions the stride kept, zeros elsewhere.
    ShortcutABackward { stride: u64 },
    /// (x) → dropout's scale per element: `1/(1 − p)` where kept, 0 where dropped, drawn
    /// from the run's seed in training mode; ones in evaluation. The training graph
    /// computes `dropout(x)` as `x · mask` so that the backward, `dy · mask`, sees the
    /// forward's mask.
    DropoutMask { p: f64 },
    /// (x, running_mean, running_var) → `[C]`: a training-mode batch norm's updated
    /// running mean (`var: false`) or variance (`var: true`, from the unbiased batch
    /// variance), `(1 − momentum)·running + momentum·batch`, as PyTorch updates them.
    RunningStatUpdate { momentum: f64, var: bool },
    /// (dy `[Co, …]`, coefficients `[Co, J, 1…]`) → `[J, …]`: `Σ_o C[o, j]·dy[o, …]`,
    /// the gradient of `lc_fold` to its basis (or bias) operand.
    LcFoldBackwardBasis,
    /// (dy `[Co, …]`, basis `[J, …]`, coefficients) → `[Co, J, 1…]`:
    /// `Σ_… dy[o, …]·W[j, …]`, the gradient of `lc_fold` to its coefficients, which
    /// are read for their shape only.
    LcFoldBackwardCoeff,
    /// (dy `[Cout, Cin, k…]`, grid `[D, k…]`, the MAGNet parameters in `magnet`'s
    /// order) → the gradient of parameter `slot` (0 = the first filter's `Wg`),
    /// shaped as it. The grid (a constant, or the crop of one) gets no gradient.
    MagnetBackward { layers: u64, slot: usize },
    /// (grid `[D, k…]`, mask parameters `[D, 2]`, dmask `[k…]`) → `[D, 2]`: the
    /// gradient of `gauss_mask` to each axis's mean and sigma.
    GaussMaskBackward,
    /// (dy `[Co, Ci, k…]`, kernel `[Co, Ci, k…]`) → `[k…]`: the gradient of
    /// `mask_mul` to the mask, `Σ_{o,i} dy·kernel`.
    MaskMulBackwardMask,
    /// (shared bases…, unique bases…) → `[1]`: `scale · Σ_M (B Bᵀ − I)²`, one stage's
    /// orthogonality penalty, with every filter of the operands a row of `B`
    /// (`reference::grad::regularizers::ortho_penalty`; docs/autodiff.md).
    OrthoPenalty {
        shared: usize,
        unique: usize,
        scale: f64,
    },
    /// The same operands → the gradient of `OrthoPenalty` to operand `slot`.
    OrthoPenaltyBackward {
        shared: usize,
        unique: usize,
        scale: f64,
        slot: usize,
    },
    /// ((Gabor weight, γ) per MAGNet filter…, [mask parameters]) → `[1]`: one FlexConv
    /// layer's anti-aliasing penalty, `weight · Σ_l ReLU(f_l + f_mask/n − f_Nyq/n)²`.
    AntialiasPenalty(AntialiasAttrs),
    /// The same operands → the gradient of `AntialiasPenalty` to operand `slot`.
    AntialiasPenaltyBackward { attrs: AntialiasAttrs, slot: usize },
    /// (x) → `[1]`: `weight · ‖x‖₂`, unsquared (FlexConv's kernel weight decay).
    NormPenalty { weight: f64 },
    /// (x) → `weight · x / ‖x‖₂` (zeros where `x = 0`).
    NormPenaltyBackward { weight: f64 },
}

/// The anti-aliasing penalty's constants for one FlexConv layer.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct AntialiasAttrs {
    /// MAGNet's Gabor filters (`layers + 1`).
    pub filters: usize,
    /// Standard deviations of each Gaussian counted into its frequency (`s`).
    pub stddevs: f64,
    /// `f_Nyq = (k − 1)/4` of the layer's horizon `k`.
    pub nyquist: f64,
    /// Whether the mask's frequency is counted (`target: gabor_mask`); the last
    /// operand is then the mask parameters.
    pub mask: bool,
    /// λ.
    pub weight: f64,
}

impl TrainOp {
    pub fn name(&self) -> &'static str {
        match self {
            TrainOp::CrossEntropy { .. } => "cross_entropy",
            TrainOp::CrossEntropyBackward { .. } => "cross_entropy_backward",
            TrainOp::ConvBackwardData(_) => "conv_backward_data",
            TrainOp::ConvBackwardFilter(_) => "conv_backward_filter",
            TrainOp::SumToChannels => "sum_to_channels",
            TrainOp::LinearBackwardData => "linear_backward_data",
            TrainOp::LinearBackwardFilter => "linear_backward_filter",
            TrainOp::ReluBackward => "relu_backward",
            TrainOp::PoolBackward(p) => match p.kind {
                super::op::PoolKind::Max => "maxpool_backward",
                super::op::PoolKind::Avg => "avgpool_backward",
            },
            TrainOp::GlobalAvgPoolBackward => "global_avg_pool_backward",
            TrainOp::BatchNormBackwardData { .. } => "batchnorm_backward_data",
            TrainOp::BatchNormBackwardGamma { .. } => "batchnorm_backward_gamma",
            TrainOp::ReshapeLike => "reshape_like",
            TrainOp::GeluBackward => "gelu_backward",
            TrainOp::LastStepBackward => "last_backward",
            TrainOp::Slice { .. } => "slice",
            TrainOp::ShortcutABackward { .. } => "shortcut_a_backward",
            TrainOp::DropoutMask { .. } => "dropout_mask",
            TrainOp::RunningStatUpdate { var: false, .. } => "running_mean_update",
            TrainOp::RunningStatUpdate { var: true, .. } => "running_var_update",
            TrainOp::LcFoldBackwardBasis => "lc_fold_backward_basis",
            TrainOp::LcFoldBackwardCoeff => "lc_fold_backward_coeff",
            TrainOp::MagnetBackward { .. } => "magnet_backward",
            TrainOp::GaussMaskBackward => "gauss_mask_backward",
            TrainOp::MaskMulBackwardMask => "mask_mul_backward_mask",
            TrainOp::OrthoPenalty { .. } => "ortho_penalty",
            TrainOp::OrthoPenaltyBackward { .. } => "ortho_penalty_backward",
            TrainOp::AntialiasPenalty(_) => "antialias_penalty",
            TrainOp::AntialiasPenaltyBackward { .. } => "antialias_penalty_backward",
            TrainOp::NormPenalty { .. } => "norm_penalty",
            TrainOp::NormPenaltyBackward { .. } => "norm_penalty_backward",
        }
    }

    pub fn arity(&self) -> usize {
        match self {
            TrainOp::SumToChannels
            | TrainOp::Slice { .. }
            | TrainOp::DropoutMask { .. }
            | TrainOp::NormPenalty { .. }
            | TrainOp::NormPenaltyBackward { .. } => 1,
            TrainOp::OrthoPenalty { shared, unique, .. }
            | TrainOp::OrthoPenaltyBackward { shared, unique, .. } => shared + unique,
            TrainOp::AntialiasPenalty(a) | TrainOp::AntialiasPenaltyBackward { attrs: a, .. } => {
                2 * a.filters + usize::from(a.mask)
            }
            TrainOp::CrossEntropy { .. }
            | TrainOp::CrossEntropyBackward { .. }
            | TrainOp::LinearBackwardData
            | TrainOp::LinearBackwardFilter
            | TrainOp::ReluBackward
            | TrainOp::PoolBackward(_)
            | TrainOp::GlobalAvgPoolBackward
            | TrainOp::BatchNormBackwardGamma { .. }
            | TrainOp::ReshapeLike
            | TrainOp::GeluBackward
            | TrainOp::LastStepBackward
            | TrainOp::ShortcutABackward { .. }
            | TrainOp::LcFoldBackwardBasis
            | TrainOp::MaskMulBackwardMask => 2,
            TrainOp::ConvBackwardData(_)
            | TrainOp::LcFoldBackwardCoeff
            | TrainOp::ConvBackwardFilter(_)
            | TrainOp::GaussMaskBackward
            | TrainOp::RunningStatUpdate { .. } => 3,
            // dy, the grid, then 4 per Gabor filter, 2 per hidden linear, 2 for the output.
            TrainOp::MagnetBackward { layers, .. } => 8 + 6 * *layers as usize,
            TrainOp::BatchNormBackwardData { affine, .. } => 2 + usize::from(*affine),
        }
    }

    /// Attributes for the printer, in a fixed order.
    pub fn attrs(&self) -> String {
        match self {
            TrainOp::CrossEntropy { label_smoothing }
            | TrainOp::CrossEntropyBackward { label_smoothing } => {
                format!("label_smoothing={label_smoothing}")
            }
            TrainOp::ConvBackwardData(c) | TrainOp::ConvBackwardFilter(c) => format!(
                "stride={:?} pad={} dilation={:?} groups={}",
                c.stride, c.padding, c.dilation, c.groups
            ),
            TrainOp::PoolBackward(p) => format!(
                "kernel={:?} stride={:?} pad={:?}",
                p.kernel, p.stride, p.padding
            ),
            TrainOp::BatchNormBackwardData { eps, affine } => format!("eps={eps} affine={affine}"),
            TrainOp::BatchNormBackwardGamma { eps } => format!("eps={eps}"),
            TrainOp::Slice { axis, start, len } => format!("axis={axis} start={start} len={len}"),
            TrainOp::ShortcutABackward { stride } => format!("stride={stride}"),
            TrainOp::DropoutMask { p } => format!("p={p}"),
            TrainOp::RunningStatUpdate { momentum, .. } => format!("momentum={momentum}"),
            TrainOp::SumToChannels
            | TrainOp::LinearBackwardData
            | TrainOp::LinearBackwardFilter
            | TrainOp::ReluBackward
            | TrainOp::GlobalAvgPoolBackward
            | TrainOp::ReshapeLike
            | TrainOp::GeluBackward
            | TrainOp::LastStepBackward
            | TrainOp::LcFoldBackwardBasis
            | TrainOp::LcFoldBackwardCoeff
            | TrainOp::GaussMaskBackward
            | TrainOp::MaskMulBackwardMask => String::new(),
            TrainOp::MagnetBackward { layers, slot } => format!("layers={layers} slot={slot}"),
            TrainOp::OrthoPenalty { shared, scale, .. } => {
                format!("shared={shared} scale={scale}")
            }
            TrainOp::OrthoPenaltyBackward {
                shared,
                scale,
                slot,
                ..
            } => format!("shared={shared} scale={scale} slot={slot}"),
            TrainOp::AntialiasPenalty(a) => antialias_attrs(a),
            TrainOp::AntialiasPenaltyBackward { attrs, slot } => {
                format!("{} slot={slot}", antialias_attrs(attrs))
            }
            TrainOp::NormPenalty { weight } | TrainOp::NormPenaltyBackward { weight } => {
                format!("weight={weight}")
            }
        }
    }
}

/// The number of entries `OrthoPenalty` sums for parts with these row counts:
/// `s·N` for the shared rows plus `u²` per unique part. The authors' code divides the
/// sum over all stages by the sum of these counts.
pub fn ortho_count(rows: &[usize], shared: usize) -> usize {
    let n: usize = rows.iter().sum();
    let s: usize = rows[..shared.min(rows.len())].iter().sum();
    s * n
        + rows[shared.min(rows.len())..]
            .iter()
            .map(|u| u * u)
            .sum::<usize>()
}

fn antialias_attrs(a: &AntialiasAttrs) -> String {
    format!(
        "filters={} stddevs={} nyquist={} mask={} weight={}",
        a.filters, a.stddevs, a.nyquist, a.mask, a.weight
    )
}

/// Checks a regulariser's operands: bases whose filters (every axis past the first)
/// have one shape; Gabor weights shaped as their γ, and a `[D, 2]` mask.
fn penalty_operands(op: &TrainOp, o: &[&TensorType]) -> Result<(), ShapeError> {
    let refuse = || {
        let shapes: Vec<String> = o.iter().map(|t| shape_str(&t.shape)).collect();
        err(format!(
            "{} does not accept operands {}",
            op.name(),
            shapes.join(", ")
        ))
    };
    match op {
        TrainOp::OrthoPenalty { .. } | TrainOp::OrthoPenaltyBackward { .. } => {
            let row = |t: &TensorType| t.shape.get(1..).map(|d| d.to_vec());
            if o.iter().any(|t| t.rank() < 2 || row(t) != row(o[0])) {
                return refuse();
            }
        }
        TrainOp::AntialiasPenalty(a) | TrainOp::AntialiasPenaltyBackward { attrs: a, .. } => {
            let pairs = (0..a.filters).all(|l| o[2 * l].shape == o[2 * l + 1].shape);
            let mask = !a.mask || (o[2 * a.filters].rank() == 2);
            if !pairs || !mask {
                return refuse();
            }
        }
        _ => {}
    }
    Ok(())
}

fn expect_same(what: &str, want: &TensorType, got: &TensorType) -> Result<(), ShapeError> {
    if want.shape == got.shape {
        return Ok(());
    }
    err(format!(
        "{what}: the upstream gradient is {} but the forward output is {}",
        shape_str(&got.shape),
        shape_str(&want.shape)
    ))
}

/// Checks that `dy` has the type the forward conv gives `x` and `w`.
fn conv_dy(
    attrs: &ConvAttrs,
    x: &TensorType,
    w: &TensorType,
    dy: &TensorType,
) -> Result<(), ShapeError> {
    let plain = ConvAttrs {
        bias: false,
        ..attrs.clone()
    };
    expect_same("conv backward", &conv(&[x, w], &plain)?, dy)
}

fn logits_labels(logits: &TensorType, labels: &TensorType) -> Result<(), ShapeError> {
    if logits.rank() != 2 || labels.rank() != 1 || labels.shape[0] != logits.shape[0] {
        return err(format!(
            "cross-entropy expects logits [B, K] and labels [B], got {} and {}",
            shape_str(&logits.shape),
            shape_str(&labels.shape)
        ));
    }
    Ok(())
}

pub fn infer(op: &TrainOp, o: &[&TensorType]) -> Result<TensorType, ShapeError> {
    let dtype = same_dtype(o)?;
    match op {
        TrainOp::CrossEntropy { .. } => {
            logits_labels(o[0], o[1])?;
            Ok(TensorType::known(dtype, &[1]))
        }
        TrainOp::CrossEntropyBackward { .. } => {
            logits_labels(o[0], o[1])?;
            Ok(o[0].clone())
        }
        TrainOp::ConvBackwardData(c) => {
            conv_dy(c, o[2], o[1], o[0])?;
            Ok(o[2].clone())
        }
        TrainOp::ConvBackwardFilter(c) => {
            conv_dy(c, o[0], o[2], o[1])?;
            Ok(o[2].clone())
        }
        TrainOp::SumToChannels => {
            if o[0].rank() < 2 {
                return err(format!(
                    "sum_to_channels expects [B, C, …], got {}",
                    shape_str(&o[0].shape)
                ));
            }
            Ok(TensorType::new(dtype, vec![o[0].shape[1].clone()]))
        }
        TrainOp::LinearBackwardData | TrainOp::LinearBackwardFilter => {
            let (a, b) = (o[0], o[1]);
            let data = matches!(op, TrainOp::LinearBackwardData);
            // Data: dy [B, O] · w [O, F]. Filter: x [B, F] and dy [B, O].
            let fits = a.rank() == 2
                && b.rank() == 2
                && if data {
                    a.shape[1] == b.shape[0]
                } else {
                    a.shape[0] == b.shape[0]
                };
            if !fits {
                return err(format!(
                    "{} does not accept operands {} and {}",
                    op.name(),
                    shape_str(&a.shape),
                    shape_str(&b.shape)
                ));
            }
            let shape = if data {
                vec![a.shape[0].clone(), b.shape[1].clone()]
            } else {
                vec![b.shape[1].clone(), a.shape[1].clone()]
            };
            Ok(TensorType::new(dtype, shape))
        }
        TrainOp::ReluBackward | TrainOp::GeluBackward => {
            expect_same(op.name(), o[0], o[1])?;
            Ok(o[0].clone())
        }
        TrainOp::DropoutMask { .. } => Ok(o[0].clone()),
        TrainOp::RunningStatUpdate { .. } => {
            let c = [o[0].shape.get(1).cloned().unwrap_or(Dim::Known(0))];
            if o[0].rank() < 2 || o[1].shape != c || o[2].shape != c {
                return err(format!(
                    "{} expects x [B, C, …] and statistics [C], got {}, {} and {}",
                    op.name(),
                    shape_str(&o[0].shape),
                    shape_str(&o[1].shape),
                    shape_str(&o[2].shape)
                ));
            }
            Ok(o[1].clone())
        }
        TrainOp::LastStepBackward => {
            if o[0].rank() != 3 || o[1].shape != o[0].shape[..2] {
                return err(format!(
                    "last_backward expects x [B, C, T] and dy [B, C], got {} and {}",
                    shape_str(&o[0].shape),
                    shape_str(&o[1].shape)
                ));
            }
            Ok(o[0].clone())
        }
        TrainOp::Slice { axis, start, len } => {
            let dy = o[0];
            let fits = dy
                .shape
                .get(*axis)
                .and_then(Dim::known)
                .is_some_and(|n| start.checked_add(*len).is_some_and(|end| end <= n));
            if !fits {
                return err(format!(
                    "slice {start}..{start}+{len} on axis {axis} does not fit {}",
                    shape_str(&dy.shape)
                ));
            }
            let mut shape = dy.shape.clone();
            shape[*axis] = Dim::Known(*len);
            Ok(TensorType::new(dtype, shape))
        }
        TrainOp::ShortcutABackward { stride } => {
            let forward = super::op::Op::ShortcutA {
                stride: *stride,
                out_channels: o[1].shape.get(1).and_then(Dim::known).unwrap_or(0),
            };
            expect_same(op.name(), &super::shape::infer(&forward, &o[..1])?, o[1])?;
            Ok(o[0].clone())
        }
        TrainOp::PoolBackward(spec) => {
            expect_same("pool backward", &pool(o[0], spec)?, o[1])?;
            Ok(o[0].clone())
        }
        TrainOp::GlobalAvgPoolBackward => {
            let x = o[0];
            if !(3..=4).contains(&x.rank()) || o[1].shape != x.shape[..2] {
                return err(format!(
                    "global_avg_pool_backward expects x [B, C, …] and dy [B, C], got {} and {}",
                    shape_str(&x.shape),
                    shape_str(&o[1].shape)
                ));
            }
            Ok(x.clone())
        }
        TrainOp::BatchNormBackwardData { affine, .. } => {
            expect_same("batchnorm backward", o[0], o[1])?;
            if *affine && o[2].shape != [o[0].shape[1].clone()] {
                return err("batchnorm backward: gamma does not match the channels");
            }
            Ok(o[0].clone())
        }
        TrainOp::BatchNormBackwardGamma { .. } => {
            expect_same("batchnorm backward", o[0], o[1])?;
            Ok(TensorType::new(dtype, vec![o[0].shape[1].clone()]))
        }
        TrainOp::LcFoldBackwardBasis => {
            let (dy, c) = (o[0], o[1]);
            if c.rank() < 2 || dy.rank() < 1 || dy.shape[0] != c.shape[0] {
                return err(format!(
                    "lc_fold_backward_basis expects dy [Co, …] and coefficients [Co, J, 1…], got {} and {}",
                    shape_str(&dy.shape),
                    shape_str(&c.shape)
                ));
            }
            let mut shape = dy.shape.clone();
            shape[0] = c.shape[1].clone();
            Ok(TensorType::new(dtype, shape))
        }
        TrainOp::LcFoldBackwardCoeff => {
            let forward = super::fold_ops::infer_fold(&super::op::Op::LcFold, &[o[1], o[2]])?;
            expect_same(op.name(), &forward, o[0])?;
            Ok(o[2].clone())
        }
        TrainOp::MagnetBackward { slot, .. } => {
            let (dy, grid) = (o[0], o[1]);
            if dy.rank() < 2 || dy.shape[2..] != grid.shape[1..] || 2 + slot >= o.len() {
                return err(format!(
                    "magnet_backward expects dy [Cout, Cin, k…] on a grid [D, k…], got {} and {}",
                    shape_str(&dy.shape),
                    shape_str(&grid.shape)
                ));
            }
            Ok(o[2 + slot].clone())
        }
        TrainOp::GaussMaskBackward => {
            if o[2].shape[..] != o[0].shape[1..] {
                return err(format!(
                    "gauss_mask_backward: dmask {} does not match the grid {}",
                    shape_str(&o[2].shape),
                    shape_str(&o[0].shape)
                ));
            }
            Ok(o[1].clone())
        }
        TrainOp::MaskMulBackwardMask => {
            expect_same(op.name(), o[1], o[0])?;
            if o[1].rank() < 2 {
                return err("mask_mul_backward_mask expects a kernel [Co, Ci, k…]");
            }
            Ok(TensorType::new(dtype, o[1].shape[2..].to_vec()))
        }
        TrainOp::OrthoPenalty { .. }
        | TrainOp::AntialiasPenalty(_)
        | TrainOp::NormPenalty { .. } => {
            penalty_operands(op, o)?;
            Ok(TensorType::known(dtype, &[1]))
        }
        TrainOp::OrthoPenaltyBackward { slot, .. }
        | TrainOp::AntialiasPenaltyBackward { slot, .. } => {
            penalty_operands(op, o)?;
            match o.get(*slot) {
                Some(t) => Ok((*t).clone()),
                None => err(format!("{}: no operand {slot}", op.name())),
            }
        }
        TrainOp::NormPenaltyBackward { .. } => Ok(o[0].clone()),
        TrainOp::ReshapeLike => {
            let (dy, x) = (o[0], o[1]);
            let count = |t: &TensorType| -> Option<u64> {
                t.shape[1..].iter().map(Dim::known).product::<Option<u64>>()
            };
            if dy.rank() < 1 || x.rank() < 1 || dy.shape[0] != x.shape[0] || count(dy) != count(x) {
                return err(format!(
                    "reshape_like cannot view {} as {}",
                    shape_str(&dy.shape),
                    shape_str(&x.shape)
                ));
            }
            Ok(x.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{ConvAlgo, Padding, PoolKind};
    use crate::ir::types::DType;

    fn t(dims: &[u64]) -> TensorType {
        TensorType::known(DType::F32, dims)
    }

    fn conv2() -> ConvAttrs {
        ConvAttrs {
            stride: vec![2, 2],
            padding: Padding::Explicit(vec![(1, 1), (1, 1)]),
            dilation: vec![1, 1],
            groups: 1,
            bias: true,
            algo: ConvAlgo::Auto,
        }
    }

    #[test]
    fn backward_ops_take_their_operands_types() {
        let (x, w, dy) = (t(&[2, 3, 8, 8]), t(&[4, 3, 3, 3]), t(&[2, 4, 4, 4]));
        let data = TrainOp::ConvBackwardData(conv2());
        assert_eq!(infer(&data, &[&dy, &w, &x]).unwrap(), x);
        let filter = TrainOp::ConvBackwardFilter(conv2());
        assert_eq!(infer(&filter, &[&x, &dy, &w]).unwrap(), w);
        assert_eq!(infer(&TrainOp::SumToChannels, &[&dy]).unwrap(), t(&[4]));
        let ce = TrainOp::CrossEntropy {
            label_smoothing: 0.1,
        };
        assert_eq!(infer(&ce, &[&t(&[2, 10]), &t(&[2])]).unwrap(), t(&[1]));
        let slice = TrainOp::Slice {
            axis: 1,
            start: 1,
            len: 2,
        };
        assert_eq!(infer(&slice, &[&dy]).unwrap(), t(&[2, 2, 4, 4]));
        let pool = TrainOp::PoolBackward(PoolSpec {
            kind: PoolKind::Max,
            kernel: vec![2, 2],
            stride: vec![2, 2],
            padding: vec![0, 0],
        });
        assert_eq!(infer(&pool, &[&x, &t(&[2, 3, 4, 4])]).unwrap(), x);
        assert_eq!(data.arity(), 3);
        assert_eq!(pool.name(), "maxpool_backward");
    }

    #[test]
    fn mismatched_backward_operands_are_refused() {
        let (x, w) = (t(&[2, 3, 8, 8]), t(&[4, 3, 3, 3]));
        let data = TrainOp::ConvBackwardData(conv2());
        let e = infer(&data, &[&t(&[2, 4, 8, 8]), &w, &x]).unwrap_err();
        assert!(
            e.message.contains("upstream gradient is [2, 4, 8, 8]"),
            "{}",
            e.message
        );
        let slice = TrainOp::Slice {
            axis: 1,
            start: 3,
            len: 2,
        };
        assert!(infer(&slice, &[&t(&[2, 4])]).is_err());
        let ce = TrainOp::CrossEntropyBackward {
            label_smoothing: 0.0,
        };
        assert!(infer(&ce, &[&t(&[2, 10]), &t(&[3])]).is_err());
        assert!(infer(&TrainOp::ReshapeLike, &[&t(&[2, 10]), &t(&[2, 3, 3])]).is_err());
        assert!(infer(&TrainOp::LinearBackwardData, &[&t(&[2, 5]), &t(&[4, 3])]).is_err());
    }
}
