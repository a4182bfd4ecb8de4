//! conv2d via im2col + sgemm against a naive f64 loop: strides, padding, dilation,
//! groups, pointwise, 1×1 maps, the fused epilogue, and bad buffers as errors.

use crate::common::{assert_close, isas, naive_conv, random};
use fnet::jit::kernels::conv_im2col::conv2d_im2col;
use fnet::jit::kernels::conv_params::{Conv2d, ConvError, Epilogue};

/// f32 sums of K products: a bound of 4·K·ε of the magnitude sum, ε = 2⁻²³.
fn bound(p: &Conv2d) -> f64 {
    let k = (p.ci / p.groups * p.kh * p.kw) as f64;
    4.0 * (k + 2.0) * f32::EPSILON as f64
}

#[allow(clippy::too_many_arguments)]
fn conv(
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    (kh, kw): (usize, usize),
    s: (usize, usize),
    pad: (usize, usize),
    d: (usize, usize),
    groups: usize,
) -> Conv2d {
    Conv2d {
        n,
        ci,
        h,
        w,
        co,
        kh,
        kw,
        stride: s,
        pad,
        dilation: d,
        groups,
    }
}

fn cases() -> Vec<Conv2d> {
    vec![
        conv(1, 3, 7, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        conv(2, 4, 9, 11, 6, (3, 3), (2, 2), (1, 1), (1, 1), 2),
        conv(1, 6, 10, 9, 9, (3, 3), (1, 2), (2, 1), (2, 2), 3),
        conv(3, 17, 5, 5, 19, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        conv(2, 8, 6, 6, 8, (1, 1), (2, 2), (0, 0), (1, 1), 1),
        conv(1, 5, 1, 1, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        conv(1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        conv(4, 8, 8, 7, 8, (3, 3), (1, 1), (1, 1), (1, 1), 8),
        conv(2, 3, 13, 6, 4, (5, 3), (3, 1), (2, 0), (1, 2), 1),
        conv(1, 33, 12, 12, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ]
}

#[test]
fn matches_naive_on_awkward_geometry_every_isa() {
    for (ci, p) in cases().iter().enumerate() {
        let x = random(p.n * p.ci * p.h * p.w, ci as u64);
        let w = random(p.co * (p.ci / p.groups) * p.kh * p.kw, 50 + ci as u64);
        let (want, scale) = naive_conv(p, &x, &w);
        for isa in isas() {
            let mut out = vec![f32::NAN; want.len()];
            conv2d_im2col(isa, p, &x, &w, &Epilogue::default(), &mut out).unwrap();
            assert_close(&out, &want, &scale, bound(p), &format!("{isa} {p:?}"));
        }
    }
}

#[test]
fn fused_epilogue_bias_residual_relu() {
    let p = conv(3, 5, 6, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1);
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
        let mut out = vec![0.0; want.len()];
        let epi = Epilogue {
            bias: Some(&bias),
            residual: Some(&res),
            relu: true,
        };
        conv2d_im2col(isa, &p, &x, &w, &epi, &mut out).unwrap();
        assert_close(&out, &want, &scale, bound(&p), &format!("{isa} epilogue"));
    }
}

#[test]
fn bad_geometry_and_buffers_are_errors() {
    let isa = isas()[0];
    let p = conv(1, 4, 5, 5, 6, (3, 3), (1, 1), (0, 0), (1, 1), 1);
    let (x, w) = (vec![0.0; 100], vec![0.0; 216]);
    let mut out = vec![0.0; 54];
    assert!(conv2d_im2col(isa, &p, &x, &w, &Epilogue::default(), &mut out).is_ok());
    let err = conv2d_im2col(isa, &p, &x[..99], &w, &Epilogue::default(), &mut out).unwrap_err();
    assert_eq!(
        err,
        ConvError::Buffer {
            what: "input",
            expected: 100,
            got: 99
        }
    );
    assert!(err.to_string().contains("hint"));
    let bias = [0.0; 5];
    let epi = Epilogue {
        bias: Some(&bias),
        ..Default::default()
    };
    assert!(matches!(
        conv2d_im2col(isa, &p, &x, &w, &epi, &mut out),
        Err(ConvError::Buffer { what: "bias", .. })
    ));
    let grouped = Conv2d { groups: 4, ..p };
    assert!(matches!(
        conv2d_im2col(isa, &grouped, &x, &w, &Epilogue::default(), &mut out),
        Err(ConvError::Geometry(_))
    ));
    let too_big = Conv2d { kh: 7, ..p };
    let e = conv2d_im2col(isa, &too_big, &x, &w, &Epilogue::default(), &mut out).unwrap_err();
    assert!(e.to_string().contains("spans 7"), "{e}");
    let zero_stride = Conv2d {
        stride: (0, 1),
        ..p
    };
    assert!(matches!(
        conv2d_im2col(isa, &zero_stride, &x, &w, &Epilogue::default(), &mut out),
        Err(ConvError::Geometry(_))
    ));
}
