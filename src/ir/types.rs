//! Tensor types with symbolic dimensions.
//!
//! A dimension is a known size, a symbol such as the batch `B` or a sequence length `T`
//! (possibly transformed by strided layers), or a data-dependent size bounded above —
//! the FlexConv kernel, whose crop changes while training.

use std::fmt;

/// `floor((sym + offset) / div) + add`. This family is closed under the size arithmetic
/// of strided convs and pools: `floor((floor(y/d) + m)/e) = floor((y + m·d)/(d·e))`.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct SymDim {
    pub name: String,
    pub offset: i64,
    pub div: u64,
    pub add: i64,
}

impl SymDim {
    /// `floor((v + offset)/div) + add`, exact: i128 holds every u64 ± i64.
    fn eval_wide(&self, v: u64) -> i128 {
        (i128::from(v) + i128::from(self.offset)).div_euclid(i128::from(self.div.max(1)))
            + i128::from(self.add)
    }

    /// The size when the symbol is `v`; `None` when it is negative or beyond u64.
    pub fn eval(&self, v: u64) -> Option<u64> {
        u64::try_from(self.eval_wide(v)).ok()
    }
}

#[derive(
    serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum Dim {
    Known(u64),
    Sym(SymDim),
    /// Data-dependent, at most `max` (a FlexConv kernel after cropping).
    Dyn {
        max: u64,
    },
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(SymDim {
            name: name.to_string(),
            offset: 0,
            div: 1,
            add: 0,
        })
    }

    pub fn known(&self) -> Option<u64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }

    /// The size planning and cost estimates assume at batch size `batch`: every symbol
    /// set to `batch`, a data-dependent size at its bound. A symbolic size is at least
    /// 1 and saturates at `u64::MAX` rather than wrapping.
    pub fn at_batch(&self, batch: u64) -> u64 {
        match self {
            Dim::Known(k) => *k,
            Dim::Dyn { max } => *max,
            Dim::Sym(s) => s.eval_wide(batch).clamp(1, i128::from(u64::MAX)) as u64,
        }
    }

    /// The size after a window of extent `window` slides with `stride` over this
    /// dimension padded by `pad` in total: `floor((n + pad − window)/stride) + 1`.
    /// `None` when the window does not fit.
    pub fn windowed(&self, pad: u64, window: u64, stride: u64) -> Option<Dim> {
        let stride = stride.max(1);
        match self {
            Dim::Known(n) => {
                let padded = n.checked_add(pad)?;
                if padded < window {
                    return None;
                }
                Some(Dim::Known((padded - window) / stride + 1))
            }
            Dim::Sym(s) => {
                if pad == window.saturating_sub(1) && stride == 1 {
                    return Some(self.clone());
                }
                // (floor((x+o)/d) + a + pad − window)/stride + 1
                let m = s
                    .add
                    .checked_add(i64::try_from(pad).ok()?)?
                    .checked_sub(i64::try_from(window).ok()?)?;
                let div = s.div.checked_mul(stride)?;
                let offset = s
                    .offset
                    .checked_add(m.checked_mul(i64::try_from(s.div).ok()?)?)?;
                Some(
                    Dim::Sym(SymDim {
                        name: s.name.clone(),
                        offset,
                        div,
                        add: 1,
                    })
                    .normalised(),
                )
            }
            Dim::Dyn { max } => Some(Dim::Dyn { max: *max }),
        }
    }

    /// Brings `floor((x + o)/1) + a` to `floor((x + o + a)/1)` form so equal sizes
    /// compare equal.
    fn normalised(self) -> Dim {
        match self {
            Dim::Sym(mut s) if s.div == 1 => {
                s.offset += s.add;
                s.add = 0;
                Dim::Sym(s)
            }
            other => other,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Dyn { max } => write!(f, "<={max}"),
            Dim::Sym(s) => {
                let mut inner = s.name.clone();
                if s.offset != 0 {
                    inner = format!("{inner}{:+}", s.offset);
                }
                if s.div != 1 {
                    inner = if s.offset != 0 {
                        format!("({inner})/{}", s.div)
                    } else {
                        format!("{inner}/{}", s.div)
                    };
                }
                if s.add != 0 {
                    write!(f, "{inner}{:+}", s.add)
                } else {
                    write!(f, "{inner}")
                }
            }
        }
    }
}

#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum DType {
    F32,
    F64,
}

impl DType {
    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "f64" => Some(DType::F64),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn known(dtype: DType, dims: &[u64]) -> TensorType {
        TensorType::new(dtype, dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Every dimension at batch size `batch` ([`Dim::at_batch`]).
    pub fn dims_at_batch(&self, batch: u64) -> Vec<u64> {
        self.shape.iter().map(|d| d.at_batch(batch)).collect()
    }

    /// Element count when every dimension is known.
    pub fn numel(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.known()?))
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype.name())?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_symbolic_sizes_compose() {
        // Two stride-2 3x3 convs with padding 1 on T: floor((floor((T-1)/2)+1 -1)/2)+1
        let t = Dim::sym("T");
        let a = t.windowed(2, 3, 2).unwrap();
        assert_eq!(a.to_string(), "(T-1)/2+1");
        let b = a.windowed(2, 3, 2).unwrap();
        // Equals floor((T-1)/4)+1 for every T; check numerically.
        let Dim::Sym(s) = &b else { panic!() };
        for t in 1..200i64 {
            let once = (t - 1).div_euclid(2) + 1;
            let twice = (once - 1).div_euclid(2) + 1;
            assert_eq!(
                (t + s.offset).div_euclid(s.div as i64) + s.add,
                twice,
                "T={t}"
            );
        }
    }

    #[test]
    fn sizes_at_a_batch_follow_the_symbol_arithmetic() {
        let t = TensorType::new(
            DType::F32,
            vec![
                Dim::sym("B"),
                Dim::Known(3),
                Dim::Dyn { max: 33 },
                Dim::sym("B").windowed(2, 3, 2).unwrap(),
            ],
        );
        for b in 1..50u64 {
            assert_eq!(t.dims_at_batch(b), vec![b, 3, 33, (b - 1) / 2 + 1], "B={b}");
        }
        // floor((B − 8)/1) is negative for small B: planning clamps to one element,
        // evaluation refuses.
        let short = Dim::sym("B").windowed(0, 9, 1).unwrap();
        let Dim::Sym(s) = &short else { panic!() };
        assert_eq!(short.at_batch(4), 1);
        assert_eq!(s.eval(4), None);
        assert_eq!(s.eval(9), Some(1));
        // No wrap at the ends of the range.
        let huge = SymDim {
            name: "B".into(),
            offset: i64::MAX,
            div: 1,
            add: i64::MAX,
        };
        assert_eq!(Dim::Sym(huge.clone()).at_batch(u64::MAX), u64::MAX);
        assert_eq!(huge.eval(u64::MAX), None);
        assert_eq!(huge.eval(0), Some(2 * i64::MAX as u64));
    }

    #[test]
    fn same_padding_keeps_symbols() {
        let t = Dim::sym("T");
        assert_eq!(t.windowed(2, 3, 1), Some(Dim::sym("T")));
        assert_eq!(Dim::Known(32).windowed(2, 3, 2), Some(Dim::Known(16)));
        assert_eq!(Dim::Known(2).windowed(0, 3, 1), None);
    }
}
