//! Kernels for the memory-bound ops: elementwise maps, per-channel affine maps (batch
//! norm in evaluation), pools, linear layers and layout changes. Where the sizes allow,
//! elementwise kernels handle `V` elements per work-item with vector loads and stores.

use super::build::*;
use super::{Expr, Func, Kernel, Ty};

/// Elementwise maps of one or two inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MapKind {
    Relu,
    Gelu,
    Scale(f32),
    Add { relu: bool },
    Mul,
}

impl MapKind {
    fn arity(self) -> usize {
        match self {
            MapKind::Add { .. } | MapKind::Mul => 2,
            _ => 1,
        }
    }
}

/// `y = f(x[, z])` over `n` elements.
pub fn map(name: &str, kind: MapKind, n: usize, vector: u8) -> Kernel {
    let w = width_for(n, vector);
    let ty = Ty::f32x(w);
    let i = var("i");
    let x = load("x", i.clone(), w);
    let value = match kind {
        MapKind::Relu => max(x, float(0.0)),
        MapKind::Scale(f) => x * splat(float(f), w),
        MapKind::Add { relu } => {
            let s = x + load("z", i.clone(), w);
            if relu {
                max(s, float(0.0))
            } else {
                s
            }
        }
        MapKind::Mul => x * load("z", i.clone(), w),
        MapKind::Gelu => {
            // x/2 · (1 + erf(x/√2)), PyTorch's exact form.
            let half = var("v") * splat(float(0.5), w);
            half * (splat(float(1.0), w)
                + call(
                    Func::Erf,
                    var("v") * splat(float(std::f32::consts::FRAC_1_SQRT_2), w),
                ))
        }
    };
    let mut body = vec![let_("i", Ty::I32, gid(0) * w as usize)];
    if kind == MapKind::Gelu {
        body.push(let_("v", ty, load("x", i.clone(), w)));
    }
    body.push(store("y", i, value, w));
    let mut params = vec![param("x", true)];
    if kind.arity() == 2 {
        params.push(param("z", true));
    }
    params.push(param("y", false));
    kernel(name, params, body, vec![n / w as usize], n as u64)
}

/// `y = x·s[c] + t[c]` (plus `r`, a tensor like `x`, with `residual`; then ReLU) over
/// `[outer, c, inner]`: a batch norm's scale and shift.
pub fn affine_channel(
    name: &str,
    (outer, c, inner): (usize, usize, usize),
    residual: bool,
    relu: bool,
    vector: u8,
) -> Kernel {
    let w = width_for(inner, vector);
    let mut v = fma(
        load("x", var("i"), w),
        splat(load("s", var("c"), 1), w),
        splat(load("t", var("c"), 1), w),
    );
    let mut params = vec![param("x", true), param("s", true), param("t", true)];
    if residual {
        v = v + load("r", var("i"), w);
        params.push(param("r", true));
    }
    params.push(param("y", false));
    if relu {
        v = max(v, float(0.0));
    }
    let body = vec![
        let_("i", Ty::I32, gid(0) * w as usize + gid(1) * inner),
        let_("c", Ty::I32, gid(1) % c),
        store("y", var("i"), v, w),
    ];
    kernel(
        name,
        params,
        body,
        vec![inner / w as usize, outer * c],
        (2 + u64::from(residual)) * (outer * c * inner) as u64,
    )
}

/// A 2D window pool over `[planes, h, w]`; zero padding counts in averages (PyTorch's
/// default) and never wins a max.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    name: &str,
    max_pool: bool,
    planes: usize,
    hw: [usize; 2],
    out: [usize; 2],
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Kernel {
    let ih = var("oh") * stride[0] + var("kh") - pad[0];
    let iw = var("ow") * stride[1] + var("kw") - pad[1];
    let inside = and(
        and(le(int(0), ih.clone()), lt(ih.clone(), int(hw[0]))),
        and(le(int(0), iw.clone()), lt(iw.clone(), int(hw[1]))),
    );
    let x = load("x", (var("pl") * hw[0] + ih) * hw[1] + iw, 1);
    let update = if max_pool {
        assign("acc", max(var("acc"), x))
    } else {
        assign("acc", var("acc") + x)
    };
    let init = if max_pool { f32::NEG_INFINITY } else { 0.0 };
    let result = if max_pool {
        var("acc")
    } else {
        var("acc") * float(1.0 / (k[0] * k[1]) as f32)
    };
    let body = vec![
        let_("ow", Ty::I32, gid(0)),
        let_("oh", Ty::I32, gid(1)),
        let_("pl", Ty::I32, gid(2)),
        let_("acc", Ty::F32, float(init)),
        for_(
            "kh",
            int(0),
            int(k[0]),
            true,
            vec![for_(
                "kw",
                int(0),
                int(k[1]),
                true,
                vec![if_(inside, vec![update], vec![])],
            )],
        ),
        store(
            "y",
            (var("pl") * out[0] + var("oh")) * out[1] + var("ow"),
            result,
            1,
        ),
    ];
    kernel(
        name,
        vec![param("x", true), param("y", false)],
        body,
        vec![out[1], out[0], planes],
        // Saturating: a pathological pool (a window of 2^63) must not overflow here.
        [out[0], out[1], k[0], k[1]]
            .iter()
            .fold(planes as u64, |a, &b| a.saturating_mul(b as u64)),
    )
}

/// Mean of each of `planes` rows of `inner` elements.
pub fn row_mean(name: &str, planes: usize, inner: usize, vector: u8) -> Kernel {
    let w = width_for(inner, vector);
    let mut body = vec![
        let_("pl", Ty::I32, gid(0)),
        let_("acc", Ty::f32x(w), splat(float(0.0), w)),
        for_(
            "j",
            int(0),
            int(inner / w as usize),
            false,
            vec![assign(
                "acc",
                var("acc") + load("x", var("pl") * inner + var("j") * w as usize, w),
            )],
        ),
    ];
    let total = if w == 1 {
        var("acc")
    } else {
        (0..w)
            .map(|l| lane(var("acc"), l))
            .reduce(|a, b| a + b)
            .expect("lanes")
    };
    body.push(store("y", var("pl"), total * float(1.0 / inner as f32), 1));
    kernel(
        name,
        vec![param("x", true), param("y", false)],
        body,
        vec![planes],
        (planes * inner) as u64,
    )
}

/// `y[b, o] = Σ_f x[b, f]·w[o, f] + bias[o]`.
pub fn linear(name: &str, batch: usize, features: usize, outputs: usize, vector: u8) -> Kernel {
    let w = width_for(features, vector);
    let mut body = vec![
        let_("o", Ty::I32, gid(0)),
        let_("b", Ty::I32, gid(1)),
        let_("acc", Ty::f32x(w), splat(float(0.0), w)),
        for_(
            "j",
            int(0),
            int(features / w as usize),
            false,
            vec![assign(
                "acc",
                fma(
                    load("x", var("b") * features + var("j") * w as usize, w),
                    load("w", var("o") * features + var("j") * w as usize, w),
                    var("acc"),
                ),
            )],
        ),
    ];
    let total: Expr = if w == 1 {
        var("acc")
    } else {
        (0..w)
            .map(|l| lane(var("acc"), l))
            .reduce(|a, b| a + b)
            .expect("lanes")
    };
    body.push(store(
        "y",
        var("b") * outputs + var("o"),
        total + load("bias", var("o"), 1),
        1,
    ));
    kernel(
        name,
        vec![
            param("x", true),
            param("w", true),
            param("bias", true),
            param("y", false),
        ],
        body,
        vec![outputs, batch],
        2 * (batch * features * outputs) as u64,
    )
}

/// Option-A shortcut on `[n, ci, h, w]`: subsample by `stride`, pad channels with
/// `pad` zero channels on each side up to `co`.
#[allow(clippy::too_many_arguments)]
pub fn shortcut_a(
    name: &str,
    n: usize,
    ci: usize,
    hw: [usize; 2],
    co: usize,
    out: [usize; 2],
    stride: [usize; 2],
    pad: usize,
) -> Kernel {
    let c_in = var("c") - pad;
    let inside = and(le(int(0), c_in.clone()), lt(c_in.clone(), int(ci)));
    let src =
        ((var("b") * ci + c_in) * hw[0] + var("oh") * stride[0]) * hw[1] + var("ow") * stride[1];
    let body = vec![
        let_("ow", Ty::I32, gid(0)),
        let_("oh", Ty::I32, gid(1)),
        let_("b", Ty::I32, gid(2) / co),
        let_("c", Ty::I32, gid(2) % co),
        store(
            "y",
            (gid(2) * out[0] + var("oh")) * out[1] + var("ow"),
            select(inside, load("x", src, 1), float(0.0)),
            1,
        ),
    ];
    kernel(
        name,
        vec![param("x", true), param("y", false)],
        body,
        vec![out[1], out[0], n * co],
        0,
    )
}

/// Copies `[outer, chunk]` into columns `offset..offset+chunk` of `[outer, total]`
/// (one operand of a concat).
pub fn copy_block(name: &str, outer: usize, chunk: usize, total: usize, offset: usize) -> Kernel {
    let body = vec![store(
        "y",
        gid(1) * total + offset + gid(0),
        load("x", gid(1) * chunk + gid(0), 1),
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

/// `y[i] = x[i·stride + offset]` for `n` elements (the last time step of `[B, C, T]`).
pub fn strided_take(name: &str, n: usize, stride: usize, offset: usize) -> Kernel {
    let body = vec![store(
        "y",
        gid(0),
        load("x", gid(0) * stride + offset, 1),
        1,
    )];
    kernel(
        name,
        vec![param("x", true), param("y", false)],
        body,
        vec![n],
        0,
    )
}
