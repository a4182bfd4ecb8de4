//! Training-mode batch norm backward, for
//! [`batch_norm_train`](crate::reference::norm::batch_norm_train) over
//! `[B, C, …]`.
//!
//! The forward normalises with the batch mean `μ` and the biased batch variance
//! `σ²` (divide by `n = B·spatial`), both functions of `x`, so the gradient to
//! `x` runs through them too. With `x̂ = (x − μ)/√(σ² + ε)` and `g = dy·γ`,
//! per channel:
//!
//! `dx = (n·g − Σg − x̂·Σ(g·x̂)) / (n·√(σ² + ε))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
//!
//! The running statistics the forward updates are buffers, not parameters:
//! nothing flows back through them.

use crate::reference::norm::batch_stats;
use crate::tensor::{Scalar, ShapeError, Tensor};

/// Gradients of a training-mode batch norm; `dgamma`/`dbeta` `[C]` are
/// there exactly when the layer is affine.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormGrads<T> {
    pub dx: Tensor<T>,
    pub dgamma: Option<Vec<T>>,
    pub dbeta: Option<Vec<T>>,
}

/// Backward of `batch_norm_train(x, affine, running, momentum, eps)`: `gamma`
/// is the affine scale (`None` without affine parameters; the shift `beta`
/// does not enter any gradient) and `dy` the upstream gradient, shaped as `x`.
pub fn batch_norm_train_backward<T: Scalar>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    gamma: Option<&[T]>,
    eps: T,
) -> Result<BatchNormGrads<T>, ShapeError> {
    let (mean, var, n) = batch_stats(x)?;
    let (b, c) = (x.shape[0], x.shape[1]);
    let s = n / b;
    if dy.shape != x.shape {
        return Err(ShapeError::new(
            "batch norm backward upstream gradient",
            format!("the input's shape {:?}", x.shape),
            format!("{:?}", dy.shape),
        ));
    }
    if let Some(g) = gamma.filter(|g| g.len() != c) {
        return Err(ShapeError::new(
            "batch norm backward gamma",
            format!("{c} channels"),
            format!("{}", g.len()),
        ));
    }
    let nt = T::from_usize(n);
    let mut dx = Tensor::zeros(x.shape.clone());
    let mut dgamma = vec![T::zero(); c];
    let mut dbeta = vec![T::zero(); c];
    let planes = |ch: usize| (0..b).map(move |bi| (bi * c + ch) * s..(bi * c + ch + 1) * s);
    for ch in 0..c {
        let inv = T::one() / (var[ch] + eps).sqrt();
        // The sums and `n·dy − Σdy − x̂·Σ(dy·x̂)` are computed in f64: the difference
        // cancels almost entirely where dy is nearly constant over a channel (behind a
        // global average pool), and in f32 it put 7e-4 relative error into FlexNet-7's
        // last mask gradient (tests/golden_grads.rs). PyTorch's CPU kernel accumulates
        // in double too.
        let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
        for r in planes(ch) {
            for (&xv, &g) in x.data[r.clone()].iter().zip(&dy.data[r]) {
                sum_dy += g.to_f64();
                sum_dy_xhat += (g * (xv - mean[ch]) * inv).to_f64();
            }
        }
        dgamma[ch] = T::from_f64(sum_dy_xhat);
        dbeta[ch] = T::from_f64(sum_dy);
        let gm = gamma.map_or(T::one(), |g| g[ch]);
        let (scale, nf) = ((gm * inv / nt).to_f64(), n as f64);
        for r in planes(ch) {
            for i in r {
                let xhat = ((x.data[i] - mean[ch]) * inv).to_f64();
                let d = nf * dy.data[i].to_f64() - sum_dy - xhat * sum_dy_xhat;
                dx.data[i] = T::from_f64(scale * d);
            }
        }
    }
    let affine = gamma.is_some();
    Ok(BatchNormGrads {
        dx,
        dgamma: affine.then_some(dgamma),
        dbeta: affine.then_some(dbeta),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::grad::{check_vjp, rand_vec};
    use crate::reference::norm::{batch_norm_train, Affine, RunningStats};

    fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn without_affine_matches_differences() {
        for (seed, xs) in [
            (60, vec![3, 2, 5]),
            (61, vec![2, 3, 2, 3]),
            (62, vec![5, 2]),
        ] {
            let nx: usize = xs.iter().product();
            let x0 = rand_vec(&mut crate::init::seeded(seed), nx);
            let x = t(&xs, &x0);
            check_vjp(
                &format!("batch norm {xs:?}"),
                seed,
                &x0,
                |a| {
                    let r = RunningStats::new(xs[1]);
                    batch_norm_train(&t(&xs, a), None, Some(&r), 0.1, 1e-5)
                        .unwrap()
                        .0
                        .data
                },
                |v| {
                    let g = batch_norm_train_backward(&x, &t(&xs, v), None, 1e-5).unwrap();
                    assert!(g.dgamma.is_none() && g.dbeta.is_none());
                    g.dx.data
                },
            );
        }
    }

    #[test]
    fn affine_matches_differences() {
        let xs = [3, 2, 2, 3];
        let mut rng = crate::init::seeded(63);
        let all = rand_vec(&mut rng, 36 + 4);
        let f = |a: &[f64]| {
            let affine = Affine {
                gamma: &a[36..38],
                beta: &a[38..],
            };
            batch_norm_train(&t(&xs, &a[..36]), Some(affine), None, 0.1, 1e-3)
                .unwrap()
                .0
                .data
        };
        let x = t(&xs, &all[..36]);
        let vjp = |v: &[f64]| {
            let g = batch_norm_train_backward(&x, &t(&xs, v), Some(&all[36..38]), 1e-3).unwrap();
            let mut out = g.dx.data;
            out.extend(g.dgamma.unwrap());
            out.extend(g.dbeta.unwrap());
            out
        };
        check_vjp("affine batch norm", 63, &all, f, vjp);
    }

    #[test]
    fn constant_upstream_gradient_is_absorbed() {
        // A constant shift of every output of one channel is undone by the
        // mean subtraction, so it sends nothing back to x; dβ counts it.
        let x = t(&[2, 1, 2], &[1., 2., 3., 5.]);
        let g = batch_norm_train_backward(&x, &t(&[2, 1, 2], &[1.; 4]), Some(&[3.]), 1e-5).unwrap();
        assert!(g.dx.data.iter().all(|v| v.abs() < 1e-12), "{:?}", g.dx.data);
        assert_eq!(g.dbeta, Some(vec![4.]));
        assert!(g.dgamma.unwrap()[0].abs() < 1e-12);
    }

    /// Behind a global average pool dy is nearly constant over a channel, and dx is
    /// what is left of `n·dy − Σdy − x̂·Σ(dy·x̂)`: the f32 result must still be close
    /// to the f64 one on the same (f32-rounded) inputs.
    #[test]
    fn f32_keeps_precision_when_dy_is_nearly_constant() {
        let xs = [2, 4, 32, 32];
        let n: usize = xs.iter().product();
        let mut rng = crate::init::seeded(64);
        let x32: Vec<f32> = rand_vec(&mut rng, n).iter().map(|&v| v as f32).collect();
        let dy32: Vec<f32> = rand_vec(&mut rng, n)
            .iter()
            .map(|&r| ((1.0 + 1e-3 * r) / 1024.0) as f32)
            .collect();
        let gamma = [0.8f32, 1.1, 1.3, 0.9];
        let f32t = |v: &[f32]| Tensor::from_vec(xs.to_vec(), v.to_vec()).unwrap();
        let g32 = batch_norm_train_backward(&f32t(&x32), &f32t(&dy32), Some(&gamma), 1e-5).unwrap();
        let (x64, dy64) = (f32t(&x32).to_f64(), f32t(&dy32).to_f64());
        let gamma64 = gamma.map(f64::from);
        let g64 = batch_norm_train_backward(&x64, &dy64, Some(&gamma64), 1e-5).unwrap();
        let rel = g32.dx.max_abs_diff(&g64.dx).unwrap() / g64.dx.max_abs();
        assert!(
            rel < 5e-5,
            "dx: f32 relative error {rel:.2e} (PyTorch: 1.7e-5)"
        );
        // dγ = Σ dy·x̂ nearly cancels here (x̂ sums to zero over a channel), so its f32
        // error is relative to the size of its terms, Σ|dy·x̂| ≤ Σ|dy|·max|x̂| ≈ 4·dβ,
        // not to the small sum: f32 rounding of the mean alone moves it by ~1e-3 of itself.
        let scale = g64
            .dbeta
            .as_ref()
            .unwrap()
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        for (what, a, b) in [
            ("dgamma", g32.dgamma.unwrap(), g64.dgamma.unwrap()),
            ("dbeta", g32.dbeta.unwrap(), g64.dbeta.unwrap()),
        ] {
            for (u, v) in a.iter().zip(&b) {
                assert!(
                    (f64::from(*u) - v).abs() <= 1e-6 * scale,
                    "{what}: {u} vs {v} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::<f32>::zeros(vec![2, 3, 4]);
        assert!(batch_norm_train_backward(&x, &Tensor::zeros(vec![2, 3, 5]), None, 1e-5).is_err());
        let dy = Tensor::zeros(vec![2, 3, 4]);
        assert!(batch_norm_train_backward(&x, &dy, Some(&[1.0; 2]), 1e-5).is_err());
        assert!(batch_norm_train_backward(&x, &dy, Some(&[1.0; 3]), 1e-5).is_ok());
        let empty = Tensor::<f32>::zeros(vec![0, 3]);
        assert!(batch_norm_train_backward(&empty, &empty, None, 1e-5).is_err());
    }
}
