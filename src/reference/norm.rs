//! Batch normalisation over `[B, C, …]` with PyTorch semantics.
//!
//! - Training mode normalises with the batch mean and the *biased* batch
//!   variance (divide by `n = B·spatial`), and updates running statistics
//!   with the *unbiased* variance (divide by `n − 1`):
//!   `running = (1 − momentum)·running + momentum·batch`.
//! - Evaluation mode normalises with the running statistics.
//! - `track_running_stats=False` (the balanced-mixture SuperNets) has no
//!   running statistics and uses batch statistics in both modes: call
//!   [`batch_norm_train`] with `running = None`.

use crate::tensor::{Scalar, ShapeError, Tensor};

/// Learnable scale and shift per channel (`affine=True`).
#[derive(Debug, Clone, Copy)]
pub struct Affine<'a, T> {
    pub gamma: &'a [T],
    pub beta: &'a [T],
}

/// Running mean and (unbiased) variance per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningStats<T> {
    pub mean: Vec<T>,
    pub var: Vec<T>,
}

impl<T: Scalar> RunningStats<T> {
    /// PyTorch's initial state: mean 0, variance 1.
    pub fn new(channels: usize) -> Self {
        Self {
            mean: vec![T::zero(); channels],
            var: vec![T::one(); channels],
        }
    }
}

/// Per-channel batch mean and biased variance of `x` `[B, C, …]`.
pub fn batch_stats<T: Scalar>(x: &Tensor<T>) -> Result<(Vec<T>, Vec<T>, usize), ShapeError> {
    let (b, c, s) = layout(x)?;
    let n = b * s;
    if n == 0 {
        return Err(ShapeError::new(
            "batch norm",
            "at least one value per channel",
            format!("{:?}", x.shape),
        ));
    }
    let mut mean = vec![T::zero(); c];
    let mut var = vec![T::zero(); c];
    for ch in 0..c {
        let vals = || (0..b).flat_map(move |bi| x.data[(bi * c + ch) * s..][..s].iter().copied());
        // Two passes, each summed in f64: the one-pass E[x²] − E[x]² form loses digits
        // in f32, and so does a long f32 sum (the backward's x̂ inherits the error).
        let m = vals().map(T::to_f64).sum::<f64>() / n as f64;
        let v = vals().map(|v| (v.to_f64() - m).powi(2)).sum::<f64>() / n as f64;
        mean[ch] = T::from_f64(m);
        var[ch] = T::from_f64(v);
    }
    Ok((mean, var, n))
}

/// Training-mode forward. Returns the output and, if `running` was given,
/// the updated running statistics.
pub fn batch_norm_train<T: Scalar>(
    x: &Tensor<T>,
    affine: Option<Affine<'_, T>>,
    running: Option<&RunningStats<T>>,
    momentum: T,
    eps: T,
) -> Result<(Tensor<T>, Option<RunningStats<T>>), ShapeError> {
    let (mean, var, n) = batch_stats(x)?;
    let y = normalise(x, &mean, &var, affine, eps)?;
    let updated = match running {
        None => None,
        Some(r) => {
            check_len(&r.mean, mean.len(), "running mean")?;
            check_len(&r.var, mean.len(), "running var")?;
            // With one value per channel PyTorch's unbiased variance is
            // inf/NaN; use the biased one there rather than poison the stats.
            let unbias = if n > 1 {
                T::from_usize(n) / T::from_usize(n - 1)
            } else {
                T::one()
            };
            let keep = T::one() - momentum;
            Some(RunningStats {
                mean: r
                    .mean
                    .iter()
                    .zip(&mean)
                    .map(|(&rm, &m)| keep * rm + momentum * m)
                    .collect(),
                var: r
                    .var
                    .iter()
                    .zip(&var)
                    .map(|(&rv, &v)| keep * rv + momentum * v * unbias)
                    .collect(),
            })
        }
    };
    Ok((y, updated))
}

/// Evaluation-mode forward with running statistics.
pub fn batch_norm_eval<T: Scalar>(
    x: &Tensor<T>,
    affine: Option<Affine<'_, T>>,
    running: &RunningStats<T>,
    eps: T,
) -> Result<Tensor<T>, ShapeError> {
    normalise(x, &running.mean, &running.var, affine, eps)
}

fn layout<T: Scalar>(x: &Tensor<T>) -> Result<(usize, usize, usize), ShapeError> {
    if x.ndim() < 2 {
        return Err(ShapeError::new(
            "batch norm input",
            "[B, C, ...]",
            format!("{:?}", x.shape),
        ));
    }
    Ok((x.shape[0], x.shape[1], x.shape[2..].iter().product()))
}

fn check_len<T>(v: &[T], c: usize, what: &str) -> Result<(), ShapeError> {
    if v.len() != c {
        return Err(ShapeError::new(
            format!("batch norm {what}"),
            format!("{c} channels"),
            format!("{}", v.len()),
        ));
    }
    Ok(())
}

/// `y = (x − mean)/sqrt(var + eps)·gamma + beta`, per channel.
fn normalise<T: Scalar>(
    x: &Tensor<T>,
    mean: &[T],
    var: &[T],
    affine: Option<Affine<'_, T>>,
    eps: T,
) -> Result<Tensor<T>, ShapeError> {
    let (b, c, s) = layout(x)?;
    check_len(mean, c, "mean")?;
    check_len(var, c, "var")?;
    if let Some(a) = affine {
        check_len(a.gamma, c, "gamma")?;
        check_len(a.beta, c, "beta")?;
    }
    let mut y = x.clone();
    for bi in 0..b {
        for ch in 0..c {
            let inv = T::one() / (var[ch] + eps).sqrt();
            let (g, bt) = affine.map_or((T::one(), T::zero()), |a| (a.gamma[ch], a.beta[ch]));
            for v in &mut y.data[(bi * c + ch) * s..][..s] {
                *v = (*v - mean[ch]) * inv * g + bt;
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_by_hand() {
        // One channel, values 1, 2, 3, 4 spread over batch 2 × length 2.
        let x = Tensor::from_vec(vec![2, 1, 2], vec![1.0f64, 2.0, 3.0, 4.0]).unwrap();
        let r = RunningStats::new(1);
        let (y, upd) = batch_norm_train(&x, None, Some(&r), 0.1, 0.0).unwrap();
        // mean 2.5, biased var 1.25, unbiased 5/3.
        let s = 1.25f64.sqrt();
        assert!((y.data[0] + 1.5 / s).abs() < 1e-12);
        let upd = upd.unwrap();
        assert!((upd.mean[0] - 0.25).abs() < 1e-12);
        assert!((upd.var[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-12);

        let a = Affine {
            gamma: &[2.0],
            beta: &[1.0],
        };
        let ye = batch_norm_eval(&x, Some(a), &upd, 0.0).unwrap();
        let want = (1.0 - upd.mean[0]) / upd.var[0].sqrt() * 2.0 + 1.0;
        assert!((ye.data[0] - want).abs() < 1e-12);
    }

    #[test]
    fn shape_errors() {
        let x = Tensor::<f32>::zeros(vec![2, 3, 4]);
        assert!(batch_norm_eval(&x, None, &RunningStats::new(2), 1e-5).is_err());
        let a = Affine {
            gamma: &[1.0f32; 2],
            beta: &[0.0; 3],
        };
        assert!(batch_norm_train(&x, Some(a), None, 0.1, 1e-5).is_err());
        assert!(
            batch_norm_train(&Tensor::<f32>::zeros(vec![0, 3]), None, None, 0.1, 1e-5).is_err()
        );
    }
}
