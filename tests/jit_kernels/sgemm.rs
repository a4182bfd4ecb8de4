//! sgemm against a naive f64 triple loop: awkward sizes, strides, α/β, packed A.

use crate::common::{isas, random};
use fnet::jit::kernels::pack::MatRef;
use fnet::jit::kernels::sgemm::{sgemm, sgemm_packed, PackedA, Par, KC};

/// Naive `α·A·B + β·C` in f64 with A and B as (rs, cs) views.
#[allow(clippy::too_many_arguments)]
fn naive(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &[f32],
    ldc: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * c[i * ldc + j] as f64
            };
            out[i * n + j] = alpha as f64 * s + old;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
/// Checks C's m×n corner against `want` with an error bound scaled by k, and that the
/// padding columns between n and ldc were not touched.
fn check(
    got: &[f32],
    want: &[f64],
    m: usize,
    n: usize,
    k: usize,
    ldc: usize,
    sentinel: f32,
    what: &str,
) {
    let tol = 1e-6 * (k as f64 + 4.0) * 4.0;
    for i in 0..m {
        for j in 0..ldc {
            let g = got[i * ldc + j];
            if j < n {
                let w = want[i * n + j];
                assert!(
                    (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                    "{what}: C[{i},{j}] = {g}, want {w}"
                );
            } else {
                assert_eq!(
                    g.to_bits(),
                    sentinel.to_bits(),
                    "{what}: padding C[{i},{j}] was written"
                );
            }
        }
    }
}

#[test]
fn awkward_shapes_every_isa() {
    let shapes = [
        (1, 1, 1),
        (1, 37, 5),
        (29, 1, 7),
        (3, 5, 1),
        (7, 33, 13),
        (8, 32, 16),
        (9, 31, 300),
        (17, 65, KC + 3),
        (13, 100, 2 * KC + 1),
        (64, 64, 64),
        (50, 200, 70),
    ];
    for isa in isas() {
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                let a = random(m * k, si as u64);
                let b = random(k * n, 100 + si as u64);
                let ldc = n + 3;
                let sentinel = 7.5;
                let mut c = random(m * ldc, 200 + si as u64);
                for row in c.chunks_mut(ldc) {
                    row[n..].fill(sentinel);
                }
                let (av, bv) = (MatRef::row_major(&a, k), MatRef::row_major(&b, n));
                let want = naive(m, n, k, alpha, av, bv, beta, &c, ldc);
                for par in [Par::Serial, Par::Rayon] {
                    let mut got = c.clone();
                    sgemm(isa, m, n, k, alpha, av, bv, beta, &mut got, ldc, par);
                    check(
                        &got,
                        &want,
                        m,
                        n,
                        k,
                        ldc,
                        sentinel,
                        &format!("{isa} {m}x{n}x{k} α={alpha} β={beta} {par:?}"),
                    );
                }
                let packed = PackedA::new(isa, m, k, av);
                let mut got = c.clone();
                sgemm_packed(isa, &packed, n, alpha, bv, beta, &mut got, ldc, Par::Rayon);
                check(
                    &got,
                    &want,
                    m,
                    n,
                    k,
                    ldc,
                    sentinel,
                    &format!("{isa} packed {m}x{n}x{k}"),
                );
            }
        }
    }
}

#[test]
fn transposed_operands_and_nan_with_beta_zero() {
    let (m, n, k) = (23, 41, 19);
    // A given as its transpose (k×m row-major), B as its transpose (n×k row-major).
    let at = random(k * m, 1);
    let bt = random(n * k, 2);
    let (av, bv) = (MatRef::transposed(&at, m), MatRef::transposed(&bt, k));
    for isa in isas() {
        let mut c = vec![f32::NAN; m * n];
        let want = naive(m, n, k, 1.0, av, bv, 0.0, &c, n);
        sgemm(isa, m, n, k, 1.0, av, bv, 0.0, &mut c, n, Par::Rayon);
        check(&c, &want, m, n, k, n, 0.0, &format!("{isa} transposed"));
    }
}

#[test]
fn k_zero_scales_c() {
    for isa in isas() {
        let mut c = vec![2.0f32; 6];
        sgemm(
            isa,
            2,
            3,
            0,
            1.0,
            MatRef::row_major(&[], 0),
            MatRef::row_major(&[], 3),
            0.5,
            &mut c,
            3,
            Par::Serial,
        );
        assert_eq!(c, vec![1.0; 6]);
        let mut c = vec![f32::NAN; 6];
        sgemm(
            isa,
            2,
            3,
            0,
            1.0,
            MatRef::row_major(&[], 0),
            MatRef::row_major(&[], 3),
            0.0,
            &mut c,
            3,
            Par::Serial,
        );
        assert_eq!(c, vec![0.0; 6]);
    }
}

#[test]
fn large_parallel_product() {
    let (m, n, k) = (130, 300, 260);
    let a = random(m * k, 11);
    let b = random(k * n, 12);
    let (av, bv) = (MatRef::row_major(&a, k), MatRef::row_major(&b, n));
    let want = naive(m, n, k, 1.0, av, bv, 0.0, &[], n);
    for isa in isas() {
        let mut c = vec![0.0; m * n];
        sgemm(isa, m, n, k, 1.0, av, bv, 0.0, &mut c, n, Par::Rayon);
        check(&c, &want, m, n, k, n, 0.0, &format!("{isa} large"));
    }
}

/// The paths only big products take: wide B split by columns across threads and packed
/// in column blocks (row stride past 4096), a long k split across threads, and a
/// transposed B wider than one packed block.
#[test]
fn wide_and_deep_products_take_their_paths() {
    let cases: [(usize, usize, usize, bool); 4] = [
        (16, 4100, 40, false),
        (10, 20, 2100, false),
        (9, 1500, 33, true),
        (70, 2050, 65, false),
    ];
    for (ci, &(m, n, k, bt)) in cases.iter().enumerate() {
        let a = random(m * k, 20 + ci as u64);
        let b = random(k * n, 30 + ci as u64);
        let av = MatRef::row_major(&a, k);
        let bv = if bt {
            MatRef::transposed(&b, k)
        } else {
            MatRef::row_major(&b, n)
        };
        let c0 = random(m * n, 40 + ci as u64);
        let want = naive(m, n, k, 1.5, av, bv, 0.5, &c0, n);
        for isa in isas() {
            let mut c = c0.clone();
            sgemm(isa, m, n, k, 1.5, av, bv, 0.5, &mut c, n, Par::Rayon);
            check(
                &c,
                &want,
                m,
                n,
                k,
                n,
                0.0,
                &format!("{isa} {m}x{n}x{k} bt={bt}"),
            );
        }
    }
}

/// The shapes sgemm hands to faer (on the best ISA only) give the same products: a
/// filter-gradient shape and a large one, with β = 0 over NaN, β = 1 and another β.
#[test]
fn faer_shapes_match_naive() {
    use fnet::jit::kernels::isa::Isa;
    use fnet::jit::kernels::sgemm::uses_faer;
    let best = Isa::best();
    for &(m, n, k) in &[(12usize, 27usize, 1100usize), (100, 420, 400)] {
        assert!(uses_faer(best, m, n, k), "{m}x{n}x{k} should go to faer");
        assert!(!uses_faer(Isa::portable(), m, n, k) || best == Isa::portable());
        let a = random(m * k, 71);
        let b = random(k * n, 72);
        let (av, bv) = (MatRef::row_major(&a, k), MatRef::row_major(&b, n));
        let c0 = random(m * n, 73);
        for beta in [0.0f32, 1.0, -0.5] {
            let want = naive(m, n, k, 0.75, av, bv, beta, &c0, n);
            for isa in isas() {
                let mut c = if beta == 0.0 {
                    vec![f32::NAN; m * n]
                } else {
                    c0.clone()
                };
                sgemm(isa, m, n, k, 0.75, av, bv, beta, &mut c, n, Par::Rayon);
                check(
                    &c,
                    &want,
                    m,
                    n,
                    k,
                    n,
                    0.0,
                    &format!("{isa} {m}x{n}x{k} β={beta}"),
                );
            }
        }
    }
    assert!(
        !uses_faer(best, 32, 256, 288),
        "conv forward shapes stay on fnet's kernels"
    );
}
