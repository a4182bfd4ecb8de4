//! Winograd F(2×2,3×3), F(4×4,3×3), F(2×2,5×5) and F(4×4,5×5) against a naive f64
//! conv, within a bound scaled to the magnitude of the terms of each output's tile.
//!
//! An output's error is relative to its whole m×m tile, not its own receptive field:
//! the transforms mix the tile's inputs, and terms that cancel exactly in real
//! arithmetic leave f32 residue (an output whose field is all padding is not exactly 0).
//! So the scale is Σ|w·x| summed over the outputs of the tile. Bounds (error / scale):
//! F2 ≤ 5e-7 and F4 ≤ 2e-6 with ci up to 40 (f32 ε is 1.2e-7). Measured worst on these
//! cases: F2 1.2e-7, F4 4.3e-7 (`-- --nocapture` prints them; F4's was 2.3e-7 while
//! the filter transform ran in f64, now in f32). F4 is given more room:
//! its transforms scale by up to 8 (output) and 5 (input), its points ±2 are further
//! from 0, and on the per-output scale its worst was 3.5e-6 against F2's 1.9e-7.
//! The 5×5 variants: F(2×2, 5×5) has F4's points, and F(4×4, 5×5) adds ±½, whose
//! transforms scale by up to 5.25 (input) and 8 (output) with filter entries down to
//! 1/90 (F(6×6, 3×3)'s points, the largest tile in common use in f32); measured worst
//! F(2×2, 5×5) 2.3e-6, F(4×4, 5×5) 9.2e-6 (with the filter transform in f64: 1.7e-6
//! and 1.3e-5; both on a 1×1 map, all but the centre tap in the padding).

use crate::common::{assert_close, isas, naive_conv, random};
use fnet::jit::kernels::conv_params::{Conv2d, ConvError, Epilogue};
use fnet::jit::kernels::isa::{Isa, IsaKind};
use fnet::jit::kernels::winograd::{
    chunking, conv2d_winograd, conv2d_winograd_in, Chunking, WinogradFilter, WinogradLayout,
};
use fnet::jit::kernels::winograd_transform::WinogradTile;

const F2_BOUND: f64 = 5e-7;
const F4_BOUND: f64 = 2e-6;
const F2K5_BOUND: f64 = 5e-6;
const F4K5_BOUND: f64 = 5e-5;

/// The variants for a `k × k` kernel, with their bounds.
fn tiles(k: usize) -> [(WinogradTile, f64); 2] {
    if k == 5 {
        [
            (WinogradTile::F2K5, F2K5_BOUND),
            (WinogradTile::F4K5, F4K5_BOUND),
        ]
    } else {
        [(WinogradTile::F2, F2_BOUND), (WinogradTile::F4, F4_BOUND)]
    }
}

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
        // Padding wider than the kernel: the last tiles' windows are all padding (the
        // strips once had a slot fewer than F(2×2)'s 6 tiles a row here).
        Conv2d::simple(2, 3, 4, 4, 2, 3, 5),
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
        // 5×5 kernels (FlexNet's cropped FlexConvs), the same awkward sizes.
        Conv2d::simple(1, 1, 1, 1, 1, 5, 2),
        Conv2d::simple(1, 5, 1, 1, 7, 5, 2),
        Conv2d::simple(1, 3, 7, 9, 5, 5, 2),
        Conv2d::simple(2, 17, 6, 7, 19, 5, 0),
        Conv2d::simple(1, 4, 6, 5, 3, 5, 4),
        Conv2d::simple(3, 8, 20, 20, 8, 5, 2),
        Conv2d::simple(1, 40, 9, 9, 33, 5, 2),
        Conv2d {
            pad: (0, 3),
            ..Conv2d::simple(2, 3, 5, 4, 2, 5, 0)
        },
        Conv2d::simple(2, 5, 33, 32, 4, 5, 2),
        Conv2d::simple(1, 2, 6, 66, 3, 5, 0),
        Conv2d::simple(2, 24, 32, 32, 24, 5, 2),
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
fn every_tile_matches_naive_every_isa() {
    for (ci, p) in cases().iter().enumerate() {
        let x = random(p.n * p.ci * p.h * p.w, 10 + ci as u64);
        let w = random(p.co * p.ci * p.kh * p.kw, 60 + ci as u64);
        let (want, scale) = naive_conv(p, &x, &w);
        for (isa, layout) in isa_layouts() {
            for (tile, bound) in tiles(p.kh) {
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
    for (k, pad) in [(3, 1), (5, 2)] {
        let p = Conv2d::simple(2, 32, 12, 12, 32, k, pad);
        let x: Vec<f32> = random(p.n * p.ci * p.h * p.w, 7)
            .iter()
            .map(|v| v * 100.0)
            .collect();
        let w: Vec<f32> = random(p.co * p.ci * k * k, 8)
            .iter()
            .map(|v| v * 10.0)
            .collect();
        let (want, scale) = naive_conv(&p, &x, &w);
        for (isa, layout) in isa_layouts() {
            for (tile, bound) in tiles(k) {
                let f = WinogradFilter::new(isa, tile, &w, p.co, p.ci).unwrap();
                let mut out = vec![0.0; want.len()];
                conv2d_winograd_in(layout, isa, &f, &p, &x, &Epilogue::default(), &mut out)
                    .unwrap();
                let scale = tile_scale(&p, &scale, tile.m());
                let what = format!("{isa} {layout:?} {tile:?} large");
                assert_close(&out, &want, &scale, bound, &what);
            }
        }
    }
}

#[test]
fn fused_epilogue() {
    for (k, pad) in [(3, 1), (5, 2)] {
        fused_epilogue_k(k, pad);
    }
}

fn fused_epilogue_k(k: usize, pad: usize) {
    let p = Conv2d::simple(2, 6, 7, 7, 5, k, pad);
    let x = random(p.n * p.ci * p.h * p.w, 1);
    let w = random(p.co * p.ci * k * k, 2);
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
        for (tile, bound) in tiles(k) {
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
            assert_close(&out, &want, &scale, bound, &what);
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
            kh: 7,
            kw: 7,
            ..base
        },
        Conv2d {
            kh: 3,
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
    // A filter for another conv: other channels, or a 5×5 conv with a 3×3 filter.
    for other in [
        Conv2d { co: 4, ..base },
        Conv2d {
            kh: 5,
            kw: 5,
            pad: (2, 2),
            ..base
        },
    ] {
        assert!(matches!(
            conv2d_winograd(isa, &f, &other, &x, &Epilogue::default(), &mut out),
            Err(ConvError::Geometry(_))
        ));
    }
    assert_eq!(WinogradTile::new(2, 7), None);
    assert_eq!(WinogradTile::new(4, 5), Some(WinogradTile::F4K5));
    assert!(WinogradFilter::new(isa, WinogradTile::F4, &w[..10], 2, 3).is_err());
    // A 3×3 weight is not a 5×5 one.
    assert!(WinogradFilter::new(isa, WinogradTile::F4K5, &w, 2, 3).is_err());
}

/// Chunks are a multiple of the threads where there are fewer than two a thread, whole
/// vector groups otherwise, and together cover the tiles exactly once.
#[test]
fn chunks_cover_the_tiles_and_balance_the_threads() {
    // ResNet-20's 16-channel F(4×4) conv at batch 1: 72 slots, two chunks of 36.
    assert_eq!(
        chunking(72, 36, 16, 16, 2),
        Chunking {
            per: 36,
            stride: 48,
            chunks: 2
        }
    );
    // At batch 64: 4608 slots in the L2-sized chunks of 96, as before.
    assert_eq!(
        chunking(4608, 36, 16, 16, 2),
        Chunking {
            per: 96,
            stride: 96,
            chunks: 48
        }
    );
    // One vector group's worth is one chunk.
    assert_eq!(chunking(10, 36, 16, 16, 2).chunks, 1);
    for tiles in [1, 7, 16, 17, 33, 72, 100, 257, 1000, 5000] {
        for threads in [1, 2, 3, 8] {
            let c = chunking(tiles, 36, 16, 16, threads);
            assert!(
                c.chunks * c.per >= tiles && (c.chunks - 1) * c.per < tiles,
                "{c:?}"
            );
            assert!(c.stride >= c.per && c.stride.is_multiple_of(16), "{c:?}");
        }
    }
}

/// The same conv in rayon pools of 1, 3 and 4 threads (other chunkings than the test
/// machine's) matches the naive conv.
#[test]
fn any_thread_count_matches_naive() {
    for (k, pad) in [(3, 1), (5, 2)] {
        let p = Conv2d::simple(1, 16, 32, 32, 16, k, pad);
        let x = random(p.n * p.ci * p.h * p.w, 21);
        let w = random(p.co * p.ci * k * k, 22);
        let (want, scale) = naive_conv(&p, &x, &w);
        for threads in [1, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (isa, layout) in isa_layouts() {
                for (tile, bound) in tiles(k) {
                    let f = WinogradFilter::new(isa, tile, &w, p.co, p.ci).unwrap();
                    let mut out = vec![f32::NAN; want.len()];
                    pool.install(|| {
                        conv2d_winograd_in(layout, isa, &f, &p, &x, &Epilogue::default(), &mut out)
                    })
                    .unwrap();
                    let scale = tile_scale(&p, &scale, tile.m());
                    let what = format!("{isa} {layout:?} {tile:?} {threads} threads");
                    assert_close(&out, &want, &scale, bound, &what);
                }
            }
        }
    }
}

/// A filter refilled with another weight (`WinogradFilter::refill`, what a training
/// step does), in pools of 1, 2 and 3 threads (its transform splits the filters among
/// them from 1024 on), gives the same conv, bit for bit, as a filter built from that
/// weight; `in_slot` refills a filter of the same shape and replaces one of another.
#[test]
fn refilled_filters_equal_new_ones() {
    for (co, ci) in [(33, 40), (5, 3)] {
        let p = Conv2d::simple(2, ci, 9, 7, co, 3, 1);
        let x = random(p.n * p.ci * p.h * p.w, 31);
        let (w1, w2) = (random(co * ci * 9, 32), random(co * ci * 9, 33));
        let conv = |isa, f: &WinogradFilter| {
            let mut out = vec![f32::NAN; p.n * p.co * p.h * p.w];
            conv2d_winograd(isa, f, &p, &x, &Epilogue::default(), &mut out).unwrap();
            out
        };
        for isa in isas() {
            for tile in [WinogradTile::F2, WinogradTile::F4] {
                let want = conv(isa, &WinogradFilter::new(isa, tile, &w2, co, ci).unwrap());
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut f = WinogradFilter::new(isa, tile, &w1, co, ci).unwrap();
                    pool.install(|| f.refill(&w2)).unwrap();
                    let what = format!("{isa} {tile:?} {co}x{ci}, {threads} threads");
                    assert_eq!(conv(isa, &f), want, "{what}");
                    let mut slot = Some(f);
                    let f = WinogradFilter::in_slot(&mut slot, isa, tile, &w2, co, ci).unwrap();
                    assert_eq!(conv(isa, f), want, "{what}: in_slot, same shape");
                }
                // A slot holding another shape's filter gets a new one.
                let other = random(4 * 6 * 9, 34);
                let mut slot = Some(WinogradFilter::new(isa, tile, &other, 4, 6).unwrap());
                let f = WinogradFilter::in_slot(&mut slot, isa, tile, &w2, co, ci).unwrap();
                assert_eq!(conv(isa, f), want, "{isa} {tile:?}: in_slot, another shape");
                let mut f = WinogradFilter::new(isa, tile, &w1, co, ci).unwrap();
                assert!(matches!(
                    f.refill(&w2[1..]),
                    Err(ConvError::Buffer {
                        what: "Winograd weight",
                        ..
                    })
                ));
            }
        }
    }
}
