//! Shape inference: the output type of every op from its operand types. The elaborator
//! calls it as it builds the graph (so errors point at the layer), and `verify` calls
//! it again after every rewrite.

use super::op::{ConvAttrs, Op, Padding, PoolSpec};
use super::types::{DType, Dim, TensorType};

/// Why an op does not accept its operands, phrased as expected vs got.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeError {
    pub message: String,
    pub hint: Option<String>,
}

pub(super) fn err<T>(message: impl Into<String>) -> Result<T, ShapeError> {
    Err(ShapeError {
        message: message.into(),
        hint: None,
    })
}

fn err_hint<T>(message: impl Into<String>, hint: impl Into<String>) -> Result<T, ShapeError> {
    Err(ShapeError {
        message: message.into(),
        hint: Some(hint.into()),
    })
}

pub(super) fn shape_str(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

pub(super) fn same_dtype(ts: &[&TensorType]) -> Result<DType, ShapeError> {
    let d = ts.first().map_or(DType::F32, |t| t.dtype);
    if let Some(t) = ts.iter().find(|t| t.dtype != d) {
        return err(format!("operands mix {} and {}", d.name(), t.dtype.name()));
    }
    Ok(d)
}

fn expect_rank(what: &str, t: &TensorType, ranks: &[usize]) -> Result<(), ShapeError> {
    if ranks.contains(&t.rank()) {
        return Ok(());
    }
    let want: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    err(format!(
        "{what} expects a tensor of rank {}, got {} {}",
        want.join(" or "),
        t.rank(),
        shape_str(&t.shape)
    ))
}

/// The operand count check is `verify`'s job; this assumes `operands.len()` fits.
pub fn infer(op: &Op, operands: &[&TensorType]) -> Result<TensorType, ShapeError> {
    let dtype = same_dtype(operands)?;
    let x = operands.first().copied();
    match op {
        Op::Input { .. } | Op::Param { .. } => err("inputs and parameters carry their own type"),
        Op::Const { value, .. } => Ok(TensorType::known(
            DType::F32,
            &value.shape.iter().map(|&d| d as u64).collect::<Vec<_>>(),
        )),
        Op::CoordGrid { horizon } => {
            let mut shape = vec![Dim::Known(horizon.len() as u64)];
            shape.extend(horizon.iter().map(|&k| Dim::Known(k)));
            Ok(TensorType::new(DType::F32, shape))
        }
        Op::MaskCrop { .. } => {
            let grid = operands[0];
            let shape = grid
                .shape
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, d) {
                    (0, d) => d.clone(),
                    (_, Dim::Known(k)) => Dim::Dyn { max: *k },
                    (_, d) => d.clone(),
                })
                .collect();
            Ok(TensorType::new(dtype, shape))
        }
        Op::GaussMask => Ok(TensorType::new(dtype, operands[0].shape[1..].to_vec())),
        Op::Magnet {
            out_channels,
            in_channels,
            ..
        } => {
            let mut shape = vec![Dim::Known(*out_channels), Dim::Known(*in_channels)];
            shape.extend(operands[0].shape[1..].iter().cloned());
            Ok(TensorType::new(dtype, shape))
        }
        Op::FlexKernel { .. } => super::flex_kernel::infer(op, operands),
        Op::MaskMul => {
            let (k, m) = (operands[0], operands[1]);
            if k.rank() < 2 || k.shape[2..] != m.shape[..] {
                return err(format!(
                    "mask {} does not match kernel {}",
                    shape_str(&m.shape),
                    shape_str(&k.shape)
                ));
            }
            Ok(k.clone())
        }
        Op::Scale { .. } | Op::Relu | Op::Gelu | Op::Dropout { .. } => {
            Ok(x.expect("unary op").clone())
        }
        Op::Conv(c) => conv(operands, c),
        Op::Linear { bias } => {
            let (x, w) = (operands[0], operands[1]);
            expect_rank("linear", x, &[2])?;
            if w.shape.len() != 2 || w.shape[1] != x.shape[1] {
                return err_hint(
                    format!(
                        "linear expects {} input features, got input {}",
                        w.shape.get(1).map_or("?".into(), |d| d.to_string()),
                        shape_str(&x.shape)
                    ),
                    "flatten or pool the input first (`flatten`, `global_avg_pool`)",
                );
            }
            if *bias && operands[2].shape != w.shape[..1] {
                return err("linear bias does not match the output features");
            }
            Ok(TensorType::new(
                dtype,
                vec![x.shape[0].clone(), w.shape[0].clone()],
            ))
        }
        Op::BatchNorm { .. } => {
            let x = operands[0];
            expect_rank("batchnorm", x, &[2, 3, 4])?;
            for p in &operands[1..] {
                if p.shape.len() != 1 || p.shape[0] != x.shape[1] {
                    return err(format!(
                        "batchnorm statistics {} do not match {} channels",
                        shape_str(&p.shape),
                        x.shape[1]
                    ));
                }
            }
            Ok(x.clone())
        }
        Op::Pool(spec) => pool(x.expect("pool operand"), spec),
        Op::Train(t) => super::train_ops::infer(t, operands),
        Op::LcFold | Op::BnFold { .. } | Op::FusedConv { .. } => {
            super::fold_ops::infer_fold(op, operands)
        }
        Op::Slot {
            active, pool: spec, ..
        } => {
            if *active {
                pool(operands[0], spec)
            } else {
                Ok(operands[0].clone())
            }
        }
        Op::GlobalAvgPool => {
            let x = operands[0];
            expect_rank("global_avg_pool", x, &[3, 4])?;
            Ok(TensorType::new(dtype, x.shape[..2].to_vec()))
        }
        Op::Flatten => {
            let x = operands[0];
            if x.rank() < 2 {
                return err(format!(
                    "flatten expects rank >= 2, got {}",
                    shape_str(&x.shape)
                ));
            }
            let mut n = 1u64;
            for d in &x.shape[1..] {
                let Some(v) = d.known() else {
                    return err_hint(
                        format!("flatten needs known sizes, got {}", shape_str(&x.shape)),
                        "give the input a concrete size, or use global_avg_pool",
                    );
                };
                n = n.checked_mul(v).ok_or_else(|| ShapeError {
                    message: "flattened size overflows".into(),
                    hint: None,
                })?;
            }
            Ok(TensorType::new(
                dtype,
                vec![x.shape[0].clone(), Dim::Known(n)],
            ))
        }
        Op::LastStep => {
            let x = operands[0];
            expect_rank("last", x, &[3])?;
            Ok(TensorType::new(dtype, x.shape[..2].to_vec()))
        }
        Op::Add | Op::Mul => {
            let (a, b) = (operands[0], operands[1]);
            if a.shape != b.shape {
                return err_hint(
                    format!(
                        "`{}` needs equal shapes, got {} and {}",
                        op.name(),
                        shape_str(&a.shape),
                        shape_str(&b.shape)
                    ),
                    "a residual branch that changes width or stride needs a shortcut, e.g. `shortcut(h, C, stride: 2)`",
                );
            }
            Ok(a.clone())
        }
        Op::Concat { axis } => {
            let first = operands[0];
            if *axis >= first.rank() {
                return err(format!(
                    "concat axis {axis} is out of range for {}",
                    shape_str(&first.shape)
                ));
            }
            let mut total = 0u64;
            for t in operands {
                let same_rest = t.rank() == first.rank()
                    && t.shape
                        .iter()
                        .zip(&first.shape)
                        .enumerate()
                        .all(|(i, (a, b))| i == *axis || a == b);
                if !same_rest {
                    return err(format!(
                        "concat needs equal shapes except on axis {axis}, got {} and {}",
                        shape_str(&first.shape),
                        shape_str(&t.shape)
                    ));
                }
                let Some(v) = t.shape[*axis].known() else {
                    return err("concat needs known sizes on the concatenated axis");
                };
                total += v;
            }
            let mut shape = first.shape.clone();
            shape[*axis] = Dim::Known(total);
            Ok(TensorType::new(dtype, shape))
        }
        Op::ShortcutA {
            stride,
            out_channels,
        } => {
            let x = operands[0];
            expect_rank("shortcut", x, &[3, 4])?;
            let c = x.shape[1].known().unwrap_or(0);
            if *out_channels < c || !(*out_channels - c).is_multiple_of(2) {
                return err(format!(
                    "option-A shortcut pads channels evenly on both sides: {c} -> {out_channels} is not possible"
                ));
            }
            let mut shape = vec![x.shape[0].clone(), Dim::Known(*out_channels)];
            for d in &x.shape[2..] {
                // x[..., ::s] keeps ceil(n/s) = floor((n − 1)/s) + 1 elements.
                shape.push(d.windowed(0, 1, *stride).ok_or_else(|| ShapeError {
                    message: "empty spatial size".into(),
                    hint: None,
                })?);
            }
            Ok(TensorType::new(dtype, shape))
        }
    }
}

pub(super) fn conv(operands: &[&TensorType], attrs: &ConvAttrs) -> Result<TensorType, ShapeError> {
    let ConvAttrs {
        stride,
        padding,
        dilation,
        groups,
        bias,
        ..
    } = attrs;
    let (groups, bias) = (*groups, *bias);
    let (x, w) = (operands[0], operands[1]);
    let spatial = w.rank().saturating_sub(2);
    expect_rank(
        if spatial == 1 { "conv1d" } else { "conv2d" },
        x,
        &[spatial + 2],
    )?;
    let (Some(cin), Some(wcin)) = (x.shape[1].known(), w.shape[1].known()) else {
        return err("convolution needs a known number of input channels");
    };
    if Some(cin) != wcin.checked_mul(groups) {
        return err_hint(
            format!(
                "input has {cin} channels but the weight expects {} ({} per group × {groups} groups)",
                wcin.saturating_mul(groups),
                wcin
            ),
            "check the previous layer's output channels",
        );
    }
    if bias && operands[2].shape != w.shape[..1] {
        return err("conv bias does not match the output channels");
    }
    let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
    for i in 0..spatial {
        let n = &x.shape[2 + i];
        let k = &w.shape[2 + i];
        let (s, d) = (stride[i], dilation[i]);
        let out =
            match (padding, k) {
                (Padding::Same | Padding::Causal, Dim::Dyn { .. }) if s == 1 => Some(n.clone()),
                (_, Dim::Dyn { .. }) => return err(
                    "a data-dependent kernel size needs `same` or `causal` padding and stride 1",
                ),
                (_, Dim::Sym(_)) => return err("kernel sizes must be known"),
                (p, Dim::Known(k)) => {
                    // Absurd sizes overflow; they cannot fit any input either.
                    let extent = d
                        .checked_mul(k.saturating_sub(1))
                        .and_then(|e| e.checked_add(1));
                    let total = match p {
                        Padding::Same | Padding::Causal => extent.map(|e| e - 1),
                        Padding::Explicit(pads) => pads[i].0.checked_add(pads[i].1),
                    };
                    match (extent, total) {
                        (Some(extent), Some(total)) => n.windowed(total, extent, s),
                        _ => None,
                    }
                }
            };
        match out {
            Some(o) => shape.push(o),
            None => {
                return err_hint(
                    format!(
                        "kernel {} (dilation {d}) does not fit input {}",
                        shape_str(&w.shape[2..]),
                        shape_str(&x.shape)
                    ),
                    "use `padding: same` or a smaller kernel",
                )
            }
        }
    }
    Ok(TensorType::new(x.dtype, shape))
}

pub(super) fn pool(x: &TensorType, spec: &PoolSpec) -> Result<TensorType, ShapeError> {
    let spatial = spec.kernel.len();
    expect_rank("pool", x, &[spatial + 2])?;
    let mut shape = x.shape[..2].to_vec();
    for i in 0..spatial {
        match x.shape[2 + i].windowed(2 * spec.padding[i], spec.kernel[i], spec.stride[i]) {
            Some(d) if d != Dim::Known(0) => shape.push(d),
            _ => {
                return err_hint(
                    format!(
                        "pool window {} does not fit input {}",
                        spec.kernel[i],
                        shape_str(&x.shape)
                    ),
                    "the feature map is already too small; remove a downsampling step",
                )
            }
        }
    }
    Ok(TensorType::new(x.dtype, shape))
}
