//! Shared helpers: a seeded generator and the ISA paths to run.

use fnet::jit::kernels::isa::Isa;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// `len` values uniform in [-1, 1) from `seed`.
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Pcg64::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Every ISA this CPU supports; each test runs all of them (AVX-512, AVX2 and
/// portable on the development machine), so the env variable is not needed.
pub fn isas() -> Vec<Isa> {
    let all = Isa::available();
    assert!(all.iter().any(|i| *i == Isa::portable()));
    all
}

use fnet::jit::kernels::conv_params::Conv2d;

/// Naive conv2d in f64 (PyTorch cross-correlation, zero padding) and, per output, the
/// sum of |w·x| over its receptive field: the scale rounding error is measured against.
pub fn naive_conv(p: &Conv2d, x: &[f32], w: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (ho, wo) = p.out_hw().unwrap();
    let (cg, og) = (p.ci / p.groups, p.co / p.groups);
    let mut out = vec![0.0; p.n * p.co * ho * wo];
    let mut scale = vec![0.0; out.len()];
    for b in 0..p.n {
        for o in 0..p.co {
            let g = o / og;
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut s, mut a) = (0.0f64, 0.0f64);
                    for c in 0..cg {
                        let ic = g * cg + c;
                        for ki in 0..p.kh {
                            for kj in 0..p.kw {
                                let iy = (oy * p.stride.0 + ki * p.dilation.0) as isize
                                    - p.pad.0 as isize;
                                let ix = (ox * p.stride.1 + kj * p.dilation.1) as isize
                                    - p.pad.1 as isize;
                                if iy < 0 || ix < 0 || iy >= p.h as isize || ix >= p.w as isize {
                                    continue;
                                }
                                let xv = x
                                    [((b * p.ci + ic) * p.h + iy as usize) * p.w + ix as usize]
                                    as f64;
                                let wv = w[((o * cg + c) * p.kh + ki) * p.kw + kj] as f64;
                                s += xv * wv;
                                a += (xv * wv).abs();
                            }
                        }
                    }
                    let i = ((b * p.co + o) * ho + oy) * wo + ox;
                    out[i] = s;
                    scale[i] = a;
                }
            }
        }
    }
    (out, scale)
}

/// The largest |got − want| / (scale + tiny), asserting it is at most `bound`.
pub fn assert_close(got: &[f32], want: &[f64], scale: &[f64], bound: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let ratio = (g as f64 - w).abs() / (s + 1e-30);
        assert!(
            g.is_finite() && ratio <= bound,
            "{what}: out[{i}] = {g}, want {w} (scale {s}, ratio {ratio:e} > {bound:e})"
        );
        worst = worst.max(ratio);
    }
    worst
}
