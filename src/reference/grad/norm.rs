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
        let (mut sum_dy, mut sum_dy_xhat) = (T::zero(), T::zero());
        for r in planes(ch) {
            for (&xv, &g) in x.data[r.clone()].iter().zip(&dy.data[r]) {
                sum_dy += g;
                sum_dy_xhat += g * (xv - mean[ch]) * inv;
            }
        }
        dgamma[ch] = sum_dy_xhat;
        dbeta[ch] = sum_dy;
        let gm = gamma.map_or(T::one(), |g| g[ch]);
        for r in planes(ch) {
            for i in r {
                let xhat = (x.data[i] - mean[ch]) * inv;
                dx.data[i] = gm * inv / nt * (nt * dy.data[i] - sum_dy - xhat * sum_dy_xhat);
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
