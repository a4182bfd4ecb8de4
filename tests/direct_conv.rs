//! The interpreter's direct conv (`reference::direct_tiled::conv_direct`) against the
//! plain loop of `reference::conv::conv`, on f32 where the register-blocked AVX2 kernel
//! runs, on the forced portable fallback (`conv_direct_tiled`), and on f64 (always the
//! fallback). The blocked kernel sums in another order, so the tolerance scales with
//! the magnitude of the terms summed.

use fnet::reference::conv::{conv, ConvParams};
use fnet::reference::direct_blocked::{blocked_applies, conv_blocked, MIN_CHANNELS, TILE};
use fnet::reference::direct_tiled::{conv_direct, conv_direct_tiled};
use fnet::tensor::{Scalar, Tensor};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

fn rand_t<T: Scalar>(rng: &mut Pcg64, shape: &[usize]) -> Tensor<T> {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| T::from_f64(rng.random_range(-1.0..1.0)))
        .collect();
    Tensor::from_vec(shape.to_vec(), data).unwrap()
}

/// One geometry: batch, in and out channels, groups, and per spatial dim the input
/// size, kernel, stride, dilation and padding.
#[derive(Clone, Debug)]
struct Case {
    b: usize,
    ci: usize,
    co: usize,
    g: usize,
    n: Vec<usize>,
    k: Vec<usize>,
    p: ConvParams,
}

fn case(b: usize, ci: usize, co: usize, n: &[usize], k: &[usize], p: ConvParams) -> Case {
    let g = p.groups;
    Case {
        b,
        ci,
        co,
        g,
        n: n.to_vec(),
        k: k.to_vec(),
        p,
    }
}

/// `got` equals `conv` on `c` to `tol` × (Ci/g · taps), the terms in each sum (all of
/// magnitude ≤ 1), plus the bias.
fn check<T: Scalar>(
    c: &Case,
    seed: u64,
    tol: f64,
    run: impl Fn(&Tensor<T>, &Tensor<T>, Option<&[T]>, &ConvParams) -> Tensor<T>,
) {
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut xs = vec![c.b, c.ci];
    xs.extend(&c.n);
    let mut ws = vec![c.co, c.ci / c.g];
    ws.extend(&c.k);
    let x = rand_t::<T>(&mut rng, &xs);
    let w = rand_t::<T>(&mut rng, &ws);
    let bias: Vec<T> = (0..c.co)
        .map(|o| T::from_f64(o as f64 * 0.25 - 1.0))
        .collect();
    let terms = (c.ci / c.g * c.k.iter().product::<usize>()) as f64;
    for b in [Some(&bias[..]), None] {
        let want = conv(&x, &w, b, &c.p).unwrap();
        let got = run(&x, &w, b, &c.p);
        assert_eq!(want.shape, got.shape, "{c:?}");
        let err = want.max_abs_diff(&got).unwrap();
        assert!(err <= tol * (terms + 1.0), "{c:?}: err {err:e}");
    }
}

/// Many geometries: 1D and 2D, kernels 1/3/5/7, stride 1/2, dilation 1/2, symmetric,
/// asymmetric and no padding, channels around the 8- and 16-channel blocks, widths
/// around the tile, batch 1 and 3, groups.
fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut rng = Pcg64::seed_from_u64(17);
    for &k in &[1usize, 3, 5, 7] {
        for &s in &[1usize, 2] {
            for &d in &[1usize, 2] {
                for (i, &(ci, co)) in [(3, 16), (16, 16), (5, 9), (8, 24), (17, 33), (4, 4)]
                    .iter()
                    .enumerate()
                {
                    let b = [1, 3][(k + s + d + i) % 2];
                    let pad = [(0, 0), (k / 2, k / 2), (d * (k - 1), 0), (1, 2)][(i + k) % 4];
                    let len = d * (k - 1) + 1 + rng.random_range(0..40);
                    let p1 = ConvParams::unit(1)
                        .with_stride(vec![s])
                        .with_dilation(vec![d])
                        .with_padding(vec![pad]);
                    v.push(case(b, ci, co, &[len], &[k], p1));
                    let (h, w) = (
                        d * (k - 1) + 1 + rng.random_range(0..12),
                        d * (k - 1) + 1 + rng.random_range(0..20),
                    );
                    let p2 = ConvParams::unit(2)
                        .with_stride(vec![s, [1, 2][i % 2]])
                        .with_dilation(vec![d, 1])
                        .with_padding(vec![pad, (k / 2, k / 2)]);
                    v.push(case(b, ci, co, &[h, w], &[k, k], p2));
                }
            }
        }
    }
    // Groups: blocked where a group has enough output channels, else the fallback.
    for &(ci, co, g) in &[
        (16, 32, 2),
        (12, 12, 3),
        (8, 24, 4),
        (32, 32, 32),
        (6, 18, 2),
    ] {
        let p = ConvParams::same(&[3, 3]).with_groups(g);
        v.push(case(2, ci, co, &[9, 13], &[3, 3], p));
    }
    // ResNet-20's shapes, and widths one either side of the tile.
    for &(c, hw) in &[(16, 32), (32, 16), (64, 8)] {
        v.push(case(2, c, c, &[hw, hw], &[3, 3], ConvParams::same(&[3, 3])));
    }
    for wdt in [TILE - 1, TILE, TILE + 1, 2 * TILE + 1] {
        v.push(case(1, 16, 16, &[1, wdt], &[1, 1], ConvParams::unit(2)));
        v.push(case(3, 8, 16, &[wdt], &[3], ConvParams::same(&[3])));
    }
    v
}

#[test]
fn direct_f32_matches_the_plain_loop() {
    for (i, c) in cases().iter().enumerate() {
        check::<f32>(c, i as u64, 2e-6, |x, w, b, p| {
            conv_direct(x, w, b, p).unwrap()
        });
    }
}

#[test]
fn blocked_kernel_runs_where_it_applies_and_matches() {
    let mut ran = 0;
    for (i, c) in cases().iter().enumerate() {
        let applies = blocked_applies(c.co / c.g);
        check::<f32>(c, i as u64, 2e-6, |x, w, b, p| {
            match conv_blocked(x, w, b, p) {
                Some(y) => y,
                None => {
                    assert!(!applies, "blocked declined {c:?}");
                    conv_direct_tiled(x, w, b, p).unwrap()
                }
            }
        });
        ran += applies as usize;
    }
    if blocked_applies(MIN_CHANNELS) {
        assert!(ran > 150, "the blocked kernel ran on {ran} cases");
        assert!(!blocked_applies(MIN_CHANNELS - 1));
    } else {
        eprintln!("no AVX2+FMA: only the fallback was checked");
    }
}

#[test]
fn forced_fallback_matches_the_plain_loop() {
    for (i, c) in cases().iter().enumerate().step_by(2) {
        check::<f32>(c, i as u64, 2e-6, |x, w, b, p| {
            conv_direct_tiled(x, w, b, p).unwrap()
        });
        check::<f64>(c, i as u64, 1e-14, |x, w, b, p| {
            conv_direct(x, w, b, p).unwrap()
        });
    }
}

#[test]
fn blocked_kernel_declines_other_types_and_bad_shapes() {
    let x = Tensor::<f64>::zeros(vec![1, 16, 8, 8]);
    let w = Tensor::<f64>::zeros(vec![16, 16, 3, 3]);
    assert!(conv_blocked(&x, &w, None, &ConvParams::unit(2)).is_none());
    let x = Tensor::<f32>::zeros(vec![1, 16, 2, 2]);
    let w = Tensor::<f32>::zeros(vec![16, 16, 3, 3]);
    assert!(conv_blocked(&x, &w, None, &ConvParams::unit(2)).is_none());
    assert!(conv_direct(&x, &w, None, &ConvParams::unit(2)).is_err());
    let x = Tensor::<f32>::zeros(vec![1, 16, 8, 8]);
    assert!(conv_direct(&x, &w, Some(&[1.0; 3]), &ConvParams::unit(2)).is_err());
    let w1 = Tensor::<f32>::zeros(vec![16, 8, 3, 3]);
    assert!(conv_direct(&x, &w1, None, &ConvParams::unit(2)).is_err());
}

#[test]
fn a_wrong_tap_is_caught() {
    // The check is sharp enough to see one weight moved to the wrong tap.
    let c = case(1, 16, 16, &[8, 8], &[3, 3], ConvParams::same(&[3, 3]));
    let result = std::panic::catch_unwind(|| {
        check::<f32>(&c, 3, 2e-6, |x, w, b, p| {
            let mut w2 = w.clone();
            w2.data.swap(0, 1);
            conv_direct(x, &w2, b, p).unwrap()
        })
    });
    assert!(result.is_err());
}
