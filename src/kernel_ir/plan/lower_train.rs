//! Lowering of the training graph's ops (`Op::Train`): the loss and the backward ops
//! the autodiff pass emits. One arm per `TrainOp`, no catch-all, so a new backward op
//! does not compile until the kernel lowering handles it.
//!
//! Also the training-mode pieces of forward ops: dropout's mask (`runtime::dropout`,
//! drawn on the device from the run's seed buffer) and the running-statistic updates
//! of a model graph run in training mode.

use super::lower_conv::lift;
use super::{BufId, BufKind, Builder, Val};
use crate::ir::op::{Op, PoolKind, PoolSpec};
use crate::ir::train_ops::TrainOp;
use crate::kernel_ir::native::{NativeConvs, NativeOp, SyncStats};
use crate::kernel_ir::{backward_ops as bw, batch_norm as bn, ops};
use crate::runtime::RunError;
use crate::runtime::{dropout, sync_stats};
use petgraph::stable_graph::NodeIndex;

/// `[outer, channels, inner]` of a `[B, C, …]` shape.
fn channel_layout(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// A pool's window, stride and padding as the 2D kernels take them (1D as `1 × L`),
/// as the forward lowering resolves them.
fn pool_2d(spec: &PoolSpec) -> ([usize; 2], [usize; 2], [usize; 2]) {
    let two = |v: &[u64]| {
        if v.len() == 1 {
            [1, v[0] as usize]
        } else {
            [v[0] as usize, v[1] as usize]
        }
    };
    let pad = if spec.padding.len() == 1 {
        [0, spec.padding[0] as usize]
    } else {
        two(&spec.padding)
    };
    (two(&spec.kernel), two(&spec.stride), pad)
}

impl Builder<'_> {
    pub(super) fn train_op(&mut self, id: NodeIndex, op: &TrainOp) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let layer = self.graph.node(id).name.clone();
        let v = self.target.vector;
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
            TrainOp::CrossEntropy { label_smoothing } => {
                let (z, labels) = (self.val(operands[0])?, self.val(operands[1])?);
                let (b, k) = (z.shape[0], z.shape[1]);
                let rows = self.temp(vec![b]);
                let kern = bw::cross_entropy_rows("cross_entropy", b, k, *label_smoothing as f32);
                self.emit(
                    "cross_entropy",
                    kern,
                    vec![z.buf, labels.buf, rows.buf],
                    &layer,
                );
                let y = self.temp(vec![1]);
                let kern = ops::row_mean("loss_mean", 1, b, v);
                self.emit("loss_mean", kern, vec![rows.buf, y.buf], &layer);
                Ok(y)
            }
            TrainOp::CrossEntropyBackward { label_smoothing } => {
                let (z, labels) = (self.val(operands[0])?, self.val(operands[1])?);
                let (b, k) = (z.shape[0], z.shape[1]);
                let dz = self.temp(z.shape.clone());
                let eps = *label_smoothing as f32;
                let kern = bw::cross_entropy_backward("cross_entropy_backward", b, k, eps);
                self.emit(
                    "cross_entropy_backward",
                    kern,
                    vec![z.buf, labels.buf, dz.buf],
                    &layer,
                );
                Ok(dz)
            }
            TrainOp::SumToChannels => {
                let dy = self.val(operands[0])?;
                let (outer, c, inner) = channel_layout(&dy.shape);
                let y = self.temp(vec![c]);
                if let Some((x, eps)) = self.batch_norm_reading(operands[0]) {
                    // A batch norm's β gradient: Σ dy is the third of each channel's
                    // backward sums, which its other gradients compute anyway.
                    let st = self.bn_sums(x, operands[0], eps, &layer)?;
                    let kern = ops::strided_take("sum_to_channels", c, 4, 2);
                    self.emit("sum_to_channels", kern, vec![st, y.buf], &layer);
                    return Ok(y);
                }
                let args = vec![dy.buf, y.buf];
                if self.target.native == NativeConvs::Off {
                    let kern = bw::channel_sum("sum_to_channels", outer, c, inner, v);
                    self.emit("sum_to_channels", kern, args, &layer);
                } else {
                    let op = NativeOp::ChannelSum { outer, c, inner };
                    self.emit_native(op, args, &layer);
                }
                Ok(y)
            }
            TrainOp::ReluBackward => {
                let x = self.val(operands[0])?;
                // `dy` as the add the backward computes (`summed_gradients`), or itself.
                let terms = match self.summed_dy.get(&id) {
                    Some(&add) => self.graph.operands(add),
                    None => vec![operands[1]],
                };
                let mut args = vec![x.buf];
                for t in &terms {
                    args.push(self.val(*t)?.buf);
                }
                let dx = self.temp(x.shape.clone());
                args.push(dx.buf);
                let n = dx.shape.iter().product();
                let summed = terms.len() == 2;
                if self.target.native == NativeConvs::Off {
                    let kern = bw::relu_backward("relu_backward", n, summed);
                    self.emit("relu_backward", kern, args, &layer);
                } else {
                    self.emit_native(NativeOp::ReluBackward { n, summed }, args, &layer);
                }
                Ok(dx)
            }
            TrainOp::GeluBackward => {
                let (x, dy) = (self.val(operands[0])?, self.val(operands[1])?);
                let dx = self.temp(x.shape.clone());
                let kern = bw::gelu_backward("gelu_backward", dx.shape.iter().product(), v);
                self.emit("gelu_backward", kern, vec![x.buf, dy.buf, dx.buf], &layer);
                Ok(dx)
            }
            TrainOp::PoolBackward(spec) => {
                let (x, dy) = (self.val(operands[0])?, self.val(operands[1])?);
                let (k, st, pad) = pool_2d(spec);
                let (hw, _) = lift(&x.shape, [1, 1]);
                let out = [
                    (hw[0] + 2 * pad[0] - k[0]) / st[0] + 1,
                    (hw[1] + 2 * pad[1] - k[1]) / st[1] + 1,
                ];
                let max = spec.kind == PoolKind::Max;
                let name = if max {
                    "maxpool_backward"
                } else {
                    "avgpool_backward"
                };
                let planes = x.shape[0] * x.shape[1];
                let dx = self.temp(x.shape.clone());
                let kern = bw::pool_backward(name, max, planes, hw, out, k, st, pad);
                self.emit(name, kern, vec![x.buf, dy.buf, dx.buf], &layer);
                Ok(dx)
            }
            TrainOp::GlobalAvgPoolBackward => {
                let (x, dy) = (self.val(operands[0])?, self.val(operands[1])?);
                let (outer, c, inner) = channel_layout(&x.shape);
                let dx = self.temp(x.shape.clone());
                let kern = bw::spread_mean("global_avg_pool_backward", outer * c, inner, v);
                self.emit(
                    "global_avg_pool_backward",
                    kern,
                    vec![dy.buf, dx.buf],
                    &layer,
                );
                Ok(dx)
            }
            TrainOp::BatchNormBackwardData { eps, affine } => {
                let (x, dy) = (self.val(operands[0])?, self.val(operands[1])?);
                let st = self.bn_sums(operands[0], operands[1], *eps, &layer)?;
                let (outer, c, inner) = channel_layout(&x.shape);
                let mut args = vec![x.buf, dy.buf, st];
                if *affine {
                    args.push(self.val(operands[2])?.buf);
                }
                let dx = self.temp(x.shape.clone());
                args.push(dx.buf);
                let kern = bn::bn_backward_data("bn_backward", outer, c, inner, *affine, v);
                self.emit("bn_backward", kern, args, &layer);
                Ok(dx)
            }
            TrainOp::BatchNormBackwardGamma { eps } => {
                let st = self.bn_sums(operands[0], operands[1], *eps, &layer)?;
                let c = self.val(operands[0])?.shape[1];
                let y = self.temp(vec![c]);
                // Σ dy·x̂ is the fourth of each channel's sums.
                let kern = ops::strided_take("bn_dgamma", c, 4, 3);
                self.emit("bn_dgamma", kern, vec![st, y.buf], &layer);
                Ok(y)
            }
            TrainOp::ReshapeLike => {
                let (dy, x) = (self.val(operands[0])?, self.val(operands[1])?);
                Ok(Val {
                    buf: dy.buf,
                    shape: x.shape,
                })
            }
            TrainOp::LastStepBackward => {
                let (x, dy) = (self.val(operands[0])?, self.val(operands[1])?);
                let (rows, t) = (x.shape[0] * x.shape[1], x.shape[2]);
                if t == 0 {
                    return Err(RunError::new(format!(
                        "`{layer}` (last_backward): the sequence is empty"
                    )));
                }
                let dx = self.temp(x.shape.clone());
                let kern = bw::last_backward("last_backward", rows, t);
                self.emit("last_backward", kern, vec![dy.buf, dx.buf], &layer);
                Ok(dx)
            }
            TrainOp::Slice { axis, start, len } => {
                let dy = self.val(operands[0])?;
                let outer: usize = dy.shape[..*axis].iter().product();
                let inner: usize = dy.shape[axis + 1..].iter().product();
                let mut shape = dy.shape.clone();
                shape[*axis] = *len as usize;
                let y = self.temp(shape);
                let kern = bw::take_block(
                    "slice",
                    outer,
                    *len as usize * inner,
                    dy.shape[*axis] * inner,
                    *start as usize * inner,
                );
                self.emit("slice", kern, vec![dy.buf, y.buf], &layer);
                Ok(y)
            }
            TrainOp::ShortcutABackward { stride } => {
                let (x, dy) = (self.val(operands[0])?, self.val(operands[1])?);
                let dx = self.temp(x.shape.clone());
                let (co, s) = (dy.shape[1], *stride as usize);
                self.shortcut(&x.shape, co, s, true, vec![dy.buf, dx.buf], &layer);
                Ok(dx)
            }
            TrainOp::DropoutMask { p } => {
                let x = self.val(operands[0])?;
                self.dropout(None, x.shape, *p, dropout::layer_of(&layer), &layer)
            }
            TrainOp::RunningStatUpdate { momentum, var } => {
                let r = self.val(operands[1 + usize::from(*var)])?;
                let y = self.running_stat(operands[0], r.buf, *momentum, *var, &layer)?;
                if self.graph.outputs.contains(&id) {
                    self.plan.updates.push((y.buf, r.buf));
                }
                Ok(y)
            }
            // The regularisers' penalties: small reductions over parameters
            // (`lower_regularizers`).
            TrainOp::OrthoPenalty { .. }
            | TrainOp::OrthoPenaltyBackward { .. }
            | TrainOp::AntialiasPenalty(_)
            | TrainOp::AntialiasPenaltyBackward { .. }
            | TrainOp::NormPenalty { .. }
            | TrainOp::NormPenaltyBackward { .. } => self.penalty(id, op),
        }
    }

    /// Whether batch statistics are combined over the ranks (SyncBatchNorm): a
    /// training plan lowered with `Target::sync_batch_stats`.
    fn synced(&self) -> bool {
        self.training && self.target.sync_batch_stats
    }

    /// The batch moments of `x` (`bn::batch_moments`), computed once per step for
    /// everything that reads them: the forward's scale and shift, the running
    /// statistics and the backward's sums.
    pub(super) fn moments(&mut self, x: NodeIndex, layer: &str) -> Result<BufId, RunError> {
        if let Some(&m) = self.moments.get(&x) {
            return Ok(m);
        }
        let xv = self.val(x)?;
        let (outer, c, inner) = channel_layout(&xv.shape);
        let sync = self.synced();
        let len = if sync {
            sync_stats::synced_moments_len(c)
        } else {
            2 * c
        };
        let m = self.temp(vec![len]).buf;
        if self.target.native == NativeConvs::Off {
            let kern = bn::batch_moments("bn_moments", outer, c, inner, self.target.vector);
            self.emit("bn_moments", kern, vec![xv.buf, m], layer);
        } else {
            let op = NativeOp::BatchMoments { outer, c, inner };
            self.emit_native(op, vec![xv.buf, m], layer);
        }
        if sync {
            // The global batch's moments replace this rank's before anything reads
            // them: the forward's scale and shift, the running statistics and the
            // backward's sums all see the global ones.
            let count = outer * inner;
            let op = NativeOp::SyncStats(SyncStats::Moments { c, count });
            self.emit_native(op, vec![m], layer);
        }
        self.moments.insert(x, m);
        Ok(m)
    }

    /// The input and epsilon of a batch norm whose data or γ gradient reads `dy` as its
    /// output gradient, so that its backward sums hold `Σ dy` per channel. Not when the
    /// sums combine every rank's (`synced`): a β gradient is this rank's own.
    fn batch_norm_reading(&self, dy: NodeIndex) -> Option<(NodeIndex, f64)> {
        if self.synced() {
            return None;
        }
        self.graph.users(dy).into_iter().find_map(|u| {
            let ops = self.graph.operands(u);
            match self.graph.node(u).op {
                Op::Train(
                    TrainOp::BatchNormBackwardData { eps, .. }
                    | TrainOp::BatchNormBackwardGamma { eps },
                ) if ops.get(1) == Some(&dy) => Some((ops[0], eps)),
                _ => None,
            }
        })
    }

    /// The per-channel sums of a batch norm's backward (`bn::bn_sums`) of `x` and
    /// `dy`, computed once for the data and the γ gradient (and β's: `Σ dy`).
    fn bn_sums(
        &mut self,
        x: NodeIndex,
        dy: NodeIndex,
        eps: f64,
        layer: &str,
    ) -> Result<BufId, RunError> {
        let key = (x, dy, eps.to_bits());
        if let Some(&st) = self.bn_sums.get(&key) {
            return Ok(st);
        }
        let m = self.moments(x, layer)?;
        let (xv, dyv) = (self.val(x)?, self.val(dy)?);
        let (outer, c, inner) = channel_layout(&xv.shape);
        let st = self.temp(vec![4 * c]).buf;
        let args = vec![xv.buf, dyv.buf, m, st];
        if self.target.native == NativeConvs::Off {
            let kern = bn::bn_sums("bn_sums", outer, c, inner, eps as f32, self.target.vector);
            self.emit("bn_sums", kern, args, layer);
        } else {
            let eps_bits = (eps as f32).to_bits();
            let op = NativeOp::BatchNormSums {
                outer,
                c,
                inner,
                eps_bits,
            };
            self.emit_native(op, args, layer);
        }
        if self.synced() {
            // Σ dy and Σ dy·x̂ over every rank's values, weighted so that the step's
            // gradients come out as the single process's (`runtime::sync_stats`).
            let op = NativeOp::SyncStats(SyncStats::BackwardSums { c });
            self.emit_native(op, vec![m, st], layer);
        }
        self.bn_sums.insert(key, st);
        Ok(st)
    }

    /// The running statistic `r` (the variance with `var`) updated by the batch
    /// moments of `x`.
    fn running_stat(
        &mut self,
        x: NodeIndex,
        r: BufId,
        momentum: f64,
        var: bool,
        layer: &str,
    ) -> Result<Val, RunError> {
        let m = self.moments(x, layer)?;
        let (outer, c, inner) = channel_layout(&self.val(x)?.shape);
        let y = self.temp(vec![c]);
        let name = if var {
            "running_var_update"
        } else {
            "running_mean_update"
        };
        let kern = if self.synced() {
            bn::running_stat_synced(name, c, momentum as f32, var)
        } else {
            bn::running_stat(name, c, outer * inner, momentum as f32, var)
        };
        self.emit(name, kern, vec![m, r, y.buf], layer);
        Ok(y)
    }

    /// A dropout mask shaped as `shape` (`x` none), or `x` times it, for the dropout
    /// layer `salt_of`, from the run's seed buffer.
    pub(super) fn dropout(
        &mut self,
        x: Option<&Val>,
        shape: Vec<usize>,
        p: f64,
        salt_of: &str,
        layer: &str,
    ) -> Result<Val, RunError> {
        let seed = match self.plan.seed {
            Some(s) => s,
            None => {
                let s = self.buffer(2, BufKind::Const(vec![0.0; 2]));
                self.plan.seed = Some(s);
                s
            }
        };
        let y = self.temp(shape);
        let n = y.shape.iter().product();
        let salt = dropout::salt(salt_of);
        let kern = bw::dropout("dropout", n, p, salt, x.is_some());
        let mut args: Vec<BufId> = x.iter().map(|x| x.buf).collect();
        args.extend([seed, y.buf]);
        self.emit("dropout", kern, args, layer);
        Ok(y)
    }

    /// Training mode for a forward `dropout` node: `x · mask`.
    pub(super) fn dropout_forward(&mut self, id: NodeIndex, p: f64) -> Result<Val, RunError> {
        let x = self.val(self.graph.operands(id)[0])?;
        if p == 0.0 {
            return Ok(x);
        }
        let layer = self.graph.node(id).name.clone();
        self.dropout(Some(&x), x.shape.clone(), p, &layer, &layer)
    }

    /// A model graph run in training mode updates its batch norms' running statistics
    /// itself (a training graph has `running_*_update` outputs for them instead).
    pub(super) fn bn_running_updates(&mut self, id: NodeIndex) -> Result<(), RunError> {
        let Op::BatchNorm {
            momentum,
            affine,
            running_stats: true,
            ..
        } = self.graph.node(id).op
        else {
            return Ok(());
        };
        let operands = self.graph.operands(id);
        let layer = self.graph.node(id).name.clone();
        let at = if affine { 3 } else { 1 };
        for var in [false, true] {
            let r = self.val(operands[at + usize::from(var)])?.buf;
            let y = self.running_stat(operands[0], r, momentum, var, &layer)?;
            self.plan.updates.push((y.buf, r));
        }
        Ok(())
    }

    /// A training plan's FFT conv: the kernel's spectrum computed on the device from
    /// the weight buffer in every step, the bias read from its buffer. `None` where
    /// the FFT does not apply (the caller convolves directly).
    pub(super) fn fft_conv_training(
        &mut self,
        chain: &super::fusion::Chain,
        spec: &crate::kernel_ir::conv::ConvSpec,
        x: &Val,
        operands: &[NodeIndex],
        bias: bool,
        layer: &str,
    ) -> Result<Option<Val>, RunError> {
        let Some(g) = crate::kernel_ir::fft_conv::FftConv::new(spec, self.target.vector) else {
            return Ok(None);
        };
        let w = self.val(operands[1])?;
        let kf = self.device_spectrum(&g, w.buf, false, layer);
        let b = if bias {
            self.device_bias(operands[2], g.co, layer)?
        } else {
            self.constant(vec![0.0; g.co])
        };
        let residual = match chain.residual {
            Some(r) => Some(self.val(r)?.buf),
            None => None,
        };
        Ok(Some(self.fft_conv_spectrum(&g, x, kf, b, residual, layer)))
    }

    /// `y + bias[c]` over `[B, C, …]`, the bias a parameter buffer.
    pub(super) fn add_channel_bias(
        &mut self,
        y: Val,
        bias: NodeIndex,
        layer: &str,
    ) -> Result<Val, RunError> {
        let b = self.val(bias)?;
        let (outer, c, inner) = channel_layout(&y.shape);
        let ones = self.constant(vec![1.0; c]);
        let out = self.temp(y.shape.clone());
        let k = ops::affine_channel("bias", (outer, c, inner), false, false, self.target.vector);
        self.emit("bias", k, vec![y.buf, ones, b.buf, out.buf], layer);
        Ok(out)
    }

    /// A conv bias as the conv kernel reads it: padded with zeros to `len`.
    pub(super) fn device_bias(
        &mut self,
        bias: NodeIndex,
        len: usize,
        layer: &str,
    ) -> Result<BufId, RunError> {
        let b = self.val(bias)?;
        let y = self.temp(vec![len]);
        let kern = bw::pad_vector("pad_bias", b.shape.iter().product(), len);
        self.emit("pad_bias", kern, vec![b.buf, y.buf], layer);
        Ok(y.buf)
    }
}
