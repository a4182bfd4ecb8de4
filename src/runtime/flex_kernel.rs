//! The fused FlexConv kernel-synthesis op (`Op::FlexKernel`, made by the `fuse-mask`
//! pass): its evaluation (its type and printed form are `crate::ir::flex_kernel`'s).
//!
//! Evaluation repeats, operation for operation, what the unfused pieces compute in the
//! interpreter — `CoordGrid`, `MaskCrop`, `Magnet`, `GaussMask`, `MaskMul`, `Scale` — on
//! the reference kernels of `crate::reference::{mask, magnet}`, so the fused op gives
//! bit-identical values and the same crop. The crop is computed once, in the working
//! precision, from the mask parameters: centred axes keep `|x| < r` symmetrically,
//! causal axes keep `x > r` (docs/papers.md §1.4).

use super::error::RunError;
use super::interp::magnet_params;
use crate::ir::op::Op;
use crate::reference::magnet::magnet_kernel;
use crate::reference::mask::{crop_causal, crop_symmetric, gauss_roots, gaussian_mask, linspace};
use crate::reference::mask::{grid_from_axes, rel_positions_grid};
use crate::tensor::{Scalar, Tensor};

/// The coordinates kept on each axis: the full `linspace(−1, 1, k)` without a mask,
/// else the part where the Gaussian mask is above `threshold`.
pub fn crop_axes<T: Scalar>(
    horizon: &[u64],
    mask: Option<(&Tensor<T>, f64)>,
    causal: bool,
) -> Result<Vec<Vec<T>>, RunError> {
    let d = horizon.len();
    let mut axes = Vec::with_capacity(d);
    for (axis, &k) in horizon.iter().enumerate() {
        let coords: Vec<T> = linspace(-1.0, 1.0, k as usize);
        let Some((params, threshold)) = mask else {
            axes.push(coords);
            continue;
        };
        if params.shape != [d, 2] {
            return Err(RunError::new(format!(
                "mask parameters must be [{d}, 2], got {:?}",
                params.shape
            )));
        }
        let (mean, sigma) = (params.data[axis * 2], params.data[axis * 2 + 1]);
        let (r1, r2) = gauss_roots(<T as Scalar>::from_f64(threshold), mean, sigma);
        let range = if causal {
            crop_causal(&coords, if r1 < r2 { r1 } else { r2 })
        } else {
            let (a1, a2) = (r1.abs(), r2.abs());
            crop_symmetric(&coords, if a1 > a2 { a1 } else { a2 })
        };
        axes.push(coords[range].to_vec());
    }
    Ok(axes)
}

/// The crop size per axis for given mask parameters (compile time, f32 as at run time).
pub fn crop_extent(
    horizon: &[u64],
    mask: &Tensor<f32>,
    threshold: f64,
    causal: bool,
) -> Result<Vec<u64>, RunError> {
    Ok(crop_axes(horizon, Some((mask, threshold)), causal)?
        .iter()
        .map(|a| a.len() as u64)
        .collect())
}

/// Runs the fused op on its operands.
pub fn eval<T: Scalar>(op: &Op, a: &[&Tensor<T>]) -> Result<Tensor<T>, RunError> {
    let Op::FlexKernel {
        layers,
        in_channels,
        horizon,
        threshold,
        causal,
        scale,
        ..
    } = op
    else {
        return Err(RunError::new(format!(
            "flex_kernel evaluation called on {}",
            op.name()
        )));
    };
    let (mask, net) = match threshold {
        Some(t) => (Some((a[0], *t)), &a[1..]),
        None => (None, a),
    };
    let grid = match mask {
        Some(m) => grid_from_axes(&crop_axes(horizon, Some(m), *causal)?),
        None => rel_positions_grid(&horizon.iter().map(|&k| k as usize).collect::<Vec<_>>()),
    };
    let p = magnet_params(net, *layers as usize)?;
    let mut k = magnet_kernel(&p, &grid, *in_channels as usize, <T as Scalar>::one())?;
    if let Some((params, _)) = mask {
        let m = gaussian_mask(&grid, params)?;
        let n = m.numel().max(1);
        for row in k.data.chunks_mut(n) {
            for (v, &w) in row.iter_mut().zip(&m.data) {
                *v *= w;
            }
        }
    }
    if *scale != 1.0 {
        let s = <T as Scalar>::from_f64(*scale);
        for v in &mut k.data {
            *v *= s;
        }
    }
    Ok(k)
}

/// The kernel size the `mask_crop` node `crop` of `graph` keeps with the mask values in
/// `params`: each cropped axis's length, as the step that runs it decides it. `None`
/// when `crop` is not a `mask_crop` reading a parameter over a grid of known shape.
pub fn mask_crop_size<T: Scalar>(
    graph: &crate::ir::graph::Graph,
    crop: petgraph::stable_graph::NodeIndex,
    params: &super::ParamStore<T>,
) -> Result<Option<Vec<usize>>, RunError> {
    let Op::MaskCrop { threshold, causal } = graph.node(crop).op else {
        return Ok(None);
    };
    let ops = graph.operands(crop);
    let (Some(&grid), Some(&mask)) = (ops.first(), ops.get(1)) else {
        return Ok(None);
    };
    let Some(values) = params.get(&graph.node(mask).name) else {
        return Ok(None);
    };
    // The grid is [D, k1, …, kD]: its trailing dimensions are the horizon.
    let horizon: Option<Vec<u64>> = graph.node(grid).ty.shape[1..]
        .iter()
        .map(|d| d.known())
        .collect();
    let Some(horizon) = horizon else {
        return Ok(None);
    };
    let axes = crop_axes(&horizon, Some((values, threshold)), causal)?;
    Ok(Some(axes.iter().map(Vec::len).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_matches_the_paper_sizes() {
        let m = Tensor::from_vec(vec![2, 2], vec![0.0f32, 0.075, 0.0, 0.075]).unwrap();
        assert_eq!(crop_extent(&[33, 33], &m, 0.1, false).unwrap(), vec![5, 5]);
        let m = Tensor::from_vec(vec![1, 2], vec![1.0f32, 0.075]).unwrap();
        assert_eq!(crop_extent(&[784], &m, 0.1, true).unwrap(), vec![64]);
        assert!(crop_extent(&[33, 33], &m, 0.1, false).is_err());
    }
}
