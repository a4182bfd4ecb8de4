//! Re-measures the reference backend's conv kernels and rewrites the cost table:
//!
//! ```text
//! cargo run --release --example fit_cost -- [--out src/cost/reference.json] [--quick]
//! ```
//!
//! Writes the fitted constants to `--out` and every measured point (shape, features,
//! measured and predicted seconds) to the same path with `_points.csv` in place of
//! `.json`, so the fit can be checked. Takes about 20 seconds on the project's
//! 2-core machine; `--quick` times a third of the grid (for a smoke test).

use fnet::cost::fit::{fit, grid, measurable, measure, Sample};
use fnet::cost::{fmt_seconds, ConvShape, CostTable, ALGOS};
use fnet::ir::op::{ConvAlgo, Padding};
use fnet::reference::im2col::{gemm, gemm_blocked};
use std::fmt::Write;
use std::time::Instant;

const COMMAND: &str = "cargo run --release --example fit_cost -- --out src/cost/reference.json";

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {threads} threads (rayon), f32")
}

fn gflops(mut f: impl FnMut(), flops: f64) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    flops / best / 1e9
}

fn compare_gemms() {
    for &(m, k, n) in &[
        (32usize, 288usize, 1024usize),
        (16, 27, 1024),
        (30, 785, 784),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let mm = gflops(|| gemm(m, k, n, &a, &b, &mut c), flops);
        let bl = gflops(|| gemm_blocked(m, k, n, &a, &b, &mut c), flops);
        eprintln!("gemm {m}x{k}x{n}: matrixmultiply {mm:.1} GFLOP/s, blocked loop {bl:.1} GFLOP/s");
    }
}

/// First kernel size in `ks` whose cheapest algorithm is the FFT.
fn crossover(table: &CostTable, ks: &[u64], shape: impl Fn(u64) -> ConvShape) -> Option<u64> {
    ks.iter()
        .copied()
        .find(|&k| table.estimate(&shape(k)).cheapest() == ConvAlgo::Fft)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "src/cost/reference.json".into());
    let quick = args.iter().any(|a| a == "--quick");
    let start = Instant::now();
    compare_gemms();
    let mut samples = Vec::new();
    for (i, shape) in grid().into_iter().enumerate() {
        if quick && i % 3 != 0 {
            continue;
        }
        for algo in ALGOS {
            if !measurable(&shape, algo) {
                continue;
            }
            let seconds = measure(&shape, algo, i as u64).expect("grid shapes are valid");
            samples.push(Sample {
                algo,
                shape: shape.clone(),
                seconds,
            });
        }
    }
    eprintln!(
        "{} points in {:.1}s",
        samples.len(),
        start.elapsed().as_secs_f64()
    );
    let table = fit(&samples, &machine(), COMMAND);
    let mut csv = String::from(
        "algo,batch,ci,co,input,kernel,stride,dilation,groups,padding,features,measured_s,predicted_s\n",
    );
    let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join("x");
    for s in &samples {
        let f = s.shape.features(s.algo).expect("measured algorithms apply");
        let pred = table.algo(s.algo).expect("concrete algorithm").seconds(&f);
        let feats: Vec<String> = f.iter().map(|v| format!("{v:.6e}")).collect();
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{:.6e},{:.6e}",
            s.algo.name(),
            s.shape.batch,
            s.shape.ci,
            s.shape.co,
            join(&s.shape.input),
            join(&s.shape.kernel),
            join(&s.shape.stride),
            join(&s.shape.dilation),
            s.shape.groups,
            s.shape.padding.to_string().replace(',', ";"),
            feats.join(" "),
            s.seconds,
            pred
        );
    }
    let json = serde_json::to_string_pretty(&table).expect("table serialises") + "\n";
    std::fs::write(&out, json).expect("write the table");
    let points = out.trim_end_matches(".json").to_string() + "_points.csv";
    std::fs::write(&points, csv).expect("write the points");
    for a in ALGOS {
        let c = table.algo(a).expect("concrete");
        eprintln!(
            "{:<7} overhead {} coef {:?}  median rel err {:.1}%",
            a.name(),
            fmt_seconds(c.overhead_s),
            c.coef
                .iter()
                .map(|v| format!("{v:.3e}"))
                .collect::<Vec<_>>(),
            100.0 * c.median_rel_err
        );
    }
    let ks: Vec<u64> = (1..=785).collect();
    let odd: Vec<u64> = (1..=63).step_by(2).collect();
    let tcn = |k| ConvShape::plain(64, 32, 32, &[784], &[k], Padding::Causal);
    let dense = |k| ConvShape::plain(8, 32, 32, &[32, 32], &[k, k], Padding::Same);
    eprintln!(
        "FFT from: 1D L=784 K={:?}; 2D 32x32 32->32 K={:?}",
        crossover(&table, &ks, tcn),
        crossover(&table, &odd, dense)
    );
    eprintln!(
        "wrote {out} and {points} in {:.1}s",
        start.elapsed().as_secs_f64()
    );
}
