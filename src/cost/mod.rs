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
//! Each backend's constants live in `src/cost/<backend>.json` ([`CostTableId`]),
//! written by `cargo run --release --example fit_cost -- --backend B` together with the
//! measured points (`<backend>_points.csv`). Everything here is plain arithmetic on
//! integers and the committed tables, so decisions are deterministic.

pub mod fit;
pub mod flops;
pub mod jit;
pub mod jit_backward;
pub mod opencl;
pub mod points;
pub mod source;

pub use crate::ir::conv_cost::{
    cheapest, fmt_seconds, ConvCost, ConvShape, Decider, Estimate, ALGOS,
};
use crate::ir::op::{ConvAlgo, Padding};
use crate::kernel_ir::native::{JitConvData, JitConvFilter};
use crate::reference::direct_blocked::block_channels;
use crate::reference::fft_conv::fft_len;
pub use jit_backward::{BackwardCosts, BackwardEstimate};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The column block of `reference::direct_tiled` (its inner loops' count is a feature).
const DIRECT_COLS: u64 = crate::reference::direct_tiled::COLS as u64;
/// The register tile and the smallest group of `reference::direct_blocked`.
const DIRECT_TILE: u64 = crate::reference::direct_blocked::TILE as u64;
const DIRECT_MIN_CHANNELS: u64 = crate::reference::direct_blocked::MIN_CHANNELS as u64;

/// Which fitted table decides: the reference interpreter's, or OpenCL's on a CPU
/// (PoCL) or a GPU. This names a table, not a backend (that is
/// `crate::backend::BackendKind`): one backend has a table per device kind, and each
/// backend says which is its own (`crate::backend::Backend::cost_table`), which is
/// how `fnetc run/bench` choose; `fnetc compile --cost-model` picks one by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostTableId {
    #[default]
    Reference,
    OpenclCpu,
    OpenclGpu,
    /// The Cranelift JIT with its micro-kernels (`cost::jit`).
    Jit,
}

impl CostTableId {
    pub const ALL: [CostTableId; 4] = [
        CostTableId::Reference,
        CostTableId::OpenclCpu,
        CostTableId::OpenclGpu,
        CostTableId::Jit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CostTableId::Reference => "reference",
            CostTableId::OpenclCpu => "opencl-cpu",
            CostTableId::OpenclGpu => "opencl-gpu",
            CostTableId::Jit => "jit",
        }
    }

    /// What the table's estimates are for, as `--explain` says it.
    pub fn target(self) -> &'static str {
        match self {
            CostTableId::Reference => "the reference interpreter",
            CostTableId::OpenclCpu => "OpenCL on a CPU",
            CostTableId::OpenclGpu => "OpenCL on a GPU",
            CostTableId::Jit => "the CPU JIT",
        }
    }

    /// The OpenCL table for a device of this kind.
    pub fn opencl(is_gpu: bool) -> CostTableId {
        if is_gpu {
            CostTableId::OpenclGpu
        } else {
            CostTableId::OpenclCpu
        }
    }
}

impl std::str::FromStr for CostTableId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CostTableId::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                format!("expected one of reference, opencl-cpu, opencl-gpu, jit, got `{s}`")
            })
    }
}

/// A row of a cost table: a forward algorithm, or (the JIT's) a routine of a backward
/// conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostedAlgo {
    Forward(ConvAlgo),
    Filter(JitConvFilter),
    Data(JitConvData),
}

impl CostedAlgo {
    /// Every row a table may have.
    pub fn all() -> impl Iterator<Item = CostedAlgo> {
        ALGOS
            .into_iter()
            .map(CostedAlgo::Forward)
            .chain(JitConvFilter::ALL.map(CostedAlgo::Filter))
            .chain(JitConvData::ALL.map(CostedAlgo::Data))
    }

    /// `direct`, `filter_winograd4`, `data_col2im`: the points CSV's name.
    pub fn name(self) -> &'static str {
        match self {
            CostedAlgo::Forward(a) => a.name(),
            CostedAlgo::Filter(a) => match a {
                JitConvFilter::Im2col => "filter_im2col",
                JitConvFilter::Direct => "filter_direct",
                JitConvFilter::Winograd2 => "filter_winograd2",
                JitConvFilter::Winograd4 => "filter_winograd4",
            },
            CostedAlgo::Data(a) => match a {
                JitConvData::Col2im => "data_col2im",
                JitConvData::Direct => "data_direct",
                JitConvData::Im2col => "data_im2col",
                JitConvData::Winograd2 => "data_winograd2",
                JitConvData::Winograd4 => "data_winograd4",
            },
        }
    }

    pub fn from_name(name: &str) -> Option<CostedAlgo> {
        CostedAlgo::all().find(|r| r.name() == name)
    }
}

/// The backend-specific part of a conv's cost: where each algorithm runs and its work
/// counts (the shape itself is plain IR data, `crate::ir::conv_cost`).
impl ConvShape {
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
    pub fn features_on(&self, backend: CostTableId, algo: ConvAlgo) -> Option<Vec<f64>> {
        match backend {
            CostTableId::Reference => self.features(algo),
            CostTableId::OpenclCpu => opencl::features(self, algo, false),
            CostTableId::OpenclGpu => opencl::features(self, algo, true),
            CostTableId::Jit => jit::features(self, algo),
        }
    }

    /// The work counts of the row `row` on `backend`: the backward routines' only on
    /// the JIT.
    pub fn features_of(&self, backend: CostTableId, row: CostedAlgo) -> Option<Vec<f64>> {
        match row {
            CostedAlgo::Forward(a) => self.features_on(backend, a),
            CostedAlgo::Filter(a) if backend == CostTableId::Jit => {
                jit_backward::filter_features(self, a)
            }
            CostedAlgo::Data(a) if backend == CostTableId::Jit => {
                jit_backward::data_features(self, a)
            }
            _ => None,
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
            ConvAlgo::Winograd2 | ConvAlgo::Winograd4 | ConvAlgo::Auto => None,
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
    pub backend: CostTableId,
    /// The command that regenerates the table.
    pub command: String,
    pub machine: String,
    pub points: usize,
    pub direct: AlgoCost,
    /// Absent where the backend has no im2col kernel (OpenCL runs such convs direct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im2col: Option<AlgoCost>,
    pub fft: AlgoCost,
    /// Only the JIT has Winograd convs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winograd2: Option<AlgoCost>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winograd4: Option<AlgoCost>,
    /// Only the JIT's table has rows for the backward convs' routines
    /// (`jit_backward`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward: Option<BackwardCosts>,
}

impl CostTable {
    /// The reference backend's committed table.
    pub fn reference() -> &'static CostTable {
        CostTable::of(CostTableId::Reference)
    }

    /// `backend`'s committed table.
    pub fn of(backend: CostTableId) -> &'static CostTable {
        static TABLES: OnceLock<[CostTable; 4]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            [
                include_str!("reference.json"),
                include_str!("opencl-cpu.json"),
                include_str!("opencl-gpu.json"),
                include_str!("jit.json"),
            ]
            .map(|json| serde_json::from_str(json).expect("src/cost/*.json are valid cost tables"))
        });
        let i = CostTableId::ALL
            .iter()
            .position(|&b| b == backend)
            .unwrap_or(0);
        &tables[i]
    }

    /// The row of `row`, if the table has one.
    pub fn row(&self, row: CostedAlgo) -> Option<&AlgoCost> {
        let backward = self.backward.as_ref();
        match row {
            CostedAlgo::Forward(a) => self.algo(a),
            CostedAlgo::Filter(a) => backward?.filter.get(a.name()),
            CostedAlgo::Data(a) => backward?.data.get(a.name()),
        }
    }

    /// The backward routines' estimates for the forward conv `shape`; `None` where
    /// the table has no backward rows.
    pub fn estimate_backward(&self, shape: &ConvShape) -> Option<BackwardEstimate> {
        Some(self.backward.as_ref()?.estimate(shape))
    }

    pub fn algo(&self, algo: ConvAlgo) -> Option<&AlgoCost> {
        match algo {
            ConvAlgo::Direct => Some(&self.direct),
            ConvAlgo::Im2col => self.im2col.as_ref(),
            ConvAlgo::Fft => Some(&self.fft),
            ConvAlgo::Winograd2 => self.winograd2.as_ref(),
            ConvAlgo::Winograd4 => self.winograd4.as_ref(),
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
                winograd2: f64::INFINITY,
                winograd4: f64::INFINITY,
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
            winograd2: est(ConvAlgo::Winograd2),
            winograd4: est(ConvAlgo::Winograd4),
        }
    }
}
