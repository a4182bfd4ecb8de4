//! Pointwise activations: ReLU and GELU (exact erf form, PyTorch's default
//! `approximate="none"`), plus the `erf` they need, since `std` has none.

use crate::tensor::{Scalar, Tensor};

pub fn relu<T: Scalar>(x: &Tensor<T>) -> Tensor<T> {
    // `max` would turn NaN into 0; PyTorch's relu propagates NaN.
    x.map(|&v| if v < T::zero() { T::zero() } else { v })
}

/// `x · ½ (1 + erf(x / √2))`, evaluated in f64 and rounded once.
pub fn gelu<T: Scalar>(x: &Tensor<T>) -> Tensor<T> {
    x.map(|&v| {
        let v = v.to_f64();
        T::from_f64(0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
    })
}

/// The error function, to about 1e-15 absolute in f64.
///
/// For |x| < 3 it sums `erf(x) = 2/√π · e^{−x²} Σ_n 2ⁿ x^{2n+1} / (1·3·…·(2n+1))`,
/// whose terms are all positive (no cancellation). Beyond that it uses the
/// continued fraction for `erfc`, which converges fast for large x.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        let x2 = a * a;
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term > 1e-17 * sum {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
    } else if a < 6.0 {
        // erfc(a) = e^{−a²}/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + …))))
        let mut f = a;
        for k in (1..=60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    } else {
        1.0
    };
    r.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        // Reference values from the series at high precision.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.9, 0.999_958_902_121_900_5),
            (3.1, 0.999_988_351_342_632_8),
            (4.0, 0.999_999_984_582_742_1),
        ] {
            assert!((erf(x) - want).abs() < 2e-15, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 2e-15);
        }
        assert_eq!(erf(10.0), 1.0);
    }

    #[test]
    fn relu_gelu() {
        let x = Tensor::from_vec(vec![3], vec![-1.0f64, 0.0, 2.0]).unwrap();
        assert_eq!(relu(&x).data, vec![0.0, 0.0, 2.0]);
        let g = gelu(&x);
        assert!((g.data[0] - (-0.158_655_253_931_457_05)).abs() < 1e-15);
        assert!((g.data[2] - 1.954_499_736_103_642).abs() < 1e-15);
        let n = Tensor::from_vec(vec![1], vec![f32::NAN]).unwrap();
        assert!(relu(&n).data[0].is_nan());
    }
}
