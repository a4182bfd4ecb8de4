//! Seeded, reproducible parameter initialisers.
//!
//! Reproducibility contract: every initialiser draws from a
//! [`Pcg64`] made by [`seeded`], samples in f64 and rounds
//! once to the target type. The same seed and the same sequence of calls
//! therefore give the same bytes on every platform, and the f32 values are
//! exactly the f64 values rounded. This does *not* reproduce PyTorch's
//! random streams: only the distributions match, as documented per function.
//!
//! Fan conventions follow `torch.nn.init._calculate_fan_in_and_fan_out`:
//! for a weight `[out, in, k…]`, `fan_in = in·Πk`, `fan_out = out·Πk`.

pub mod magnet;
pub mod orthogonal;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, Normal};
use rand_pcg::Pcg64;

use crate::tensor::{numel, Scalar, ShapeError, Tensor};

pub use orthogonal::orthogonal;

/// The project's random generator.
pub type InitRng = Pcg64;

/// A generator from a u64 seed (`Pcg64::seed_from_u64`): same seed, same
/// stream, on every platform and rand_pcg 0.9 build.
pub fn seeded(seed: u64) -> InitRng {
    Pcg64::seed_from_u64(seed)
}

/// Which fan Kaiming initialisation scales by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    FanIn,
    FanOut,
}

/// Gain for ReLU in Kaiming init, `√2` (`calculate_gain("relu")`).
pub const RELU_GAIN: f64 = std::f64::consts::SQRT_2;

/// `(fan_in, fan_out)` of a weight shape `[out, in, k…]`; needs rank >= 2.
pub fn fans(shape: &[usize]) -> Result<(usize, usize), ShapeError> {
    if shape.len() < 2 {
        return Err(ShapeError::new(
            "fan computation",
            "a weight of rank >= 2 ([out, in, ...])",
            format!("{shape:?}"),
        ));
    }
    let rf: usize = shape[2..].iter().product();
    Ok((shape[1] * rf, shape[0] * rf))
}

fn fan(shape: &[usize], mode: FanMode) -> Result<usize, ShapeError> {
    let (fi, fo) = fans(shape)?;
    let f = if mode == FanMode::FanIn { fi } else { fo };
    if f == 0 {
        return Err(ShapeError::new(
            "fan computation",
            "a non-zero fan",
            format!("{shape:?}"),
        ));
    }
    Ok(f)
}

fn from_fn<T: Scalar>(shape: &[usize], mut f: impl FnMut() -> f64) -> Tensor<T> {
    let data = (0..numel(shape)).map(|_| T::from_f64(f())).collect();
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

/// `U(lo, hi)` i.i.d. (`nn.init.uniform_`). `lo == hi` gives a constant.
pub fn uniform<T: Scalar>(rng: &mut InitRng, shape: &[usize], lo: f64, hi: f64) -> Tensor<T> {
    // Affine map of U[0,1) rather than `random_range`, which panics on empty ranges.
    from_fn(shape, || lo + (hi - lo) * rng.random::<f64>())
}

/// `N(mean, std²)` i.i.d. (`nn.init.normal_`). Errors on a negative or
/// non-finite std.
pub fn normal<T: Scalar>(
    rng: &mut InitRng,
    shape: &[usize],
    mean: f64,
    std: f64,
) -> Result<Tensor<T>, ShapeError> {
    // rand_distr accepts a negative std (as a reflection); PyTorch does not.
    let bad = || {
        ShapeError::new(
            "normal init",
            "finite mean and std >= 0",
            format!("mean {mean}, std {std}"),
        )
    };
    if !(std >= 0.0 && std.is_finite() && mean.is_finite()) {
        return Err(bad());
    }
    let dist = Normal::new(mean, std).map_err(|_| bad())?;
    Ok(from_fn(shape, || dist.sample(rng)))
}

pub fn zeros<T: Scalar>(shape: &[usize]) -> Tensor<T> {
    Tensor::zeros(shape.to_vec())
}

pub fn ones<T: Scalar>(shape: &[usize]) -> Tensor<T> {
    Tensor::ones(shape.to_vec())
}

pub fn constant<T: Scalar>(shape: &[usize], value: f64) -> Tensor<T> {
    Tensor::full(shape.to_vec(), T::from_f64(value))
}

/// PyTorch's default weight init for `Conv*d` and `Linear`:
/// `kaiming_uniform_(a=√5)`, which works out to `U(−1/√fan_in, 1/√fan_in)`.
/// This is also the LC paper's frozen-filter init.
pub fn kaiming_uniform<T: Scalar>(
    rng: &mut InitRng,
    shape: &[usize],
) -> Result<Tensor<T>, ShapeError> {
    let bound = 1.0 / (fan(shape, FanMode::FanIn)? as f64).sqrt();
    Ok(uniform(rng, shape, -bound, bound))
}

/// PyTorch's default bias init for `Conv*d` and `Linear`:
/// `U(−1/√fan_in, 1/√fan_in)` with the *weight's* fan-in.
pub fn default_bias<T: Scalar>(
    rng: &mut InitRng,
    len: usize,
    fan_in: usize,
) -> Result<Tensor<T>, ShapeError> {
    if fan_in == 0 {
        return Err(ShapeError::new("default bias init", "fan_in > 0", "0"));
    }
    let bound = 1.0 / (fan_in as f64).sqrt();
    Ok(uniform(rng, &[len], -bound, bound))
}

/// `kaiming_normal_(mode, nonlinearity)`: `N(0, (gain/√fan)²)`. The
/// shared-bases code uses `FanOut` with [`RELU_GAIN`].
pub fn kaiming_normal<T: Scalar>(
    rng: &mut InitRng,
    shape: &[usize],
    mode: FanMode,
    gain: f64,
) -> Result<Tensor<T>, ShapeError> {
    let std = gain / (fan(shape, mode)? as f64).sqrt();
    normal(rng, shape, 0.0, std)
}

/// Gamma with shape `alpha` and **rate** `beta` (mean `alpha/beta`), as
/// `torch.distributions.Gamma(concentration, rate)`. (rand_distr takes a
/// scale, so this passes `1/beta`.) Errors unless both are positive.
pub fn gamma<T: Scalar>(
    rng: &mut InitRng,
    shape: &[usize],
    alpha: f64,
    beta: f64,
) -> Result<Tensor<T>, ShapeError> {
    let dist = Gamma::new(alpha, 1.0 / beta).map_err(|e| {
        ShapeError::new(
            "gamma init",
            "alpha > 0 and rate beta > 0",
            format!("alpha = {alpha}, beta = {beta} ({e})"),
        )
    })?;
    Ok(from_fn(shape, || dist.sample(rng)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(t: &Tensor<f64>) -> (f64, f64) {
        let n = t.numel() as f64;
        let m = t.data.iter().sum::<f64>() / n;
        (m, t.data.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n)
    }

    #[test]
    fn same_seed_same_bytes_and_f32_is_rounded_f64() {
        let a: Tensor<f64> = kaiming_uniform(&mut seeded(5), &[4, 3, 3, 3]).unwrap();
        let b: Tensor<f64> = kaiming_uniform(&mut seeded(5), &[4, 3, 3, 3]).unwrap();
        let c: Tensor<f32> = kaiming_uniform(&mut seeded(5), &[4, 3, 3, 3]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_f32(), c);
        assert_ne!(a, kaiming_uniform(&mut seeded(6), &[4, 3, 3, 3]).unwrap());
    }

    #[test]
    fn kaiming_bounds_and_moments() {
        let w: Tensor<f64> = kaiming_uniform(&mut seeded(1), &[64, 16, 3, 3]).unwrap();
        let bound = 1.0 / 144f64.sqrt();
        assert!(w.data.iter().all(|v| v.abs() <= bound));
        let (_, v) = mean_var(&w);
        assert!((v / (bound * bound / 3.0) - 1.0).abs() < 0.05);
        let w: Tensor<f64> =
            kaiming_normal(&mut seeded(2), &[64, 16, 3, 3], FanMode::FanOut, RELU_GAIN).unwrap();
        let (m, v) = mean_var(&w);
        assert!(m.abs() < 0.01 && (v / (2.0 / 576.0) - 1.0).abs() < 0.05);
        assert!(kaiming_uniform::<f32>(&mut seeded(1), &[3]).is_err());
    }

    #[test]
    fn gamma_mean_uses_rate() {
        let g: Tensor<f64> = gamma(&mut seeded(3), &[20000], 6.0, 2.0).unwrap();
        let (m, _) = mean_var(&g);
        assert!((m - 3.0).abs() < 0.05, "{m}");
        assert!(gamma::<f64>(&mut seeded(3), &[1], 0.0, 1.0).is_err());
        assert!(normal::<f64>(&mut seeded(3), &[1], 0.0, -1.0).is_err());
    }

    #[test]
    fn constants_and_degenerate_uniform() {
        assert_eq!(constant::<f32>(&[2], 0.5).data, vec![0.5, 0.5]);
        assert_eq!(
            uniform::<f64>(&mut seeded(0), &[3], 2.0, 2.0).data,
            vec![2.0; 3]
        );
        assert_eq!(ones::<f64>(&[1]).data, vec![1.0]);
        assert_eq!(zeros::<f64>(&[1]).data, vec![0.0]);
    }
}
