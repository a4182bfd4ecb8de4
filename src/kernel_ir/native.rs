//! Native plan steps: a call of a hand-written routine described as data, beside the
//! kernel launches of a plan.
//!
//! A backend that has such routines (the JIT: `jit::kernels`' im2col + sgemm and
//! Winograd convs) lets its [`Target`](super::plan::Target) allow them; the lowering
//! then emits a [`NativeOp`] step where a routine beats the generated kernel. The
//! kernel IR stays backend-neutral: this module names no backend, and a backend that
//! meets a native step it cannot run refuses the plan (the OpenCL executor does, and
//! its targets never allow them).
//!
//! A conv step's arguments are, in order: input `[n, ci, h, w]`, weight
//! `[co, ci/groups, kh, kw]` (the model's layout, no packing), the bias `[co]` when
//! `bias`, the residual (shaped like the output) when `residual`, and the output.

use crate::ir::conv_cost::{cheapest, ConvShape};
use crate::ir::op::ConvAlgo;
use crate::jit::kernels::isa::{Isa, IsaKind};

/// How the JIT runs a forward conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JitConv {
    /// The generated kernel (kernel IR, `conv::conv_kernel`): what covers every conv.
    Generated,
    /// The direct algorithm on sliding windows of the padded input, with register
    /// tiles (`jit::kernels::conv_direct`; stride 1).
    Direct,
    /// im2col + the sgemm micro-kernels.
    Im2col,
    /// Winograd F(2×2, r×r), r = 3 or 5.
    Winograd2,
    /// Winograd F(4×4, r×r), r = 3 or 5.
    Winograd4,
}

impl JitConv {
    pub const ALL: [JitConv; 5] = [
        JitConv::Generated,
        JitConv::Direct,
        JitConv::Im2col,
        JitConv::Winograd2,
        JitConv::Winograd4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JitConv::Generated => "generated",
            JitConv::Direct => "direct",
            JitConv::Im2col => "im2col",
            JitConv::Winograd2 => "winograd2",
            JitConv::Winograd4 => "winograd4",
        }
    }
}

/// Which native conv steps a target allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NativeConvs {
    /// None: every conv is a generated kernel (OpenCL).
    Off,
    /// Each conv runs the algorithm [`choose`] picks for it.
    Auto,
    /// Every conv the algorithm covers runs it; the others fall back as [`choose`]
    /// does (Winograd or direct → im2col; asymmetric padding: generated).
    Force(JitConv),
}

/// The environment variable that forces the JIT's conv algorithm.
pub const ENV: &str = "FNET_JIT_CONV";

impl NativeConvs {
    /// `FNET_JIT_CONV=auto|generated|direct|im2col|winograd2|winograd4` (unset or
    /// empty: auto).
    pub fn from_env() -> Result<NativeConvs, String> {
        match std::env::var(ENV) {
            Err(_) => Ok(NativeConvs::Auto),
            Ok(v) => NativeConvs::parse(&v),
        }
    }

    pub fn parse(v: &str) -> Result<NativeConvs, String> {
        match v.trim() {
            "" | "auto" => Ok(NativeConvs::Auto),
            name => JitConv::ALL
                .into_iter()
                .find(|a| a.name() == name)
                .map(NativeConvs::Force)
                .ok_or_else(|| {
                    format!(
                        "{ENV}={name}: expected one of auto, generated, direct, im2col, winograd2, \
                         winograd4"
                    )
                }),
        }
    }
}

/// A 2-D conv's geometry as the native routines take it (NCHW, symmetric padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl ConvGeometry {
    /// The geometry of the conv `shape` (1-D as one row); `None` with asymmetric
    /// padding, which the routines do not take, or more than two spatial axes.
    pub fn of_shape(shape: &ConvShape) -> Option<ConvGeometry> {
        let two = |v: &[u64]| -> Option<(usize, usize)> {
            match *v {
                [w] => Some((1, w as usize)),
                [h, w] => Some((h as usize, w as usize)),
                _ => None,
            }
        };
        let pads = shape.pads();
        if pads.iter().any(|(lo, hi)| lo != hi) {
            return None;
        }
        let lows: Vec<u64> = pads.iter().map(|&(lo, _)| lo).collect();
        let ((h, w), (kh, kw)) = (two(&shape.input)?, two(&shape.kernel)?);
        let stride = two(&shape.stride)?;
        let pad = match *lows {
            [w] => (0, w as usize),
            _ => two(&lows)?,
        };
        let dilation = two(&shape.dilation)?;
        Some(ConvGeometry {
            n: shape.batch as usize,
            ci: shape.ci as usize,
            h,
            w,
            co: shape.co as usize,
            kh,
            kw,
            stride,
            pad,
            dilation,
            groups: shape.groups as usize,
        })
    }

    pub fn out(&self) -> (usize, usize) {
        let dim = |size: usize, k: usize, s: usize, p: usize, d: usize| {
            (size + 2 * p).saturating_sub(d * (k - 1) + 1) / s + 1
        };
        (
            dim(self.h, self.kh, self.stride.0, self.pad.0, self.dilation.0),
            dim(self.w, self.kw, self.stride.1, self.pad.1, self.dilation.1),
        )
    }

    /// Whether Winograd F(m×m, r×r) covers it: 3×3 or 5×5, stride 1, dilation 1, one
    /// group.
    pub fn winograd_applies(&self) -> bool {
        self.kh == self.kw
            && matches!(self.kh, 3 | 5)
            && self.stride == (1, 1)
            && self.dilation == (1, 1)
            && self.groups == 1
    }

    /// Multiply-adds of the direct algorithm.
    pub fn macs(&self) -> u64 {
        let (ho, wo) = self.out();
        (self.n * self.co * (self.ci / self.groups.max(1)) * self.kh * self.kw * ho * wo) as u64
    }
}

/// The epilogue a native conv applies: `relu(sum + bias[co] + residual)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NativeEpilogue {
    pub bias: bool,
    pub residual: bool,
    pub relu: bool,
}

/// How the JIT runs the data gradient (backward to the input) of a conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JitConvData {
    /// `col = Wᵀ·dY` by sgemm, then col2im: any geometry.
    Col2im,
    /// The forward conv of `dY` with the flipped, transposed weight, by the
    /// sliding-window direct routine (stride 1, padding at most `d·(k−1)`).
    Direct,
    /// The same forward conv by im2col.
    Im2col,
    /// The same forward conv by Winograd F(2×2, r×r) (3×3 or 5×5, dilation 1, one
    /// group).
    Winograd2,
    /// The same by Winograd F(4×4, r×r).
    Winograd4,
}

impl JitConvData {
    pub const ALL: [JitConvData; 5] = [
        JitConvData::Col2im,
        JitConvData::Direct,
        JitConvData::Im2col,
        JitConvData::Winograd2,
        JitConvData::Winograd4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JitConvData::Col2im => "col2im",
            JitConvData::Direct => "direct",
            JitConvData::Im2col => "im2col",
            JitConvData::Winograd2 => "winograd2",
            JitConvData::Winograd4 => "winograd4",
        }
    }
}

/// The environment variable that forces the JIT's data-gradient algorithm:
/// `auto|generated|col2im|direct|im2col|winograd2|winograd4` (`generated`: the
/// generated kernels for both backward convs).
pub const BACKWARD_ENV: &str = "FNET_JIT_CONV_BWD";

/// What `FNET_JIT_CONV_BWD` asks for: `Ok(None)` for the generated kernels, `Ok(Some
/// (None))` for the rule of [`choose_data`], `Ok(Some(Some(a)))` to force `a`.
pub fn backward_from_env() -> Result<Option<Option<JitConvData>>, String> {
    let v = std::env::var(BACKWARD_ENV).unwrap_or_default();
    match v.trim() {
        "" | "auto" => Ok(Some(None)),
        "generated" => Ok(None),
        name => JitConvData::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .map(|a| Some(Some(a)))
            .ok_or_else(|| {
                format!(
                    "{BACKWARD_ENV}={name}: expected one of auto, generated, col2im, direct, \
                     im2col, winograd2, winograd4"
                )
            }),
    }
}

impl ConvGeometry {
    /// Whether the data gradient is a stride-1 forward conv: stride 1, padding at most
    /// `d·(k−1)` on each axis.
    pub fn data_as_forward(&self) -> bool {
        self.stride == (1, 1)
            && self.pad.0 <= self.dilation.0 * (self.kh.max(1) - 1)
            && self.pad.1 <= self.dilation.1 * (self.kw.max(1) - 1)
    }
}

/// The data-gradient algorithm of the conv `g`: `forced` when it covers the conv
/// (falling back Winograd → im2col → col2im, direct → col2im), else the cheapest
/// routine that covers it by `estimate` (the JIT cost table's backward rows,
/// `cost::jit_backward`), else the sliding-window direct conv where the gradient is a
/// forward conv (stride 1, padding at most `d·(k−1)`) and col2im where it is not.
pub fn choose_data(
    g: &ConvGeometry,
    forced: Option<JitConvData>,
    estimate: &[(JitConvData, f64)],
) -> JitConvData {
    let as_forward = g.data_as_forward();
    let wino = as_forward && g.winograd_applies();
    let covers = |a| match a {
        JitConvData::Col2im => true,
        JitConvData::Direct | JitConvData::Im2col => as_forward,
        JitConvData::Winograd2 | JitConvData::Winograd4 => wino,
    };
    let fallback = if as_forward {
        JitConvData::Direct
    } else {
        JitConvData::Col2im
    };
    match forced {
        Some(a) if covers(a) => a,
        Some(JitConvData::Winograd2 | JitConvData::Winograd4) if as_forward => JitConvData::Im2col,
        Some(_) => JitConvData::Col2im,
        None => cheapest(estimate, covers).unwrap_or(fallback),
    }
}

/// How the JIT runs the filter gradient (backward to the weight) of a conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JitConvFilter {
    /// Per image, the im2col unfolding of the input and one GEMM: any geometry.
    Im2col,
    /// Sliding windows over the padded input against the transposed output gradient,
    /// with no column matrix (3-wide kernels, stride 1, width dilation 1).
    Direct,
    /// Winograd F(2×2, r×r): `Gᵀ [Σ (A dY Aᵀ) ⊙ (Bᵀ d B)] G` (3×3 or 5×5, stride 1,
    /// dilation 1, one group).
    Winograd2,
    /// The same by F(4×4, r×r).
    Winograd4,
}

impl JitConvFilter {
    pub const ALL: [JitConvFilter; 4] = [
        JitConvFilter::Im2col,
        JitConvFilter::Direct,
        JitConvFilter::Winograd2,
        JitConvFilter::Winograd4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JitConvFilter::Im2col => "im2col",
            JitConvFilter::Direct => "direct",
            JitConvFilter::Winograd2 => "winograd2",
            JitConvFilter::Winograd4 => "winograd4",
        }
    }
}

/// The environment variable that forces the JIT's filter-gradient algorithm:
/// `auto|im2col|direct|winograd2|winograd4`.
pub const FILTER_ENV: &str = "FNET_JIT_CONV_FILTER";

/// What `FNET_JIT_CONV_FILTER` asks for: `Ok(None)` for the rule of [`choose_filter`].
pub fn filter_from_env() -> Result<Option<JitConvFilter>, String> {
    let v = std::env::var(FILTER_ENV).unwrap_or_default();
    match v.trim() {
        "" | "auto" => Ok(None),
        name => JitConvFilter::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "{FILTER_ENV}={name}: expected one of auto, im2col, direct, winograd2, \
                     winograd4"
                )
            }),
    }
}

/// Whether the JIT's kernels run the AVX-512 strip layout of the Winograd transforms
/// on this CPU (under `FNET_JIT_ISA`, if set): the Winograd filter gradient of a 3×3
/// conv pays only there.
pub fn strips_available() -> bool {
    Isa::from_env().is_ok_and(|isa| isa.kind() == IsaKind::Avx512)
}

/// The filter-gradient algorithm of the conv `g`: `forced` where it covers the conv,
/// else the cheapest routine that covers it by `estimate` (the JIT cost table's
/// backward rows, `cost::jit_backward`), else the sliding windows where they cover it
/// and im2col where they do not. Without the AVX-512 strip layout (`strips`,
/// [`strips_available`]) the cost choice leaves out Winograd for 3×3 kernels: the
/// table was fitted with the strips, and in the tiled layout (AVX2 and portable)
/// Winograd's gathers of the input and gradient tiles outweigh the multiplies it
/// saves (99–149 against the sliding windows' 168–176 GFLOP/s, `cargo bench --bench
/// jit_kernels -- dw`).
pub fn choose_filter(
    g: &ConvGeometry,
    forced: Option<JitConvFilter>,
    strips: bool,
    estimate: &[(JitConvFilter, f64)],
) -> JitConvFilter {
    let direct = g.stride == (1, 1) && g.kw == 3 && g.dilation.1 == 1;
    let covers = |a| match a {
        JitConvFilter::Im2col => true,
        JitConvFilter::Direct => direct,
        JitConvFilter::Winograd2 | JitConvFilter::Winograd4 => g.winograd_applies(),
    };
    let fallback = if direct {
        JitConvFilter::Direct
    } else {
        JitConvFilter::Im2col
    };
    match forced {
        Some(a) if covers(a) => a,
        _ => {
            let costed = |a| {
                let tiled_3x3 = g.kh == 3 && !strips;
                covers(a)
                    && !(tiled_3x3
                        && matches!(a, JitConvFilter::Winograd2 | JitConvFilter::Winograd4))
            };
            cheapest(estimate, costed).unwrap_or(fallback)
        }
    }
}

/// A routine call of a native step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NativeOp {
    /// A forward conv (`algo` is never `Generated`).
    Conv2d {
        geometry: ConvGeometry,
        algo: JitConv,
        epilogue: NativeEpilogue,
    },
    /// The filter gradient of a conv, `dW = Σ dY·col(x)ᵀ`. Arguments: `x`, `dy`, `dw`.
    ConvBackwardFilter {
        geometry: ConvGeometry,
        algo: JitConvFilter,
    },
    /// The data gradient of a conv. Arguments: `dy`, the weight, `dx`.
    ConvBackwardData {
        geometry: ConvGeometry,
        algo: JitConvData,
    },
    /// A linear layer, `y[b, o] = Σ_f x[b, f]·w[o, f] + bias[o]`, on sgemm. Arguments:
    /// `x`, `w`, `bias`, `y`.
    Linear {
        batch: usize,
        features: usize,
        outputs: usize,
    },
    /// A 2-D max or average pool over `planes` planes (the kernel IR's pool, its
    /// arithmetic in the same order). Arguments: `x`, `y`.
    Pool(PoolGeometry),
    /// ResNet's option-A shortcut (subsample, zero-pad the channels), or its backward
    /// (`backward`: scatter `dy` back, zeros elsewhere). Arguments: the input, the
    /// output (`dy`, `dx` for the backward).
    Shortcut(ShortcutGeometry),
    /// ReLU's backward over `n` elements, `dx = x ≤ 0 ? 0 : dy` (with `summed`:
    /// `dy + dy2`, the two gradients of a value read twice, added here instead of by
    /// a kernel of their own). Arguments: `x`, `dy`, (`dy2`), `dx`. The kernel IR's
    /// select has a scalar condition, so the generated kernel runs one element at a
    /// time with a branch each; this is vectorised.
    ReluBackward { n: usize, summed: bool },
    /// A batch norm's batch moments over `[outer, c, inner]`, in the layout of the
    /// generated `batch_norm::batch_moments`. Arguments: `x`, the moments `m`. The
    /// generated kernel sums a channel in one vector register, a chain of dependent
    /// adds.
    BatchMoments {
        outer: usize,
        c: usize,
        inner: usize,
    },
    /// `y[ch] = Σ x[·, ch, ·]` over `[outer, c, inner]` (a bias's or β's gradient), as
    /// the generated `backward_ops::channel_sum`. Arguments: `x`, `y`.
    ChannelSum {
        outer: usize,
        c: usize,
        inner: usize,
    },
    /// A batch norm backward's sums, in the layout of the generated
    /// `batch_norm::bn_sums`. Arguments: `x`, `dy`, the moments `m`, the sums `st`.
    /// `eps_bits`: `eps` as f32 bits (a native op is `Eq` and `Hash`).
    BatchNormSums {
        outer: usize,
        c: usize,
        inner: usize,
        eps_bits: u32,
    },
    /// A host step of a synchronised training plan (SyncBatchNorm): a batch norm's
    /// per-channel statistics combined over the data-parallel ranks
    /// (`runtime::sync_stats`). Unlike the convs, every executor runs it (OpenCL with a
    /// read and a write of the small buffers), whatever its target's `native`.
    SyncStats(SyncStats),
}

/// A [`NativeOp::Pool`]'s geometry: input and output plane sizes, window, stride and
/// zero padding (`[height, width]` each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    pub planes: usize,
    pub hw: [usize; 2],
    pub out: [usize; 2],
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub max: bool,
}

/// A [`NativeOp::Shortcut`]'s geometry: `n` images of `ci` planes of `hw`, `co`
/// output planes of `out = ⌈hw / stride⌉`, the input channels at `pad..pad + ci`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShortcutGeometry {
    pub n: usize,
    pub ci: usize,
    pub hw: [usize; 2],
    pub co: usize,
    pub out: [usize; 2],
    pub stride: [usize; 2],
    pub pad: usize,
    pub backward: bool,
}

/// Which statistics a [`NativeOp::SyncStats`] step combines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncStats {
    /// The batch moments of `c` channels of `count` values each. Argument: the moments
    /// buffer (`runtime::sync_stats::synced_moments_len(c)` long), in place.
    Moments { c: usize, count: usize },
    /// A batch norm backward's sums. Arguments: the moments buffer (combined), the
    /// sums `[4c]`, the latter in place.
    BackwardSums { c: usize },
}

impl NativeOp {
    /// Floating-point operations of the direct algorithm (as the generated kernel
    /// counts them), so that plans compare whatever runs them.
    pub fn flops(&self) -> u64 {
        match self {
            NativeOp::Conv2d { geometry, .. }
            | NativeOp::ConvBackwardFilter { geometry, .. }
            | NativeOp::ConvBackwardData { geometry, .. } => 2 * geometry.macs(),
            NativeOp::ReluBackward { n, summed } => (1 + u64::from(*summed)) * *n as u64,
            // As the generated kernels count them.
            NativeOp::ChannelSum { outer, c, inner } => (outer * c * inner) as u64,
            NativeOp::BatchMoments { outer, c, inner } => 3 * (outer * c * inner) as u64,
            NativeOp::BatchNormSums {
                outer, c, inner, ..
            } => 4 * (outer * c * inner) as u64,
            // Saturating: a pathological layer (a window of 2⁶³) must not overflow.
            NativeOp::Linear {
                batch,
                features,
                outputs,
            } => [2, *batch, *features, *outputs]
                .iter()
                .fold(1u64, |a, &b| a.saturating_mul(b as u64)),
            NativeOp::Pool(g) => [g.planes, g.out[0], g.out[1], g.k[0], g.k[1]]
                .iter()
                .fold(1u64, |a, &b| a.saturating_mul(b as u64)),
            NativeOp::SyncStats(_) | NativeOp::Shortcut(_) => 0,
        }
    }

    /// `conv2d_winograd2` and the like, for profiles.
    pub fn name(&self) -> String {
        match self {
            NativeOp::Conv2d { algo, .. } => format!("conv2d_{}", algo.name()),
            NativeOp::ConvBackwardFilter { algo, .. } => {
                format!("conv2d_bwd_filter_{}", algo.name())
            }
            NativeOp::ConvBackwardData { algo, .. } => format!("conv2d_bwd_data_{}", algo.name()),
            NativeOp::ReluBackward { .. } => "relu_backward".to_string(),
            NativeOp::BatchMoments { .. } => "bn_moments".to_string(),
            NativeOp::ChannelSum { .. } => "sum_to_channels".to_string(),
            NativeOp::BatchNormSums { .. } => "bn_sums".to_string(),
            NativeOp::Linear { .. } => "linear_gemm".to_string(),
            NativeOp::Pool(g) => if g.max { "maxpool" } else { "avgpool" }.to_string(),
            NativeOp::Shortcut(g) => if g.backward {
                "shortcut_backward"
            } else {
                "shortcut"
            }
            .to_string(),
            NativeOp::SyncStats(SyncStats::Moments { .. }) => "bn_sync_moments".to_string(),
            NativeOp::SyncStats(SyncStats::BackwardSums { .. }) => "bn_sync_sums".to_string(),
        }
    }
}

/// The algorithm a forward conv runs under `mode`. `Auto` follows the conv's `algo`
/// (`written`: what `choose-conv-algo` decided with the backend's cost table, or the
/// program's `algo:`); an `fft` conv is generated here (the lowering tries its FFT
/// path first). A conv nothing decided (`auto`: no pass ran) takes the sliding-window
/// direct routine (any stride, on the input's phases). Winograd, written or forced,
/// where it does not cover the conv falls back to im2col. Geometry the routines do
/// not take (asymmetric padding) is generated.
pub fn choose(mode: NativeConvs, g: &ConvGeometry, symmetric: bool, written: ConvAlgo) -> JitConv {
    let wanted = match mode {
        NativeConvs::Off => return JitConv::Generated,
        _ if !symmetric => return JitConv::Generated,
        NativeConvs::Force(a) => a,
        NativeConvs::Auto => match written {
            ConvAlgo::Fft => JitConv::Generated,
            ConvAlgo::Direct | ConvAlgo::Auto => JitConv::Direct,
            ConvAlgo::Im2col => JitConv::Im2col,
            ConvAlgo::Winograd2 => JitConv::Winograd2,
            ConvAlgo::Winograd4 => JitConv::Winograd4,
        },
    };
    match wanted {
        JitConv::Winograd2 | JitConv::Winograd4 if !g.winograd_applies() => JitConv::Im2col,
        a => a,
    }
}
