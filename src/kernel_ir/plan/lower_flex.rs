//! FlexConv kernels synthesised on the device. A `flex_kernel` whose operands are
//! parameters (weights not bound at compile time, so `fuse-mask` could not fold it to
//! a constant) is not evaluated on the host: the plan uploads its parameters as
//! buffers and synthesises the kernel with `setup` launches (`kernel_ir::magnet`),
//! which run when the plan is loaded and again after a parameter is rewritten, never
//! per forward run. Only the crop is decided on the host, from the tiny mask
//! parameters: it fixes the kernel size the conv kernel is specialised to, so those
//! parameters are baked into the plan (a new mask needs a new plan).
//!
//! Everything downstream of such a kernel that is still parameter-only (a batch norm
//! folded into it by `fuse-epilogue`, the repacking into the conv's layout) also runs
//! in `setup`, into `Derived` buffers the conv reads.

use super::{unsupported, BufId, BufKind, Builder, Val};
use crate::ir::fold_ops::FoldOutput;
use crate::ir::graph::Graph;
use crate::ir::op::{ConvAlgo, Op};
use crate::kernel_ir::conv::{pack_weights, ConvSpec, ConvTile};
use crate::kernel_ir::magnet::{
    gabor_layer, gauss_mask, magnet_output, repack, scale_rows, MagnetSpec,
};
use crate::kernel_ir::Kernel;
use crate::reference::mask::{grid_from_axes, linspace};
use crate::runtime::flex_kernel::crop_axes;
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeSet;

/// Whether `id` is a `flex_kernel` the device synthesises: every operand is a
/// parameter or a constant, and no conv reading it runs by FFT (the FFT path takes the
/// kernel's spectrum from the host, so such kernels are evaluated there).
pub fn device_synthesised(graph: &Graph, id: NodeIndex) -> bool {
    matches!(graph.node(id).op, Op::FlexKernel { .. })
        && graph
            .operands(id)
            .iter()
            .all(|&o| matches!(graph.node(o).op, Op::Param { .. } | Op::Const { .. }))
        && !feeds_fft_conv(graph, id)
}

/// Whether a conv with `algo = fft` reads `id`, directly or through the weight folds
/// (`bn_fold`, `lc_fold`) between them.
fn feeds_fft_conv(graph: &Graph, id: NodeIndex) -> bool {
    graph
        .users(id)
        .into_iter()
        .any(|u| match &graph.node(u).op {
            Op::Conv(c) | Op::FusedConv { conv: c, .. } => c.algo == ConvAlgo::Fft,
            Op::BnFold { .. } | Op::LcFold => feeds_fft_conv(graph, u),
            _ => false,
        })
}

/// The parameter-only nodes left for the host: `constant` without the kernels the
/// device synthesises and everything computed from them.
pub(super) fn host_constants(
    graph: &Graph,
    order: &[NodeIndex],
    constant: BTreeSet<NodeIndex>,
) -> BTreeSet<NodeIndex> {
    let mut host = BTreeSet::new();
    for &id in order {
        if constant.contains(&id)
            && !device_synthesised(graph, id)
            && graph.operands(id).iter().all(|o| host.contains(o))
        {
            host.insert(id);
        }
    }
    host
}

impl Builder<'_> {
    fn derived(&mut self, shape: Vec<usize>) -> Val {
        let buf = self.buffer(shape.iter().product(), BufKind::Derived);
        Val { buf, shape }
    }

    /// Adds a launch to the plan's `setup`.
    fn emit_setup(&mut self, prefix: &str, kernel: Kernel, args: Vec<BufId>, layer: &str) {
        // A training plan's parameters change every step: so does what they derive.
        if self.training {
            return self.emit(prefix, kernel, args, layer);
        }
        self.emit(prefix, kernel, args, layer);
        let step = self.plan.steps.pop().expect("just emitted");
        self.plan.setup.push(step);
    }

    /// A `flex_kernel` synthesised on the device, as `[Cout, Cin, k…]`.
    pub(super) fn flex_kernel(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let node = self.graph.node(id);
        let Op::FlexKernel {
            layers,
            out_channels,
            in_channels,
            horizon,
            threshold,
            causal,
            scale,
            extent,
            ..
        } = &node.op
        else {
            unreachable!("called on flex_kernel nodes")
        };
        let layer = node.name.clone();
        let operands = self.graph.operands(id);
        let (mask, net) = match threshold {
            Some(_) => (Some(operands[0]), &operands[1..]),
            None => (None, &operands[..]),
        };
        let axes: Vec<Vec<f32>> = match (mask, threshold) {
            (Some(m), Some(t)) => crop_axes(horizon, Some((self.crop_value(m)?, *t)), *causal)
                .map_err(|e| RunError::new(format!("`{layer}`: {}", e.message)))?,
            _ => horizon
                .iter()
                .map(|&k| linspace(-1.0, 1.0, k as usize))
                .collect(),
        };
        let ks: Vec<usize> = axes.iter().map(Vec::len).collect();
        if let Some(e) = extent {
            if e.iter().map(|&k| k as usize).ne(ks.iter().copied()) {
                return Err(RunError::new(format!(
                    "`{layer}`: the mask parameters crop the kernel to {ks:?}, but it was compiled for {e:?}"
                ))
                .hint("recompile with these weights"));
            }
        }
        let grid = grid_from_axes(&axes);
        let (layers, hidden) = (*layers as usize, self.const_shape(net[0])?[0]);
        let rows = (*out_channels * *in_channels) as usize;
        let spec = MagnetSpec {
            dims: axes.len(),
            hidden,
            points: ks.iter().product(),
            rows,
            vector: self.target.vector,
        };
        if net.len() != 4 * (layers + 1) + 2 * layers + 2
            || self.const_shape(net[net.len() - 2])? != [rows, hidden]
        {
            return Err(unsupported(node, "a kernel net of these shapes"));
        }
        let np = spec.padded();
        let mut padded = vec![0.0; spec.dims * np];
        for (d, row) in grid.data.chunks(spec.points.max(1)).enumerate() {
            padded[d * np..d * np + row.len()].copy_from_slice(row);
        }
        let grid_buf = self.constant(padded);
        let bufs = net
            .iter()
            .map(|&o| self.val(o).map(|v| v.buf))
            .collect::<Result<Vec<BufId>, _>>()?;
        let mut h = self.derived(vec![hidden, np]).buf;
        for l in 0..=layers {
            let f = &bufs[4 * l..4 * l + 4];
            let mut args = vec![grid_buf, f[0], f[1], f[2], f[3]];
            if l > 0 {
                let at = 4 * (layers + 1) + 2 * (l - 1);
                args.extend([bufs[at], bufs[at + 1], h]);
                h = self.derived(vec![hidden, np]).buf;
            }
            args.push(h);
            self.emit_setup("magnet_gabor", gabor_layer("", &spec, l == 0), args, &layer);
        }
        let scale = *scale as f32;
        let mut args = vec![h, bufs[bufs.len() - 2], bufs[bufs.len() - 1]];
        if let Some(m) = mask {
            let mp = self.val(m)?.buf;
            // The crop was decided from these values: they are part of the plan now.
            // A training plan keeps them a buffer the trainer writes: the mask is
            // computed from it, and the backend re-plans when the crop changes.
            if !self.training {
                let name = &self.graph.node(m).name;
                self.plan.params.retain(|k, _| k != name);
            }
            let mb = self.derived(vec![np]).buf;
            self.emit_setup(
                "flex_mask",
                gauss_mask("", &spec, scale),
                vec![grid_buf, mp, mb],
                &layer,
            );
            args.push(mb);
        }
        let mut shape = vec![*out_channels as usize, *in_channels as usize];
        shape.extend(&ks);
        let y = self.derived(shape);
        args.push(y.buf);
        let k = magnet_output("", &spec, mask.is_some(), scale);
        self.emit_setup("magnet_out", k, args, &layer);
        Ok(y)
    }

    /// The shape of a host-known operand: a constant, or (in a training plan) a
    /// parameter's value when the plan is built, whose shape every step keeps.
    fn const_shape(&self, id: NodeIndex) -> Result<Vec<usize>, RunError> {
        Ok(self.crop_value(id)?.shape.clone())
    }

    /// A batch norm folded into a synthesised weight: `w[o, …]·γ_o/√(var_o + eps)`,
    /// the scale computed on the host from the statistics, as the interpreter does.
    pub(super) fn bn_fold_weight(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let node = self.graph.node(id);
        let Op::BnFold {
            eps,
            affine,
            output: FoldOutput::Weight,
        } = node.op
        else {
            return Err(unsupported(node, "a bias fold over computed values"));
        };
        let layer = node.name.clone();
        let operands = self.graph.operands(id);
        let w = self.val(operands[0])?;
        let var = self
            .const_tensor(operands[operands.len() - 1])?
            .data
            .clone();
        let gamma = if affine {
            Some(self.const_tensor(operands[1])?.data.clone())
        } else {
            None
        };
        let e = eps as f32;
        let s: Vec<f32> = var
            .iter()
            .enumerate()
            .map(|(c, &v)| {
                let inv = 1.0 / (v + e).sqrt();
                gamma.as_ref().map_or(inv, |g| g[c] * inv)
            })
            .collect();
        let rows = w.shape[0];
        let inner = w.shape[1..].iter().product();
        let sb = self.constant(s);
        let y = self.derived(w.shape.clone());
        self.emit_setup(
            "bn_fold",
            scale_rows("", rows, inner),
            vec![w.buf, sb, y.buf],
            &layer,
        );
        Ok(y)
    }

    /// The shape of a conv weight, constant or synthesised.
    pub(super) fn weight_shape(&self, id: NodeIndex) -> Result<Vec<usize>, RunError> {
        match self.values.get(&id) {
            Some(v) => Ok(v.shape.clone()),
            None => self.const_shape(id),
        }
    }

    /// The conv's packed weights and padded bias: packed on the host for a constant
    /// weight, by a `setup` launch for a synthesised one.
    pub(super) fn conv_weights(
        &mut self,
        id: NodeIndex,
        bias: &[f32],
        scale: &[f32],
        spec: &ConvSpec,
        tile: ConvTile,
        layer: &str,
    ) -> Result<(BufId, BufId), RunError> {
        let t = tile.tile_co;
        let mut b = vec![0.0; spec.co.div_ceil(t) * t];
        b[..spec.co].copy_from_slice(&bias[..spec.co]);
        let Some(w) = self.values.get(&id).cloned() else {
            let w = self.const_tensor(id)?;
            let (packed, b) = pack_weights(&w.data, bias, scale, spec, tile);
            return Ok((self.constant(packed), self.constant(b)));
        };
        let taps = spec.k[0] * spec.k[1];
        let sb = self.constant(scale.to_vec());
        let k = repack("", spec.co, spec.ci, taps, t);
        // A weight computed in every run (a parameter buffer, an LC fold in training)
        // is repacked in every run; one synthesised in `setup` is repacked there.
        if self.plan.buffers[w.buf].kind != BufKind::Derived {
            let packed = self.temp(vec![b.len() * spec.ci * taps]).buf;
            self.emit("repack", k, vec![w.buf, sb, packed], layer);
            return Ok((packed, self.constant(b)));
        }
        let packed = self.derived(vec![b.len() * spec.ci * taps]).buf;
        self.emit_setup("repack", k, vec![w.buf, sb, packed], layer);
        Ok((packed, self.constant(b)))
    }
}
