//! Kernels for the regularisers a training loss adds (`reference::grad::regularizers`,
//! docs/autodiff.md "Regularisers"): the orthogonality penalty of shared bases, the
//! FlexConv anti-aliasing penalty and the unsquared L2 norm of a generated kernel.
//!
//! Each reads parameters (or one generated kernel), never activations, and runs once
//! per step, so these are simple scalar kernels; what they share (the Gram matrix of a
//! stage's filters, a norm) is written once per step and read by the value and by
//! every gradient (`plan::lower_regularizers`).

use super::build::*;
use super::{BinOp, Expr, Func, Kernel, Ty};

/// `|x|` as `max(x, −x)`: the IR has no `fabs`.
fn abs(x: Expr) -> Expr {
    max(x.clone(), float(-1.0) * x)
}

/// 1, −1 or 0 (at 0, where `|x|`'s gradient is taken as 0, as the interpreter does).
fn sign(x: Expr) -> Expr {
    select(
        lt(float(0.0), x.clone()),
        float(1.0),
        select(lt(x, float(0.0)), float(-1.0), float(0.0)),
    )
}

/// `bt[q, i] = b[i, q]` for `b` `[n, len]`: the stacked filters transposed, so that
/// the Gram matrix `B Bᵀ` is a matrix product with contiguous rows on both sides.
pub fn transpose(name: &str, n: usize, len: usize) -> Kernel {
    let body = vec![store(
        "bt",
        gid(1) * n + gid(0),
        load("b", gid(0) * len + gid(1), 1),
        1,
    )];
    kernel(
        name,
        vec![param("b", true), param("bt", false)],
        body,
        vec![n, len],
        0,
    )
}

/// The masked Gram matrix of a stage's filters from `g = B Bᵀ` `[n, n]` (every filter
/// a row of `B`: the shared tensors' first, `s` rows, then the unique ones):
/// `e[i, j] = M_ij·(g[i, j] − δ_ij)`. `M` counts every shared row against every row,
/// and a unique row against the rows of its own conv only: `blk` `[n]` numbers each
/// row's conv (any value for shared rows). Also `sym = factor·(e + eᵀ)`, the matrix
/// the gradient multiplies `B` by. One work-item per entry.
pub fn ortho_mask(name: &str, n: usize, s: usize, factor: f32) -> Kernel {
    let (i, j) = (var("i"), var("j"));
    let counted = |i: Expr, j: Expr| {
        select(
            lt(i.clone(), int(s)),
            float(1.0),
            select(
                le(int(s), j.clone()),
                select(
                    eq(load("blk", i, 1), load("blk", j, 1)),
                    float(1.0),
                    float(0.0),
                ),
                float(0.0),
            ),
        )
    };
    let delta = |i: Expr, j: Expr| select(eq(i, j), float(1.0), float(0.0));
    let body = vec![
        let_("j", Ty::I32, gid(0)),
        let_("i", Ty::I32, gid(1)),
        let_(
            "dij",
            Ty::F32,
            load("g", i.clone() * n + j.clone(), 1) - delta(i.clone(), j.clone()),
        ),
        let_(
            "dji",
            Ty::F32,
            load("g", j.clone() * n + i.clone(), 1) - delta(i.clone(), j.clone()),
        ),
        let_("eij", Ty::F32, counted(i.clone(), j.clone()) * var("dij")),
        store("e", i.clone() * n + j.clone(), var("eij"), 1),
        store(
            "sym",
            i.clone() * n + j.clone(),
            float(factor) * (var("eij") + counted(j, i) * var("dji")),
            1,
        ),
    ];
    kernel(
        name,
        vec![
            param("g", true),
            param("blk", true),
            param("e", false),
            param("sym", false),
        ],
        body,
        vec![n, n],
        6 * n * n,
    )
}

/// `out[0] = scale · Σ e²` over the `count` entries of `e`: the penalty's value (the
/// entries `M` does not count are 0). One work-item.
pub fn sum_of_squares_scaled(name: &str, count: usize, scale: f32) -> Kernel {
    let body = vec![
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "q",
            int(0),
            int(count),
            false,
            vec![
                let_("v", Ty::F32, load("e", var("q"), 1)),
                assign("acc", fma(var("v"), var("v"), var("acc"))),
            ],
        ),
        store("out", int(0), float(scale) * var("acc"), 1),
    ];
    kernel(
        name,
        vec![param("e", true), param("out", false)],
        body,
        vec![1],
        2 * count,
    )
}

/// The constants of one FlexConv layer's anti-aliasing penalty
/// (`ir::train_ops::AntialiasAttrs`, in f32).
pub struct Antialias {
    /// Entries of each Gabor filter's weight (and of its γ, the same shape).
    pub sizes: Vec<usize>,
    /// The mask's axes `D` (`[D, 2]` parameters), where the mask is counted.
    pub mask_axes: Option<usize>,
    pub stddevs: f32,
    pub nyquist: f32,
    pub weight: f32,
}

/// One FlexConv layer's anti-aliasing penalty and every gradient, in one work-item:
/// reads `w0, g0, w1, g1, …` (each filter's Gabor weight and γ) then `m` (the mask
/// parameters, where counted); writes `value` `[1]`, then `dw0, dg0, …` and `dm`.
///
/// As `reference::grad::regularizers::antialias_penalty`: `f_l` is the largest
/// `(|w| + s·|γ|)/2π` of filter `l`, `f_mask = s·max_a 1/|σ_a| / 2π`, the value
/// `weight · Σ_l ReLU(f_l + f_mask/n − f_Nyq/n)²`, and each maximum's gradient is shared
/// evenly by the entries that tie for it. The candidates of a maximum are first
/// written to the gradient buffer and read back, so that the entries compared with the
/// maximum are bit for bit the values it was taken over.
pub fn antialias(name: &str, a: &Antialias) -> Kernel {
    let tau = 2.0 * std::f32::consts::PI;
    let s = a.stddevs;
    let nf = a.sizes.len() as f32;
    let mut params = Vec::new();
    for l in 0..a.sizes.len() {
        params.extend([param(&format!("w{l}"), true), param(&format!("g{l}"), true)]);
    }
    if a.mask_axes.is_some() {
        params.push(param("m", true));
    }
    params.push(param("value", false));
    for l in 0..a.sizes.len() {
        params.extend([
            param(&format!("dw{l}"), false),
            param(&format!("dg{l}"), false),
        ]);
    }
    if a.mask_axes.is_some() {
        params.push(param("dm", false));
    }
    let mut body = vec![
        let_("fm", Ty::F32, float(0.0)),
        let_("dmask", Ty::F32, float(0.0)),
        let_("total", Ty::F32, float(0.0)),
    ];
    let mut flops = 0;
    if let Some(d) = a.mask_axes {
        // 1/|σ| per axis, kept in dm's sigma slots; the means get no gradient.
        let sigma = load("m", var("a") * 2usize + 1usize, 1);
        body.extend([
            let_("mx", Ty::F32, float(0.0)),
            for_(
                "a",
                int(0),
                int(d),
                false,
                vec![
                    let_("inv", Ty::F32, float(1.0) / abs(sigma.clone())),
                    store("dm", var("a") * 2usize, float(0.0), 1),
                    store("dm", var("a") * 2usize + 1usize, var("inv"), 1),
                    assign("mx", max(var("mx"), var("inv"))),
                ],
            ),
            let_("mc", Ty::F32, float(0.0)),
            for_(
                "a",
                int(0),
                int(d),
                false,
                vec![assign(
                    "mc",
                    var("mc")
                        + select(
                            eq(load("dm", var("a") * 2usize + 1usize, 1), var("mx")),
                            float(1.0),
                            float(0.0),
                        ),
                )],
            ),
            assign("fm", float(s / tau) * var("mx")),
        ]);
        flops += 6 * d;
    }
    for (l, &size) in a.sizes.iter().enumerate() {
        let (w, g, dw, dg) = (
            format!("w{l}"),
            format!("g{l}"),
            format!("dw{l}"),
            format!("dg{l}"),
        );
        let (f, cnt, ex, share) = (
            format!("f{l}"),
            format!("cnt{l}"),
            format!("ex{l}"),
            format!("share{l}"),
        );
        let at = var("q");
        let combined =
            (abs(load(&w, at.clone(), 1)) + float(s) * abs(load(&g, at.clone(), 1))) / float(tau);
        let hit = || eq(load(&dw, at.clone(), 1), var(&f));
        body.extend([
            // The candidates (all ≥ 0, so 0 starts the maximum: an all-zero filter
            // ties everywhere, as the interpreter's maximum does).
            let_(&f, Ty::F32, float(0.0)),
            for_(
                "q",
                int(0),
                int(size),
                false,
                vec![
                    store(&dw, at.clone(), combined, 1),
                    assign(&f, max(var(&f), load(&dw, at.clone(), 1))),
                ],
            ),
            let_(&cnt, Ty::F32, float(0.0)),
            for_(
                "q",
                int(0),
                int(size),
                false,
                vec![assign(
                    &cnt,
                    var(&cnt) + select(hit(), float(1.0), float(0.0)),
                )],
            ),
            let_(
                &ex,
                Ty::F32,
                max(
                    var(&f) + var("fm") / float(nf) - float(a.nyquist / nf),
                    float(0.0),
                ),
            ),
            assign("total", fma(var(&ex), var(&ex), var("total"))),
            // d/d f_l of ex² is 2·ex; f_mask enters every filter's term divided by n.
            assign("dmask", var("dmask") + float(2.0 / nf) * var(&ex)),
            let_(
                &share,
                Ty::F32,
                float(2.0 * a.weight / tau) * var(&ex) / var(&cnt),
            ),
            for_(
                "q",
                int(0),
                int(size),
                false,
                vec![
                    let_("hit", Ty::I32, hit()),
                    store(
                        &dw,
                        at.clone(),
                        select(
                            var("hit"),
                            var(&share) * sign(load(&w, at.clone(), 1)),
                            float(0.0),
                        ),
                        1,
                    ),
                    store(
                        &dg,
                        at.clone(),
                        select(
                            var("hit"),
                            float(s) * var(&share) * sign(load(&g, at.clone(), 1)),
                            float(0.0),
                        ),
                        1,
                    ),
                ],
            ),
        ]);
        flops += 12 * size;
    }
    if let Some(d) = a.mask_axes {
        // d(1/|σ|)/dσ = −sign(σ)/σ², at the axes that tie for the largest 1/|σ|.
        let slot = var("a") * 2usize + 1usize;
        body.extend([
            let_(
                "mshare",
                Ty::F32,
                float(-a.weight * s / tau) * var("dmask") / var("mc"),
            ),
            for_(
                "a",
                int(0),
                int(d),
                false,
                vec![
                    let_("sg", Ty::F32, load("m", slot.clone(), 1)),
                    store(
                        "dm",
                        slot.clone(),
                        select(
                            eq(load("dm", slot.clone(), 1), var("mx")),
                            var("mshare") * sign(var("sg")) / (var("sg") * var("sg")),
                            float(0.0),
                        ),
                        1,
                    ),
                ],
            ),
        ]);
        flops += 5 * d;
    }
    body.push(store("value", int(0), float(a.weight) * var("total"), 1));
    kernel(name, params, body, vec![1], flops)
}

/// Partial sums of squares of `x` `[n]`: work-item `k` of `parts` sums the chunk
/// `k·chunk .. min((k + 1)·chunk, n)` into `out[k]`, so that a large generated kernel
/// is not summed by one work-item alone.
pub fn partial_squares(name: &str, n: usize, parts: usize) -> Kernel {
    let chunk = n.div_ceil(parts.max(1));
    let body = vec![
        let_("k", Ty::I32, gid(0)),
        let_("acc", Ty::F32, float(0.0)),
        let_(
            "end",
            Ty::I32,
            Expr::Bin(
                BinOp::Min,
                Box::new(var("k") * chunk + chunk),
                Box::new(int(n)),
            ),
        ),
        for_(
            "q",
            var("k") * chunk,
            var("end"),
            false,
            vec![
                let_("v", Ty::F32, load("x", var("q"), 1)),
                assign("acc", fma(var("v"), var("v"), var("acc"))),
            ],
        ),
        store("out", var("k"), var("acc"), 1),
    ];
    kernel(
        name,
        vec![param("x", true), param("out", false)],
        body,
        vec![parts],
        2 * n,
    )
}

/// `nrm[0] = √(Σ partial)` and `value[0] = weight · nrm[0]`. One work-item.
pub fn norm_finish(name: &str, parts: usize, weight: f32) -> Kernel {
    let body = vec![
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "k",
            int(0),
            int(parts),
            false,
            vec![assign("acc", var("acc") + load("partial", var("k"), 1))],
        ),
        let_("r", Ty::F32, call(Func::Sqrt, var("acc"))),
        store("nrm", int(0), var("r"), 1),
        store("value", int(0), float(weight) * var("r"), 1),
    ];
    kernel(
        name,
        vec![
            param("partial", true),
            param("nrm", false),
            param("value", false),
        ],
        body,
        vec![1],
        parts + 2,
    )
}

/// `out = weight · x / nrm[0]`, zeros where the norm is 0 (as PyTorch's `norm`
/// gives). One work-item per element.
pub fn norm_grad(name: &str, n: usize, weight: f32) -> Kernel {
    let body = vec![
        let_("t", Ty::I32, gid(0)),
        let_("r", Ty::F32, load("nrm", int(0), 1)),
        store(
            "out",
            var("t"),
            select(
                lt(float(0.0), var("r")),
                float(weight) * load("x", var("t"), 1) / var("r"),
                float(0.0),
            ),
            1,
        ),
    ];
    kernel(
        name,
        vec![param("x", true), param("nrm", true), param("out", false)],
        body,
        vec![n],
        2 * n,
    )
}
