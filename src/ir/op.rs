//! The closed set of graph operations. Every match over `Op` is exhaustive, so adding
//! an op forces shape inference, printing, arity checks (and later gradients and
//! lowering) to handle it.

use super::constant::ConstValue;
pub use super::fold_ops::{Epilogue, FoldOutput};
pub use super::train_ops::TrainOp;
use std::fmt;

/// How a parameter tensor takes part in training.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum ParamRole {
    /// Updated by the optimiser.
    Trainable,
    /// Seeded at initialisation and never updated or decayed; still passes input
    /// gradients (LC bases).
    Frozen,
    /// Trainable and tied: one tensor read by several layers, gradients accumulate
    /// (shared filter bases).
    Shared,
    /// State that is not learned, such as BatchNorm running statistics.
    Buffer,
}

impl ParamRole {
    pub fn name(self) -> &'static str {
        match self {
            ParamRole::Trainable => "trainable",
            ParamRole::Frozen => "frozen",
            ParamRole::Shared => "shared",
            ParamRole::Buffer => "buffer",
        }
    }
}

/// A fan mode for Kaiming initialisation.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq)]
pub enum FanMode {
    In,
    Out,
}

/// How a parameter is initialised. The numbers are resolved at elaboration, so the
/// initialiser needs no knowledge of the layer that owns the tensor.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Const(f64),
    /// U(−b, b) with b = 1/√fan_in: PyTorch's default for conv and linear weights
    /// (Kaiming-uniform with a = √5) and for their biases.
    KaimingUniform {
        fan_in: u64,
    },
    KaimingNormal {
        fan: u64,
        mode: FanMode,
        gain: f64,
    },
    Uniform {
        low: f64,
        high: f64,
    },
    Normal {
        mean: f64,
        std: f64,
    },
    /// Rows `part·rows .. (part+1)·rows` of one orthogonal matrix shared by `parts`
    /// tensors (double-shared bases split one [2s, c·k²] matrix).
    Orthogonal {
        part: u64,
        parts: u64,
    },
    Gamma {
        alpha: f64,
        beta: f64,
    },
    /// MAGNet's Gabor sine weights: default linear init, then each entry times
    /// `scale · γ` with γ the named tensor (input_scale/√(L+1) · γ).
    MagnetSine {
        fan_in: u64,
        scale: f64,
        gamma: String,
    },
    /// FlexConv mask parameters `[D, 2]` = (mean, sigma) per axis.
    GaussMask {
        mean: f64,
        sigma: f64,
    },
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Zeros => write!(f, "zeros"),
            Init::Ones => write!(f, "ones"),
            Init::Const(v) => write!(f, "const({v})"),
            Init::KaimingUniform { fan_in } => write!(f, "kaiming_uniform(fan_in={fan_in})"),
            Init::KaimingNormal { fan, mode, gain } => {
                let m = if *mode == FanMode::In { "in" } else { "out" };
                write!(f, "kaiming_normal(fan_{m}={fan}, gain={gain:.4})")
            }
            Init::Uniform { low, high } => write!(f, "uniform({low:.4}, {high:.4})"),
            Init::Normal { mean, std } => write!(f, "normal({mean}, {std})"),
            Init::Orthogonal { part, parts } => write!(f, "orthogonal(part {part} of {parts})"),
            Init::Gamma { alpha, beta } => write!(f, "gamma({alpha}, {beta})"),
            Init::MagnetSine {
                fan_in,
                scale,
                gamma,
            } => write!(
                f,
                "magnet_sine(fan_in={fan_in}, scale={scale}, gamma={gamma})"
            ),
            Init::GaussMask { mean, sigma } => write!(f, "gauss_mask(mean={mean}, sigma={sigma})"),
        }
    }
}

/// Convolution padding as the user wrote it; shape inference resolves it per dim.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub enum Padding {
    /// (low, high) per spatial dimension.
    Explicit(Vec<(u64, u64)>),
    /// `dilation·(k−1)/2` per side (low gets the floor), PyTorch's convention, so a
    /// stride-1 conv keeps the size. Resolved at run time for data-dependent kernels.
    Same,
    /// 1D only: `dilation·(k−1)` zeros on the left, none on the right.
    Causal,
}

impl fmt::Display for Padding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Padding::Same => write!(f, "same"),
            Padding::Causal => write!(f, "causal"),
            Padding::Explicit(p) => {
                let parts: Vec<String> = p.iter().map(|(a, b)| format!("{a}:{b}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
        }
    }
}

/// The convolution algorithm: chosen by the cost model unless the program overrides it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    Auto,
    Direct,
    Im2col,
    Fft,
    /// Winograd F(2×2, r×r) for 3×3 and 5×5 kernels (the JIT's micro-kernels; the
    /// interpreter runs it direct).
    Winograd2,
    /// Winograd F(4×4, r×r) (the same).
    Winograd4,
}

impl ConvAlgo {
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Auto => "auto",
            ConvAlgo::Direct => "direct",
            ConvAlgo::Im2col => "im2col",
            ConvAlgo::Fft => "fft",
            ConvAlgo::Winograd2 => "winograd2",
            ConvAlgo::Winograd4 => "winograd4",
        }
    }
}

/// The attributes of a convolution, shared by every op that runs one (`Conv`,
/// `FusedConv`, and the backward convolutions gradients will add), so a consumer reads
/// them in one place whatever the op.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    pub stride: Vec<u64>,
    pub padding: Padding,
    pub dilation: Vec<u64>,
    pub groups: u64,
    /// Whether a bias operand follows the weight.
    pub bias: bool,
    pub algo: ConvAlgo,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct PoolSpec {
    pub kind: PoolKind,
    pub kernel: Vec<u64>,
    pub stride: Vec<u64>,
    pub padding: Vec<u64>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub enum Op {
    /// A model input, in declaration order.
    Input {
        name: String,
    },
    /// A parameter or buffer tensor. Its stable name is the node's name.
    /// `seed` fixes this tensor's random stream; otherwise it derives from the model
    /// seed and the name.
    Param {
        role: ParamRole,
        init: Init,
        seed: Option<u64>,
    },
    /// A constant tensor computed at compile time (a materialised frozen parameter, a
    /// folded kernel). `origin` says where it came from, for the printer, which elides
    /// the data. Its type is the value's shape, all dims known, f32; a fold for an
    /// f64 run also keeps its f64 value (`ConstValue`).
    Const {
        value: ConstValue,
        origin: String,
    },
    /// `linspace(−1, 1, k)` per axis, meshed: `[D, k…]`. Constant.
    CoordGrid {
        horizon: Vec<u64>,
    },
    /// (grid, mask params) → the grid cropped where the Gaussian mask falls below the
    /// threshold: `[D, ≤k…]`. No gradient flows through the crop indices.
    MaskCrop {
        threshold: f64,
        causal: bool,
    },
    /// MAGNet kernel synthesis: (grid, per filter Wg, bg, γ, μ; per hidden U, c; V, v)
    /// → `[Cout, Cin, ≤k…]`.
    Magnet {
        layers: u64,
        hidden: u64,
        out_channels: u64,
        in_channels: u64,
    },
    /// Fused FlexConv kernel synthesis (the `fuse-mask` pass): coordinate grid, crop,
    /// MAGNet, Gaussian mask, product and sampling-rate scale in one op. Operands:
    /// (mask params `[D, 2]` if masked; then the MAGNet parameters in `Magnet`'s order,
    /// without the grid) → `[Cout, Cin, k…]`, `k ≤ horizon` per axis.
    FlexKernel {
        layers: u64,
        hidden: u64,
        out_channels: u64,
        in_channels: u64,
        horizon: Vec<u64>,
        /// The mask threshold; `None` for an unmasked flexconv (no crop, no mask).
        threshold: Option<f64>,
        causal: bool,
        scale: f64,
        /// The cropped size per axis when it is known at compile time (constant mask
        /// parameters); otherwise each axis is data-dependent, at most the horizon.
        extent: Option<Vec<u64>>,
    },
    /// (grid, mask params) → separable Gaussian mask values `[≤k…]`.
    GaussMask,
    /// (kernel `[Co, Ci, k…]`, mask `[k…]`) → masked kernel.
    MaskMul,
    /// Multiplication by a constant (the FlexConv sampling-rate norm).
    Scale {
        factor: f64,
    },
    /// (x, weight[, bias]) cross-correlation, PyTorch semantics. A newtype variant
    /// serialises as the struct variant it replaced, so `.fnc` files keep their form.
    Conv(ConvAttrs),
    /// (x `[B, F]`, weight `[O, F]`[, bias]) → `[B, O]`.
    Linear {
        bias: bool,
    },
    /// (x[, weight, bias][, running_mean, running_var]).
    BatchNorm {
        eps: f64,
        momentum: f64,
        affine: bool,
        running_stats: bool,
    },
    Relu,
    Gelu,
    Dropout {
        p: f64,
    },
    Pool(PoolSpec),
    /// `[B, C, …] → [B, C]`.
    GlobalAvgPool,
    /// `[B, …] → [B, ∏…]`.
    Flatten,
    /// `[B, C, T] → [B, C]`: the last time step.
    LastStep,
    Add,
    Mul,
    Concat {
        axis: usize,
    },
    /// Option-A shortcut: `x[:, :, ::s, ::s]` then zero channels padded evenly on both
    /// sides up to `out_channels`.
    ShortcutA {
        stride: u64,
        out_channels: u64,
    },
    /// A pooling slot of a searchable family: `pool` when `active`, identity otherwise.
    Slot {
        family: String,
        index: u64,
        active: bool,
        pool: PoolSpec,
    },
    /// (W `[J, …]`, C `[Co, J, 1…]`) → `[Co, …]`, `Σ_j C[o, j]·W[j, …]`: a k×k conv
    /// followed by a 1×1 conv folded into one kernel (SEEDS.md §2.7); on a `[J]` bias
    /// it gives `C·b`.
    LcFold,
    /// Eval-mode BatchNorm folded into the producing layer's weight or bias, as an op
    /// over the parameters: see `FoldOutput` for operands and formulas.
    BnFold {
        eps: f64,
        affine: bool,
        output: FoldOutput,
    },
    /// (x, weight[, bias], residuals…): a conv whose output then runs through
    /// `epilogue` in order; each `AddResidual` adds the next residual operand.
    FusedConv {
        /// Flattened: the serialised form keeps the six fields beside `epilogue`.
        #[serde(flatten)]
        conv: ConvAttrs,
        epilogue: Vec<Epilogue>,
    },
    /// A loss or backward op of a training graph (the autodiff pass).
    Train(TrainOp),
}

impl Op {
    /// Short lower-case name used by the printer and in diagnostics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const { .. } => "const",
            Op::CoordGrid { .. } => "coord_grid",
            Op::MaskCrop { .. } => "mask_crop",
            Op::Magnet { .. } => "magnet",
            Op::FlexKernel { .. } => "flex_kernel",
            Op::GaussMask => "gauss_mask",
            Op::MaskMul => "mask_mul",
            Op::Scale { .. } => "scale",
            Op::Conv(_) => "conv",
            Op::Linear { .. } => "linear",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Relu => "relu",
            Op::Gelu => "gelu",
            Op::Dropout { .. } => "dropout",
            Op::Pool(p) => match p.kind {
                PoolKind::Max => "maxpool",
                PoolKind::Avg => "avgpool",
            },
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Flatten => "flatten",
            Op::LastStep => "last",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Concat { .. } => "concat",
            Op::ShortcutA { .. } => "shortcut_a",
            Op::Slot { .. } => "slot",
            Op::LcFold => "lc_fold",
            Op::BnFold { .. } => "bn_fold",
            Op::FusedConv { .. } => "fused_conv",
            Op::Train(t) => t.name(),
        }
    }

    /// Number of operands the op takes, or `None` for variadic ops (at least two).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::CoordGrid { .. } => 0,
            Op::MaskCrop { .. } | Op::GaussMask | Op::MaskMul | Op::Add | Op::Mul => 2,
            Op::Magnet { layers, .. } => 1 + 4 * (*layers as usize + 1) + 2 * *layers as usize + 2,
            Op::FlexKernel {
                layers, threshold, ..
            } => {
                usize::from(threshold.is_some())
                    + 4 * (*layers as usize + 1)
                    + 2 * *layers as usize
                    + 2
            }
            Op::Conv(ConvAttrs { bias, .. }) | Op::Linear { bias } => 2 + usize::from(*bias),
            Op::BatchNorm {
                affine,
                running_stats,
                ..
            } => 1 + 2 * usize::from(*affine) + 2 * usize::from(*running_stats),
            Op::Scale { .. }
            | Op::Relu
            | Op::Gelu
            | Op::Dropout { .. }
            | Op::Pool(_)
            | Op::GlobalAvgPool
            | Op::Flatten
            | Op::LastStep
            | Op::ShortcutA { .. }
            | Op::Slot { .. } => 1,
            Op::Concat { .. } => return None,
            Op::LcFold => 2,
            Op::BnFold { affine, output, .. } => super::fold_ops::bn_fold_arity(*affine, *output),
            Op::FusedConv { conv, epilogue } => super::fold_ops::fused_arity(conv.bias, epilogue),
            Op::Train(t) => t.arity(),
        })
    }

    /// The convolution attributes of an op that runs a convolution. Every such op is
    /// listed here and in [`Op::conv_attrs_mut`]: `choose-conv-algo` decides for each.
    pub fn conv_attrs(&self) -> Option<&ConvAttrs> {
        match self {
            Op::Conv(c) | Op::FusedConv { conv: c, .. } => Some(c),
            _ => None,
        }
    }

    pub fn conv_attrs_mut(&mut self) -> Option<&mut ConvAttrs> {
        match self {
            Op::Conv(c) | Op::FusedConv { conv: c, .. } => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> ConvAttrs {
        ConvAttrs {
            stride: vec![2, 2],
            padding: Padding::Explicit(vec![(1, 1), (1, 1)]),
            dilation: vec![1, 1],
            groups: 1,
            bias: false,
            algo: ConvAlgo::Im2col,
        }
    }

    /// `.fnc` headers written before `ConvAttrs` existed hold these exact forms; they
    /// must still load, and new ones must look the same.
    #[test]
    fn conv_ops_keep_their_serialised_form() {
        let conv = r#"{"Conv":{"stride":[2,2],"padding":{"Explicit":[[1,1],[1,1]]},"dilation":[1,1],"groups":1,"bias":false,"algo":"Im2col"}}"#;
        let fused = r#"{"FusedConv":{"stride":[2,2],"padding":{"Explicit":[[1,1],[1,1]]},"dilation":[1,1],"groups":1,"bias":false,"algo":"Im2col","epilogue":["Relu","AddResidual"]}}"#;
        let fused_op = Op::FusedConv {
            conv: attrs(),
            epilogue: vec![Epilogue::Relu, Epilogue::AddResidual],
        };
        for (op, json) in [(Op::Conv(attrs()), conv), (fused_op, fused)] {
            assert_eq!(serde_json::to_string(&op).unwrap(), json);
            assert_eq!(serde_json::from_str::<Op>(json).unwrap(), op);
        }
    }

    #[test]
    fn conv_attrs_are_read_the_same_from_both_ops() {
        let mut fused = Op::FusedConv {
            conv: attrs(),
            epilogue: vec![],
        };
        assert_eq!(Op::Conv(attrs()).conv_attrs(), Some(&attrs()));
        fused.conv_attrs_mut().unwrap().algo = ConvAlgo::Direct;
        assert_eq!(fused.conv_attrs().unwrap().algo, ConvAlgo::Direct);
        assert_eq!(fused.arity(), Some(2));
        assert_eq!(Op::Relu.conv_attrs(), None);
    }
}
