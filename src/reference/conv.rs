//! Direct convolution with PyTorch semantics (cross-correlation), 1D and 2D.
//!
//! `y[b, o, p] = bias[o] + Σ_{i in group(o)} Σ_t x_pad[b, i, p·s + t·d] · w[o, i', t]`
//!
//! This is the ground truth every faster path (FFT, JIT, OpenCL) is tested
//! against, so it is a plain loop nest with no tiling or reordering tricks.
//! 1D is run as 2D with a height of one, which keeps a single loop nest.

use rayon::prelude::*;

use crate::tensor::{Scalar, ShapeError, Tensor};

/// Geometry of a convolution, one entry per spatial dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvParams {
    pub stride: Vec<usize>,
    /// Zeros added before and after each spatial dimension (PyTorch pads
    /// symmetrically; `(lo, hi)` also covers causal and "same" with even kernels).
    pub padding: Vec<(usize, usize)>,
    pub dilation: Vec<usize>,
    pub groups: usize,
}

impl ConvParams {
    /// Stride 1, no padding, dilation 1, one group, for `nd` spatial dims.
    pub fn unit(nd: usize) -> Self {
        Self {
            stride: vec![1; nd],
            padding: vec![(0, 0); nd],
            dilation: vec![1; nd],
            groups: 1,
        }
    }

    /// Stride 1 with "same" padding for the given kernel sizes.
    pub fn same(kernel: &[usize]) -> Self {
        let mut p = Self::unit(kernel.len());
        p.padding = same_padding(kernel, &p.dilation);
        p
    }

    pub fn with_stride(mut self, stride: Vec<usize>) -> Self {
        self.stride = stride;
        self
    }

    pub fn with_padding(mut self, padding: Vec<(usize, usize)>) -> Self {
        self.padding = padding;
        self
    }

    pub fn with_dilation(mut self, dilation: Vec<usize>) -> Self {
        self.dilation = dilation;
        self
    }

    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
}

/// Padding that keeps the output size equal to the input size at stride 1.
///
/// Matches PyTorch's `padding="same"`: the total `d·(k−1)` is split with the
/// smaller half first, so an even kernel gets its extra zero on the right.
pub fn same_padding(kernel: &[usize], dilation: &[usize]) -> Vec<(usize, usize)> {
    kernel
        .iter()
        .zip(dilation)
        .map(|(&k, &d)| {
            let total = d * k.saturating_sub(1);
            (total / 2, total - total / 2)
        })
        .collect()
}

/// Output length of one spatial dimension, or `None` if the dilated kernel
/// does not fit in the padded input (or stride, dilation or kernel is 0).
pub fn conv_out_len(
    len: usize,
    k: usize,
    stride: usize,
    pad: (usize, usize),
    dil: usize,
) -> Option<usize> {
    let padded = len + pad.0 + pad.1;
    let span = dil * (k.checked_sub(1)?) + 1;
    if stride == 0 || dil == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// The checked sizes of a conv seen as 2D (a 1D conv has `h = kh = ho = 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub b: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    /// Input channels per group.
    pub cig: usize,
    pub kh: usize,
    pub kw: usize,
    pub groups: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Checks the parameter lengths, groups, bias length (`bias`, where there is one)
/// and geometry of a conv whose ranks are checked (`x_shape` `[B, Ci, L]` or
/// `[B, Ci, H, W]`, `w_shape` of the same rank), and returns its sizes and
/// parameters seen as 2D. Messages name `what`. The backward passes check with
/// this too, so they accept what the forward accepts.
pub fn checked_dims2d(
    what: &str,
    x_shape: &[usize],
    w_shape: &[usize],
    bias: Option<usize>,
    p: &ConvParams,
) -> Result<(ConvDims, ConvParams), ShapeError> {
    let nd = x_shape.len() - 2;
    if p.stride.len() != nd || p.padding.len() != nd || p.dilation.len() != nd {
        return Err(ShapeError::new(
            format!("{what} params"),
            format!("{nd} entries for stride, padding and dilation"),
            format!("{p:?}"),
        ));
    }
    let lift = |s: &[usize]| {
        let mut s = s.to_vec();
        if nd == 1 {
            s.insert(2, 1);
        }
        s
    };
    let p = if nd == 1 {
        ConvParams {
            stride: vec![1, p.stride[0]],
            padding: vec![(0, 0), p.padding[0]],
            dilation: vec![1, p.dilation[0]],
            groups: p.groups,
        }
    } else {
        p.clone()
    };
    let (xs, ws) = (lift(x_shape), lift(w_shape));
    let [b, ci, h, wd] = [xs[0], xs[1], xs[2], xs[3]];
    let [co, cig, kh, kw] = [ws[0], ws[1], ws[2], ws[3]];
    let g = p.groups;
    if g == 0 || ci % g != 0 || co % g != 0 || cig != ci / g {
        return Err(ShapeError::new(
            format!("{what} groups"),
            format!("groups dividing Ci={ci} and Co={co}, weight [Co, Ci/groups, ...]"),
            format!("groups={g}, weight {ws:?}"),
        ));
    }
    if let Some(n) = bias.filter(|&n| n != co) {
        return Err(ShapeError::new(
            format!("{what} bias"),
            format!("{co} values"),
            format!("{n}"),
        ));
    }
    let out_len = |d: usize, len, k| conv_out_len(len, k, p.stride[d], p.padding[d], p.dilation[d]);
    let (Some(ho), Some(wo)) = (out_len(0, h, kh), out_len(1, wd, kw)) else {
        return Err(ShapeError::new(
            format!("{what} geometry"),
            "a dilated kernel no larger than the padded input, stride and dilation > 0",
            format!("input {:?}, kernel {:?}, params {p:?}", &xs[2..], &ws[2..]),
        ));
    };
    let dims = ConvDims {
        b,
        ci,
        h,
        w: wd,
        co,
        cig,
        kh,
        kw,
        groups: g,
        ho,
        wo,
    };
    Ok((dims, p))
}

/// `t` (`[B, C, L]`) as `[B, C, 1, L]`, a copy.
pub fn lift_1d<T: Scalar>(t: &Tensor<T>) -> Tensor<T> {
    let mut shape = t.shape.clone();
    shape.insert(2, 1);
    Tensor {
        shape,
        data: t.data.clone(),
    }
}

/// Checks a conv's operands (ranks, parameter lengths, groups, bias, geometry) and runs
/// `body` on it seen as 2D: 1D is lifted to a unit height and the result dropped back.
/// Every conv implementation goes through here, so all accept and reject the same
/// inputs with the same messages; `what` names the implementation in them.
pub fn as_conv2d<T: Scalar>(
    what: &str,
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
    body: impl FnOnce(&Tensor<T>, &Tensor<T>, &ConvParams, ConvDims) -> Tensor<T>,
) -> Result<Tensor<T>, ShapeError> {
    let nd = x.ndim().saturating_sub(2);
    if !(1..=2).contains(&nd) {
        return Err(ShapeError::new(
            format!("{what} input"),
            "[B, C, L] or [B, C, H, W]",
            format!("{:?}", x.shape),
        ));
    }
    w.expect_rank(nd + 2, &format!("{what} weight"))?;
    let (dims, p2) = checked_dims2d(what, &x.shape, &w.shape, bias.map(<[T]>::len), p)?;
    // Lift 1D to 2D with a unit height so there is one loop nest per implementation.
    let lifted;
    let (x, w) = if nd == 1 {
        lifted = (lift_1d(x), lift_1d(w));
        (&lifted.0, &lifted.1)
    } else {
        (x, w)
    };
    let ConvDims { b, co, ho, wo, .. } = dims;
    let y = if b * co * ho * wo == 0 {
        Tensor::zeros(vec![b, co, ho, wo])
    } else {
        body(x, w, &p2, dims)
    };
    if nd == 1 {
        return Ok(Tensor {
            shape: vec![b, co, wo],
            data: y.data,
        });
    }
    Ok(y)
}

/// N-d convolution for `x` `[B, Ci, L]` / `[B, Ci, H, W]` and `w`
/// `[Co, Ci/groups, k…]`, with an optional bias `[Co]`.
pub fn conv<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
) -> Result<Tensor<T>, ShapeError> {
    as_conv2d("conv", x, w, bias, p, |x, w, p, d| conv2d(x, w, bias, p, d))
}

fn conv2d<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
    d: ConvDims,
) -> Tensor<T> {
    let ConvDims {
        b: _,
        ci,
        h,
        w: wd,
        co,
        cig,
        kh,
        kw,
        groups: g,
        ho,
        wo,
    } = d;
    let (cog, plane) = (co / g, ho * wo);
    let mut out = Tensor::zeros(vec![d.b, co, ho, wo]);
    out.data
        .par_chunks_mut(co * plane)
        .enumerate()
        .for_each(|(bi, yb)| {
            for o in 0..co {
                let grp = o / cog;
                let b0 = bias.map_or(T::zero(), |bv| bv[o]);
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = b0;
                        for i in 0..cig {
                            let ic = grp * cig + i;
                            let xc = &x.data[(bi * ci + ic) * h * wd..][..h * wd];
                            let wc = &w.data[(o * cig + i) * kh * kw..][..kh * kw];
                            for ty in 0..kh {
                                // Index in padded coordinates, then shift back;
                                // anything outside the input reads as zero.
                                let py = oy * p.stride[0] + ty * p.dilation[0];
                                let Some(iy) = py.checked_sub(p.padding[0].0).filter(|&v| v < h)
                                else {
                                    continue;
                                };
                                for tx in 0..kw {
                                    let px = ox * p.stride[1] + tx * p.dilation[1];
                                    let Some(ix) =
                                        px.checked_sub(p.padding[1].0).filter(|&v| v < wd)
                                    else {
                                        continue;
                                    };
                                    acc += xc[iy * wd + ix] * wc[ty * kw + tx];
                                }
                            }
                        }
                        yb[o * plane + oy * wo + ox] = acc;
                    }
                }
            }
        });
    out
}

/// Copies planes `x` `[planes, h, w]` into `dst` as `[planes, hp, wp]` at row `top`,
/// column `left`, zeros elsewhere: the padded input the fast direct paths read
/// without bounds checks. `dst` is reused (cleared and resized), so callers can keep
/// it as scratch; large copies run in parallel.
pub fn pad_planes<T: Scalar>(
    dst: &mut Vec<T>,
    x: &[T],
    [planes, h, w]: [usize; 3],
    [top, left]: [usize; 2],
    [hp, wp]: [usize; 2],
) {
    const PAR_COPY: usize = 1 << 18;
    dst.clear();
    dst.resize(planes * hp * wp, T::zero());
    let copy = |(d, src): (&mut [T], &[T])| {
        for (r, row) in src.chunks(w).enumerate() {
            d[(r + top) * wp + left..][..w].copy_from_slice(row);
        }
    };
    if dst.len() > PAR_COPY {
        dst.par_chunks_mut(hp * wp)
            .zip(x.par_chunks(h * w))
            .for_each(copy);
    } else {
        dst.chunks_mut(hp * wp).zip(x.chunks(h * w)).for_each(copy);
    }
}

/// Left-pads an even-length 1D kernel `[Co, Ci, k]` with one zero tap, as
/// FlexConv's `causal_padding` does, so the kernel length is always odd.
pub fn causal_kernel<T: Scalar>(w: &Tensor<T>) -> Result<Tensor<T>, ShapeError> {
    w.expect_rank(3, "causal conv kernel [Co, Ci, k]")?;
    let k = w.shape[2];
    if k % 2 == 1 {
        return Ok(w.clone());
    }
    let rows = w.shape[0] * w.shape[1];
    let mut data = Vec::with_capacity(rows * (k + 1));
    for r in 0..rows {
        data.push(T::zero());
        data.extend_from_slice(&w.data[r * k..(r + 1) * k]);
    }
    Tensor::from_vec(vec![w.shape[0], w.shape[1], k + 1], data)
}

/// Causal 1D convolution (FlexConv's `causal_conv`): odd-ify the kernel,
/// left-pad the input by `k−1`, valid conv. Output length = input length, and
/// output `t` sees only inputs `≤ t`; the last tap multiplies `x[t]`.
pub fn causal_conv1d<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
) -> Result<Tensor<T>, ShapeError> {
    x.expect_rank(3, "causal conv input [B, C, L]")?;
    let w = causal_kernel(w)?;
    let k = w.shape[2];
    if k == 0 {
        return Err(ShapeError::new("causal conv kernel", "k >= 1", "k = 0"));
    }
    let p = ConvParams::unit(1).with_padding(vec![(k - 1, 0)]);
    conv(x, &w, bias, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn tiny_1d_by_hand() {
        // x = [1,2,3,4], w = [1,0,-1], pad 1: y[p] = x[p-1] - x[p+1]
        let x = t(&[1, 1, 4], &[1., 2., 3., 4.]);
        let w = t(&[1, 1, 3], &[1., 0., -1.]);
        let y = conv(&x, &w, Some(&[0.5]), &ConvParams::same(&[3])).unwrap();
        assert_eq!(y.data, vec![-2.0 + 0.5, -2.0 + 0.5, -2.0 + 0.5, 3.0 + 0.5]);
    }

    #[test]
    fn tiny_2d_by_hand_stride_dilation() {
        // 4x4 ramp, 2x2 ones kernel, stride 2: sums of 2x2 blocks.
        let x = t(&[1, 1, 4, 4], &(0..16).map(f64::from).collect::<Vec<_>>());
        let w = t(&[1, 1, 2, 2], &[1.; 4]);
        let y = conv(&x, &w, None, &ConvParams::unit(2).with_stride(vec![2, 2])).unwrap();
        assert_eq!(y.shape, vec![1, 1, 2, 2]);
        assert_eq!(y.data, vec![10., 18., 42., 50.]);
        // Dilation 2 picks corners x[0,0]+x[0,2]+x[2,0]+x[2,2] = 0+2+8+10.
        let y = conv(&x, &w, None, &ConvParams::unit(2).with_dilation(vec![2, 2])).unwrap();
        assert_eq!(y.shape, vec![1, 1, 2, 2]);
        assert_eq!(y.data[0], 20.0);
    }

    #[test]
    fn groups_are_independent() {
        // Two channels, depthwise identity-ish kernels scaling by 1 and 10.
        let x = t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
        let w = t(&[2, 1, 1, 1], &[1., 10.]);
        let y = conv(&x, &w, None, &ConvParams::unit(2).with_groups(2)).unwrap();
        assert_eq!(y.data, vec![1., 2., 30., 40.]);
        assert!(conv(&x, &w, None, &ConvParams::unit(2).with_groups(3)).is_err());
    }

    #[test]
    fn causal_even_kernel_and_last_tap() {
        // Kernel [a, b] becomes [0, a, b]; y[t] = a x[t-1] + b x[t].
        let x = t(&[1, 1, 3], &[1., 2., 3.]);
        let w = t(&[1, 1, 2], &[10., 1.]);
        let y = causal_conv1d(&x, &w, None).unwrap();
        assert_eq!(y.data, vec![1., 12., 23.]);
    }

    #[test]
    fn same_padding_even_kernels_pad_right() {
        assert_eq!(same_padding(&[3, 4], &[1, 1]), vec![(1, 1), (1, 2)]);
        assert_eq!(same_padding(&[3], &[2]), vec![(2, 2)]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = t(&[1, 1, 2, 2], &[0.; 4]);
        let w = t(&[1, 1, 3, 3], &[0.; 9]);
        assert!(conv(&x, &w, None, &ConvParams::unit(2)).is_err());
        assert!(conv(&x, &w, Some(&[0.0, 1.0]), &ConvParams::same(&[3, 3])).is_err());
        let w1 = t(&[1, 1, 3], &[0.; 3]);
        assert!(conv(&x, &w1, None, &ConvParams::unit(1)).is_err());
    }
}
