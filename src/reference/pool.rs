//! 2D max and average pooling (PyTorch `MaxPool2d` / `AvgPool2d`,
//! `ceil_mode=False`) and global average pooling.

use crate::tensor::{Scalar, ShapeError, Tensor};

/// Window geometry, `[height, width]` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool2d {
    /// Square window with stride = kernel and no padding (`MaxPool2d(k)`).
    pub fn square(k: usize) -> Self {
        Self {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }
}

/// Output height and width of pooling `shape` (`[B, C, H, W]`) with `p`; a bad
/// geometry is an error under the name `what`.
pub(crate) fn out_dims(shape: &[usize], p: &Pool2d, what: &str) -> Result<[usize; 2], ShapeError> {
    let mut out = [0; 2];
    for d in 0..2 {
        let (len, k, s, pad) = (shape[2 + d], p.kernel[d], p.stride[d], p.padding[d]);
        // PyTorch also requires pad <= k/2, so no window lies fully in padding.
        if k == 0 || s == 0 || 2 * pad > k || len + 2 * pad < k {
            return Err(ShapeError::new(
                what,
                "kernel >= 1, stride >= 1, padding <= kernel/2, window fits the padded input",
                format!("input {:?}, {p:?}", &shape[2..]),
            ));
        }
        out[d] = (len + 2 * pad - k) / s + 1;
    }
    Ok(out)
}

/// Shared loop: calls `reduce` with the in-bounds values of each window and
/// the window's full size (padding included).
fn pool<T: Scalar>(
    x: &Tensor<T>,
    p: &Pool2d,
    mut reduce: impl FnMut(&mut dyn Iterator<Item = T>, usize) -> T,
) -> Result<Tensor<T>, ShapeError> {
    x.expect_rank(4, "pool input [B, C, H, W]")?;
    let [ho, wo] = out_dims(&x.shape, p, "pool geometry")?;
    let (bc, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3]);
    let mut out = Tensor::zeros(vec![x.shape[0], x.shape[1], ho, wo]);
    for plane in 0..bc {
        let src = &x.data[plane * h * w..][..h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                // Window in padded coordinates, clipped to the real input.
                let y0 = oy * p.stride[0];
                let x0 = ox * p.stride[1];
                let ys = y0.saturating_sub(p.padding[0])
                    ..(y0 + p.kernel[0]).saturating_sub(p.padding[0]).min(h);
                let xs = x0.saturating_sub(p.padding[1])
                    ..(x0 + p.kernel[1]).saturating_sub(p.padding[1]).min(w);
                let mut it = ys.flat_map(|iy| xs.clone().map(move |ix| src[iy * w + ix]));
                out.data[(plane * ho + oy) * wo + ox] = reduce(&mut it, p.kernel[0] * p.kernel[1]);
            }
        }
    }
    Ok(out)
}

/// Max pool; padding counts as −∞ and NaN propagates, as in PyTorch.
pub fn max_pool2d<T: Scalar>(x: &Tensor<T>, p: &Pool2d) -> Result<Tensor<T>, ShapeError> {
    pool(x, p, |it, _| {
        it.fold(-T::infinity(), |m, v| {
            if v > m || v.to_f64().is_nan() {
                v
            } else {
                m
            }
        })
    })
}

/// Average pool. `count_include_pad = true` is PyTorch's default: the
/// divisor is the full window size even where it overlaps padding.
pub fn avg_pool2d<T: Scalar>(
    x: &Tensor<T>,
    p: &Pool2d,
    count_include_pad: bool,
) -> Result<Tensor<T>, ShapeError> {
    pool(x, p, |it, full| {
        let (mut sum, mut n) = (T::zero(), 0usize);
        for v in it {
            sum += v;
            n += 1;
        }
        sum / T::from_usize(if count_include_pad { full } else { n.max(1) })
    })
}

/// Mean over all spatial positions: `[B, C, …]` → `[B, C]`.
pub fn global_avg_pool<T: Scalar>(x: &Tensor<T>) -> Result<Tensor<T>, ShapeError> {
    if x.ndim() < 3 || x.shape[2..].contains(&0) {
        return Err(ShapeError::new(
            "global average pool input",
            "[B, C, ...] with non-empty spatial dims",
            format!("{:?}", x.shape),
        ));
    }
    let s: usize = x.shape[2..].iter().product();
    let data = x
        .data
        .chunks(s)
        .map(|c| c.iter().copied().sum::<T>() / T::from_usize(s))
        .collect();
    Tensor::from_vec(x.shape[..2].to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Tensor<f64> {
        Tensor::from_vec(vec![1, 1, h, w], (0..h * w).map(|v| v as f64).collect()).unwrap()
    }

    #[test]
    fn max_pool_2x2() {
        let y = max_pool2d(&ramp(4, 4), &Pool2d::square(2)).unwrap();
        assert_eq!(y.data, vec![5., 7., 13., 15.]);
        // Odd size floors: 5x5 -> 2x2.
        assert_eq!(
            max_pool2d(&ramp(5, 5), &Pool2d::square(2)).unwrap().shape,
            vec![1, 1, 2, 2]
        );
    }

    #[test]
    fn padded_pools() {
        let p = Pool2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        };
        let x = ramp(3, 3).map(|v| v - 10.0);
        // Top-left window covers x[0..2, 0..2] = -10, -9, -7, -6 (+ padding).
        let m = max_pool2d(&x, &p).unwrap();
        assert_eq!(m.data[0], -6.0);
        let a = avg_pool2d(&x, &p, true).unwrap();
        assert_eq!(a.data[0], -32.0 / 9.0);
        let a = avg_pool2d(&x, &p, false).unwrap();
        assert_eq!(a.data[0], -8.0);
    }

    #[test]
    fn global_and_errors() {
        let g = global_avg_pool(&ramp(2, 2)).unwrap();
        assert_eq!((g.shape.clone(), g.data[0]), (vec![1, 1], 1.5));
        let bad = Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [2, 2],
        };
        assert!(max_pool2d(&ramp(4, 4), &bad).is_err());
        assert!(max_pool2d(&ramp(1, 1), &Pool2d::square(2)).is_err());
    }
}
