//! Pure data-movement ops on `[B, C, …]` tensors: channel concat, channel
//! zero-padding, strided spatial subsampling and last-timestep selection.

use crate::tensor::{Scalar, ShapeError, Tensor};

/// Concatenates along the channel axis (dim 1); all other dims must agree.
pub fn concat_channels<T: Scalar>(parts: &[&Tensor<T>]) -> Result<Tensor<T>, ShapeError> {
    let first = parts
        .first()
        .ok_or_else(|| ShapeError::new("concat", "at least one tensor", "none"))?;
    if first.ndim() < 2 {
        return Err(ShapeError::new(
            "concat",
            "[B, C, ...]",
            format!("{:?}", first.shape),
        ));
    }
    for p in parts {
        if p.ndim() != first.ndim()
            || p.shape[0] != first.shape[0]
            || p.shape[2..] != first.shape[2..]
        {
            return Err(ShapeError::new(
                "concat",
                format!("[{}, *, {:?}]", first.shape[0], &first.shape[2..]),
                format!("{:?}", p.shape),
            ));
        }
    }
    let b = first.shape[0];
    let s: usize = first.shape[2..].iter().product();
    let c: usize = parts.iter().map(|p| p.shape[1]).sum();
    let mut data = Vec::with_capacity(b * c * s);
    for bi in 0..b {
        for p in parts {
            let n = p.shape[1] * s;
            data.extend_from_slice(&p.data[bi * n..(bi + 1) * n]);
        }
    }
    let mut shape = first.shape.clone();
    shape[1] = c;
    Tensor::from_vec(shape, data)
}

/// Adds `lo` zero channels before and `hi` after (`F.pad(x, (…, lo, hi))`).
pub fn pad_channels<T: Scalar>(
    x: &Tensor<T>,
    lo: usize,
    hi: usize,
) -> Result<Tensor<T>, ShapeError> {
    if x.ndim() < 2 {
        return Err(ShapeError::new(
            "pad channels",
            "[B, C, ...]",
            format!("{:?}", x.shape),
        ));
    }
    let mut shape = x.shape.clone();
    shape[1] = lo + x.shape[1] + hi;
    let zeros = Tensor::zeros([&[x.shape[0], lo], &x.shape[2..]].concat());
    let zeros_hi = Tensor::zeros([&[x.shape[0], hi], &x.shape[2..]].concat());
    concat_channels(&[&zeros, x, &zeros_hi])
}

/// `x[:, :, ::s0, ::s1]` for `[B, C, H, W]`: keeps rows and columns
/// `0, s, 2s, …`, so the output is `ceil(H/s)` high.
pub fn subsample2d<T: Scalar>(x: &Tensor<T>, stride: [usize; 2]) -> Result<Tensor<T>, ShapeError> {
    x.expect_rank(4, "subsample input [B, C, H, W]")?;
    if stride.contains(&0) {
        return Err(ShapeError::new(
            "subsample",
            "strides >= 1",
            format!("{stride:?}"),
        ));
    }
    let (bc, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3]);
    let (ho, wo) = (h.div_ceil(stride[0]), w.div_ceil(stride[1]));
    let mut data = Vec::with_capacity(bc * ho * wo);
    for plane in 0..bc {
        for oy in 0..ho {
            for ox in 0..wo {
                data.push(x.data[(plane * h + oy * stride[0]) * w + ox * stride[1]]);
            }
        }
    }
    Tensor::from_vec(vec![x.shape[0], x.shape[1], ho, wo], data)
}

/// `x[:, :, -1]` for a sequence `[B, C, L]` → `[B, C]` (TCN classifier head).
pub fn last_timestep<T: Scalar>(x: &Tensor<T>) -> Result<Tensor<T>, ShapeError> {
    x.expect_rank(3, "last timestep input [B, C, L]")?;
    let l = x.shape[2];
    if l == 0 {
        return Err(ShapeError::new("last timestep", "L >= 1", "L = 0"));
    }
    let data = x.data.chunks(l).map(|c| c[l - 1]).collect();
    Tensor::from_vec(x.shape[..2].to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> Tensor<f64> {
        let n = shape.iter().product::<usize>();
        Tensor::from_vec(shape.to_vec(), (0..n).map(|v| v as f64).collect()).unwrap()
    }

    #[test]
    fn concat_interleaves_per_batch() {
        let a = t(&[2, 1, 2]);
        let b = t(&[2, 2, 2]).map(|v| v + 100.0);
        let y = concat_channels(&[&a, &b]).unwrap();
        assert_eq!(y.shape, vec![2, 3, 2]);
        assert_eq!(y.data[..6], [0., 1., 100., 101., 102., 103.]);
        assert_eq!(y.data[6..8], [2., 3.]);
        assert!(concat_channels(&[&a, &t(&[2, 1, 3])]).is_err());
    }

    #[test]
    fn pad_subsample_last() {
        let y = pad_channels(&t(&[1, 1, 2]), 1, 2).unwrap();
        assert_eq!(y.data, vec![0., 0., 0., 1., 0., 0., 0., 0.]);
        let s = subsample2d(&t(&[1, 1, 3, 3]), [2, 2]).unwrap();
        assert_eq!(s.data, vec![0., 2., 6., 8.]);
        let l = last_timestep(&t(&[2, 2, 3])).unwrap();
        assert_eq!(l.data, vec![2., 5., 8., 11.]);
    }
}
