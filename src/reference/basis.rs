//! The factorised conv of "Deeply Shared Filter Bases" (docs/papers.md §3.1; official
//! `BasicBlock_Basis` in ssregibility/Net_RL2 `models/cifar10/resnet.py`):
//!
//! ```text
//! z = cat(conv3x3(x, B_unique), conv3x3(x, B_shared), dim=1)   # unique first
//! z = BN(z)                                                      # basis_bn over u+s
//! y = conv1x1(z, coeff)                                          # no bias
//! ```
//!
//! Both basis convs use stride 1, "same" padding and no bias: the official
//! code factorises only the non-first blocks of a stage, which never stride.

use super::conv::{conv, ConvParams};
use super::layout::concat_channels;
use super::norm::{batch_norm_eval, batch_norm_train, Affine, RunningStats};
use crate::tensor::{Scalar, ShapeError, Tensor};

/// Batch-norm settings for the basis BN.
#[derive(Debug, Clone)]
pub enum BasisNorm<'a, T> {
    /// Batch statistics; returns updated running stats if given.
    Train {
        affine: Option<Affine<'a, T>>,
        running: Option<&'a RunningStats<T>>,
        momentum: T,
        eps: T,
    },
    /// Running statistics.
    Eval {
        affine: Option<Affine<'a, T>>,
        running: &'a RunningStats<T>,
        eps: T,
    },
}

/// `cat(conv(x, unique), conv(x, shared))` with 3×3-style "same" padding.
/// `unique` `[u, C, k, k]`, `shared` `[s, C, k, k]` → `[B, u+s, H, W]`.
pub fn basis_conv<T: Scalar>(
    x: &Tensor<T>,
    unique: &Tensor<T>,
    shared: &Tensor<T>,
) -> Result<Tensor<T>, ShapeError> {
    unique.expect_rank(4, "unique basis [u, C, k, k]")?;
    let p = ConvParams::same(&unique.shape[2..]);
    let zu = conv(x, unique, None, &p)?;
    let zs = conv(x, shared, None, &p)?;
    concat_channels(&[&zu, &zs])
}

/// The whole factorised conv: basis convs, basis BN, 1×1 coefficients
/// (`coeff` `[Co, u+s, 1, 1]` or `[Co, u+s]`). Returns the output and the
/// updated running stats in train mode.
pub fn basis_block<T: Scalar>(
    x: &Tensor<T>,
    unique: &Tensor<T>,
    shared: &Tensor<T>,
    norm: BasisNorm<'_, T>,
    coeff: &Tensor<T>,
) -> Result<(Tensor<T>, Option<RunningStats<T>>), ShapeError> {
    let z = basis_conv(x, unique, shared)?;
    let (z, stats) = match norm {
        BasisNorm::Train {
            affine,
            running,
            momentum,
            eps,
        } => batch_norm_train(&z, affine, running, momentum, eps)?,
        BasisNorm::Eval {
            affine,
            running,
            eps,
        } => (batch_norm_eval(&z, affine, running, eps)?, None),
    };
    let (co, k) = match coeff.shape.as_slice() {
        [o, k] | [o, k, 1, 1] => (*o, *k),
        _ => {
            return Err(ShapeError::new(
                "basis coefficients",
                "[Co, u+s, 1, 1] or [Co, u+s]",
                format!("{:?}", coeff.shape),
            ))
        }
    };
    let c4 = Tensor {
        shape: vec![co, k, 1, 1],
        data: coeff.data.clone(),
    };
    Ok((conv(&z, &c4, None, &ConvParams::unit(2))?, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_channels_come_first() {
        let x = Tensor::from_vec(vec![1, 1, 1, 1], vec![2.0f64]).unwrap();
        let u = Tensor::from_vec(
            vec![1, 1, 3, 3],
            [0., 0., 0., 0., 1., 0., 0., 0., 0.].to_vec(),
        )
        .unwrap();
        let s = u.map(|v| v * 10.0);
        let z = basis_conv(&x, &u, &s).unwrap();
        assert_eq!(z.data, vec![2.0, 20.0]);
        let running = RunningStats {
            mean: vec![0.0, 0.0],
            var: vec![1.0, 1.0],
        };
        let coeff = Tensor::from_vec(vec![1, 2], vec![1.0, 1.0]).unwrap();
        let norm = BasisNorm::Eval {
            affine: None,
            running: &running,
            eps: 0.0,
        };
        let (y, _) = basis_block(&x, &u, &s, norm, &coeff).unwrap();
        assert_eq!(y.data, vec![22.0]);
    }
}
