//! Batch norm's kernels in training mode (batch statistics). The input is swept twice
//! for the batch moments (the mean, then the variance about it, as the interpreter's
//! `batch_stats`), once per batch norm and step: the forward's scale and shift, the
//! running-statistic updates and the backward's sums all read the `[c, 2]` moments
//! ([`batch_moments`]) instead of sweeping the input again. When each recomputed them,
//! a batch norm cost nine sweeps of its input per step; it is now three (and the
//! normalisation and backward maps). A channel is one work-item that reads it in
//! vectors: ResNet-20's channels hold 16–64 of them, enough for a CPU's cores.

use super::build::*;
use super::{Expr, Func, Kernel, Stmt, Ty};

/// The lanes a channel's sweep reads at once: up to 16 (on AVX-512 one register),
/// which ran ResNet-20's batch-norm reductions about 1.7× faster than 8 on PoCL; the
/// elementwise kernels keep `width_for`'s 8 (16 there made FlexTCN-6's step 2.8×
/// slower).
fn reduction_width(n: usize, max: u8) -> u8 {
    if max >= 16 && n.is_multiple_of(16) {
        16
    } else {
        width_for(n, max)
    }
}

/// The per-channel mean of `x` into `mean` and the biased variance into `var`, two
/// passes as the interpreter's `batch_stats`.
fn mean_var(outer: usize, c: usize, inner: usize, w: u8) -> Vec<Stmt> {
    let count = (outer * inner) as f32;
    vec![
        let_("acc", Ty::f32x(w), splat(float(0.0), w)),
        channel_sweep(
            outer,
            c,
            inner,
            w,
            vec![assign("acc", var("acc") + load("x", var("at"), w))],
        ),
        let_("mean", Ty::F32, lanes_sum(var("acc"), w) / float(count)),
        let_("sq", Ty::f32x(w), splat(float(0.0), w)),
        channel_sweep(
            outer,
            c,
            inner,
            w,
            vec![
                let_("d", Ty::f32x(w), load("x", var("at"), w) - var("mean")),
                assign("sq", fma(var("d"), var("d"), var("sq"))),
            ],
        ),
        let_("var", Ty::F32, lanes_sum(var("sq"), w) / float(count)),
    ]
}

/// The batch moments of `x` `[outer, c, inner]`: `m[2c] = mean`, `m[2c + 1]` = the
/// biased variance.
pub fn batch_moments(name: &str, outer: usize, c: usize, inner: usize, vector: u8) -> Kernel {
    let w = reduction_width(inner, vector);
    let mut body = vec![let_("c", Ty::I32, gid(0))];
    body.extend(mean_var(outer, c, inner, w));
    body.extend([
        store("m", var("c") * 2usize, var("mean"), 1),
        store("m", var("c") * 2usize + 1usize, var("var"), 1),
    ]);
    kernel(
        name,
        vec![param("x", true), param("m", false)],
        body,
        vec![c],
        3 * (outer * c * inner) as u64,
    )
}

/// The per-channel scale `s = γ/√(var + eps)` and shift `t = β − mean·s` that
/// normalise with the moments `m`; γ = 1 and β = 0 without `affine`.
pub fn scale_shift(name: &str, c: usize, eps: f32, affine: bool) -> Kernel {
    let (gamma, beta) = if affine {
        (load("g", var("c"), 1), load("bt", var("c"), 1))
    } else {
        (float(1.0), float(0.0))
    };
    let body = vec![
        let_("c", Ty::I32, gid(0)),
        let_("mean", Ty::F32, load("m", var("c") * 2usize, 1)),
        let_(
            "sc",
            Ty::F32,
            gamma
                / call(
                    Func::Sqrt,
                    load("m", var("c") * 2usize + 1usize, 1) + float(eps),
                ),
        ),
        store("s", var("c"), var("sc"), 1),
        store("t", var("c"), beta - var("mean") * var("sc"), 1),
    ];
    let mut params = vec![param("m", true)];
    if affine {
        params.extend([param("g", true), param("bt", true)]);
    }
    params.extend([param("s", false), param("t", false)]);
    kernel(name, params, body, vec![c], 4 * c as u64)
}

/// A batch norm's updated running mean (or variance, from the unbiased batch
/// variance) from the moments `m` of `count` values per channel: `(1 − momentum)·r +
/// momentum·batch`.
pub fn running_stat(name: &str, c: usize, count: usize, momentum: f32, variance: bool) -> Kernel {
    // PyTorch's unbiased variance; with one value per channel the biased one, as the
    // interpreter does, rather than poison the statistics.
    let unbias = if count > 1 {
        count as f32 / (count - 1) as f32
    } else {
        1.0
    };
    running_stat_kernel(name, c, momentum, variance.then(|| float(unbias)))
}

/// [`running_stat`] of a synchronised plan (SyncBatchNorm): the moments `m` are the
/// global batch's, followed by the rank's weight and the unbiasing factor
/// (`runtime::sync_stats::combine_moments`), which the variance reads from `m[2c + 1]`
/// since the global count is known only when the step runs.
pub fn running_stat_synced(name: &str, c: usize, momentum: f32, variance: bool) -> Kernel {
    running_stat_kernel(
        name,
        c,
        momentum,
        variance.then(|| load("m", int(2 * c + 1), 1)),
    )
}

/// `y = (1 − momentum)·r + momentum·batch` per channel, the batch statistic being the
/// mean `m[2c]`, or with `unbias` the variance `m[2c + 1]` times it.
fn running_stat_kernel(name: &str, c: usize, momentum: f32, unbias: Option<Expr>) -> Kernel {
    let batch = match unbias {
        Some(u) => float(momentum) * load("m", var("c") * 2usize + 1usize, 1) * u,
        None => float(momentum) * load("m", var("c") * 2usize, 1),
    };
    let body = vec![
        let_("c", Ty::I32, gid(0)),
        store(
            "y",
            var("c"),
            float(1.0 - momentum) * load("r", var("c"), 1) + batch,
            1,
        ),
    ];
    kernel(
        name,
        vec![param("m", true), param("r", true), param("y", false)],
        body,
        vec![c],
        3 * c as u64,
    )
}

/// The sums a batch norm's backward needs, per channel of `x`, `dy` `[outer, c,
/// inner]` with the moments `m` of `x`: `st[4c..4c+4] = [mean, 1/√(var + eps), Σ dy,
/// Σ dy·x̂]` with x̂ the normalised input. Both the data and the γ gradient read them.
pub fn bn_sums(name: &str, outer: usize, c: usize, inner: usize, eps: f32, vector: u8) -> Kernel {
    let w = reduction_width(inner, vector);
    let body = vec![
        let_("c", Ty::I32, gid(0)),
        let_("mean", Ty::F32, load("m", var("c") * 2usize, 1)),
        let_(
            "inv",
            Ty::F32,
            float(1.0)
                / call(
                    Func::Sqrt,
                    load("m", var("c") * 2usize + 1usize, 1) + float(eps),
                ),
        ),
        let_("sdy", Ty::f32x(w), splat(float(0.0), w)),
        let_("sdx", Ty::f32x(w), splat(float(0.0), w)),
        channel_sweep(
            outer,
            c,
            inner,
            w,
            vec![
                let_("g", Ty::f32x(w), load("dy", var("at"), w)),
                assign("sdy", var("sdy") + var("g")),
                assign(
                    "sdx",
                    fma(var("g"), load("x", var("at"), w) - var("mean"), var("sdx")),
                ),
            ],
        ),
        store("st", var("c") * 4usize, var("mean"), 1),
        store("st", var("c") * 4usize + 1usize, var("inv"), 1),
        store(
            "st",
            var("c") * 4usize + 2usize,
            lanes_sum(var("sdy"), w),
            1,
        ),
        store(
            "st",
            var("c") * 4usize + 3usize,
            lanes_sum(var("sdx"), w) * var("inv"),
            1,
        ),
    ];
    kernel(
        name,
        vec![
            param("x", true),
            param("dy", true),
            param("m", true),
            param("st", false),
        ],
        body,
        vec![c],
        4 * (outer * c * inner) as u64,
    )
}

/// `dx = γ·inv/N·(N·dy − Σdy − x̂·Σdy·x̂)` over `[outer, c, inner]` from the sums of
/// [`bn_sums`]; γ = 1 without `affine` (then `g` is not a parameter).
pub fn bn_backward_data(
    name: &str,
    outer: usize,
    c: usize,
    inner: usize,
    affine: bool,
    vector: u8,
) -> Kernel {
    let w = reduction_width(inner, vector);
    let n = (outer * inner) as f32;
    let s = |k: usize| load("st", var("c") * 4usize + k, 1);
    let gamma = if affine {
        load("g", var("c"), 1)
    } else {
        float(1.0)
    };
    let body = vec![
        let_("i", Ty::I32, gid(0) * w as usize + gid(1) * inner),
        let_("c", Ty::I32, gid(1) % c),
        let_("mean", Ty::F32, s(0)),
        let_("inv", Ty::F32, s(1)),
        let_("sdy", Ty::F32, s(2)),
        let_("sdx", Ty::F32, s(3)),
        let_("k", Ty::F32, gamma * var("inv") / float(n)),
        let_(
            "xh",
            Ty::f32x(w),
            (load("x", var("i"), w) - var("mean")) * var("inv"),
        ),
        store(
            "dx",
            var("i"),
            (load("dy", var("i"), w) * float(n) - var("sdy") - var("xh") * var("sdx")) * var("k"),
            w,
        ),
    ];
    let mut params = vec![param("x", true), param("dy", true), param("st", true)];
    if affine {
        params.push(param("g", true));
    }
    params.push(param("dx", false));
    kernel(
        name,
        params,
        body,
        vec![inner / w as usize, outer * c],
        5 * (outer * c * inner) as u64,
    )
}
