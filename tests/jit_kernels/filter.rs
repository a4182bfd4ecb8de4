//! The two filter-gradient routes (`conv2d_backward_filter` by im2col and GEMM,
//! `conv2d_backward_filter_direct` by sliding windows) against a naive f64 sum on
//! every ISA: channel counts that fill no tile and that take both AVX-512 tile shapes,
//! kernel heights 1 to 5 under 3-wide kernels, padding 0 to 2, height dilation, groups,
//! 1×1 maps, 1-D, batch 1 (tiles spread over the threads) and several images (images
//! spread), and the geometry the sliding windows refuse.

use crate::common::{assert_close, isas, random};
use fnet::jit::kernels::conv_backward::conv2d_backward_filter;
use fnet::jit::kernels::conv_filter_direct::{
    conv2d_backward_filter_direct, filter_direct_applies,
};
use fnet::jit::kernels::conv_params::{Conv2d, ConvError};

/// `dW` and, per element, the sum of the magnitudes of its products.
fn naive_filter(p: &Conv2d, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (ho, wo) = p.out_hw().expect("valid geometry");
    let (cg, og) = (p.ci / p.groups, p.co / p.groups);
    let len = p.co * cg * p.kh * p.kw;
    let (mut dw, mut scale) = (vec![0.0; len], vec![0.0; len]);
    for n in 0..p.n {
        for co in 0..p.co {
            let g = co / og;
            for c in 0..cg {
                for ky in 0..p.kh {
                    for kx in 0..p.kw {
                        let at = ((co * cg + c) * p.kh + ky) * p.kw + kx;
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize
                                    - p.pad.0 as isize;
                                let ix = (ox * p.stride.1 + kx * p.dilation.1) as isize
                                    - p.pad.1 as isize;
                                if iy < 0 || ix < 0 || iy >= p.h as isize || ix >= p.w as isize {
                                    continue;
                                }
                                let xv = x[((n * p.ci + g * cg + c) * p.h + iy as usize) * p.w
                                    + ix as usize] as f64;
                                let d = dy[((n * p.co + co) * ho + oy) * wo + ox] as f64;
                                dw[at] += xv * d;
                                scale[at] += (xv * d).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (dw, scale)
}

fn conv(n: usize, ci: usize, (h, w): (usize, usize), co: usize, kh: usize, pad: usize) -> Conv2d {
    Conv2d {
        n,
        ci,
        h,
        w,
        co,
        kh,
        kw: 3,
        stride: (1, 1),
        pad: (pad, pad),
        dilation: (1, 1),
        groups: 1,
    }
}

fn cases() -> Vec<Conv2d> {
    vec![
        conv(4, 16, (32, 32), 16, 3, 1), // ResNet-20's first stage
        conv(3, 64, (8, 8), 64, 3, 1),   // its last: two lane blocks on AVX-512
        conv(1, 32, (16, 16), 32, 3, 1), // one image: the tiles are spread
        conv(2, 3, (7, 9), 5, 3, 1),
        conv(2, 17, (5, 6), 19, 3, 0),
        conv(3, 5, (1, 1), 7, 3, 1), // 1×1 map
        conv(1, 4, (6, 5), 33, 3, 2),
        conv(2, 7, (9, 11), 6, 1, 0), // a 1×3 kernel
        conv(2, 3, (13, 6), 4, 5, 2), // 5×3
        Conv2d {
            dilation: (2, 1),
            ..conv(2, 6, (10, 9), 9, 3, 1)
        },
        Conv2d {
            groups: 3,
            ..conv(2, 6, (7, 7), 9, 3, 1)
        },
        Conv2d {
            groups: 8,
            ..conv(4, 8, (8, 7), 8, 3, 1) // depthwise
        },
        Conv2d {
            pad: (0, 1),
            ..conv(3, 4, (1, 50), 6, 1, 0) // a 1-D conv
        },
    ]
}

#[test]
fn both_routes_match_naive_on_awkward_geometry_every_isa() {
    for (i, p) in cases().iter().enumerate() {
        let (ho, wo) = p.out_hw().unwrap();
        let x = random(p.n * p.ci * p.h * p.w, 300 + i as u64);
        let dy = random(p.n * p.co * ho * wo, 400 + i as u64);
        let (want, scale) = naive_filter(p, &x, &dy);
        // f32 sums of n·ho·wo products (the routes split them differently).
        let bound = 4.0 * ((p.n * ho * wo) as f64 + 2.0) * f32::EPSILON as f64;
        for isa in isas() {
            let mut got = vec![f32::NAN; want.len()];
            conv2d_backward_filter_direct(isa, p, &x, &dy, &mut got).unwrap();
            assert_close(&got, &want, &scale, bound, &format!("direct {isa} {p:?}"));
            let mut got = vec![f32::NAN; want.len()];
            conv2d_backward_filter(isa, p, &x, &dy, &mut got).unwrap();
            assert_close(&got, &want, &scale, bound, &format!("im2col {isa} {p:?}"));
        }
    }
}

/// Over several images the gradient is the same bits however rayon schedules the
/// work: one contiguous run of images per thread, each summed in order, the runs added
/// in order. Checked bit for bit against that sum of the images' own gradients (each
/// computed alone on one thread), in pools of 2 and 3 threads: with 3 threads and 10
/// images the runs are 4, 4 and 2 images, where rayon's adaptive splits of a `fold`
/// made leaves of 2 and 3 (and more wherever a job was stolen).
#[test]
fn image_sums_do_not_depend_on_the_schedule() {
    let p = conv(10, 3, (8, 8), 5, 3, 1);
    let (ho, wo) = p.out_hw().unwrap();
    let (in_img, out_img) = (p.ci * p.h * p.w, p.co * ho * wo);
    let x = random(p.n * in_img, 71);
    let dy = random(p.n * out_img, 72);
    let one = Conv2d { n: 1, ..p };
    let serial = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for isa in isas() {
        let per_image: Vec<Vec<f32>> = (0..p.n)
            .map(|i| {
                let mut g = vec![0.0; 5 * 3 * 9];
                let (xi, dyi) = (&x[i * in_img..][..in_img], &dy[i * out_img..][..out_img]);
                serial.install(|| conv2d_backward_filter(isa, &one, xi, dyi, &mut g).unwrap());
                g
            })
            .collect();
        for threads in [2, 3] {
            let per = p.n.div_ceil(threads);
            let mut want: Option<Vec<f32>> = None;
            for run in per_image.chunks(per) {
                let mut acc = vec![0.0f32; run[0].len()];
                for g in run {
                    acc.iter_mut().zip(g).for_each(|(a, b)| *a += b);
                }
                match &mut want {
                    None => want = Some(acc),
                    Some(w) => w.iter_mut().zip(&acc).for_each(|(a, b)| *a += b),
                }
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for _ in 0..3 {
                let mut got = vec![f32::NAN; 5 * 3 * 9];
                pool.install(|| conv2d_backward_filter(isa, &p, &x, &dy, &mut got).unwrap());
                assert!(got == *want.as_ref().unwrap(), "{isa}, {threads} threads");
            }
        }
    }
}

#[test]
fn the_sliding_windows_refuse_what_they_do_not_cover() {
    let base = conv(1, 2, (8, 8), 3, 3, 1);
    let refused = [
        Conv2d {
            stride: (2, 2),
            ..base
        },
        Conv2d {
            stride: (1, 2),
            ..base
        },
        Conv2d { kw: 5, ..base },
        Conv2d { kw: 1, ..base },
        Conv2d {
            dilation: (1, 2),
            ..base
        },
    ];
    for p in refused {
        assert!(
            matches!(filter_direct_applies(&p), Err(ConvError::NotDirect(_))),
            "{p:?}"
        );
        let (ho, wo) = p.out_hw().unwrap();
        let x = vec![1.0; p.n * p.ci * p.h * p.w];
        let dy = vec![1.0; p.n * p.co * ho * wo];
        let mut dw = vec![0.0; p.co * p.ci * p.kh * p.kw];
        let err = conv2d_backward_filter_direct(isas()[0], &p, &x, &dy, &mut dw).unwrap_err();
        assert!(matches!(err, ConvError::NotDirect(_)), "{p:?}: {err}");
    }
    // A wrong buffer is a Buffer error, before anything runs.
    let mut dw = vec![0.0; 5];
    let err = conv2d_backward_filter_direct(isas()[0], &base, &[0.0; 128], &[0.0; 192], &mut dw)
        .unwrap_err();
    assert!(
        matches!(err, ConvError::Buffer { what: "weight", .. }),
        "{err}"
    );
}
