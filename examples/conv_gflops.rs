//! GFLOP/s of the reference conv kernels on ResNet-20's 3×3 convs, f32, all threads:
//!
//! ```text
//! cargo run --release --example conv_gflops -- [--reps N]
//! ```
//!
//! For each shape the three kernels run interleaved (blocked direct, im2col +
//! `matrixmultiply`, the tiled direct loop), `N` rounds (default 15), and the best time
//! of each is reported with the ratios, so load from other processes hits all alike.
//! Then FlexTCN's long causal 1D convs, blocked direct against the FFT.

use fnet::reference::conv::ConvParams;
use fnet::reference::direct_tiled::{conv_direct, conv_direct_tiled};
use fnet::reference::fft_conv::fft_causal_conv1d;
use fnet::reference::im2col::conv_im2col;
use fnet::tensor::Tensor;
use std::time::Instant;

fn tensor(shape: &[usize], seed: usize) -> Tensor<f32> {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5 - 1.0)
        .collect();
    Tensor::from_vec(shape.to_vec(), data).expect("shape matches")
}

type Kernel = fn(&Tensor<f32>, &Tensor<f32>, Option<&[f32]>, &ConvParams) -> Tensor<f32>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(15usize);
    let kernels: [(&str, Kernel); 3] = [
        ("direct", |x, w, b, p| {
            conv_direct(x, w, b, p).expect("valid")
        }),
        ("im2col", |x, w, b, p| {
            conv_im2col(x, w, b, p).expect("valid")
        }),
        ("tiled", |x, w, b, p| {
            conv_direct_tiled(x, w, b, p).expect("valid")
        }),
    ];
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>12} {:>12}",
        "shape", "direct", "im2col", "tiled", "direct/im2c", "direct/tiled"
    );
    // (batch, ci, co, hw, stride): the three stages' 3x3 convs and the two strided ones.
    let shapes = [
        (1, 16, 16, 32, 1),
        (1, 32, 32, 16, 1),
        (1, 64, 64, 8, 1),
        (64, 16, 16, 32, 1),
        (64, 32, 32, 16, 1),
        (64, 64, 64, 8, 1),
        (1, 16, 32, 32, 2),
        (64, 16, 32, 32, 2),
        (64, 32, 64, 16, 2),
        (1, 3, 16, 32, 1),
        (64, 3, 16, 32, 1),
    ];
    for (b, ci, co, hw, s) in shapes {
        let x = tensor(&[b, ci, hw, hw], 1);
        let w = tensor(&[co, ci, 3, 3], 2);
        let p = ConvParams::unit(2)
            .with_padding(vec![(1, 1); 2])
            .with_stride(vec![s, s]);
        let out = (hw + 2 - 3) / s + 1;
        let flops = 2.0 * (b * co * ci * 9 * out * out) as f64;
        let mut best = [f64::INFINITY; 3];
        for _ in 0..reps {
            for (i, (_, k)) in kernels.iter().enumerate() {
                let t = Instant::now();
                std::hint::black_box(k(&x, &w, None, &p));
                best[i] = best[i].min(t.elapsed().as_secs_f64());
            }
        }
        let g = best.map(|t| flops / t / 1e9);
        println!(
            "{:<28} {:>8.1} {:>8.1} {:>8.1} {:>11.2}x {:>11.2}x",
            format!("b{b} {ci}->{co} {hw}x{hw} s{s}"),
            g[0],
            g[1],
            g[2],
            g[0] / g[1],
            g[0] / g[2]
        );
    }
    println!("GFLOP/s (2 flops per multiply-add), best of {reps} interleaved runs");
    // FlexTCN's 30-channel causal convs at length 784: blocked direct against the FFT.
    for (b, k) in [(1, 785), (1, 129), (8, 785), (8, 129)] {
        let x = tensor(&[b, 30, 784], 3);
        let w = tensor(&[30, 30, k], 4);
        let p = ConvParams::unit(1).with_padding(vec![(k - 1, 0)]);
        let mut best = [f64::INFINITY; 2];
        for _ in 0..reps.div_ceil(3) {
            let t = Instant::now();
            std::hint::black_box(conv_direct(&x, &w, None, &p).expect("valid"));
            best[0] = best[0].min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(fft_causal_conv1d(&x, &w, None).expect("valid"));
            best[1] = best[1].min(t.elapsed().as_secs_f64());
        }
        println!(
            "1D b{b} 30->30 L784 k{k} causal: direct {:.2} ms, fft {:.2} ms",
            best[0] * 1e3,
            best[1] * 1e3
        );
    }
}
