//! FlexConv kernel synthesis on the device: MAGNet evaluated on the (cropped) grid,
//! times the Gaussian mask and the sampling-rate scale, then packed into the layout
//! the conv kernel reads (SEEDS §1.3–1.4; the host reference is
//! `crate::runtime::flex_kernel::eval`).
//!
//! The grid has `N` points, padded to `Np` (a multiple of the vector width) so every
//! load of a row of points is a full vector; intermediate values are `[H, Np]`:
//! - `gabor_layer` (one per Gabor filter `l`): work-item (point vector, unit `j`)
//!   computes `g_l(x)_j = exp(−½ Σ_d (γ_jd (x_d − μ_jd))²) · sin(bg_j + Σ_d Wg_jd x_d)`
//!   and, after the first filter, multiplies it by `c_j + Σ_i U_ji h_i(x)`.
//! - `gauss_mask`: `m(x) = scale · Π_d exp(−½ ((1/σ_d)(x_d − μ_d))²)`.
//! - `magnet_output`: row `r = o·Cin + i` of `ψ = V h + v`, times the mask (or the
//!   scale), stored as the kernel `[Cout, Cin, k…]` (`[R, N]`, row-major).
//! - `repack`: the kernel scaled per output channel into the conv's packed layout.

use super::build::*;
use super::{Func, Kernel, Stmt, Ty};

/// Sizes of one synthesis: `D` axes, `H` hidden units, `N` grid points, `R = Cout·Cin`
/// output rows, `vector` lanes along the points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MagnetSpec {
    pub dims: usize,
    pub hidden: usize,
    pub points: usize,
    pub rows: usize,
    pub vector: u8,
}

impl MagnetSpec {
    /// Points rounded up to whole vectors.
    pub fn padded(&self) -> usize {
        self.points.div_ceil(self.vector as usize) * self.vector as usize
    }

    fn vectors(&self) -> usize {
        self.padded() / self.vector as usize
    }
}

/// The coordinate vector of axis `d` at this work-item's points.
fn coord(s: &MagnetSpec, d: usize) -> super::Expr {
    load("grid", var("p0") + d * s.padded(), s.vector)
}

/// Gabor filter `l` (and, unless `first`, the hidden linear before it) at every point:
/// `grid` `[D, Np]`, `wg`, `gamma`, `mu` `[H, D]`, `bg` `[H]`, then `u` `[H, H]`, `c`
/// `[H]`, `hin` `[H, Np]`; writes `hout` `[H, Np]`.
pub fn gabor_layer(name: &str, s: &MagnetSpec, first: bool) -> Kernel {
    let v = s.vector;
    let (d_n, h_n, np) = (s.dims, s.hidden, s.padded());
    let j = var("j");
    let mut body = vec![
        let_("p0", Ty::I32, gid(0) * v as usize),
        let_("j", Ty::I32, gid(1)),
        let_("sq", Ty::f32x(v), splat(float(0.0), v)),
        let_("arg", Ty::f32x(v), splat(load("bg", j.clone(), 1), v)),
    ];
    for d in 0..d_n {
        let x = format!("x{d}");
        let wi = j.clone() * d_n + d;
        body.push(let_(&x, Ty::f32x(v), coord(s, d)));
        body.push(let_(
            &format!("z{d}"),
            Ty::f32x(v),
            splat(load("gamma", wi.clone(), 1), v)
                * (var(&x) - splat(load("mu", wi.clone(), 1), v)),
        ));
        let z = var(&format!("z{d}"));
        body.push(assign("sq", var("sq") + z.clone() * z));
        body.push(assign(
            "arg",
            var("arg") + splat(load("wg", wi, 1), v) * var(&x),
        ));
    }
    body.push(let_(
        "g",
        Ty::f32x(v),
        call(Func::Exp, float(-0.5) * var("sq")) * call(Func::Sin, var("arg")),
    ));
    let mut params = vec![
        param("grid", true),
        param("wg", true),
        param("bg", true),
        param("gamma", true),
        param("mu", true),
    ];
    if !first {
        body.push(let_("acc", Ty::f32x(v), splat(load("c", j.clone(), 1), v)));
        body.push(for_(
            "i",
            int(0),
            int(h_n),
            false,
            vec![assign(
                "acc",
                fma(
                    splat(load("u", j.clone() * h_n + var("i"), 1), v),
                    load("hin", var("i") * np + var("p0"), v),
                    var("acc"),
                ),
            )],
        ));
        body.push(assign("g", var("g") * var("acc")));
        params.extend([param("u", true), param("c", true), param("hin", true)]);
    }
    body.push(store("hout", j * np + var("p0"), var("g"), v));
    params.push(param("hout", false));
    let per_point = 6 * d_n + 2 + if first { 0 } else { 2 * h_n + 1 };
    Kernel {
        name: name.to_string(),
        params,
        body,
        grid: vec![s.vectors(), h_n],
        local: None,
        flops: (per_point * h_n * np) as u64,
    }
}

/// The separable Gaussian mask times `scale` at every point, from the mask parameters
/// `mp` `[D, 2]` (mean, sigma per axis); writes `m` `[Np]`.
pub fn gauss_mask(name: &str, s: &MagnetSpec, scale: f32) -> Kernel {
    let v = s.vector;
    let mut body = vec![
        let_("p0", Ty::I32, gid(0) * v as usize),
        let_("mv", Ty::f32x(v), splat(float(1.0), v)),
    ];
    for d in 0..s.dims {
        let z = format!("z{d}");
        body.push(let_(
            &z,
            Ty::f32x(v),
            splat(float(1.0) / load("mp", int(2 * d + 1), 1), v)
                * (coord(s, d) - splat(load("mp", int(2 * d), 1), v)),
        ));
        body.push(assign(
            "mv",
            var("mv") * call(Func::Exp, float(-0.5) * var(&z) * var(&z)),
        ));
    }
    if scale != 1.0 {
        body.push(assign("mv", var("mv") * splat(float(scale), v)));
    }
    body.push(store("m", var("p0"), var("mv"), v));
    Kernel {
        name: name.to_string(),
        params: vec![param("grid", true), param("mp", true), param("m", false)],
        body,
        grid: vec![s.vectors()],
        local: None,
        flops: (6 * s.dims * s.padded()) as u64,
    }
}

/// `y[r, p] = (vb[r] + Σ_i V[r, i]·h[i, p]) · m[p]` (or `· scale` without a mask):
/// `h` `[H, Np]`, `v` `[R, H]`, `vb` `[R]`, `m` `[Np]`; writes `y` `[R, N]`.
pub fn magnet_output(name: &str, s: &MagnetSpec, masked: bool, scale: f32) -> Kernel {
    let v = s.vector;
    let (h_n, n, np) = (s.hidden, s.points, s.padded());
    let r = var("r");
    let mut body = vec![
        let_("p0", Ty::I32, gid(0) * v as usize),
        let_("r", Ty::I32, gid(1)),
        let_("acc", Ty::f32x(v), splat(load("vb", r.clone(), 1), v)),
        for_(
            "i",
            int(0),
            int(h_n),
            false,
            vec![assign(
                "acc",
                fma(
                    splat(load("v", r.clone() * h_n + var("i"), 1), v),
                    load("h", var("i") * np + var("p0"), v),
                    var("acc"),
                ),
            )],
        ),
    ];
    if masked {
        body.push(assign("acc", var("acc") * load("m", var("p0"), v)));
    } else if scale != 1.0 {
        body.push(assign("acc", var("acc") * splat(float(scale), v)));
    }
    let base = r * n + var("p0");
    let full = vec![store("y", base.clone(), var("acc"), v)];
    let vw = v as usize;
    let lanes: Vec<Stmt> = (0..v)
        .map(|l| {
            if_(
                lt(var("p0") + l as usize, int(n)),
                vec![store(
                    "y",
                    base.clone() + l as usize,
                    lane(var("acc"), l),
                    1,
                )],
                vec![],
            )
        })
        .collect();
    if v == 1 || n.is_multiple_of(vw) {
        body.extend(full);
    } else {
        body.push(if_(le(var("p0") + vw, int(n)), full, lanes));
    }
    let mut params = vec![param("h", true), param("v", true), param("vb", true)];
    if masked {
        params.push(param("m", true));
    }
    params.push(param("y", false));
    Kernel {
        name: name.to_string(),
        params,
        body,
        grid: vec![s.vectors(), s.rows],
        local: None,
        flops: (2 * h_n * s.rows * n) as u64,
    }
}

/// The kernel `w` `[co, ci, taps]` times `s[co]`, packed to `[ceil(co/t)][ci][taps][t]`
/// (zeros past `co`), as `conv::pack_weights` does on the host.
pub fn repack(name: &str, co: usize, ci: usize, taps: usize, t: usize) -> Kernel {
    let total = co.div_ceil(t) * t * ci * taps;
    let i = var("i");
    let body = vec![
        let_("i", Ty::I32, gid(0)),
        let_("j", Ty::I32, i.clone() % t),
        let_("k", Ty::I32, (i.clone() / t) % taps),
        let_("c", Ty::I32, (i.clone() / (t * taps)) % ci),
        let_("o", Ty::I32, (i.clone() / (t * taps * ci)) * t + var("j")),
        store(
            "y",
            i,
            select(
                lt(var("o"), int(co)),
                load("w", (var("o") * ci + var("c")) * taps + var("k"), 1) * load("s", var("o"), 1),
                float(0.0),
            ),
            1,
        ),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![param("w", true), param("s", true), param("y", false)],
        body,
        grid: vec![total],
        local: None,
        flops: (co * ci * taps) as u64,
    }
}

/// `y[o, q] = w[o, q] · s[o]` over `rows` × `inner` (a batch norm folded into a
/// synthesised weight).
pub fn scale_rows(name: &str, rows: usize, inner: usize) -> Kernel {
    let body = vec![
        let_("i", Ty::I32, gid(0)),
        store(
            "y",
            var("i"),
            load("w", var("i"), 1) * load("s", var("i") / inner, 1),
            1,
        ),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![param("w", true), param("s", true), param("y", false)],
        body,
        grid: vec![rows * inner],
        local: None,
        flops: (rows * inner) as u64,
    }
}
