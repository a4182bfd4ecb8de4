//! Lowering of the convolution backward ops, the linear backward ops and the LC fold
//! (forward and backward) of a training graph. Weights are read from buffers (a
//! parameter, or a value computed in the same run such as an LC fold), never packed on
//! the host, so the plan stays valid as the parameters change.
//!
//! Algorithms (see `docs/autodiff.md`, "Conv backward on OpenCL"):
//! - backward to data of a conv without groups: the forward's register-tiled conv
//!   kernel on `dy` (spread out by the stride) with the weight flipped and transposed
//!   on the device (`conv_backward::flip_repack`, one launch per run);
//! - backward to data of a grouped conv: `conv_backward::data_kernel`;
//! - backward to filter: `conv_backward::filter_kernel` over a zero-padded copy of `x`;
//! - where the algorithm is FFT (`backward_algo`): the backward to data as the
//!   forward FFT conv of `dy` with the device-computed spectrum of the flipped,
//!   transposed weight, and the backward to filter as an FFT correlation
//!   (`kernel_ir::fft_backward`);
//! - linear backward and the LC fold: `gemm::matmul` with transposes as strides.

use super::{BufId, Builder, Val};
use crate::cost::{BackwardCosts, CostTable, CostTableId};
use crate::ir::conv_cost::ConvShape;
use crate::ir::op::{ConvAlgo, ConvAttrs, Padding};
use crate::kernel_ir::conv::{conv_kernel, pad_kernel, ConvSpec};
use crate::kernel_ir::conv_backward::{
    data_as_forward, data_kernel, filter_chunks, filter_kernel, flip_repack, spread_pad_kernel,
    sum_chunks,
};
use crate::kernel_ir::fft_backward::{filter_crop, filter_mac, pack_rows, FftFilter};
use crate::kernel_ir::fft_conv::FftConv;
use crate::kernel_ir::gemm::{matmul, Strides};
use crate::kernel_ir::native::{self, ConvGeometry, NativeConvs, NativeOp};
use crate::kernel_ir::strided_data;
use crate::passes::choose_conv_algo::{decide, env_override};
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;

/// The forward conv of `attrs` on an input of `x_shape` with a weight of `w_shape`
/// (`[Co, Ci/groups, k…]`), seen as 2D, padding resolved as the forward resolves it.
pub(super) fn conv_spec(attrs: &ConvAttrs, x_shape: &[usize], w_shape: &[usize]) -> ConvSpec {
    let one_d = x_shape.len() == 3;
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
    let (stride, dilation) = (us(&attrs.stride), us(&attrs.dilation));
    let resolve = |i: usize| -> (usize, usize) {
        let total = dilation[i] * (k[i] - 1);
        match &attrs.padding {
            Padding::Explicit(_) if one_d && i == 0 => (0, 0),
            Padding::Explicit(p) if one_d => (p[0].0 as usize, p[0].1 as usize),
            Padding::Explicit(p) => (p[i].0 as usize, p[i].1 as usize),
            Padding::Same => (total / 2, total - total / 2),
            Padding::Causal => (total, 0),
        }
    };
    let (h, w) = if one_d {
        (1, x_shape[2])
    } else {
        (x_shape[2], x_shape[3])
    };
    ConvSpec {
        n: x_shape[0],
        ci: x_shape[1],
        h,
        w,
        co: w_shape[0],
        k,
        stride,
        dilation,
        pad: [resolve(0), resolve(1)],
        residual: false,
        relu: false,
    }
}

/// The cost model's view of the forward conv `s`.
fn forward_shape(attrs: &ConvAttrs, s: &ConvSpec) -> ConvShape {
    let one_d = attrs.stride.len() == 1;
    let dims = |v: [usize; 2]| -> Vec<u64> {
        if one_d {
            vec![v[1] as u64]
        } else {
            v.iter().map(|&d| d as u64).collect()
        }
    };
    ConvShape {
        batch: s.n as u64,
        ci: s.ci as u64,
        co: s.co as u64,
        input: dims([s.h, s.w]),
        kernel: dims(s.k),
        stride: attrs.stride.clone(),
        dilation: attrs.dilation.clone(),
        groups: attrs.groups,
        padding: attrs.padding.clone(),
    }
}

impl Builder<'_> {
    /// The shape of an operand, whether computed, uploaded or constant.
    fn shape_of(&self, id: NodeIndex) -> Result<Vec<usize>, RunError> {
        match self.values.get(&id).or(self.const_bufs.get(&id)) {
            Some(v) => Ok(v.shape.clone()),
            None => match self.consts.get(&id) {
                Some(t) => Ok(t.shape.clone()),
                None => self.declared_shape(id),
            },
        }
    }

    /// `dx` of a conv: operands (dy, weight, x), `x` read for its shape only.
    pub(super) fn conv_backward_data(
        &mut self,
        id: NodeIndex,
        attrs: &ConvAttrs,
    ) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let layer = self.graph.node(id).name.clone();
        let dy = self.val(operands[0])?;
        let w = self.val(operands[1])?;
        let x_shape = self.shape_of(operands[2])?;
        let s = conv_spec(attrs, &x_shape, &w.shape);
        let dx = self.temp(x_shape);
        let groups = attrs.groups as usize;
        let fwd = data_as_forward(&s).filter(|_| groups == 1);
        let strided = s.stride != [1, 1];
        let fft_algo = self.backward_algo(attrs, &s) == ConvAlgo::Fft;
        if let Some(g) = self.native_backward(&s, groups, fft_algo && !strided && fwd.is_some())? {
            let estimate = self.backward_rows().map_or_else(Vec::new, |rows| {
                rows.data_estimate(&forward_shape(attrs, &s))
            });
            let algo = native::choose_data(&g, self.native_data_forced()?, &estimate);
            let op = NativeOp::ConvBackwardData { geometry: g, algo };
            self.emit_native(op, vec![dy.buf, w.buf, dx.buf], &layer);
            return Ok(dx);
        }
        let fft = fwd.as_ref().filter(|_| !strided && fft_algo);
        if let Some(g) = fft.and_then(|f| FftConv::new(f, self.target.vector)) {
            // The forward FFT conv of dy with the flipped, transposed weight's spectrum.
            let kf = self.device_spectrum(&g, w.buf, true, &layer);
            let b = self.constant(vec![0.0; g.co]);
            return Ok(self.fft_conv_spectrum(&g, &dy, kf, b, None, &layer));
        }
        if groups == 1 {
            if let Some(phases) = strided_data::phases(&s) {
                self.data_by_phases(&s, &phases, &dy, w.buf, dx.buf, &layer);
                return Ok(dx);
            }
        }
        let Some(f) = fwd else {
            let k = data_kernel("conv_bwd_data", &s, groups);
            self.emit("conv_bwd_data", k, vec![dy.buf, w.buf, dx.buf], &layer);
            return Ok(dx);
        };
        // The forward kernel on dy (spread by the stride) with the flipped, transposed
        // weight.
        let tile = self.target.conv_tile(f.out()[1]);
        let t = tile.tile_co;
        let taps = s.k[0] * s.k[1];
        let packed = self.temp(vec![f.co.div_ceil(t) * t * f.ci * taps]);
        let k = flip_repack("", s.co, s.ci, taps, t);
        self.emit("flip_repack", k, vec![w.buf, packed.buf], &layer);
        let bias = self.constant(vec![0.0; f.co.div_ceil(t) * t]);
        let hw = if f.needs_pad(tile) {
            f.padded(tile)
        } else {
            [f.h, f.w]
        };
        let planes = f.n * f.ci;
        let input = if strided {
            let padded = self.temp(vec![planes * hw[0] * hw[1]]);
            let (top, left) = (f.pad[0].0, f.pad[1].0);
            let k = spread_pad_kernel("spread", planes, s.out(), hw, [top, left], s.stride);
            self.emit("spread", k, vec![dy.buf, padded.buf], &layer);
            padded.buf
        } else if f.needs_pad(tile) {
            let padded = self.temp(vec![planes * hw[0] * hw[1]]);
            let k = pad_kernel(
                "pad", planes, f.h, f.w, hw[0], hw[1], f.pad[0].0, f.pad[1].0,
            );
            self.emit("pad", k, vec![dy.buf, padded.buf], &layer);
            padded.buf
        } else {
            dy.buf
        };
        let k = conv_kernel("conv_bwd_data", &f, tile);
        self.emit("conv", k, vec![input, packed.buf, bias, dx.buf], &layer);
        Ok(dx)
    }

    /// `dx` of a strided conv, phase by phase (`kernel_ir::strided_data`): per phase
    /// its taps packed, `dy` padded as its correlation reads it, the forward's conv
    /// kernel, and a scatter into `dx`.
    fn data_by_phases(
        &mut self,
        s: &ConvSpec,
        phases: &[strided_data::Phase],
        dy: &Val,
        w: BufId,
        dx: BufId,
        layer: &str,
    ) {
        for p in phases {
            let Some(f) = &p.conv else {
                let k = strided_data::unphase_kernel("unphase", s, p, [0, 0]);
                self.emit("unphase", k, vec![dx], layer);
                continue;
            };
            let tile = self.target.conv_tile(f.out()[1]);
            let t = tile.tile_co;
            let packed = self.temp(vec![f.co.div_ceil(t) * t * f.ci * f.k[0] * f.k[1]]);
            let k = strided_data::phase_repack("phase_repack", s, p, t);
            self.emit("phase_repack", k, vec![w, packed.buf], layer);
            let bias = self.constant(vec![0.0; f.co.div_ceil(t) * t]);
            let input = if f.needs_pad(tile) {
                let [hp, wp] = f.padded(tile);
                let padded = self.temp(vec![f.n * f.ci * hp * wp]);
                let k = pad_kernel("pad", f.n * f.ci, f.h, f.w, hp, wp, f.pad[0].0, f.pad[1].0);
                self.emit("pad", k, vec![dy.buf, padded.buf], layer);
                padded.buf
            } else {
                dy.buf
            };
            let out = f.out();
            let y = self.temp(vec![f.n * f.co * out[0] * out[1]]);
            let k = conv_kernel("conv_bwd_data", f, tile);
            self.emit("conv", k, vec![input, packed.buf, bias, y.buf], layer);
            let k = strided_data::unphase_kernel("unphase", s, p, out);
            self.emit("unphase", k, vec![y.buf, dx], layer);
        }
    }

    /// `dweight` of a conv: operands (x, dy, weight), the weight read for its shape.
    pub(super) fn conv_backward_filter(
        &mut self,
        id: NodeIndex,
        attrs: &ConvAttrs,
    ) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let layer = self.graph.node(id).name.clone();
        let x = self.val(operands[0])?;
        let dy = self.val(operands[1])?;
        let w_shape = self.shape_of(operands[2])?;
        let s = conv_spec(attrs, &x.shape, &w_shape);
        let groups = attrs.groups as usize;
        let fft_algo = groups == 1 && self.backward_algo(attrs, &s) == ConvAlgo::Fft;
        if let Some(geometry) = self.native_backward(&s, groups, fft_algo)? {
            let dw = self.temp(w_shape);
            let forced = native::filter_from_env()
                .map_err(|e| RunError::new(e).hint("unset it to let fnet choose"))?;
            let strips = native::strips_available();
            let estimate = self.backward_rows().map_or_else(Vec::new, |rows| {
                rows.filter_estimate(&forward_shape(attrs, &s))
            });
            let algo = native::choose_filter(&geometry, forced, strips, &estimate);
            let op = NativeOp::ConvBackwardFilter { geometry, algo };
            self.emit_native(op, vec![x.buf, dy.buf, dw.buf], &layer);
            return Ok(dw);
        }
        if fft_algo {
            if let Some(g) = FftFilter::new(&s, self.target.vector) {
                return Ok(self.fft_filter(&g, &x, &dy, w_shape, &layer));
            }
        }
        let mut hp = s.h + s.pad[0].0 + s.pad[0].1;
        let mut wp = s.w + s.pad[1].0 + s.pad[1].1;
        let input = if s.strided() {
            [hp, wp] = s.phase_plane(None);
            self.phased_input(x.buf, &s, [hp, wp], &layer)
        } else if [hp, wp] != [s.h, s.w] {
            let padded = self.temp(vec![s.n * s.ci * hp * wp]);
            let k = pad_kernel("pad", s.n * s.ci, s.h, s.w, hp, wp, s.pad[0].0, s.pad[1].0);
            self.emit("pad", k, vec![x.buf, padded.buf], &layer);
            padded.buf
        } else {
            x.buf
        };
        let chunks = filter_chunks(&s, groups);
        let len: usize = w_shape.iter().product();
        let dw = self.temp(w_shape);
        let v = self.target.vector;
        let k = filter_kernel("conv_bwd_filter", &s, groups, hp, wp, v, chunks);
        if chunks == 1 {
            self.emit("conv_bwd_filter", k, vec![input, dy.buf, dw.buf], &layer);
            return Ok(dw);
        }
        let partial = self.temp(vec![chunks * len]);
        self.emit(
            "conv_bwd_filter",
            k,
            vec![input, dy.buf, partial.buf],
            &layer,
        );
        let k = sum_chunks("sum_chunks", chunks, len);
        self.emit("sum_chunks", k, vec![partial.buf, dw.buf], &layer);
        Ok(dw)
    }

    /// The backward to filter by FFT: transform `x` (padded) and `dy`, correlate per
    /// frequency summing over the batch, transform back, crop the first `k` points.
    fn fft_filter(
        &mut self,
        g: &FftFilter,
        x: &Val,
        dy: &Val,
        w_shape: Vec<usize>,
        layer: &str,
    ) -> Val {
        let [n1, n2] = g.len;
        let xs = self.temp(vec![g.points() * 2 * g.rows_x]);
        let k = pack_rows(g.len, (g.batch, g.ci, g.cip), g.hw, g.pad_low, g.rows_x);
        self.emit("fft_rows", k, vec![x.buf, xs.buf], layer);
        let xf = self.transform(xs, n1, n2, g.rows_x, false, layer);
        let ys = self.temp(vec![g.points() * 2 * g.rows_y]);
        let k = pack_rows(g.len, (g.batch, g.co, g.co), g.out, [0, 0], g.rows_y);
        self.emit("fft_rows", k, vec![dy.buf, ys.buf], layer);
        let yf = self.transform(ys, n1, n2, g.rows_y, false, layer);
        let ws = self.temp(vec![g.points() * 2 * g.rows_w]);
        self.emit(
            "fft_filter_mac",
            filter_mac(g),
            vec![xf.buf, yf.buf, ws.buf],
            layer,
        );
        let wt = self.transform(ws, n1, n2, g.rows_w, true, layer);
        let dw = self.temp(w_shape);
        self.emit(
            "fft_filter_crop",
            filter_crop(g),
            vec![wt.buf, dw.buf],
            layer,
        );
        dw
    }

    /// The geometry of a backward conv to run as a native step (`kernel_ir::native`),
    /// when the target allows native convs (not `Off`, not forced `generated`), the
    /// padding is symmetric, `FNET_JIT_CONV_BWD` is not `generated`, and the op is not
    /// to run as an FFT (`fft`: the JIT keeps the FFT path where it was chosen, as
    /// the forward does).
    fn native_backward(
        &self,
        s: &ConvSpec,
        groups: usize,
        fft: bool,
    ) -> Result<Option<ConvGeometry>, RunError> {
        let on = !matches!(
            self.target.native,
            NativeConvs::Off | NativeConvs::Force(native::JitConv::Generated)
        );
        let symmetric = s.pad.iter().all(|&(lo, hi)| lo == hi);
        if !on || !symmetric || fft || s.k.contains(&0) {
            return Ok(None);
        }
        if native::backward_from_env()
            .map_err(|e| RunError::new(e).hint("unset it to let fnet choose"))?
            .is_none()
        {
            return Ok(None);
        }
        Ok(Some(ConvGeometry {
            n: s.n,
            ci: s.ci,
            h: s.h,
            w: s.w,
            co: s.co,
            kh: s.k[0],
            kw: s.k[1],
            stride: (s.stride[0], s.stride[1]),
            pad: (s.pad[0].0, s.pad[1].0),
            dilation: (s.dilation[0], s.dilation[1]),
            groups,
        }))
    }

    /// The data-gradient algorithm `FNET_JIT_CONV_BWD` forces, if any.
    fn native_data_forced(&self) -> Result<Option<native::JitConvData>, RunError> {
        Ok(native::backward_from_env()
            .map_err(|e| RunError::new(e).hint("unset it to let fnet choose"))?
            .flatten())
    }

    /// Direct or FFT for a backward conv of the forward `s`: the op's `algo` (copied by
    /// autodiff from its forward conv, where `choose-conv-algo` decided it) when set,
    /// else the same decision for the forward's shape (`FNET_CONV_ALGO`, then the cost
    /// table of this target: the JIT's where native steps are allowed, else OpenCL's
    /// for the device kind). Each backward op has the forward's arithmetic: the same
    /// products for the direct form, the same transforms and spectral products for
    /// the FFT, so the forward's estimate ranks the backward's algorithms too.
    fn backward_algo(&self, attrs: &ConvAttrs, s: &ConvSpec) -> ConvAlgo {
        let table = CostTable::of(match self.target.native {
            NativeConvs::Off => CostTableId::opencl(!self.target.broadcast_weights),
            _ => CostTableId::Jit,
        });
        let env = env_override().ok().flatten();
        match decide(attrs.algo, env, &forward_shape(attrs, s), table).0 {
            ConvAlgo::Fft => ConvAlgo::Fft,
            _ => ConvAlgo::Direct,
        }
    }

    /// The JIT cost table's rows for the backward routines (`cost::jit_backward`),
    /// whose estimates [`native::choose_data`] and [`native::choose_filter`] rank.
    fn backward_rows(&self) -> Option<&'static BackwardCosts> {
        CostTable::of(CostTableId::Jit).backward.as_ref()
    }

    /// The output of node `id` as the product `a·b` of its operands `ops[0]` and
    /// `ops[1]` (`[m, k]` and `[k, n]` as read through their strides).
    fn product(
        &mut self,
        id: NodeIndex,
        ops: [usize; 2],
        [m, n, k]: [usize; 3],
        a: Strides,
        b: Strides,
    ) -> Result<Val, RunError> {
        let node = self.graph.node(id);
        let (name, layer) = (node.op.name(), node.name.clone());
        let operands = self.graph.operands(id);
        let ab = self.val(operands[ops[0]])?.buf;
        let bb = self.val(operands[ops[1]])?.buf;
        let c = self.temp(self.declared_shape(id)?);
        let kern = matmul(name, m, n, k, a, b, self.target.vector);
        self.emit(name, kern, vec![ab, bb, c.buf], &layer);
        Ok(c)
    }

    /// (dy `[B, O]`, weight `[O, F]`) → dx `[B, F]` = dy·W.
    pub(super) fn linear_backward_data(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let [b, o] = two(&self.shape_of(operands[0])?);
        let f = self.shape_of(operands[1])?[1];
        self.product(id, [0, 1], [b, f, o], (o, 1), (f, 1))
    }

    /// (x `[B, F]`, dy `[B, O]`) → dW `[O, F]` = dyᵀ·x.
    pub(super) fn linear_backward_filter(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let [b, f] = two(&self.shape_of(operands[0])?);
        let o = self.shape_of(operands[1])?[1];
        self.product(id, [1, 0], [o, f, b], (1, o), (f, 1))
    }

    /// `lc_fold(W [J, …], C [Co, J, 1…])` → `[Co, …]` = C·W, on the device: the
    /// coefficients are trainable, so the fold is recomputed every run.
    pub(super) fn lc_fold(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let (w, c) = (self.shape_of(operands[0])?, self.shape_of(operands[1])?);
        let (co, j) = (c[0], c[1]);
        let r = w.iter().product::<usize>() / j.max(1);
        self.product(id, [1, 0], [co, r, j], (j, 1), (r, 1))
    }

    /// (dy `[Co, …]`, C `[Co, J, 1…]`) → dW `[J, …]` = Cᵀ·dy.
    pub(super) fn lc_fold_backward_basis(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let (dy, c) = (self.shape_of(operands[0])?, self.shape_of(operands[1])?);
        let (co, j) = (c[0], c[1]);
        let r = dy.iter().product::<usize>() / co.max(1);
        self.product(id, [1, 0], [j, r, co], (1, j), (r, 1))
    }

    /// (dy `[Co, …]`, W `[J, …]`, C) → dC `[Co, J, 1…]` = dy·Wᵀ.
    pub(super) fn lc_fold_backward_coeff(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let operands = self.graph.operands(id);
        let (dy, w) = (self.shape_of(operands[0])?, self.shape_of(operands[1])?);
        let (co, j) = (dy[0], w[0]);
        let r = dy.iter().product::<usize>() / co.max(1);
        self.product(id, [0, 1], [co, j, r], (r, 1), (1, r))
    }
}

fn two(shape: &[usize]) -> [usize; 2] {
    [shape[0], shape[1]]
}
