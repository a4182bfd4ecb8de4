//! Kernels for FlexConv's kernel synthesis in training: the backward of MAGNet
//! (`reference::grad::magnet::magnet_backward`), of the Gaussian mask and of the mask
//! product, and the forward mask product over computed values.
//!
//! Every buffer of points is `[rows, N]`, unpadded, and the kernels are scalar: the
//! reductions run over the `N` grid points (a few thousand at most), and the backward
//! runs once per step, so simple index arithmetic wins over vector tails.
//!
//! The backward recomputes the forward's intermediates once for all of a layer's
//! parameters: [`gabor_parts`] writes, per Gabor filter `l`, `S_l = env·sin(arg)`
//! (the filter's output `g_l`) and `C_l = env·cos(arg)`, and for `l ≥ 1` the hidden
//! linear's output `z_l` and `h_l = z_l·g_l`. With `dg` the gradient of `g_l`,
//! `∂/∂arg = dg·C_l` and `∂/∂env·env = dg·S_l`, which [`gabor_grads`] reduces to the
//! filter's four parameter gradients.

use super::build::*;
use super::{Func, Kernel, Ty};

/// Gabor filter `l` at every point, for its backward: reads `grid` `[D, N]`, `wg`,
/// `gamma`, `mu` `[H, D]`, `bg` `[H]` (then, unless `first`, `u` `[H, H]`, `cb` `[H]`,
/// `hin` `[H, N]`); writes `s`, `c` `[H, N]` (then `z`, `hout` `[H, N]`). cos is
/// `sin(arg + π/2)`: the IR has no cos, and the shift costs one rounding of `arg`.
pub fn gabor_parts(name: &str, dims: usize, hidden: usize, n: usize, first: bool) -> Kernel {
    let j = var("j");
    let at = j.clone() * n + var("p");
    let mut body = vec![
        let_("p", Ty::I32, gid(0)),
        let_("j", Ty::I32, gid(1)),
        let_("sq", Ty::F32, float(0.0)),
        let_("arg", Ty::F32, load("bg", j.clone(), 1)),
    ];
    for d in 0..dims {
        let (x, z) = (format!("x{d}"), format!("z{d}"));
        let wi = j.clone() * dims + d;
        body.push(let_(&x, Ty::F32, load("grid", var("p") + d * n, 1)));
        body.push(let_(
            &z,
            Ty::F32,
            load("gamma", wi.clone(), 1) * (var(&x) - load("mu", wi.clone(), 1)),
        ));
        body.push(assign("sq", var("sq") + var(&z) * var(&z)));
        body.push(assign("arg", var("arg") + load("wg", wi, 1) * var(&x)));
    }
    body.push(let_(
        "env",
        Ty::F32,
        call(Func::Exp, float(-0.5) * var("sq")),
    ));
    body.push(let_(
        "sv",
        Ty::F32,
        var("env") * call(Func::Sin, var("arg")),
    ));
    body.push(store("s", at.clone(), var("sv"), 1));
    body.push(store(
        "c",
        at.clone(),
        var("env") * call(Func::Sin, var("arg") + float(std::f32::consts::FRAC_PI_2)),
        1,
    ));
    let mut params = vec![
        param("grid", true),
        param("wg", true),
        param("bg", true),
        param("gamma", true),
        param("mu", true),
    ];
    if !first {
        body.push(let_("acc", Ty::F32, load("cb", j.clone(), 1)));
        body.push(for_(
            "i",
            int(0),
            int(hidden),
            false,
            vec![assign(
                "acc",
                fma(
                    load("u", j.clone() * hidden + var("i"), 1),
                    load("hin", var("i") * n + var("p"), 1),
                    var("acc"),
                ),
            )],
        ));
        body.push(store("z", at.clone(), var("acc"), 1));
        body.push(store("hout", at, var("acc") * var("sv"), 1));
        params.extend([param("u", true), param("cb", true), param("hin", true)]);
    }
    params.extend([param("s", false), param("c", false)]);
    if !first {
        params.extend([param("z", false), param("hout", false)]);
    }
    let per_point = 6 * dims + 6 + if first { 0 } else { 2 * hidden + 1 };
    kernel(name, params, body, vec![n, hidden], per_point * hidden * n)
}

/// `out[r, c] = Σ_p a[r, p]·b[c, p]` for `a` `[R, N]`, `b` `[C, N]`: the gradient of
/// a linear's weight from its output's gradient and its input. Each work-item sums
/// `vector` points at a time (unaligned vector loads), then the tail.
pub fn outer(name: &str, rows: usize, cols: usize, n: usize, vector: u8) -> Kernel {
    let w = vector as usize;
    let full = n / w;
    let mut body = vec![
        let_("c", Ty::I32, gid(0)),
        let_("r", Ty::I32, gid(1)),
        let_("acc", Ty::f32x(vector), splat(float(0.0), vector)),
        for_(
            "j",
            int(0),
            int(full),
            false,
            vec![assign(
                "acc",
                fma(
                    load("a", var("r") * n + var("j") * w, vector),
                    load("b", var("c") * n + var("j") * w, vector),
                    var("acc"),
                ),
            )],
        ),
    ];
    let total = if vector == 1 {
        var("acc")
    } else {
        (0..vector)
            .map(|l| lane(var("acc"), l))
            .reduce(|x, y| x + y)
            .expect("lanes")
    };
    body.push(let_("sum", Ty::F32, total));
    body.push(for_(
        "q",
        int(full * w),
        int(n),
        false,
        vec![assign(
            "sum",
            fma(
                load("a", var("r") * n + var("q"), 1),
                load("b", var("c") * n + var("q"), 1),
                var("sum"),
            ),
        )],
    ));
    body.push(store("out", var("r") * cols + var("c"), var("sum"), 1));
    kernel(
        name,
        vec![param("a", true), param("b", true), param("out", false)],
        body,
        vec![cols, rows],
        2 * rows * cols * n,
    )
}

/// `out[r] = Σ_p a[r, p]` for `a` `[R, N]`: the gradient of a linear's bias.
pub fn row_sums(name: &str, rows: usize, n: usize) -> Kernel {
    let body = vec![
        let_("r", Ty::I32, gid(0)),
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "q",
            int(0),
            int(n),
            false,
            vec![assign(
                "acc",
                var("acc") + load("a", var("r") * n + var("q"), 1),
            )],
        ),
        store("out", var("r"), var("acc"), 1),
    ];
    kernel(
        name,
        vec![param("a", true), param("out", false)],
        body,
        vec![rows],
        rows * n,
    )
}

/// `out[k, p] = Σ_r w[r, k]·d[r, p]` for `w` `[O, I]`, `d` `[O, N]`: the gradient
/// of a linear's input. A work-item computes `vector` consecutive points; the last
/// one, where `N` is not a multiple, point by point (a vector load there would read
/// past the buffer).
pub fn transpose_apply(name: &str, o: usize, i: usize, n: usize, vector: u8) -> Kernel {
    let w = vector as usize;
    let sweep = |width: u8, at: super::Expr| {
        vec![
            let_("acc", Ty::f32x(width), splat(float(0.0), width)),
            for_(
                "r",
                int(0),
                int(o),
                false,
                vec![assign(
                    "acc",
                    fma(
                        splat(load("w", var("r") * i + var("k"), 1), width),
                        load("d", var("r") * n + at.clone(), width),
                        var("acc"),
                    ),
                )],
            ),
            store("out", var("k") * n + at, var("acc"), width),
        ]
    };
    let mut body = vec![let_("p0", Ty::I32, gid(0) * w), let_("k", Ty::I32, gid(1))];
    let vectors = sweep(vector, var("p0"));
    if n.is_multiple_of(w) {
        body.extend(vectors);
    } else {
        let tail = vec![for_("p", var("p0"), int(n), false, sweep(1, var("p")))];
        body.push(if_(le(var("p0") + w, int(n)), vectors, tail));
    }
    kernel(
        name,
        vec![param("w", true), param("d", true), param("out", false)],
        body,
        vec![n.div_ceil(w), i],
        2 * o * i * n,
    )
}

/// Through `h_l = z_l·g_l`: from `dh`, `z`, `s` (= `g_l`), all `[len]`, writes
/// `dg = dh·z` and `dz = dh·s`.
pub fn split_product(name: &str, len: usize) -> Kernel {
    let i = var("i");
    let body = vec![
        let_("i", Ty::I32, gid(0)),
        let_("d", Ty::F32, load("dh", i.clone(), 1)),
        store("dg", i.clone(), var("d") * load("z", i.clone(), 1), 1),
        store("dz", i.clone(), var("d") * load("s", i, 1), 1),
    ];
    kernel(
        name,
        vec![
            param("dh", true),
            param("z", true),
            param("s", true),
            param("dg", false),
            param("dz", false),
        ],
        body,
        vec![len],
        2 * len,
    )
}

/// A Gabor filter's parameter gradients from the gradient `dg` `[H, N]` of its
/// output and its recomputed `s`, `c` `[H, N]`: one work-item per unit `j` writes
/// `dwg`, `dgamma`, `dmu` `[H, D]` and `dbg` `[H]`, with `da = dg·c`,
/// `de = −dg·s`: `dWg = Σ da·x`, `dbg = Σ da`, `dγ = Σ de·γ(x − μ)²`,
/// `dμ = −Σ de·γ²(x − μ)`.
pub fn gabor_grads(name: &str, dims: usize, hidden: usize, n: usize) -> Kernel {
    let j = var("j");
    let at = j.clone() * n + var("q");
    let mut body = vec![
        let_("j", Ty::I32, gid(0)),
        let_("acc_b", Ty::F32, float(0.0)),
    ];
    let mut inner = vec![
        let_("dgv", Ty::F32, load("dg", at.clone(), 1)),
        let_("da", Ty::F32, var("dgv") * load("c", at.clone(), 1)),
        let_("de", Ty::F32, float(0.0) - var("dgv") * load("s", at, 1)),
        assign("acc_b", var("acc_b") + var("da")),
    ];
    for d in 0..dims {
        let wi = j.clone() * dims + d;
        let (g, m) = (format!("g{d}"), format!("m{d}"));
        body.push(let_(&g, Ty::F32, load("gamma", wi.clone(), 1)));
        body.push(let_(&m, Ty::F32, load("mu", wi, 1)));
        for acc in ["w", "gm", "mu"] {
            body.push(let_(&format!("acc_{acc}{d}"), Ty::F32, float(0.0)));
        }
        let x = format!("x{d}");
        let off = format!("off{d}");
        inner.push(let_(&x, Ty::F32, load("grid", var("q") + d * n, 1)));
        inner.push(let_(&off, Ty::F32, var(&x) - var(&m)));
        let (wa, ga, ma) = (
            format!("acc_w{d}"),
            format!("acc_gm{d}"),
            format!("acc_mu{d}"),
        );
        inner.push(assign(&wa, fma(var("da"), var(&x), var(&wa))));
        inner.push(assign(
            &ga,
            var(&ga) + var("de") * var(&g) * var(&off) * var(&off),
        ));
        inner.push(assign(
            &ma,
            var(&ma) - var("de") * var(&g) * var(&g) * var(&off),
        ));
    }
    body.push(for_("q", int(0), int(n), false, inner));
    body.push(store("dbg", j.clone(), var("acc_b"), 1));
    for d in 0..dims {
        let wi = j.clone() * dims + d;
        body.push(store("dwg", wi.clone(), var(&format!("acc_w{d}")), 1));
        body.push(store("dgamma", wi.clone(), var(&format!("acc_gm{d}")), 1));
        body.push(store("dmu", wi, var(&format!("acc_mu{d}")), 1));
    }
    kernel(
        name,
        vec![
            param("grid", true),
            param("gamma", true),
            param("mu", true),
            param("dg", true),
            param("s", true),
            param("c", true),
            param("dwg", false),
            param("dbg", false),
            param("dgamma", false),
            param("dmu", false),
        ],
        body,
        vec![hidden],
        (4 + 10 * dims) * hidden * n,
    )
}

/// The Gaussian mask's gradient to its parameters `mp` `[D, 2]` (mean, sigma per
/// axis) from the upstream `dm` `[N]` at `grid` `[D, N]`: work-item `a` (an axis)
/// recomputes the mask `m` and sums `g = dm·m/σ_a` times `z = (x_a − mean_a)/σ_a`
/// into the mean's gradient, times `z²` into the sigma's; writes `out` `[D, 2]`.
pub fn gauss_mask_backward(name: &str, dims: usize, n: usize) -> Kernel {
    let a = var("a");
    let mut inner = vec![let_("mv", Ty::F32, float(1.0))];
    for d in 0..dims {
        let z = format!("z{d}");
        inner.push(let_(
            &z,
            Ty::F32,
            (float(1.0) / load("mp", int(2 * d + 1), 1))
                * (load("grid", var("q") + d * n, 1) - load("mp", int(2 * d), 1)),
        ));
        inner.push(assign(
            "mv",
            var("mv") * call(Func::Exp, float(-0.5) * var(&z) * var(&z)),
        ));
    }
    inner.extend([
        let_(
            "za",
            Ty::F32,
            (load("grid", a.clone() * n + var("q"), 1) - var("mean")) / var("sigma"),
        ),
        let_(
            "g",
            Ty::F32,
            load("dm", var("q"), 1) * var("mv") / var("sigma"),
        ),
        assign("acc_m", fma(var("g"), var("za"), var("acc_m"))),
        assign("acc_s", var("acc_s") + var("g") * var("za") * var("za")),
    ]);
    let body = vec![
        let_("a", Ty::I32, gid(0)),
        let_("mean", Ty::F32, load("mp", a.clone() * 2usize, 1)),
        let_("sigma", Ty::F32, load("mp", a.clone() * 2usize + 1usize, 1)),
        let_("acc_m", Ty::F32, float(0.0)),
        let_("acc_s", Ty::F32, float(0.0)),
        for_("q", int(0), int(n), false, inner),
        store("out", a.clone() * 2usize, var("acc_m"), 1),
        store("out", a * 2usize + 1usize, var("acc_s"), 1),
    ];
    kernel(
        name,
        vec![
            param("grid", true),
            param("mp", true),
            param("dm", true),
            param("out", false),
        ],
        body,
        vec![dims],
        (8 * dims + 8) * dims * n,
    )
}

/// `out[p] = Σ_r dy[r, p]·k[r, p]` over the `rows = Cout·Cin` rows of a kernel
/// `[rows, N]`: the mask product's gradient to the mask.
pub fn mask_mul_backward_mask(name: &str, rows: usize, n: usize) -> Kernel {
    let at = var("r") * n + var("q");
    let body = vec![
        let_("q", Ty::I32, gid(0)),
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "r",
            int(0),
            int(rows),
            false,
            vec![assign(
                "acc",
                fma(load("dy", at.clone(), 1), load("k", at, 1), var("acc")),
            )],
        ),
        store("out", var("q"), var("acc"), 1),
    ];
    kernel(
        name,
        vec![param("dy", true), param("k", true), param("out", false)],
        body,
        vec![n],
        2 * rows * n,
    )
}

/// `y[r, p] = k[r, p]·m[p]`: a kernel `[rows, N]` times a mask `[N]`.
pub fn mask_mul(name: &str, rows: usize, n: usize) -> Kernel {
    let at = var("r") * n + var("q");
    let body = vec![
        let_("q", Ty::I32, gid(0)),
        let_("r", Ty::I32, gid(1)),
        store(
            "y",
            at.clone(),
            load("k", at, 1) * load("m", var("q"), 1),
            1,
        ),
    ];
    kernel(
        name,
        vec![param("k", true), param("m", true), param("y", false)],
        body,
        vec![n, rows],
        rows * n,
    )
}
