//! Winograd F(2×2,3×3) and F(4×4,3×3) against a naive f64 conv, within a bound scaled
//! to the magnitude of the terms of each output's tile.
//!
//! An output's error is relative to its whole m×m tile, not its own receptive field:
//! the transforms mix the tile's inputs, and terms that cancel exactly in real
//! arithmetic leave f32 residue (an output whose field is all padding is not exactly 0).
//! So the scale is Σ|w·x| summed over the outputs of the tile. Bounds (error / scale):
//! F2 ≤ 5e-7 and F4 ≤ 2e-6 with ci up to 40 (f32 ε is 1.2e-7). Measured worst on these
//! cases: F2 1.2e-7, F4 2.3e-7 (`-- --nocapture` prints them). F4 is given more room:
//! its transforms scale by up to 8 (output) and 5 (input), its points ±2 are further
//! from 0, and on the per-output scale its worst was 3.5e-6 against F2's 1.9e-7.

use crate::common::{assert_close, isas, naive_conv, random};
use fnet::jit::kernels::conv_params::{Conv2d, ConvError, Epilogue};
use fnet::jit::kernels::isa::{Isa, IsaKind};
use fnet::jit::kernels::winograd::{
    conv2d_winograd, conv2d_winograd_in, WinogradFilter, WinogradLayout,
};
use fnet::jit::kernels::winograd_transform::WinogradTile;

const F2_BOUND: f64 = 5e-7;
const F4_BOUND: f64 = 2e-6;

/// Each output's scale replaced by the sum of the scales of its m×m tile's outputs.
fn tile_scale(p: &Conv2d, scale: &[f64], m: usize) -> Vec<f64> {
    let (ho, wo) = p.out_hw().unwrap();
    let mut out = vec![0.0; scale.len()];
    for (plane_out, plane) in out.chunks_mut(ho * wo).zip(scale.chunks(ho * wo)) {
        for y in 0..ho {
            for x in 0..wo {
                let (ty, tx) = (y / m * m, x / m * m);
                let mut sum = 0.0;
                for yy in ty..(ty + m).min(ho) {
                    for xx in tx..(tx + m).min(wo) {
                        sum += plane[yy * wo + xx];
                    }
                }
                plane_out[y * wo + x] = sum;
            }
        }
    }
    out
}

fn cases() -> Vec<Conv2d> {
    vec![
        Conv2d::simple(1, 1, 1, 1, 1, 3, 1),   // 1×1 map, 1 channel
        Conv2d::simple(1, 5, 1, 1, 7, 3, 1),   // 1×1 map
        Conv2d::simple(1, 3, 7, 9, 5, 3, 1),   // odd sizes
        Conv2d::simple(2, 17, 5, 6, 19, 3, 0), // no padding, channels not a multiple of 8/16
        Conv2d::simple(1, 4, 6, 5, 3, 3, 2),   // wide padding
        Conv2d::simple(3, 8, 20, 20, 8, 3, 1), // several chunks (F2)
        Conv2d::simple(5, 8, 10, 10, 8, 3, 1), // several chunks (F4)
        Conv2d::simple(1, 40, 9, 9, 33, 3, 1),
        Conv2d {
            pad: (0, 2),
            ..Conv2d::simple(2, 3, 4, 3, 2, 3, 0)
        },
        // Rows of 16 or more tiles: lane groups that are one run of a tile row.
        Conv2d::simple(2, 5, 33, 32, 4, 3, 1),
        Conv2d::simple(1, 3, 9, 64, 2, 3, 1),
        Conv2d::simple(1, 2, 6, 66, 3, 3, 0),
        Conv2d {
            pad: (1, 3),
            ..Conv2d::simple(1, 2, 5, 63, 3, 3, 0)
        },
    ]
}

/// Every ISA with the tiled layout, and AVX-512 with the strip layout too.
fn isa_layouts() -> Vec<(Isa, WinogradLayout)> {
    let mut out = Vec::new();
    for isa in isas() {
        out.push((isa, WinogradLayout::Tiles));
        if isa.kind() == IsaKind::Avx512 {
            out.push((isa, WinogradLayout::Strips));
        }
    }
    out
}

#[test]
fn both_tiles_match_naive_every_isa() {
    for (ci, p) in cases().iter().enumerate() {
        let x = random(p.n * p.ci * p.h * p.w, 10 + ci as u64);
        let w = random(p.co * p.ci * 9, 60 + ci as u64);
        let (want, scale) = naive_conv(p, &x, &w);
        for (isa, layout) in isa_layouts() {
            for (tile, bound) in [(WinogradTile::F2, F2_BOUND), (WinogradTile::F4, F4_BOUND)] {
                let f = WinogradFilter::new(isa, tile, &w, p.co, p.ci).unwrap();
                let mut out = vec![f32::NAN; want.len()];
                conv2d_winograd_in(layout, isa, &f, p, &x, &Epilogue::default(), &mut out).unwrap();
                let scale = tile_scale(p, &scale, tile.m());
                let what = format!("{isa} {layout:?} {tile:?} {p:?}");
                let worst = assert_close(&out, &want, &scale, bound, &what);
                eprintln!(
                    "{isa} {layout:?} {tile:?} case {ci}: worst error / magnitude {worst:.2e}"
                );
            }
        }
    }
}

/// Large values (±100 inputs, ±10 weights): the bound is relative, so it holds.
#[test]
fn error_scales_with_magnitude() {
    let p = Conv2d::simple(2, 32, 12, 12, 32, 3, 1);
    let x: Vec<f32> = random(p.n * p.ci * p.h * p.w, 7)
        .iter()
        .map(|v| v * 100.0)
        .collect();
    let w: Vec<f32> = random(p.co * p.ci * 9, 8)
        .iter()
        .map(|v| v * 10.0)
        .collect();
    let (want, scale) = naive_conv(&p, &x, &w);
    for (isa, layout) in isa_layouts() {
        for (tile, bound) in [(WinogradTile::F2, F2_BOUND), (WinogradTile::F4, F4_BOUND)] {
            let f = WinogradFilter::new(isa, tile, &w, p.co, p.ci).unwrap();
            let mut out = vec![0.0; want.len()];
            conv2d_winograd_in(layout, isa, &f, &p, &x, &Epilogue::default(), &mut out).unwrap();
            let scale = tile_scale(&p, &scale, tile.m());
            let what = format!("{isa} {layout:?} {tile:?} large");
            assert_close(&out, &want, &scale, bound, &what);
        }
    }
}

#[test]
fn fused_epilogue() {
    let p = Conv2d::simple(2, 6, 7, 7, 5, 3, 1);
    let x = random(p.n * p.ci * p.h * p.w, 1);
    let w = random(p.co * p.ci * 9, 2);
    let bias = random(p.co, 3);
    let (want, scale) = naive_conv(&p, &x, &w);
    let res = random(want.len(), 4);
    let want: Vec<f64> = want
        .iter()
        .enumerate()
        .map(|(i, v)| (v + bias[(i / 49) % p.co] as f64 + res[i] as f64).max(0.0))
        .collect();
    let scale: Vec<f64> = scale.iter().map(|s| s + 2.0).collect();
    for (isa, layout) in isa_layouts() {
        for tile in [WinogradTile::F2, WinogradTile::F4] {
            let f = WinogradFilter::new(isa, tile, &w, p.co, p.ci).unwrap();
            let mut out = vec![0.0; want.len()];
            let epi = Epilogue {
                bias: Some(&bias),
                residual: Some(&res),
                relu: true,
            };
            conv2d_winograd_in(layout, isa, &f, &p, &x, &epi, &mut out).unwrap();
            let scale = tile_scale(&p, &scale, tile.m());
            let what = format!("{isa} {layout:?} {tile:?} epilogue");
            assert_close(&out, &want, &scale, F4_BOUND, &what);
        }
    }
}

#[test]
fn refuses_what_it_does_not_cover() {
    let isa = isas()[0];
    let w = vec![0.0; 2 * 3 * 9];
    let f = WinogradFilter::new(isa, WinogradTile::F2, &w, 2, 3).unwrap();
    let base = Conv2d::simple(1, 3, 5, 5, 2, 3, 1);
    let x = vec![0.0; 75];
    let mut out = vec![0.0; 50];
    assert!(conv2d_winograd(isa, &f, &base, &x, &Epilogue::default(), &mut out).is_ok());
    for p in [
        Conv2d {
            stride: (2, 2),
            ..base
        },
        Conv2d {
            dilation: (1, 2),
            ..base
        },
        Conv2d {
            kh: 5,
            kw: 5,
            ..base
        },
        Conv2d { groups: 3, ..base },
    ] {
        let e = conv2d_winograd(isa, &f, &p, &x, &Epilogue::default(), &mut out).unwrap_err();
        assert!(
            matches!(e, ConvError::NotWinograd(_)) && e.to_string().contains("im2col"),
            "{e}"
        );
    }
    let other = Conv2d { co: 4, ..base };
    assert!(matches!(
        conv2d_winograd(isa, &f, &other, &x, &Epilogue::default(), &mut out),
        Err(ConvError::Geometry(_))
    ));
    assert!(WinogradFilter::new(isa, WinogradTile::F4, &w[..10], 2, 3).is_err());
}
