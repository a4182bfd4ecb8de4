//! The kernels of an FFT convolution around the transforms of [`super::fft`]: pack the
//! input into transform rows, multiply-accumulate spectra over input channels, and crop
//! the inverse transform into the output with the epilogue. Stride 1, dilation 1, one
//! group; any padding of at most `k − 1` per side (causal 1D and "same" 2D included).
//!
//! The kernel is flipped on the host, so the spectral product is a plain linear
//! convolution `(x ∗ g)[t] = Σ_j w[j]·x[t − (k−1) + j]`, and output `t` of a conv with
//! low padding `p` is `(x ∗ g)[t + (k−1) − p]`. The transform length per axis is the
//! smallest 7-smooth `n ≥ len + k − 1`, so the circular product never wraps into an
//! output (1568 = 2⁵·7² for 784 + 784).
//!
//! Two batch samples share one complex transform (`x[2p] + i·x[2p+1]`): everything
//! between the transforms is linear with real kernels, so the inverse's real part is
//! sample `2p` and its imaginary part sample `2p + 1`, at half the transforms and half
//! the products. Rows of the input transform are `p·Ci + ci`, of the output `p·Cop +
//! co` with `Co` padded to the vector width `Cop`; the kernel spectrum is stored for
//! the non-negative half of the last axis only (the rest is its conjugate mirror),
//! laid out `[n1][n2/2+1][Ci][re, im][Cop]`.

use super::build::*;
use super::conv::ConvSpec;
use super::fft::radices;
use super::{Kernel, Ty};
use crate::reference::fft_conv::fft_len;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use std::cell::Cell;

thread_local! {
    /// A transform length that [`force_len`] imposes on this thread (0: none).
    static FORCED_LEN: Cell<usize> = const { Cell::new(0) };
}

/// Makes every FFT conv this thread plans afterwards use transforms of `n` points on each axis
/// that needs more than one point and at most `n` (`n` must factor into 2, 3, 5 and
/// 7), or the smallest 7-smooth length again with `None`. For measurements: the FFT
/// conv bench compares 1568 = 2⁵·7² with 2048 points at 784 + 784 − 1.
pub fn force_len(n: Option<usize>) {
    FORCED_LEN.with(|f| f.set(n.unwrap_or(0)));
}

/// The transform length for a linear convolution of `need` points.
fn transform_len(need: usize) -> usize {
    let forced = FORCED_LEN.with(Cell::get);
    if need > 1 && forced >= need && radices(forced).is_some() {
        forced
    } else {
        fft_len(need)
    }
}

/// The geometry of one FFT convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct FftConv {
    pub batch: usize,
    pub ci: usize,
    pub co: usize,
    pub hw: [usize; 2],
    pub k: [usize; 2],
    pub pad_low: [usize; 2],
    pub out: [usize; 2],
    /// Transform lengths `[n1, n2]` (`n1 = 1` for 1D).
    pub len: [usize; 2],
    /// Sample pairs, padded to a multiple of `tile_p`.
    pub pairs: usize,
    /// Sample pairs per work-item of the multiply-accumulate.
    pub tile_p: usize,
    /// `Co` rounded up to the vector width.
    pub cop: usize,
    pub rows_in: usize,
    pub rows_out: usize,
    pub residual: bool,
    pub relu: bool,
}

impl FftConv {
    /// The FFT plan of `s`, or `None` when the FFT cannot compute it (strided,
    /// dilated, or padded by more than `k − 1` on a side).
    pub fn new(s: &ConvSpec, vector: u8) -> Option<FftConv> {
        let v = vector as usize;
        let plain = s.stride == [1, 1] && s.dilation == [1, 1];
        let pads_fit = (0..2).all(|i| s.pad[i].0 < s.k[i] && s.pad[i].1 < s.k[i]);
        if !plain || !pads_fit || s.k.contains(&0) {
            return None;
        }
        let hw = [s.h, s.w];
        let len = [0, 1].map(|i| transform_len(hw[i] + s.k[i] - 1));
        let p = s.n.div_ceil(2);
        let tile_p = p.clamp(1, 4);
        let pairs = p.div_ceil(tile_p) * tile_p;
        let cop = s.co.div_ceil(v) * v;
        Some(FftConv {
            batch: s.n,
            ci: s.ci,
            co: s.co,
            hw,
            k: s.k,
            pad_low: [s.pad[0].0, s.pad[1].0],
            out: s.out(),
            len,
            pairs,
            tile_p,
            cop,
            rows_in: (pairs * s.ci).div_ceil(v) * v,
            rows_out: pairs * cop,
            residual: s.residual,
            relu: s.relu,
        })
    }

    /// Points of one transform plane.
    pub fn points(&self) -> usize {
        self.len[0] * self.len[1]
    }

    /// Columns of the stored half spectrum.
    fn half(&self) -> usize {
        self.len[1] / 2 + 1
    }
}

/// `x [B, Ci, H, W]` into the zero-padded transform rows `[n1][n2][2][rows_in]`.
pub fn pack_kernel(g: &FftConv) -> Kernel {
    let [h, w] = g.hw;
    let [_, n2] = g.len;
    let inside = and(lt(var("c"), int(w)), lt(var("rr"), int(h)));
    let mut body = vec![
        let_("r", Ty::I32, gid(0)),
        let_("c", Ty::I32, gid(1)),
        let_("rr", Ty::I32, gid(2)),
        let_("pp", Ty::I32, var("r") / g.ci),
        let_("ci", Ty::I32, var("r") % g.ci),
        let_(
            "dst",
            Ty::I32,
            (var("rr") * n2 + var("c")) * (2 * g.rows_in) + var("r"),
        ),
    ];
    for part in 0..2usize {
        let nb = var("pp") * 2usize + part;
        let src = ((nb.clone() * g.ci + var("ci")) * h + var("rr")) * w + var("c");
        let cond = and(inside.clone(), lt(nb, int(g.batch)));
        body.push(store(
            "y",
            var("dst") + part * g.rows_in,
            select(cond, load("x", src, 1), float(0.0)),
            1,
        ));
    }
    Kernel {
        name: "fft_pack".into(),
        params: vec![param("x", true), param("y", false)],
        body,
        grid: vec![g.rows_in, n2, g.len[0]],
        local: None,
        flops: 0,
    }
}

/// `Y[f][p·Cop + co] = Σ_ci X[f][p·Ci + ci] · K[f][ci][co]` (complex), `tile_p` pairs
/// × `vector` output channels per work-item, `K` read once per input channel.
pub fn pointwise_kernel(g: &FftConv, vector: u8) -> Kernel {
    let v = vector as usize;
    let ty = Ty::f32x(vector);
    let [n1, n2] = g.len;
    let half = g.half();
    let mirror = ((int(n1) - var("i1")) % n1) * half + (int(n2) - var("i2"));
    let mut body = vec![
        let_("f", Ty::I32, gid(2)),
        let_("i1", Ty::I32, var("f") / n2),
        let_("i2", Ty::I32, var("f") % n2),
        let_(
            "kf",
            Ty::I32,
            select(
                le(var("i2"), int(n2 / 2)),
                var("i1") * half + var("i2"),
                mirror,
            ),
        ),
        let_(
            "sg",
            Ty::F32,
            select(le(var("i2"), int(n2 / 2)), float(1.0), float(-1.0)),
        ),
        let_(
            "xb",
            Ty::I32,
            var("f") * (2 * g.rows_in) + gid(1) * (g.tile_p * g.ci),
        ),
        let_("kb", Ty::I32, var("kf") * (g.ci * 2 * g.cop) + gid(0) * v),
    ];
    let (ar, ai) = (|t: usize| format!("ar{t}"), |t: usize| format!("ai{t}"));
    for t in 0..g.tile_p {
        body.push(let_(&ar(t), ty, splat(float(0.0), vector)));
        body.push(let_(&ai(t), ty, splat(float(0.0), vector)));
    }
    let kat = var("kb") + var("ci") * (2 * g.cop);
    let mut inner = vec![
        let_("kr", ty, load("k", kat.clone(), vector)),
        let_("kraw", ty, load("k", kat + g.cop, vector)),
        let_("ki", ty, var("kraw") * splat(var("sg"), vector)),
        let_(
            "kn",
            ty,
            var("kraw") * splat(float(0.0) - var("sg"), vector),
        ),
    ];
    for t in 0..g.tile_p {
        let xat = var("xb") + var("ci") + t * g.ci;
        let (xr, xi) = (format!("xr{t}"), format!("xi{t}"));
        inner.push(let_(&xr, Ty::F32, load("x", xat.clone(), 1)));
        inner.push(let_(&xi, Ty::F32, load("x", xat + g.rows_in, 1)));
        let (sr, si) = (splat(var(&xr), vector), splat(var(&xi), vector));
        inner.push(assign(
            &ar(t),
            fma(
                sr.clone(),
                var("kr"),
                fma(si.clone(), var("kn"), var(&ar(t))),
            ),
        ));
        inner.push(assign(
            &ai(t),
            fma(sr, var("ki"), fma(si, var("kr"), var(&ai(t)))),
        ));
    }
    body.push(for_("ci", int(0), int(g.ci), false, inner));
    body.push(let_(
        "yb",
        Ty::I32,
        var("f") * (2 * g.rows_out) + gid(1) * (g.tile_p * g.cop) + gid(0) * v,
    ));
    for t in 0..g.tile_p {
        let at = var("yb") + t * g.cop;
        body.push(store("y", at.clone(), var(&ar(t)), vector));
        body.push(store("y", at + g.rows_out, var(&ai(t)), vector));
    }
    Kernel {
        name: "fft_mac".into(),
        params: vec![param("x", true), param("k", true), param("y", false)],
        body,
        grid: vec![g.cop / v, g.pairs / g.tile_p, g.points()],
        local: None,
        flops: (8 * g.points() * g.pairs * g.ci * g.cop) as u64,
    }
}

/// The output `[B, Co, OH, OW]` from the inverse transform: crop, scale by `1/(n1·n2)`,
/// add the bias (and the residual `r`), ReLU.
pub fn crop_kernel(g: &FftConv) -> Kernel {
    let [oh, ow] = g.out;
    let [n1, n2] = g.len;
    let off = [0, 1].map(|i| g.k[i] - 1 - g.pad_low[i]);
    let src = (((var("oh") + off[0]) * n2 + var("ow") + off[1]) * 2usize + var("nb") % 2usize)
        * g.rows_out
        + (var("nb") / 2usize) * g.cop
        + var("c");
    // Channels run fastest: the inverse transform holds a position's channels side by
    // side, so consecutive points read consecutive floats (with `ow` fastest, each read
    // was `2·rows_out` floats from the last and a cache line served one read).
    let mut body = vec![
        let_("c", Ty::I32, gid(0)),
        let_("ow", Ty::I32, gid(1)),
        let_("oh", Ty::I32, gid(2) % oh),
        let_("nb", Ty::I32, gid(2) / oh),
        let_(
            "dst",
            Ty::I32,
            ((var("nb") * g.co + var("c")) * oh + var("oh")) * ow + var("ow"),
        ),
        let_(
            "u",
            Ty::F32,
            load("s", src, 1) * float(1.0 / (n1 * n2) as f32) + load("b", var("c"), 1),
        ),
    ];
    let mut params = vec![param("s", true), param("b", true)];
    if g.residual {
        body.push(assign("u", var("u") + load("r", var("dst"), 1)));
        params.push(param("r", true));
    }
    if g.relu {
        body.push(assign("u", max(var("u"), float(0.0))));
    }
    body.push(store("y", var("dst"), var("u"), 1));
    params.push(param("y", false));
    Kernel {
        name: "fft_crop".into(),
        params,
        body,
        grid: vec![g.co, ow, oh * g.batch],
        local: None,
        flops: (2 * g.batch * g.co * oh * ow) as u64,
    }
}

/// The half spectrum of the flipped kernel `w [Co, Ci, kh, kw]` scaled per output
/// channel (a folded batch norm), laid out as the multiply-accumulate reads it.
pub fn kernel_spectrum(g: &FftConv, w: &[f32], scale: &[f32]) -> Vec<f32> {
    let [n1, n2] = g.len;
    let [kh, kw] = g.k;
    let half = g.half();
    let mut planner = FftPlanner::<f64>::new();
    let (rows, cols) = (planner.plan_fft_forward(n2), planner.plan_fft_forward(n1));
    let zero = Complex::new(0.0, 0.0);
    let mut out = vec![0.0f32; n1 * half * g.ci * 2 * g.cop];
    let mut plane = vec![zero; n1 * n2];
    let mut col = vec![zero; n1];
    for co in 0..g.co {
        for ci in 0..g.ci {
            plane.fill(zero);
            let taps = &w[(co * g.ci + ci) * kh * kw..][..kh * kw];
            for m1 in 0..kh {
                for m2 in 0..kw {
                    let v = taps[(kh - 1 - m1) * kw + (kw - 1 - m2)] * scale[co];
                    plane[m1 * n2 + m2] = Complex::new(v as f64, 0.0);
                }
                rows.process(&mut plane[m1 * n2..(m1 + 1) * n2]);
            }
            for i2 in 0..half {
                for (i1, c) in col.iter_mut().enumerate() {
                    *c = plane[i1 * n2 + i2];
                }
                cols.process(&mut col);
                for (i1, c) in col.iter().enumerate() {
                    let at = ((i1 * half + i2) * g.ci + ci) * 2 * g.cop + co;
                    out[at] = c.re as f32;
                    out[at + g.cop] = c.im as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, l: usize, k: usize) -> ConvSpec {
        ConvSpec {
            n,
            ci: 30,
            h: 1,
            w: l,
            co: 30,
            k: [1, k],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [(0, 0), (k - 1, 0)],
            residual: false,
            relu: false,
        }
    }

    #[test]
    fn causal_784_uses_1568_points_and_pairs_samples() {
        let g = FftConv::new(&spec(64, 784, 784), 8).expect("fft applies");
        assert_eq!(g.len, [1, 1568]);
        assert_eq!((g.pairs, g.tile_p, g.cop), (32, 4, 32));
        assert_eq!((g.rows_in, g.rows_out), (960, 1024));
        let g1 = FftConv::new(&spec(1, 784, 784), 8).expect("fft applies");
        assert_eq!((g1.pairs, g1.tile_p, g1.rows_in), (1, 1, 32));
    }

    #[test]
    fn a_forced_length_applies_where_it_fits() {
        force_len(Some(2048));
        let g = FftConv::new(&spec(2, 784, 784), 8).expect("fft applies");
        force_len(Some(1000));
        let short = FftConv::new(&spec(2, 784, 784), 8).expect("fft applies");
        force_len(Some(2057)); // 11·11·17: not 7-smooth
        let odd = FftConv::new(&spec(2, 784, 784), 8).expect("fft applies");
        force_len(None);
        assert_eq!(g.len, [1, 2048]);
        assert_eq!(short.len, [1, 1568]);
        assert_eq!(odd.len, [1, 1568]);
    }

    #[test]
    fn strided_or_overpadded_convs_are_not_ffts() {
        let mut s = spec(1, 10, 3);
        s.stride = [1, 2];
        assert!(FftConv::new(&s, 8).is_none());
        let mut s = spec(1, 10, 3);
        s.pad[1] = (3, 0);
        assert!(FftConv::new(&s, 8).is_none());
    }
}
