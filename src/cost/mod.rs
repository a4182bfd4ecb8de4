//! The analytic convolution cost model: for one conv it estimates the seconds that the
//! direct loop, im2col + GEMM and the FFT take on a backend, from a handful of work
//! counts (features) and per-backend constants fitted from measurements.
//!
//! Per algorithm the model is `seconds = overhead + Σ cᵢ·fᵢ`:
//!
//! | algorithm | f₁ | f₂ | f₃ | f₄ |
//! |---|---|---|---|---|
//! | direct | blocked-kernel multiply-adds (channels rounded up to the block, positions to the tile, padding taps included) | floats the blocked kernel moves (output, padded input, packed weights) | tiled-loop multiply-adds | tiled-loop axpys (row × column block × input channel × tap) |
//! | im2col | GEMM multiply-adds (padding zeros included) | column-matrix elements written | | |
//! | fft | transform flops, `2.5·N·log₂N` per real N-point transform | spectral complex MACs | 1D transform calls (row + column passes) | |
//!
//! The direct conv runs the register-blocked AVX2 kernel (`reference::direct_blocked`)
//! when a group has at least 2 output channels, else the tiled loop
//! (`reference::direct_tiled`); f₁, f₂ are zero for the one, f₃, f₄ for the other.
//! The rule is geometry only: the table assumes the AVX2+FMA CPU it was fitted on.
//!
//! The FFT counts `B·Ci` input, `Co·Ci` kernel and `B·Co` inverse transforms of the
//! `fft_len` sizes the reference FFT uses, and `B·Ci·Co·n_freq` spectral products. It
//! is only valid where the FFT path runs (stride 1, dilation 1, one group, causal 1D or
//! "same" 2D with odd kernels); elsewhere its estimate is infinite.
//!
//! The OpenCL backend has its own features (`opencl.rs`): its kernels are not the
//! reference's, and what a conv costs there depends on the device kind's register
//! tiles and launch overheads.
//!
//! Each backend's constants live in `src/cost/<backend>.json` ([`CostBackend`]),
//! written by `cargo run --release --example fit_cost -- --backend B` together with the
//! measured points (`<backend>_points.csv`). Everything here is plain arithmetic on
//! integers and the committed tables, so decisions are deterministic.

pub mod fit;
pub mod flops;
pub mod opencl;
pub mod points;

use crate::ir::op::{ConvAlgo, Padding};
use crate::reference::direct_blocked::block_channels;
use crate::reference::fft_conv::fft_len;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The column block of `reference::direct_tiled` (its inner loops' count is a feature).
const DIRECT_COLS: u64 = crate::reference::direct_tiled::COLS as u64;
/// The register tile and the smallest group of `reference::direct_blocked`.
const DIRECT_TILE: u64 = crate::reference::direct_blocked::TILE as u64;
const DIRECT_MIN_CHANNELS: u64 = crate::reference::direct_blocked::MIN_CHANNELS as u64;

/// The backend whose fitted constants decide: the reference interpreter, or OpenCL on
/// a CPU (PoCL) or a GPU. `fnetc run/bench --backend opencl` pick the OpenCL table of
/// the device's kind; `fnetc compile --cost-model` picks one by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostBackend {
    #[default]
    Reference,
    OpenclCpu,
    OpenclGpu,
}

impl CostBackend {
    pub const ALL: [CostBackend; 3] = [
        CostBackend::Reference,
        CostBackend::OpenclCpu,
        CostBackend::OpenclGpu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CostBackend::Reference => "reference",
            CostBackend::OpenclCpu => "opencl-cpu",
            CostBackend::OpenclGpu => "opencl-gpu",
        }
    }

    /// The OpenCL table for a device of this kind.
    pub fn opencl(is_gpu: bool) -> CostBackend {
        if is_gpu {
            CostBackend::OpenclGpu
        } else {
            CostBackend::OpenclCpu
        }
    }
}

impl std::str::FromStr for CostBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CostBackend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("expected one of reference, opencl-cpu, opencl-gpu, got `{s}`"))
    }
}

/// The algorithms the model compares, in tie-break order.
pub const ALGOS: [ConvAlgo; 3] = [ConvAlgo::Direct, ConvAlgo::Im2col, ConvAlgo::Fft];

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

    /// Whether every work count of every algorithm fits in a `u64`: the product of all
    /// sizes, padded input and kernel, with room for tile rounding and FFT padding.
    pub fn countable(&self) -> bool {
        let mut work = 4096.0 * self.batch.max(1) as f64 * self.ci.max(1) as f64;
        work *= self.co.max(1) as f64 * self.groups.max(1) as f64;
        for (i, &k) in self.kernel.iter().enumerate() {
            let d = self.dilation.get(i).copied().unwrap_or(1).max(1) as f64;
            let n = self.input.get(i).copied().unwrap_or(1) as f64;
            work *= 2.0 * (n + 2.0 * d * k as f64 + 1.0) * k.max(1) as f64 * d;
        }
        work < (1u64 << 62) as f64
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

    /// Whether the reference FFT path runs this conv (see `interp::conv_op`).
    pub fn fft_applicable(&self) -> bool {
        let plain = self.stride.iter().all(|&s| s == 1)
            && self.dilation.iter().all(|&d| d == 1)
            && self.groups == 1;
        plain
            && match (&self.padding, self.input.len()) {
                (Padding::Causal, 1) => true,
                (Padding::Same, 2) => self.kernel.iter().all(|k| k % 2 == 1),
                _ => false,
            }
    }

    /// The work counts of `algo` on `backend`; `None` when `algo` cannot run this
    /// conv there.
    pub fn features_on(&self, backend: CostBackend, algo: ConvAlgo) -> Option<Vec<f64>> {
        match backend {
            CostBackend::Reference => self.features(algo),
            CostBackend::OpenclCpu => opencl::features(self, algo, false),
            CostBackend::OpenclGpu => opencl::features(self, algo, true),
        }
    }

    /// The reference interpreter's work counts of `algo` (see the module table);
    /// `None` when `algo` cannot run this conv.
    pub fn features(&self, algo: ConvAlgo) -> Option<Vec<f64>> {
        let out = self.output()?;
        let plane: u64 = out.iter().product();
        let taps: u64 = self.kernel.iter().product();
        let cig = self.ci / self.groups.max(1);
        let b = self.batch as f64;
        let per_out = (self.co * plane * cig) as f64;
        match algo {
            ConvAlgo::Direct => {
                let cog = self.co / self.groups.max(1);
                if cog >= DIRECT_MIN_CHANNELS {
                    // The register-blocked kernel: whole tiles of TILE positions × a
                    // channel block, over every input channel and tap; plus the
                    // floats it moves (padded input, packed weights, output).
                    let blk = block_channels(cog as usize) as u64;
                    let ch = self.groups * cog.div_ceil(blk) * blk;
                    let tiles = plane.div_ceil(DIRECT_TILE) * DIRECT_TILE;
                    let padded: u64 = self
                        .input
                        .iter()
                        .zip(self.pads())
                        .map(|(&n, (lo, hi))| n + lo + hi)
                        .product();
                    Some(vec![
                        b * (ch * tiles * cig * taps) as f64,
                        b * (self.co * plane + self.ci * padded) as f64 + (ch * cig * taps) as f64,
                        0.0,
                        0.0,
                    ])
                } else {
                    // The tiled loop: one axpy per (output channel, row, column
                    // block, input channel, tap).
                    let rows: u64 = out[..out.len() - 1].iter().product();
                    let blocks = out[out.len() - 1].div_ceil(DIRECT_COLS);
                    Some(vec![
                        0.0,
                        0.0,
                        b * per_out * taps as f64,
                        b * (self.co * cig * taps * rows * blocks) as f64,
                    ])
                }
            }
            ConvAlgo::Im2col => Some(vec![
                b * per_out * taps as f64,
                b * (self.ci * taps * plane) as f64,
            ]),
            ConvAlgo::Fft => {
                if !self.fft_applicable() {
                    return None;
                }
                let (n, freq, calls) = self.fft_sizes();
                let transforms =
                    b * self.ci as f64 + (self.co * self.ci) as f64 + b * self.co as f64;
                let n = n as f64;
                Some(vec![
                    transforms * 2.5 * n * n.log2().max(1.0),
                    b * (self.ci * self.co * freq) as f64,
                    transforms * calls as f64,
                ])
            }
            ConvAlgo::Auto => None,
        }
    }

    /// Points of the padded FFT grid, complex bins of its half spectrum, and the 1D
    /// transform calls one 2D transform makes (a row pass and a column pass), as
    /// `reference::fft_conv` plans them (a causal kernel is odd-ified first; 1D runs
    /// as a 2D plane of height one, so each bin costs one length-1 column call).
    pub fn fft_sizes(&self) -> (u64, u64, u64) {
        let dims: Vec<u64> = self
            .input
            .iter()
            .zip(&self.kernel)
            .map(|(&l, &k)| {
                let k = if self.padding == Padding::Causal && k % 2 == 0 {
                    k + 1
                } else {
                    k
                };
                fft_len((l + k - 1) as usize) as u64
            })
            .collect();
        let last = *dims.last().unwrap_or(&1);
        let rest: u64 = dims[..dims.len().saturating_sub(1)].iter().product();
        let bins = last / 2 + 1;
        (dims.iter().product(), rest * bins, rest + bins)
    }
}

/// One algorithm's fitted constants: `seconds = overhead_s + Σ coef[i]·fᵢ`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlgoCost {
    pub overhead_s: f64,
    pub coef: Vec<f64>,
    /// Median relative error of the fit over its measured points.
    pub median_rel_err: f64,
}

impl AlgoCost {
    pub fn seconds(&self, f: &[f64]) -> f64 {
        self.overhead_s + self.coef.iter().zip(f).map(|(c, x)| c * x).sum::<f64>()
    }
}

/// A backend's constants, as committed in `src/cost/<backend>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostTable {
    pub backend: CostBackend,
    /// The command that regenerates the table.
    pub command: String,
    pub machine: String,
    pub points: usize,
    pub direct: AlgoCost,
    /// Absent where the backend has no im2col kernel (OpenCL runs such convs direct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im2col: Option<AlgoCost>,
    pub fft: AlgoCost,
}

impl CostTable {
    /// The reference backend's committed table.
    pub fn reference() -> &'static CostTable {
        CostTable::of(CostBackend::Reference)
    }

    /// `backend`'s committed table.
    pub fn of(backend: CostBackend) -> &'static CostTable {
        static TABLES: OnceLock<[CostTable; 3]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            [
                include_str!("reference.json"),
                include_str!("opencl-cpu.json"),
                include_str!("opencl-gpu.json"),
            ]
            .map(|json| serde_json::from_str(json).expect("src/cost/*.json are valid cost tables"))
        });
        let i = CostBackend::ALL
            .iter()
            .position(|&b| b == backend)
            .unwrap_or(0);
        &tables[i]
    }

    pub fn algo(&self, algo: ConvAlgo) -> Option<&AlgoCost> {
        match algo {
            ConvAlgo::Direct => Some(&self.direct),
            ConvAlgo::Im2col => self.im2col.as_ref(),
            ConvAlgo::Fft => Some(&self.fft),
            ConvAlgo::Auto => None,
        }
    }

    /// Estimated seconds of every algorithm, `f64::INFINITY` where one cannot run, or
    /// where the conv is too large for the work counts' integer arithmetic (no machine
    /// could run it; the memory check refuses it before a run).
    pub fn estimate(&self, shape: &ConvShape) -> Estimate {
        if !shape.countable() {
            return Estimate {
                direct: f64::INFINITY,
                im2col: f64::INFINITY,
                fft: f64::INFINITY,
            };
        }
        let est = |a: ConvAlgo| match (shape.features_on(self.backend, a), self.algo(a)) {
            (Some(f), Some(c)) => c.seconds(&f),
            _ => f64::INFINITY,
        };
        Estimate {
            direct: est(ConvAlgo::Direct),
            im2col: est(ConvAlgo::Im2col),
            fft: est(ConvAlgo::Fft),
        }
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

    /// `est direct 41.2ms im2col 9.81ms fft n/a`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = ALGOS
            .iter()
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
