//! MAGNet's initialisation, following the official FlexConv code
//! (`ckconv/nn/ck/magnet.py` `MAGNet`/`MAGNetLayer`, `mfn.py` `MFNBase`,
//! `ckconv.py` `FlexConv`), for `steerable=False`, `weight_scale=1`,
//! `bias_init=None`:
//!
//! - Hidden linears `U_l` `[H, H]`: weights `U(−√(1/H), √(1/H))`; biases keep
//!   the PyTorch default `U(−1/√H, 1/√H)`.
//! - Output linear `[out, H]`: PyTorch default, weights and biases
//!   `U(−1/√H, 1/√H)`.
//! - Gabor filter `l = 0 … L` (0-based):
//!   - `μ ~ U(−s, s)` `[H, D]`, `s = init_spatial_value` (capped at 1 by
//!     CKConv; FlexConv passes `1.667 × mask init`).
//!   - `γ ~ Gamma(alpha/(l+1), rate beta)` `[H, D]` (anisotropic): mean
//!     widths 6, 3, 2, 1.5 for the defaults.
//!   - `Wg` `[H, D]`: default `U(−1/√D, 1/√D)`, then each entry times
//!     `input_scale/√(L+1) · γ_{j,d}`.
//!   - `bg ~ U(−π, π)` (replacing the default bias).
//!
//! Draw order (hidden linears, output linear, then filters, as the Python
//! constructors run) is fixed so a seed always gives the same parameters;
//! the values do not match PyTorch's random stream.

use super::{default_bias, gamma, kaiming_uniform, uniform, InitRng};
use crate::reference::linear::Linear;
use crate::reference::magnet::{GaborFilter, MagnetParams};
use crate::tensor::{Scalar, ShapeError};

/// Hyper-parameters of a MAGNet kernel network.
#[derive(Debug, Clone, PartialEq)]
pub struct MagnetConfig {
    /// Spatial dimension D (1 for sequences, 2 for images).
    pub dim: usize,
    /// Hidden width H.
    pub hidden: usize,
    /// Output width, `Cout·Cin`.
    pub out: usize,
    /// Number of hidden linears L (so L+1 Gabor filters).
    pub layers: usize,
    pub input_scale: f64,
    pub alpha: f64,
    pub beta: f64,
    pub init_spatial_value: f64,
    /// Whether the linears have biases (FlexConv's `conv_bias`, True).
    pub bias: bool,
}

impl MagnetConfig {
    /// The settings of every FlexConv experiment: H = 32, L = 3,
    /// input_scale 25.6, Gamma(6/(l+1), 1), μ range 1.667·`mask_init`.
    pub fn flexconv(dim: usize, cout: usize, cin: usize, mask_init: f64) -> Self {
        Self {
            dim,
            hidden: 32,
            out: cout * cin,
            layers: 3,
            input_scale: 25.6,
            alpha: 6.0,
            beta: 1.0,
            init_spatial_value: 1.667 * mask_init,
            bias: true,
        }
    }
}

fn linear<T: Scalar>(
    rng: &mut InitRng,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear<T>, ShapeError> {
    let weight = kaiming_uniform(rng, &[out, inp])?;
    let bias = if bias {
        Some(default_bias(rng, out, inp)?.data)
    } else {
        None
    };
    Ok(Linear { weight, bias })
}

/// Draws a fresh set of MAGNet parameters.
pub fn magnet<T: Scalar>(
    rng: &mut InitRng,
    cfg: &MagnetConfig,
) -> Result<MagnetParams<T>, ShapeError> {
    let (d, h) = (cfg.dim, cfg.hidden);
    if d == 0 || h == 0 || cfg.out == 0 {
        return Err(ShapeError::new(
            "MAGNet init",
            "dim, hidden and out all >= 1",
            format!("{cfg:?}"),
        ));
    }
    let mut hidden = Vec::with_capacity(cfg.layers);
    for _ in 0..cfg.layers {
        let mut lin = linear::<T>(rng, h, h, cfg.bias)?;
        let bound = (1.0 / h as f64).sqrt();
        lin.weight = uniform(rng, &[h, h], -bound, bound);
        hidden.push(lin);
    }
    let output = linear(rng, cfg.out, h, cfg.bias)?;

    let s = cfg.init_spatial_value.min(1.0);
    let scale = cfg.input_scale / ((cfg.layers + 1) as f64).sqrt();
    let mut filters = Vec::with_capacity(cfg.layers + 1);
    for l in 0..=cfg.layers {
        let w0 = kaiming_uniform::<f64>(rng, &[h, d])?;
        let mu = uniform::<f64>(rng, &[h, d], -s, s);
        let gam = gamma::<f64>(rng, &[h, d], cfg.alpha / (l + 1) as f64, cfg.beta)?;
        let bg = uniform::<f64>(rng, &[h], -std::f64::consts::PI, std::f64::consts::PI);
        // Scale in f64 and round once, so f32 and f64 parameters agree.
        let wg = w0.data.iter().zip(&gam.data).map(|(w, g)| w * scale * g);
        filters.push(GaborFilter {
            linear: Linear {
                weight: crate::tensor::Tensor {
                    shape: vec![h, d],
                    data: wg.map(T::from_f64).collect(),
                },
                bias: cfg
                    .bias
                    .then(|| bg.data.iter().map(|&v| T::from_f64(v)).collect()),
            },
            gamma: gam.cast(),
            mu: mu.cast(),
        });
    }
    let p = MagnetParams {
        filters,
        hidden,
        output,
    };
    p.dims()?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded;

    #[test]
    fn shapes_ranges_and_determinism() {
        let cfg = MagnetConfig::flexconv(2, 4, 3, 0.075);
        let p: MagnetParams<f64> = magnet(&mut seeded(1), &cfg).unwrap();
        assert_eq!(p.dims().unwrap(), (2, 32, 12));
        assert_eq!(p.filters.len(), 4);
        let s = 1.667 * 0.075;
        for f in &p.filters {
            assert!(f.mu.data.iter().all(|m| m.abs() <= s));
            assert!(f.gamma.data.iter().all(|&g| g > 0.0));
            assert!(f
                .linear
                .bias
                .as_ref()
                .unwrap()
                .iter()
                .all(|b| b.abs() <= std::f64::consts::PI));
        }
        // |Wg| <= 12.8 · γ / √2 entrywise.
        let f = &p.filters[2];
        for (w, g) in f.linear.weight.data.iter().zip(&f.gamma.data) {
            assert!(w.abs() <= 12.8 * g / 2f64.sqrt() + 1e-12);
        }
        let q: MagnetParams<f64> = magnet(&mut seeded(1), &cfg).unwrap();
        assert_eq!(p, q);
        let r: MagnetParams<f32> = magnet(&mut seeded(1), &cfg).unwrap();
        assert_eq!(r.output.weight, p.output.weight.to_f32());
        assert!(magnet::<f32>(&mut seeded(1), &MagnetConfig { dim: 0, ..cfg }).is_err());
    }

    #[test]
    fn gamma_means_fall_with_depth() {
        let mut cfg = MagnetConfig::flexconv(2, 1, 1, 0.075);
        cfg.hidden = 2000;
        let p: MagnetParams<f64> = magnet(&mut seeded(2), &cfg).unwrap();
        for (l, want) in [6.0, 3.0, 2.0, 1.5].iter().enumerate() {
            let g = &p.filters[l].gamma.data;
            let m = g.iter().sum::<f64>() / g.len() as f64;
            assert!((m / want - 1.0).abs() < 0.05, "layer {l}: {m}");
        }
    }
}
