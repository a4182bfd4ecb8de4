//! The LC block of "Learning with Random Convolutions" (docs/papers.md §2.3, §2.7):
//! a frozen k×k conv `Ci → E·Co` (no bias) followed directly by a learnable
//! 1×1 conv `E·Co → Co` (no bias), and its exact fold into one k×k conv.
//!
//! Folding is exact because both layers are linear, bias-free and the
//! second is pointwise: `Wc[o, i, :, :] = Σ_e C[o, e] · Ws[e, i, :, :]`,
//! i.e. `Wc = C · reshape(Ws, [E·Co, Ci·k·k])`.

use super::conv::{conv, ConvParams};
use crate::tensor::{Scalar, ShapeError, Tensor};

/// Accepts `C` as `[Co, E·Co]` or as a 1×1 conv weight `[Co, E·Co, 1, 1]`.
fn coeff_dims<T: Scalar>(c: &Tensor<T>) -> Result<(usize, usize), ShapeError> {
    match c.shape.as_slice() {
        [o, e] | [o, e, 1, 1] => Ok((*o, *e)),
        _ => Err(ShapeError::new(
            "LC coefficients",
            "[Co, E*Co] or [Co, E*Co, 1, 1]",
            format!("{:?}", c.shape),
        )),
    }
}

/// Unfolded LC block: `conv1x1(conv_kxk(x, Ws, p), C)`.
/// `ws` `[E·Co, Ci, k, k]`; `p` is the spatial conv's stride/padding.
pub fn lc_block<T: Scalar>(
    x: &Tensor<T>,
    ws: &Tensor<T>,
    c: &Tensor<T>,
    p: &ConvParams,
) -> Result<Tensor<T>, ShapeError> {
    let (co, e) = coeff_dims(c)?;
    let z = conv(x, ws, None, p)?;
    let c4 = Tensor {
        shape: vec![co, e, 1, 1],
        data: c.data.clone(),
    };
    conv(&z, &c4, None, &ConvParams::unit(2))
}

/// Folded weight `Wc` `[Co, Ci, k, k]` = `C · reshape(Ws)`.
pub fn lc_fold<T: Scalar>(ws: &Tensor<T>, c: &Tensor<T>) -> Result<Tensor<T>, ShapeError> {
    ws.expect_rank(4, "LC spatial weight [E*Co, Ci, k, k]")?;
    let (co, e) = coeff_dims(c)?;
    if ws.shape[0] != e {
        return Err(ShapeError::new(
            "LC fold",
            format!("spatial weight with {e} output channels (= C's columns)"),
            format!("{:?}", ws.shape),
        ));
    }
    let row: usize = ws.shape[1..].iter().product();
    let mut wc = vec![T::zero(); co * row];
    for o in 0..co {
        let dst = &mut wc[o * row..(o + 1) * row];
        for k in 0..e {
            let coef = c.data[o * e + k];
            for (d, &s) in dst.iter_mut().zip(&ws.data[k * row..(k + 1) * row]) {
                *d += coef * s;
            }
        }
    }
    let mut shape = ws.shape.clone();
    shape[0] = co;
    Tensor::from_vec(shape, wc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64;

    #[test]
    fn fold_equals_block() {
        let mut rng = Pcg64::seed_from_u64(3);
        let mut r = |s: &[usize]| {
            let n = s.iter().product();
            Tensor::from_vec(
                s.to_vec(),
                (0..n).map(|_| rng.random_range(-1.0..1.0)).collect(),
            )
            .unwrap()
        };
        let (x, ws, c) = (r(&[2, 3, 7, 7]), r(&[8, 3, 3, 3]), r(&[2, 8]));
        for p in [
            ConvParams::same(&[3, 3]),
            ConvParams::same(&[3, 3]).with_stride(vec![2, 2]),
        ] {
            let y = lc_block::<f64>(&x, &ws, &c, &p).unwrap();
            let wc = lc_fold(&ws, &c).unwrap();
            let yf = conv(&x, &wc, None, &p).unwrap();
            assert!(y.max_abs_diff(&yf).unwrap() < 1e-12);
        }
        assert!(lc_fold(&ws, &r(&[2, 7])).is_err());
    }
}
