//! Orthogonal initialisation, as `torch.nn.init.orthogonal_`.
//!
//! For a weight `[rows, …]` viewed as a `rows × cols` matrix: draw a standard
//! normal matrix, transpose it if `rows < cols` so it is tall, take its QR
//! decomposition, multiply Q's columns by `sign(diag(R))`, transpose back,
//! scale by `gain`. The result has orthonormal rows (if `rows <= cols`) or
//! columns (otherwise).
//!
//! Q·sign(diag R) is the Q of the unique QR whose R has a positive diagonal,
//! which is exactly what (re-orthogonalised) modified Gram–Schmidt produces,
//! so that is what this computes, in f64.

use super::{normal, InitRng};
use crate::tensor::{numel, Scalar, ShapeError, Tensor};

/// Orthogonal init of a tensor of rank >= 2 (or rank 1 as one row).
pub fn orthogonal<T: Scalar>(
    rng: &mut InitRng,
    shape: &[usize],
    gain: f64,
) -> Result<Tensor<T>, ShapeError> {
    let rows = shape.first().copied().unwrap_or(0);
    let n = numel(shape);
    if shape.len() < 2 || rows == 0 || n == 0 {
        return Err(ShapeError::new(
            "orthogonal init",
            "a non-empty tensor of rank >= 2",
            format!("{shape:?}"),
        ));
    }
    let cols = n / rows;
    let a: Tensor<f64> = normal(rng, &[rows, cols], 0.0, 1.0)?;
    // Work on a tall m × k matrix stored column by column.
    let tall = rows >= cols;
    let (m, k) = if tall { (rows, cols) } else { (cols, rows) };
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            (0..m)
                .map(|i| {
                    if tall {
                        a.data[i * cols + j]
                    } else {
                        a.data[j * cols + i]
                    }
                })
                .collect()
        })
        .collect();
    for j in 0..k {
        // Two passes of MGS keep Q orthogonal to rounding even when the
        // columns are nearly dependent.
        for _ in 0..2 {
            for p in 0..j {
                let (done, rest) = q.split_at_mut(j);
                let d: f64 = done[p].iter().zip(&rest[0]).map(|(a, b)| a * b).sum();
                for (v, u) in rest[0].iter_mut().zip(&done[p]) {
                    *v -= d * u;
                }
            }
        }
        let norm = q[j].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(ShapeError::new(
                "orthogonal init",
                "a full-rank random matrix",
                "a rank-deficient draw",
            ));
        }
        q[j].iter_mut().for_each(|v| *v /= norm);
    }
    let mut data = vec![T::zero(); n];
    for (j, col) in q.iter().enumerate() {
        for (i, &v) in col.iter().enumerate() {
            // Element (i, j) of the tall Q is (i, j) of the weight if tall,
            // else (j, i).
            let idx = if tall { i * cols + j } else { j * cols + i };
            data[idx] = T::from_f64(gain * v);
        }
    }
    Tensor::from_vec(shape.to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded;

    fn gram(w: &Tensor<f64>, by_rows: bool) -> Vec<Vec<f64>> {
        let rows = w.shape[0];
        let cols = w.numel() / rows;
        let (n, len) = if by_rows { (rows, cols) } else { (cols, rows) };
        let at = |v: usize, i: usize| {
            if by_rows {
                w.data[v * cols + i]
            } else {
                w.data[i * cols + v]
            }
        };
        (0..n)
            .map(|a| {
                (0..n)
                    .map(|b| (0..len).map(|i| at(a, i) * at(b, i)).sum())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn rows_or_columns_are_orthonormal() {
        for (shape, by_rows) in [
            (vec![8, 4, 3, 3], true),
            (vec![36, 2, 3, 3], false),
            (vec![5, 5], true),
        ] {
            let w: Tensor<f64> = orthogonal(&mut seeded(11), &shape, 1.0).unwrap();
            let g = gram(&w, by_rows);
            for (a, row) in g.iter().enumerate() {
                for (b, &v) in row.iter().enumerate() {
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-12, "{shape:?} ({a},{b}) = {v}");
                }
            }
        }
        let w: Tensor<f64> = orthogonal(&mut seeded(1), &[2, 3], 2.0).unwrap();
        assert!((gram(&w, true)[0][0] - 4.0).abs() < 1e-12);
        assert!(orthogonal::<f32>(&mut seeded(1), &[3], 1.0).is_err());
    }
}
