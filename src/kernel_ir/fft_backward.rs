//! The FFT kernels of training: a conv kernel's spectrum computed on the device (the
//! weight is a parameter buffer or a value computed in the same run, so the host
//! cannot precompute it), and the conv backward to filter as a correlation.
//!
//! - **Spectrum** ([`spectrum_pack`], the transforms of [`super::fft`], then
//!   [`spectrum_gather`]): the layout of `fft_conv::kernel_spectrum`, so the forward's
//!   multiply-accumulate reads it unchanged. `transposed` packs the spectrum of the
//!   flipped, transposed weight: the backward to data of a stride-1 conv is the
//!   forward FFT conv of `dy` with it (see `conv_backward::data_as_forward`).
//! - **Backward to filter** ([`FftFilter`]): `dw[co, ci, t] = Σ_n Σ_p dy[n, co, p] ·
//!   x_pad[n, ci, p + t]`, a correlation. With transforms of `N ≥ |x_pad|` points per
//!   axis the circular correlation never wraps for `t < k` (`p + t < |x_pad|`), so
//!   `dW(f) = Σ_n conj(DY_n(f)) · X_n(f)` per frequency, then one inverse transform per
//!   `(co, ci)` and a crop of the first `k` points. Samples are transformed one per
//!   complex row (imaginary part zero): simpler than pairing them, at twice the
//!   transform work. The product, the bulk of the work, is vectorised over input
//!   channels and tiled over output channels.
//!
//! Transform rows are laid out `[n1][n2][2][rows]`, rows a multiple of the vector.

use super::build::*;
use super::fft_conv::FftConv;
use super::{Kernel, Param, Ty};
use crate::reference::fft_conv::fft_len;

/// The FFT backward's kernels leave their cost to the FFT cost table (no flops).
fn kernel(name: &str, params: Vec<Param>, body: Vec<super::Stmt>, grid: Vec<usize>) -> Kernel {
    super::build::kernel(name, params, body, grid, 0)
}

/// Rows of the weight's transform for `g`: one per (output, input) channel pair.
pub fn spectrum_rows(g: &FftConv, vector: u8) -> usize {
    (g.co * g.ci).div_ceil(vector as usize) * vector as usize
}

/// The flipped kernel of `g` from `w` into transform rows `o·Ci + i`. `w` is
/// `[Co, Ci, kh, kw]` in `g`'s channels, or with `transposed` `[Ci, Co, kh, kw]` to be
/// flipped and transposed first (the two flips cancel).
pub fn spectrum_pack(g: &FftConv, rows: usize, transposed: bool) -> Kernel {
    let [n1, n2] = g.len;
    let [kh, kw] = g.k;
    let taps = kh * kw;
    let (o, i) = (var("r") / g.ci, var("r") % g.ci);
    let src = if transposed {
        (i * g.co + o) * taps + var("m1") * kw + var("m2")
    } else {
        (o * g.ci + i) * taps + (int(kh - 1) - var("m1")) * kw + (int(kw - 1) - var("m2"))
    };
    let inside = and(
        and(lt(var("m1"), int(kh)), lt(var("m2"), int(kw))),
        lt(var("r"), int(g.co * g.ci)),
    );
    let body = vec![
        let_("r", Ty::I32, gid(0)),
        let_("m2", Ty::I32, gid(1)),
        let_("m1", Ty::I32, gid(2)),
        let_(
            "dst",
            Ty::I32,
            (var("m1") * n2 + var("m2")) * (2 * rows) + var("r"),
        ),
        store(
            "y",
            var("dst"),
            select(inside, load("w", src, 1), float(0.0)),
            1,
        ),
        store("y", var("dst") + rows, float(0.0), 1),
    ];
    kernel(
        "spectrum_pack",
        vec![param("w", true), param("y", false)],
        body,
        vec![rows, n2, n1],
    )
}

/// The transformed rows into `kernel_spectrum`'s layout `[n1][n2/2+1][Ci][re, im][Cop]`.
pub fn spectrum_gather(g: &FftConv, rows: usize) -> Kernel {
    let [_, n2] = g.len;
    let half = n2 / 2 + 1;
    let body = vec![
        let_("o", Ty::I32, gid(0)),
        let_("i", Ty::I32, gid(1)),
        let_("i1", Ty::I32, gid(2) / half),
        let_("i2", Ty::I32, gid(2) % half),
        let_("ok", Ty::I32, lt(var("o"), int(g.co))),
        let_(
            "src",
            Ty::I32,
            (var("i1") * n2 + var("i2")) * (2 * rows)
                + var("i")
                + select(var("ok"), var("o"), int(0)) * g.ci,
        ),
        let_(
            "dst",
            Ty::I32,
            (gid(2) * g.ci + var("i")) * (2 * g.cop) + var("o"),
        ),
        store(
            "y",
            var("dst"),
            select(var("ok"), load("s", var("src"), 1), float(0.0)),
            1,
        ),
        store(
            "y",
            var("dst") + g.cop,
            select(var("ok"), load("s", var("src") + rows, 1), float(0.0)),
            1,
        ),
    ];
    kernel(
        "spectrum_gather",
        vec![param("s", true), param("y", false)],
        body,
        vec![g.cop, g.ci, g.len[0] * half],
    )
}

/// The geometry of an FFT conv backward to filter.
#[derive(Clone, Debug, PartialEq)]
pub struct FftFilter {
    pub batch: usize,
    pub ci: usize,
    pub co: usize,
    /// Input spatial size (unpadded) and its low padding.
    pub hw: [usize; 2],
    pub pad_low: [usize; 2],
    /// The output's (dy's) spatial size.
    pub out: [usize; 2],
    pub k: [usize; 2],
    /// Transform lengths (1 on an axis of size 1).
    pub len: [usize; 2],
    /// `Ci` rounded up to the vector width: rows of `x` are `b·cip + ci`, of the
    /// weight `co·cip + ci`, so the product reads whole vectors of input channels.
    pub cip: usize,
    /// Output channels per work-item of the product.
    pub tco: usize,
    pub vector: u8,
    pub rows_x: usize,
    pub rows_y: usize,
    pub rows_w: usize,
}

impl FftFilter {
    /// The plan of `s` without groups, or `None` for a strided or dilated conv.
    pub fn new(s: &super::conv::ConvSpec, vector: u8) -> Option<FftFilter> {
        if s.stride != [1, 1] || s.dilation != [1, 1] || s.k.contains(&0) {
            return None;
        }
        let v = vector as usize;
        let round = |n: usize| n.div_ceil(v) * v;
        let padded = [0, 1].map(|i| s.pad[i].0 + [s.h, s.w][i] + s.pad[i].1);
        let cip = round(s.ci);
        let tco = [4, 2, 1]
            .into_iter()
            .find(|t| s.co.is_multiple_of(*t))
            .unwrap_or(1);
        Some(FftFilter {
            batch: s.n,
            ci: s.ci,
            co: s.co,
            hw: [s.h, s.w],
            pad_low: [s.pad[0].0, s.pad[1].0],
            out: s.out(),
            k: s.k,
            len: padded.map(fft_len),
            cip,
            tco,
            vector,
            rows_x: s.n * cip,
            rows_y: round(s.n * s.co),
            rows_w: s.co * cip,
        })
    }

    pub fn points(&self) -> usize {
        self.len[0] * self.len[1]
    }
}

/// `x [B, C, h, w]` into transform rows `b·cp + c` (`rows` of them, `cp ≥ C`), shifted
/// by `offset` on each axis, zeros elsewhere.
pub fn pack_rows(
    len: [usize; 2],
    (batch, c, cp): (usize, usize, usize),
    [h, w]: [usize; 2],
    offset: [usize; 2],
    rows: usize,
) -> Kernel {
    let [_, n2] = len;
    let (y, x) = (var("m1") - offset[0], var("m2") - offset[1]);
    let inside = and(
        and(
            and(le(int(0), var("yy")), lt(var("yy"), int(h))),
            and(le(int(0), var("xx")), lt(var("xx"), int(w))),
        ),
        and(lt(var("ch"), int(c)), lt(var("bb"), int(batch))),
    );
    let body = vec![
        let_("r", Ty::I32, gid(0)),
        let_("m2", Ty::I32, gid(1)),
        let_("m1", Ty::I32, gid(2)),
        let_("bb", Ty::I32, var("r") / cp),
        let_("ch", Ty::I32, var("r") % cp),
        let_("yy", Ty::I32, y),
        let_("xx", Ty::I32, x),
        let_(
            "dst",
            Ty::I32,
            (var("m1") * n2 + var("m2")) * (2 * rows) + var("r"),
        ),
        store(
            "y",
            var("dst"),
            select(
                inside,
                load(
                    "x",
                    ((var("bb") * c + var("ch")) * h + var("yy")) * w + var("xx"),
                    1,
                ),
                float(0.0),
            ),
            1,
        ),
        store("y", var("dst") + rows, float(0.0), 1),
    ];
    kernel(
        "fft_rows",
        vec![param("x", true), param("y", false)],
        body,
        vec![rows, n2, len[0]],
    )
}

/// `W(f)[co·cip + ci] = Σ_b conj(DY(f)[b·Co + co]) · X(f)[b·cip + ci]` for every
/// frequency `f`: a work-item takes `V` input channels (one vector of `X` per sample)
/// and `tco` output channels (scalars of `DY` splatted).
pub fn filter_mac(g: &FftFilter) -> Kernel {
    let v = g.vector;
    let vw = v as usize;
    let ty = Ty::f32x(v);
    let (re, im) = (|c: usize| format!("re{c}"), |c: usize| format!("im{c}"));
    let xat = var("xf") + var("b") * g.cip + var("ci");
    let mut inner = vec![
        let_("xr", ty, load("x", xat.clone(), v)),
        let_("xi", ty, load("x", xat + g.rows_x, v)),
    ];
    let mut body = vec![
        let_("ci", Ty::I32, gid(0) * vw),
        let_("co", Ty::I32, gid(1) * g.tco),
        let_("f", Ty::I32, gid(2)),
        let_("xf", Ty::I32, var("f") * (2 * g.rows_x)),
        let_("yf", Ty::I32, var("f") * (2 * g.rows_y)),
    ];
    for c in 0..g.tco {
        body.push(let_(&re(c), ty, splat(float(0.0), v)));
        body.push(let_(&im(c), ty, splat(float(0.0), v)));
        let yat = var("yf") + var("b") * g.co + var("co") + c;
        let (dr, di) = (format!("dr{c}"), format!("di{c}"));
        inner.push(let_(&dr, ty, splat(load("dy", yat.clone(), 1), v)));
        inner.push(let_(&di, ty, splat(load("dy", yat + g.rows_y, 1), v)));
        inner.push(assign(
            &re(c),
            fma(var(&dr), var("xr"), fma(var(&di), var("xi"), var(&re(c)))),
        ));
        inner.push(assign(
            &im(c),
            fma(var(&dr), var("xi"), var(&im(c)) - var(&di) * var("xr")),
        ));
    }
    body.push(for_("b", int(0), int(g.batch), false, inner));
    for c in 0..g.tco {
        let at = var("f") * (2 * g.rows_w) + (var("co") + c) * g.cip + var("ci");
        body.push(store("w", at.clone(), var(&re(c)), v));
        body.push(store("w", at + g.rows_w, var(&im(c)), v));
    }
    Kernel {
        name: "fft_filter_mac".into(),
        params: vec![param("x", true), param("dy", true), param("w", false)],
        body,
        grid: vec![g.cip / vw, g.co / g.tco, g.points()],
        local: None,
        flops: (8 * g.points() * g.batch * g.ci * g.co) as u64,
    }
}

/// `dw [Co, Ci, kh, kw]` from the inverse transform: the first `k` points of each
/// row, scaled by `1/(n1·n2)`.
pub fn filter_crop(g: &FftFilter) -> Kernel {
    let [kh, kw] = g.k;
    let [_, n2] = g.len;
    let body = vec![
        let_("t2", Ty::I32, gid(0)),
        let_("t1", Ty::I32, gid(1)),
        let_("r", Ty::I32, gid(2)),
        store(
            "dw",
            (var("r") * kh + var("t1")) * kw + var("t2"),
            load(
                "s",
                (var("t1") * n2 + var("t2")) * (2 * g.rows_w)
                    + var("r") / g.ci * g.cip
                    + var("r") % g.ci,
                1,
            ) * float(1.0 / g.points() as f32),
            1,
        ),
    ];
    kernel(
        "fft_filter_crop",
        vec![param("s", true), param("dw", false)],
        body,
        vec![kw, kh, g.co * g.ci],
    )
}
