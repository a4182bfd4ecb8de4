//! Convolution backward to data and to filter, in the forward's conventions
//! ([`ConvSpec`]: cross-correlation, 1D as 2D with a height of 1, `(low, high)` padding
//! resolved from `same`/`causal`). The forward reads `x_pad[n, ci, oh·s + kh·d, …]`
//! for every tap; each backward kernel walks the same taps from the other side.
//!
//! - **To data, general** ([`data_kernel`]): one work-item per input element gathers
//!   every `(co, kh, kw)` whose tap lands on it (`ih + pad − kh·d` a multiple of the
//!   stride, inside the output). Handles stride, dilation and groups; scalar, since
//!   the taps that contribute are irregular; used for grouped convs. A conv without
//!   groups instead runs the forward's register-tiled kernel on `dy` (spread out by
//!   the stride with zeros: [`data_as_forward`], [`spread_pad_kernel`]) with the
//!   flipped, transposed weight ([`flip_repack`]; see `plan::lower_conv_backward`).
//!   At stride 2 that computes 4× the products and still ran ResNet-20's strided
//!   convs 5× faster than the gather kernel on PoCL.
//! - **To filter** ([`filter_kernel`]): one work-item per `(ci', kh)`, a tile of up to
//!   4 output channels and a tile of up to [`FILTER_TAPS`] `kw` taps; each (channel,
//!   tap) is a vector accumulator over `V` consecutive output columns, reduced over
//!   batch and rows. `x` is read from a zero-padded copy (the forward's
//!   `pad_kernel`), so the loop has no bounds checks; a tap tile past `kw` recomputes
//!   the last tap and does not store it.

use super::build::*;
use super::conv::ConvSpec;
use super::{Kernel, Stmt, Ty};

/// Taps of one row each filter work-item accumulates at once (registers: `V` lanes
/// each): enough to reuse one `dy` vector for a 3-, 5- or 7-tap row.
pub const FILTER_TAPS: usize = 8;

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
    // The tap checks stay outside the channel loop, which is then pure FMAs.
    let plane = oh_n * ow_n;
    let taps = kh_n * kw_n;
    let channels = for_(
        "o",
        int(0),
        int(cog),
        false,
        vec![assign(
            "acc",
            fma(
                load("dy", var("yb") + var("o") * plane, 1),
                load("w", var("wb") + var("o") * (cig * taps), 1),
                var("acc"),
            ),
        )],
    );
    let col = vec![
        let_("tw", Ty::I32, tw),
        if_(
            on_grid("tw", s.stride[1], ow_n),
            vec![
                let_("yb", Ty::I32, var("yr") + var("tw") / s.stride[1]),
                let_("wb", Ty::I32, var("wr") + var("kw")),
                channels,
            ],
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
        let_("yc", Ty::I32, (var("n") * s.co + var("g") * cog) * plane),
        let_(
            "wc",
            Ty::I32,
            (var("g") * cog * cig + var("c") % cig) * taps,
        ),
        for_("kh", int(0), int(kh_n), false, row),
        store(
            "dx",
            (gid(2) * s.h + var("ih")) * s.w + var("iw"),
            var("acc"),
            1,
        ),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![param("dy", true), param("w", true), param("dx", false)],
        body,
        grid: vec![s.w, s.h, s.n * s.ci],
        local: None,
        flops: s.flops() / groups as u64,
    }
}

/// The forward spec whose conv of `dy` with the flipped, transposed weight is the
/// backward to data of `s`, or `None` where padding is wider than the dilated kernel's
/// reach. A strided conv's `dy` is first spread out with `stride − 1` zeros between
/// its elements ([`spread_pad_kernel`]): the forward spec is then over that spread
/// input, `(o − 1)·stride + 1` long per axis.
pub fn data_as_forward(s: &ConvSpec) -> Option<ConvSpec> {
    let out = s.out();
    let input = [s.h, s.w];
    let mut pad = [(0, 0); 2];
    let mut spread = [0; 2];
    for (i, p) in pad.iter_mut().enumerate() {
        let reach = s.dilation[i] * (s.k[i] - 1);
        spread[i] = (out[i] - 1) * s.stride[i] + 1;
        let low = reach.checked_sub(s.pad[i].0)?;
        // Output length `input[i]`: spread + low + high − reach.
        let high = (input[i] + reach).checked_sub(spread[i] + low)?;
        *p = (low, high);
    }
    Some(ConvSpec {
        n: s.n,
        ci: s.co,
        h: spread[0],
        w: spread[1],
        co: s.ci,
        k: s.k,
        stride: [1, 1],
        dilation: s.dilation,
        pad,
        residual: false,
        relu: false,
    })
}

/// `x [planes, h, w]` spread by `stride` (zeros between elements) into the zero-padded
/// `[planes, hp, wp]` at offset (top, left): the strided backward to data's input.
#[allow(clippy::too_many_arguments)]
pub fn spread_pad_kernel(
    name: &str,
    planes: usize,
    [h, w]: [usize; 2],
    [hp, wp]: [usize; 2],
    [top, left]: [usize; 2],
    stride: [usize; 2],
) -> Kernel {
    let on = |t: &str, st: usize, n: usize| {
        and(
            and(
                le(int(0), var(t)),
                bin(super::BinOp::Eq, var(t) % st, int(0)),
            ),
            lt(var(t) / st, int(n)),
        )
    };
    let body = vec![
        let_("ow", Ty::I32, gid(0)),
        let_("oh", Ty::I32, gid(1)),
        let_("pl", Ty::I32, gid(2)),
        let_("a", Ty::I32, var("oh") - top),
        let_("b", Ty::I32, var("ow") - left),
        let_(
            "inside",
            Ty::I32,
            and(on("a", stride[0], h), on("b", stride[1], w)),
        ),
        let_(
            "src",
            Ty::I32,
            select(
                var("inside"),
                (var("pl") * h + var("a") / stride[0]) * w + var("b") / stride[1],
                int(0),
            ),
        ),
        store(
            "y",
            (var("pl") * hp + var("oh")) * wp + var("ow"),
            select(var("inside"), load("x", var("src"), 1), float(0.0)),
            1,
        ),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![param("x", true), param("y", false)],
        body,
        grid: vec![wp, hp, planes],
        local: None,
        flops: 0,
    }
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
        params: vec![param("w", true), param("y", false)],
        body,
        grid: vec![total],
        local: None,
        flops: 0,
    }
}

/// `dw [co, ci/groups, kh, kw]` from the zero-padded input `x [n, ci, hp, wp]` (for a
/// strided conv, its phase planes of `hp × wp` each: `conv::phase_kernel`) and
/// `dy [n, co, oh, ow]`, with `vector` lanes over output columns. With `chunks > 1`
/// the batch is split into that many chunks, each writing its partial sums to its own
/// copy of `dw` (`[chunks][co][ci/groups][kh][kw]`) for [`sum_chunks`] to add: the
/// work-items of one chunk then share one chunk's `x` and `dy` in cache, where one
/// work-item over the whole batch streamed them from memory.
pub fn filter_kernel(
    name: &str,
    s: &ConvSpec,
    groups: usize,
    hp: usize,
    wp: usize,
    vector: u8,
    chunks: usize,
) -> Kernel {
    let [oh_n, ow_n] = s.out();
    let (cig, cog) = (s.ci / groups, s.co / groups);
    let [kh_n, kw_n] = s.k;
    let per_chunk = s.n.div_ceil(chunks);
    let tk = kw_n.min(FILTER_TAPS);
    let kb_n = kw_n.div_ceil(tk);
    // Output channels per work-item: each x vector then feeds `tc` FMAs, each dy
    // vector `tk`; at most 16 accumulators.
    let tc = [4usize, 2, 1]
        .into_iter()
        .find(|&t| cog.is_multiple_of(t) && t * tk <= 16)
        .unwrap_or(1);
    // The widest vector that fits the row (ResNet's 8-wide last stage on 16 lanes).
    let v = [16u8, 8, 4, 1]
        .into_iter()
        .find(|&w| w <= vector && w as usize <= ow_n)
        .unwrap_or(1);
    let vw = v as usize;
    let full = ow_n / vw;
    let (st, dil) = (s.stride, s.dilation);
    let acc = |c: usize, j: usize| format!("acc{c}_{j}");
    let rest = |c: usize, j: usize| format!("r{c}_{j}");
    let tap = |j: usize| format!("t{j}");
    let mut body = vec![
        let_("kb", Ty::I32, gid(0) % kb_n),
        let_("kh", Ty::I32, gid(0) / kb_n),
        let_("c", Ty::I32, gid(1)),
        let_("co", Ty::I32, gid(2) % (s.co / tc) * tc),
        let_("nc", Ty::I32, gid(2) / (s.co / tc)),
        let_("ic", Ty::I32, var("co") / cog * cig + var("c")),
    ];
    // A strided conv's `x` is in phase planes of `hp × wp` (`conv::phase_kernel`):
    // `col{j}` is where tap `j` starts in its plane, `khr` the row offset of tap row `kh`.
    let strided = s.strided();
    let channel = if strided {
        st[0] * st[1] * hp * wp
    } else {
        hp * wp
    };
    if strided {
        let kh = var("kh") * dil[0];
        body.push(let_(
            "khr",
            Ty::I32,
            (kh.clone() % st[0]) * (st[1] * hp * wp) + kh / st[0] * wp,
        ));
    }
    for j in 0..tk {
        // Past the row's end, recompute the last tap (its store is skipped).
        body.push(let_(
            &tap(j),
            Ty::I32,
            bin(super::BinOp::Min, var("kb") * tk + j, int(kw_n - 1)),
        ));
        if strided {
            let kw = var(&tap(j)) * dil[1];
            body.push(let_(
                &format!("col{j}"),
                Ty::I32,
                (kw.clone() % st[1]) * (hp * wp) + kw / st[1],
            ));
        }
        for c in 0..tc {
            body.push(let_(&acc(c, j), Ty::f32x(v), splat(float(0.0), v)));
            body.push(let_(&rest(c, j), Ty::F32, float(0.0)));
        }
    }
    // One vector of dy per channel, one gathered vector of x per tap.
    let plane = oh_n * ow_n;
    let mut vec_step = Vec::new();
    for c in 0..tc {
        let at = var("yr") + var("q") * vw + c * plane;
        vec_step.push(let_(&format!("g{c}"), Ty::f32x(v), load("dy", at, v)));
    }
    for j in 0..tk {
        let xv = format!("xv{j}");
        let x = if strided {
            load("x", var("xr") + var("q") * vw + var(&format!("col{j}")), v)
        } else {
            let xi = var("xr") + var("q") * vw + var(&tap(j)) * dil[1];
            gather("x", xi, 1, v)
        };
        vec_step.push(let_(&xv, Ty::f32x(v), x));
        for c in 0..tc {
            vec_step.push(assign(
                &acc(c, j),
                fma(var(&format!("g{c}")), var(&xv), var(&acc(c, j))),
            ));
        }
    }
    let vec_step = vec![Stmt::Block(vec_step)];
    // Columns past the last full vector: scalar accumulators of their own.
    let mut tail = Vec::new();
    for j in 0..tk {
        let xi = if strided {
            var("xr") + var("q") + var(&format!("col{j}"))
        } else {
            var("xr") + var("q") + var(&tap(j)) * dil[1]
        };
        let xs = format!("xs{j}");
        tail.push(let_(&xs, Ty::F32, load("x", xi, 1)));
        for c in 0..tc {
            let g = load("dy", var("yr") + var("q") + c * plane, 1);
            tail.push(assign(&rest(c, j), fma(g, var(&xs), var(&rest(c, j)))));
        }
    }
    let tail = vec![Stmt::Block(tail)];
    let mut inner = vec![
        let_("yr", Ty::I32, var("yc") + var("oh") * ow_n),
        let_(
            "xr",
            Ty::I32,
            if strided {
                var("xc") + var("khr") + var("oh") * wp
            } else {
                var("xc") + (var("oh") + var("kh") * dil[0]) * wp
            },
        ),
        for_("q", int(0), int(full), full <= 4, vec_step),
    ];
    if full * vw < ow_n {
        inner.push(for_("q", int(full * vw), int(ow_n), false, tail));
    }
    body.push(for_(
        "n",
        var("nc") * per_chunk,
        bin(
            super::BinOp::Min,
            var("nc") * per_chunk + per_chunk,
            int(s.n),
        ),
        false,
        vec![
            let_("yc", Ty::I32, (var("n") * s.co + var("co")) * plane),
            let_("xc", Ty::I32, (var("n") * s.ci + var("ic")) * channel),
            for_("oh", int(0), int(oh_n), false, inner),
        ],
    ));
    for c in 0..tc {
        let wb = var("nc") * (s.co * cig * kh_n * kw_n)
            + (((var("co") + c) * cig + var("c")) * kh_n + var("kh")) * kw_n;
        for j in 0..tk {
            let total = if v == 1 {
                var(&acc(c, j)) + var(&rest(c, j))
            } else {
                (0..v)
                    .map(|l| lane(var(&acc(c, j)), l))
                    .fold(var(&rest(c, j)), |a, b| a + b)
            };
            let st: Stmt = store("dw", wb.clone() + var(&tap(j)), total, 1);
            body.push(if_(lt(var("kb") * tk + j, int(kw_n)), vec![st], vec![]));
        }
    }
    Kernel {
        name: name.to_string(),
        params: vec![param("x", true), param("dy", true), param("dw", false)],
        body,
        grid: vec![kh_n * kb_n, cig, chunks * (s.co / tc)],
        local: None,
        flops: s.flops() / groups as u64,
    }
}

/// How many batch chunks [`filter_kernel`] splits a conv's batch into: up to 16 (one
/// sample or more each), as long as the partial copies of `dw` stay within 4 Mi
/// elements (16 MiB).
pub fn filter_chunks(s: &ConvSpec, groups: usize) -> usize {
    let weight = s.co * (s.ci / groups) * s.k[0] * s.k[1];
    s.n.min(16).min((4 << 20) / weight.max(1)).max(1)
}

/// `y[i] = Σ_c x[c·len + i]`: the partial sums of a chunked reduction.
pub fn sum_chunks(name: &str, chunks: usize, len: usize) -> Kernel {
    let body = vec![
        let_("i", Ty::I32, gid(0)),
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "c",
            int(0),
            int(chunks),
            false,
            vec![assign(
                "acc",
                var("acc") + load("x", var("c") * len + var("i"), 1),
            )],
        ),
        store("y", var("i"), var("acc"), 1),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![param("x", true), param("y", false)],
        body,
        grid: vec![len],
        local: None,
        flops: (chunks * len) as u64,
    }
}
