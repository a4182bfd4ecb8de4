//! Interpreter kernels for the ops of the folding passes: `lc_fold` (mix the leading
//! axis of a kernel or bias by a 1×1 conv's coefficients), `bn_fold` (eval-mode
//! BatchNorm folded into a weight or bias) and a fused conv's epilogue.

use super::error::RunError;
use crate::ir::fold_ops::{Epilogue, FoldOutput};
use crate::reference::activation;
use crate::tensor::{Scalar, Tensor};

/// `out[o, …] = Σ_j C[o, j]·W[j, …]` with C `[Co, J, 1…]` and W `[J, …]`.
pub fn lc_fold<T: Scalar>(w: &Tensor<T>, c: &Tensor<T>) -> Result<Tensor<T>, RunError> {
    let (co, j) = match c.shape.as_slice() {
        [o, j, rest @ ..] if rest.iter().all(|&d| d == 1) => (*o, *j),
        s => return Err(RunError::new(format!("lc_fold coefficients {s:?}"))),
    };
    if w.shape.first() != Some(&j) {
        return Err(RunError::new(format!(
            "lc_fold: weight {:?} does not have {j} rows",
            w.shape
        )));
    }
    let row = w.numel() / j.max(1);
    let mut out = vec![T::zero(); co * row];
    for (o, dst) in out.chunks_mut(row.max(1)).enumerate().take(co) {
        for k in 0..j {
            let coef = c.data[o * j + k];
            for (d, &s) in dst.iter_mut().zip(&w.data[k * row..(k + 1) * row]) {
                *d += coef * s;
            }
        }
    }
    let mut shape = w.shape.clone();
    shape[0] = co;
    Ok(Tensor::from_vec(shape, out)?)
}

/// The per-channel scale `a = γ/√(var + eps)` of an eval-mode BatchNorm.
fn scale<T: Scalar>(gamma: Option<&[T]>, var: &[T], eps: f64) -> Vec<T> {
    let eps = T::from_f64(eps);
    var.iter()
        .enumerate()
        .map(|(c, &v)| {
            let inv = T::one() / (v + eps).sqrt();
            gamma.map_or(inv, |g| g[c] * inv)
        })
        .collect()
}

/// `bn_fold`: operands as documented on `FoldOutput`.
pub fn bn_fold<T: Scalar>(
    a: &[&Tensor<T>],
    eps: f64,
    affine: bool,
    output: FoldOutput,
) -> Result<Tensor<T>, RunError> {
    match output {
        FoldOutput::Weight => {
            let w = a[0];
            let gamma = affine.then(|| a[1].data.as_slice());
            let s = scale(gamma, &a[a.len() - 1].data, eps);
            let row = w.numel() / s.len().max(1);
            let data = w
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| v * s[i / row.max(1)])
                .collect();
            Ok(Tensor::from_vec(w.shape.clone(), data)?)
        }
        FoldOutput::Bias { conv_bias } => {
            let b = conv_bias.then(|| a[0]);
            let at = usize::from(conv_bias);
            let (gamma, beta) = if affine {
                (Some(a[at].data.as_slice()), Some(a[at + 1].data.as_slice()))
            } else {
                (None, None)
            };
            let (mean, var) = (a[a.len() - 2], a[a.len() - 1]);
            let s = scale(gamma, &var.data, eps);
            let data = (0..s.len())
                .map(|c| {
                    let bc = b.map_or(T::zero(), |b| b.data[c]);
                    beta.map_or(T::zero(), |be| be[c]) + s[c] * (bc - mean.data[c])
                })
                .collect();
            Ok(Tensor::from_vec(mean.shape.clone(), data)?)
        }
    }
}

/// Runs a fused conv's epilogue on the conv output `y`; `residuals` in order.
pub fn epilogue<T: Scalar>(
    mut y: Tensor<T>,
    steps: &[Epilogue],
    residuals: &[&Tensor<T>],
) -> Result<Tensor<T>, RunError> {
    let mut next = residuals.iter();
    for step in steps {
        match step {
            Epilogue::Relu => y = activation::relu(&y),
            Epilogue::AddResidual => {
                let r = next
                    .next()
                    .ok_or_else(|| RunError::new("fused conv: missing residual operand"))?;
                if r.shape != y.shape {
                    return Err(RunError::new(format!(
                        "fused conv: residual {:?} does not match {:?}",
                        r.shape, y.shape
                    )));
                }
                y.data.iter_mut().zip(&r.data).for_each(|(v, &r)| *v += r);
            }
        }
    }
    Ok(y)
}
