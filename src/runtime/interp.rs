//! The reference interpreter: runs a graph forward, node by node in topological order,
//! on the naive kernels of `crate::reference`. It is the oracle every pass and backend
//! is tested against, so it favours obviousness over speed.

use super::bind::{bind_inputs, conforms};
use super::error::RunError;
use super::params::ParamStore;
use crate::ir::graph::Graph;
use crate::ir::op::{ConvAlgo, Op, Padding, PoolKind, PoolSpec};
use crate::reference::conv::{conv, same_padding, ConvParams};
use crate::reference::fft_conv::{fft_causal_conv1d, fft_conv2d_same};
use crate::reference::mask::{
    crop_causal, crop_symmetric, gauss_roots, gaussian_mask, grid_from_axes, rel_positions_grid,
};
use crate::reference::{activation, layout, linear, magnet, norm, pool};
use crate::tensor::{Scalar, Tensor};
use petgraph::stable_graph::NodeIndex;
use rustfft::FftNum;
use std::collections::BTreeMap;

/// Training mode uses batch statistics, updates running statistics and applies
/// dropout; evaluation mode uses running statistics (where the layer keeps them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Eval,
    Train,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub mode: Mode,
    /// Seed of the dropout masks in training mode (`runtime::dropout`): one per step.
    pub seed: u64,
    /// Runs every eligible conv with this algorithm instead of its own choice.
    pub force_algo: Option<ConvAlgo>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            mode: Mode::Eval,
            seed: 0,
            force_algo: None,
        }
    }
}

/// What a forward run produces besides the outputs.
#[derive(Clone, Debug)]
pub struct RunResult<T> {
    pub outputs: Vec<Tensor<T>>,
    /// Running statistics after a training-mode step, by parameter name.
    pub updated_buffers: ParamStore<T>,
    /// Each FlexConv's kernel size after cropping, by layer name.
    pub kernel_sizes: BTreeMap<String, Vec<usize>>,
}

pub fn run<T: Scalar + FftNum>(
    graph: &Graph,
    params: &ParamStore<T>,
    inputs: &[Tensor<T>],
    options: &RunOptions,
) -> Result<RunResult<T>, RunError> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    let env = bind_inputs(graph, &shapes)?;
    let order = graph
        .topo_order()
        .map_err(|e| RunError::new(e.to_string()))?;
    let mut values: BTreeMap<NodeIndex, Tensor<T>> = BTreeMap::new();
    let mut result = RunResult {
        outputs: Vec::new(),
        updated_buffers: ParamStore::new(),
        kernel_sizes: BTreeMap::new(),
    };
    // Free each value after its last use, so peak memory stays near one layer's.
    let mut remaining: BTreeMap<NodeIndex, usize> =
        order.iter().map(|&n| (n, graph.users(n).len())).collect();
    for &o in &graph.outputs {
        *remaining.entry(o).or_default() += 1;
    }
    for &id in &order {
        let node = graph.node(id);
        let operands = graph.operands(id);
        let args: Vec<&Tensor<T>> = operands.iter().map(|o| &values[o]).collect();
        let mut ctx = Ctx {
            params,
            options,
            result: &mut result,
            name: &node.name,
        };
        let out = match &node.op {
            Op::Input { .. } => {
                let i = graph
                    .inputs
                    .iter()
                    .position(|&n| n == id)
                    .expect("declared input");
                inputs[i].clone()
            }
            op => eval(op, &args, &mut ctx).map_err(|e| RunError {
                message: format!("in `{}` ({}): {}", node.name, op.name(), e.message),
                hint: e.hint,
            })?,
        };
        if !conforms(&node.ty, &out.shape, &env) {
            return Err(RunError::new(format!(
                "internal error: `{}` produced {:?} but its type is {}",
                node.name, out.shape, node.ty
            )));
        }
        values.insert(id, out);
        // `users` counts a reader once however many slots it fills (`mul(x, x)`).
        let mut read = operands;
        read.sort();
        read.dedup();
        for o in read {
            let r = remaining.get_mut(&o).expect("operand counted");
            *r -= 1;
            if *r == 0 {
                values.remove(&o);
            }
        }
    }
    result.outputs = graph.outputs.iter().map(|o| values[o].clone()).collect();
    Ok(result)
}

struct Ctx<'a, T> {
    params: &'a ParamStore<T>,
    options: &'a RunOptions,
    result: &'a mut RunResult<T>,
    name: &'a str,
}

fn eval<T: Scalar + FftNum>(
    op: &Op,
    a: &[&Tensor<T>],
    ctx: &mut Ctx<'_, T>,
) -> Result<Tensor<T>, RunError> {
    Ok(match op {
        Op::Input { .. } => unreachable!("inputs are bound before evaluation"),
        Op::Param { .. } => ctx
            .params
            .get(ctx.name)
            .cloned()
            .ok_or_else(|| RunError::new(format!("no tensor `{}` in the weights", ctx.name)))?,
        Op::Const { value, .. } => value.cast::<T>(),
        Op::CoordGrid { horizon } => {
            rel_positions_grid(&horizon.iter().map(|&k| k as usize).collect::<Vec<_>>())
        }
        Op::MaskCrop { threshold, causal } => mask_crop(a[0], a[1], *threshold, *causal)?,
        Op::Magnet {
            layers,
            in_channels,
            ..
        } => {
            let p = magnet_params(&a[1..], *layers as usize)?;
            let k = magnet::magnet_kernel(&p, a[0], *in_channels as usize, <T as Scalar>::one())?;
            record_kernel_size(ctx, &k);
            k
        }
        Op::FlexKernel { .. } => {
            let k = super::flex_kernel::eval(op, a)?;
            record_kernel_size(ctx, &k);
            k
        }
        Op::GaussMask => gaussian_mask(a[0], a[1])?,
        Op::MaskMul => {
            let (k, m) = (a[0], a[1]);
            let n = m.numel();
            let data = k
                .data
                .chunks(n.max(1))
                .flat_map(|row| row.iter().zip(&m.data).map(|(&v, &w)| v * w))
                .collect();
            Tensor::from_vec(k.shape.clone(), data)?
        }
        Op::Scale { factor } => a[0].map(|&v| v * <T as Scalar>::from_f64(*factor)),
        Op::Conv(c) => {
            let b = if c.bias {
                Some(a[2].data.as_slice())
            } else {
                None
            };
            let algo = ctx.options.force_algo.unwrap_or(c.algo);
            conv_op(
                a[0],
                a[1],
                b,
                &c.stride,
                &c.padding,
                &c.dilation,
                c.groups,
                algo,
            )?
        }
        Op::Linear { bias } => linear::linear(
            a[0],
            a[1],
            if *bias {
                Some(a[2].data.as_slice())
            } else {
                None
            },
        )?,
        Op::BatchNorm {
            eps,
            momentum,
            affine,
            running_stats,
        } => batchnorm(a, *eps, *momentum, *affine, *running_stats, ctx)?,
        Op::Relu => activation::relu(a[0]),
        Op::Gelu => activation::gelu(a[0]),
        Op::Dropout { p } => dropout(a[0], *p, ctx),
        Op::Pool(spec) => pool_op(a[0], spec)?,
        Op::Slot {
            active, pool: spec, ..
        } => {
            if *active {
                pool_op(a[0], spec)?
            } else {
                a[0].clone()
            }
        }
        Op::GlobalAvgPool => pool::global_avg_pool(a[0])?,
        Op::Flatten => {
            let b = a[0].shape[0];
            a[0].clone().reshape(vec![b, a[0].numel() / b.max(1)])?
        }
        Op::LastStep => layout::last_timestep(a[0])?,
        Op::Add | Op::Mul => {
            let add = matches!(op, Op::Add);
            let data = a[0]
                .data
                .iter()
                .zip(&a[1].data)
                .map(|(&x, &y)| if add { x + y } else { x * y })
                .collect();
            Tensor::from_vec(a[0].shape.clone(), data)?
        }
        Op::Concat { axis } => concat(a, *axis)?,
        Op::ShortcutA {
            stride,
            out_channels,
        } => {
            let s = *stride as usize;
            let strides = if a[0].ndim() == 3 { [1, s] } else { [s, s] };
            let pad = (*out_channels as usize - a[0].shape[1]) / 2;
            let y = layout::pad_channels(&layout::subsample2d(&lift_2d(a[0]), strides)?, pad, pad)?;
            unlift(y, a[0].ndim())
        }
        Op::LcFold => super::fused::lc_fold(a[0], a[1])?,
        Op::BnFold {
            eps,
            affine,
            output,
        } => super::fused::bn_fold(a, *eps, *affine, *output)?,
        Op::FusedConv { .. } => {
            let (conv, steps) = crate::ir::fold_ops::split_fused(op).expect("fused conv");
            let n = conv.arity().unwrap_or(2);
            let y = eval(&conv, &a[..n], ctx)?;
            super::fused::epilogue(y, steps, &a[n..])?
        }
        Op::Train(t) => super::train_ops::eval(t, a, |x, p| dropout(x, p, ctx))?,
    })
}

/// Records the spatial size of a layer's synthesised kernel under the layer's name. Only
/// the forward kernel node (`<layer>.kernel`) counts: the MAGNet a backward graph recomputes
/// (`<layer>.kernel.grad_unmasked`) is not a layer's kernel.
fn record_kernel_size<T: Scalar>(ctx: &mut Ctx<'_, T>, k: &Tensor<T>) {
    if let Some(layer) = ctx.name.strip_suffix(".kernel") {
        ctx.result
            .kernel_sizes
            .insert(layer.to_string(), k.shape[2..].to_vec());
    }
}

/// Views `[B, C, L]` as `[B, C, 1, L]` so the 2D kernels serve 1D too.
pub(super) fn lift_2d<T: Scalar>(x: &Tensor<T>) -> Tensor<T> {
    if x.ndim() == 3 {
        Tensor {
            shape: vec![x.shape[0], x.shape[1], 1, x.shape[2]],
            data: x.data.clone(),
        }
    } else {
        x.clone()
    }
}

fn unlift<T: Scalar>(y: Tensor<T>, ndim: usize) -> Tensor<T> {
    if ndim == 3 {
        Tensor {
            shape: vec![y.shape[0], y.shape[1], y.shape[3]],
            data: y.data,
        }
    } else {
        y
    }
}

/// A pool's window, stride and padding as the 2D kernels take them (1D pools as `1 × L`).
pub(super) fn pool2d(spec: &PoolSpec) -> pool::Pool2d {
    let two = |v: &[u64]| {
        if v.len() == 1 {
            [1, v[0] as usize]
        } else {
            [v[0] as usize, v[1] as usize]
        }
    };
    pool::Pool2d {
        kernel: two(&spec.kernel),
        stride: two(&spec.stride),
        padding: if spec.padding.len() == 1 {
            [0, spec.padding[0] as usize]
        } else {
            two(&spec.padding)
        },
    }
}

fn pool_op<T: Scalar>(x: &Tensor<T>, spec: &PoolSpec) -> Result<Tensor<T>, RunError> {
    let p = pool2d(spec);
    let lifted = lift_2d(x);
    let y = match spec.kind {
        PoolKind::Max => pool::max_pool2d(&lifted, &p)?,
        PoolKind::Avg => pool::avg_pool2d(&lifted, &p, true)?,
    };
    Ok(unlift(y, x.ndim()))
}

/// `padding` as explicit (low, high) pairs for a kernel of `kernel` taps: how every
/// interpreter conv, forward and backward, resolves `same` and `causal`.
pub(crate) fn resolve_padding(
    padding: &Padding,
    kernel: &[usize],
    dilation: &[usize],
) -> Vec<(usize, usize)> {
    match padding {
        Padding::Explicit(p) => p.iter().map(|&(a, b)| (a as usize, b as usize)).collect(),
        Padding::Same => same_padding(kernel, dilation),
        Padding::Causal => kernel
            .iter()
            .zip(dilation)
            .map(|(&k, &d)| (d * k.saturating_sub(1), 0))
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_op<T: Scalar + FftNum>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    stride: &[u64],
    padding: &Padding,
    dilation: &[u64],
    groups: u64,
    algo: ConvAlgo,
) -> Result<Tensor<T>, RunError> {
    let us = |v: &[u64]| v.iter().map(|&s| s as usize).collect::<Vec<_>>();
    let kernel = &w.shape[2..];
    let plain = stride.iter().all(|&s| s == 1) && dilation.iter().all(|&d| d == 1) && groups == 1;
    if algo == ConvAlgo::Fft && plain {
        match (padding, kernel.len()) {
            (Padding::Causal, 1) => return Ok(fft_causal_conv1d(x, w, bias)?),
            (Padding::Same, 2) if kernel.iter().all(|k| k % 2 == 1) => {
                return Ok(fft_conv2d_same(x, w, bias)?)
            }
            _ => {}
        }
    }
    let dil = us(dilation);
    let pads = resolve_padding(padding, kernel, &dil);
    let p = ConvParams {
        stride: us(stride),
        padding: pads,
        dilation: dil,
        groups: groups as usize,
    };
    if algo == ConvAlgo::Im2col {
        return Ok(crate::reference::im2col::conv_im2col(x, w, bias, &p)?);
    }
    if algo == ConvAlgo::Direct {
        return Ok(crate::reference::direct_tiled::conv_direct(x, w, bias, &p)?);
    }
    Ok(conv(x, w, bias, &p)?)
}

/// The grid cropped where the mask drops below the threshold (docs/papers.md §1.4): centred
/// axes keep `|x| < r` symmetrically; causal axes keep `x > r` (the recent past).
pub(crate) fn mask_crop<T: Scalar>(
    grid: &Tensor<T>,
    mask: &Tensor<T>,
    threshold: f64,
    causal: bool,
) -> Result<Tensor<T>, RunError> {
    let d = grid.shape[0];
    let n: usize = grid.shape[1..].iter().product();
    let mut axes = Vec::with_capacity(d);
    for axis in 0..d {
        // The axis coordinates are the grid values along that axis.
        let k = grid.shape[1 + axis];
        let stride: usize = grid.shape[2 + axis..].iter().product();
        let coords: Vec<T> = (0..k).map(|i| grid.data[axis * n + i * stride]).collect();
        let (mean, sigma) = (mask.data[axis * 2], mask.data[axis * 2 + 1]);
        let (r1, r2) = gauss_roots(<T as Scalar>::from_f64(threshold), mean, sigma);
        let range = if causal {
            crop_causal(&coords, if r1 < r2 { r1 } else { r2 })
        } else {
            let (a1, a2) = (r1.abs(), r2.abs());
            crop_symmetric(&coords, if a1 > a2 { a1 } else { a2 })
        };
        axes.push(coords[range].to_vec());
    }
    Ok(grid_from_axes(&axes))
}

pub(super) fn magnet_params<T: Scalar>(
    a: &[&Tensor<T>],
    layers: usize,
) -> Result<magnet::MagnetParams<T>, RunError> {
    let lin = |w: &Tensor<T>, b: &Tensor<T>| linear::Linear {
        weight: w.clone(),
        bias: Some(b.data.clone()),
    };
    let filters = (0..=layers)
        .map(|l| {
            let f = &a[4 * l..4 * l + 4];
            magnet::GaborFilter {
                linear: lin(f[0], f[1]),
                gamma: f[2].clone(),
                mu: f[3].clone(),
            }
        })
        .collect();
    let base = 4 * (layers + 1);
    let hidden = (0..layers)
        .map(|l| lin(a[base + 2 * l], a[base + 2 * l + 1]))
        .collect();
    let out = base + 2 * layers;
    Ok(magnet::MagnetParams {
        filters,
        hidden,
        output: lin(a[out], a[out + 1]),
    })
}

fn batchnorm<T: Scalar>(
    a: &[&Tensor<T>],
    eps: f64,
    momentum: f64,
    affine: bool,
    running: bool,
    ctx: &mut Ctx<'_, T>,
) -> Result<Tensor<T>, RunError> {
    let aff = affine.then(|| norm::Affine {
        gamma: &a[1].data,
        beta: &a[2].data,
    });
    let stats_at = if affine { 3 } else { 1 };
    let stats = running.then(|| norm::RunningStats {
        mean: a[stats_at].data.clone(),
        var: a[stats_at + 1].data.clone(),
    });
    let (eps, momentum) = (
        <T as Scalar>::from_f64(eps),
        <T as Scalar>::from_f64(momentum),
    );
    match (&stats, ctx.options.mode) {
        (Some(s), Mode::Eval) => Ok(norm::batch_norm_eval(a[0], aff, s, eps)?),
        _ => {
            let (y, updated) = norm::batch_norm_train(
                a[0],
                aff,
                stats.as_ref().filter(|_| ctx.options.mode == Mode::Train),
                momentum,
                eps,
            )?;
            if let Some(u) = updated {
                let c = u.mean.len();
                ctx.result.updated_buffers.insert(
                    format!("{}.running_mean", ctx.name),
                    Tensor::from_vec(vec![c], u.mean)?,
                );
                ctx.result.updated_buffers.insert(
                    format!("{}.running_var", ctx.name),
                    Tensor::from_vec(vec![c], u.var)?,
                );
            }
            Ok(y)
        }
    }
}

/// Training-mode dropout with the counter-based mask of `super::dropout`, which the
/// OpenCL kernels draw bit for bit.
fn dropout<T: Scalar>(x: &Tensor<T>, p: f64, ctx: &mut Ctx<'_, T>) -> Tensor<T> {
    if ctx.options.mode == Mode::Eval || p == 0.0 {
        return x.clone();
    }
    let key = super::dropout::key(ctx.options.seed, super::dropout::layer_of(ctx.name));
    let t = super::dropout::threshold(p);
    let keep = <T as Scalar>::from_f64(1.0 / (1.0 - p));
    let data = x
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if super::dropout::kept(key, i as u32, t) {
                v * keep
            } else {
                <T as Scalar>::zero()
            }
        })
        .collect();
    Tensor {
        shape: x.shape.clone(),
        data,
    }
}

fn concat<T: Scalar>(a: &[&Tensor<T>], axis: usize) -> Result<Tensor<T>, RunError> {
    if axis == 1 {
        return Ok(layout::concat_channels(a)?);
    }
    let first = a[0];
    let outer: usize = first.shape[..axis].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = a.iter().map(|t| t.shape[axis]).sum();
    let mut data = Vec::with_capacity(a.iter().map(|t| t.numel()).sum());
    for o in 0..outer {
        for t in a {
            let chunk = t.numel() / outer.max(1);
            data.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(Tensor::from_vec(shape, data)?)
}
