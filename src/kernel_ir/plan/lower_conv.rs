//! Lowering of the layers with the most arithmetic: pools, and convs with their fused
//! batch norm, residual add and ReLU (a `conv` chain or a `fused_conv`).

use super::fusion::Chain;
use super::{BufId, Builder, Val};
use crate::ir::fold_ops::Epilogue;
use crate::ir::op::{ConvAlgo, ConvAttrs, Op, Padding, PoolKind, PoolSpec};
use crate::kernel_ir::backward_ops as bw;
use crate::kernel_ir::conv::{conv_kernel, pad_kernel, phase_kernel, ConvSpec};
use crate::kernel_ir::native::{self, ConvGeometry, NativeConvs, NativeEpilogue, NativeOp};
use crate::kernel_ir::ops::{self, MapKind};
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;

impl Builder<'_> {
    pub(super) fn pool(
        &mut self,
        input: NodeIndex,
        spec: &PoolSpec,
        layer: &str,
    ) -> Result<Val, RunError> {
        let x = self.val(input)?;
        let two = |v: &[u64]| {
            if v.len() == 1 {
                [1, v[0] as usize]
            } else {
                [v[0] as usize, v[1] as usize]
            }
        };
        let (k, st) = (two(&spec.kernel), two(&spec.stride));
        let pad = if spec.padding.len() == 1 {
            [0, spec.padding[0] as usize]
        } else {
            two(&spec.padding)
        };
        let (hw, _) = lift(&x.shape, [1, 1]);
        let out = [
            (hw[0] + 2 * pad[0] - k[0]) / st[0] + 1,
            (hw[1] + 2 * pad[1] - k[1]) / st[1] + 1,
        ];
        let mut shape = x.shape[..2].to_vec();
        shape.extend(if x.shape.len() == 3 {
            vec![out[1]]
        } else {
            out.to_vec()
        });
        let planes = x.shape[0] * x.shape[1];
        let y = self.temp(shape);
        let max = spec.kind == PoolKind::Max;
        let name = if max { "maxpool" } else { "avgpool" };
        if self.target.native == NativeConvs::Off {
            let kern = ops::pool(name, max, planes, hw, out, k, st, pad);
            self.emit(name, kern, vec![x.buf, y.buf], layer);
        } else {
            let g = native::PoolGeometry {
                planes,
                hw,
                out,
                k,
                stride: st,
                pad,
                max,
            };
            self.emit_native(NativeOp::Pool(g), vec![x.buf, y.buf], layer);
        }
        Ok(y)
    }

    /// ResNet's option-A shortcut of an input shaped `x` (`[n, ci, (h,) w]`) to `co`
    /// channels at `stride`, from `args[0]` into `args[1]`; or its backward
    /// (`backward`: from `dy` into `dx`). A native step where the target allows them,
    /// else the generated kernel.
    pub(super) fn shortcut(
        &mut self,
        x: &[usize],
        co: usize,
        stride: usize,
        backward: bool,
        args: Vec<BufId>,
        layer: &str,
    ) {
        let (hw, st) = lift(x, [stride, stride]);
        let out = [hw[0].div_ceil(st[0]), hw[1].div_ceil(st[1])];
        let (n, ci) = (x[0], x[1]);
        let pad = (co - ci) / 2;
        if self.target.native != NativeConvs::Off {
            let g = native::ShortcutGeometry {
                n,
                ci,
                hw,
                co,
                out,
                stride: st,
                pad,
                backward,
            };
            self.emit_native(NativeOp::Shortcut(g), args, layer);
        } else if backward {
            let k = bw::shortcut_a_backward("shortcut_backward", n, ci, hw, co, out, st, pad);
            self.emit("shortcut_backward", k, args, layer);
        } else {
            let k = ops::shortcut_a("shortcut", n, ci, hw, co, out, st, pad);
            self.emit("shortcut", k, args, layer);
        }
    }

    /// Per-channel (scale, shift) of a batch norm in evaluation mode.
    pub(super) fn bn_fold(
        &self,
        operands: &[NodeIndex],
        eps: f64,
        affine: bool,
    ) -> Result<(Vec<f32>, Vec<f32>), RunError> {
        let at = if affine { 3 } else { 1 };
        let mean = &self.const_tensor(operands[at])?.data;
        let var = &self.const_tensor(operands[at + 1])?.data;
        let c = mean.len();
        let (gamma, beta) = if affine {
            (
                self.const_tensor(operands[1])?.data.clone(),
                self.const_tensor(operands[2])?.data.clone(),
            )
        } else {
            (vec![1.0; c], vec![0.0; c])
        };
        let mut s = Vec::with_capacity(c);
        let mut t = Vec::with_capacity(c);
        for i in 0..c {
            let si = gamma[i] as f64 / (var[i] as f64 + eps).sqrt();
            s.push(si as f32);
            t.push((beta[i] as f64 - mean[i] as f64 * si) as f32);
        }
        Ok((s, t))
    }

    /// A conv with its fused batch norm, residual add and ReLU.
    pub(super) fn conv(&mut self, chain: &Chain) -> Result<Val, RunError> {
        let node = self.graph.node(chain.conv);
        let Some(ConvAttrs {
            stride,
            padding,
            dilation,
            groups,
            bias,
            algo,
        }) = node.op.conv_attrs()
        else {
            unreachable!("chains start at convs")
        };
        let operands = self.graph.operands(chain.conv);
        let x = self.val(operands[0])?;
        if self.training {
            // The weight is a device buffer that `conv_weights` repacks every step.
            let w = self.val(operands[1])?;
            self.values.entry(operands[1]).or_insert(w);
        }
        let w_shape = self.weight_shape(operands[1])?;
        let co = w_shape[0];
        let mut b = if *bias && !self.training {
            self.const_tensor(operands[2])?.data.clone()
        } else {
            vec![0.0; co]
        };
        let mut scale = vec![1.0; co];
        if let Some(bn) = chain.bn {
            let Op::BatchNorm { eps, affine, .. } = self.graph.node(bn).op else {
                unreachable!("the chain's bn is a batch norm")
            };
            let (s, t) = self.bn_fold(&self.graph.operands(bn), eps, affine)?;
            for i in 0..co {
                b[i] = b[i] * s[i] + t[i];
            }
            scale = s;
        }
        let one_d = x.shape.len() == 3;
        let k = if one_d {
            [1, w_shape[2]]
        } else {
            [w_shape[2], w_shape[3]]
        };
        let us = |v: &[u64]| -> [usize; 2] {
            if one_d {
                [1, v[0] as usize]
            } else {
                [v[0] as usize, v[1] as usize]
            }
        };
        let (st, dil) = (us(stride), us(dilation));
        let resolve = |i: usize| -> (usize, usize) {
            let total = dil[i] * (k[i] - 1);
            match padding {
                Padding::Explicit(p) if one_d => {
                    if i == 0 {
                        (0, 0)
                    } else {
                        (p[0].0 as usize, p[0].1 as usize)
                    }
                }
                Padding::Explicit(p) => (p[i].0 as usize, p[i].1 as usize),
                Padding::Same => (total / 2, total - total / 2),
                Padding::Causal => (total, 0),
            }
        };
        let (hw, _) = lift(&x.shape, [1, 1]);
        let spec = ConvSpec {
            n: x.shape[0],
            ci: x.shape[1],
            h: hw[0],
            w: hw[1],
            co,
            k,
            stride: st,
            dilation: dil,
            pad: [resolve(0), resolve(1)],
            residual: chain.residual.is_some(),
            relu: chain.relu,
        };
        let tile = self.target.conv_tile(spec.out()[1]);
        let layer = node.name.clone();
        let fft = *algo == ConvAlgo::Fft && self.target.native == NativeConvs::Auto;
        if !fft {
            let native = NativeConvInput {
                chain,
                spec: &spec,
                groups: *groups as usize,
                x: &x,
                operands: &operands,
                bias: *bias,
                b: &b,
                scale: &scale,
                algo: *algo,
            };
            if let Some(y) = self.native_conv(native, &layer)? {
                return Ok(y);
            }
        }
        if *groups != 1 {
            let g = *groups as usize;
            let y = self.grouped_conv(chain, &spec, g, &x, operands[1], &b, &scale, &layer)?;
            if self.training && *bias {
                // The bias is a buffer: added after the kernel (a training chain
                // absorbs no ReLU, so the order does not matter).
                return self.add_channel_bias(y, operands[2], &layer);
            }
            return Ok(y);
        }
        if *algo == ConvAlgo::Fft && self.training {
            if let Some(y) = self.fft_conv_training(chain, &spec, &x, &operands, *bias, &layer)? {
                return Ok(y);
            }
        }
        if *algo == ConvAlgo::Fft && !self.training {
            if let Some(y) = self.fft_conv(chain, &spec, &x, operands[1], &b, &scale, &layer)? {
                return Ok(y);
            }
        }
        let input = if spec.strided() {
            self.phased_input(x.buf, &spec, spec.phase_plane(Some(tile)), &layer)
        } else if spec.needs_pad(tile) {
            let [hp, wp] = spec.padded(tile);
            let padded = self.temp(vec![spec.n * spec.ci * hp * wp]);
            let k = pad_kernel(
                "pad",
                spec.n * spec.ci,
                spec.h,
                spec.w,
                hp,
                wp,
                spec.pad[0].0,
                spec.pad[1].0,
            );
            self.emit("pad", k, vec![x.buf, padded.buf], &layer);
            padded.buf
        } else {
            x.buf
        };
        let (wb, mut bb) = self.conv_weights(operands[1], &b, &scale, &spec, tile, &layer)?;
        if self.training && *bias {
            bb = self.device_bias(
                operands[2],
                co.div_ceil(tile.tile_co) * tile.tile_co,
                &layer,
            )?;
        }
        let [oh, ow] = spec.out();
        let shape = if one_d {
            vec![spec.n, co, ow]
        } else {
            vec![spec.n, co, oh, ow]
        };
        let y = self.temp(shape);
        let mut args = vec![input, wb, bb];
        if let Some(r) = chain.residual {
            args.push(self.val(r)?.buf);
        }
        args.push(y.buf);
        self.emit("conv", conv_kernel("conv", &spec, tile), args, &layer);
        Ok(y)
    }
}

/// What [`Builder::native_conv`] needs of the conv [`Builder::conv`] lowers.
struct NativeConvInput<'a> {
    chain: &'a Chain,
    spec: &'a ConvSpec,
    groups: usize,
    x: &'a Val,
    operands: &'a [NodeIndex],
    /// Whether the conv has a bias operand.
    bias: bool,
    /// The bias with a folded batch norm's shift (evaluation plans).
    b: &'a [f32],
    /// A folded batch norm's scale (evaluation plans; ones otherwise).
    scale: &'a [f32],
    /// The conv's `algo` attribute.
    algo: ConvAlgo,
}

impl Builder<'_> {
    /// The conv as a native step (`kernel_ir::native`), when the target allows one and
    /// picks a routine for it; `None` leaves it to the generated kernel.
    ///
    /// An evaluation plan's constant weight is scaled by the folded batch norm on the
    /// host, into a constant of the step's own (so a Winograd filter can be transformed
    /// once, when the plan is loaded); a weight computed at run time (a parameter
    /// buffer in training, a synthesised FlexConv kernel) is read as it is, so a conv
    /// with a batch norm to fold into such a weight stays direct.
    fn native_conv(
        &mut self,
        c: NativeConvInput<'_>,
        layer: &str,
    ) -> Result<Option<Val>, RunError> {
        let spec = c.spec;
        let geometry = ConvGeometry {
            n: spec.n,
            ci: spec.ci,
            h: spec.h,
            w: spec.w,
            co: spec.co,
            kh: spec.k[0],
            kw: spec.k[1],
            stride: (spec.stride[0], spec.stride[1]),
            pad: (spec.pad[0].0, spec.pad[1].0),
            dilation: (spec.dilation[0], spec.dilation[1]),
            groups: c.groups,
        };
        let symmetric = spec.pad.iter().all(|&(lo, hi)| lo == hi);
        let algo = native::choose(self.target.native, &geometry, symmetric, c.algo);
        if algo == native::JitConv::Generated {
            return Ok(None);
        }
        let w_id = c.operands[1];
        let computed = self.training || self.values.contains_key(&w_id);
        let w = if computed {
            if c.scale.iter().any(|&s| s != 1.0) {
                return Ok(None);
            }
            self.val(w_id)?.buf
        } else {
            let w = self.const_tensor(w_id)?;
            let per_co = w.data.len() / spec.co.max(1);
            let scaled: Vec<f32> = w
                .data
                .chunks(per_co.max(1))
                .zip(c.scale)
                .flat_map(|(row, &s)| row.iter().map(move |&v| v * s))
                .collect();
            self.constant(scaled)
        };
        let mut args = vec![c.x.buf, w];
        let has_bias = if self.training {
            if c.bias {
                args.push(self.val(c.operands[2])?.buf);
            }
            c.bias
        } else {
            let any = c.bias || c.chain.bn.is_some();
            if any {
                let b = self.constant(c.b[..spec.co].to_vec());
                args.push(b);
            }
            any
        };
        if let Some(r) = c.chain.residual {
            args.push(self.val(r)?.buf);
        }
        let [oh, ow] = spec.out();
        let shape = if c.x.shape.len() == 3 {
            vec![spec.n, spec.co, ow]
        } else {
            vec![spec.n, spec.co, oh, ow]
        };
        let y = self.temp(shape);
        args.push(y.buf);
        let op = NativeOp::Conv2d {
            geometry,
            algo,
            epilogue: NativeEpilogue {
                bias: has_bias,
                residual: c.chain.residual.is_some(),
                relu: c.chain.relu,
            },
        };
        self.emit_native(op, args, layer);
        Ok(Some(y))
    }
}

impl Builder<'_> {
    /// A `fused_conv` whose epilogue the conv kernel cannot compute in one go (such as
    /// `[relu, add, relu]`): the kernel computes the longest prefix it can, elementwise
    /// launches the rest.
    pub(super) fn fused_conv_split(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let node = self.graph.node(id);
        let Op::FusedConv { conv, epilogue } = &node.op else {
            unreachable!("called on fused convs")
        };
        let operands = self.graph.operands(id);
        let mut next = 2 + usize::from(conv.bias);
        let (take, residual, relu) = match epilogue.as_slice() {
            [Epilogue::AddResidual, Epilogue::Relu, ..] => (2, true, true),
            [Epilogue::AddResidual, ..] => (1, true, false),
            [Epilogue::Relu, ..] => (1, false, true),
            [] => (0, false, false),
        };
        let chain = Chain {
            conv: id,
            bn: None,
            residual: residual.then(|| operands[next]),
            relu,
            nodes: vec![id],
            tail: id,
        };
        next += usize::from(residual);
        let mut y = self.conv(&chain)?;
        let mut rest = &epilogue[take..];
        while !rest.is_empty() {
            let mut args = vec![y.buf];
            let kind = match rest {
                [Epilogue::AddResidual, Epilogue::Relu, ..] | [Epilogue::AddResidual, ..] => {
                    args.push(self.val(operands[next])?.buf);
                    next += 1;
                    let relu = rest.get(1) == Some(&Epilogue::Relu);
                    rest = &rest[1 + usize::from(relu)..];
                    MapKind::Add { relu }
                }
                [Epilogue::Relu, ..] | [] => {
                    rest = &rest[1..];
                    MapKind::Relu
                }
            };
            let out = self.temp(y.shape.clone());
            args.push(out.buf);
            let n = out.shape.iter().product();
            let name = if kind == MapKind::Relu { "relu" } else { "add" };
            let k = ops::map(name, kind, n, self.target.vector);
            self.emit(name, k, args, &node.name);
            y = out;
        }
        Ok(y)
    }
}

/// Spatial size and strides of `[B, C, L]` or `[B, C, H, W]` as 2D (height 1 for 1D).
pub(super) fn lift(shape: &[usize], stride: [usize; 2]) -> ([usize; 2], [usize; 2]) {
    if shape.len() == 3 {
        ([1, shape[2]], [1, stride[1]])
    } else {
        ([shape[2], shape[3]], stride)
    }
}

impl Builder<'_> {
    /// A strided conv's input `x` zero-padded in phase planes of `plane` each
    /// (`conv::phase_kernel`), as the forward and filter-gradient kernels read it.
    pub(super) fn phased_input(
        &mut self,
        x: BufId,
        spec: &ConvSpec,
        plane: [usize; 2],
        layer: &str,
    ) -> BufId {
        let planes = spec.n * spec.ci;
        let [s0, s1] = spec.stride;
        let y = self.temp(vec![planes * s0 * s1 * plane[0] * plane[1]]);
        let top_left = [spec.pad[0].0, spec.pad[1].0];
        let k = phase_kernel(
            "phase",
            planes,
            [spec.h, spec.w],
            plane,
            spec.stride,
            top_left,
        );
        self.emit("phase", k, vec![x, y.buf], layer);
        y.buf
    }
}
