//! Lowering a conv with `algo: fft` (chosen by `choose-conv-algo`, the program's
//! `algo:` or `FNET_CONV_ALGO`) to an FFT convolution: pack the input into transform
//! rows, forward transforms (one launch per Stockham stage and axis), a complex
//! multiply-accumulate over input channels with the kernel's spectrum (computed once on
//! the host when the plan is made where the kernel is a constant, else on the device in
//! every run: a parameter buffer in training, a computed kernel), inverse transforms, and
//! a crop that applies the bias, residual add and ReLU. The semantics are the direct
//! conv's (and `reference::fft_conv`'s): see `kernel_ir::fft_conv`.

use super::fusion::Chain;
use super::{assign_slots, check_kernels, BufId, BufKind, Builder, Plan, Target, Val};
use crate::ir::graph::Graph;
use crate::kernel_ir::conv::ConvSpec;
use crate::kernel_ir::fft::{axis_kernels, twiddles, FftAxis};
use crate::kernel_ir::fft_backward::{spectrum_gather, spectrum_pack, spectrum_rows};
use crate::kernel_ir::fft_conv::{
    crop_kernel, kernel_spectrum, pack_kernel, pointwise_kernel, FftConv,
};
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;

impl Builder<'_> {
    /// The FFT convolution of `spec`, or `None` when it is not one the FFT computes or
    /// its weights are not known on the host (the caller then lowers it directly).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fft_conv(
        &mut self,
        chain: &Chain,
        spec: &ConvSpec,
        x: &Val,
        weight: NodeIndex,
        bias: &[f32],
        scale: &[f32],
        layer: &str,
    ) -> Result<Option<Val>, RunError> {
        let Some(g) = FftConv::new(spec, self.target.vector) else {
            return Ok(None);
        };
        let kf = match self.const_tensor(weight).cloned() {
            Ok(w) => self.constant(kernel_spectrum(&g, &w.data, scale)),
            // A weight in a buffer (a parameter in training, a computed value): its
            // spectrum is computed on the device in every run, unscaled only.
            Err(_) if scale.iter().all(|&s| s == 1.0) => {
                let w = self.val(weight)?;
                self.device_spectrum(&g, w.buf, false, layer)
            }
            Err(_) => return Ok(None),
        };
        let residual = match chain.residual {
            Some(r) => Some(self.val(r)?.buf),
            None => None,
        };
        let b = self.constant(bias[..g.co].to_vec());
        Ok(Some(self.fft_conv_spectrum(&g, x, kf, b, residual, layer)))
    }

    /// The FFT conv of `g` with the kernel spectrum `kf` (`kernel_spectrum`'s layout)
    /// and bias `b`, adding `residual`.
    pub(super) fn fft_conv_spectrum(
        &mut self,
        g: &FftConv,
        x: &Val,
        kf: BufId,
        b: BufId,
        residual: Option<BufId>,
        layer: &str,
    ) -> Val {
        let [n1, n2] = g.len;
        let xs = self.temp(vec![g.points() * 2 * g.rows_in]);
        self.emit("fft_pack", pack_kernel(g), vec![x.buf, xs.buf], layer);
        let xf = self.transform(xs, n1, n2, g.rows_in, false, layer);
        let ys = self.temp(vec![g.points() * 2 * g.rows_out]);
        let mac = pointwise_kernel(g, self.target.vector);
        self.emit("fft_mac", mac, vec![xf.buf, kf, ys.buf], layer);
        let yt = self.transform(ys, n1, n2, g.rows_out, true, layer);
        let shape = if x.shape.len() == 3 {
            vec![g.batch, g.co, g.out[1]]
        } else {
            vec![g.batch, g.co, g.out[0], g.out[1]]
        };
        let y = self.temp(shape);
        let mut args = vec![yt.buf, b];
        args.extend(residual);
        args.push(y.buf);
        self.emit("fft_crop", crop_kernel(g), args, layer);
        y
    }

    /// The spectrum of `w`'s kernel for `g` (of the flipped, transposed weight with
    /// `transposed`), computed on the device: see `kernel_ir::fft_backward`.
    pub(super) fn device_spectrum(
        &mut self,
        g: &FftConv,
        w: BufId,
        transposed: bool,
        layer: &str,
    ) -> BufId {
        let [n1, n2] = g.len;
        let rows = spectrum_rows(g, self.target.vector);
        let packed = self.temp(vec![g.points() * 2 * rows]);
        let k = spectrum_pack(g, rows, transposed);
        self.emit("spectrum_pack", k, vec![w, packed.buf], layer);
        let t = self.transform(packed, n1, n2, rows, false, layer);
        let kf = self.temp(vec![n1 * (n2 / 2 + 1) * g.ci * 2 * g.cop]);
        self.emit(
            "spectrum_gather",
            spectrum_gather(g, rows),
            vec![t.buf, kf.buf],
            layer,
        );
        kf.buf
    }

    /// Transforms `x` (`[n1][n2][2][rows]`) along both axes (length-1 axes are
    /// identities) and returns the buffer holding the result.
    pub(super) fn transform(
        &mut self,
        x: Val,
        n1: usize,
        n2: usize,
        rows: usize,
        inverse: bool,
        layer: &str,
    ) -> Val {
        let mut cur = x;
        for axis in [1, 0] {
            let a = FftAxis::plane(axis, n1, n2, rows, inverse);
            let stages = axis_kernels(&a, self.target.vector).unwrap_or_default();
            if stages.is_empty() {
                continue;
            }
            let tw = self.constant(twiddles(a.n, inverse));
            for k in stages {
                let y = self.temp(cur.shape.clone());
                self.emit("fft", k, vec![cur.buf, tw, y.buf], layer);
                cur = y;
            }
        }
        cur
    }
}

/// A plan of one batched 1D transform of `n` points over `rows` rows (a multiple of
/// the target's vector width), input and output laid out `[n][2][rows]`: for tests
/// and benchmarks of the FFT kernels alone. An error is a bug in the FFT lowering
/// (an ill-typed kernel).
pub fn transform_plan(
    n: usize,
    rows: usize,
    inverse: bool,
    target: Target,
) -> Result<Plan, RunError> {
    let graph = Graph::new("fft");
    let mut b = Builder {
        graph: &graph,
        target,
        env: Default::default(),
        plan: Plan::default(),
        values: BTreeMap::new(),
        consts: BTreeMap::new(),
        const_bufs: BTreeMap::new(),
        training: false,
        update_running: false,
        bn_sums: BTreeMap::new(),
        moments: BTreeMap::new(),
        fused_relu: Default::default(),
        fused_add: Default::default(),
        summed_dy: Default::default(),
        params_now: BTreeMap::new(),
        magnet_grads: BTreeMap::new(),
        penalties: BTreeMap::new(),
    };
    let shape = vec![n, 2, rows];
    let buf = b.buffer(2 * n * rows, BufKind::Input(0));
    b.plan.inputs.push((buf, shape.clone()));
    let y = b.transform(Val { buf, shape }, 1, n, rows, inverse, "fft");
    b.plan.outputs.push((y.buf, y.shape));
    let mut plan = b.plan;
    assign_slots(&mut plan);
    check_kernels(&mut plan)?;
    Ok(plan)
}
