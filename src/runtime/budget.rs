//! Memory estimates made before a command allocates anything, so that a model too large
//! for the machine is refused with an error naming its largest layer, instead of the
//! process aborting in the allocator halfway through.
//!
//! The estimate walks the graph once, in the interpreter's order, with each tensor at
//! its largest size: symbolic dimensions at the batch, data-dependent ones (a FlexConv
//! crop) at their bound. It adds the scratch the reference kernels take beside their
//! output (im2col columns, the padded input, MAGNet's hidden layers over the kernel
//! grid). It is an upper estimate of the same order as what a run allocates, not an
//! exact count; its purpose is to turn 100 GB requests into errors. Its cost is linear
//! in the number of nodes and independent of the tensor sizes.
//!
//! The limit is `FNET_MAX_MEMORY` when set (`16G`, `512M`, a byte count), else 90% of
//! the memory the kernel reports available (`MemAvailable` in /proc/meminfo), else
//! 16 GiB where that file does not exist.

use super::error::RunError;
use crate::diag::{Diagnostic, Span};
use crate::ir::graph::Graph;
use crate::ir::op::{Op, ParamRole};
use crate::ir::types::{DType, Dim, TensorType};
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;

/// The environment variable that overrides the memory limit.
pub const ENV: &str = "FNET_MAX_MEMORY";
/// The limit where the available memory cannot be read.
pub const FALLBACK_BYTES: u64 = 16 << 30;
/// `init` holds the parameters three times at its peak: the tensors, their encoded
/// bytes, and the serialised file image.
const INIT_COPIES: u64 = 3;

/// How many bytes a command may use, and where that number came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    pub origin: String,
}

impl Limit {
    pub fn new(bytes: u64, origin: impl Into<String>) -> Limit {
        Limit {
            bytes,
            origin: origin.into(),
        }
    }

    /// `FNET_MAX_MEMORY`, else 90% of `MemAvailable`, else `FALLBACK_BYTES`.
    pub fn from_env() -> Result<Limit, RunError> {
        if let Some(v) = std::env::var_os(ENV) {
            let text = v.to_string_lossy();
            return parse_size(&text)
                .map(|b| Limit::new(b, format!("{ENV}={}", text.trim())))
                .ok_or_else(|| {
                    RunError::new(format!("{ENV}=`{text}` is not a size")).hint(format!(
                        "give bytes, or a number with K, M, G or T (powers of 1024): {ENV}=16G"
                    ))
                });
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Ok(match mem_available(&meminfo) {
            Some(avail) => Limit::new(
                avail / 10 * 9,
                format!("90% of the {} of memory available", human(avail)),
            ),
            None => Limit::new(
                FALLBACK_BYTES,
                "the default, as the available memory is unknown",
            ),
        })
    }
}

/// `16G`, `512M`, `1.5T`, `4096`: bytes, or a number with a K/M/G/T suffix (powers of
/// 1024; a trailing `B` or `iB` is accepted).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s)
        .trim_end();
    let (number, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let value: f64 = number.trim().parse().ok()?;
    let bytes = value * (1u64 << shift) as f64;
    (value.is_finite() && value >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Bytes in binary units, three significant digits: `134 GiB`, `1.50 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// What the command is about to do, which decides what it allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `fnetc init`: every parameter and buffer, written to a file.
    Init,
    /// The passes without bound weights: they materialise frozen parameters only.
    Compile,
    /// A forward at this batch size: weights, the kernel-net evaluations, activations
    /// and scratch (`run`, `bench`, and `compile --weights`, which folds kernels).
    Run { batch: u64 },
}

impl Need {
    fn doing(self) -> String {
        match self {
            Need::Init => "initialising this model".to_string(),
            Need::Compile => "compiling this model".to_string(),
            Need::Run { batch } => format!("running this model at batch {batch}"),
        }
    }
}

/// The one node that takes the most memory, for the error.
#[derive(Clone, Debug, PartialEq)]
pub struct Largest {
    pub node: NodeIndex,
    pub name: String,
    /// The layer it belongs to: the name itself, or a parameter's layer.
    pub layer: String,
    pub span: Span,
    /// Its output and its scratch.
    pub bytes: u64,
    /// Its output alone.
    pub output_bytes: u64,
    /// The type it was sized at, e.g. `f32[100000000,6,28,28]`.
    pub shape: String,
}

/// The estimate of one command on one graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub need: Need,
    /// Parameters, buffers and constants.
    pub weights: u64,
    /// The peak of everything else alive at once (activations, kernels, scratch).
    pub working: u64,
    pub total: u64,
    pub largest: Option<Largest>,
}

/// Estimates what `need` allocates on `graph`.
pub fn estimate(graph: &Graph, need: Need) -> Estimate {
    let batch = match need {
        Need::Run { batch } => batch.max(1),
        _ => 1,
    };
    let order = graph.topo_order().unwrap_or_default();
    let mut weights = 0u64;
    let mut largest: Option<Largest> = None;
    let mut consider = |n: NodeIndex, with_scratch: u64| {
        if largest.as_ref().is_none_or(|l| with_scratch > l.bytes) {
            let node = graph.node(n);
            let layer = match node.op {
                Op::Param { .. } => node.name.rsplit_once('.').map_or(&*node.name, |p| p.0),
                _ => &node.name,
            };
            largest = Some(Largest {
                node: n,
                name: node.name.clone(),
                layer: layer.to_string(),
                span: node.span,
                bytes: with_scratch,
                output_bytes: bytes(&node.ty, batch),
                shape: sized(&node.ty, batch),
            });
        }
    };
    for &n in &order {
        let node = graph.node(n);
        let counted = match (&node.op, need) {
            (Op::Param { role, .. }, Need::Compile) => *role == ParamRole::Frozen,
            (Op::Param { .. } | Op::Const { .. }, _) => true,
            _ => false,
        };
        if counted {
            let b = bytes(&node.ty, batch);
            weights = weights.saturating_add(b);
            consider(n, b);
        }
    }
    let working = match need {
        Need::Run { .. } => {
            // The interpreter's order: a value lives until its last reader has run.
            let mut remaining: BTreeMap<NodeIndex, usize> =
                order.iter().map(|&n| (n, graph.users(n).len())).collect();
            let (mut live, mut peak) = (0u64, 0u64);
            for &n in &order {
                let node = graph.node(n);
                let out = bytes(&node.ty, batch);
                let step = out.saturating_add(scratch(graph, n, batch));
                if !matches!(node.op, Op::Param { .. } | Op::Const { .. }) {
                    consider(n, step);
                }
                peak = peak.max(live.saturating_add(step));
                live = live.saturating_add(out);
                let mut read = graph.operands(n);
                read.sort();
                read.dedup();
                for o in read {
                    let r = remaining.get_mut(&o).expect("every node is counted");
                    *r = r.saturating_sub(1);
                    if *r == 0 && !graph.outputs.contains(&o) {
                        live = live.saturating_sub(bytes(&graph.node(o).ty, batch));
                    }
                }
            }
            peak
        }
        Need::Init | Need::Compile => 0,
    };
    let weights = match need {
        Need::Init => weights.saturating_mul(INIT_COPIES),
        _ => weights,
    };
    Estimate {
        need,
        weights,
        working,
        total: weights.saturating_add(working),
        largest,
    }
}

/// Refuses `need` on `graph` when its estimate is over `limit`: the diagnostic points at
/// the largest layer and says what to change.
pub fn check(graph: &Graph, need: Need, limit: &Limit) -> Result<Estimate, Box<Diagnostic>> {
    let est = estimate(graph, need);
    if est.total <= limit.bytes {
        return Ok(est);
    }
    let mut d = Diagnostic::new(
        "E0701",
        format!(
            "{} needs about {}, more than the memory limit of {}",
            need.doing(),
            human(est.total),
            human(limit.bytes)
        ),
    );
    if let Some(l) = &est.largest {
        let what = if l.bytes > l.output_bytes {
            format!(
                "`{}` ({}) takes {} with the scratch its kernel needs",
                l.name,
                l.shape,
                human(l.bytes)
            )
        } else {
            format!("`{}` ({}) takes {}", l.name, l.shape, human(l.bytes))
        };
        d = d.label(l.span, what);
    }
    let parts = match need {
        Need::Init => format!(
            "parameters {} (held {INIT_COPIES} times while the file is written)",
            human(est.weights / INIT_COPIES)
        ),
        Need::Compile => format!("frozen parameters {}", human(est.weights)),
        Need::Run { .. } => format!(
            "weights {}, activations, kernels and scratch at their peak {}",
            human(est.weights),
            human(est.working)
        ),
    };
    d = d.note(parts).note(format!("the limit is {}", limit.origin));
    // A saturated estimate is beyond any machine: raising the limit would not help.
    let fix = if est.total == u64::MAX {
        "as no machine has that much memory".to_string()
    } else {
        format!(
            "or raise the limit, e.g. {ENV}={}G",
            est.total.div_ceil(1 << 30).saturating_add(1)
        )
    };
    let fits = match need {
        Need::Run { batch } if batch > 1 => fitting_batch(graph, batch, limit),
        _ => None,
    };
    let hint = match (need, fits) {
        (Need::Run { batch }, Some(fits)) if batch > 1 && fits < batch => {
            format!("run at most {fits} samples at once (a smaller --batch or --range), {fix}")
        }
        _ => match &est.largest {
            Some(l) => format!(
                "make `{}` smaller (fewer channels or features, a smaller kernel, horizon or input), {fix}",
                l.layer
            ),
            None => format!("make the model smaller, {fix}"),
        },
    };
    Err(Box::new(d.hint(hint)))
}

/// The largest batch up to `batch` whose run fits `limit`; `None` when not even batch 1
/// fits.
fn fitting_batch(graph: &Graph, batch: u64, limit: &Limit) -> Option<u64> {
    if estimate(graph, Need::Run { batch: 1 }).total > limit.bytes {
        return None;
    }
    // The peak step can move with the batch (per-sample scratch against batched
    // activations), so search rather than extrapolate; the estimate grows with it.
    let (mut lo, mut hi) = (1u64, batch);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if estimate(graph, Need::Run { batch: mid }).total <= limit.bytes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

fn elem(dtype: DType) -> u64 {
    match dtype {
        DType::F32 => 4,
        DType::F64 => 8,
    }
}

/// One dimension at `batch`: symbols take the batch, data-dependent sizes their bound.
fn dim(d: &Dim, batch: u64) -> u64 {
    match d {
        Dim::Known(k) => *k,
        Dim::Dyn { max } => *max,
        Dim::Sym(s) => {
            let v =
                (batch as i128 + s.offset as i128).div_euclid(s.div.max(1) as i128) + s.add as i128;
            v.clamp(1, u64::MAX as i128) as u64
        }
    }
}

fn numel(ty: &TensorType, batch: u64) -> u64 {
    ty.shape
        .iter()
        .fold(1u64, |acc, d| acc.saturating_mul(dim(d, batch)))
}

fn bytes(ty: &TensorType, batch: u64) -> u64 {
    numel(ty, batch).saturating_mul(elem(ty.dtype))
}

fn sized(ty: &TensorType, batch: u64) -> String {
    let dims: Vec<String> = ty.shape.iter().map(|d| dim(d, batch).to_string()).collect();
    format!("{}[{}]", ty.dtype.name(), dims.join(","))
}

/// What the reference kernel of node `n` allocates besides its output.
fn scratch(graph: &Graph, n: NodeIndex, batch: u64) -> u64 {
    let node = graph.node(n);
    let e = elem(node.ty.dtype);
    let operand = |i: usize| graph.operands(n).get(i).map(|&o| &graph.node(o).ty);
    // MAGNet keeps a few hidden layers over every grid point alive at once.
    let magnet = |hidden: u64, points: u64, d: u64| {
        hidden
            .saturating_mul(points)
            .saturating_mul(3)
            .saturating_add(d.saturating_mul(points))
            .saturating_mul(e)
    };
    match &node.op {
        Op::Magnet { hidden, .. } => match operand(0) {
            Some(grid) if grid.rank() > 1 => {
                let d = dim(&grid.shape[0], batch);
                magnet(*hidden, numel(grid, batch) / d.max(1), d)
            }
            _ => 0,
        },
        Op::FlexKernel {
            hidden, horizon, ..
        } => {
            let points = horizon.iter().fold(1u64, |a, &k| a.saturating_mul(k));
            magnet(*hidden, points, horizon.len() as u64)
        }
        Op::Conv { .. } | Op::FusedConv { .. } => {
            // im2col columns for one sample, [Cin/g·taps, output plane], and the padded
            // input the direct paths copy.
            let (Some(x), Some(w)) = (operand(0), operand(1)) else {
                return 0;
            };
            let co = w.shape.first().map_or(1, |d| dim(d, batch)).max(1);
            let rows = numel(w, batch) / co;
            let plane = node.ty.shape[2.min(node.ty.rank())..]
                .iter()
                .fold(1u64, |a, d| a.saturating_mul(dim(d, batch)));
            rows.saturating_mul(plane)
                .saturating_mul(e)
                .saturating_add(bytes(x, batch))
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("16G"), Some(16 << 30));
        assert_eq!(parse_size("16GiB"), Some(16 << 30));
        assert_eq!(parse_size("512 MB"), Some(512 << 20));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("1e30"), None);
    }

    #[test]
    fn mem_available_reads_kilobytes() {
        let info = "MemTotal:       24683784 kB\nMemAvailable:   22108088 kB\n";
        assert_eq!(mem_available(info), Some(22108088 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn human_sizes_read_naturally() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(144_000_000_000), "134 GiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
    }
}
