//! Cross-entropy with optional label smoothing, forward and gradient to the
//! logits, as PyTorch's `F.cross_entropy(logits, target, label_smoothing=ε)`
//! with the default mean reduction.
//!
//! For logits `z` `[B, K]` and class indices `y` `[B]`, with the stable
//! `log p = z − max z − ln Σ exp(z − max z)`:
//!
//! `loss = (1/B) Σ_b [ −(1 − ε)·log p[b, y_b] − (ε/K)·Σ_k log p[b, k] ]`,
//!
//! i.e. the cross-entropy against the smoothed target `q = (1 − ε)·onehot(y) + ε/K`,
//! so the gradient is `dz = (softmax(z) − q) / B` (times the upstream `dloss`).

use crate::tensor::{Scalar, ShapeError, Tensor};

/// Checks the operands and returns `(B, K)`.
fn dims<T: Scalar>(
    logits: &Tensor<T>,
    target: &[usize],
    label_smoothing: T,
) -> Result<(usize, usize), ShapeError> {
    logits.expect_rank(2, "cross-entropy logits [B, K]")?;
    let (b, k) = (logits.shape[0], logits.shape[1]);
    if b == 0 || k == 0 {
        return Err(ShapeError::new(
            "cross-entropy logits",
            "at least one sample and one class",
            format!("{:?}", logits.shape),
        ));
    }
    if target.len() != b {
        return Err(ShapeError::new(
            "cross-entropy targets",
            format!("one class index per sample ({b})"),
            format!("{}", target.len()),
        ));
    }
    if let Some((i, &c)) = target.iter().enumerate().find(|&(_, &c)| c >= k) {
        return Err(ShapeError::new(
            "cross-entropy targets",
            format!("class indices below {k}"),
            format!("{c} at sample {i}"),
        ));
    }
    let eps = label_smoothing.to_f64();
    if !(0.0..=1.0).contains(&eps) {
        return Err(ShapeError::new(
            "cross-entropy label smoothing",
            "a value in [0, 1]",
            format!("{eps}"),
        ));
    }
    Ok((b, k))
}

/// `log softmax` of one row, shifted by its maximum so no `exp` overflows.
fn log_softmax<T: Scalar>(row: &[T]) -> Vec<T> {
    let m = row.iter().fold(-T::infinity(), |m, &v| m.max(v));
    let lse = m + row.iter().map(|&v| (v - m).exp()).sum::<T>().ln();
    row.iter().map(|&v| v - lse).collect()
}

/// Mean cross-entropy of `logits` `[B, K]` against class indices `target`
/// `[B]`, with label smoothing `ε` in `[0, 1]`.
pub fn cross_entropy<T: Scalar>(
    logits: &Tensor<T>,
    target: &[usize],
    label_smoothing: T,
) -> Result<T, ShapeError> {
    let (b, k) = dims(logits, target, label_smoothing)?;
    let eps = label_smoothing;
    let mut total = T::zero();
    for (row, &y) in logits.data.chunks(k).zip(target) {
        let lp = log_softmax(row);
        let smooth = lp.iter().copied().sum::<T>() / T::from_usize(k);
        total -= (T::one() - eps) * lp[y] + eps * smooth;
    }
    Ok(total / T::from_usize(b))
}

/// Gradient `[B, K]` of `dloss · cross_entropy(logits, target, ε)` to the
/// logits: `dloss · (softmax(z) − q) / B`.
pub fn cross_entropy_backward<T: Scalar>(
    logits: &Tensor<T>,
    target: &[usize],
    label_smoothing: T,
    dloss: T,
) -> Result<Tensor<T>, ShapeError> {
    let (b, k) = dims(logits, target, label_smoothing)?;
    let eps = label_smoothing;
    let scale = dloss / T::from_usize(b);
    let off = eps / T::from_usize(k);
    let mut dz = Vec::with_capacity(b * k);
    for (row, &y) in logits.data.chunks(k).zip(target) {
        for (c, lp) in log_softmax(row).into_iter().enumerate() {
            let q = if c == y { T::one() - eps + off } else { off };
            dz.push(scale * (lp.exp() - q));
        }
    }
    Tensor::from_vec(logits.shape.clone(), dz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::grad::{check_vjp, rand_vec};

    fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn two_classes_by_hand() {
        let ln2 = 2f64.ln();
        // Equal logits: p = ½ each, loss ln 2 whatever the smoothing.
        let z = t(&[1, 2], &[0., 0.]);
        assert!(close(cross_entropy(&z, &[0], 0.0).unwrap(), ln2));
        assert!(close(cross_entropy(&z, &[0], 0.1).unwrap(), ln2));
        assert_eq!(
            cross_entropy_backward(&z, &[0], 0.0, 1.0).unwrap().data,
            vec![-0.5, 0.5]
        );
        let g = cross_entropy_backward(&z, &[0], 0.1, 1.0).unwrap().data;
        assert!(close(g[0], -0.45) && close(g[1], 0.45), "{g:?}");
        // Logits (ln 3, 0): p = (¾, ¼). Target 1 and a batch of two with the row above.
        let z = t(&[2, 2], &[3f64.ln(), 0., 0., 0.]);
        let want0 = (4f64.ln() + ln2) / 2.0;
        assert!(close(cross_entropy(&z, &[1, 0], 0.0).unwrap(), want0));
        let smoothed = 0.9 * 4f64.ln() + 0.05 * ((4.0f64 / 3.0).ln() + 4f64.ln());
        let want = (smoothed + ln2) / 2.0;
        assert!(close(cross_entropy(&z, &[1, 0], 0.1).unwrap(), want));
        let g = cross_entropy_backward(&z, &[1, 0], 0.1, 2.0).unwrap().data;
        for (a, b) in g.iter().zip([0.7, -0.7, -0.45, 0.45]) {
            assert!(close(*a, b), "{g:?}");
        }
    }

    #[test]
    fn large_logits_stay_finite() {
        // A naive exp(1000) overflows; the shifted log-softmax gives exactly 1000.
        let z = t(&[1, 2], &[1000., 0.]);
        assert_eq!(cross_entropy(&z, &[1], 0.0).unwrap(), 1000.0);
        let g = cross_entropy_backward(&z, &[1], 0.0, 1.0).unwrap().data;
        assert_eq!(g, vec![1.0, -1.0]);
        let z32 = Tensor::from_vec(vec![1, 2], vec![100f32, 0.0]).unwrap();
        assert_eq!(cross_entropy(&z32, &[1], 0.0).unwrap(), 100.0);
    }

    #[test]
    fn matches_differences() {
        let (b, k) = (4, 5);
        let target = [0, 4, 2, 2];
        for (seed, eps) in [(80, 0.0), (81, 0.1)] {
            let z0: Vec<f64> = rand_vec(&mut crate::init::seeded(seed), b * k)
                .iter()
                .map(|v| 3.0 * v)
                .collect();
            check_vjp(
                &format!("cross-entropy ε={eps}"),
                seed,
                &z0,
                |a| vec![cross_entropy(&t(&[b, k], a), &target, eps).unwrap()],
                |v| {
                    cross_entropy_backward(&t(&[b, k], &z0), &target, eps, v[0])
                        .unwrap()
                        .data
                },
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let z = t(&[2, 3], &[0.; 6]);
        assert!(cross_entropy(&z, &[0, 3], 0.0).is_err());
        assert!(cross_entropy(&z, &[0], 0.0).is_err());
        assert!(cross_entropy(&z, &[0, 1], 1.5).is_err());
        assert!(cross_entropy(&z, &[0, 1], f64::NAN).is_err());
        assert!(cross_entropy_backward(&t(&[0, 3], &[]), &[], 0.0, 1.0).is_err());
        assert!(cross_entropy_backward(&t(&[6], &[0.; 6]), &[0], 0.0, 1.0).is_err());
    }
}
