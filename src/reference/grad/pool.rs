//! Pooling backward: max pooling through its argmax, average pooling and
//! global average pooling, for the forwards of
//! [`reference::pool`](crate::reference::pool) (`[B, C, H, W]`, `ceil_mode=False`,
//! symmetric padding).
//!
//! Max pooling routes each window's gradient to the one input the forward
//! picked. The forward keeps the running maximum and replaces it only by a
//! strictly larger value or a NaN, so the pick is the *first* maximum of the
//! window in row-major order (or its last NaN), as PyTorch's kernel does; a
//! window of only −∞ picks its first in-bounds element, again as PyTorch.
//! Overlapping windows add their gradients.

use crate::reference::pool::Pool2d;
use crate::tensor::{Scalar, ShapeError, Tensor};

/// Output size of the forward pool, with the forward's checks.
fn out_dims(shape: &[usize], p: &Pool2d) -> Result<[usize; 2], ShapeError> {
    if shape.len() != 4 {
        return Err(ShapeError::new(
            "pool backward input",
            "[B, C, H, W]",
            format!("{shape:?}"),
        ));
    }
    crate::reference::pool::out_dims(shape, p, "pool backward geometry")
}

/// Checks `dy` against the forward's output shape for input shape `x_shape`.
fn check_dy<T>(x_shape: &[usize], dy: &Tensor<T>, p: &Pool2d) -> Result<[usize; 2], ShapeError> {
    let [ho, wo] = out_dims(x_shape, p)?;
    let want = [x_shape[0], x_shape[1], ho, wo];
    if dy.shape != want {
        return Err(ShapeError::new(
            "pool backward upstream gradient",
            format!("the forward's output shape {want:?}"),
            format!("{:?}", dy.shape),
        ));
    }
    Ok([ho, wo])
}

/// The in-bounds rows and columns of output `(oy, ox)`'s window, as the forward clips it.
fn window(
    p: &Pool2d,
    [h, w]: [usize; 2],
    oy: usize,
    ox: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (y0, x0) = (oy * p.stride[0], ox * p.stride[1]);
    let ys =
        y0.saturating_sub(p.padding[0])..(y0 + p.kernel[0]).saturating_sub(p.padding[0]).min(h);
    let xs =
        x0.saturating_sub(p.padding[1])..(x0 + p.kernel[1]).saturating_sub(p.padding[1]).min(w);
    (ys, xs)
}

/// `dx` of [`max_pool2d`](crate::reference::pool::max_pool2d)`(x, p)`.
pub fn max_pool2d_backward<T: Scalar>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    p: &Pool2d,
) -> Result<Tensor<T>, ShapeError> {
    let [ho, wo] = check_dy(&x.shape, dy, p)?;
    let (h, w) = (x.shape[2], x.shape[3]);
    let mut dx = Tensor::zeros(x.shape.clone());
    for plane in 0..x.shape[0] * x.shape[1] {
        let src = &x.data[plane * h * w..][..h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let (ys, xs) = window(p, [h, w], oy, ox);
                let mut best = ys.start * w + xs.start;
                let mut m = -T::infinity();
                for iy in ys {
                    for ix in xs.clone() {
                        let v = src[iy * w + ix];
                        if v > m || v.to_f64().is_nan() {
                            m = v;
                            best = iy * w + ix;
                        }
                    }
                }
                dx.data[plane * h * w + best] += dy.data[(plane * ho + oy) * wo + ox];
            }
        }
    }
    Ok(dx)
}

/// `dx` of [`avg_pool2d`](crate::reference::pool::avg_pool2d)`(x, p,
/// count_include_pad)` for an input of shape `x_shape`: each window's
/// gradient is spread evenly over its in-bounds inputs, divided by the
/// divisor the forward used.
pub fn avg_pool2d_backward<T: Scalar>(
    dy: &Tensor<T>,
    x_shape: &[usize],
    p: &Pool2d,
    count_include_pad: bool,
) -> Result<Tensor<T>, ShapeError> {
    let [ho, wo] = check_dy(x_shape, dy, p)?;
    let (h, w) = (x_shape[2], x_shape[3]);
    let mut dx = Tensor::zeros(x_shape.to_vec());
    for plane in 0..x_shape[0] * x_shape[1] {
        let dst = &mut dx.data[plane * h * w..][..h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let (ys, xs) = window(p, [h, w], oy, ox);
                let n = if count_include_pad {
                    p.kernel[0] * p.kernel[1]
                } else {
                    (ys.len() * xs.len()).max(1)
                };
                let g = dy.data[(plane * ho + oy) * wo + ox] / T::from_usize(n);
                for iy in ys {
                    for ix in xs.clone() {
                        dst[iy * w + ix] += g;
                    }
                }
            }
        }
    }
    Ok(dx)
}

/// `dx` `[B, C, …]` of [`global_avg_pool`](crate::reference::pool::global_avg_pool)
/// for an input of shape `x_shape` and `dy` `[B, C]`: `dy / spatial size` everywhere.
pub fn global_avg_pool_backward<T: Scalar>(
    dy: &Tensor<T>,
    x_shape: &[usize],
) -> Result<Tensor<T>, ShapeError> {
    if x_shape.len() < 3 || x_shape[2..].contains(&0) || dy.shape != x_shape[..2] {
        return Err(ShapeError::new(
            "global average pool backward",
            "input [B, C, ...] with non-empty spatial dims and upstream gradient [B, C]",
            format!("input {x_shape:?}, upstream gradient {:?}", dy.shape),
        ));
    }
    let s: usize = x_shape[2..].iter().product();
    let inv = T::one() / T::from_usize(s);
    let data = dy
        .data
        .iter()
        .flat_map(|&g| std::iter::repeat_n(g * inv, s))
        .collect();
    Tensor::from_vec(x_shape.to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::grad::{check_vjp, rand_vec};
    use crate::reference::pool::{avg_pool2d, global_avg_pool, max_pool2d};

    fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    const OVERLAP: Pool2d = Pool2d {
        kernel: [3, 3],
        stride: [2, 1],
        padding: [1, 1],
    };

    #[test]
    fn max_pool_ties_go_to_the_first_maximum() {
        // One 2×2 window of equal values: only the top-left gets the gradient.
        let x = t(&[1, 1, 2, 2], &[1., 1., 1., 1.]);
        let dx = max_pool2d_backward(&x, &t(&[1, 1, 1, 1], &[5.]), &Pool2d::square(2)).unwrap();
        assert_eq!(dx.data, vec![5., 0., 0., 0.]);
        // Overlapping windows [3, 1, 3] and [1, 3, 3] each pick their first 3.
        let x = t(&[1, 1, 1, 4], &[3., 1., 3., 3.]);
        let p = Pool2d {
            kernel: [1, 3],
            stride: [1, 1],
            padding: [0, 0],
        };
        let dx = max_pool2d_backward(&x, &t(&[1, 1, 1, 2], &[1., 10.]), &p).unwrap();
        assert_eq!(dx.data, vec![1., 0., 10., 0.]);
        // All −∞: the first in-bounds element, the corner past the padding.
        let x = t(&[1, 1, 2, 2], &[f64::NEG_INFINITY; 4]);
        let p = Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [1, 1],
        };
        let dx = max_pool2d_backward(&x, &t(&[1, 1, 2, 2], &[1., 2., 3., 4.]), &p).unwrap();
        assert_eq!(dx.data, vec![1., 2., 3., 4.]);
    }

    #[test]
    fn max_pool_matches_differences() {
        for (seed, p) in [(50, OVERLAP), (51, Pool2d::square(2))] {
            let xs = [2, 3, 7, 5];
            let x0 = rand_vec(&mut crate::init::seeded(seed), 210);
            let x = t(&xs, &x0);
            let ys = max_pool2d(&x, &p).unwrap().shape;
            check_vjp(
                &format!("max pool {p:?}"),
                seed,
                &x0,
                |a| max_pool2d(&t(&xs, a), &p).unwrap().data,
                |v| max_pool2d_backward(&x, &t(&ys, v), &p).unwrap().data,
            );
        }
    }

    #[test]
    fn avg_pools_match_differences() {
        let xs = [2, 2, 6, 5];
        let x0 = rand_vec(&mut crate::init::seeded(52), 120);
        for include in [true, false] {
            let ys = avg_pool2d(&t(&xs, &x0), &OVERLAP, include).unwrap().shape;
            check_vjp(
                &format!("avg pool include_pad={include}"),
                53,
                &x0,
                |a| avg_pool2d(&t(&xs, a), &OVERLAP, include).unwrap().data,
                |v| {
                    avg_pool2d_backward(&t(&ys, v), &xs, &OVERLAP, include)
                        .unwrap()
                        .data
                },
            );
        }
        for xs in [vec![2, 3, 5], vec![2, 3, 3, 4]] {
            let x0 = rand_vec(&mut crate::init::seeded(54), xs.iter().product());
            check_vjp(
                "global avg pool",
                55,
                &x0,
                |a| global_avg_pool(&t(&xs, a)).unwrap().data,
                |v| global_avg_pool_backward(&t(&[2, 3], v), &xs).unwrap().data,
            );
        }
    }

    #[test]
    fn avg_pool_by_hand() {
        // 3×3 window, padding 1, over a 2×2 input: 4 of 9 cells are real.
        let p = Pool2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        };
        let dy = t(&[1, 1, 1, 1], &[9.]);
        let dx = avg_pool2d_backward(&dy, &[1, 1, 2, 2], &p, true).unwrap();
        assert_eq!(dx.data, vec![1.; 4]);
        let dx = avg_pool2d_backward(&dy, &[1, 1, 2, 2], &p, false).unwrap();
        assert_eq!(dx.data, vec![2.25; 4]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::<f64>::zeros(vec![1, 1, 4, 4]);
        let p = Pool2d::square(2);
        assert!(max_pool2d_backward(&x, &Tensor::zeros(vec![1, 1, 2, 2]), &p).is_ok());
        assert!(max_pool2d_backward(&x, &Tensor::zeros(vec![1, 1, 3, 2]), &p).is_err());
        assert!(
            avg_pool2d_backward(&Tensor::<f64>::zeros(vec![1, 1, 2]), &[1, 1, 4], &p, true)
                .is_err()
        );
        assert!(
            max_pool2d_backward(&x, &Tensor::zeros(vec![1, 1, 1, 1]), &Pool2d::square(5)).is_err()
        );
        assert!(global_avg_pool_backward(&Tensor::<f64>::zeros(vec![1, 2]), &[1, 1, 4]).is_err());
        assert!(global_avg_pool_backward(&Tensor::<f64>::zeros(vec![1, 1]), &[1, 1, 0]).is_err());
    }
}
