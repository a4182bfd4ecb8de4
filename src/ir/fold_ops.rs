//! The ops the folding passes introduce (`fold-bases`, `fuse-epilogue`): kernel
//! synthesis over parameters (`lc_fold`, `bn_fold`) and the conv with a fused
//! epilogue. Shape inference and printing for them live here, so the central
//! matches in `shape.rs` and `print.rs` only dispatch.

use super::op::Op;
use super::shape::{infer, ShapeError};
use super::types::{Dim, TensorType};

/// Which tensor a `bn_fold` produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FoldOutput {
    /// `(W, [γ], var) → W[o, …]·a[o]` with `a = γ/√(var + eps)` (γ = 1 without affine).
    Weight,
    /// `([b], [γ, β], μ, var) → β + a·(b − μ)` (b = 0 without a bias, β = 0 without
    /// affine).
    Bias { conv_bias: bool },
}

/// One step of a fused conv's epilogue, applied in order to the conv's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Epilogue {
    Relu,
    /// Adds the next residual operand (the operands after x, weight and bias, in order).
    AddResidual,
}

impl Epilogue {
    pub fn name(self) -> &'static str {
        match self {
            Epilogue::Relu => "relu",
            Epilogue::AddResidual => "add",
        }
    }
}

/// Operand count of `bn_fold`.
pub fn bn_fold_arity(affine: bool, output: FoldOutput) -> usize {
    let aff = usize::from(affine);
    match output {
        FoldOutput::Weight => 2 + aff,
        FoldOutput::Bias { conv_bias } => usize::from(conv_bias) + 2 * aff + 2,
    }
}

/// The plain conv a fused conv starts with, and its epilogue. `None` for other ops.
pub fn split_fused(op: &Op) -> Option<(Op, &[Epilogue])> {
    match op {
        Op::FusedConv { conv, epilogue } => Some((Op::Conv(conv.clone()), epilogue)),
        _ => None,
    }
}

/// Operand count of a fused conv: x, weight, [bias], one per residual add.
pub fn fused_arity(bias: bool, epilogue: &[Epilogue]) -> usize {
    2 + usize::from(bias)
        + epilogue
            .iter()
            .filter(|e| **e == Epilogue::AddResidual)
            .count()
}

fn shape_err<T>(message: String) -> Result<T, ShapeError> {
    Err(ShapeError {
        message,
        hint: None,
    })
}

fn per_channel(what: &str, t: &TensorType, channels: &Dim) -> Result<(), ShapeError> {
    if t.rank() != 1 || t.shape[0] != *channels {
        return shape_err(format!(
            "{what}: statistics {t} do not match {channels} channels"
        ));
    }
    Ok(())
}

/// Shape inference for `lc_fold`, `bn_fold` and `fused_conv`.
pub fn infer_fold(op: &Op, operands: &[&TensorType]) -> Result<TensorType, ShapeError> {
    match op {
        Op::LcFold => {
            let (w, c) = (operands[0], operands[1]);
            let trailing_ones = c.shape.iter().skip(2).all(|d| *d == Dim::Known(1));
            if c.rank() < 2 || !trailing_ones || w.rank() < 1 || c.shape[1] != w.shape[0] {
                return shape_err(format!(
                    "lc_fold mixes the leading axis of {w} with coefficients [Co, {}, 1…], got {c}",
                    w.shape.first().map_or("?".into(), |d| d.to_string())
                ));
            }
            let mut shape = vec![c.shape[0].clone()];
            shape.extend(w.shape[1..].iter().cloned());
            Ok(TensorType::new(w.dtype, shape))
        }
        Op::BnFold { output, .. } => match output {
            FoldOutput::Weight => {
                let w = operands[0];
                if w.rank() < 1 {
                    return shape_err("bn_fold needs a weight with an output axis".into());
                }
                for p in &operands[1..] {
                    per_channel("bn_fold", p, &w.shape[0])?;
                }
                Ok(w.clone())
            }
            FoldOutput::Bias { .. } => {
                let first = operands[0];
                for p in operands {
                    per_channel("bn_fold", p, &first.shape[0])?;
                }
                Ok(first.clone())
            }
        },
        Op::FusedConv { conv: attrs, .. } => {
            let (conv, _) = split_fused(op).expect("fused conv");
            let n = 2 + usize::from(attrs.bias);
            let y = infer(&conv, &operands[..n])?;
            for r in &operands[n..] {
                if r.shape != y.shape {
                    return shape_err(format!(
                        "fused residual {r} does not match the conv output {y}"
                    ));
                }
            }
            Ok(y)
        }
        _ => shape_err(format!("`{}` is not a fold op", op.name())),
    }
}

/// Printed attributes of the fold ops.
pub fn fold_attrs(op: &Op) -> String {
    match op {
        Op::BnFold {
            eps,
            affine,
            output,
        } => {
            let out = match output {
                FoldOutput::Weight => "weight".to_string(),
                FoldOutput::Bias { conv_bias } => format!("bias conv_bias={conv_bias}"),
            };
            format!("eps={eps} affine={affine} output={out}")
        }
        Op::FusedConv { epilogue, .. } => {
            let (conv, _) = split_fused(op).expect("fused conv");
            let steps: Vec<&str> = epilogue.iter().map(|e| e.name()).collect();
            format!(
                "{} epilogue=[{}]",
                super::print::op_attrs(&conv),
                steps.join(",")
            )
        }
        _ => String::new(),
    }
}
