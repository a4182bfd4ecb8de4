//! FlexConv's coordinate grid, separable Gaussian mask and dynamic crop
//! (official code: `ckconv/utils/grids.py`, `ckconv/nn/ckconv.py`).
//!
//! Conventions, all as in the official code:
//! - The grid is `[D, k, …, k]` with `grid[d]` varying along spatial axis `d`
//!   (`torch.meshgrid` "ij" indexing), values `linspace(-1, 1, k)`.
//! - Mask parameters are `[D, 2]` rows of (mean, sigma); row `d` acts on axis
//!   `d`. (The official 2D crop names its roots x/y the other way round, but
//!   swaps them back when it rebuilds the meshgrid, so row `d` crops axis `d`.)
//! - The mask has no normaliser, so its peak is 1.
//! - Crop roots come from `m(x) = T`: `mean ± sigma·sqrt(−2 ln T)`, computed in
//!   the working precision (the official code works in f32).

use std::ops::Range;

use crate::tensor::{Scalar, ShapeError, Tensor};

/// `torch.linspace(start, end, steps)` to within an ulp or so: the first
/// half counts up from `start`, the second half counts down from `end`, so
/// the grid is exactly symmetric and ends exactly at `end`. (torch's CPU
/// kernel uses the same two formulas but, depending on vectorisation and
/// FMA, rounds some points differently; no crop decision in practice sits
/// that close to a grid point.)
pub fn linspace<T: Scalar>(start: f64, end: f64, steps: usize) -> Vec<T> {
    let (s, e) = (T::from_f64(start), T::from_f64(end));
    match steps {
        0 => return Vec::new(),
        1 => return vec![s],
        _ => {}
    }
    let step = (e - s) / T::from_usize(steps - 1);
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                s + step * T::from_usize(i)
            } else {
                e - step * T::from_usize(steps - i - 1)
            }
        })
        .collect()
}

/// The relative-position grid `[D, sizes…]` over `[-1, 1]^D`.
pub fn rel_positions_grid<T: Scalar>(sizes: &[usize]) -> Tensor<T> {
    let axes: Vec<Vec<T>> = sizes.iter().map(|&k| linspace(-1.0, 1.0, k)).collect();
    grid_from_axes(&axes)
}

/// Meshgrid ("ij") of per-axis coordinates, stacked to `[D, len_0, …]`.
pub fn grid_from_axes<T: Scalar>(axes: &[Vec<T>]) -> Tensor<T> {
    let dims: Vec<usize> = axes.iter().map(Vec::len).collect();
    let n: usize = dims.iter().product();
    let mut data = Vec::with_capacity(axes.len() * n);
    for d in 0..axes.len() {
        // Row-major: axis d repeats each value `inner` times, in `outer` blocks.
        let inner: usize = dims[d + 1..].iter().product();
        let outer: usize = dims[..d].iter().product();
        for _ in 0..outer {
            for &v in &axes[d] {
                data.extend(std::iter::repeat_n(v, inner));
            }
        }
    }
    let mut shape = vec![axes.len()];
    shape.extend(dims);
    Tensor { shape, data }
}

/// `exp(−½ ((x − mean)/sigma)²)`, written as the official `gaussian_1d`.
pub fn gaussian_1d<T: Scalar>(x: T, mean: T, sigma: T) -> T {
    let z = (T::one() / sigma) * (x - mean);
    (T::from_f64(-0.5) * z * z).exp()
}

fn check_params<T: Scalar>(params: &Tensor<T>, dims: usize) -> Result<(), ShapeError> {
    if params.shape != [dims, 2] {
        return Err(ShapeError::new(
            "mask params",
            format!("[{dims}, 2] rows of (mean, sigma)"),
            format!("{:?}", params.shape),
        ));
    }
    Ok(())
}

/// Separable Gaussian mask on a grid `[D, k…]`, giving `[k…]`:
/// `Π_d gaussian_1d(grid[d], params[d, 0], params[d, 1])`.
pub fn gaussian_mask<T: Scalar>(
    grid: &Tensor<T>,
    params: &Tensor<T>,
) -> Result<Tensor<T>, ShapeError> {
    let d = grid.shape.first().copied().unwrap_or(0);
    if d == 0 || grid.ndim() != d + 1 {
        return Err(ShapeError::new(
            "mask grid",
            "[D, k_1, ..., k_D]",
            format!("{:?}", grid.shape),
        ));
    }
    check_params(params, d)?;
    let n = grid.numel() / d;
    let mut out = vec![T::one(); n];
    // Multiply axis factors in the order of the official 2D code (axis 0 first).
    for axis in 0..d {
        let (mean, sigma) = (params.data[axis * 2], params.data[axis * 2 + 1]);
        for (o, &x) in out.iter_mut().zip(&grid.data[axis * n..(axis + 1) * n]) {
            *o *= gaussian_1d(x, mean, sigma);
        }
    }
    Tensor::from_vec(grid.shape[1..].to_vec(), out)
}

/// Both roots of `gaussian_1d(x) = thresh`: `(mean − a, mean + a)` with
/// `a = sigma·sqrt(−2 ln thresh)`.
pub fn gauss_roots<T: Scalar>(thresh: T, mean: T, sigma: T) -> (T, T) {
    let aux = sigma * (T::from_f64(-2.0) * thresh.ln()).sqrt();
    (mean - aux, mean + aux)
}

/// Symmetric crop of one axis (official `crop_relative_positions_2d`).
///
/// If `root >= 1` everything is kept. Otherwise the first index `i` in the
/// first half (centre included) with `−root < axis[i]` (strict) is found and
/// `i .. len − i` is kept, so an odd axis stays odd and centred. Where the
/// official code would fail (no such index, e.g. `root <= 0` or NaN), this
/// keeps only the centre.
pub fn crop_symmetric<T: Scalar>(axis: &[T], root: T) -> Range<usize> {
    let n = axis.len();
    if root >= T::one() {
        return 0..n;
    }
    let half = n / 2;
    match axis[..(half + 1).min(n)].iter().position(|&v| -root < v) {
        Some(i) => i..n - i,
        None => half..n - half,
    }
}

/// Causal crop of one axis (official `crop_relative_positions_1d`): if
/// `|root| < 1`, keep from the first index with `root < axis[i]` (strict) to
/// the end, which drops only the distant past. Keeps the last sample if no
/// index qualifies (the official code would fail there).
pub fn crop_causal<T: Scalar>(axis: &[T], root: T) -> Range<usize> {
    let n = axis.len();
    if root.abs() >= T::one() || !root.is_finite() {
        return 0..n;
    }
    match axis.iter().position(|&v| root < v) {
        Some(i) => i..n,
        None => n.saturating_sub(1)..n,
    }
}

/// The per-axis coordinates the kernel net and mask are evaluated on after
/// dynamic cropping, for a horizon `k` per axis.
///
/// - `D = 1` (causal): root = smaller root; crop with [`crop_causal`].
/// - `D = 2`: per axis, root = larger |root|; crop with [`crop_symmetric`].
///
/// Returns one coordinate vector per axis; [`grid_from_axes`] turns them
/// into the cropped grid.
pub fn dynamic_crop_axes<T: Scalar>(
    horizon: &[usize],
    params: &Tensor<T>,
    thresh: T,
) -> Result<Vec<Vec<T>>, ShapeError> {
    let d = horizon.len();
    if !(1..=2).contains(&d) {
        return Err(ShapeError::new(
            "dynamic crop",
            "a 1D or 2D horizon",
            format!("{horizon:?}"),
        ));
    }
    check_params(params, d)?;
    let mut axes = Vec::with_capacity(d);
    for (a, &k) in horizon.iter().enumerate() {
        let full: Vec<T> = linspace(-1.0, 1.0, k);
        let (mean, sigma) = (params.data[a * 2], params.data[a * 2 + 1]);
        let (r1, r2) = gauss_roots(thresh, mean, sigma);
        let range = if d == 1 {
            crop_causal(&full, if r1 < r2 { r1 } else { r2 })
        } else {
            let (a1, a2) = (r1.abs(), r2.abs());
            crop_symmetric(&full, if a1 > a2 { a1 } else { a2 })
        };
        axes.push(full[range].to_vec());
    }
    Ok(axes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<T: Scalar>(rows: &[[f64; 2]]) -> Tensor<T> {
        let data = rows.iter().flatten().map(|&v| T::from_f64(v)).collect();
        Tensor::from_vec(vec![rows.len(), 2], data).unwrap()
    }

    #[test]
    fn linspace_is_symmetric_and_exact_at_ends() {
        let v: Vec<f32> = linspace(-1.0, 1.0, 33);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[32], 1.0);
        assert_eq!(v[16], 0.0);
        for i in 0..33 {
            assert_eq!(v[i], -v[32 - i]);
        }
        assert_eq!(linspace::<f64>(-1.0, 1.0, 1), vec![-1.0]);
        assert!(linspace::<f64>(-1.0, 1.0, 0).is_empty());
        let p = params::<f64>(&[[0.0, 0.1], [0.0, 0.1]]);
        let axes = dynamic_crop_axes(&[0, 0], &p, 0.1).unwrap();
        assert!(axes[0].is_empty());
    }

    #[test]
    fn grid_is_ij_meshgrid() {
        let g: Tensor<f64> = rel_positions_grid(&[3, 2]);
        assert_eq!(g.shape, vec![2, 3, 2]);
        assert_eq!(g.data[..6], [-1., -1., 0., 0., 1., 1.]);
        assert_eq!(g.data[6..], [-1., 1., -1., 1., -1., 1.]);
    }

    #[test]
    fn crop_sizes_from_the_paper() {
        for (k, want) in [(33, 5), (17, 3)] {
            let p = params::<f32>(&[[0.0, 0.075], [0.0, 0.075]]);
            let axes = dynamic_crop_axes(&[k, k], &p, 0.1).unwrap();
            assert_eq!((axes[0].len(), axes[1].len()), (want, want), "horizon {k}");
        }
        let p = params::<f32>(&[[1.0, 0.075]]);
        let axes = dynamic_crop_axes(&[784], &p, 0.1).unwrap();
        assert_eq!(axes[0].len(), 64);
        assert_eq!(*axes[0].last().unwrap(), 1.0);
    }

    #[test]
    fn crop_axes_are_independent_and_wide_sigma_keeps_all() {
        let p = params::<f64>(&[[0.0, 0.075], [0.3, 0.5]]);
        let axes = dynamic_crop_axes(&[33, 33], &p, 0.1).unwrap();
        assert_eq!(axes[0].len(), 5);
        assert_eq!(axes[1].len(), 33, "root 0.3 + 1.07 >= 1 keeps the axis");
        let p = params::<f64>(&[[0.0, 0.0]]);
        let axes = dynamic_crop_axes(&[9], &p, 0.1).unwrap();
        assert!(!axes[0].is_empty());
    }

    #[test]
    fn mask_peak_and_separability() {
        let g: Tensor<f64> = rel_positions_grid(&[5, 5]);
        let p = params::<f64>(&[[0.0, 0.5], [0.5, 0.25]]);
        let m = gaussian_mask(&g, &p).unwrap();
        assert_eq!(m.shape, vec![5, 5]);
        // Row 2 (y = 0), column 3 (x = 0.5) is the peak.
        assert!((m.data[2 * 5 + 3] - 1.0).abs() < 1e-15);
        // Corner (y = 1, x = 1): both axes are two sigmas out.
        assert!((m.data[4 * 5 + 4] - (-4.0f64).exp()).abs() < 1e-15);
        assert!(gaussian_mask(&g, &params::<f64>(&[[0.0, 1.0]])).is_err());
    }
}
