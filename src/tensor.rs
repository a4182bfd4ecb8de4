//! Plain dense tensors and the scalar trait the reference kernels are generic over.
//!
//! A [`Tensor`] is nothing but a shape and a row-major (C order) buffer. It
//! deliberately has no strides, views or broadcasting: the reference kernels
//! are meant to be obviously correct, and every layout question is answered
//! by "row-major, contiguous".

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// The floating-point element types the reference kernels run in (f32, f64).
///
/// The methods are the few pieces of `std` float behaviour the kernels need,
/// gathered in one trait so every kernel can be written once. It does not
/// build on `num_traits::Float` on purpose: that trait (and rustfft's
/// `FftNum`) also define `from_f64`/`to_f64`, and the clash would make every
/// `T::from_f64` call ambiguous. The FFT kernels add `rustfft::FftNum` as an
/// extra bound where they need it.
pub trait Scalar:
    Copy
    + Send
    + Sync
    + fmt::Debug
    + fmt::Display
    + PartialOrd
    + Default
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + 'static
{
    /// The dtype name used in file headers and error messages ("f32", "f64").
    const NAME: &'static str;

    /// Rounds an f64 to this type (exact for f64).
    fn from_f64(v: f64) -> Self;
    /// Widens to f64 (always exact).
    fn to_f64(self) -> f64;
    fn zero() -> Self;
    fn one() -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    /// IEEE maxNum: a NaN argument loses to a number.
    fn max(self, other: Self) -> Self;
    fn min(self, other: Self) -> Self;
    /// `self * a + b`, fused. Slow without FMA target features (a libm call),
    /// so the reference kernels use it only where rounding matters.
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn powi(self, n: i32) -> Self;
    fn is_finite(self) -> bool;
    fn infinity() -> Self;
    /// Conversion from a count, for means and normalisers.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

macro_rules! impl_scalar {
    ($t:ty, $name:expr) => {
        impl Scalar for $t {
            const NAME: &'static str = $name;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn zero() -> Self {
                0.0
            }
            fn one() -> Self {
                1.0
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            fn powi(self, n: i32) -> Self {
                <$t>::powi(self, n)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn infinity() -> Self {
                <$t>::INFINITY
            }
        }
    };
}

impl_scalar!(f32, "f32");
impl_scalar!(f64, "f64");

/// A shape or argument that a kernel cannot work with.
///
/// Kernels return this instead of panicking, because shapes ultimately come
/// from user programs and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    /// Which operation or argument complained.
    pub context: String,
    /// What it needed.
    pub expected: String,
    /// What it got.
    pub found: String,
}

impl ShapeError {
    pub fn new(
        context: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self {
            context: context.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.context, self.expected, self.found
        )
    }
}

impl std::error::Error for ShapeError {}

/// A dense row-major tensor.
///
/// Invariant: `data.len() == numel(&shape)`. The fields are public for easy
/// construction and destructuring; build through [`Tensor::from_vec`] (which
/// checks) when the two come from outside. Kernels assume the invariant.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// Number of elements of a shape; the empty shape is a scalar with one element.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl<T: Clone> Tensor<T> {
    /// Wraps a buffer, checking that its length matches the shape.
    pub fn from_vec(shape: Vec<usize>, data: Vec<T>) -> Result<Self, ShapeError> {
        let n = numel(&shape);
        if n != data.len() {
            return Err(ShapeError::new(
                "Tensor::from_vec",
                format!("{n} elements for shape {shape:?}"),
                format!("{} elements", data.len()),
            ));
        }
        Ok(Self { shape, data })
    }

    /// A tensor with every element equal to `value`.
    pub fn full(shape: Vec<usize>, value: T) -> Self {
        let n = numel(&shape);
        Self {
            shape,
            data: vec![value; n],
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    pub fn strides(&self) -> Vec<usize> {
        strides(&self.shape)
    }

    /// Flat offset of a multi-index, or `None` if it has the wrong rank or is
    /// out of bounds.
    pub fn offset(&self, index: &[usize]) -> Option<usize> {
        if index.len() != self.shape.len() {
            return None;
        }
        let mut off = 0;
        for (&i, &n) in index.iter().zip(&self.shape) {
            if i >= n {
                return None;
            }
            off = off * n + i;
        }
        Some(off)
    }

    pub fn get(&self, index: &[usize]) -> Option<&T> {
        self.offset(index).map(|o| &self.data[o])
    }

    pub fn get_mut(&mut self, index: &[usize]) -> Option<&mut T> {
        self.offset(index).map(move |o| &mut self.data[o])
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self, ShapeError> {
        if numel(&shape) != self.data.len() {
            return Err(ShapeError::new(
                "Tensor::reshape",
                format!("a shape with {} elements", self.data.len()),
                format!("{shape:?}"),
            ));
        }
        Ok(Self {
            shape,
            data: self.data,
        })
    }

    /// Applies `f` elementwise, keeping the shape.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(f).collect(),
        }
    }

    /// Checks the rank, naming the argument in the error.
    pub fn expect_rank(&self, rank: usize, what: &str) -> Result<(), ShapeError> {
        if self.shape.len() != rank {
            return Err(ShapeError::new(
                what,
                format!("a rank-{rank} tensor"),
                format!("shape {:?}", self.shape),
            ));
        }
        Ok(())
    }
}

impl<T: Scalar> Tensor<T> {
    pub fn zeros(shape: Vec<usize>) -> Self {
        Self::full(shape, T::zero())
    }

    pub fn ones(shape: Vec<usize>) -> Self {
        Self::full(shape, T::one())
    }

    /// Converts to another scalar type (f32 <-> f64), rounding to nearest.
    pub fn cast<U: Scalar>(&self) -> Tensor<U> {
        self.map(|&v| U::from_f64(v.to_f64()))
    }

    pub fn to_f32(&self) -> Tensor<f32> {
        self.cast()
    }

    pub fn to_f64(&self) -> Tensor<f64> {
        self.cast()
    }

    /// Largest absolute element (0 for an empty tensor).
    pub fn max_abs(&self) -> f64 {
        self.data
            .iter()
            .fold(0.0f64, |m, v| m.max(v.to_f64().abs()))
    }

    /// Largest elementwise |a - b| in f64; NaN anywhere gives NaN so that
    /// comparisons against a tolerance fail instead of passing silently.
    pub fn max_abs_diff<U: Scalar>(&self, other: &Tensor<U>) -> Result<f64, ShapeError> {
        if self.shape != other.shape {
            return Err(ShapeError::new(
                "max_abs_diff",
                format!("shape {:?}", self.shape),
                format!("shape {:?}", other.shape),
            ));
        }
        let mut m = 0.0f64;
        for (a, b) in self.data.iter().zip(&other.data) {
            let d = (a.to_f64() - b.to_f64()).abs();
            if d.is_nan() {
                return Ok(f64::NAN);
            }
            m = m.max(d);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length() {
        assert!(Tensor::from_vec(vec![2, 3], vec![0.0f32; 6]).is_ok());
        let err = Tensor::from_vec(vec![2, 3], vec![0.0f32; 5]).unwrap_err();
        assert!(err.to_string().contains("6 elements"), "{err}");
    }

    #[test]
    fn indexing_is_row_major() {
        let t = Tensor::from_vec(vec![2, 3], (0..6).map(|v| v as f64).collect()).unwrap();
        assert_eq!(t.get(&[1, 0]), Some(&3.0));
        assert_eq!(t.get(&[0, 2]), Some(&2.0));
        assert_eq!(t.get(&[2, 0]), None);
        assert_eq!(t.get(&[0]), None);
        assert_eq!(t.strides(), vec![3, 1]);
    }

    #[test]
    fn cast_and_diff() {
        let a = Tensor::from_vec(vec![3], vec![1.0f64, -2.5, 0.1]).unwrap();
        let b = a.to_f32();
        assert!(a.max_abs_diff(&b).unwrap() < 1e-7);
        assert_eq!(a.max_abs(), 2.5);
        let c = Tensor::from_vec(vec![3], vec![1.0f64, f64::NAN, 0.1]).unwrap();
        assert!(a.max_abs_diff(&c).unwrap().is_nan());
        assert!(a.max_abs_diff(&Tensor::<f32>::zeros(vec![4])).is_err());
    }

    #[test]
    fn reshape_checks_count() {
        let t = Tensor::<f32>::zeros(vec![2, 6]);
        assert_eq!(t.clone().reshape(vec![3, 4]).unwrap().shape, vec![3, 4]);
        assert!(t.reshape(vec![5]).is_err());
    }
}
