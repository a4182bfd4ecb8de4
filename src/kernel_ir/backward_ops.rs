//! Kernels of a training step that are not convolutions: the loss, the per-channel
//! reductions of batch norm's backward and running statistics, pooling backward, the
//! layout backward ops and dropout masks. Reductions give one work-item a channel or
//! a row and read it with vector loads, as `ops::channel_stats` and `ops::row_mean`
//! do; the scatter-shaped backward ops (pools, shortcut, last step) are written as
//! gathers, one work-item per input element, so no two work-items write one place.
//!
//! Each kernel computes what the interpreter's op computes (`runtime::train_ops`),
//! tie rules and label checks included as far as a kernel can: a label that is not a
//! class index gives NaN (the OpenCL backend also checks labels on the host).

use super::build::*;
use super::{BinOp, Expr, Func, Kernel, Stmt, Ty};

fn min(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Min, a, b)
}

/// `y[c] = Σ_{n, j} x[n, c, j]` over `[outer, c, inner]`: the gradient of a bias.
pub fn channel_sum(name: &str, outer: usize, c: usize, inner: usize, vector: u8) -> Kernel {
    let w = width_for(inner, vector);
    let body = vec![
        let_("c", Ty::I32, gid(0)),
        let_("acc", Ty::f32x(w), splat(float(0.0), w)),
        channel_sweep(
            outer,
            c,
            inner,
            w,
            vec![assign("acc", var("acc") + load("x", var("at"), w))],
        ),
        store("y", var("c"), lanes_sum(var("acc"), w), 1),
    ];
    kernel(
        name,
        vec![param("x", true), param("y", false)],
        body,
        vec![c],
        (outer * c * inner) as u64,
    )
}

/// The label of row `b` as a class index in `li` and whether it is one (a whole
/// number in `0..k`) in `ok`; an invalid label reads class 0.
fn label(k: usize) -> Vec<Stmt> {
    vec![
        let_("lf", Ty::F32, load("labels", var("b"), 1)),
        // Clamped first: converting a float outside i32's range is undefined.
        let_(
            "li",
            Ty::I32,
            to_int(min(max(var("lf"), float(-1.0)), float(k as f32))),
        ),
        let_(
            "ok",
            Ty::I32,
            and(
                eq(to_float(var("li")), var("lf")),
                and(le(int(0), var("li")), lt(var("li"), int(k))),
            ),
        ),
        assign("li", select(var("ok"), var("li"), int(0))),
    ]
}

/// `lse = max + log Σ exp(z − max)` of row `b` of `[batch, k]` logits `z`.
fn log_sum_exp(k: usize) -> Vec<Stmt> {
    let z = load("z", var("b") * k + var("j"), 1);
    vec![
        let_("m", Ty::F32, float(f32::NEG_INFINITY)),
        for_(
            "j",
            int(0),
            int(k),
            false,
            vec![assign("m", max(var("m"), z.clone()))],
        ),
        let_("se", Ty::F32, float(0.0)),
        for_(
            "j",
            int(0),
            int(k),
            false,
            vec![assign("se", var("se") + call(Func::Exp, z - var("m")))],
        ),
        let_("lse", Ty::F32, var("m") + call(Func::Log, var("se"))),
    ]
}

/// The cross-entropy of each row of `[batch, k]` logits against its label, with label
/// smoothing `eps`: `−(1 − eps)·log p[y] − eps·mean_j log p[j]`. The loss is the mean
/// of these (`ops::row_mean`).
pub fn cross_entropy_rows(name: &str, batch: usize, k: usize, eps: f32) -> Kernel {
    let mut body = vec![let_("b", Ty::I32, gid(0))];
    body.extend(label(k));
    body.extend(log_sum_exp(k));
    body.extend([
        let_("sz", Ty::F32, float(0.0)),
        for_(
            "j",
            int(0),
            int(k),
            false,
            vec![assign(
                "sz",
                var("sz") + load("z", var("b") * k + var("j"), 1),
            )],
        ),
        let_(
            "l",
            Ty::F32,
            float(0.0)
                - (float(1.0 - eps) * (load("z", var("b") * k + var("li"), 1) - var("lse"))
                    + float(eps) * (var("sz") / float(k as f32) - var("lse"))),
        ),
        store(
            "rows",
            var("b"),
            select(var("ok"), var("l"), float(f32::NAN)),
            1,
        ),
    ]);
    kernel(
        name,
        vec![
            param("z", true),
            param("labels", true),
            param("rows", false),
        ],
        body,
        vec![batch],
        4 * (batch * k) as u64,
    )
}

/// The gradient of the mean cross-entropy to the logits: `(softmax(z) − q)/batch`
/// with `q` the smoothed one-hot label.
pub fn cross_entropy_backward(name: &str, batch: usize, k: usize, eps: f32) -> Kernel {
    let off = eps / k as f32;
    let mut body = vec![let_("b", Ty::I32, gid(0))];
    body.extend(label(k));
    body.extend(log_sum_exp(k));
    let at = var("b") * k + var("j");
    body.push(for_(
        "j",
        int(0),
        int(k),
        false,
        vec![
            let_(
                "q",
                Ty::F32,
                select(eq(var("j"), var("li")), float(1.0 - eps + off), float(off)),
            ),
            let_(
                "d",
                Ty::F32,
                float(1.0 / batch as f32)
                    * (call(Func::Exp, load("z", at.clone(), 1) - var("lse")) - var("q")),
            ),
            store("dz", at, select(var("ok"), var("d"), float(f32::NAN)), 1),
        ],
    ));
    kernel(
        name,
        vec![param("z", true), param("labels", true), param("dz", false)],
        body,
        vec![batch],
        5 * (batch * k) as u64,
    )
}

/// `dx = dy` where `x > 0`, else 0, over `n` elements; with `summed`, `dy + dy2`
/// (another parameter) for `dy`.
pub fn relu_backward(name: &str, n: usize, summed: bool) -> Kernel {
    let mut dy = load("dy", gid(0), 1);
    let mut params = vec![param("x", true), param("dy", true)];
    if summed {
        dy = dy + load("dy2", gid(0), 1);
        params.push(param("dy2", true));
    }
    params.push(param("dx", false));
    let body = vec![store(
        "dx",
        gid(0),
        select(le(load("x", gid(0), 1), float(0.0)), float(0.0), dy),
        1,
    )];
    kernel(
        name,
        params,
        body,
        vec![n],
        (1 + u64::from(summed)) * n as u64,
    )
}

/// `dx = dy·(Φ(x) + x·φ(x))`, the exact GELU's derivative, over `n` elements.
pub fn gelu_backward(name: &str, n: usize, vector: u8) -> Kernel {
    let w = width_for(n, vector);
    let x = var("v");
    let cdf = splat(float(0.5), w)
        * (splat(float(1.0), w)
            + call(
                Func::Erf,
                x.clone() * splat(float(std::f32::consts::FRAC_1_SQRT_2), w),
            ));
    let inv_sqrt_2pi = (0.5 / std::f64::consts::PI).sqrt() as f32;
    let pdf = call(Func::Exp, x.clone() * x.clone() * splat(float(-0.5), w))
        * splat(float(inv_sqrt_2pi), w);
    let body = vec![
        let_("i", Ty::I32, gid(0) * w as usize),
        let_("v", Ty::f32x(w), load("x", var("i"), w)),
        store("dx", var("i"), load("dy", var("i"), w) * (cdf + x * pdf), w),
    ];
    kernel(
        name,
        vec![param("x", true), param("dy", true), param("dx", false)],
        body,
        vec![n / w as usize],
        12 * n as u64,
    )
}

/// Training-mode dropout over `n` elements (`runtime::dropout`): the mask `1/(1 − p)`
/// where kept, 0 where dropped, times `x` when `with_x`. The run's seed is read from
/// `seed` (two 16-bit words), the layer's salt is baked in.
pub fn dropout(name: &str, n: usize, p_drop: f64, salt: u32, with_x: bool) -> Kernel {
    let threshold = crate::runtime::dropout::threshold(p_drop);
    let scale = (1.0 / (1.0 - p_drop)) as f32;
    let key = hash(
        hash(int(salt as i32), to_int(load("seed", int(0), 1))),
        to_int(load("seed", int(1), 1)),
    );
    let mask = select(
        le(int(threshold), hash(var("key"), gid(0))),
        float(scale),
        float(0.0),
    );
    let value = if with_x {
        load("x", gid(0), 1) * mask
    } else {
        mask
    };
    let body = vec![let_("key", Ty::I32, key), store("y", gid(0), value, 1)];
    let mut params = Vec::new();
    if with_x {
        params.push(param("x", true));
    }
    params.extend([param("seed", true), param("y", false)]);
    kernel(name, params, body, vec![n], n as u64)
}

/// `dx[pl, j] = dy[pl]/inner` over `[planes, inner]`: global average pooling's backward.
pub fn spread_mean(name: &str, planes: usize, inner: usize, vector: u8) -> Kernel {
    let w = width_for(inner, vector);
    let body = vec![store(
        "dx",
        gid(0) * w as usize + gid(1) * inner,
        splat(load("dy", gid(1), 1) * float(1.0 / inner as f32), w),
        w,
    )];
    kernel(
        name,
        vec![param("dy", true), param("dx", false)],
        body,
        vec![inner / w as usize, planes],
        (planes * inner) as u64,
    )
}

/// `dx[r, t] = dy[r]` at `t = len − 1`, 0 elsewhere, over `[rows, len]`.
pub fn last_backward(name: &str, rows: usize, len: usize) -> Kernel {
    let body = vec![store(
        "dx",
        gid(1) * len + gid(0),
        select(
            eq(gid(0), int(len as i64 - 1)),
            load("dy", gid(1), 1),
            float(0.0),
        ),
        1,
    )];
    kernel(
        name,
        vec![param("dy", true), param("dx", false)],
        body,
        vec![len, rows],
        0,
    )
}

/// Columns `offset..offset+chunk` of `[outer, total]` into `[outer, chunk]`: one
/// operand's share of a concatenation's gradient.
pub fn take_block(name: &str, outer: usize, chunk: usize, total: usize, offset: usize) -> Kernel {
    let body = vec![store(
        "y",
        gid(1) * chunk + gid(0),
        load("x", gid(1) * total + offset + gid(0), 1),
        1,
    )];
    kernel(
        name,
        vec![param("x", true), param("y", false)],
        body,
        vec![chunk, outer],
        0,
    )
}

/// The backward of the option-A shortcut on `[n, ci, h, w]` (see `ops::shortcut_a`):
/// `dx` is `dy`'s middle channels at the positions the stride kept, 0 elsewhere.
#[allow(clippy::too_many_arguments)]
pub fn shortcut_a_backward(
    name: &str,
    n: usize,
    ci: usize,
    hw: [usize; 2],
    co: usize,
    out: [usize; 2],
    stride: [usize; 2],
    pad: usize,
) -> Kernel {
    let kept = and(
        eq(var("ih") % stride[0], int(0)),
        eq(var("iw") % stride[1], int(0)),
    );
    let src = ((var("b") * co + var("c") + pad) * out[0] + var("ih") / stride[0]) * out[1]
        + var("iw") / stride[1];
    let body = vec![
        let_("iw", Ty::I32, gid(0)),
        let_("ih", Ty::I32, gid(1)),
        let_("b", Ty::I32, gid(2) / ci),
        let_("c", Ty::I32, gid(2) % ci),
        store(
            "dx",
            (gid(2) * hw[0] + var("ih")) * hw[1] + var("iw"),
            select(kept, load("dy", src, 1), float(0.0)),
            1,
        ),
    ];
    kernel(
        name,
        vec![param("dy", true), param("dx", false)],
        body,
        vec![hw[1], hw[0], n * ci],
        0,
    )
}

/// The backward of a 2D window pool over `[planes, h, w]` (`ops::pool`'s forward),
/// one work-item per input element, gathering from every window that holds it. Max
/// pooling sends a window's gradient to its first maximum in row-major order (the
/// interpreter's tie rule; padding never wins); average pooling spreads it evenly,
/// the padding counted in the divisor.
#[allow(clippy::too_many_arguments)]
pub fn pool_backward(
    name: &str,
    max_pool: bool,
    planes: usize,
    hw: [usize; 2],
    out: [usize; 2],
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Kernel {
    // The window (oh, ow) holds (ih, iw) at offset (kh, kw) when
    // oh·s + kh − pad = ih, i.e. nh = ih + pad − kh is a multiple of s below out·s.
    let nh = var("ih") + pad[0] - var("kh");
    let nw = var("iw") + pad[1] - var("kw");
    let holds = and(
        and(
            and(
                le(int(0), var("nh")),
                lt(var("nh"), int(out[0] * stride[0])),
            ),
            eq(var("nh") % stride[0], int(0)),
        ),
        and(
            and(
                le(int(0), var("nw")),
                lt(var("nw"), int(out[1] * stride[1])),
            ),
            eq(var("nw") % stride[1], int(0)),
        ),
    );
    let g = load(
        "dy",
        (var("pl") * out[0] + var("nh") / stride[0]) * out[1] + var("nw") / stride[1],
        1,
    );
    let contribution = if max_pool {
        let yy = var("nh") + var("a");
        let xx = var("nw") + var("c");
        let inside = and(
            and(
                le(int(pad[0]), yy.clone()),
                lt(yy.clone(), int(hw[0] + pad[0])),
            ),
            and(
                le(int(pad[1]), xx.clone()),
                lt(xx.clone(), int(hw[1] + pad[1])),
            ),
        );
        let pos = (yy - pad[0]) * hw[1] + xx - pad[1];
        vec![
            let_("m", Ty::F32, float(f32::NEG_INFINITY)),
            let_("best", Ty::I32, int(-1)),
            for_(
                "a",
                int(0),
                int(k[0]),
                false,
                vec![for_(
                    "c",
                    int(0),
                    int(k[1]),
                    false,
                    vec![if_(
                        inside,
                        vec![
                            let_("pos", Ty::I32, pos),
                            let_("v", Ty::F32, load("x", var("base") + var("pos"), 1)),
                            if_(
                                lt(var("best"), int(0)),
                                vec![assign("best", var("pos"))],
                                vec![],
                            ),
                            if_(
                                lt(var("m"), var("v")),
                                vec![assign("m", var("v")), assign("best", var("pos"))],
                                vec![],
                            ),
                        ],
                        vec![],
                    )],
                )],
            ),
            if_(
                eq(var("best"), var("ih") * hw[1] + var("iw")),
                vec![assign("acc", var("acc") + g)],
                vec![],
            ),
        ]
    } else {
        vec![assign(
            "acc",
            fma(g, float(1.0 / (k[0] * k[1]) as f32), var("acc")),
        )]
    };
    let mut inner = vec![let_("nh", Ty::I32, nh), let_("nw", Ty::I32, nw)];
    inner.push(if_(holds, contribution, vec![]));
    let body = vec![
        let_("iw", Ty::I32, gid(0)),
        let_("ih", Ty::I32, gid(1)),
        let_("pl", Ty::I32, gid(2)),
        let_("base", Ty::I32, var("pl") * (hw[0] * hw[1])),
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "kh",
            int(0),
            int(k[0]),
            false,
            vec![for_("kw", int(0), int(k[1]), false, inner)],
        ),
        store(
            "dx",
            var("base") + var("ih") * hw[1] + var("iw"),
            var("acc"),
            1,
        ),
    ];
    let per = if max_pool { k[0] * k[1] + 1 } else { 1 };
    kernel(
        name,
        vec![param("x", true), param("dy", true), param("dx", false)],
        body,
        vec![hw[1], hw[0], planes],
        (planes * hw[0] * hw[1] * k[0] * k[1] * per) as u64,
    )
}

/// `y[i] = x[i]` for `i < n`, 0 up to `len`: a conv bias padded to the kernel's tile
/// of output channels.
pub fn pad_vector(name: &str, n: usize, len: usize) -> Kernel {
    let body = vec![store(
        "y",
        gid(0),
        select(lt(gid(0), int(n)), load("x", gid(0), 1), float(0.0)),
        1,
    )];
    kernel(
        name,
        vec![param("x", true), param("y", false)],
        body,
        vec![len],
        0,
    )
}
