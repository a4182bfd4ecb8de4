//! Native steps of a plan (`kernel_ir::native`) mapped onto the micro-kernels of
//! [`super::kernels`]: a conv step runs `conv2d_direct`, `conv2d_im2col` or
//! `conv2d_winograd` with the executor's [`Isa`] (`FNET_JIT_ISA` forces one) and the
//! step's epilogue fused; a linear layer, a pool and ReLU's backward run their
//! routines too.
//!
//! A Winograd or direct conv whose weight is a constant of the plan (an evaluation
//! plan's bound weight, never rewritten) has its filter transformed or packed once,
//! when the executable is built; one whose weight is a buffer written at run time (a
//! training parameter, a synthesised FlexConv kernel) is transformed in every run.

use super::kernels::batch_norm::{batch_moments, bn_sums, channel_sum, ChannelLayout};
use super::kernels::conv_backward::{
    conv2d_backward_data_as_forward, conv2d_backward_data_col2im, conv2d_backward_filter,
    data_as_forward, AsForward, DataScratch,
};
use super::kernels::conv_direct::{conv2d_direct_packed, DirectFilter};
use super::kernels::conv_filter_direct::{conv2d_backward_filter_direct, filter_direct_applies};
use super::kernels::conv_im2col::conv2d_im2col;
use super::kernels::conv_params::{Conv2d, ConvError, Epilogue};
use super::kernels::elementwise::relu_backward;
use super::kernels::isa::Isa;
use super::kernels::pack::MatRef;
use super::kernels::pool::{pool2d, Pool2d};
use super::kernels::sgemm::{sgemm, Par};
use super::kernels::shortcut::{shortcut_a, shortcut_a_backward, Shortcut};
use super::kernels::winograd::{conv2d_winograd, WinogradFilter};
use super::kernels::winograd_filter::conv2d_backward_filter_winograd;
use super::kernels::winograd_transform::WinogradTile;
use crate::kernel_ir::native::{
    ConvGeometry, JitConv, JitConvData, JitConvFilter, NativeOp, PoolGeometry, ShortcutGeometry,
};
use crate::runtime::RunError;
use std::sync::Mutex;

/// One native step with its buffers resolved.
pub(super) struct NativeCall {
    op: NativeOp,
    isa: Isa,
    /// Address and length of each argument, in the order `NativeOp` lists them.
    args: Vec<(*mut f32, usize)>,
    /// The Winograd filter of a constant weight, transformed once.
    filter: Option<WinogradFilter>,
    /// The direct conv's packing of a constant weight, done once.
    direct: Option<DirectFilter>,
    /// What a conv whose weight changes from run to run (a training step's) keeps
    /// between runs, rewritten in each.
    reused: Mutex<Reused>,
}

/// [`NativeCall::reused`]: the forward's Winograd or direct filter, the data
/// gradient's flipped weight and filter.
#[derive(Default)]
struct Reused {
    filter: Option<WinogradFilter>,
    direct: Option<DirectFilter>,
    data: DataScratch,
}

fn conv2d(g: &ConvGeometry) -> Conv2d {
    Conv2d {
        n: g.n,
        ci: g.ci,
        h: g.h,
        w: g.w,
        co: g.co,
        kh: g.kh,
        kw: g.kw,
        stride: g.stride,
        pad: g.pad,
        dilation: g.dilation,
        groups: g.groups,
    }
}

fn pool(g: &PoolGeometry) -> Pool2d {
    Pool2d {
        planes: g.planes,
        hw: g.hw,
        out: g.out,
        k: g.k,
        stride: g.stride,
        pad: g.pad,
        max: g.max,
    }
}

fn shortcut(g: &ShortcutGeometry) -> Shortcut {
    Shortcut {
        n: g.n,
        ci: g.ci,
        hw: g.hw,
        co: g.co,
        out: g.out,
        stride: g.stride,
        pad: g.pad,
    }
}

/// The Winograd variant of `m × m` output tiles for a `k × k` kernel; for a kernel
/// no variant covers, the 3×3 one, which `winograd_applies` then refuses.
fn winograd_tile(m: usize, k: usize) -> WinogradTile {
    WinogradTile::new(m, k)
        .or(WinogradTile::new(m, 3))
        .expect("there are 3×3 variants for m = 2 and 4")
}

fn tile(algo: JitConv, k: usize) -> Option<WinogradTile> {
    match algo {
        JitConv::Winograd2 => Some(winograd_tile(2, k)),
        JitConv::Winograd4 => Some(winograd_tile(4, k)),
        JitConv::Generated | JitConv::Direct | JitConv::Im2col => None,
    }
}

fn data_tile(algo: JitConvData, k: usize) -> Option<WinogradTile> {
    match algo {
        JitConvData::Winograd2 => Some(winograd_tile(2, k)),
        JitConvData::Winograd4 => Some(winograd_tile(4, k)),
        JitConvData::Col2im | JitConvData::Direct | JitConvData::Im2col => None,
    }
}

/// Runs the backward conv `op` (a `ConvBackwardFilter` on `[x, dy]` into `dw`, or a
/// `ConvBackwardData` on `[dy, w]` into `dx`), with what a data gradient keeps from
/// run to run in `data`: the executor's step, and what `fit_cost` times.
pub fn backward_conv(
    isa: Isa,
    op: &NativeOp,
    [a, b]: [&[f32]; 2],
    data: &mut DataScratch,
    out: &mut [f32],
) -> Result<(), ConvError> {
    match *op {
        NativeOp::ConvBackwardFilter { geometry, algo } => {
            let p = conv2d(&geometry);
            match algo {
                JitConvFilter::Im2col => conv2d_backward_filter(isa, &p, a, b, out),
                JitConvFilter::Direct => conv2d_backward_filter_direct(isa, &p, a, b, out),
                JitConvFilter::Winograd2 | JitConvFilter::Winograd4 => {
                    let m = if algo == JitConvFilter::Winograd2 {
                        2
                    } else {
                        4
                    };
                    let tile = winograd_tile(m, p.kh);
                    conv2d_backward_filter_winograd(isa, tile, &p, a, b, out)
                }
            }
        }
        NativeOp::ConvBackwardData { geometry, algo } => {
            let p = conv2d(&geometry);
            let how = match algo {
                JitConvData::Col2im => return conv2d_backward_data_col2im(isa, &p, a, b, out),
                JitConvData::Direct => AsForward::Direct,
                a => data_tile(a, p.kh).map_or(AsForward::Im2col, AsForward::Winograd),
            };
            conv2d_backward_data_as_forward(isa, &p, how, a, b, data, out)
        }
        _ => Err(ConvError::Geometry(format!(
            "{} is not a backward conv",
            op.name()
        ))),
    }
}

fn conv_error(layer: &str, e: impl std::fmt::Display) -> RunError {
    RunError::new(format!("`{layer}`: native conv: {e}"))
        .hint("set FNET_JIT_CONV=generated to run every conv as a generated kernel")
}

impl NativeCall {
    /// Resolves `op`'s arguments; `constant_weight` says whether the weight (the second
    /// argument) is a constant of the plan, whose Winograd filter can be built now.
    pub(super) fn new(
        op: NativeOp,
        isa: Isa,
        args: Vec<(*mut f32, usize)>,
        constant_weight: bool,
        layer: &str,
    ) -> Result<NativeCall, RunError> {
        let (geometry, algo, epilogue) = match op {
            NativeOp::Conv2d {
                geometry,
                algo,
                epilogue,
            } => (geometry, algo, epilogue),
            NativeOp::ConvBackwardFilter { geometry, .. }
            | NativeOp::ConvBackwardData { geometry, .. } => {
                return NativeCall::backward(op, geometry, isa, args, layer);
            }
            NativeOp::ReluBackward { .. }
            | NativeOp::BatchMoments { .. }
            | NativeOp::ChannelSum { .. }
            | NativeOp::BatchNormSums { .. }
            | NativeOp::Linear { .. }
            | NativeOp::Pool(_)
            | NativeOp::Shortcut(_) => {
                return NativeCall::dense(op, isa, args, layer);
            }
            NativeOp::SyncStats(_) => {
                return Err(conv_error(
                    layer,
                    "a statistics step is the executor's, not a routine call",
                ))
            }
        };
        let want = 3 + usize::from(epilogue.bias) + usize::from(epilogue.residual);
        if args.len() != want {
            return Err(conv_error(
                layer,
                format!("{} arguments, expected {want}", args.len()),
            ));
        }
        if algo == JitConv::Generated {
            return Err(conv_error(
                layer,
                "a native step cannot be a generated kernel",
            ));
        }
        let filter = match tile(algo, geometry.kh) {
            Some(t) if constant_weight => {
                // SAFETY: the weight buffer holds `len` floats and nothing writes a
                // constant.
                let w = unsafe { std::slice::from_raw_parts(args[1].0, args[1].1) };
                Some(
                    WinogradFilter::new(isa, t, w, geometry.co, geometry.ci)
                        .map_err(|e| conv_error(layer, e))?,
                )
            }
            _ => None,
        };
        let direct = match algo {
            JitConv::Direct if constant_weight => {
                // SAFETY: as for the Winograd filter above.
                let w = unsafe { std::slice::from_raw_parts(args[1].0, args[1].1) };
                Some(
                    DirectFilter::new(isa, &conv2d(&geometry), w)
                        .map_err(|e| conv_error(layer, e))?,
                )
            }
            _ => None,
        };
        let call = NativeCall {
            op,
            isa,
            args,
            filter,
            direct,
            reused: Mutex::default(),
        };
        // Geometry and lengths are checked once here, so a run cannot fail.
        let p = conv2d(&geometry);
        let (x, w, epi, out) = call.parts();
        p.check(x.len(), w.len(), out.len(), &epi)
            .map_err(|e| conv_error(layer, e))?;
        if tile(algo, geometry.kh).is_some() {
            super::kernels::winograd::winograd_applies(&p).map_err(|e| conv_error(layer, e))?;
        }
        Ok(call)
    }

    /// A call with nothing prepared.
    fn plain(op: NativeOp, isa: Isa, args: Vec<(*mut f32, usize)>) -> NativeCall {
        NativeCall {
            op,
            isa,
            args,
            filter: None,
            direct: None,
            reused: Mutex::default(),
        }
    }

    /// A step that is no conv: its buffers must hold what it reads and writes.
    fn dense(
        op: NativeOp,
        isa: Isa,
        args: Vec<(*mut f32, usize)>,
        layer: &str,
    ) -> Result<NativeCall, RunError> {
        let lens: Vec<usize> = args.iter().map(|&(_, len)| len).collect();
        let fits = match op {
            NativeOp::ReluBackward { n, summed } => {
                lens.len() == 3 + usize::from(summed) && lens.iter().all(|&l| l >= n)
            }
            NativeOp::BatchMoments { outer, c, inner } => {
                lens.len() == 2 && lens[0] >= outer * c * inner && lens[1] >= 2 * c
            }
            NativeOp::ChannelSum { outer, c, inner } => {
                lens.len() == 2 && lens[0] >= outer * c * inner && lens[1] >= c
            }
            NativeOp::BatchNormSums {
                outer, c, inner, ..
            } => {
                let n = outer * c * inner;
                lens.len() == 4
                    && lens[0] >= n
                    && lens[1] >= n
                    && lens[2] >= 2 * c
                    && lens[3] >= 4 * c
            }
            NativeOp::Linear {
                batch,
                features,
                outputs,
            } => {
                lens == [
                    batch * features,
                    outputs * features,
                    outputs,
                    batch * outputs,
                ]
            }
            NativeOp::Pool(g) => lens.len() == 2 && pool(&g).fits(lens[0], lens[1]),
            NativeOp::Shortcut(g) => {
                let (x, y) = shortcut(&g).lens();
                let want = if g.backward { [y, x] } else { [x, y] };
                shortcut(&g).valid() && lens == want
            }
            _ => false,
        };
        if !fits {
            return Err(RunError::new(format!(
                "`{layer}`: native {}: buffers of {lens:?} floats do not fit {op:?}",
                op.name()
            )));
        }
        Ok(NativeCall::plain(op, isa, args))
    }

    /// A backward conv step: three arguments whose lengths the routine checks once
    /// here (on zero buffers of the same lengths), so a run cannot fail.
    fn backward(
        op: NativeOp,
        geometry: ConvGeometry,
        isa: Isa,
        args: Vec<(*mut f32, usize)>,
        layer: &str,
    ) -> Result<NativeCall, RunError> {
        if args.len() != 3 {
            return Err(conv_error(
                layer,
                format!("{} arguments, expected 3", args.len()),
            ));
        }
        let p = conv2d(&geometry);
        let [a, b, c] = [args[0].1, args[1].1, args[2].1];
        let checked = match op {
            NativeOp::ConvBackwardFilter { algo, .. } => p
                .check(a, c, b, &Epilogue::default())
                .map(|_| ())
                .and_then(|()| match algo {
                    JitConvFilter::Direct => filter_direct_applies(&p),
                    JitConvFilter::Im2col => Ok(()),
                    JitConvFilter::Winograd2 | JitConvFilter::Winograd4 => {
                        super::kernels::winograd::winograd_applies(&p)
                    }
                }),
            NativeOp::ConvBackwardData { algo, .. } => p
                .check(c, b, a, &Epilogue::default())
                .map(|_| ())
                .and_then(|()| match data_tile(algo, p.kh) {
                    _ if algo == JitConvData::Col2im => Ok(()),
                    Some(_) => data_as_forward(&p)
                        .ok_or_else(|| ConvError::Geometry("not stride 1".into()))
                        .and_then(|f| super::kernels::winograd::winograd_applies(&f)),
                    None => data_as_forward(&p)
                        .map(|_| ())
                        .ok_or_else(|| ConvError::Geometry("not stride 1".into())),
                }),
            _ => unreachable!("only backward convs get here"),
        };
        checked.map_err(|e| conv_error(layer, e))?;
        Ok(NativeCall::plain(op, isa, args))
    }

    /// The step's arguments as views: every one but the last read-only, the last (the
    /// step's output) writable.
    #[allow(clippy::mut_from_ref)]
    fn views(&self) -> (Vec<&[f32]>, &mut [f32]) {
        let (last, inputs) = self.args.split_last().expect("a step has an output");
        // SAFETY: as in `parts`.
        let inputs = inputs
            .iter()
            .map(|&(ptr, len)| unsafe { std::slice::from_raw_parts(ptr as *const f32, len) })
            .collect();
        // SAFETY: as in `parts`; the output is written by this step only.
        let out = unsafe { std::slice::from_raw_parts_mut(last.0, last.1) };
        (inputs, out)
    }

    /// The input, weight, epilogue and output views.
    #[allow(clippy::mut_from_ref)]
    fn parts(&self) -> (&[f32], &[f32], Epilogue<'_>, &mut [f32]) {
        let NativeOp::Conv2d { epilogue, .. } = self.op else {
            unreachable!("parts of a forward conv only");
        };
        // SAFETY: each address holds its length in floats (the executor's buffers,
        // never reallocated); the plan never gives a step's output as one of its inputs,
        // and no other step runs meanwhile.
        let view = |i: usize| unsafe { std::slice::from_raw_parts(self.args[i].0, self.args[i].1) };
        let mut at = 2;
        let bias = epilogue.bias.then(|| {
            at += 1;
            view(at - 1)
        });
        let residual = epilogue.residual.then(|| {
            at += 1;
            view(at - 1)
        });
        let (ptr, len) = self.args[at];
        // SAFETY: as above; the output is written by this step only.
        let out = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let epi = Epilogue {
            bias,
            residual,
            relu: epilogue.relu,
        };
        (view(0), view(1), epi, out)
    }

    /// The buffers kept between runs. A step never runs twice at once; a run that
    /// panicked left them whole (each is rewritten before it is read).
    fn reused(&self) -> std::sync::MutexGuard<'_, Reused> {
        self.reused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The step's flops, as [`NativeOp::flops`] counts them.
    pub(super) fn flops(&self) -> u64 {
        self.op.flops()
    }

    /// Runs the step.
    pub(super) fn run(&self) {
        let (geometry, algo) = match self.op {
            NativeOp::Conv2d { geometry, algo, .. } => (geometry, algo),
            NativeOp::ConvBackwardFilter { .. } | NativeOp::ConvBackwardData { .. } => {
                let (a, out) = self.views();
                let data = &mut self.reused().data;
                backward_conv(self.isa, &self.op, [a[0], a[1]], data, out)
                    .expect("a native conv checked when the executable was built");
                return;
            }
            NativeOp::ReluBackward { n, summed } => {
                let (a, dx) = self.views();
                let addend = summed.then(|| &a[2][..n]);
                relu_backward(&a[0][..n], &a[1][..n], addend, &mut dx[..n]);
                return;
            }
            NativeOp::BatchMoments { outer, c, inner } => {
                let (a, m) = self.views();
                batch_moments(self.isa, &ChannelLayout { outer, c, inner }, a[0], m);
                return;
            }
            NativeOp::ChannelSum { outer, c, inner } => {
                let (a, y) = self.views();
                channel_sum(self.isa, &ChannelLayout { outer, c, inner }, a[0], y);
                return;
            }
            NativeOp::BatchNormSums {
                outer,
                c,
                inner,
                eps_bits,
            } => {
                let (a, st) = self.views();
                let l = ChannelLayout { outer, c, inner };
                bn_sums(
                    self.isa,
                    &l,
                    f32::from_bits(eps_bits),
                    (a[0], a[1], a[2]),
                    st,
                );
                return;
            }
            NativeOp::Linear {
                batch,
                features,
                outputs,
            } => {
                let (a, y) = self.views();
                let (x, w, bias) = (a[0], a[1], a[2]);
                sgemm(
                    self.isa,
                    batch,
                    outputs,
                    features,
                    1.0,
                    MatRef::row_major(x, features),
                    MatRef::transposed(w, features),
                    0.0,
                    y,
                    outputs,
                    Par::Rayon,
                );
                for row in y.chunks_exact_mut(outputs.max(1)) {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
                return;
            }
            NativeOp::Pool(g) => {
                let (a, y) = self.views();
                pool2d(&pool(&g), a[0], y);
                return;
            }
            NativeOp::Shortcut(g) => {
                let (a, y) = self.views();
                if g.backward {
                    shortcut_a_backward(&shortcut(&g), a[0], y);
                } else {
                    shortcut_a(&shortcut(&g), a[0], y);
                }
                return;
            }
            NativeOp::SyncStats(_) => unreachable!("`NativeCall::new` refuses it"),
        };
        let p = conv2d(&geometry);
        let (x, w, epi, out) = self.parts();
        let done = match (tile(algo, p.kh), &self.filter) {
            (None, _) if algo == JitConv::Direct => match &self.direct {
                Some(f) => conv2d_direct_packed(f, &p, x, &epi, out),
                None => {
                    let slot = &mut self.reused().direct;
                    DirectFilter::in_slot(slot, self.isa, &p, w)
                        .and_then(|f| conv2d_direct_packed(f, &p, x, &epi, out))
                }
            },
            (None, _) => conv2d_im2col(self.isa, &p, x, w, &epi, out),
            (Some(_), Some(f)) => conv2d_winograd(self.isa, f, &p, x, &epi, out),
            (Some(t), None) => {
                let slot = &mut self.reused().filter;
                WinogradFilter::in_slot(slot, self.isa, t, w, p.co, p.ci)
                    .and_then(|f| conv2d_winograd(self.isa, f, &p, x, &epi, out))
            }
        };
        // `new` checked the geometry and every length, which is all the routines
        // check.
        done.expect("a native conv checked when the executable was built");
    }
}
