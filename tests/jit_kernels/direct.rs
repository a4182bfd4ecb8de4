//! The sliding-window direct conv against a naive f64 loop on every ISA: kernel sizes
//! 1 to 5 and 5×3, padding 0 to 2 and asymmetric per axis, dilation, strides 2 to 4 (by
//! input phases), groups (depthwise included), 1×1 maps, channel counts that fill no
//! tile, rows shorter and longer than a vector, the fused epilogue, and what it
//! refuses.

use crate::common::{assert_close, isas, naive_conv, random};
use fnet::jit::kernels::conv_direct::{conv2d_direct, conv2d_direct_packed, DirectFilter};
use fnet::jit::kernels::conv_params::{Conv2d, ConvError, Epilogue};

/// f32 sums of K products: 4·K·ε of the magnitude sum, as for im2col.
fn bound(p: &Conv2d) -> f64 {
    let k = (p.ci / p.groups * p.kh * p.kw) as f64;
    4.0 * (k + 2.0) * f32::EPSILON as f64
}

fn conv(n: usize, ci: usize, (h, w): (usize, usize), co: usize, k: (usize, usize)) -> Conv2d {
    Conv2d {
        n,
        ci,
        h,
        w,
        co,
        kh: k.0,
        kw: k.1,
        stride: (1, 1),
        pad: (0, 0),
        dilation: (1, 1),
        groups: 1,
    }
}

fn cases() -> Vec<Conv2d> {
    vec![
        Conv2d::simple(1, 16, 32, 32, 16, 3, 1), // ResNet-20's first stage
        Conv2d::simple(3, 64, 8, 8, 64, 3, 1),   // its last, several images
        Conv2d::simple(1, 3, 7, 9, 5, 3, 1),
        Conv2d::simple(2, 17, 5, 6, 19, 3, 0),
        Conv2d::simple(1, 5, 1, 1, 7, 3, 1), // 1×1 map
        Conv2d::simple(1, 4, 6, 5, 3, 3, 2),
        Conv2d::simple(2, 33, 12, 12, 40, 1, 0), // pointwise
        Conv2d::simple(1, 2, 9, 40, 9, 5, 2),
        Conv2d {
            pad: (2, 0),
            ..conv(2, 3, (13, 6), 4, (5, 3))
        },
        Conv2d {
            pad: (2, 1),
            dilation: (2, 1),
            ..conv(1, 6, (10, 9), 9, (3, 3))
        },
        Conv2d {
            groups: 3,
            pad: (1, 1),
            ..conv(2, 6, (7, 7), 9, (3, 3))
        },
        Conv2d {
            groups: 8,
            pad: (1, 1),
            ..conv(4, 8, (8, 7), 8, (3, 3))
        },
        Conv2d {
            pad: (0, 3),
            ..conv(1, 4, (1, 50), 6, (1, 7)) // a 1-D conv
        },
        // Strides: phases with 4, 2, 2 and 1 taps (ResNet-20's downsampling).
        Conv2d {
            stride: (2, 2),
            pad: (1, 1),
            ..conv(2, 16, (32, 32), 32, (3, 3))
        },
        Conv2d {
            stride: (2, 2),
            pad: (1, 1),
            ..conv(1, 5, (7, 9), 6, (3, 3)) // odd sizes
        },
        Conv2d {
            stride: (2, 1),
            pad: (2, 0),
            ..conv(2, 3, (13, 6), 4, (5, 3))
        },
        Conv2d {
            stride: (1, 2),
            pad: (1, 3),
            ..conv(1, 3, (6, 11), 5, (3, 5)) // column phases only, odd padding
        },
        Conv2d {
            stride: (3, 3),
            pad: (2, 1),
            dilation: (2, 1),
            ..conv(1, 4, (14, 11), 5, (3, 3)) // taps on every phase, none on some
        },
        Conv2d {
            stride: (1, 2),
            pad: (1, 5),
            dilation: (1, 2),
            ..conv(1, 3, (5, 7), 4, (3, 3)) // columns of outputs that read only padding
        },
        Conv2d {
            stride: (2, 2),
            groups: 4,
            pad: (1, 1),
            ..conv(2, 8, (9, 9), 12, (3, 3))
        },
        Conv2d {
            stride: (2, 2),
            ..conv(2, 16, (8, 8), 32, (1, 1)) // a strided pointwise conv: one phase
        },
        Conv2d {
            stride: (4, 4),
            pad: (1, 1),
            ..conv(1, 3, (5, 5), 2, (3, 3)) // a 2×2 output
        },
    ]
}

#[test]
fn matches_naive_on_awkward_geometry_every_isa() {
    for (i, p) in cases().iter().enumerate() {
        let x = random(p.n * p.ci * p.h * p.w, 100 + i as u64);
        let w = random(p.co * (p.ci / p.groups) * p.kh * p.kw, 200 + i as u64);
        let (want, scale) = naive_conv(p, &x, &w);
        for isa in isas() {
            let mut out = vec![f32::NAN; want.len()];
            conv2d_direct(isa, p, &x, &w, &Epilogue::default(), &mut out).unwrap();
            assert_close(&out, &want, &scale, bound(p), &format!("{isa} {p:?}"));
        }
    }
}

/// One packed filter run on several inputs in turn, as a bound weight is: the padded
/// images it keeps between runs (one per thread) must hold nothing of the last input.
/// On one thread and on two, a stride-1 and a stride-2 conv, a single image (the
/// threads share its tiles) and three (each pads its own).
#[test]
fn packed_filter_reruns_on_new_inputs() {
    for (threads, n, stride) in [(1, 1, 1), (2, 1, 1), (2, 1, 2), (2, 3, 1), (2, 3, 2)] {
        let p = Conv2d {
            stride: (stride, stride),
            ..Conv2d::simple(n, 32, 16, 16, 32, 3, 1)
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let w = random(p.co * p.ci * 9, 5);
        for isa in isas() {
            let filter = pool.install(|| DirectFilter::new(isa, &p, &w)).unwrap();
            for seed in 0..3u64 {
                // Zeros where the last input had values, then values again.
                let mut x = random(p.n * p.ci * p.h * p.w, 10 + seed);
                if seed == 1 {
                    x.iter_mut().step_by(3).for_each(|v| *v = 0.0);
                }
                let (want, scale) = naive_conv(&p, &x, &w);
                let mut out = vec![f32::NAN; want.len()];
                pool.install(|| {
                    conv2d_direct_packed(&filter, &p, &x, &Epilogue::default(), &mut out)
                })
                .unwrap();
                let what = format!("{isa} {threads} threads, run {seed}: {p:?}");
                assert_close(&out, &want, &scale, bound(&p), &what);
            }
        }
    }
}

#[test]
fn fused_epilogue_bias_residual_relu() {
    for p in [
        Conv2d::simple(3, 5, 6, 7, 11, 3, 1),
        Conv2d::simple(1, 16, 16, 16, 16, 3, 1),
    ] {
        let x = random(p.n * p.ci * p.h * p.w, 1);
        let w = random(p.co * p.ci * 9, 2);
        let bias = random(p.co, 3);
        let (want, scale) = naive_conv(&p, &x, &w);
        let res = random(want.len(), 4);
        let hw = want.len() / (p.n * p.co);
        let want: Vec<f64> = want
            .iter()
            .enumerate()
            .map(|(i, v)| (v + bias[(i / hw) % p.co] as f64 + res[i] as f64).max(0.0))
            .collect();
        assert!(want.contains(&0.0) && want.iter().any(|v| *v > 0.0));
        let scale: Vec<f64> = scale.iter().map(|s| s + 2.0).collect();
        for isa in isas() {
            for residual in [false, true] {
                let want: Vec<f64> = if residual {
                    want.clone()
                } else {
                    let (raw, _) = naive_conv(&p, &x, &w);
                    raw.iter()
                        .enumerate()
                        .map(|(i, v)| (v + bias[(i / hw) % p.co] as f64).max(0.0))
                        .collect()
                };
                let epi = Epilogue {
                    bias: Some(&bias),
                    residual: residual.then_some(&res[..]),
                    relu: true,
                };
                let mut out = vec![f32::NAN; want.len()];
                conv2d_direct(isa, &p, &x, &w, &epi, &mut out).unwrap();
                assert_close(&out, &want, &scale, bound(&p), &format!("{isa} epilogue"));
            }
        }
    }
}

#[test]
fn refuses_bad_geometry_and_buffers() {
    let isa = isas()[0];
    let p = Conv2d::simple(1, 4, 5, 5, 6, 3, 0);
    let (x, w) = (vec![0.0; 100], vec![0.0; 216]);
    let mut out = vec![0.0; 54];
    assert!(conv2d_direct(isa, &p, &x, &w, &Epilogue::default(), &mut out).is_ok());
    let zero = Conv2d {
        stride: (0, 1),
        ..p
    };
    let e = conv2d_direct(isa, &zero, &x, &w, &Epilogue::default(), &mut out).unwrap_err();
    assert!(matches!(e, ConvError::Geometry(_)), "{e}");
    assert!(e.to_string().contains("stride 0"), "{e}");
    assert!(matches!(
        conv2d_direct(isa, &p, &x[..99], &w, &Epilogue::default(), &mut out),
        Err(ConvError::Buffer { what: "input", .. })
    ));
}
