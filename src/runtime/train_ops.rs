//! The interpreter's evaluation of the loss and backward ops (`Op::Train`): each one
//! calls its kernel in `reference::grad`, after resolving the op's attributes the way
//! the forward interpreter resolves them (`same`/`causal` padding, 1D seen as 2D), so
//! a backward op differentiates exactly the forward the interpreter ran.

use super::error::RunError;
use super::interp::{lift_2d, pool2d};
use crate::ir::op::{ConvAttrs, PoolKind, TrainOp};
use crate::reference::conv::ConvParams;
use crate::reference::grad::{conv as gconv, elementwise, lc, loss, magnet, norm, pool as gpool};
use crate::reference::norm::{batch_norm_train, RunningStats};
use crate::tensor::{Scalar, Tensor};

/// `dropout` is the interpreter's forward dropout (mode, seed and layer included), so a
/// mask is drawn exactly as a forward dropout draws it.
pub(super) fn eval<T: Scalar>(
    op: &TrainOp,
    a: &[&Tensor<T>],
    dropout: impl FnOnce(&Tensor<T>, f64) -> Tensor<T>,
) -> Result<Tensor<T>, RunError> {
    Ok(match op {
        TrainOp::CrossEntropy { label_smoothing } => {
            let labels = class_indices(a[1])?;
            let l = loss::cross_entropy(a[0], &labels, T::from_f64(*label_smoothing))?;
            Tensor::from_vec(vec![1], vec![l])?
        }
        TrainOp::CrossEntropyBackward { label_smoothing } => {
            let labels = class_indices(a[1])?;
            let eps = T::from_f64(*label_smoothing);
            loss::cross_entropy_backward(a[0], &labels, eps, T::one())?
        }
        TrainOp::ConvBackwardData(c) => {
            let p = conv_params(c, &a[1].shape);
            gconv::conv_backward_data(a[0], a[1], &a[2].shape, &p)?
        }
        TrainOp::ConvBackwardFilter(c) => {
            let p = conv_params(c, &a[2].shape);
            gconv::conv_backward_filter(a[0], a[1], &a[2].shape, &p)?
        }
        TrainOp::SumToChannels => sum_to_channels(a[0])?,
        TrainOp::LinearBackwardData => {
            // dx = dy·w: linear_backward's dx needs an x only for its shape.
            let (dy, w) = (a[0], a[1]);
            let x = Tensor::zeros(vec![dy.shape[0], w.shape[1]]);
            elementwise::linear_backward(&x, w, dy, false)?.dx
        }
        TrainOp::LinearBackwardFilter => {
            let (x, dy) = (a[0], a[1]);
            let w = Tensor::zeros(vec![dy.shape[1], x.shape[1]]);
            elementwise::linear_backward(x, &w, dy, false)?.dw
        }
        TrainOp::ReluBackward => elementwise::relu_backward(a[0], a[1])?,
        TrainOp::PoolBackward(spec) => {
            let (x, dy) = (lift_2d(a[0]), lift_2d(a[1]));
            let p = pool2d(spec);
            let dx = match spec.kind {
                PoolKind::Max => gpool::max_pool2d_backward(&x, &dy, &p)?,
                // The forward averages with the padding in the divisor.
                PoolKind::Avg => gpool::avg_pool2d_backward(&dy, &x.shape, &p, true)?,
            };
            dx.reshape(a[0].shape.clone())?
        }
        TrainOp::GlobalAvgPoolBackward => gpool::global_avg_pool_backward(a[1], &a[0].shape)?,
        TrainOp::BatchNormBackwardData { eps, affine } => {
            let gamma = affine.then(|| a[2].data.as_slice());
            norm::batch_norm_train_backward(a[0], a[1], gamma, T::from_f64(*eps))?.dx
        }
        TrainOp::BatchNormBackwardGamma { eps } => {
            let ones = vec![T::one(); a[0].shape[1]];
            let g = norm::batch_norm_train_backward(a[0], a[1], Some(&ones), T::from_f64(*eps))?;
            let dgamma = g
                .dgamma
                .ok_or_else(|| RunError::new("internal error: batch norm gave no dgamma"))?;
            Tensor::from_vec(vec![ones.len()], dgamma)?
        }
        TrainOp::ReshapeLike => a[0].clone().reshape(a[1].shape.clone())?,
        TrainOp::RunningStatUpdate { momentum, var } => {
            let running = RunningStats {
                mean: a[1].data.clone(),
                var: a[2].data.clone(),
            };
            // The output is not used; any positive eps normalises.
            let (_, updated) =
                batch_norm_train(a[0], None, Some(&running), T::from_f64(*momentum), T::one())?;
            let u =
                updated.ok_or_else(|| RunError::new("internal error: no running statistics"))?;
            let stat = if *var { u.var } else { u.mean };
            Tensor::from_vec(vec![stat.len()], stat)?
        }
        TrainOp::DropoutMask { p } => dropout(&a[0].map(|_| T::one()), *p),
        TrainOp::GeluBackward => elementwise::gelu_backward(a[0], a[1])?,
        TrainOp::LastStepBackward => {
            let mut dx = Tensor::zeros(a[0].shape.clone());
            let t = a[0].shape[2];
            if t == 0 {
                return Err(RunError::new("last_backward: the sequence is empty"));
            }
            for (row, &g) in dx.data.chunks_mut(t.max(1)).zip(&a[1].data) {
                row[t - 1] = g;
            }
            dx
        }
        TrainOp::Slice { axis, start, len } => slice(a[0], *axis, *start as usize, *len as usize)?,
        TrainOp::ShortcutABackward { stride } => shortcut_a_backward(a[0], a[1], *stride as usize)?,
        TrainOp::LcFoldBackwardBasis => {
            let mut w_shape = a[0].shape.clone();
            w_shape[0] = a[1].shape[1];
            lc::lc_fold_backward_basis(a[0], a[1], &w_shape)?
        }
        TrainOp::LcFoldBackwardCoeff => lc::lc_fold_backward_coeff(a[0], a[1], &a[2].shape)?,
        TrainOp::MagnetBackward { layers, slot } => {
            let p = super::interp::magnet_params(&a[2..], *layers as usize)?;
            let grid = a[1];
            let d = grid.shape.first().copied().unwrap_or(0);
            let coords = Tensor {
                shape: vec![d, grid.numel() / d.max(1)],
                data: grid.data.clone(),
            };
            let mut g = magnet::magnet_backward(&p, &coords, &a[0].data)?;
            if *slot >= g.len() {
                return Err(RunError::new(format!(
                    "magnet_backward: no parameter {slot}"
                )));
            }
            let g = g.swap_remove(*slot);
            g.reshape(a[2 + slot].shape.clone())?
        }
        TrainOp::GaussMaskBackward => magnet::gauss_mask_backward(a[0], a[1], a[2])?,
        TrainOp::MaskMulBackwardMask => magnet::mask_mul_backward_mask(a[0], a[1])?,
    })
}

/// Labels are class indices stored in the graph's float type; anything that is not a
/// whole number from 0 is a data error, reported with its position.
fn class_indices<T: Scalar>(labels: &Tensor<T>) -> Result<Vec<usize>, RunError> {
    labels
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let v = v.to_f64();
            if v >= 0.0 && v.fract() == 0.0 && v < usize::MAX as f64 {
                Ok(v as usize)
            } else {
                Err(RunError::new(format!(
                    "label {i} is {v}, expected a class index (a whole number from 0)"
                ))
                .hint("labels are the class numbers 0..K-1 of a K-way classifier"))
            }
        })
        .collect()
}

fn sum_to_channels<T: Scalar>(dy: &Tensor<T>) -> Result<Tensor<T>, RunError> {
    let (b, c) = (dy.shape[0], dy.shape.get(1).copied().unwrap_or(0));
    let s: usize = dy.shape[2..].iter().product();
    let mut out = vec![T::zero(); c];
    for bi in 0..b {
        for (o, acc) in out.iter_mut().enumerate() {
            *acc += dy.data[(bi * c + o) * s..][..s].iter().copied().sum::<T>();
        }
    }
    Ok(Tensor::from_vec(vec![c], out)?)
}

/// `dy[…, start..start + len, …]` along `axis`.
fn slice<T: Scalar>(
    dy: &Tensor<T>,
    axis: usize,
    start: usize,
    len: usize,
) -> Result<Tensor<T>, RunError> {
    let outer: usize = dy.shape[..axis].iter().product();
    let inner: usize = dy.shape[axis + 1..].iter().product();
    let n = dy.shape[axis];
    let mut data = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        data.extend_from_slice(&dy.data[(o * n + start) * inner..(o * n + start + len) * inner]);
    }
    let mut shape = dy.shape.clone();
    shape[axis] = len;
    Ok(Tensor::from_vec(shape, data)?)
}

/// The option-A shortcut keeps `x[:, :, ::s, ::s]` (`x[:, :, ::s]` in 1D) and pads
/// channels evenly on both sides; its gradient reads the middle channels of `dy` back
/// into the kept positions.
fn shortcut_a_backward<T: Scalar>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    s: usize,
) -> Result<Tensor<T>, RunError> {
    let (x4, dy4) = (lift_2d(x), lift_2d(dy));
    let [b, c, h, w] = [x4.shape[0], x4.shape[1], x4.shape[2], x4.shape[3]];
    let [co, ho, wo] = [dy4.shape[1], dy4.shape[2], dy4.shape[3]];
    let sh = if x.ndim() == 3 { 1 } else { s };
    let pad = (co - c) / 2;
    let mut dx = Tensor::zeros(x.shape.clone());
    for bi in 0..b {
        for ci in 0..c {
            for i in 0..ho {
                for j in 0..wo {
                    let g = dy4.data[((bi * co + ci + pad) * ho + i) * wo + j];
                    dx.data[((bi * c + ci) * h + i * sh) * w + j * s] = g;
                }
            }
        }
    }
    Ok(dx)
}

/// The conv's parameters with its padding resolved for a weight of `w_shape`, as the
/// forward interpreter resolves it: the FFT paths compute the same function.
fn conv_params(c: &ConvAttrs, w_shape: &[usize]) -> ConvParams {
    let us = |v: &[u64]| v.iter().map(|&s| s as usize).collect::<Vec<_>>();
    let dil = us(&c.dilation);
    let kernel = &w_shape[2..];
    let padding = super::interp::resolve_padding(&c.padding, kernel, &dil);
    ConvParams {
        stride: us(&c.stride),
        padding,
        dilation: dil,
        groups: c.groups as usize,
    }
}
