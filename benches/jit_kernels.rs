//! GFLOP/s of the JIT's CPU micro-kernels on 2 threads (a rayon pool of 2): sgemm at
//! 2048³ and at the GEMM shapes ResNet-20's im2col convs produce (forward and
//! backward-to-filter, batch 1 and 64), then the 3×3 conv "N64 C32 32×32" (pad 1) in
//! effective GFLOP/s = 2·N·Co·Ci·9·H·W / time by im2col + sgemm, Winograd F(2×2),
//! Winograd F(4×4), the sliding-window direct conv and F(4×4) in the tiled layout,
//! each as a fraction of the 2048³ sgemm rate of the same run, and the five on
//! ResNet-20's 3×3 stride-1 convs at
//! batch 1 and 64, with those convs' filter gradients by im2col + sgemm, by sliding
//! windows and by Winograd F(2×2) and F(4×4) (in the forward's layout, then tiled),
//! ResNet-20's two stride-2 convs by im2col and by the direct routine on the
//! input's phases, FlexNet-7's 5×5 convs (its cropped FlexConvs) by the five routines
//! (Winograd F(2×2, 5×5) and F(4×4, 5×5)), and the Winograd filter transform of
//! ResNet-20's 64-channel weight (`WinogradFilter::new`, which a training step runs for
//! every Winograd conv).
//! Winograd's filter transform is left out of the conv times: it is folded when the
//! weights are bound.
//!
//! `cargo bench --bench jit_kernels [-- rounds]` (best of `rounds`, default 5; the
//! cases take turns within each round). `FNET_JIT_ISA` forces the micro-kernel path.
//! `cargo bench --bench jit_kernels -- dw N C H W reps [K]` times only the K×K filter
//! gradient (3 or 5, padded by K/2) of an N×C×H×W map (C → C channels) the six ways
//! (no sliding windows for 5×5: printed as 0.0).
//! `cargo bench --bench jit_kernels -- transform` times only the filter transform.
//! `cargo bench --bench jit_kernels -- cold N C H W reps` times the F(4×4) conv with
//! its input and output in cache (the same buffers each time) and out of it (copies
//! in turn, 128 MiB in all, more than this machine kind's L3), as a training step
//! reads the forward's activations back.
//! `cargo bench --bench jit_kernels -- conv N C H W reps [K]` times only the conv case
//! (a K×K kernel, 3 or 5, padded by K/2; 3 by default) five ways (F(4×4) also in the
//! tiled layout) and prints one JSON line (seconds, best of reps): what
//! `tools/conv_vs_torch.py` calls between its PyTorch and ONNX Runtime runs.

use fnet::jit::kernels::conv_backward::conv2d_backward_filter;
use fnet::jit::kernels::conv_direct::conv2d_direct;
use fnet::jit::kernels::conv_filter_direct::conv2d_backward_filter_direct;
use fnet::jit::kernels::conv_im2col::conv2d_im2col;
use fnet::jit::kernels::conv_params::{Conv2d, Epilogue};
use fnet::jit::kernels::isa::Isa;
use fnet::jit::kernels::pack::MatRef;
use fnet::jit::kernels::sgemm::{sgemm, Par};
use fnet::jit::kernels::winograd::{
    conv2d_winograd, conv2d_winograd_in, WinogradFilter, WinogradLayout,
};
use fnet::jit::kernels::winograd_filter::{
    conv2d_backward_filter_winograd, conv2d_backward_filter_winograd_in,
};
use fnet::jit::kernels::winograd_transform::WinogradTile;
use std::time::Instant;

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7 + seed * 13) % 23) as f32 - 11.0) / 16.0)
        .collect()
}

/// Best wall time of `reps` calls, after one warm-up call.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The four conv algorithms on one conv (3×3 or 5×5), best of `reps` each: (im2col,
/// F(2×2), F(4×4), sliding-window direct, F(4×4) in the tiled layout).
fn conv_times(isa: Isa, p: &Conv2d, reps: usize) -> [f64; 5] {
    let x = data(p.n * p.ci * p.h * p.w, 1);
    let w = data(p.co * p.ci * p.kh * p.kw, 2);
    let (ho, wo) = p.out_hw().unwrap();
    let mut out = vec![0.0; p.n * p.co * ho * wo];
    let epi = Epilogue::default();
    let filter = |m| {
        let tile = WinogradTile::new(m, p.kh).unwrap();
        WinogradFilter::new(isa, tile, &w, p.co, p.ci).unwrap()
    };
    let (f2, f4) = (filter(2), filter(4));
    [
        best(reps, || {
            conv2d_im2col(isa, p, &x, &w, &epi, &mut out).unwrap()
        }),
        best(reps, || {
            conv2d_winograd(isa, &f2, p, &x, &epi, &mut out).unwrap()
        }),
        best(reps, || {
            conv2d_winograd(isa, &f4, p, &x, &epi, &mut out).unwrap()
        }),
        best(reps, || {
            conv2d_direct(isa, p, &x, &w, &epi, &mut out).unwrap()
        }),
        best(reps, || {
            let tiles = WinogradLayout::Tiles;
            conv2d_winograd_in(tiles, isa, &f4, p, &x, &epi, &mut out).unwrap()
        }),
    ]
}

/// A strided conv by im2col + sgemm and by the direct routine on the input's phases,
/// best of `reps` each.
fn strided_times(isa: Isa, p: &Conv2d, reps: usize) -> [f64; 2] {
    let x = data(p.n * p.ci * p.h * p.w, 1);
    let w = data(p.co * p.ci * 9, 2);
    let (ho, wo) = p.out_hw().unwrap();
    let mut out = vec![0.0; p.n * p.co * ho * wo];
    let epi = Epilogue::default();
    [
        best(reps, || {
            conv2d_im2col(isa, p, &x, &w, &epi, &mut out).unwrap()
        }),
        best(reps, || {
            conv2d_direct(isa, p, &x, &w, &epi, &mut out).unwrap()
        }),
    ]
}

/// The filter gradient of one conv six ways, best of `reps` each: (im2col + sgemm,
/// sliding windows, Winograd F(2×2), F(4×4), both in the layout the forward takes,
/// then both in the tiled layout).
fn filter_times(isa: Isa, p: &Conv2d, reps: usize) -> [f64; 6] {
    let x = data(p.n * p.ci * p.h * p.w, 3);
    let (ho, wo) = p.out_hw().unwrap();
    let dy = data(p.n * p.co * ho * wo, 4);
    let mut dw = vec![0.0; p.co * p.ci * p.kh * p.kw];
    let wino = |m| WinogradTile::new(m, p.kh).unwrap();
    let tiled = WinogradLayout::Tiles;
    [
        best(reps, || {
            conv2d_backward_filter(isa, p, &x, &dy, &mut dw).unwrap()
        }),
        // The sliding windows take 3-wide kernels only.
        if p.kw == 3 {
            best(reps, || {
                conv2d_backward_filter_direct(isa, p, &x, &dy, &mut dw).unwrap()
            })
        } else {
            f64::INFINITY
        },
        best(reps, || {
            conv2d_backward_filter_winograd(isa, wino(2), p, &x, &dy, &mut dw).unwrap()
        }),
        best(reps, || {
            conv2d_backward_filter_winograd(isa, wino(4), p, &x, &dy, &mut dw).unwrap()
        }),
        best(reps, || {
            conv2d_backward_filter_winograd_in(tiled, isa, wino(2), p, &x, &dy, &mut dw).unwrap()
        }),
        best(reps, || {
            conv2d_backward_filter_winograd_in(tiled, isa, wino(4), p, &x, &dy, &mut dw).unwrap()
        }),
    ]
}

fn sgemm_secs(isa: Isa, (m, n, k): (usize, usize, usize), reps: usize) -> f64 {
    let a = data(m * k, 3);
    let b = data(k * n, 4);
    let mut c = vec![0.0; m * n];
    let (av, bv) = (MatRef::row_major(&a, k), MatRef::row_major(&b, n));
    best(reps, || {
        sgemm(isa, m, n, k, 1.0, av, bv, 0.0, &mut c, n, Par::Rayon)
    })
}

/// `MODE N C H W reps [K]`: a C → C channel K×K conv (3 or 5, padded by K/2) on N
/// images of H × W, and the repetitions; exits with the usage on anything else.
fn shape_args(args: &[String], mode: &str) -> (Conv2d, usize) {
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<usize>().ok());
    let (Some(n), Some(c), Some(h), Some(w), Some(reps)) = (num(1), num(2), num(3), num(4), num(5))
    else {
        eprintln!("usage: jit_kernels {mode} N C H W reps [K]");
        std::process::exit(2)
    };
    let k = num(6).unwrap_or(3);
    if WinogradTile::new(2, k).is_none() {
        eprintln!("error: K is 3 or 5, not {k}");
        std::process::exit(2)
    }
    (Conv2d::simple(n, c, h, w, c, k, k / 2), reps)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let isa = Isa::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    if args.first().map(String::as_str) == Some("conv") {
        let (p, reps) = shape_args(&args, "conv");
        let t = pool.install(|| conv_times(isa, &p, reps));
        println!(
            "{{\"isa\":\"{isa}\",\"im2col\":{},\"winograd_f2\":{},\"winograd_f4\":{},\"direct\":{},\"winograd_f4_tiles\":{}}}",
            t[0], t[1], t[2], t[3], t[4]
        );
        return;
    }
    if args.first().map(String::as_str) == Some("cold") {
        let (p, reps) = shape_args(&args, "cold");
        pool.install(|| cold_times(isa, &p, reps));
        return;
    }
    if args.first().map(String::as_str) == Some("transform") {
        return transform_times(isa, &pool);
    }
    if args.first().map(String::as_str) == Some("dw") {
        let (p, reps) = shape_args(&args, "dw");
        let t = pool.install(|| filter_times(isa, &p, reps));
        let g = t.map(|t| 2.0 * p.macs() as f64 / t / 1e9);
        println!(
            "filter gradient N{} C{} {}x{} {k}x{k}, effective GFLOP/s: im2col {:.1}, \
             direct {:.1}, F(2x2) {:.1}, F(4x4) {:.1}, F(2x2) tiled {:.1}, F(4x4) tiled {:.1}",
            p.n,
            p.ci,
            p.h,
            p.w,
            g[0],
            g[1],
            g[2],
            g[3],
            g[4],
            g[5],
            k = p.kh
        );
        return;
    }
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut shapes = vec![("2048^3".to_string(), (2048, 2048, 2048))];
    for (ci, co, hw) in [(16, 16, 1024), (32, 32, 256), (64, 64, 64)] {
        for batch in [1, 64] {
            let k = ci * 9;
            shapes.push((
                format!("fwd b{batch} {ci}->{co} {hw}px"),
                (co, batch * hw, k),
            ));
            shapes.push((
                format!("dW  b{batch} {ci}->{co} {hw}px"),
                (co, k, batch * hw),
            ));
        }
    }
    let case = Conv2d::simple(64, 32, 32, 32, 32, 3, 1);
    let mut gemm_best = vec![f64::INFINITY; shapes.len()];
    let mut conv_best = [f64::INFINITY; 5];
    let stages: Vec<Conv2d> = [(16, 32), (32, 16), (64, 8)]
        .iter()
        .flat_map(|&(c, hw)| [1, 64].map(|n| Conv2d::simple(n, c, hw, hw, c, 3, 1)))
        .collect();
    let mut stage_best = vec![[f64::INFINITY; 11]; stages.len()];
    pool.install(|| {
        for _ in 0..rounds {
            for (slot, (_, (m, n, k))) in gemm_best.iter_mut().zip(&shapes) {
                let reps = (2e9 / (2.0 * (m * n * k) as f64)).clamp(1.0, 50.0) as usize;
                *slot = slot.min(sgemm_secs(isa, (*m, *n, *k), reps));
            }
            let t = conv_times(isa, &case, 3);
            for (b, t) in conv_best.iter_mut().zip(t) {
                *b = b.min(t);
            }
            for (best, p) in stage_best.iter_mut().zip(&stages) {
                let reps = (2e8 / (2.0 * p.macs() as f64)).clamp(3.0, 200.0) as usize;
                let times = conv_times(isa, p, reps).into_iter();
                for (b, t) in best.iter_mut().zip(times.chain(filter_times(isa, p, reps))) {
                    *b = b.min(t);
                }
            }
        }
    });
    println!("isa {isa}, 2 threads, best of {rounds} rounds");
    println!("{:<26} {:>16} {:>9}", "sgemm shape", "(m, n, k)", "GFLOP/s");
    for ((label, (m, n, k)), t) in shapes.iter().zip(&gemm_best) {
        let g = 2.0 * (m * n * k) as f64 / t / 1e9;
        println!("{label:<26} {:>16} {g:>9.1}", format!("({m}, {n}, {k})"));
    }
    let peak = 2.0 * 2048f64.powi(3) / gemm_best[0] / 1e9;
    let flops = 2.0 * case.macs() as f64;
    println!("\n3x3 conv N64 C32 32x32 pad 1: effective GFLOP/s (2·N·Co·Ci·9·H·W / time)");
    for (name, t) in [
        "im2col + sgemm",
        "Winograd F(2x2,3x3)",
        "Winograd F(4x4,3x3)",
        "direct (sliding)",
        "F(4x4) tiled layout",
    ]
    .iter()
    .zip(conv_best)
    {
        let g = flops / t / 1e9;
        println!(
            "{name:<22} {:>8.2} ms {g:>8.1} GFLOP/s  {:>5.0} % of sgemm 2048^3",
            t * 1e3,
            100.0 * g / peak
        );
    }
    println!("\nResNet-20's 3x3 stride-1 convs: effective GFLOP/s (forward; filter gradient)");
    println!(
        "{:<14} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "conv",
        "im2col",
        "F(2x2)",
        "F(4x4)",
        "direct",
        "F4 tiled",
        "dW im2col",
        "dW direct",
        "dW F(2x2)",
        "dW F(4x4)",
        "dW F2 til",
        "dW F4 til"
    );
    for (p, t) in stages.iter().zip(&stage_best) {
        let g = t.map(|t| 2.0 * p.macs() as f64 / t / 1e9);
        println!(
            "{:<14} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} \
             {:>9.1}",
            format!("N{} C{} {}x{}", p.n, p.ci, p.h, p.w),
            g[0],
            g[1],
            g[2],
            g[3],
            g[4],
            g[5],
            g[6],
            g[7],
            g[8],
            g[9],
            g[10]
        );
    }
    println!("\nResNet-20's 3x3 stride-2 convs: effective GFLOP/s (best of 20)");
    println!("{:<26} {:>8} {:>8}", "conv", "im2col", "direct");
    for (n, ci, hw) in [(1, 16, 32), (64, 16, 32), (1, 32, 16), (64, 32, 16)] {
        let p = Conv2d {
            stride: (2, 2),
            ..Conv2d::simple(n, ci, hw, hw, 2 * ci, 3, 1)
        };
        let t = pool.install(|| strided_times(isa, &p, 20));
        let g = t.map(|t| 2.0 * p.macs() as f64 / t / 1e9);
        let name = format!("N{n} C{ci}->{} {hw}x{hw}", 2 * ci);
        println!("{name:<26} {:>8.1} {:>8.1}", g[0], g[1]);
    }
    println!("\nFlexNet-7's 5x5 convs (its cropped FlexConvs, pad 2): effective GFLOP/s");
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "conv", "im2col", "F(2x2)", "F(4x4)", "direct", "F4 tiled"
    );
    for (n, c) in [(1, 24), (8, 24), (8, 36), (8, 48)] {
        let p = Conv2d::simple(n, c, 32, 32, c, 5, 2);
        let reps = (2e8 / (2.0 * p.macs() as f64)).clamp(3.0, 50.0) as usize;
        let t = pool.install(|| conv_times(isa, &p, reps));
        let g = t.map(|t| 2.0 * p.macs() as f64 / t / 1e9);
        println!(
            "{:<22} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            format!("N{n} C{c} 32x32"),
            g[0],
            g[1],
            g[2],
            g[3],
            g[4]
        );
    }
    println!();
    transform_times(isa, &pool);
}

/// The Winograd filter transform and packing of a 64 → 64-channel 3×3 weight
/// (`WinogradFilter::new`, which a training step runs for every Winograd conv), best
/// of 50.
fn transform_times(isa: Isa, pool: &rayon::ThreadPool) {
    let w = data(64 * 64 * 9, 5);
    println!(
        "Winograd filter transform + packing, 64 -> 64 channels (best of 50): new \
         (allocating), refill (into the same filter, as a training step does)"
    );
    for tile in [WinogradTile::F2, WinogradTile::F4] {
        let (new, refill) = pool.install(|| {
            let new = best(50, || {
                std::hint::black_box(WinogradFilter::new(isa, tile, &w, 64, 64).unwrap());
            });
            let mut f = WinogradFilter::new(isa, tile, &w, 64, 64).unwrap();
            let refill = best(50, || {
                f.refill(std::hint::black_box(&w)).unwrap();
            });
            (new, refill)
        });
        println!(
            "{tile:?}: new {:.3} ms, refill {:.3} ms",
            new * 1e3,
            refill * 1e3
        );
    }
}

/// The F(4×4) conv `p` with warm buffers, with cold input and output, and with a cold
/// input only (best of `reps` each).
fn cold_times(isa: Isa, p: &Conv2d, reps: usize) {
    let bytes = 4 * (p.n * p.ci * p.h * p.w + p.n * p.co * p.h * p.w);
    let copies = (128usize << 20).div_ceil(bytes.max(1)).max(2);
    let xs: Vec<Vec<f32>> = (0..copies)
        .map(|i| data(p.n * p.ci * p.h * p.w, i))
        .collect();
    let w = data(p.co * p.ci * p.kh * p.kw, 2);
    let mut outs: Vec<Vec<f32>> = (0..copies)
        .map(|_| vec![0.0; p.n * p.co * p.h * p.w])
        .collect();
    let f = WinogradFilter::new(isa, WinogradTile::F4, &w, p.co, p.ci).unwrap();
    let epi = Epilogue::default();
    let warm = best(reps, || {
        conv2d_winograd(isa, &f, p, &xs[0], &epi, &mut outs[0]).unwrap()
    });
    let mut i = 0;
    let cold = best(reps, || {
        i = (i + 1) % copies;
        conv2d_winograd(isa, &f, p, &xs[i], &epi, &mut outs[i]).unwrap()
    });
    let mut i = 0;
    let cold_in = best(reps, || {
        i = (i + 1) % copies;
        conv2d_winograd(isa, &f, p, &xs[i], &epi, &mut outs[0]).unwrap()
    });
    println!(
        "conv F(4x4): warm {:.3} ms, cold in+out {:.3} ms, cold in {:.3} ms",
        warm * 1e3,
        cold * 1e3,
        cold_in * 1e3
    );
    // The filter gradient (F(2×2) and F(4×4)) of the same conv: x and dy warm, then
    // both cold (the outputs above stand for dy).
    let mut dw = vec![0.0; w.len()];
    for m in [2, 4] {
        let tile = WinogradTile::new(m, p.kh).unwrap();
        let warm = best(reps, || {
            conv2d_backward_filter_winograd(isa, tile, p, &xs[0], &outs[0], &mut dw).unwrap()
        });
        let mut i = 0;
        let cold = best(reps, || {
            i = (i + 1) % copies;
            let dy = &outs[(i + copies / 2) % copies];
            conv2d_backward_filter_winograd(isa, tile, p, &xs[i], dy, &mut dw).unwrap()
        });
        println!(
            "filter gradient F({m}x{m}): warm {:.3} ms, cold x and dy {:.3} ms",
            warm * 1e3,
            cold * 1e3
        );
    }
}
