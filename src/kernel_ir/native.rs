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

use crate::ir::op::ConvAlgo;
use crate::jit::kernels::isa::{Isa, IsaKind};
use crate::jit::kernels::winograd_strip::{slots_per_band, strips_pay};

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
/// (falling back Winograd → im2col → col2im, direct → col2im), else the rule: a conv
/// whose gradient is a forward conv (the same spatial size, its channels swapped)
/// takes the forward's algorithm where the cost table picked im2col or Winograd for
/// it (`forward`), the sliding-window direct conv otherwise; every other conv
/// (strided, or padded past `d·(k−1)`) takes col2im.
pub fn choose_data(
    g: &ConvGeometry,
    forced: Option<JitConvData>,
    forward: ConvAlgo,
) -> JitConvData {
    let as_forward = g.data_as_forward();
    let wino = as_forward && g.winograd_applies();
    // A data gradient's filter (the flipped weight) changes every step, so Winograd
    // transforms it in every run; with the strip layout it still pays: ResNet-20's
    // 15 data gradients at batch 64 took 20.8–21.2 ms by F(4×4) against 27.7 ms
    // direct (`FNET_JIT_CONV_BWD`, two interleaved pairs of `jit_profile --training`;
    // before the strips F(4×4) was 11.7 against 5.5 ms on the 64-channel stage alone).
    let rule = match forward {
        ConvAlgo::Im2col => JitConvData::Im2col,
        ConvAlgo::Winograd2 if wino => JitConvData::Winograd2,
        ConvAlgo::Winograd4 if wino => JitConvData::Winograd4,
        _ => JitConvData::Direct,
    };
    match forced.unwrap_or(rule) {
        _ if !as_forward => JitConvData::Col2im,
        JitConvData::Winograd2 | JitConvData::Winograd4 if !wino => JitConvData::Im2col,
        a => a,
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

/// F(2×2) tiles' worth of outputs below which a 3×3 conv's filter gradient keeps the
/// sliding windows: each
/// Winograd one ends with a fixed cost (per-thread sums of `α²·co·ci`, their
/// reduction and the transform back), which a few tiles do not pay for (batch 8 to
/// 16 of ResNet-20's 32- and 64-channel stages, 256–512 tiles: 81–141 against the
/// windows' 95–161 GFLOP/s; 1024 and more won).
const WINOGRAD_FILTER_MIN_TILES: usize = 1024;

/// The filter-gradient algorithm of the conv `g`: `forced` where it covers the conv
/// (Winograd or direct fall back to the rule where they do not), else the rule, from
/// `cargo bench --bench jit_kernels -- dw N C H W reps [K]` (effective GFLOP/s on
/// 2 threads) and `jit_profile --training`:
/// - 3×3 at stride 1 (one group, no dilation) where `strips` (the AVX-512 strip
///   layout, [`strips_available`]) covers the tiles and the outputs fill at least
///   [`WINOGRAD_FILTER_MIN_TILES`] F(2×2) tiles: F(4×4) where its strips pay, else
///   F(2×2). F(4×4) took 16-wide and 8-wide outputs too once the strips were filled
///   once a chunk and the chunks held 256 tiles: `dw` at batch 64, 32 channels 16×16
///   F(2×2) 255–259 against F(4×4) 343–347 GFLOP/s, 64 channels 8×8 250–255 against
///   309–324; ResNet-20's training step (`jit_profile --training`, five interleaved
///   pairs) had its filter gradients at 19.1 → 17.0 ms at batch 64 and 1.33 → 0.97
///   ms at batch 8;
/// - other 3-wide kernels at stride 1 and width dilation 1: sliding windows (in the
///   tiled layout, AVX2 and portable, Winograd's gathers of the input and gradient
///   tiles outweigh the multiplies it saves: 99–149 against 168–176 GFLOP/s);
/// - 5×5 (stride 1, dilation 1, one group): F(4×4, 5×5) where the output is at least
///   16 wide and high, F(2×2, 5×5) below (FlexNet-7's convs at batch 8: 156–177
///   against im2col's 95–132 on 16- and 32-wide maps, 74 against 51 on 8-wide ones;
///   its training step's filter gradients 37.2 → 19.3 ms);
/// - im2col for the rest.
pub fn choose_filter(
    g: &ConvGeometry,
    forced: Option<JitConvFilter>,
    strips: bool,
) -> JitConvFilter {
    let direct = g.stride == (1, 1) && g.kw == 3 && g.dilation.1 == 1;
    let wino = g.winograd_applies();
    let (ho, wo) = g.out();
    let tiles = |m: usize| g.n * ho.div_ceil(m) * wo.div_ceil(m);
    // The threshold counts F(2×2)'s tiles, a fixed amount of output, for both.
    let in_strips = |m: usize| {
        let alpha = m + g.kw - 1;
        let slots = slots_per_band(g.w, g.pad.1, wo, m, alpha);
        strips && strips_pay(slots, wo.div_ceil(m)) && tiles(2) >= WINOGRAD_FILTER_MIN_TILES
    };
    let rule = match g.kh {
        5 if wino && ho.min(wo) >= 16 => JitConvFilter::Winograd4,
        5 if wino => JitConvFilter::Winograd2,
        3 if wino && in_strips(4) => JitConvFilter::Winograd4,
        3 if wino && in_strips(2) => JitConvFilter::Winograd2,
        _ if direct => JitConvFilter::Direct,
        _ => JitConvFilter::Im2col,
    };
    match forced {
        Some(JitConvFilter::Im2col) => JitConvFilter::Im2col,
        Some(JitConvFilter::Direct) if direct => JitConvFilter::Direct,
        Some(a @ (JitConvFilter::Winograd2 | JitConvFilter::Winograd4)) if wino => a,
        _ => rule,
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
