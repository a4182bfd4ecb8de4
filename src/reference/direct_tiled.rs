//! The direct convolution as the interpreter runs it for `algo = direct`. On f32 with
//! AVX2+FMA and at least 2 output channels per group, [`conv_direct`] runs the
//! register-blocked kernel of [`direct_blocked`](super::direct_blocked); everywhere
//! else it runs the portable loop here, [`conv_direct_tiled`]: the same sum as
//! [`conv`](super::conv::conv) (which stays the plain, trusted loop nest every path
//! is tested against), with its loops ordered for speed:
//!
//! - the input is zero-padded once, so the inner loop has no bounds checks;
//! - each task computes one output channel of one batch item (parallel over both, so
//!   a batch of one still uses every core);
//! - for every input channel and tap the inner loop is an axpy over a block of
//!   output columns (`y[ox] += w · x[ox·s + t·d]`), contiguous at stride 1, which
//!   rustc vectorises; blocks of `COLS` outputs stay in L1 while all taps accumulate.
//!
//! Only the summation order differs from `conv` (taps in the same order, input
//! channels outer), so results agree to rounding; the tests check it.

use rayon::prelude::*;

use super::conv::{as_conv2d, pad_planes, ConvDims, ConvParams};
use super::direct_blocked::conv_blocked;
use crate::tensor::{Scalar, ShapeError, Tensor};

/// Output columns accumulated together.
pub const COLS: usize = 256;

/// Direct convolution for `x` `[B, Ci, L]` / `[B, Ci, H, W]` and `w`
/// `[Co, Ci/groups, k…]`; stride, padding, dilation and groups as in `conv`.
/// Malformed shapes are reported as by every conv ([`as_conv2d`]). Runs the register-blocked kernel
/// of [`direct_blocked`](super::direct_blocked) where it applies (f32, AVX2+FMA, at
/// least 2 output channels per group), else [`conv_direct_tiled`].
pub fn conv_direct<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
) -> Result<Tensor<T>, ShapeError> {
    match conv_blocked(x, w, bias, p) {
        Some(y) => Ok(y),
        None => conv_direct_tiled(x, w, bias, p),
    }
}

/// The portable direct loop (the fallback of [`conv_direct`]), any scalar type.
pub fn conv_direct_tiled<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
) -> Result<Tensor<T>, ShapeError> {
    as_conv2d("direct conv", x, w, bias, p, |x, w, p2, d| {
        tiled(x, w, bias, p2, d)
    })
}

fn tiled<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p2: &ConvParams,
    d: ConvDims,
) -> Tensor<T> {
    let ConvDims {
        b,
        ci,
        h,
        w: wd,
        co,
        cig,
        kh,
        kw,
        groups: g,
        ho,
        wo,
    } = d;
    let mut out = Tensor::zeros(vec![b, co, ho, wo]);
    let xp = pad_input(x, [b, ci, h, wd], p2);
    let (hp, wp) = (
        h + p2.padding[0].0 + p2.padding[0].1,
        wd + p2.padding[1].0 + p2.padding[1].1,
    );
    let ([sy, sx], [dy, dx]) = (
        [p2.stride[0], p2.stride[1]],
        [p2.dilation[0], p2.dilation[1]],
    );
    let (cog, plane, taps) = (co / g, ho * wo, kh * kw);
    out.data
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(task, y)| {
            let (bi, o) = (task / co, task % co);
            let first = (o / cog) * cig;
            y.fill(bias.map_or(T::zero(), |v| v[o]));
            for oy in 0..ho {
                let yrow = &mut y[oy * wo..][..wo];
                for c0 in (0..wo).step_by(COLS) {
                    let acc = &mut yrow[c0..(c0 + COLS).min(wo)];
                    for i in 0..cig {
                        let xc = &xp[(bi * ci + first + i) * hp * wp..][..hp * wp];
                        let wc = &w.data[(o * cig + i) * taps..][..taps];
                        for ty in 0..kh {
                            let xrow = &xc[(oy * sy + ty * dy) * wp..][..wp];
                            for tx in 0..kw {
                                let wv = wc[ty * kw + tx];
                                let start = c0 * sx + tx * dx;
                                if sx == 1 {
                                    let src = &xrow[start..start + acc.len()];
                                    for (a, &v) in acc.iter_mut().zip(src) {
                                        *a += wv * v;
                                    }
                                } else {
                                    let src = xrow[start..].iter().step_by(sx);
                                    for (a, &v) in acc.iter_mut().zip(src) {
                                        *a += wv * v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}

/// `x` with its zero padding written out, as `[B, Ci, Hp, Wp]`.
fn pad_input<T: Scalar>(x: &Tensor<T>, [b, ci, h, wd]: [usize; 4], p: &ConvParams) -> Vec<T> {
    let ((top, bottom), (left, right)) = (p.padding[0], p.padding[1]);
    let mut xp = Vec::new();
    pad_planes(
        &mut xp,
        &x.data,
        [b * ci, h, wd],
        [top, left],
        [h + top + bottom, wd + left + right],
    );
    xp
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64;

    use crate::reference::conv::conv;
    use crate::reference::rand_t;

    #[test]
    fn tiled_direct_matches_the_plain_loop_on_random_geometry() {
        let mut rng = Pcg64::seed_from_u64(5);
        for case in 0..80 {
            let nd = 1 + case % 2;
            let g = [1, 1, 2, 3][rng.random_range(0..4)];
            let ci = g * rng.random_range(1..4);
            let co = g * rng.random_range(1..4);
            let b = rng.random_range(1..3);
            let k: Vec<usize> = (0..nd).map(|_| rng.random_range(1..6)).collect();
            let s: Vec<usize> = (0..nd).map(|_| rng.random_range(1..4)).collect();
            let d: Vec<usize> = (0..nd).map(|_| rng.random_range(1..4)).collect();
            let pad: Vec<(usize, usize)> = (0..nd)
                .map(|_| (rng.random_range(0..4), rng.random_range(0..4)))
                .collect();
            // Some inputs wider than one column block.
            let extra = if case % 7 == 0 { 300 } else { 9 };
            let n: Vec<usize> = (0..nd)
                .map(|i| d[i] * (k[i] - 1) + 1 + rng.random_range(0..extra))
                .collect();
            let mut xs = vec![b, ci];
            xs.extend(&n);
            let mut ws = vec![co, ci / g];
            ws.extend(&k);
            let x = rand_t(&mut rng, &xs);
            let w = rand_t(&mut rng, &ws);
            let bias: Vec<f64> = (0..co).map(|o| o as f64 * 0.5 - 1.0).collect();
            let p = ConvParams {
                stride: s,
                padding: pad,
                dilation: d,
                groups: g,
            };
            let want = conv(&x, &w, Some(&bias), &p).unwrap();
            let got = conv_direct(&x, &w, Some(&bias), &p).unwrap();
            assert_eq!(want.shape, got.shape, "case {case}: {p:?}");
            let err = want.max_abs_diff(&got).unwrap();
            assert!(err < 1e-12 * want.max_abs().max(1.0), "case {case}: {err}");
            let none = conv_direct(&x, &w, None, &p).unwrap();
            let want0 = conv(&x, &w, None, &p).unwrap();
            assert!(want0.max_abs_diff(&none).unwrap() < 1e-12 * want0.max_abs().max(1.0));
        }
    }

    #[test]
    fn tiled_direct_rejects_what_the_plain_loop_rejects() {
        let x = Tensor::<f64>::zeros(vec![1, 2, 4, 4]);
        let w = Tensor::<f64>::zeros(vec![2, 1, 5, 5]);
        assert!(conv_direct(&x, &w, None, &ConvParams::unit(2)).is_err());
        let w = Tensor::<f64>::zeros(vec![2, 2, 3, 3]);
        assert!(conv_direct(&x, &w, None, &ConvParams::unit(2).with_groups(2)).is_err());
        assert!(conv_direct(&x, &w, Some(&[1.0]), &ConvParams::unit(2)).is_err());
        let x1 = Tensor::<f64>::zeros(vec![1, 2, 4]);
        assert!(conv_direct(&x1, &w, None, &ConvParams::unit(1)).is_err());
    }
}
