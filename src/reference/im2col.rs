//! im2col + GEMM convolution: unfold every receptive field of a batch item into a
//! column matrix `[Ci/g · k…, Ho·Wo]`, then multiply it by the weight viewed as
//! `[Co/g, Ci/g · k…]`, one GEMM per group. Same semantics as
//! [`conv`](super::conv::conv) (PyTorch cross-correlation); the tests check they agree.
//!
//! The GEMM is the `matrixmultiply` crate's `sgemm`/`dgemm` (packed, AVX2+FMA
//! micro-kernels picked at run time) for f32/f64, with a small cache-blocked loop for
//! any other scalar type. `matrixmultiply` was measured 1.4–3.4× faster than the blocked
//! loop on this machine kind (`examples/fit_cost.rs` prints both), so it is the one the
//! interpreter uses.

use std::any::TypeId;

use rayon::prelude::*;

use super::conv::{as_conv2d, ConvDims, ConvParams};
use crate::tensor::{Scalar, ShapeError, Tensor};

/// `c[m×n] = a[m×k] · b[k×n]`, all row-major and contiguous.
pub fn gemm<T: Scalar>(m: usize, k: usize, n: usize, a: &[T], b: &[T], c: &mut [T]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let (rs_a, rs_b, rs_c) = (k as isize, n as isize, n as isize);
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked above), the slices are long enough (asserted),
        // and `c` does not alias `a` or `b` (it is borrowed mutably).
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr().cast(),
                rs_a,
                1,
                b.as_ptr().cast(),
                rs_b,
                1,
                0.0,
                c.as_mut_ptr().cast(),
                rs_c,
                1,
            );
        }
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: as above, with T = f64.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr().cast(),
                rs_a,
                1,
                b.as_ptr().cast(),
                rs_b,
                1,
                0.0,
                c.as_mut_ptr().cast(),
                rs_c,
                1,
            );
        }
    } else {
        gemm_blocked(m, k, n, a, b, c);
    }
}

/// The portable GEMM: i-k-j order, tiled over columns and the inner dimension so a
/// tile of `c` and of `b` stay in L1/L2; the innermost loop is a contiguous axpy that
/// rustc vectorises.
pub fn gemm_blocked<T: Scalar>(m: usize, k: usize, n: usize, a: &[T], b: &[T], c: &mut [T]) {
    const NB: usize = 256;
    const KB: usize = 64;
    c[..m * n].fill(T::zero());
    for j0 in (0..n).step_by(NB) {
        let j1 = (j0 + NB).min(n);
        for k0 in (0..k).step_by(KB) {
            let k1 = (k0 + KB).min(k);
            for i in 0..m {
                let crow = &mut c[i * n + j0..i * n + j1];
                for kk in k0..k1 {
                    let aik = a[i * k + kk];
                    let brow = &b[kk * n + j0..kk * n + j1];
                    for (cv, &bv) in crow.iter_mut().zip(brow) {
                        *cv += aik * bv;
                    }
                }
            }
        }
    }
}

/// Convolution by im2col + GEMM for `x` `[B, Ci, L]` / `[B, Ci, H, W]` and `w`
/// `[Co, Ci/groups, k…]`; stride, padding, dilation and groups as in `conv`.
pub fn conv_im2col<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
) -> Result<Tensor<T>, ShapeError> {
    as_conv2d("im2col conv", x, w, bias, p, |x, w, p, d| {
        im2col2d(x, w, bias, p, d)
    })
}

fn im2col2d<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
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
    let (cog, plane, taps) = (co / g, ho * wo, kh * kw);
    let rows = cig * taps;
    let mut out = Tensor::zeros(vec![b, co, ho, wo]);
    out.data
        .par_chunks_mut(co * plane)
        .enumerate()
        .for_each(|(bi, yb)| {
            let mut col = vec![T::zero(); rows * plane];
            for grp in 0..g {
                // Unfold: row (i, ty, tx), column (oy, ox); padding reads as zero.
                for i in 0..cig {
                    let xc = &x.data[(bi * ci + grp * cig + i) * h * wd..][..h * wd];
                    for ty in 0..kh {
                        for tx in 0..kw {
                            let row = &mut col[((i * kh + ty) * kw + tx) * plane..][..plane];
                            for oy in 0..ho {
                                let py = oy * p.stride[0] + ty * p.dilation[0];
                                let iy = py.checked_sub(p.padding[0].0).filter(|&v| v < h);
                                for ox in 0..wo {
                                    let px = ox * p.stride[1] + tx * p.dilation[1];
                                    let ix = px.checked_sub(p.padding[1].0).filter(|&v| v < wd);
                                    row[oy * wo + ox] = match (iy, ix) {
                                        (Some(iy), Some(ix)) => xc[iy * wd + ix],
                                        _ => T::zero(),
                                    };
                                }
                            }
                        }
                    }
                }
                let wg = &w.data[grp * cog * rows..][..cog * rows];
                let yg = &mut yb[grp * cog * plane..][..cog * plane];
                gemm(cog, rows, plane, wg, &col, yg);
                if let Some(bv) = bias {
                    for (o, yo) in yg.chunks_mut(plane).enumerate() {
                        let b0 = bv[grp * cog + o];
                        yo.iter_mut().for_each(|v| *v += b0);
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::conv::conv;
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64;

    use crate::reference::rand_t;

    #[test]
    fn gemms_agree() {
        let mut rng = Pcg64::seed_from_u64(3);
        for &(m, k, n) in &[(1, 1, 1), (3, 70, 5), (17, 9, 300), (4, 130, 257)] {
            let a = rand_t(&mut rng, &[m, k]);
            let b = rand_t(&mut rng, &[k, n]);
            let mut c1 = vec![0.0; m * n];
            let mut c2 = vec![7.0; m * n];
            gemm(m, k, n, &a.data, &b.data, &mut c1);
            gemm_blocked(m, k, n, &a.data, &b.data, &mut c2);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| a.data[i * k + t] * b.data[t * n + j]).sum();
                    assert!((c1[i * n + j] - want).abs() < 1e-12 * k as f64);
                    assert!((c2[i * n + j] - want).abs() < 1e-12 * k as f64);
                }
            }
        }
    }

    #[test]
    fn im2col_matches_direct_on_random_geometry() {
        let mut rng = Pcg64::seed_from_u64(11);
        for case in 0..60 {
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
            let n: Vec<usize> = (0..nd)
                .map(|i| d[i] * (k[i] - 1) + 1 + rng.random_range(0..9))
                .collect();
            let mut xs = vec![b, ci];
            xs.extend(&n);
            let mut ws = vec![co, ci / g];
            ws.extend(&k);
            let x = rand_t(&mut rng, &xs);
            let w = rand_t(&mut rng, &ws);
            let bias: Vec<f64> = (0..co).map(|o| o as f64 - 1.0).collect();
            let p = ConvParams {
                stride: s,
                padding: pad,
                dilation: d,
                groups: g,
            };
            let want = conv(&x, &w, Some(&bias), &p).unwrap();
            let got = conv_im2col(&x, &w, Some(&bias), &p).unwrap();
            assert_eq!(want.shape, got.shape, "case {case}: {p:?}");
            let err = want.max_abs_diff(&got).unwrap();
            assert!(err < 1e-12 * want.max_abs().max(1.0), "case {case}: {err}");
            // f32 goes through sgemm.
            let got32 = conv_im2col(&x.to_f32(), &w.to_f32(), None, &p).unwrap();
            let want32 = conv(&x.to_f32(), &w.to_f32(), None, &p).unwrap();
            assert!(want32.max_abs_diff(&got32).unwrap() < 1e-4 * want32.max_abs().max(1.0));
        }
    }

    #[test]
    fn im2col_rejects_what_direct_rejects() {
        let x = Tensor::<f64>::zeros(vec![1, 2, 4, 4]);
        let w = Tensor::<f64>::zeros(vec![2, 1, 5, 5]);
        assert!(conv_im2col(&x, &w, None, &ConvParams::unit(2)).is_err());
        let w = Tensor::<f64>::zeros(vec![2, 2, 3, 3]);
        assert!(conv_im2col(&x, &w, None, &ConvParams::unit(2).with_groups(2)).is_err());
        assert!(conv_im2col(&x, &w, Some(&[1.0]), &ConvParams::unit(2)).is_err());
    }
}
