//! Backward of the linear layer and the pointwise ops: ReLU, exact GELU and
//! dropout with a given mask.

use crate::tensor::{Scalar, ShapeError, Tensor};

/// Gradients of [`linear`](crate::reference::linear::linear)`(x, w, b)`:
/// `dx` `[B, F]`, `dw` `[O, F]` and, when the layer has a bias, `db` `[O]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearGrads<T> {
    pub dx: Tensor<T>,
    pub dw: Tensor<T>,
    pub db: Option<Vec<T>>,
}

/// Backward of `y = x·wᵀ + b` for `x` `[B, F]`, `w` `[O, F]`, `dy` `[B, O]`:
/// `dx = dy·w`, `dw = dyᵀ·x`, `db = Σ_batch dy` (if `has_bias`).
pub fn linear_backward<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    has_bias: bool,
) -> Result<LinearGrads<T>, ShapeError> {
    x.expect_rank(2, "linear backward input [B, F]")?;
    w.expect_rank(2, "linear backward weight [O, F]")?;
    let (bn, f, o) = (x.shape[0], x.shape[1], w.shape[0]);
    if w.shape[1] != f || dy.shape != [bn, o] {
        return Err(ShapeError::new(
            "linear backward",
            format!("weight [O, {f}] and upstream gradient [{bn}, O]"),
            format!("weight {:?}, upstream gradient {:?}", w.shape, dy.shape),
        ));
    }
    let mut dx = Tensor::zeros(vec![bn, f]);
    let mut dw = Tensor::zeros(vec![o, f]);
    for r in 0..bn {
        for c in 0..o {
            let g = dy.data[r * o + c];
            for k in 0..f {
                dx.data[r * f + k] += g * w.data[c * f + k];
                dw.data[c * f + k] += g * x.data[r * f + k];
            }
        }
    }
    let db = has_bias.then(|| {
        (0..o)
            .map(|c| (0..bn).map(|r| dy.data[r * o + c]).sum())
            .collect()
    });
    Ok(LinearGrads { dx, dw, db })
}

fn same_shape<T>(what: &str, x: &Tensor<T>, dy: &Tensor<T>) -> Result<(), ShapeError> {
    if x.shape != dy.shape {
        return Err(ShapeError::new(
            format!("{what} backward upstream gradient"),
            format!("the input's shape {:?}", x.shape),
            format!("{:?}", dy.shape),
        ));
    }
    Ok(())
}

/// `dx` of [`relu`](crate::reference::activation::relu): `dy` where `x > 0`,
/// else 0. Like PyTorch's `threshold_backward`, zero is "off" and a NaN input
/// (which the forward passes through) lets the gradient through.
pub fn relu_backward<T: Scalar>(x: &Tensor<T>, dy: &Tensor<T>) -> Result<Tensor<T>, ShapeError> {
    same_shape("relu", x, dy)?;
    let data = x
        .data
        .iter()
        .zip(&dy.data)
        .map(|(&v, &g)| if v <= T::zero() { T::zero() } else { g })
        .collect();
    Tensor::from_vec(x.shape.clone(), data)
}

/// `dx` of the exact [`gelu`](crate::reference::activation::gelu)
/// `x·Φ(x)`: `dy·(Φ(x) + x·φ(x))`, with Φ and φ the standard normal CDF and
/// density, evaluated in f64 like the forward.
pub fn gelu_backward<T: Scalar>(x: &Tensor<T>, dy: &Tensor<T>) -> Result<Tensor<T>, ShapeError> {
    use crate::reference::activation::erf;
    use std::f64::consts::{PI, SQRT_2};
    same_shape("gelu", x, dy)?;
    let data = x
        .data
        .iter()
        .zip(&dy.data)
        .map(|(&v, &g)| {
            let v = v.to_f64();
            let cdf = 0.5 * (1.0 + erf(v / SQRT_2));
            let pdf = (-0.5 * v * v).exp() / (2.0 * PI).sqrt();
            T::from_f64(g.to_f64() * (cdf + v * pdf))
        })
        .collect();
    Tensor::from_vec(x.shape.clone(), data)
}

/// Training-mode dropout with a given mask: `x / (1 − p)` where `keep`, else 0.
/// The interpreter draws the mask from its seed; this takes it as data so the
/// forward and [`dropout_backward`] see the same one.
pub fn dropout_with_mask<T: Scalar>(
    x: &Tensor<T>,
    keep: &[bool],
    p: f64,
) -> Result<Tensor<T>, ShapeError> {
    scale_by_mask("dropout", x, keep, p)
}

/// `dx` of dropout with the mask `keep` and drop probability `p`:
/// `dy / (1 − p)` where kept, else 0 (the map is linear and diagonal).
pub fn dropout_backward<T: Scalar>(
    dy: &Tensor<T>,
    keep: &[bool],
    p: f64,
) -> Result<Tensor<T>, ShapeError> {
    scale_by_mask("dropout backward", dy, keep, p)
}

fn scale_by_mask<T: Scalar>(
    what: &str,
    t: &Tensor<T>,
    keep: &[bool],
    p: f64,
) -> Result<Tensor<T>, ShapeError> {
    if keep.len() != t.numel() || !(0.0..1.0).contains(&p) {
        return Err(ShapeError::new(
            what,
            format!("a mask of {} values and 0 <= p < 1", t.numel()),
            format!("a mask of {} values, p = {p}", keep.len()),
        ));
    }
    let scale = T::from_f64(1.0 / (1.0 - p));
    let data = t
        .data
        .iter()
        .zip(keep)
        .map(|(&v, &k)| if k { v * scale } else { T::zero() })
        .collect();
    Tensor::from_vec(t.shape.clone(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::activation::{gelu, relu};
    use crate::reference::grad::{check_vjp, rand_vec};
    use crate::reference::linear::linear;

    fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn linear_matches_differences() {
        let (b, f, o) = (3, 5, 4);
        let all = rand_vec(&mut crate::init::seeded(70), b * f + o * f + o);
        let split = |a: &[f64]| {
            (
                t(&[b, f], &a[..b * f]),
                t(&[o, f], &a[b * f..b * f + o * f]),
                a[b * f + o * f..].to_vec(),
            )
        };
        let (x, w, _) = split(&all);
        check_vjp(
            "linear",
            70,
            &all,
            |a| {
                let (x, w, bias) = split(a);
                linear(&x, &w, Some(&bias)).unwrap().data
            },
            |v| {
                let g = linear_backward(&x, &w, &t(&[b, o], v), true).unwrap();
                let mut out = g.dx.data;
                out.extend(g.dw.data);
                out.extend(g.db.unwrap());
                out
            },
        );
    }

    #[test]
    fn linear_by_hand() {
        // y = x·wᵀ with x = [1, 2], w = [[1, 0], [3, 4]], dy = [1, 10].
        let x = t(&[1, 2], &[1., 2.]);
        let w = t(&[2, 2], &[1., 0., 3., 4.]);
        let g = linear_backward(&x, &w, &t(&[1, 2], &[1., 10.]), false).unwrap();
        assert_eq!(g.dx.data, vec![31., 40.]);
        assert_eq!(g.dw.data, vec![1., 2., 10., 20.]);
        assert_eq!(g.db, None);
        assert!(linear_backward(&x, &w, &t(&[2, 1], &[1., 1.]), true).is_err());
    }

    #[test]
    fn pointwise_match_differences() {
        let shape = [2, 3, 5];
        let x0 = rand_vec(&mut crate::init::seeded(71), 30);
        // Spread GELU's inputs over [−4, 4] to reach both tails.
        let xg: Vec<f64> = x0.iter().map(|v| 4.0 * v).collect();
        let x = t(&shape, &x0);
        check_vjp(
            "relu",
            72,
            &x0,
            |a| relu(&t(&shape, a)).data,
            |v| relu_backward(&x, &t(&shape, v)).unwrap().data,
        );
        check_vjp(
            "gelu",
            73,
            &xg,
            |a| gelu(&t(&shape, a)).data,
            |v| gelu_backward(&t(&shape, &xg), &t(&shape, v)).unwrap().data,
        );
        let keep: Vec<bool> = (0..30).map(|i| i % 3 != 1).collect();
        check_vjp(
            "dropout",
            74,
            &x0,
            |a| dropout_with_mask(&t(&shape, a), &keep, 0.3).unwrap().data,
            |v| dropout_backward(&t(&shape, v), &keep, 0.3).unwrap().data,
        );
    }

    #[test]
    fn pointwise_by_hand() {
        let x = t(&[4], &[-1., 0., 2., f64::NAN]);
        let dy = t(&[4], &[5.; 4]);
        assert_eq!(relu_backward(&x, &dy).unwrap().data, vec![0., 0., 5., 5.]);
        // GELU'(0) = Φ(0) = ½.
        let g = gelu_backward(&t(&[1], &[0.]), &t(&[1], &[2.])).unwrap();
        assert_eq!(g.data, vec![1.0]);
        let d = dropout_backward(&t(&[2], &[1., 1.]), &[true, false], 0.5).unwrap();
        assert_eq!(d.data, vec![2., 0.]);
        assert!(relu_backward(&x, &t(&[3], &[0.; 3])).is_err());
        assert!(dropout_backward(&dy, &[true; 3], 0.5).is_err());
        assert!(dropout_backward(&dy, &[true; 4], 1.0).is_err());
    }
}
