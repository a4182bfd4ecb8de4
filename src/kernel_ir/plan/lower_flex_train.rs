//! FlexConv's kernel synthesis as computed values, for training graphs: the unfused
//! forward ops the backward recomputes (`magnet`, `gauss_mask`, `mask_mul`,
//! `mask_crop`) and the backward ops (`magnet_backward`, `gauss_mask_backward`,
//! `mask_mul_backward_mask`), all per-step launches over buffers, so a parameter
//! buffer rewritten by an optimiser is read by the next step.
//!
//! Only the grids are host constants: `coord_grid` is one, and `mask_crop` is decided
//! on the host from the mask parameters' values when the plan is built (the crop is a
//! constant of one step; a new crop needs a new plan). Everything of a point grid is
//! `[rows, N]` with `N` the cropped grid's points.
//!
//! A layer's `magnet_backward` ops (one per MAGNet parameter, all with the same
//! operands) share one lowering: the first emits the recomputation of MAGNet's
//! intermediates and every parameter's gradient, the others take their buffer.

use super::{unsupported, BufId, Builder, Val};
use crate::ir::op::Op;
use crate::kernel_ir::magnet::{gabor_layer, gauss_mask, magnet_output, MagnetSpec};
use crate::kernel_ir::magnet_backward as mb;
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;

impl Builder<'_> {
    /// A grid operand (`coord_grid` or `mask_crop`, host constants): its buffer, its
    /// axes `D` and its points `N`.
    fn flex_grid(&mut self, id: NodeIndex) -> Result<(BufId, usize, usize), RunError> {
        let shape = self.const_tensor(id)?.shape.clone();
        let d = shape[0];
        let n = shape[1..].iter().product();
        Ok((self.val(id)?.buf, d, n))
    }

    /// The vector width for `n` points: the target's where it divides `n`, so the
    /// vectorised synthesis kernels need no padding.
    fn flex_vector(&self, n: usize) -> u8 {
        let v = self.target.vector;
        if n.is_multiple_of(v as usize) {
            v
        } else {
            1
        }
    }

    fn flex_temp(&mut self, shape: Vec<usize>) -> BufId {
        self.temp(shape).buf
    }

    /// `mask_crop`, `magnet`, `gauss_mask` and `mask_mul` over computed values.
    pub(super) fn flex_forward(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let node = self.graph.node(id);
        let layer = node.name.clone();
        let operands = self.graph.operands(id);
        match &node.op {
            Op::MaskCrop { threshold, causal } => {
                let grid = self.const_tensor(operands[0])?.clone();
                let mask = self.const_tensor(operands[1])?.clone();
                let t = crate::runtime::interp::mask_crop(&grid, &mask, *threshold, *causal)?;
                let v = Val {
                    buf: self.constant(t.data.clone()),
                    shape: t.shape.clone(),
                };
                // Downstream ops read the cropped grid as a host constant too.
                self.consts.insert(id, t);
                Ok(v)
            }
            Op::Magnet {
                layers,
                out_channels,
                in_channels,
                ..
            } => {
                let (grid, dims, n) = self.flex_grid(operands[0])?;
                let net = operands[1..]
                    .iter()
                    .map(|&o| self.val(o))
                    .collect::<Result<Vec<Val>, _>>()?;
                let layers = *layers as usize;
                let hidden = net[0].shape[0];
                let rows = (*out_channels * *in_channels) as usize;
                if net.len() != 4 * (layers + 1) + 2 * layers + 2
                    || net[net.len() - 2].shape != [rows, hidden]
                {
                    return Err(unsupported(node, "a kernel net of these shapes"));
                }
                let spec = MagnetSpec {
                    dims,
                    hidden,
                    points: n,
                    rows,
                    vector: self.flex_vector(n),
                };
                let mut h = self.flex_temp(vec![hidden, n]);
                for l in 0..=layers {
                    let f = &net[4 * l..4 * l + 4];
                    let mut args = vec![grid, f[0].buf, f[1].buf, f[2].buf, f[3].buf];
                    if l > 0 {
                        let at = 4 * (layers + 1) + 2 * (l - 1);
                        args.extend([net[at].buf, net[at + 1].buf, h]);
                        h = self.flex_temp(vec![hidden, n]);
                    }
                    args.push(h);
                    self.emit("magnet_gabor", gabor_layer("", &spec, l == 0), args, &layer);
                }
                let mut shape = vec![*out_channels as usize, *in_channels as usize];
                shape.extend(&self.const_tensor(operands[0])?.shape[1..]);
                let y = self.temp(shape);
                let args = vec![h, net[net.len() - 2].buf, net[net.len() - 1].buf, y.buf];
                let k = magnet_output("", &spec, false, 1.0);
                self.emit("magnet_out", k, args, &layer);
                Ok(y)
            }
            Op::GaussMask => {
                let (grid, dims, n) = self.flex_grid(operands[0])?;
                let mp = self.val(operands[1])?;
                let spec = MagnetSpec {
                    dims,
                    hidden: 0,
                    points: n,
                    rows: 0,
                    vector: self.flex_vector(n),
                };
                let y = self.temp(self.const_tensor(operands[0])?.shape[1..].to_vec());
                let k = gauss_mask("", &spec, 1.0);
                self.emit("flex_mask", k, vec![grid, mp.buf, y.buf], &layer);
                Ok(y)
            }
            Op::MaskMul => {
                let (k, m) = (self.val(operands[0])?, self.val(operands[1])?);
                let n: usize = m.shape.iter().product();
                let rows = k.shape.iter().product::<usize>() / n.max(1);
                let y = self.temp(k.shape.clone());
                let kern = mb::mask_mul("", rows, n);
                self.emit("mask_mul", kern, vec![k.buf, m.buf, y.buf], &layer);
                Ok(y)
            }
            _ => Err(unsupported(node, "kernel synthesis from computed inputs")),
        }
    }

    /// `gauss_mask_backward` (grid, mask params, dm) → `[D, 2]`.
    pub(super) fn gauss_mask_backward(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let layer = self.graph.node(id).name.clone();
        let operands = self.graph.operands(id);
        let (grid, dims, n) = self.flex_grid(operands[0])?;
        let (mp, dm) = (self.val(operands[1])?, self.val(operands[2])?);
        let y = self.temp(vec![dims, 2]);
        let k = mb::gauss_mask_backward("", dims, n);
        self.emit(
            "gauss_mask_bwd",
            k,
            vec![grid, mp.buf, dm.buf, y.buf],
            &layer,
        );
        Ok(y)
    }

    /// `mask_mul_backward_mask` (dy, kernel) → the mask's shape `[k…]`.
    pub(super) fn mask_mul_backward_mask(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let layer = self.graph.node(id).name.clone();
        let operands = self.graph.operands(id);
        let (dy, k) = (self.val(operands[0])?, self.val(operands[1])?);
        let shape = k.shape[2..].to_vec();
        let n: usize = shape.iter().product();
        let y = self.temp(shape);
        let kern = mb::mask_mul_backward_mask("", k.shape[0] * k.shape[1], n);
        self.emit("mask_mul_bwd", kern, vec![dy.buf, k.buf, y.buf], &layer);
        Ok(y)
    }

    /// `magnet_backward { layers, slot }` (dy, grid, MAGNet parameters) → the
    /// gradient of parameter `slot`, from the layer's shared backward.
    pub(super) fn magnet_backward(
        &mut self,
        id: NodeIndex,
        layers: usize,
        slot: usize,
    ) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        if !self.magnet_grads.contains_key(&operands) {
            let grads = self.magnet_backward_all(id, layers)?;
            self.magnet_grads.insert(operands.clone(), grads);
        }
        let grads = &self.magnet_grads[&operands];
        grads.get(slot).cloned().ok_or_else(|| {
            RunError::new(format!(
                "internal error: `{}`: magnet_backward has no parameter {slot}",
                self.graph.node(id).name
            ))
        })
    }

    /// Every MAGNet parameter's gradient, in operand order (per filter `Wg, bg, γ, μ`;
    /// per hidden linear `U, c`; then `V, v`), as `reference::grad::magnet` computes
    /// them: the forward's intermediates recomputed once, then the reverse sweep.
    fn magnet_backward_all(&mut self, id: NodeIndex, layers: usize) -> Result<Vec<Val>, RunError> {
        let node = self.graph.node(id);
        let layer = node.name.clone();
        let operands = self.graph.operands(id);
        let dy = self.val(operands[0])?;
        let (grid, dims, n) = self.flex_grid(operands[1])?;
        let net = operands[2..]
            .iter()
            .map(|&o| self.val(o))
            .collect::<Result<Vec<Val>, _>>()?;
        if net.len() != 4 * (layers + 1) + 2 * layers + 2 {
            return Err(unsupported(node, "a kernel net of these shapes"));
        }
        let hidden = net[0].shape[0];
        let rows = dy.shape.iter().product::<usize>() / n.max(1);
        let hn = vec![hidden, n];
        // Forward: per filter S (= g_l), C; per hidden linear z_l and h_l.
        let (mut s, mut c, mut z, mut h) = (vec![], vec![], vec![], vec![]);
        for l in 0..=layers {
            let f: Vec<BufId> = net[4 * l..4 * l + 4].iter().map(|v| v.buf).collect();
            let (sl, cl) = (self.flex_temp(hn.clone()), self.flex_temp(hn.clone()));
            let mut args = vec![grid, f[0], f[1], f[2], f[3]];
            if l == 0 {
                args.extend([sl, cl]);
                h.push(sl);
            } else {
                let at = 4 * (layers + 1) + 2 * (l - 1);
                let (zl, hl) = (self.flex_temp(hn.clone()), self.flex_temp(hn.clone()));
                args.extend([net[at].buf, net[at + 1].buf, h[l - 1], sl, cl, zl, hl]);
                z.push(zl);
                h.push(hl);
            }
            s.push(sl);
            c.push(cl);
            let k = mb::gabor_parts("", dims, hidden, n, l == 0);
            self.emit("magnet_fwd", k, args, &layer);
        }
        // Reverse sweep.
        let out_w = &net[net.len() - 2];
        let dv = self.temp(out_w.shape.clone());
        let k = mb::outer("", rows, hidden, n, self.target.vector);
        self.emit("magnet_dw", k, vec![dy.buf, h[layers], dv.buf], &layer);
        let dvb = self.temp(net[net.len() - 1].shape.clone());
        self.emit(
            "magnet_db",
            mb::row_sums("", rows, n),
            vec![dy.buf, dvb.buf],
            &layer,
        );
        let mut dh = self.flex_temp(hn.clone());
        let k = mb::transpose_apply("", rows, hidden, n, self.target.vector);
        self.emit("magnet_dx", k, vec![out_w.buf, dy.buf, dh], &layer);
        let mut filter_grads = vec![Vec::new(); layers + 1];
        let mut hidden_grads = vec![Vec::new(); layers];
        for l in (0..=layers).rev() {
            let dg = if l == 0 {
                dh
            } else {
                let (dg, dz) = (self.flex_temp(hn.clone()), self.flex_temp(hn.clone()));
                let k = mb::split_product("", hidden * n);
                self.emit("magnet_split", k, vec![dh, z[l - 1], s[l], dg, dz], &layer);
                let at = 4 * (layers + 1) + 2 * (l - 1);
                let (u, cb) = (net[at].clone(), net[at + 1].clone());
                let du = self.temp(u.shape.clone());
                let k = mb::outer("", hidden, hidden, n, self.target.vector);
                self.emit("magnet_dw", k, vec![dz, h[l - 1], du.buf], &layer);
                let dc = self.temp(cb.shape.clone());
                let k = mb::row_sums("", hidden, n);
                self.emit("magnet_db", k, vec![dz, dc.buf], &layer);
                hidden_grads[l - 1] = vec![du, dc];
                dh = self.flex_temp(hn.clone());
                let k = mb::transpose_apply("", hidden, hidden, n, self.target.vector);
                self.emit("magnet_dx", k, vec![u.buf, dz, dh], &layer);
                dg
            };
            let f = &net[4 * l..4 * l + 4];
            let grads: Vec<Val> = f.iter().map(|v| self.temp(v.shape.clone())).collect();
            let mut args = vec![grid, f[2].buf, f[3].buf, dg, s[l], c[l]];
            args.extend(grads.iter().map(|g| g.buf));
            let k = mb::gabor_grads("", dims, hidden, n);
            self.emit("magnet_gabor_bwd", k, args, &layer);
            filter_grads[l] = grads;
        }
        let mut out: Vec<Val> = filter_grads.into_iter().flatten().collect();
        out.extend(hidden_grads.into_iter().flatten());
        out.extend([dv, dvb]);
        Ok(out)
    }
}
