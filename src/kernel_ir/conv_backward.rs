//! Convolution backward to data and to filter, in the forward's conventions
//! ([`ConvSpec`]: cross-correlation, 1D as 2D with a height of 1, `(low, high)` padding
//! resolved from `same`/`causal`). The forward reads `x_pad[n, ci, oh·s + kh·d, …]`
//! for every tap; each backward kernel walks the same taps from the other side.
//!
//! - **To data, general** ([`data_kernel`]): one work-item per input element gathers
//!   every `(co, kh, kw)` whose tap lands on it (`ih + pad − kh·d` a multiple of the
//!   stride, inside the output). Handles stride, dilation and groups; scalar, since
//!   the taps that contribute are irregular. A stride-1 conv without groups instead
//!   runs the forward's register-tiled kernel on `dy` with the flipped, transposed
//!   weight ([`flip_repack`]; see `plan::lower_conv_backward`).
//! - **To filter** ([`filter_kernel`]): one work-item per `(co, ci', kh)` and a tile of
//!   up to [`FILTER_TAPS`] `kw` taps; each tap is a vector accumulator over `V`
//!   consecutive output columns, reduced over batch and rows. `x` is read from a
//!   zero-padded copy (the forward's `pad_kernel`), so the loop has no bounds checks;
//!   a tap tile past `kw` recomputes the last tap and does not store it.

use super::build::*;
use super::conv::ConvSpec;
use super::{Kernel, Param, Stmt, Ty};

/// Taps of one row each filter work-item accumulates at once (registers: `V` lanes
/// each): enough to reuse one `dy` vector for a 3-, 5- or 7-tap row.
pub const FILTER_TAPS: usize = 8;

fn p(name: &str, read_only: bool) -> Param {
    Param {
        name: name.to_string(),
        read_only,
    }
}

/// `dx [n, ci, h, w]` from `dy [n, co, oh, ow]` and `w [co, ci/groups, kh, kw]`.
pub fn data_kernel(name: &str, s: &ConvSpec, groups: usize) -> Kernel {
    let [oh_n, ow_n] = s.out();
    let (cig, cog) = (s.ci / groups, s.co / groups);
    let [kh_n, kw_n] = s.k;
    // Offsets into the padded input, of which the output position is `t / stride`.
    let th = var("ih") + s.pad[0].0 - var("kh") * s.dilation[0];
    let tw = var("iw") + s.pad[1].0 - var("kw") * s.dilation[1];
    let on_grid = |t: &str, st: usize, n: usize| {
        and(
            and(
                le(int(0), var(t)),
                bin(super::BinOp::Eq, var(t) % st, int(0)),
            ),
            lt(var(t) / st, int(n)),
        )
    };
    let col = vec![
        let_("tw", Ty::I32, tw),
        if_(
            on_grid("tw", s.stride[1], ow_n),
            vec![assign(
                "acc",
                fma(
                    load("dy", var("yr") + var("tw") / s.stride[1], 1),
                    load("w", var("wr") + var("kw"), 1),
                    var("acc"),
                ),
            )],
            vec![],
        ),
    ];
    let row = vec![
        let_("th", Ty::I32, th),
        if_(
            on_grid("th", s.stride[0], oh_n),
            vec![
                let_("yr", Ty::I32, var("yc") + var("th") / s.stride[0] * ow_n),
                let_("wr", Ty::I32, var("wc") + var("kh") * kw_n),
                for_("kw", int(0), int(kw_n), false, col),
            ],
            vec![],
        ),
    ];
    let body = vec![
        let_("iw", Ty::I32, gid(0)),
        let_("ih", Ty::I32, gid(1)),
        let_("n", Ty::I32, gid(2) / s.ci),
        let_("c", Ty::I32, gid(2) % s.ci),
        let_("g", Ty::I32, var("c") / cig),
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "o",
            int(0),
            int(cog),
            false,
            vec![
                let_("co", Ty::I32, var("g") * cog + var("o")),
                let_("yc", Ty::I32, (var("n") * s.co + var("co")) * (oh_n * ow_n)),
                let_(
                    "wc",
                    Ty::I32,
                    (var("co") * cig + var("c") % cig) * (kh_n * kw_n),
                ),
                for_("kh", int(0), int(kh_n), false, row),
            ],
        ),
        store(
            "dx",
            (gid(2) * s.h + var("ih")) * s.w + var("iw"),
            var("acc"),
            1,
        ),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![p("dy", true), p("w", true), p("dx", false)],
        body,
        grid: vec![s.w, s.h, s.n * s.ci],
        local: None,
        flops: s.flops() / groups as u64,
    }
}

/// The forward spec whose conv of `dy` with the flipped, transposed weight is the
/// backward to data of `s`, or `None` where that does not hold (a stride above 1, or
/// padding wider than the dilated kernel's reach).
pub fn data_as_forward(s: &ConvSpec) -> Option<ConvSpec> {
    if s.stride != [1, 1] {
        return None;
    }
    let [oh, ow] = s.out();
    let mut pad = [(0, 0); 2];
    for (i, p) in pad.iter_mut().enumerate() {
        let reach = s.dilation[i] * (s.k[i] - 1);
        *p = (
            reach.checked_sub(s.pad[i].0)?,
            reach.checked_sub(s.pad[i].1)?,
        );
    }
    Some(ConvSpec {
        n: s.n,
        ci: s.co,
        h: oh,
        w: ow,
        co: s.ci,
        k: s.k,
        stride: [1, 1],
        dilation: s.dilation,
        pad,
        residual: false,
        relu: false,
    })
}

/// `w [co, ci, kh, kw]` flipped in space and transposed to `[ci, co, kh, kw]`, packed
/// as `conv::pack_weights` packs a forward weight of `ci` output channels:
/// `[ceil(ci/t)][co][kh·kw][t]`, zeros past `ci`.
pub fn flip_repack(name: &str, co: usize, ci: usize, taps: usize, t: usize) -> Kernel {
    let total = ci.div_ceil(t) * t * co * taps;
    let i = var("i");
    let body = vec![
        let_("i", Ty::I32, gid(0)),
        let_("j", Ty::I32, i.clone() % t),
        let_("k", Ty::I32, (i.clone() / t) % taps),
        let_("o", Ty::I32, (i.clone() / (t * taps)) % co),
        let_("c", Ty::I32, (i.clone() / (t * taps * co)) * t + var("j")),
        store(
            "y",
            i,
            select(
                lt(var("c"), int(ci)),
                load(
                    "w",
                    (var("o") * ci + var("c")) * taps + (int(taps - 1) - var("k")),
                    1,
                ),
                float(0.0),
            ),
            1,
        ),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![p("w", true), p("y", false)],
        body,
        grid: vec![total],
        local: None,
        flops: 0,
    }
}

/// `dw [co, ci/groups, kh, kw]` from the zero-padded input `x [n, ci, hp, wp]` and
/// `dy [n, co, oh, ow]`, with `vector` lanes over output columns.
pub fn filter_kernel(
    name: &str,
    s: &ConvSpec,
    groups: usize,
    hp: usize,
    wp: usize,
    vector: u8,
) -> Kernel {
    let [oh_n, ow_n] = s.out();
    let (cig, cog) = (s.ci / groups, s.co / groups);
    let [kh_n, kw_n] = s.k;
    let tk = kw_n.min(FILTER_TAPS);
    let kb_n = kw_n.div_ceil(tk);
    let v = if ow_n >= vector as usize { vector } else { 1 };
    let vw = v as usize;
    let full = ow_n / vw;
    let (st, dil) = (s.stride, s.dilation);
    let acc = |j: usize| format!("acc{j}");
    let tap = |j: usize| format!("t{j}");
    let rest = |j: usize| format!("r{j}");
    let mut body = vec![
        let_("kb", Ty::I32, gid(0) % kb_n),
        let_("kh", Ty::I32, gid(0) / kb_n),
        let_("c", Ty::I32, gid(1)),
        let_("co", Ty::I32, gid(2)),
        let_("ic", Ty::I32, var("co") / cog * cig + var("c")),
    ];
    for j in 0..tk {
        // Past the row's end, recompute the last tap (its store is skipped).
        body.push(let_(
            &tap(j),
            Ty::I32,
            bin(super::BinOp::Min, var("kb") * tk + j, int(kw_n - 1)),
        ));
        body.push(let_(&acc(j), Ty::f32x(v), splat(float(0.0), v)));
        body.push(let_(&rest(j), Ty::F32, float(0.0)));
    }
    // One vector of dy, one gathered vector of x per tap.
    let mut vec_step = vec![let_(
        "g",
        Ty::f32x(v),
        load("dy", var("yr") + var("q") * vw, v),
    )];
    for j in 0..tk {
        let xi = var("xr") + var("q") * (vw * st[1]) + var(&tap(j)) * dil[1];
        vec_step.push(assign(
            &acc(j),
            fma(var("g"), gather("x", xi, st[1] as i64, v), var(&acc(j))),
        ));
    }
    // Columns past the last full vector: scalar accumulators of their own.
    let mut tail = vec![let_("gs", Ty::F32, load("dy", var("yr") + var("q"), 1))];
    for j in 0..tk {
        let xi = var("xr") + var("q") * st[1] + var(&tap(j)) * dil[1];
        tail.push(assign(
            &rest(j),
            fma(var("gs"), load("x", xi, 1), var(&rest(j))),
        ));
    }
    let mut inner = vec![
        let_("yr", Ty::I32, var("yc") + var("oh") * ow_n),
        let_(
            "xr",
            Ty::I32,
            var("xc") + (var("oh") * st[0] + var("kh") * dil[0]) * wp,
        ),
        for_("q", int(0), int(full), false, vec_step),
    ];
    if full * vw < ow_n {
        inner.push(for_("q", int(full * vw), int(ow_n), false, tail));
    }
    body.push(for_(
        "n",
        int(0),
        int(s.n),
        false,
        vec![
            let_("yc", Ty::I32, (var("n") * s.co + var("co")) * (oh_n * ow_n)),
            let_("xc", Ty::I32, (var("n") * s.ci + var("ic")) * (hp * wp)),
            for_("oh", int(0), int(oh_n), false, inner),
        ],
    ));
    let wb = ((var("co") * cig + var("c")) * kh_n + var("kh")) * kw_n;
    for j in 0..tk {
        let total = if v == 1 {
            var(&acc(j)) + var(&rest(j))
        } else {
            (0..v)
                .map(|l| lane(var(&acc(j)), l))
                .fold(var(&rest(j)), |a, b| a + b)
        };
        let st: Stmt = store("dw", wb.clone() + var(&tap(j)), total, 1);
        body.push(if_(lt(var("kb") * tk + j, int(kw_n)), vec![st], vec![]));
    }
    Kernel {
        name: name.to_string(),
        params: vec![p("x", true), p("dy", true), p("dw", false)],
        body,
        grid: vec![kh_n * kb_n, cig, s.co],
        local: None,
        flops: s.flops() / groups as u64,
    }
}
