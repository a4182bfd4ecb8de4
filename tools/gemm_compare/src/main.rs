//! fnet's own sgemm kernels (`sgemm_own`, never faer) against `gemm`, `nano-gemm`, faer and `matrixmultiply` on the shapes
//! ResNet-20's im2col convs produce and at 2048³, all on 2 threads (nano-gemm has no
//! threading and runs on one), interleaved round by round, best of the rounds.
//!
//! Run: `cargo run --release --manifest-path tools/gemm_compare/Cargo.toml [rounds]`
//! (RMM_NTHREADS=2 is set for matrixmultiply's own thread pool before its first call).

#[path = "../../../src/jit/kernels/mod.rs"]
#[allow(dead_code)]
mod kernels;

use kernels::isa::Isa;
use kernels::pack::MatRef;
use kernels::sgemm::{sgemm_own as sgemm, Par};
use std::time::Instant;

/// (label, m, n, k) with C = A[m×k]·B[k×n], all row-major.
fn shapes() -> Vec<(String, usize, usize, usize)> {
    let mut v = Vec::new();
    // ResNet-20 on CIFAR: (Ci, Co, H·W) per stage, plus the 3→16 stem.
    for (ci, co, hw) in [(3, 16, 1024), (16, 16, 1024), (32, 32, 256), (64, 64, 64)] {
        for batch in [1usize, 64] {
            let k = ci * 9;
            v.push((
                format!("fwd  b{batch:<2} {ci}->{co} {hw}px"),
                co,
                batch * hw,
                k,
            ));
            v.push((
                format!("dW   b{batch:<2} {ci}->{co} {hw}px"),
                co,
                k,
                batch * hw,
            ));
        }
    }
    v.push(("case N64 C32 32x32 (fwd)".into(), 32, 64 * 1024, 288));
    v.push(("2048^3".into(), 2048, 2048, 2048));
    v
}

fn best_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    std::env::set_var("RMM_NTHREADS", "2");
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let isa = Isa::from_env().unwrap_or_else(|e| panic!("{e}"));
    let names = ["fnet", "gemm", "faer", "matrixmultiply", "nano-gemm(1t)"];
    println!("isa {isa}; GFLOP/s, best of {rounds} rounds (each round: every library in turn)");
    println!(
        "{:<30} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "shape (m n k)", names[0], names[1], names[2], "mmul", "nano(1t)"
    );
    pool.install(|| {
        for (label, m, n, k) in shapes() {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
                .collect();
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((2e9 / flops) as usize).clamp(1, 200);
            let mut best = [f64::INFINITY; 5];
            let mut sums = [0f64; 5];
            let nano = nano_gemm::Plan::new_f32(m, n, k);
            for _ in 0..rounds {
                for (lib, slot) in best.iter_mut().enumerate() {
                    if lib == 4 && m * n * k > 1 << 28 {
                        continue; // single-threaded and unpacked: minutes at 2048³
                    }
                    let mut c = vec![0f32; m * n];
                    let t = best_secs(reps, || unsafe {
                        match lib {
                            0 => sgemm(
                                isa,
                                m,
                                n,
                                k,
                                1.0,
                                MatRef::row_major(&a, k),
                                MatRef::row_major(&b, n),
                                0.0,
                                &mut c,
                                n,
                                Par::Rayon,
                            ),
                            1 => gemm::gemm(
                                m,
                                n,
                                k,
                                c.as_mut_ptr(),
                                1,
                                n as isize,
                                false,
                                a.as_ptr(),
                                1,
                                k as isize,
                                b.as_ptr(),
                                1,
                                n as isize,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::Rayon(2),
                            ),
                            2 => faer::linalg::matmul::matmul(
                                faer::MatMut::from_row_major_slice_mut(&mut c, m, n),
                                faer::Accum::Replace,
                                faer::MatRef::from_row_major_slice(&a, m, k),
                                faer::MatRef::from_row_major_slice(&b, k, n),
                                1.0f32,
                                faer::Par::rayon(2),
                            ),
                            3 => matrixmultiply::sgemm(
                                m,
                                k,
                                n,
                                1.0,
                                a.as_ptr(),
                                k as isize,
                                1,
                                b.as_ptr(),
                                n as isize,
                                1,
                                0.0,
                                c.as_mut_ptr(),
                                n as isize,
                                1,
                            ),
                            _ => nano.execute_unchecked(
                                m,
                                n,
                                k,
                                c.as_mut_ptr(),
                                n as isize,
                                1,
                                a.as_ptr(),
                                k as isize,
                                1,
                                b.as_ptr(),
                                n as isize,
                                1,
                                0.0,
                                1.0,
                                false,
                                false,
                            ),
                        }
                    });
                    *slot = slot.min(t);
                    sums[lib] = c.iter().map(|&x| x as f64).sum();
                }
            }
            for lib in 1..5 {
                if best[lib].is_finite() {
                    let rel = (sums[lib] - sums[0]).abs() / (1.0 + sums[0].abs());
                    assert!(
                        rel < 1e-3,
                        "{} disagrees with fnet on {label}: {} vs {}",
                        names[lib],
                        sums[lib],
                        sums[0]
                    );
                }
            }
            let g: Vec<String> = best
                .iter()
                .map(|t| {
                    if t.is_finite() {
                        format!("{:.1}", flops / t / 1e9)
                    } else {
                        "-".into()
                    }
                })
                .collect();
            println!(
                "{:<30} {:>7} {:>7} {:>7} {:>9} {:>9}   ({m} {n} {k})",
                label, g[0], g[1], g[2], g[3], g[4]
            );
        }
    });
}
