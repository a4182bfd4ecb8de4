//! Fully connected layer, `y = x · Wᵀ + b` (PyTorch `nn.Linear` layout).

use crate::tensor::{Scalar, ShapeError, Tensor};

/// Weights of one affine map in PyTorch layout: `weight` `[out, in]`,
/// optional `bias` `[out]`. Also used for the 1×1 convs of MAGNet, which
/// are affine maps applied at every grid point.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<T> {
    pub weight: Tensor<T>,
    pub bias: Option<Vec<T>>,
}

impl<T: Scalar> Linear<T> {
    /// `(out, in)` after checking that the bias matches.
    pub fn dims(&self, what: &str) -> Result<(usize, usize), ShapeError> {
        self.weight.expect_rank(2, what)?;
        let (o, i) = (self.weight.shape[0], self.weight.shape[1]);
        if let Some(b) = &self.bias {
            if b.len() != o {
                return Err(ShapeError::new(
                    format!("{what} bias"),
                    format!("{o} values"),
                    format!("{}", b.len()),
                ));
            }
        }
        Ok((o, i))
    }

    /// Applies the map to every column of `x` `[in, N]`, giving `[out, N]`.
    pub fn apply_columns(&self, x: &Tensor<T>, what: &str) -> Result<Tensor<T>, ShapeError> {
        let (o, i) = self.dims(what)?;
        x.expect_rank(2, what)?;
        if x.shape[0] != i {
            return Err(ShapeError::new(
                what,
                format!("input with {i} rows"),
                format!("{:?}", x.shape),
            ));
        }
        let n = x.shape[1];
        let mut y = Tensor::zeros(vec![o, n]);
        for r in 0..o {
            let b0 = self.bias.as_ref().map_or(T::zero(), |b| b[r]);
            let row = &mut y.data[r * n..(r + 1) * n];
            row.fill(b0);
            for k in 0..i {
                let w = self.weight.data[r * i + k];
                for (yv, &xv) in row.iter_mut().zip(&x.data[k * n..(k + 1) * n]) {
                    *yv += w * xv;
                }
            }
        }
        Ok(y)
    }
}

/// `x` `[B, F]`, `w` `[O, F]`, `b` `[O]` → `[B, O]`.
pub fn linear<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: Option<&[T]>,
) -> Result<Tensor<T>, ShapeError> {
    x.expect_rank(2, "linear input [B, F]")?;
    w.expect_rank(2, "linear weight [O, F]")?;
    let (bn, f) = (x.shape[0], x.shape[1]);
    let o = w.shape[0];
    if w.shape[1] != f || b.is_some_and(|b| b.len() != o) {
        return Err(ShapeError::new(
            "linear",
            format!("weight [O, {f}] and bias [O]"),
            format!("weight {:?}, bias {:?}", w.shape, b.map(<[T]>::len)),
        ));
    }
    let mut y = Tensor::zeros(vec![bn, o]);
    for r in 0..bn {
        let xr = &x.data[r * f..(r + 1) * f];
        for c in 0..o {
            let wr = &w.data[c * f..(c + 1) * f];
            let dot: T = xr.iter().zip(wr).map(|(&a, &b)| a * b).sum();
            y.data[r * o + c] = dot + b.map_or(T::zero(), |b| b[c]);
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_by_hand() {
        let x = Tensor::from_vec(vec![2, 2], vec![1.0f64, 2.0, 3.0, 4.0]).unwrap();
        let w = Tensor::from_vec(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
        let y = linear(&x, &w, Some(&[0.0, 0.0, 10.0])).unwrap();
        assert_eq!(y.data, vec![1., 2., 13., 3., 4., 17.]);
        assert!(linear(&x, &w, Some(&[0.0])).is_err());
    }

    #[test]
    fn columns_match_linear_on_transpose() {
        let lin = Linear {
            weight: Tensor::from_vec(vec![2, 3], vec![1.0f64, 2., 3., -1., 0., 1.]).unwrap(),
            bias: Some(vec![0.5, -0.5]),
        };
        // Two columns: (1, 0, 2) and (0, 1, 1).
        let x = Tensor::from_vec(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 2.0, 1.0]).unwrap();
        let y = lin.apply_columns(&x, "test").unwrap();
        assert_eq!(y.data, vec![7.5, 5.5, 0.5, 0.5]);
    }
}
