//! Lowering of the regularisers' penalty ops (`ortho_penalty`, `antialias_penalty`,
//! `norm_penalty` and their `…_backward` per operand), kernels in
//! `kernel_ir::regularizer_kernels`. They read parameter buffers (or a generated
//! kernel computed in the same step), so every launch runs in every step and sees what
//! the trainer last wrote.
//!
//! A penalty's value and each of its gradients are separate nodes over the same
//! operands. What they share is computed once per step by whichever of them is lowered
//! first and kept in `Builder::penalties`, by the penalty's kind and operands:
//! - orthogonality: the stage's filters stacked as the rows of one buffer `B`, the
//!   Gram matrix `B Bᵀ` (`gemm::matmul` over a transposed copy), the masked
//!   `E = M ⊙ (B Bᵀ − I)` and `2·scale·(E + Eᵀ)`; the value is
//!   `scale·Σ E²`; the gradient of every row, `2·scale·(E + Eᵀ)·B`, is one matrix
//!   product (`gemm::matmul`), and each operand's gradient is a block of its rows;
//! - anti-aliasing: one launch computes the value and every gradient (a layer's
//!   MAGNet has a handful of small filters);
//! - norm: `‖x‖` (partial sums of squares, then their sum), read by the value and the
//!   gradient.

use super::{BufId, Builder, Val};
use crate::ir::op::TrainOp;
use crate::kernel_ir::gemm::matmul;
use crate::kernel_ir::{backward_ops as bw, ops, regularizer_kernels as rk};
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;

/// The most work-items that sum a norm's squares: enough to spread a large generated
/// kernel, few enough for the one work-item that adds up their partial sums.
const NORM_PARTS: usize = 256;

impl Builder<'_> {
    /// A regulariser's value or the gradient to one operand (`lower_train` sends every
    /// penalty op here).
    pub(super) fn penalty(&mut self, id: NodeIndex, op: &TrainOp) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let layer = self.graph.node(id).name.clone();
        match op {
            TrainOp::OrthoPenalty { shared, scale, .. } => {
                let [_, e, _] = self.ortho_gram(id, *shared, *scale)?;
                let y = self.temp(vec![1]);
                let kern = rk::sum_of_squares_scaled("", e.shape.iter().product(), *scale as f32);
                self.emit("ortho_value", kern, vec![e.buf, y.buf], &layer);
                Ok(y)
            }
            TrainOp::OrthoPenaltyBackward {
                shared,
                scale,
                slot,
                ..
            } => {
                let grad = self.ortho_grad(id, *shared, *scale)?;
                let len = grad.shape[1];
                let rows_before = operands[..*slot]
                    .iter()
                    .map(|&o| self.val(o).map(|v| v.shape[0]))
                    .sum::<Result<usize, _>>()?;
                let x = self.val(operands[*slot])?;
                let chunk = x.shape.iter().product();
                let y = self.temp(x.shape.clone());
                let total = grad.shape.iter().product();
                let kern = bw::take_block("", 1, chunk, total, rows_before * len);
                self.emit("ortho_grad_rows", kern, vec![grad.buf, y.buf], &layer);
                Ok(y)
            }
            TrainOp::AntialiasPenalty(_) => Ok(self.antialias_all(id, op)?[0].clone()),
            TrainOp::AntialiasPenaltyBackward { slot, .. } => {
                let all = self.antialias_all(id, op)?;
                all.get(1 + slot).cloned().ok_or_else(|| {
                    RunError::new(format!(
                        "internal error: `{layer}`: antialias_penalty has no operand {slot}"
                    ))
                })
            }
            TrainOp::NormPenalty { weight } => Ok(self.norm(id, *weight)?.1),
            TrainOp::NormPenaltyBackward { weight } => {
                let (nrm, _) = self.norm(id, *weight)?;
                let x = self.val(operands[0])?;
                let y = self.temp(x.shape.clone());
                let kern = rk::norm_grad("", x.shape.iter().product(), *weight as f32);
                self.emit("norm_grad", kern, vec![x.buf, nrm, y.buf], &layer);
                Ok(y)
            }
            _ => Err(RunError::new(format!(
                "internal error: `{layer}` ({}) is not a regulariser",
                op.name()
            ))),
        }
    }

    /// The stacked filters `B` `[N, len]`, the masked Gram matrix `E` `[N, N]` and
    /// `2·scale·(E + Eᵀ)` of an orthogonality penalty's operands (shared tensors first,
    /// then one unique tensor per conv), computed on the first call for these
    /// operands.
    fn ortho_gram(
        &mut self,
        id: NodeIndex,
        shared: usize,
        scale: f64,
    ) -> Result<[Val; 3], RunError> {
        let operands = self.graph.operands(id);
        let key = ("ortho", operands.clone());
        if let Some(v) = self.penalties.get(&key) {
            return Ok([v[0].clone(), v[1].clone(), v[2].clone()]);
        }
        let layer = self.graph.node(id).name.clone();
        let parts = operands
            .iter()
            .map(|&o| self.val(o))
            .collect::<Result<Vec<Val>, _>>()?;
        let len: usize = parts[0].shape[1..].iter().product();
        let n: usize = parts.iter().map(|p| p.shape[0]).sum();
        let b = self.temp(vec![n, len]);
        // Each row's conv, for the mask: shared rows −1, unique part k's rows k.
        let mut blk = Vec::with_capacity(n);
        let mut offset = 0;
        for (k, part) in parts.iter().enumerate() {
            let chunk: usize = part.shape.iter().product();
            let kern = ops::copy_block("", 1, chunk, n * len, offset);
            self.emit("ortho_stack", kern, vec![part.buf, b.buf], &layer);
            offset += chunk;
            let conv = if k < shared { -1.0 } else { k as f32 };
            blk.extend(std::iter::repeat_n(conv, part.shape[0]));
        }
        let s: usize = parts[..shared].iter().map(|p| p.shape[0]).sum();
        let blk = self.constant(blk);
        // B Bᵀ as a product over Bᵀ's contiguous rows (vector loads), then the mask.
        let bt = self.temp(vec![len, n]);
        self.emit(
            "ortho_transpose",
            rk::transpose("", n, len),
            vec![b.buf, bt.buf],
            &layer,
        );
        let g = self.temp(vec![n, n]);
        let kern = matmul("", n, n, len, (len, 1), (n, 1), self.target.vector);
        self.emit("ortho_gram", kern, vec![b.buf, bt.buf, g.buf], &layer);
        let (e, sym) = (self.temp(vec![n, n]), self.temp(vec![n, n]));
        let kern = rk::ortho_mask("", n, s, (2.0 * scale) as f32);
        self.emit("ortho_mask", kern, vec![g.buf, blk, e.buf, sym.buf], &layer);
        let all = [b, e, sym];
        self.penalties.insert(key, all.to_vec());
        Ok(all)
    }

    /// The orthogonality gradient of every row of `B`, `2·scale·(E + Eᵀ)·B` `[N, len]`:
    /// one matrix product per stage, of which each operand's gradient is a block of
    /// rows.
    fn ortho_grad(&mut self, id: NodeIndex, shared: usize, scale: f64) -> Result<Val, RunError> {
        let key = ("ortho_grad", self.graph.operands(id));
        if let Some(v) = self.penalties.get(&key) {
            return Ok(v[0].clone());
        }
        let [b, _, sym] = self.ortho_gram(id, shared, scale)?;
        let (n, len) = (b.shape[0], b.shape[1]);
        let y = self.temp(vec![n, len]);
        let kern = matmul("", n, len, n, (n, 1), (len, 1), self.target.vector);
        let layer = self.graph.node(id).name.clone();
        self.emit("ortho_grad", kern, vec![sym.buf, b.buf, y.buf], &layer);
        self.penalties.insert(key, vec![y.clone()]);
        Ok(y)
    }

    /// An anti-aliasing penalty's value and every operand's gradient, from one launch
    /// on the first call for these operands.
    fn antialias_all(&mut self, id: NodeIndex, op: &TrainOp) -> Result<Vec<Val>, RunError> {
        let operands = self.graph.operands(id);
        let key = ("antialias", operands.clone());
        if let Some(v) = self.penalties.get(&key) {
            return Ok(v.clone());
        }
        let (TrainOp::AntialiasPenalty(at) | TrainOp::AntialiasPenaltyBackward { attrs: at, .. }) =
            op
        else {
            return Err(RunError::new(
                "internal error: not an anti-aliasing penalty",
            ));
        };
        let layer = self.graph.node(id).name.clone();
        let parts = operands
            .iter()
            .map(|&o| self.val(o))
            .collect::<Result<Vec<Val>, _>>()?;
        let mask_axes = at.mask.then(|| parts[2 * at.filters].shape[0]);
        let spec = rk::Antialias {
            sizes: (0..at.filters)
                .map(|l| parts[2 * l].shape.iter().product())
                .collect(),
            mask_axes,
            stddevs: at.stddevs as f32,
            nyquist: at.nyquist as f32,
            weight: at.weight as f32,
        };
        let value = self.temp(vec![1]);
        let grads: Vec<Val> = parts.iter().map(|p| self.temp(p.shape.clone())).collect();
        let mut args: Vec<BufId> = parts.iter().map(|p| p.buf).collect();
        args.push(value.buf);
        args.extend(grads.iter().map(|g| g.buf));
        self.emit("antialias", rk::antialias("", &spec), args, &layer);
        let mut all = vec![value];
        all.extend(grads);
        self.penalties.insert(key, all.clone());
        Ok(all)
    }

    /// `‖x‖₂` of a norm penalty's operand as a `[1]` buffer, and the penalty's value
    /// `weight·‖x‖₂`, computed on the first call for this operand.
    fn norm(&mut self, id: NodeIndex, weight: f64) -> Result<(BufId, Val), RunError> {
        let operands = self.graph.operands(id);
        let key = ("norm", operands.clone());
        if let Some(v) = self.penalties.get(&key) {
            return Ok((v[0].buf, v[1].clone()));
        }
        let layer = self.graph.node(id).name.clone();
        let x = self.val(operands[0])?;
        let n: usize = x.shape.iter().product();
        let parts = n.clamp(1, NORM_PARTS);
        let partial = self.temp(vec![parts]);
        let kern = rk::partial_squares("", n, parts);
        self.emit("norm_squares", kern, vec![x.buf, partial.buf], &layer);
        let (nrm, value) = (self.temp(vec![1]), self.temp(vec![1]));
        let kern = rk::norm_finish("", parts, weight as f32);
        self.emit(
            "norm_finish",
            kern,
            vec![partial.buf, nrm.buf, value.buf],
            &layer,
        );
        self.penalties.insert(key, vec![nrm.clone(), value.clone()]);
        Ok((nrm.buf, value))
    }
}
