//! The two backward convs of a 2-D conv on the sgemm micro-kernels, for any stride,
//! padding, dilation and group count.
//!
//! - Filter gradient: per image and group, `dW[og, cg·kh·kw] += dY[og, ho·wo] ·
//!   col(x)ᵀ` where `col(x)` is the forward's im2col unfolding. Images are spread over
//!   rayon, each thread summing into a private `dW`, the partial sums added at the end.
//! - Data gradient by col2im: per image and group, `col = Wᵀ[cg·kh·kw, og] ·
//!   dY[og, ho·wo]`, then every column entry is added back to the input pixel it was
//!   unfolded from. Covers every geometry; [`conv2d_backward_data_as_forward`] is the
//!   faster route for stride-1 convs.
//! - Data gradient as a forward conv (stride 1): `dX = conv(dY, W')` with `W'` the
//!   weight flipped in space and with its channel axes swapped per group, padded by
//!   `d·(k−1) − p`, run by [`conv2d_im2col`] or [`conv2d_winograd`].

use rayon::prelude::*;

use super::conv_direct::{conv2d_direct_packed, DirectFilter};
use super::conv_im2col::{conv2d_im2col, im2col};
use super::conv_params::{Conv2d, ConvError, Epilogue};
use super::isa::Isa;
use super::pack::MatRef;
use super::sgemm::{sgemm, Par};
use super::winograd::{conv2d_winograd, WinogradFilter};
use super::winograd_transform::WinogradTile;

/// `dw = ∂L/∂W` from the input `x` and the output gradient `dy` of the conv `p`.
pub fn conv2d_backward_filter(
    isa: Isa,
    p: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), ConvError> {
    let (ho, wo) = p.check(x.len(), dw.len(), dy.len(), &Epilogue::default())?;
    let (in_img, out_img) = (p.ci * p.h * p.w, p.co * ho * wo);
    dw.fill(0.0);
    if p.n == 0 || out_img == 0 {
        return Ok(());
    }
    let (cg, og) = (p.ci / p.groups, p.co / p.groups);
    let (k, hw) = (cg * p.kh * p.kw, ho * wo);
    let col_len = cg * p.kh * p.kw * hw;
    // One image into `acc` (β = 1: the images sum).
    let image = |x: &[f32], dy: &[f32], col: &mut [f32], acc: &mut [f32], par: Par| {
        for g in 0..p.groups {
            let xg = &x[g * cg * p.h * p.w..(g + 1) * cg * p.h * p.w];
            im2col(p, (ho, wo), xg, col);
            let a = MatRef::row_major(&dy[g * og * hw..(g + 1) * og * hw], hw);
            let b = MatRef::transposed(col, hw);
            let c = &mut acc[g * og * k..(g + 1) * og * k];
            sgemm(isa, og, k, hw, 1.0, a, b, 1.0, c, k, par);
        }
    };
    let threads = rayon::current_num_threads();
    if p.n >= 2 && threads > 1 {
        let len = dw.len();
        let sum = sum_images(
            (x, in_img),
            (dy, out_img),
            || (vec![0.0; col_len], vec![0.0; len]),
            |col, acc, x, dy| image(x, dy, col, acc, Par::Serial),
        );
        if let Some(s) = sum {
            dw.copy_from_slice(&s);
        }
    } else {
        let mut col = vec![0.0; col_len];
        for (x, dy) in x.chunks(in_img).zip(dy.chunks(out_img)) {
            image(x, dy, &mut col, dw, Par::Rayon);
        }
    }
    Ok(())
}

/// Sums a filter gradient over the images of `x` and `dy` (each `(data, floats per
/// image)`), spread over rayon: the images go in one contiguous run per thread, each
/// run summed in order into its own accumulator with its own scratch (`init`), and
/// the runs' sums are added in run order. So the result does not depend on how rayon
/// schedules the runs (a `fold` and `reduce` over rayon's adaptive splits grouped
/// the images by which jobs were stolen: a training run gave other bytes from inside
/// rayon's pool than from outside it). `image(scratch, acc, x, dy)` adds one image.
/// `None` when there are no images.
pub(super) fn sum_images<S: Send>(
    (x, in_img): (&[f32], usize),
    (dy, out_img): (&[f32], usize),
    init: impl Fn() -> (S, Vec<f32>) + Sync + Send,
    image: impl Fn(&mut S, &mut [f32], &[f32], &[f32]) + Sync + Send,
) -> Option<Vec<f32>> {
    let pairs: Vec<(&[f32], &[f32])> = x.chunks(in_img).zip(dy.chunks(out_img)).collect();
    let runs = rayon::current_num_threads().clamp(1, pairs.len().max(1));
    let per = pairs.len().div_ceil(runs).max(1);
    let sums: Vec<Vec<f32>> = pairs
        .par_chunks(per)
        .map(|run| {
            let (mut s, mut acc) = init();
            for &(x, dy) in run {
                image(&mut s, &mut acc, x, dy);
            }
            acc
        })
        .collect();
    let mut sums = sums.into_iter();
    let mut total = sums.next()?;
    for part in sums {
        total.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    Some(total)
}

/// `dx = ∂L/∂x` from the output gradient `dy` and the weight `w` of the conv `p`, by
/// GEMM and col2im.
pub fn conv2d_backward_data_col2im(
    isa: Isa,
    p: &Conv2d,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<(), ConvError> {
    let (ho, wo) = p.check(dx.len(), w.len(), dy.len(), &Epilogue::default())?;
    let (in_img, out_img) = (p.ci * p.h * p.w, p.co * ho * wo);
    if p.n == 0 || in_img == 0 {
        return Ok(());
    }
    let (cg, og) = (p.ci / p.groups, p.co / p.groups);
    let (k, hw) = (cg * p.kh * p.kw, ho * wo);
    let col_len = k * hw;
    let image = |dy: &[f32], dx: &mut [f32], col: &mut [f32], par: Par| {
        dx.fill(0.0);
        if hw == 0 {
            return;
        }
        for g in 0..p.groups {
            let a = MatRef::transposed(&w[g * og * k..(g + 1) * og * k], k);
            let b = MatRef::row_major(&dy[g * og * hw..(g + 1) * og * hw], hw);
            sgemm(isa, k, hw, og, 1.0, a, b, 0.0, col, hw, par);
            col2im(
                p,
                (ho, wo),
                col,
                &mut dx[g * cg * p.h * p.w..(g + 1) * cg * p.h * p.w],
            );
        }
    };
    let threads = rayon::current_num_threads();
    if p.n >= threads && threads > 1 {
        dy.par_chunks(out_img)
            .zip(dx.par_chunks_mut(in_img))
            .for_each_init(
                || vec![0.0; col_len],
                |col, (dy, dx)| image(dy, dx, col, Par::Serial),
            );
    } else {
        let mut col = vec![0.0; col_len];
        for (dy, dx) in dy.chunks(out_img).zip(dx.chunks_mut(in_img)) {
            image(dy, dx, &mut col, Par::Rayon);
        }
    }
    Ok(())
}

/// Adds each entry of `col` (`[cg·kh·kw, ho·wo]`) into the pixel of `x` (`cg` planes
/// of `h × w`) that im2col read it from; entries read from the padding are dropped.
fn col2im(p: &Conv2d, (ho, wo): (usize, usize), col: &[f32], x: &mut [f32]) {
    let (sh, sw) = p.stride;
    let (ph, pw) = p.pad;
    let (dh, dw) = p.dilation;
    let mut rows = col.chunks_exact(ho * wo);
    for c in 0..x.len() / (p.h * p.w) {
        let plane = &mut x[c * p.h * p.w..(c + 1) * p.h * p.w];
        for ki in 0..p.kh {
            for kj in 0..p.kw {
                let row = rows.next().expect("col holds cg·kh·kw rows");
                // Output columns whose input column ox·sw + kj·dw − pw is inside.
                let off = (kj * dw) as isize - pw as isize;
                let lo = if off >= 0 {
                    0
                } else {
                    ((-off) as usize).div_ceil(sw)
                };
                let hi = if (p.w as isize) <= off {
                    0
                } else {
                    ((p.w as isize - off) as usize).div_ceil(sw).min(wo)
                };
                let lo = lo.min(hi);
                for oy in 0..ho {
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy < 0 || iy >= p.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * p.w..(iy as usize + 1) * p.w];
                    let src = &row[oy * wo + lo..oy * wo + hi];
                    let start = (lo as isize * sw as isize + off) as usize;
                    if sw == 1 {
                        let d = &mut dst[start..start + src.len()];
                        d.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    } else {
                        for (i, s) in src.iter().enumerate() {
                            dst[start + i * sw] += s;
                        }
                    }
                }
            }
        }
    }
}

/// The forward conv whose output is `dx` for the stride-1 conv `p`, when there is
/// one: stride 1 and padding at most `d·(k−1)` on each axis.
pub fn data_as_forward(p: &Conv2d) -> Option<Conv2d> {
    let (dh, dw) = p.dilation;
    let (qh, qw) = (dh * (p.kh - 1), dw * (p.kw - 1));
    if p.stride != (1, 1) || p.pad.0 > qh || p.pad.1 > qw || p.kh == 0 || p.kw == 0 {
        return None;
    }
    let (ho, wo) = p.out_hw().ok()?;
    Some(Conv2d {
        n: p.n,
        ci: p.co,
        h: ho,
        w: wo,
        co: p.ci,
        kh: p.kh,
        kw: p.kw,
        stride: (1, 1),
        pad: (qh - p.pad.0, qw - p.pad.1),
        dilation: p.dilation,
        groups: p.groups,
    })
}

/// `W'[g·cg + c, o, i, j] = W[g·og + o, c, kh−1−i, kw−1−j]`: the weight of
/// [`data_as_forward`]'s conv, into `out`'s memory.
fn flip_transpose(p: &Conv2d, w: &[f32], out: &mut Vec<f32>) {
    let (cg, og, taps) = (p.ci / p.groups, p.co / p.groups, p.kh * p.kw);
    out.resize(w.len(), 0.0);
    for g in 0..p.groups {
        for o in 0..og {
            for c in 0..cg {
                let src = &w[((g * og + o) * cg + c) * taps..][..taps];
                let dst = &mut out[((g * cg + c) * og + o) * taps..][..taps];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
}

/// Which forward routine runs a data gradient that is a forward conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsForward {
    /// The sliding-window direct conv.
    Direct,
    Im2col,
    /// Winograd, which needs 3×3, dilation 1, one group.
    Winograd(WinogradTile),
}

/// What [`conv2d_backward_data_as_forward`] keeps from call to call: the flipped
/// weight and its Winograd or direct filter, rewritten in place each time (a training step's
/// weights change every step, and fresh buffers cost page faults and zeroing).
#[derive(Debug, Default)]
pub struct DataScratch {
    flipped: Vec<f32>,
    filter: Option<WinogradFilter>,
    direct: Option<DirectFilter>,
}

/// `dx` of the stride-1 conv `p` as the forward conv [`data_as_forward`], by `how`,
/// the flipped weight and its filter kept in `scratch` from call to call.
pub fn conv2d_backward_data_as_forward(
    isa: Isa,
    p: &Conv2d,
    how: AsForward,
    dy: &[f32],
    w: &[f32],
    scratch: &mut DataScratch,
    dx: &mut [f32],
) -> Result<(), ConvError> {
    p.check(dx.len(), w.len(), dy.len(), &Epilogue::default())?;
    let f = data_as_forward(p).ok_or_else(|| {
        ConvError::Geometry(format!(
            "the data gradient is a forward conv only at stride 1 with padding at most \
             dilation·(k−1), not stride {:?}, padding {:?}",
            p.stride, p.pad
        ))
    })?;
    flip_transpose(p, w, &mut scratch.flipped);
    let wt = &scratch.flipped;
    let epi = Epilogue::default();
    match how {
        AsForward::Direct => {
            let filter = DirectFilter::in_slot(&mut scratch.direct, isa, &f, wt)?;
            conv2d_direct_packed(filter, &f, dy, &epi, dx)
        }
        AsForward::Im2col => conv2d_im2col(isa, &f, dy, wt, &epi, dx),
        AsForward::Winograd(t) => {
            let filter = WinogradFilter::in_slot(&mut scratch.filter, isa, t, wt, f.co, f.ci)?;
            conv2d_winograd(isa, filter, &f, dy, &epi, dx)
        }
    }
}
