//! The value of an `Op::Const`: a tensor computed at compile time.
//!
//! Constants are f32, the precision weights files and the initialiser produce. A fold
//! that computes a new value (a FlexConv kernel from bound weights) for a graph that
//! will run in f64 (`fnetc run --f64`) also keeps the value it computed in f64, and an
//! f64 run reads that one, so the folded graph agrees with the unfolded one to f64
//! rounding. Everything that works in f32 (the OpenCL lowering, artifacts, the
//! printer) sees the f32 value, through `Deref`.

use crate::tensor::{Scalar, Tensor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct ConstValue {
    f32: Arc<Tensor<f32>>,
    /// The value as folded in f64, when the graph was compiled to run in f64.
    f64: Option<Arc<Tensor<f64>>>,
}

impl ConstValue {
    /// A constant whose value is f32 by origin (a weight, a seeded frozen tensor).
    pub fn new(value: Tensor<f32>) -> ConstValue {
        ConstValue {
            f32: Arc::new(value),
            f64: None,
        }
    }

    /// A constant folded in f64; f32 consumers read it rounded.
    pub fn exact(value: Tensor<f64>) -> ConstValue {
        ConstValue {
            f32: Arc::new(value.cast()),
            f64: Some(Arc::new(value)),
        }
    }

    /// The value in `T`, from the f64 value where there is one.
    pub fn cast<T: Scalar>(&self) -> Tensor<T> {
        match &self.f64 {
            Some(v) => v.cast(),
            None => self.f32.cast(),
        }
    }
}

impl Deref for ConstValue {
    type Target = Tensor<f32>;

    fn deref(&self) -> &Tensor<f32> {
        &self.f32
    }
}

/// Artifacts hold the f32 value: `fnetc compile` folds in f32.
impl Serialize for ConstValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.f32.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ConstValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ConstValue, D::Error> {
        Tensor::<f32>::deserialize(d).map(ConstValue::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_f64_fold_is_read_in_f64_and_rounded_for_f32() {
        let third = Tensor::from_vec(vec![1], vec![1.0f64 / 3.0]).unwrap();
        let c = ConstValue::exact(third.clone());
        assert_eq!(c.cast::<f64>(), third);
        assert_eq!(c.data, vec![1.0f32 / 3.0]);
        assert_eq!(c.cast::<f32>().data, vec![1.0f32 / 3.0]);
        let plain = ConstValue::new(Tensor::from_vec(vec![1], vec![0.1f32]).unwrap());
        assert!(plain.f64.is_none());
        assert_eq!(plain.cast::<f64>().data, vec![0.1f32 as f64]);
        // Serialised, only the f32 value is kept.
        let json = serde_json::to_string(&c).unwrap();
        let back: ConstValue = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ConstValue::new(c.cast()));
    }
}
