//! Convolution backward to data, filter and bias, 1D and 2D, in the
//! conventions of [`reference::conv`](crate::reference::conv): cross-correlation,
//! `x` `[B, Ci, L]` / `[B, Ci, H, W]`, `w` `[Co, Ci/groups, k…]`, explicit
//! `(lo, hi)` padding per dimension.
//!
//! The forward computes `y[b, o, p] += x_pad[b, i, p·s + t·d] · w[o, i', t]`
//! for every tap; both backward kernels walk the very same taps (one shared
//! loop, `for_each_tap`) and scatter instead: `dx[…] += dy[…] · w[…]` and
//! `dw[…] += dy[…] · x[…]`. Taps that land in the padding read zero in the
//! forward and so get no gradient. 1D is seen as 2D with a unit height, as in
//! the forward; the row-major data is the same either way.

use crate::reference::conv::{causal_kernel, checked_dims2d, ConvDims, ConvParams};
use crate::tensor::{Scalar, ShapeError, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// `dx` of `conv(x, w, bias, p)` for the upstream gradient `dy`, with `x`
/// of shape `x_shape` (the forward's input is not needed: the conv is linear).
pub fn conv_backward_data<T: Scalar>(
    dy: &Tensor<T>,
    w: &Tensor<T>,
    x_shape: &[usize],
    p: &ConvParams,
) -> Result<Tensor<T>, ShapeError> {
    let (d, p2) = dims2d("conv backward to data", x_shape, &w.shape, dy, p)?;
    let mut dx = Tensor::zeros(x_shape.to_vec());
    // One task per sample: each writes only its own sample's `dx`, summing in the
    // serial loop's order, so the result does not depend on the thread count.
    let per = d.ci * d.h * d.w;
    dx.data
        .par_chunks_mut(per.max(1))
        .enumerate()
        .for_each(|(bi, dxb)| {
            for_each_tap(&d, &p2, bi..bi + 1, 0..d.co, |xi, wi, yi| {
                dxb[xi - bi * per] += dy.data[yi] * w.data[wi]
            })
        });
    Ok(dx)
}

/// `dw` of `conv(x, w, bias, p)` for the upstream gradient `dy`, with `w`
/// of shape `w_shape`.
pub fn conv_backward_filter<T: Scalar>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    w_shape: &[usize],
    p: &ConvParams,
) -> Result<Tensor<T>, ShapeError> {
    let (d, p2) = dims2d("conv backward to filter", &x.shape, w_shape, dy, p)?;
    let mut dw = Tensor::zeros(w_shape.to_vec());
    // One task per output channel: each writes only its own filter, summing over the
    // batch in the serial loop's order, so the result does not depend on the threads.
    let per = d.cig * d.kh * d.kw;
    dw.data
        .par_chunks_mut(per.max(1))
        .enumerate()
        .for_each(|(o, dwo)| {
            for_each_tap(&d, &p2, 0..d.b, o..o + 1, |xi, wi, yi| {
                dwo[wi - o * per] += dy.data[yi] * x.data[xi]
            })
        });
    Ok(dw)
}

/// `dbias` `[Co]` of a conv: `dy` `[B, Co, …]` summed over batch and space.
pub fn conv_backward_bias<T: Scalar>(dy: &Tensor<T>) -> Result<Vec<T>, ShapeError> {
    if !(3..=4).contains(&dy.ndim()) {
        return Err(ShapeError::new(
            "conv backward to bias: upstream gradient",
            "[B, Co, L] or [B, Co, H, W]",
            format!("{:?}", dy.shape),
        ));
    }
    let (b, co) = (dy.shape[0], dy.shape[1]);
    let s: usize = dy.shape[2..].iter().product();
    let mut db = vec![T::zero(); co];
    for bi in 0..b {
        for (o, acc) in db.iter_mut().enumerate() {
            *acc += dy.data[(bi * co + o) * s..][..s].iter().copied().sum::<T>();
        }
    }
    Ok(db)
}

/// The padding [`causal_conv1d`](crate::reference::conv::causal_conv1d) uses
/// for a kernel of (odd-ified) length `k`.
fn causal_params(k: usize) -> ConvParams {
    ConvParams::unit(1).with_padding(vec![(k - 1, 0)])
}

/// `dx` of [`causal_conv1d`](crate::reference::conv::causal_conv1d)`(x, w, bias)`.
pub fn causal_conv1d_backward_data<T: Scalar>(
    dy: &Tensor<T>,
    w: &Tensor<T>,
    x_shape: &[usize],
) -> Result<Tensor<T>, ShapeError> {
    let wk = causal_kernel(w)?;
    let k = wk.shape[2];
    if k == 0 {
        return Err(ShapeError::new("causal conv kernel", "k >= 1", "k = 0"));
    }
    conv_backward_data(dy, &wk, x_shape, &causal_params(k))
}

/// `dw` of [`causal_conv1d`](crate::reference::conv::causal_conv1d)`(x, w, bias)`,
/// shaped as `w` `[Co, Ci, k]`. An even kernel runs with a zero tap put in
/// front; that tap is a constant, so its gradient is dropped.
pub fn causal_conv1d_backward_filter<T: Scalar>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    w_shape: &[usize],
) -> Result<Tensor<T>, ShapeError> {
    if w_shape.len() != 3 || w_shape[2] == 0 {
        return Err(ShapeError::new(
            "causal conv backward to filter: kernel",
            "[Co, Ci, k] with k >= 1",
            format!("{w_shape:?}"),
        ));
    }
    let k = w_shape[2];
    let kodd = k + (1 - k % 2);
    let dwk = conv_backward_filter(x, dy, &[w_shape[0], w_shape[1], kodd], &causal_params(kodd))?;
    if kodd == k {
        return Ok(dwk);
    }
    let data = dwk.data.chunks(kodd).flat_map(|row| &row[1..]).copied();
    Tensor::from_vec(w_shape.to_vec(), data.collect())
}

/// Checks the operand shapes as the forward [`conv`](crate::reference::conv::conv)
/// does (ranks, parameter lengths, groups, geometry), checks that `dy` has the
/// forward's output shape, and returns the sizes and parameters seen as 2D.
fn dims2d<T: Scalar>(
    what: &str,
    x_shape: &[usize],
    w_shape: &[usize],
    dy: &Tensor<T>,
    p: &ConvParams,
) -> Result<(ConvDims, ConvParams), ShapeError> {
    let nd = x_shape.len().saturating_sub(2);
    if !(1..=2).contains(&nd) || w_shape.len() != nd + 2 {
        return Err(ShapeError::new(
            format!("{what}: operands"),
            "input [B, Ci, L] with weight [Co, Ci/groups, k], or [B, Ci, H, W] with [Co, Ci/groups, kh, kw]",
            format!("input {x_shape:?}, weight {w_shape:?}"),
        ));
    }
    let (d, p2) = checked_dims2d(&format!("{what}:"), x_shape, w_shape, None, p)?;
    let ConvDims { b, co, ho, wo, .. } = d;
    let want: Vec<usize> = if nd == 1 {
        vec![b, co, wo]
    } else {
        vec![b, co, ho, wo]
    };
    if dy.shape != want {
        return Err(ShapeError::new(
            format!("{what}: upstream gradient"),
            format!("the forward's output shape {want:?}"),
            format!("{:?}", dy.shape),
        ));
    }
    Ok((d, p2))
}

/// Calls `f(x_index, w_index, y_index)` for every tap of the forward conv
/// that reads a real (not padding) input value, for the samples `batch` and output
/// channels `outs`, in the forward's loop order.
fn for_each_tap(
    d: &ConvDims,
    p: &ConvParams,
    batch: Range<usize>,
    outs: Range<usize>,
    mut f: impl FnMut(usize, usize, usize),
) {
    let cog = d.co / d.groups;
    for bi in batch {
        for o in outs.clone() {
            let grp = o / cog;
            for oy in 0..d.ho {
                for ox in 0..d.wo {
                    let yi = ((bi * d.co + o) * d.ho + oy) * d.wo + ox;
                    for i in 0..d.cig {
                        let ic = grp * d.cig + i;
                        for ty in 0..d.kh {
                            let py = oy * p.stride[0] + ty * p.dilation[0];
                            let Some(iy) = py.checked_sub(p.padding[0].0).filter(|&v| v < d.h)
                            else {
                                continue;
                            };
                            for tx in 0..d.kw {
                                let px = ox * p.stride[1] + tx * p.dilation[1];
                                let Some(ix) = px.checked_sub(p.padding[1].0).filter(|&v| v < d.w)
                                else {
                                    continue;
                                };
                                let xi = ((bi * d.ci + ic) * d.h + iy) * d.w + ix;
                                let wi = ((o * d.cig + i) * d.kh + ty) * d.kw + tx;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::conv::{causal_conv1d, conv};
    use crate::reference::grad::{check_vjp, rand_vec};

    fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn three_tap_by_hand() {
        // y[p] = x[p−1] − x[p+1] (w = [1, 0, −1], padding 1), so
        // dx[j] = dy[j+1] − dy[j−1] and dw[t] = Σ_p dy[p] · x_pad[p + t].
        let x = t(&[1, 1, 4], &[1., 2., 3., 4.]);
        let w = t(&[1, 1, 3], &[1., 0., -1.]);
        let dy = t(&[1, 1, 4], &[1., 2., 3., 4.]);
        let p = ConvParams::same(&[3]);
        let dx = conv_backward_data(&dy, &w, &x.shape, &p).unwrap();
        assert_eq!(dx.data, vec![2., 2., 2., -3.]);
        let dw = conv_backward_filter(&x, &dy, &w.shape, &p).unwrap();
        assert_eq!(dw.data, vec![20., 30., 20.]);
        assert_eq!(conv_backward_bias(&dy).unwrap(), vec![10.]);
    }

    #[test]
    fn grouped_1x1_by_hand() {
        // Depthwise 1×1 scaling channel 0 by 1 and channel 1 by 10.
        let x = t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
        let w = t(&[2, 1, 1, 1], &[1., 10.]);
        let dy = t(&[1, 2, 1, 2], &[1., 1., 1., 1.]);
        let p = ConvParams::unit(2).with_groups(2);
        let dx = conv_backward_data(&dy, &w, &x.shape, &p).unwrap();
        assert_eq!(dx.data, vec![1., 1., 10., 10.]);
        let dw = conv_backward_filter(&x, &dy, &w.shape, &p).unwrap();
        assert_eq!(dw.data, vec![3., 7.]);
    }

    /// Central differences of `conv` in `(x, w, bias)` against the three
    /// backward kernels together.
    fn check_conv(seed: u64, xs: &[usize], ws: &[usize], p: &ConvParams) {
        let mut rng = crate::init::seeded(seed);
        let (nx, nw, co) = (xs.iter().product(), ws.iter().product::<usize>(), ws[0]);
        let all = rand_vec(&mut rng, nx + nw + co);
        let split = |a: &[f64]| {
            let x = t(xs, &a[..nx]);
            let w = t(ws, &a[nx..nx + nw]);
            (x, w, a[nx + nw..].to_vec())
        };
        let f = |a: &[f64]| {
            let (x, w, b) = split(a);
            conv(&x, &w, Some(&b), p).unwrap().data
        };
        let (x, w, _) = split(&all);
        let yshape = conv(&x, &w, None, p).unwrap().shape;
        let vjp = |v: &[f64]| {
            let dy = t(&yshape, v);
            let mut g = conv_backward_data(&dy, &w, xs, p).unwrap().data;
            g.extend(conv_backward_filter(&x, &dy, ws, p).unwrap().data);
            g.extend(conv_backward_bias(&dy).unwrap());
            g
        };
        check_vjp(&format!("conv {xs:?} {ws:?} {p:?}"), seed, &all, f, vjp);
    }

    #[test]
    fn conv1d_matches_differences() {
        let u = || ConvParams::unit(1);
        let cases = [
            // Strided, symmetric padding.
            (
                [2, 3, 11],
                [4, 3, 3],
                u().with_stride(vec![2]).with_padding(vec![(1, 1)]),
            ),
            // Dilated, padding on one side only.
            (
                [1, 2, 13],
                [3, 2, 3],
                u().with_dilation(vec![3]).with_padding(vec![(2, 0)]),
            ),
            // Stride larger than the kernel, padding on the right only.
            (
                [2, 1, 12],
                [2, 1, 2],
                u().with_stride(vec![3]).with_padding(vec![(0, 1)]),
            ),
            // Two groups.
            ([2, 4, 9], [6, 2, 3], u().with_groups(2)),
            // Depthwise, even kernel, asymmetric padding, stride and dilation.
            (
                [1, 3, 10],
                [3, 1, 4],
                u().with_groups(3)
                    .with_padding(vec![(1, 2)])
                    .with_stride(vec![2])
                    .with_dilation(vec![2]),
            ),
            // Depthwise with a channel multiplier of 2.
            (
                [2, 2, 7],
                [4, 1, 3],
                u().with_groups(2).with_padding(vec![(1, 1)]),
            ),
        ];
        for (i, (xs, ws, p)) in cases.iter().enumerate() {
            check_conv(10 + i as u64, xs, ws, p);
        }
    }

    #[test]
    fn conv2d_matches_differences() {
        let u = || ConvParams::unit(2);
        let cases = [
            (
                [2, 2, 7, 6],
                [3, 2, 3, 2],
                u().with_stride(vec![2, 1])
                    .with_padding(vec![(1, 1), (0, 1)])
                    .with_dilation(vec![1, 2]),
            ),
            (
                [1, 3, 9, 8],
                [6, 1, 3, 3],
                u().with_groups(3)
                    .with_stride(vec![2, 2])
                    .with_dilation(vec![2, 2])
                    .with_padding(vec![(2, 2), (1, 0)]),
            ),
            // Depthwise "same".
            (
                [2, 4, 5, 5],
                [4, 1, 3, 3],
                ConvParams::same(&[3, 3]).with_groups(4),
            ),
            // Padding on one side only, in each dimension.
            (
                [1, 2, 6, 5],
                [2, 2, 3, 3],
                u().with_padding(vec![(0, 2), (1, 0)]),
            ),
            // Stride larger than the kernel.
            ([1, 2, 8, 5], [2, 2, 2, 1], u().with_stride(vec![3, 2])),
            // Strided 1×1 with two groups.
            (
                [2, 4, 5, 3],
                [2, 2, 1, 1],
                u().with_stride(vec![2, 2]).with_groups(2),
            ),
        ];
        for (i, (xs, ws, p)) in cases.iter().enumerate() {
            check_conv(20 + i as u64, xs, ws, p);
        }
    }

    #[test]
    fn causal_matches_differences() {
        for (seed, k) in [(30, 4usize), (31, 3), (32, 1)] {
            let (xs, ws) = ([2usize, 2, 10], [3usize, 2, k]);
            let mut rng = crate::init::seeded(seed);
            let (nx, nw) = (40, 6 * k);
            let all = rand_vec(&mut rng, nx + nw + 3);
            let split = |a: &[f64]| {
                (
                    t(&xs, &a[..nx]),
                    t(&ws, &a[nx..nx + nw]),
                    a[nx + nw..].to_vec(),
                )
            };
            let f = |a: &[f64]| {
                let (x, w, b) = split(a);
                causal_conv1d(&x, &w, Some(&b)).unwrap().data
            };
            let (x, w, _) = split(&all);
            let vjp = |v: &[f64]| {
                let dy = t(&[2, 3, 10], v);
                let mut g = causal_conv1d_backward_data(&dy, &w, &xs).unwrap().data;
                g.extend(causal_conv1d_backward_filter(&x, &dy, &ws).unwrap().data);
                g.extend(conv_backward_bias(&dy).unwrap());
                g
            };
            check_vjp(&format!("causal conv k={k}"), seed, &all, f, vjp);
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut rng = crate::init::seeded(40);
        let (xs, ws) = ([2usize, 2, 6, 5], [4usize, 1, 3, 3]);
        let p = ConvParams::same(&[3, 3])
            .with_groups(2)
            .with_stride(vec![2, 1]);
        let x = t(&xs, &rand_vec(&mut rng, 120));
        let w = t(&ws, &rand_vec(&mut rng, 36));
        let dy = t(&[2, 4, 3, 5], &rand_vec(&mut rng, 120));
        let dx = conv_backward_data(&dy, &w, &xs, &p).unwrap();
        let dx32 = conv_backward_data(&dy.to_f32(), &w.to_f32(), &xs, &p).unwrap();
        assert!(dx.max_abs_diff(&dx32).unwrap() < 1e-5);
        let dw = conv_backward_filter(&x, &dy, &ws, &p).unwrap();
        let dw32 = conv_backward_filter(&x.to_f32(), &dy.to_f32(), &ws, &p).unwrap();
        assert!(dw.max_abs_diff(&dw32).unwrap() < 1e-5);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::<f64>::zeros(vec![1, 2, 5]);
        let w = Tensor::<f64>::zeros(vec![2, 2, 3]);
        let p = ConvParams::unit(1);
        let dy = Tensor::<f64>::zeros(vec![1, 2, 3]);
        assert!(conv_backward_data(&dy, &w, &x.shape, &p).is_ok());
        // Upstream gradient of the wrong length.
        let bad_dy = Tensor::<f64>::zeros(vec![1, 2, 4]);
        assert!(conv_backward_data(&bad_dy, &w, &x.shape, &p).is_err());
        assert!(conv_backward_filter(&x, &bad_dy, &w.shape, &p).is_err());
        // Groups that do not divide, a kernel larger than the input, 2D params for 1D.
        assert!(conv_backward_data(&dy, &w, &x.shape, &p.clone().with_groups(2)).is_err());
        assert!(conv_backward_filter(&x, &dy, &[2, 2, 7], &p).is_err());
        assert!(conv_backward_data(&dy, &w, &x.shape, &ConvParams::unit(2)).is_err());
        assert!(conv_backward_data(&dy, &w, &[2, 5], &p).is_err());
        assert!(conv_backward_bias(&Tensor::<f64>::zeros(vec![3])).is_err());
        assert!(causal_conv1d_backward_filter(&x, &dy, &[2, 2, 0]).is_err());
        assert!(causal_conv1d_backward_data(&dy, &w, &x.shape).is_err());
    }
}
