//! Backward of the LC fold `Y[o, …] = Σ_j C[o, j]·W[j, …]` (a matrix product of the
//! coefficients `[Co, J]` and the basis viewed as `[J, R]`): `dW = Cᵀ·dY` and
//! `dC = dY·Wᵀ`. A frozen basis is never asked for its gradient; the autodiff pass
//! asks for `dW` only when the basis (or the bias it folds) is trainable or shared.

use crate::tensor::{Scalar, ShapeError, Tensor};

/// `(Co, J, R)` of a fold of `w` `[J, …]` by `c` `[Co, J, 1…]` with output `dy`.
fn sizes<T>(
    dy: &Tensor<T>,
    w_shape: &[usize],
    c_shape: &[usize],
) -> Result<[usize; 3], ShapeError> {
    let fits = c_shape.len() >= 2
        && c_shape[2..].iter().all(|&d| d == 1)
        && w_shape.first() == Some(&c_shape[1])
        && dy.shape.first() == Some(&c_shape[0])
        && dy.shape[1..] == w_shape[1..];
    if !fits {
        return Err(ShapeError::new(
            "lc_fold backward",
            "dy [Co, …], basis [J, …] and coefficients [Co, J, 1…] that agree",
            format!(
                "dy {:?}, basis {w_shape:?}, coefficients {c_shape:?}",
                dy.shape
            ),
        ));
    }
    let (co, j) = (c_shape[0], c_shape[1]);
    Ok([co, j, w_shape[1..].iter().product()])
}

/// `dW[j, …] = Σ_o C[o, j]·dY[o, …]`, shaped as the basis `w_shape`.
pub fn lc_fold_backward_basis<T: Scalar>(
    dy: &Tensor<T>,
    c: &Tensor<T>,
    w_shape: &[usize],
) -> Result<Tensor<T>, ShapeError> {
    let [co, j, r] = sizes(dy, w_shape, &c.shape)?;
    let mut dw = Tensor::zeros(w_shape.to_vec());
    for o in 0..co {
        let g = &dy.data[o * r..(o + 1) * r];
        for k in 0..j {
            let coef = c.data[o * j + k];
            for (d, &s) in dw.data[k * r..(k + 1) * r].iter_mut().zip(g) {
                *d += coef * s;
            }
        }
    }
    Ok(dw)
}

/// `dC[o, j] = Σ_… dY[o, …]·W[j, …]`, shaped as the coefficients `c_shape`.
pub fn lc_fold_backward_coeff<T: Scalar>(
    dy: &Tensor<T>,
    w: &Tensor<T>,
    c_shape: &[usize],
) -> Result<Tensor<T>, ShapeError> {
    let [co, j, r] = sizes(dy, &w.shape, c_shape)?;
    let mut dc = Tensor::zeros(c_shape.to_vec());
    for o in 0..co {
        let g = &dy.data[o * r..(o + 1) * r];
        for k in 0..j {
            let row = &w.data[k * r..(k + 1) * r];
            dc.data[o * j + k] = g.iter().zip(row).map(|(&a, &b)| a * b).sum();
        }
    }
    Ok(dc)
}

#[cfg(test)]
mod tests {
    use super::super::{check_vjp, rand_vec};
    use super::*;
    use crate::runtime::fused::lc_fold;

    #[test]
    fn lc_fold_backward_matches_differences() {
        // A 3×3 kernel basis [J=4, Ci=2, 3, 3] and a bias basis [J=4], Co = 3.
        for (w_shape, seed) in [(vec![4, 2, 3, 3], 1), (vec![4], 2)] {
            let c_shape = vec![3, 4, 1, 1];
            let nw: usize = w_shape.iter().product();
            let mut rng = crate::init::seeded(seed);
            let x = rand_vec(&mut rng, nw + 12);
            let split = |x: &[f64]| {
                let w = Tensor::from_vec(w_shape.clone(), x[..nw].to_vec()).unwrap();
                let c = Tensor::from_vec(c_shape.clone(), x[nw..].to_vec()).unwrap();
                (w, c)
            };
            let f = |x: &[f64]| {
                let (w, c) = split(x);
                lc_fold(&w, &c).unwrap().data
            };
            let vjp = |v: &[f64]| {
                let (w, c) = split(&x);
                let mut dy_shape = w_shape.clone();
                dy_shape[0] = 3;
                let dy = Tensor::from_vec(dy_shape, v.to_vec()).unwrap();
                let mut g = lc_fold_backward_basis(&dy, &c, &w.shape).unwrap().data;
                g.extend(lc_fold_backward_coeff(&dy, &w, &c.shape).unwrap().data);
                g
            };
            check_vjp("lc_fold", seed + 10, &x, f, vjp);
        }
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let dy = Tensor::<f64>::zeros(vec![3, 5]);
        let c = Tensor::<f64>::zeros(vec![3, 4, 1, 1]);
        assert!(lc_fold_backward_basis(&dy, &c, &[4, 6]).is_err());
        assert!(lc_fold_backward_coeff(&dy, &Tensor::zeros(vec![2, 5]), &c.shape).is_err());
    }
}
