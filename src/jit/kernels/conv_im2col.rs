//! conv2d by im2col + sgemm, for any stride, padding, dilation and group count.
//!
//! Per image and group, the receptive fields are unfolded into a column matrix
//! `[ci/g · kh · kw, ho · wo]` and multiplied by the weight viewed as
//! `[co/g, ci/g · kh · kw]`; a 1×1, stride-1, unpadded conv skips the unfolding and
//! reads the input in place. With at least as many images as threads, images are
//! spread over rayon and each GEMM runs serially (no fork per GEMM, one column buffer
//! per thread); otherwise the GEMMs themselves are parallel.

use rayon::prelude::*;

use super::conv_params::{Conv2d, ConvError, Epilogue};
use super::isa::Isa;
use super::pack::MatRef;
use super::sgemm::{sgemm, Par};

/// `out = epilogue(conv2d(input, weight))` with `p`'s geometry.
pub fn conv2d_im2col(
    isa: Isa,
    p: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue,
    out: &mut [f32],
) -> Result<(), ConvError> {
    let (ho, wo) = p.check(input.len(), weight.len(), out.len(), epi)?;
    let (in_img, out_img) = (p.ci * p.h * p.w, p.co * ho * wo);
    if p.n == 0 || out_img == 0 {
        return Ok(());
    }
    let pointwise = p.kh == 1 && p.kw == 1 && p.stride == (1, 1) && p.pad == (0, 0);
    let col_len = if pointwise {
        0
    } else {
        (p.ci / p.groups) * p.kh * p.kw * ho * wo
    };
    let threads = rayon::current_num_threads();
    let image = |(b, (x, y)): (usize, (&[f32], &mut [f32])), col: &mut Vec<f32>, par: Par| {
        image_conv(isa, p, (ho, wo), x, weight, y, col, par);
        if !epi.is_identity() {
            for (co, ch) in y.chunks_mut(ho * wo).enumerate() {
                epi.apply_channel(ch, co, b * out_img + co * ho * wo);
            }
        }
    };
    if p.n >= threads && threads > 1 {
        input
            .par_chunks(in_img)
            .zip(out.par_chunks_mut(out_img))
            .enumerate()
            .for_each_init(
                || vec![0.0; col_len],
                |col, item| image(item, col, Par::Serial),
            );
    } else {
        let mut col = vec![0.0; col_len];
        for item in input
            .chunks(in_img)
            .zip(out.chunks_mut(out_img))
            .enumerate()
        {
            image(item, &mut col, Par::Rayon);
        }
    }
    Ok(())
}

/// One image: a GEMM per group.
#[allow(clippy::too_many_arguments)]
fn image_conv(
    isa: Isa,
    p: &Conv2d,
    (ho, wo): (usize, usize),
    x: &[f32],
    weight: &[f32],
    y: &mut [f32],
    col: &mut [f32],
    par: Par,
) {
    let (cg, og) = (p.ci / p.groups, p.co / p.groups);
    let k = cg * p.kh * p.kw;
    let hw = ho * wo;
    for g in 0..p.groups {
        let xg = &x[g * cg * p.h * p.w..(g + 1) * cg * p.h * p.w];
        let b = if col.is_empty() {
            MatRef::row_major(xg, hw)
        } else {
            im2col(p, (ho, wo), xg, col);
            MatRef::row_major(col, hw)
        };
        let a = MatRef::row_major(&weight[g * og * k..(g + 1) * og * k], k);
        let yg = &mut y[g * og * hw..(g + 1) * og * hw];
        sgemm(isa, og, hw, k, 1.0, a, b, 0.0, yg, hw, par);
    }
}

/// Unfolds `x` (`cg` channels of `h × w`) into `col` (`[cg·kh·kw, ho·wo]`).
pub(super) fn im2col(p: &Conv2d, (ho, wo): (usize, usize), x: &[f32], col: &mut [f32]) {
    let (sh, sw) = p.stride;
    let (ph, pw) = p.pad;
    let (dh, dw) = p.dilation;
    let mut rows = col.chunks_exact_mut(ho * wo);
    for c in 0..x.len() / (p.h * p.w) {
        let plane = &x[c * p.h * p.w..(c + 1) * p.h * p.w];
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
                    let dst = &mut row[oy * wo..(oy + 1) * wo];
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy < 0 || iy >= p.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * p.w..(iy as usize + 1) * p.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    let start = (lo as isize * sw as isize + off) as usize;
                    if sw == 1 {
                        dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        for (i, v) in dst[lo..hi].iter_mut().enumerate() {
                            *v = src[start + i * sw];
                        }
                    }
                }
            }
        }
    }
}
