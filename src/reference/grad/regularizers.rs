//! The regularisers a training loss adds (docs/autodiff.md, "Regularisers"), each as a
//! value and its gradient to every operand. They read parameters (or a generated
//! kernel) only, never activations, so each is a scalar function of a few small
//! tensors and its gradient is computed whole, in one pass.
//!
//! - [`ortho_penalty`]: Deeply Shared Filter Bases' orthogonality penalty over one
//!   stage's bases (SEEDS §3.2), the sum of `(B Bᵀ − I)²` over the entries the
//!   authors' code sums.
//! - [`antialias_penalty`]: FlexConv's squared-hinge penalty on the MAGNet filter
//!   frequencies above the Nyquist share of each filter (SEEDS §1.6, `together`).
//! - [`l2_norm`]: the unsquared L2 norm FlexConv's `weight_decay` puts on each
//!   generated kernel and bias (SEEDS §1.6, `LnLoss`).

use crate::tensor::{Scalar, ShapeError, Tensor};

/// A value and the gradient of the value to each operand, shaped as the operand.
pub struct Penalty<T> {
    pub value: T,
    pub grads: Vec<Tensor<T>>,
}

/// `Σ_{(i,j) ∈ M} ((B Bᵀ)_{ij} − δ_{ij})²` where `B` stacks, as rows, every filter of
/// `parts` flattened: first the `shared` shared tensors, then one unique tensor per
/// conv. `M` holds every shared row against every row (shared↔shared and
/// shared↔unique) and each unique tensor's own block; unique filters of different
/// convs are not compared ([DS-code] `train_basis_single`/`_double`). The gradient is
/// `2 (E + Eᵀ) B` with `E = M ⊙ (B Bᵀ − I)`.
pub fn ortho_penalty<T: Scalar>(
    parts: &[&Tensor<T>],
    shared: usize,
) -> Result<Penalty<T>, ShapeError> {
    let row_len = parts.first().map_or(0, |p| p.shape[1..].iter().product());
    if shared == 0 || shared > parts.len() || row_len == 0 {
        return Err(ShapeError::new(
            "orthogonality penalty",
            "at least one shared basis, then unique bases",
            format!("{} tensors, {shared} shared", parts.len()),
        ));
    }
    // Row ranges of each part within B.
    let mut ranges = Vec::with_capacity(parts.len());
    let mut n = 0;
    for p in parts {
        let len: usize = p.shape[1..].iter().product();
        if p.shape.is_empty() || len != row_len {
            return Err(ShapeError::new(
                "orthogonality penalty",
                format!("filters of {row_len} values each, as the shared basis"),
                format!("{:?}", p.shape),
            ));
        }
        ranges.push(n..n + p.shape[0]);
        n += p.shape[0];
    }
    let s = ranges[shared - 1].end;
    let rows: Vec<&[T]> = parts.iter().flat_map(|p| p.data.chunks(row_len)).collect();
    let block = |i: usize| ranges[shared..].iter().position(|r| r.contains(&i));
    let counted = |i: usize, j: usize| i < s || (j >= s && block(i) == block(j));
    // E = M ⊙ (G − I), row-major N×N.
    let mut e = vec![T::zero(); n * n];
    let mut value = T::zero();
    for i in 0..n {
        for j in 0..n {
            if !counted(i, j) {
                continue;
            }
            let g: T = rows[i].iter().zip(rows[j]).map(|(&a, &b)| a * b).sum();
            let d = if i == j { g - T::one() } else { g };
            value += d * d;
            e[i * n + j] = d;
        }
    }
    let two = T::from_f64(2.0);
    let mut grads: Vec<Tensor<T>> = parts
        .iter()
        .map(|p| Tensor::zeros(p.shape.clone()))
        .collect();
    for (part, range) in grads.iter_mut().zip(&ranges) {
        for (local, i) in range.clone().enumerate() {
            let out = &mut part.data[local * row_len..(local + 1) * row_len];
            for (j, row) in rows.iter().enumerate() {
                let c = two * (e[i * n + j] + e[j * n + i]);
                if c == T::zero() {
                    continue;
                }
                for (o, &b) in out.iter_mut().zip(row.iter()) {
                    *o += c * b;
                }
            }
        }
    }
    Ok(Penalty { value, grads })
}

/// The anti-aliasing penalty of one FlexConv layer ([FC-code] `antialiasing.py`,
/// `regularize_gabornet(method="together", fn="l2_relu")`):
/// `Σ_l ReLU(f_l + f_mask/n − f_Nyq/n)²` over the layer's `n` Gabor filters, with
/// `f_l = max_{j,d} (|Wg_l[j,d]| + s·|γ_l[j,d]|) / 2π`, `f_mask = s·max_a 1/|σ_a| / 2π`
/// (0 without a mask) and `f_Nyq = (k − 1)/4`. `parts` is `(Wg_l, γ_l)` per filter,
/// then the mask parameters `[D, 2]` (mean, sigma per axis) if `mask`. A maximum
/// shares its gradient evenly among the entries that tie for it, as PyTorch's `max`
/// and `maximum` do (the mask's sigmas start equal on both axes); `|x|` has gradient
/// 0 at 0.
pub fn antialias_penalty<T: Scalar>(
    parts: &[&Tensor<T>],
    stddevs: f64,
    nyquist: f64,
    mask: bool,
) -> Result<Penalty<T>, ShapeError> {
    let filters = parts.len().saturating_sub(usize::from(mask)) / 2;
    let fits = filters > 0
        && parts.len() == 2 * filters + usize::from(mask)
        && (0..filters).all(|l| parts[2 * l].shape == parts[2 * l + 1].shape)
        && (!mask || parts[2 * filters].shape.get(1) == Some(&2));
    if !fits {
        return Err(ShapeError::new(
            "anti-aliasing penalty",
            "(Gabor weight, gamma) pairs of equal shapes, then mask parameters [D, 2]",
            format!(
                "{:?}",
                parts.iter().map(|p| p.shape.clone()).collect::<Vec<_>>()
            ),
        ));
    }
    let tau = 2.0 * std::f64::consts::PI;
    let s = stddevs;
    let nf = filters as f64;
    let sign = |x: f64| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let (mask_axes, f_mask) = if mask {
        let m = parts[2 * filters];
        let inv: Vec<f64> = m
            .data
            .chunks(2)
            .map(|r| 1.0 / r[1].to_f64().abs())
            .collect();
        let (at, max) = maxima(&inv);
        (at, s * max / tau)
    } else {
        (Vec::new(), 0.0)
    };
    let mut grads: Vec<Tensor<T>> = parts
        .iter()
        .map(|p| Tensor::zeros(p.shape.clone()))
        .collect();
    let (mut value, mut d_mask) = (0.0, 0.0);
    for l in 0..filters {
        let (w, g) = (parts[2 * l], parts[2 * l + 1]);
        let combined: Vec<f64> = w
            .data
            .iter()
            .zip(&g.data)
            .map(|(&w, &g)| (w.to_f64().abs() + s * g.to_f64().abs()) / tau)
            .collect();
        let (at, f) = maxima(&combined);
        let excess = (f + f_mask / nf - nyquist / nf).max(0.0);
        value += excess * excess;
        // d/d f_l of excess²; f_mask enters every filter's term divided by n.
        let c = 2.0 * excess;
        d_mask += c / nf;
        let share = c / at.len() as f64;
        for i in at {
            grads[2 * l].data[i] = T::from_f64(share * sign(w.data[i].to_f64()) / tau);
            grads[2 * l + 1].data[i] = T::from_f64(share * s * sign(g.data[i].to_f64()) / tau);
        }
    }
    let share = d_mask / mask_axes.len().max(1) as f64;
    for a in mask_axes {
        // d(1/|σ|)/dσ = −sign(σ)/σ².
        let sigma = parts[2 * filters].data[2 * a + 1].to_f64();
        grads[2 * filters].data[2 * a + 1] =
            T::from_f64(-share * s / tau * sign(sigma) / (sigma * sigma));
    }
    Ok(Penalty {
        value: T::from_f64(value),
        grads,
    })
}

/// The indices of the entries equal to the maximum of `v`, and the maximum.
fn maxima(v: &[f64]) -> (Vec<usize>, f64) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let at = (0..v.len()).filter(|&i| v[i] == max).collect();
    (at, max)
}

/// `‖x‖₂` over every entry (unsquared), and its gradient `x/‖x‖` (0 at `x = 0`, as
/// PyTorch's `norm` gives).
pub fn l2_norm<T: Scalar>(x: &Tensor<T>) -> Penalty<T> {
    let norm = x.data.iter().map(|&v| v * v).sum::<T>().sqrt();
    let grad = if norm > T::zero() {
        x.map(|&v| v / norm)
    } else {
        x.map(|_| T::zero())
    };
    Penalty {
        value: norm,
        grads: vec![grad],
    }
}

#[cfg(test)]
mod tests {
    use super::super::{check_vjp, rand_vec};
    use super::*;
    use crate::ir::train_ops::ortho_count;

    fn t(shape: &[usize], data: Vec<f64>) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), data).unwrap()
    }

    /// Splits a flat vector into tensors of `shapes`.
    fn split(x: &[f64], shapes: &[Vec<usize>]) -> Vec<Tensor<f64>> {
        let mut at = 0;
        shapes
            .iter()
            .map(|s| {
                let n: usize = s.iter().product();
                at += n;
                t(s, x[at - n..at].to_vec())
            })
            .collect()
    }

    fn check(
        what: &str,
        seed: u64,
        shapes: &[Vec<usize>],
        x: Vec<f64>,
        f: impl Fn(&[&Tensor<f64>]) -> Penalty<f64>,
    ) {
        let eval = |x: &[f64]| {
            let ts = split(x, shapes);
            f(&ts.iter().collect::<Vec<_>>())
        };
        check_vjp(
            what,
            seed,
            &x,
            |x| vec![eval(x).value],
            |v| {
                eval(&x)
                    .grads
                    .iter()
                    .flat_map(|g| g.data.iter().map(|d| d * v[0]).collect::<Vec<_>>())
                    .collect()
            },
        );
    }

    /// A 2×2 basis by hand: rows a = (1, 2), b = (0, 1). B Bᵀ = [[5, 2], [2, 1]], so
    /// (B Bᵀ − I)² = [[16, 4], [4, 0]], summing to 24; the gradient
    /// 2(E + Eᵀ)B with E = [[4, 2], [2, 0]] is 4·[[4, 2], [2, 0]]·B = [[16, 40], [8, 16]].
    #[test]
    fn a_two_by_two_basis_by_hand() {
        let b = t(&[2, 2, 1, 1], vec![1.0, 2.0, 0.0, 1.0]);
        let p = ortho_penalty(&[&b], 1).unwrap();
        assert_eq!(p.value, 24.0);
        assert_eq!(p.grads[0].data, [16.0, 40.0, 8.0, 16.0]);
        assert_eq!(ortho_count(&[2], 1), 4);
    }

    /// Shared rows meet every row; unique rows only their own conv's: with one shared
    /// row s = (1, 0) and two unique parts u1 = (1, 1), u2 = (0, 2), the sum is
    /// row s: (1−1)² + 1² + 0² = 1, u1's block: (2−1)² = 1, u2's: (4−1)² = 9 → 11,
    /// and u1·u2 = 2 is not counted. Its count is 1·3 + 1 + 1 = 5.
    #[test]
    fn unique_filters_of_different_convs_are_not_compared() {
        let s = t(&[1, 2], vec![1.0, 0.0]);
        let u1 = t(&[1, 2], vec![1.0, 1.0]);
        let u2 = t(&[1, 2], vec![0.0, 2.0]);
        let p = ortho_penalty(&[&s, &u1, &u2], 1).unwrap();
        assert_eq!(p.value, 11.0);
        assert_eq!(ortho_count(&[1, 1, 1], 1), 5);
        // Row u1 meets s (E[s,u1] = 1, counted once) and itself (E = 1): its gradient
        // 2·(1·s + 2·1·u1) = (6, 4).
        assert_eq!(p.grads[1].data, [6.0, 4.0]);
    }

    #[test]
    fn ortho_gradients_match_differences() {
        let mut rng = crate::init::seeded(3);
        // Double sharing: two shared [3, 2, 1, 2] parts, then four unique [1, 2, 1, 2].
        let mut shapes = vec![vec![3, 2, 1, 2]; 2];
        shapes.extend(vec![vec![1, 2, 1, 2]; 4]);
        let n: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        let x = rand_vec(&mut rng, n);
        check("ortho, double", 4, &shapes, x, |p| {
            ortho_penalty(p, 2).unwrap()
        });
        let shapes = vec![vec![2, 3], vec![2, 3], vec![2, 3]];
        let x = rand_vec(&mut rng, 18);
        check("ortho, single", 5, &shapes, x, |p| {
            ortho_penalty(p, 1).unwrap()
        });
    }

    #[test]
    fn antialias_by_hand() {
        // One filter, one unit, one axis: |w| + 2|γ| = 3 + 2·0.5 = 4 → f = 4/2π.
        // Nyquist 0.2 (k = 1.8, only to make the hinge active), n = 1 filter, no mask.
        let w = t(&[1, 1], vec![-3.0]);
        let g = t(&[1, 1], vec![0.5]);
        let p = antialias_penalty(&[&w, &g], 2.0, 0.2, false).unwrap();
        let tau = 2.0 * std::f64::consts::PI;
        let ex = 4.0 / tau - 0.2;
        assert!((p.value - ex * ex).abs() < 1e-15);
        assert!((p.grads[0].data[0] + 2.0 * ex / tau).abs() < 1e-15);
        assert!((p.grads[1].data[0] - 2.0 * ex * 2.0 / tau).abs() < 1e-15);
        // Below Nyquist: no penalty, no gradient.
        let p = antialias_penalty(&[&w, &g], 2.0, 100.0, false).unwrap();
        assert_eq!(p.value, 0.0);
        assert!(p.grads.iter().all(|g| g.data.iter().all(|&v| v == 0.0)));
    }

    /// Equal sigmas (as initialised) tie for the mask's maximum: each gets half the
    /// gradient one axis alone would, as PyTorch's `maximum` splits a tie.
    #[test]
    fn a_tie_splits_the_gradient() {
        let w = t(&[2, 1], vec![5.0, -1.0]);
        let g = t(&[2, 1], vec![1.0, 2.0]);
        let one = t(&[1, 2], vec![0.0, 0.2]);
        let two = t(&[2, 2], vec![0.0, 0.2, 0.5, 0.2]);
        let a = antialias_penalty(&[&w, &g, &one], 2.0, 0.5, true).unwrap();
        let b = antialias_penalty(&[&w, &g, &two], 2.0, 0.5, true).unwrap();
        assert_eq!(a.value, b.value);
        let half = a.grads[2].data[1] / 2.0;
        assert!(half != 0.0);
        assert_eq!(b.grads[2].data, [0.0, half, 0.0, half]);
    }

    #[test]
    fn antialias_gradients_match_differences() {
        let mut rng = crate::init::seeded(7);
        // Three filters [4, 2] and a 2D mask; a small Nyquist so every hinge is active.
        let mut shapes = vec![vec![4, 2]; 6];
        shapes.push(vec![2, 2]);
        let mut x = rand_vec(&mut rng, 6 * 8 + 4);
        // Sigmas away from 0.
        x[6 * 8 + 1] = 0.4;
        x[6 * 8 + 3] = -0.3;
        check("antialias + mask", 8, &shapes, x.clone(), |p| {
            antialias_penalty(p, 2.0, 0.2, true).unwrap()
        });
        check("antialias", 9, &shapes[..6], x[..48].to_vec(), |p| {
            antialias_penalty(p, 1.0, 0.1, false).unwrap()
        });
    }

    #[test]
    fn l2_norm_and_its_gradient() {
        let x = t(&[2, 1], vec![3.0, -4.0]);
        let p = l2_norm(&x);
        assert_eq!(p.value, 5.0);
        assert_eq!(p.grads[0].data, [0.6, -0.8]);
        assert_eq!(l2_norm(&t(&[2], vec![0.0, 0.0])).grads[0].data, [0.0, 0.0]);
        let mut rng = crate::init::seeded(9);
        let x = rand_vec(&mut rng, 12);
        check("l2 norm", 10, &[vec![3, 4]], x, |p| l2_norm(p[0]));
    }
}
