//! A conv's cost record as plain data: the conv's shape with every size resolved, the
//! estimated seconds per algorithm, the algorithm chosen and who chose it.
//! `choose-conv-algo` fills `Graph::conv_costs` with these and the printer shows them;
//! the model that computes the estimates (the `cost` module) sits above the IR and only
//! produces values of these types.

use super::op::{ConvAlgo, Padding};
use serde::{Deserialize, Serialize};

/// The algorithms the model compares, in tie-break order.
pub const ALGOS: [ConvAlgo; 5] = [
    ConvAlgo::Direct,
    ConvAlgo::Im2col,
    ConvAlgo::Fft,
    ConvAlgo::Winograd2,
    ConvAlgo::Winograd4,
];

/// Everything about a conv the model needs, with every size known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvShape {
    pub batch: u64,
    pub ci: u64,
    pub co: u64,
    /// Input spatial sizes.
    pub input: Vec<u64>,
    /// Kernel spatial sizes.
    pub kernel: Vec<u64>,
    pub stride: Vec<u64>,
    pub dilation: Vec<u64>,
    pub groups: u64,
    pub padding: Padding,
}

/// Conv geometry only; the backend-specific work counts are in the `cost` module.
impl ConvShape {
    /// A stride-1, dilation-1, one-group conv with `padding`.
    pub fn plain(
        batch: u64,
        ci: u64,
        co: u64,
        input: &[u64],
        kernel: &[u64],
        padding: Padding,
    ) -> Self {
        ConvShape {
            batch,
            ci,
            co,
            input: input.to_vec(),
            kernel: kernel.to_vec(),
            stride: vec![1; input.len()],
            dilation: vec![1; input.len()],
            groups: 1,
            padding,
        }
    }

    /// Zeros before and after each spatial dimension, as the interpreter resolves them.
    pub fn pads(&self) -> Vec<(u64, u64)> {
        match &self.padding {
            Padding::Explicit(p) => p.clone(),
            Padding::Same => self
                .kernel
                .iter()
                .zip(&self.dilation)
                .map(|(&k, &d)| {
                    let t = d * k.saturating_sub(1);
                    (t / 2, t - t / 2)
                })
                .collect(),
            Padding::Causal => self
                .kernel
                .iter()
                .zip(&self.dilation)
                .map(|(&k, &d)| (d * k.saturating_sub(1), 0))
                .collect(),
        }
    }

    /// Output spatial sizes, `None` when the kernel does not fit.
    pub fn output(&self) -> Option<Vec<u64>> {
        (0..self.input.len())
            .map(|i| {
                let (lo, hi) = self.pads()[i];
                let span = self.dilation[i] * self.kernel[i].checked_sub(1)? + 1;
                let padded = self.input[i] + lo + hi;
                (padded >= span && self.stride[i] > 0).then(|| (padded - span) / self.stride[i] + 1)
            })
            .collect()
    }
}

/// Estimated seconds per algorithm for one conv.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    #[serde(with = "infinite_as_null")]
    pub direct: f64,
    #[serde(with = "infinite_as_null")]
    pub im2col: f64,
    #[serde(with = "infinite_as_null")]
    pub fft: f64,
    /// Only the JIT's table has the Winograd algorithms; elsewhere they are infinite,
    /// left out of the JSON and of the IR comment.
    #[serde(default = "infinite", skip_serializing_if = "is_infinite")]
    pub winograd2: f64,
    #[serde(default = "infinite", skip_serializing_if = "is_infinite")]
    pub winograd4: f64,
}

fn infinite() -> f64 {
    f64::INFINITY
}

fn is_infinite(v: &f64) -> bool {
    !v.is_finite()
}

/// JSON has no infinity (serde_json writes `null` and cannot read it back as f64), so
/// "cannot run" travels as `null` both ways.
mod infinite_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_some(v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

impl Estimate {
    pub fn get(&self, algo: ConvAlgo) -> f64 {
        match algo {
            ConvAlgo::Direct => self.direct,
            ConvAlgo::Im2col => self.im2col,
            ConvAlgo::Fft => self.fft,
            ConvAlgo::Winograd2 => self.winograd2,
            ConvAlgo::Winograd4 => self.winograd4,
            ConvAlgo::Auto => f64::INFINITY,
        }
    }

    /// The cheapest algorithm; ties go to the earlier of direct, im2col, fft.
    pub fn cheapest(&self) -> ConvAlgo {
        let mut best = ConvAlgo::Direct;
        for a in ALGOS {
            if self.get(a) < self.get(best) {
                best = a;
            }
        }
        best
    }

    /// `est direct 41.2ms im2col 9.81ms fft n/a` (the Winograd algorithms only where
    /// they have an estimate: the JIT's table, on 3×3 and 5×5 stride-1 convs).
    pub fn summary(&self) -> String {
        let parts: Vec<String> = ALGOS
            .iter()
            .filter(|&&a| {
                !matches!(a, ConvAlgo::Winograd2 | ConvAlgo::Winograd4) || self.get(a).is_finite()
            })
            .map(|&a| format!("{} {}", a.name(), fmt_seconds(self.get(a))))
            .collect();
        format!("est {}", parts.join(" "))
    }
}

/// Who decided a conv's algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decider {
    /// The cost model (the conv said `algo: auto`).
    Model,
    /// The program's explicit `algo:`.
    Program,
    /// `FNET_CONV_ALGO`.
    Env,
}

impl Decider {
    pub fn name(self) -> &'static str {
        match self {
            Decider::Model => "cost model",
            Decider::Program => "algo: in the program",
            Decider::Env => "FNET_CONV_ALGO",
        }
    }
}

/// The decision `choose-conv-algo` recorded for one conv (`Graph::conv_costs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvCost {
    pub shape: ConvShape,
    pub estimate: Estimate,
    pub chosen: ConvAlgo,
    pub decider: Decider,
    /// True when the kernel size is the FlexConv horizon bound, not a known crop.
    pub kernel_is_bound: bool,
}

impl ConvCost {
    /// The trailing IR comment of the conv line.
    pub fn ir_comment(&self) -> String {
        let by = match self.decider {
            Decider::Model => String::new(),
            d => format!(" (by {})", d.name()),
        };
        format!("{}{by}", self.estimate.summary())
    }
}

/// `1.23us`, `41.2ms`, `2.05s`: three significant digits, `n/a` for infinity.
pub fn fmt_seconds(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    let (v, unit) = if s >= 1.0 {
        (s, "s")
    } else if s >= 1e-3 {
        (s * 1e3, "ms")
    } else {
        (s * 1e6, "us")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// The cheapest entry of `ranked` that `allowed` lets through and that has a finite
/// estimate; ties go to the earlier.
pub fn cheapest<A: Copy>(ranked: &[(A, f64)], allowed: impl Fn(A) -> bool) -> Option<A> {
    ranked
        .iter()
        .filter(|(a, s)| s.is_finite() && allowed(*a))
        .fold(None, |best: Option<(A, f64)>, &(a, s)| match best {
            Some((_, b)) if b <= s => best,
            _ => Some((a, s)),
        })
        .map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheapest_finite_allowed_entry_wins() {
        let r = [("a", 3.0), ("b", 1.0), ("c", f64::INFINITY), ("d", 1.0)];
        assert_eq!(cheapest(&r, |_| true), Some("b"));
        assert_eq!(cheapest(&r, |a| a != "b"), Some("d"));
        assert_eq!(cheapest(&r, |a| a == "c"), None);
    }
}
