//! MAGNet kernel synthesis, following the official FlexConv code
//! (`ckconv/nn/ck/magnet.py`, `mfn.py`, `ckconv.py`) with `steerable=False`.
//!
//! For a coordinate `x ∈ R^D` and hidden width `H`:
//! - Gabor filter `l`, unit `j`:
//!   `g_l(x)_j = exp(−½ Σ_d (γ_{l,j,d} · (x_d − μ_{l,j,d}))²) · sin(Σ_d Wg_{l,j,d} x_d + bg_{l,j})`.
//!   γ multiplies the *offset* `x − μ` per axis (anisotropic, `[H, D]`), as
//!   `gaussian_window` does; it is not a division by a width.
//! - `h_1 = g_1(x)`, `h_l = g_l(x) ⊙ (U_{l−1} h_{l−1} + c_{l−1})`.
//! - `ψ(x) = V h_{L+1} + v`, `V` `[Cout·Cin, H]`.
//!
//! The official `view(-1, Cin, k…)` reshape means output row `o·Cin + i`
//! is the kernel for output channel `o`, input channel `i`.
//! The initial values are produced by [`crate::init::magnet`].

use super::linear::Linear;
use crate::tensor::{Scalar, ShapeError, Tensor};

/// One anisotropic Gabor filter. `linear` is `Wg` `[H, D]` with bias `bg` `[H]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GaborFilter<T> {
    pub linear: Linear<T>,
    /// `[H, D]`: per-unit, per-axis inverse width.
    pub gamma: Tensor<T>,
    /// `[H, D]`: per-unit, per-axis centre.
    pub mu: Tensor<T>,
}

/// All MAGNet weights: `L + 1` filters, `L` hidden linears `[H, H]`, and the
/// output linear `[Cout·Cin, H]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MagnetParams<T> {
    pub filters: Vec<GaborFilter<T>>,
    pub hidden: Vec<Linear<T>>,
    pub output: Linear<T>,
}

impl<T: Scalar> MagnetParams<T> {
    /// Checks every shape; returns `(D, H, out)`.
    pub fn dims(&self) -> Result<(usize, usize, usize), ShapeError> {
        let first = self.filters.first().ok_or_else(|| {
            ShapeError::new("MAGNet filters", "at least one Gabor filter", "none")
        })?;
        let (h, d) = first.linear.dims("MAGNet filter 0")?;
        if self.hidden.len() + 1 != self.filters.len() {
            return Err(ShapeError::new(
                "MAGNet layers",
                format!(
                    "{} hidden linears for {} filters",
                    self.filters.len() - 1,
                    self.filters.len()
                ),
                format!("{}", self.hidden.len()),
            ));
        }
        for (l, f) in self.filters.iter().enumerate() {
            let what = format!("MAGNet filter {l}");
            if f.linear.dims(&what)? != (h, d) || f.gamma.shape != [h, d] || f.mu.shape != [h, d] {
                return Err(ShapeError::new(
                    what,
                    format!("Wg, gamma, mu all [{h}, {d}]"),
                    format!(
                        "Wg {:?}, gamma {:?}, mu {:?}",
                        f.linear.weight.shape, f.gamma.shape, f.mu.shape
                    ),
                ));
            }
        }
        for (l, u) in self.hidden.iter().enumerate() {
            let what = format!("MAGNet hidden linear {l}");
            if u.dims(&what)? != (h, h) {
                return Err(ShapeError::new(
                    what,
                    format!("[{h}, {h}]"),
                    format!("{:?}", u.weight.shape),
                ));
            }
        }
        let (o, oh) = self.output.dims("MAGNet output linear")?;
        if oh != h {
            return Err(ShapeError::new(
                "MAGNet output linear",
                format!("[out, {h}]"),
                format!("{:?}", self.output.weight.shape),
            ));
        }
        Ok((d, h, o))
    }
}

/// The Gaussian envelope `exp(-½ Σ_a (γ_ja (x_ap − μ_ja))²)` of filter row `j` at column
/// `p` of `coords` `[D, N]`; the forward and the backward share it.
pub(crate) fn gabor_envelope<T: Scalar>(
    f: &GaborFilter<T>,
    coords: &Tensor<T>,
    j: usize,
    p: usize,
) -> T {
    let (d, n) = (coords.shape[0], coords.shape[1]);
    let mut sq = T::zero();
    for a in 0..d {
        let z = f.gamma.data[j * d + a] * (coords.data[a * n + p] - f.mu.data[j * d + a]);
        sq += z * z;
    }
    (T::from_f64(-0.5) * sq).exp()
}

/// Evaluates one Gabor filter at every column of `coords` `[D, N]` → `[H, N]`.
pub fn gabor_filter<T: Scalar>(
    f: &GaborFilter<T>,
    coords: &Tensor<T>,
) -> Result<Tensor<T>, ShapeError> {
    let (h, d) = f.linear.dims("MAGNet Gabor filter")?;
    if f.gamma.shape != [h, d] || f.mu.shape != [h, d] {
        return Err(ShapeError::new(
            "MAGNet Gabor filter",
            format!("gamma and mu of shape [{h}, {d}]"),
            format!("gamma {:?}, mu {:?}", f.gamma.shape, f.mu.shape),
        ));
    }
    let mut y = f.linear.apply_columns(coords, "MAGNet Gabor filter")?;
    let n = coords.shape[1];
    for j in 0..h {
        for p in 0..n {
            let v = &mut y.data[j * n + p];
            *v = gabor_envelope(f, coords, j, p) * v.sin();
        }
    }
    Ok(y)
}

/// MAGNet at every column of `coords` `[D, N]` → `[Cout·Cin, N]`.
pub fn magnet_forward<T: Scalar>(
    p: &MagnetParams<T>,
    coords: &Tensor<T>,
) -> Result<Tensor<T>, ShapeError> {
    let (d, _, _) = p.dims()?;
    if coords.ndim() != 2 || coords.shape[0] != d {
        return Err(ShapeError::new(
            "MAGNet coordinates",
            format!("[{d}, N]"),
            format!("{:?}", coords.shape),
        ));
    }
    let mut h = gabor_filter(&p.filters[0], coords)?;
    for (f, u) in p.filters[1..].iter().zip(&p.hidden) {
        let g = gabor_filter(f, coords)?;
        h = u.apply_columns(&h, "MAGNet hidden linear")?;
        for (hv, gv) in h.data.iter_mut().zip(&g.data) {
            *hv = *gv * *hv;
        }
    }
    p.output.apply_columns(&h, "MAGNet output linear")
}

/// The conv kernel `[Cout, Cin, k…]` for a grid `[D, k…]` (full or cropped),
/// times `sampling_rate_norm` (1 in training; `(r_train/r_test)^2` when a
/// model is re-sampled at another resolution).
pub fn magnet_kernel<T: Scalar>(
    p: &MagnetParams<T>,
    grid: &Tensor<T>,
    cin: usize,
    sampling_rate_norm: T,
) -> Result<Tensor<T>, ShapeError> {
    let d = grid.shape.first().copied().unwrap_or(0);
    if d == 0 || grid.ndim() != d + 1 {
        return Err(ShapeError::new(
            "MAGNet grid",
            "[D, k_1, ..., k_D]",
            format!("{:?}", grid.shape),
        ));
    }
    let spatial = grid.shape[1..].to_vec();
    let n = grid.numel() / d;
    let coords = Tensor {
        shape: vec![d, n],
        data: grid.data.clone(),
    };
    let y = magnet_forward(p, &coords)?;
    let out = y.shape[0];
    if cin == 0 || out % cin != 0 {
        return Err(ShapeError::new(
            "MAGNet kernel",
            format!("an output width divisible by Cin = {cin}"),
            format!("{out}"),
        ));
    }
    let mut shape = vec![out / cin, cin];
    shape.extend(spatial);
    // Row o·Cin + i of y is already kernel [o, i, …] in row-major order.
    Ok(scale_kernel(
        &Tensor::from_vec(shape, y.data)?,
        sampling_rate_norm,
    ))
}

/// Multiplies every kernel value by a scalar (the sampling-rate norm).
pub fn scale_kernel<T: Scalar>(k: &Tensor<T>, s: T) -> Tensor<T> {
    k.map(|&v| v * s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn lin(o: usize, i: usize, v: &[f64], b: &[f64]) -> Linear<f64> {
        Linear {
            weight: t(&[o, i], v),
            bias: Some(b.to_vec()),
        }
    }

    /// H = 1, D = 2, L = 1, Cout·Cin = 2, computed by hand.
    #[test]
    fn tiny_magnet_by_hand() {
        let f0 = GaborFilter {
            linear: lin(1, 2, &[1.0, 2.0], &[0.5]),
            gamma: t(&[1, 2], &[1.0, 2.0]),
            mu: t(&[1, 2], &[0.0, 0.5]),
        };
        let f1 = GaborFilter {
            linear: lin(1, 2, &[0.0, 1.0], &[0.0]),
            gamma: t(&[1, 2], &[0.0, 0.0]),
            mu: t(&[1, 2], &[0.0, 0.0]),
        };
        let p = MagnetParams {
            filters: vec![f0, f1],
            hidden: vec![lin(1, 1, &[3.0], &[1.0])],
            output: lin(2, 1, &[1.0, -2.0], &[0.0, 0.25]),
        };
        let (x, y) = (0.5f64, -0.5f64);
        let g0 = (-0.5 * (x * x + (2.0 * (y - 0.5)).powi(2))).exp() * (x + 2.0 * y + 0.5).sin();
        let h = y.sin() * (3.0 * g0 + 1.0);
        let out = magnet_forward(&p, &t(&[2, 1], &[x, y])).unwrap();
        assert!((out.data[0] - h).abs() < 1e-14);
        assert!((out.data[1] - (-2.0 * h + 0.25)).abs() < 1e-14);

        let grid = t(&[2, 1, 1], &[x, y]);
        let k = magnet_kernel(&p, &grid, 2, 0.5).unwrap();
        assert_eq!(k.shape, vec![1, 2, 1, 1]);
        assert!((k.data[1] - 0.5 * (-2.0 * h + 0.25)).abs() < 1e-14);
        assert!(magnet_kernel(&p, &grid, 3, 1.0).is_err());
        assert!(magnet_forward(&p, &t(&[1, 1], &[0.0])).is_err());
    }
}
