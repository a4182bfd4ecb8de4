//! FFT convolution (stride 1, dilation 1, one group), as FlexConv's
//! `fftconv` / `causal_fftconv`: pad, transform, multiply the input spectrum
//! by the *conjugate* of the kernel spectrum (which turns convolution into
//! PyTorch's cross-correlation), contract input channels, invert, crop.
//!
//! It must agree with [`conv`](super::conv) to rounding; the tests check
//! that. Unlike FlexConv we zero-pad to a 7-smooth length (factors 2, 3, 5, 7)
//! at least as long as the linear correlation needs, rather than exactly the
//! padded input length: the extra zeros change nothing, and smooth lengths
//! are much faster (measured: n = 1568 beats 2048 for L = K = 784).
//!
//! The 2D path pads each axis by its own `(k−1)/2`. The official `fftconv`
//! pads every axis by the *last* axis' `(k−1)/2`, which is the same for the
//! square kernels FlexConv uses but would shift the output for rectangular
//! (dynamically cropped) ones; here rectangular kernels match the direct conv.

use std::sync::Arc;

use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftNum, FftPlanner};

use super::conv::{causal_kernel, lift_1d};
use crate::tensor::{Scalar, ShapeError, Tensor};

/// Smallest integer `>= min` whose only prime factors are 2, 3, 5 and 7 (saturating at
/// `usize::MAX`). It tries each 3^b·5^c·7^d below `2·min` doubled up to `min`, so the
/// work grows with `log(min)^3`, not with the gap to the next such number: compile
/// time must not depend on tensor sizes.
pub fn fft_len(min: usize) -> usize {
    let n = min.max(1) as u128;
    let mut best = u128::MAX;
    let mut p7 = 1u128;
    while p7 < 2 * n {
        let mut p5 = p7;
        while p5 < 2 * n {
            let mut p3 = p5;
            while p3 < 2 * n {
                // `m << s >= n` with the fewest doublings.
                let shift = (n.div_ceil(p3)).next_power_of_two().trailing_zeros();
                best = best.min(p3 << shift);
                p3 *= 3;
            }
            p5 *= 5;
        }
        p7 *= 7;
    }
    usize::try_from(best).unwrap_or(usize::MAX)
}

/// Causal 1D convolution by FFT; same result as
/// [`causal_conv1d`](super::conv::causal_conv1d). `x` `[B, Ci, L]`, `w` `[Co, Ci, k]`.
pub fn fft_causal_conv1d<T: Scalar + FftNum>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
) -> Result<Tensor<T>, ShapeError> {
    x.expect_rank(3, "fft causal conv input [B, C, L]")?;
    let w = causal_kernel(w)?;
    let k = w.shape[2];
    // Left padding k−1 puts the last tap on the current sample.
    let y = correlate(&lift_1d(x), &lift_1d(&w), bias, (0, k.saturating_sub(1)))?;
    let (b, c, l) = (y.shape[0], y.shape[1], y.shape[3]);
    Ok(Tensor {
        shape: vec![b, c, l],
        data: y.data,
    })
}

/// 2D "same" convolution by FFT for odd kernels; same result as
/// [`conv`](super::conv::conv) with [`ConvParams::same`](super::conv::ConvParams::same).
pub fn fft_conv2d_same<T: Scalar + FftNum>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
) -> Result<Tensor<T>, ShapeError> {
    x.expect_rank(4, "fft conv input [B, C, H, W]")?;
    w.expect_rank(4, "fft conv weight [Co, Ci, kh, kw]")?;
    let (kh, kw) = (w.shape[2], w.shape[3]);
    if kh % 2 == 0 || kw % 2 == 0 {
        return Err(ShapeError::new(
            "fft conv weight",
            "odd kernel sizes (as FlexConv requires)",
            format!("{kh}x{kw}"),
        ));
    }
    correlate(x, w, bias, ((kh - 1) / 2, (kw - 1) / 2))
}

/// `y[b,o,r,c] = bias[o] + Σ_i Σ_{dr,dc} xpad[b,i,r+dr,c+dc] · w[o,i,dr,dc]`
/// where `xpad` is `x` shifted by `offset` into a zero plane; the output has
/// the input's spatial size.
fn correlate<T: Scalar + FftNum>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    offset: (usize, usize),
) -> Result<Tensor<T>, ShapeError> {
    let [b, ci, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let [co, wci, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
    if wci != ci {
        return Err(ShapeError::new(
            "fft conv weight",
            format!("[Co, {ci}, ...] (groups are not supported)"),
            format!("{:?}", w.shape),
        ));
    }
    if bias.is_some_and(|bv| bv.len() != co) {
        return Err(ShapeError::new(
            "fft conv bias",
            format!("{co} values"),
            format!("{}", bias.map_or(0, <[T]>::len)),
        ));
    }
    if kh == 0 || kw == 0 {
        return Err(ShapeError::new(
            "fft conv weight",
            "non-empty kernel",
            "0 taps",
        ));
    }
    // Long enough that the circular correlation never wraps into the outputs.
    let plan = Plan::new(fft_len(h + kh - 1), fft_len(wd + kw - 1));
    let mut out = Tensor::zeros(vec![b, co, h, wd]);
    if out.numel() == 0 {
        return Ok(out);
    }

    let mut kspec = Vec::with_capacity(co * ci);
    for plane in w.data.chunks(kh * kw) {
        kspec.push(plan.forward(plane, kh, kw, (0, 0))?);
    }
    let spec_len = plan.n1 * plan.m;
    for bi in 0..b {
        let xspec = (0..ci)
            .map(|i| {
                let plane = &x.data[(bi * ci + i) * h * wd..][..h * wd];
                plan.forward(plane, h, wd, offset)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for o in 0..co {
            let mut acc =
                vec![Complex::new(<T as Scalar>::zero(), <T as Scalar>::zero()); spec_len];
            for (i, xs) in xspec.iter().enumerate() {
                for ((a, xv), kv) in acc.iter_mut().zip(xs).zip(&kspec[o * ci + i]) {
                    *a = *a + xv * kv.conj();
                }
            }
            let full = plan.inverse(acc)?;
            let b0 = bias.map_or(<T as Scalar>::zero(), |bv| bv[o]);
            let dst = &mut out.data[(bi * co + o) * h * wd..][..h * wd];
            for r in 0..h {
                for c in 0..wd {
                    dst[r * wd + c] = full[r * plan.n2 + c] + b0;
                }
            }
        }
    }
    Ok(out)
}

/// FFT plans for an `n1 × n2` real plane (rows real-to-complex, columns complex).
struct Plan<T: FftNum> {
    n1: usize,
    n2: usize,
    /// Number of complex bins per row, `n2/2 + 1`.
    m: usize,
    r2c: Arc<dyn RealToComplex<T>>,
    c2r: Arc<dyn ComplexToReal<T>>,
    col_fwd: Arc<dyn Fft<T>>,
    col_inv: Arc<dyn Fft<T>>,
}

fn fft_err(e: impl std::fmt::Display) -> ShapeError {
    ShapeError::new("fft", "a successful transform", e.to_string())
}

impl<T: Scalar + FftNum> Plan<T> {
    fn new(n1: usize, n2: usize) -> Self {
        let mut rp = RealFftPlanner::<T>::new();
        let mut cp = FftPlanner::<T>::new();
        Self {
            n1,
            n2,
            m: n2 / 2 + 1,
            r2c: rp.plan_fft_forward(n2),
            c2r: rp.plan_fft_inverse(n2),
            col_fwd: cp.plan_fft_forward(n1),
            col_inv: cp.plan_fft_inverse(n1),
        }
    }

    /// Spectrum (`n1 × m`, row-major) of an `h × w` plane placed at `offset`
    /// in a zero `n1 × n2` plane.
    fn forward(
        &self,
        plane: &[T],
        h: usize,
        w: usize,
        offset: (usize, usize),
    ) -> Result<Vec<Complex<T>>, ShapeError> {
        let zero = Complex::new(<T as Scalar>::zero(), <T as Scalar>::zero());
        let mut spec = vec![zero; self.n1 * self.m];
        let mut row = vec![<T as Scalar>::zero(); self.n2];
        for r in 0..h {
            row.fill(<T as Scalar>::zero());
            row[offset.1..offset.1 + w].copy_from_slice(&plane[r * w..(r + 1) * w]);
            let dst = &mut spec[(r + offset.0) * self.m..][..self.m];
            self.r2c.process(&mut row, dst).map_err(fft_err)?;
        }
        let mut col = vec![zero; self.n1];
        for c in 0..self.m {
            for (r, v) in col.iter_mut().enumerate() {
                *v = spec[r * self.m + c];
            }
            self.col_fwd.process(&mut col);
            for (r, v) in col.iter().enumerate() {
                spec[r * self.m + c] = *v;
            }
        }
        Ok(spec)
    }

    /// Real `n1 × n2` plane of a spectrum, normalised (rustfft does not scale).
    fn inverse(&self, mut spec: Vec<Complex<T>>) -> Result<Vec<T>, ShapeError> {
        let zero = Complex::new(<T as Scalar>::zero(), <T as Scalar>::zero());
        let mut col = vec![zero; self.n1];
        for c in 0..self.m {
            for (r, v) in col.iter_mut().enumerate() {
                *v = spec[r * self.m + c];
            }
            self.col_inv.process(&mut col);
            for (r, v) in col.iter().enumerate() {
                spec[r * self.m + c] = *v;
            }
        }
        let scale = <T as Scalar>::one() / <T as Scalar>::from_usize(self.n1 * self.n2);
        let mut out = vec![<T as Scalar>::zero(); self.n1 * self.n2];
        for (r, dst) in out.chunks_mut(self.n2).enumerate() {
            let row = &mut spec[r * self.m..(r + 1) * self.m];
            // realfft rejects non-zero imaginary parts at DC and Nyquist; after
            // the products they are rounding noise of a Hermitian spectrum.
            row[0].im = <T as Scalar>::zero();
            if self.n2.is_multiple_of(2) {
                row[self.m - 1].im = <T as Scalar>::zero();
            }
            self.c2r.process(row, dst).map_err(fft_err)?;
            for v in dst.iter_mut() {
                *v *= scale;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::conv::{causal_conv1d, conv, ConvParams};
    use rand::SeedableRng;
    use rand_pcg::Pcg64;

    use crate::reference::rand_t;

    #[test]
    fn fft_len_is_smooth() {
        assert_eq!(fft_len(1567), 1568);
        assert_eq!(fft_len(11), 12);
        assert_eq!(fft_len(0), 1);
        assert_eq!(fft_len(1), 1);
        assert_eq!(fft_len(121), 125);
        // Against the definition: the next number with no prime factor above 7.
        let smooth = |mut m: usize| {
            for p in [2, 3, 5, 7] {
                while m.is_multiple_of(p) {
                    m /= p;
                }
            }
            m == 1
        };
        let mut want = 1;
        for n in 1..5000 {
            while want < n || !smooth(want) {
                want += 1;
            }
            assert_eq!(fft_len(n), want, "fft_len({n})");
        }
        // Far from any such number it is still instant (once: a scan took minutes).
        // The smallest 2^a·3^b·5^c·7^d above 10^12, by brute force over the exponents.
        assert_eq!(fft_len(1_000_000_000_001), 1_000_188_000_000);
        assert_eq!(fft_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn fft_2d_matches_direct() {
        let mut rng = Pcg64::seed_from_u64(7);
        for &(b, ci, co, h, w, kh, kw) in &[
            (2, 3, 2, 8, 8, 3, 3),
            (1, 2, 3, 7, 9, 5, 3),
            (1, 1, 1, 5, 5, 9, 9),
            (1, 2, 2, 12, 10, 51, 51),
            (2, 1, 2, 6, 11, 1, 7),
        ] {
            let x = rand_t(&mut rng, &[b, ci, h, w]);
            let k = rand_t(&mut rng, &[co, ci, kh, kw]);
            let bias: Vec<f64> = (0..co).map(|o| o as f64 * 0.5).collect();
            let d = conv(&x, &k, Some(&bias), &ConvParams::same(&[kh, kw])).unwrap();
            let f = fft_conv2d_same(&x, &k, Some(&bias)).unwrap();
            let err = d.max_abs_diff(&f).unwrap();
            assert!(err < 1e-10 * d.max_abs().max(1.0), "{kh}x{kw}: {err}");
        }
    }

    #[test]
    fn fft_causal_matches_direct() {
        let mut rng = Pcg64::seed_from_u64(8);
        for &(b, ci, co, l, k) in &[
            (2, 2, 3, 16, 5),
            (1, 1, 2, 30, 30),
            (1, 3, 1, 20, 64),
            (2, 1, 1, 9, 1),
        ] {
            let x = rand_t(&mut rng, &[b, ci, l]);
            let w = rand_t(&mut rng, &[co, ci, k]);
            let d = causal_conv1d(&x, &w, None).unwrap();
            let f = fft_causal_conv1d(&x, &w, None).unwrap();
            let err = d.max_abs_diff(&f).unwrap();
            assert!(err < 1e-10 * d.max_abs().max(1.0), "k={k}: {err}");
        }
    }

    #[test]
    fn fft_f32_close_to_direct() {
        let mut rng = Pcg64::seed_from_u64(9);
        let x = rand_t(&mut rng, &[1, 2, 10, 10]).to_f32();
        let k = rand_t(&mut rng, &[2, 2, 7, 7]).to_f32();
        let d = conv(&x, &k, None, &ConvParams::same(&[7, 7])).unwrap();
        let f = fft_conv2d_same(&x, &k, None).unwrap();
        assert!(d.max_abs_diff(&f).unwrap() < 1e-4 * d.max_abs().max(1.0));
    }

    #[test]
    fn fft_rejects_even_and_grouped() {
        let x = Tensor::<f64>::zeros(vec![1, 2, 4, 4]);
        assert!(fft_conv2d_same(&x, &Tensor::zeros(vec![1, 2, 2, 3]), None).is_err());
        assert!(fft_conv2d_same(&x, &Tensor::zeros(vec![1, 1, 3, 3]), None).is_err());
    }
}
