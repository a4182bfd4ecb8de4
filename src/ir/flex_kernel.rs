//! The fused FlexConv kernel-synthesis op (`Op::FlexKernel`, made by the `fuse-mask`
//! pass): its output type and its printed attributes. The runtime's `flex_kernel`
//! module evaluates it; the rules that say what it produces live here, with the rest
//! of the IR's shape inference.

use super::op::Op;
use super::shape::ShapeError;
use super::types::{DType, Dim, TensorType};

fn list(v: &[u64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn err<T>(message: String) -> Result<T, ShapeError> {
    Err(ShapeError {
        message,
        hint: None,
    })
}

/// The output type: `[Cout, Cin, k…]` with `k` the known crop, the horizon (unmasked),
/// or data-dependent up to the horizon.
pub fn infer(op: &Op, operands: &[&TensorType]) -> Result<TensorType, ShapeError> {
    let Op::FlexKernel {
        out_channels,
        in_channels,
        horizon,
        threshold,
        extent,
        ..
    } = op
    else {
        return err(format!("flex_kernel inference called on {}", op.name()));
    };
    let d = horizon.len() as u64;
    if threshold.is_some() {
        let Some(mask) = operands.first() else {
            return err("flex_kernel needs mask parameters".into());
        };
        if mask.shape != [Dim::Known(d), Dim::Known(2)] {
            return err(format!(
                "flex_kernel mask parameters must be [{d}, 2], got {mask}"
            ));
        }
    }
    let mut shape = vec![Dim::Known(*out_channels), Dim::Known(*in_channels)];
    match (extent, threshold) {
        (Some(e), _) => {
            if e.len() != horizon.len() || e.iter().zip(horizon).any(|(k, h)| *k == 0 || k > h) {
                return err(format!(
                    "flex_kernel crop {} does not fit horizon {}",
                    list(e),
                    list(horizon)
                ));
            }
            shape.extend(e.iter().map(|&k| Dim::Known(k)));
        }
        (None, Some(_)) => shape.extend(horizon.iter().map(|&k| Dim::Dyn { max: k })),
        (None, None) => shape.extend(horizon.iter().map(|&k| Dim::Known(k))),
    }
    let dtype = operands.first().map_or(DType::F32, |t| t.dtype);
    Ok(TensorType::new(dtype, shape))
}

/// Printer attributes, in a fixed order.
pub fn attrs(op: &Op) -> String {
    let Op::FlexKernel {
        layers,
        hidden,
        out_channels,
        in_channels,
        horizon,
        threshold,
        causal,
        scale,
        extent,
    } = op
    else {
        return String::new();
    };
    let mask = match threshold {
        Some(t) => format!("threshold={t} causal={causal}"),
        None => "mask=none".to_string(),
    };
    let crop = match (extent, threshold) {
        (Some(e), _) => list(e),
        (None, Some(_)) => "dynamic".to_string(),
        (None, None) => "none".to_string(),
    };
    format!(
        "layers={layers} hidden={hidden} out={out_channels} in={in_channels} horizon={} {mask} scale={scale} crop={crop}",
        list(horizon)
    )
}
