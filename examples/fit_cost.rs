//! Re-measures a backend's conv kernels and rewrites its cost table:
//!
//! ```text
//! cargo run --release --example fit_cost -- [--backend reference|opencl-cpu|opencl-gpu|jit]
//!     [--device D] [--out src/cost/BACKEND.json] [--quick] [--backward-only]
//! ```
//!
//! Writes the fitted constants to `--out` (by default `src/cost/BACKEND.json`) and
//! every measured point (shape, features, measured and predicted seconds) to the same
//! path with `_points.csv` in place of `.json`, so the fit can be checked. The
//! reference takes about 20 seconds on the project's 2-core machine, the JIT about a
//! minute, PoCL a few minutes (every point builds its program); `--quick` times a third of the grid
//! (for a smoke test). `--from-points FILE` refits on points measured before (after a
//! change of features) instead of measuring (`--machine TEXT` names where they were
//! measured). The OpenCL tables time the device `--device` picks (by default
//! the first of the table's kind). The JIT's table also has rows for the backward
//! convs' routines (`cost::jit_backward`), timed on `fit::backward_grid` (about 15 s
//! more); `--backward-only` (JIT only) keeps the committed forward points and measures
//! only those. Inputs (the committed points, `--from-points`) are read in full before
//! the outputs are written, so refitting in place is safe.

use fnet::backend::jit_timing::{time_backward, time_conv as time_conv_jit};
use fnet::backend::Backend;
use fnet::cost::fit::{backward_grid, backward_measurable, fit, grid, measurable, measure, Sample};
use fnet::cost::points::{read_points, write_points};
use fnet::cost::{fmt_seconds, ConvShape, CostTable, CostTableId, CostedAlgo, ALGOS};
use fnet::ir::op::{ConvAlgo, Padding};
use fnet::opencl::conv_timing::time_conv;
use fnet::opencl::{ClContext, DeviceSel};
use fnet::reference::im2col::{gemm, gemm_blocked};
use std::time::Instant;

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

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Times every measurable (shape, algorithm) of the grid on `backend`; the samples
/// and a line naming the machine.
fn measure_grid(
    backend: CostTableId,
    args: &[String],
    quick: bool,
    forward: bool,
) -> (Vec<Sample>, String) {
    let jit = (backend == CostTableId::Jit)
        .then(|| fnet::backend::JitBackend::new().unwrap_or_else(|e| panic!("{e}")));
    let (ctx, machine) = if backend == CostTableId::Reference {
        compare_gemms();
        (None, machine())
    } else if let Some(jit) = &jit {
        (None, format!("{}, {}", machine(), jit.device()))
    } else {
        let sel = match flag(args, "--device") {
            Some(d) => d.parse().unwrap_or_else(|e| panic!("--device: {e}")),
            None if backend == CostTableId::OpenclGpu => DeviceSel::Gpu,
            None => DeviceSel::Cpu,
        };
        let ctx = ClContext::new(sel, fnet::opencl::default_cache_dir())
            .unwrap_or_else(|e| panic!("{e}"));
        let what = format!(
            "{} [driver {}], f32",
            ctx.info.name, ctx.info.driver_version
        );
        assert_eq!(
            CostTableId::opencl(ctx.info.is_gpu),
            backend,
            "{what} is not a device of this table's kind"
        );
        (Some(ctx), what)
    };
    let mut samples = Vec::new();
    let shapes = if forward { grid() } else { Vec::new() };
    for (i, shape) in shapes.iter().enumerate() {
        if quick && i % 3 != 0 {
            continue;
        }
        for algo in ALGOS {
            if !measurable(shape, backend, algo) {
                continue;
            }
            let seconds = match (&ctx, &jit) {
                (None, Some(jit)) => time_conv_jit(jit, shape, algo, i as u64)
                    .unwrap_or_else(|e| panic!("{shape:?} {algo:?}: {e}")),
                (None, None) => measure(shape, algo, i as u64).expect("grid shapes are valid"),
                (Some(ctx), _) => time_conv(ctx, shape, algo, i as u64)
                    .unwrap_or_else(|e| panic!("{shape:?} {algo:?}: {e}")),
            };
            samples.push(Sample {
                algo: CostedAlgo::Forward(algo),
                shape: shape.clone(),
                seconds,
            });
        }
        eprint!("\r{}/{} shapes", i + 1, shapes.len());
    }
    eprintln!();
    if jit.is_some() {
        // The backward convs' routines, which only the JIT has.
        let shapes = backward_grid();
        for (i, shape) in shapes.iter().enumerate() {
            if quick && i % 3 != 0 {
                continue;
            }
            for row in CostedAlgo::all().filter(|&r| backward_measurable(shape, r)) {
                let seconds = time_backward(shape, row, i as u64)
                    .unwrap_or_else(|e| panic!("{shape:?} {}: {e}", row.name()));
                samples.push(Sample {
                    algo: row,
                    shape: shape.clone(),
                    seconds,
                });
            }
            eprint!("\r{}/{} backward shapes", i + 1, shapes.len());
        }
        eprintln!();
    }
    (samples, machine)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend: CostTableId = flag(&args, "--backend")
        .unwrap_or("reference")
        .parse()
        .unwrap_or_else(|e| panic!("--backend: {e}"));
    let out = flag(&args, "--out")
        .map(str::to_string)
        .unwrap_or_else(|| format!("src/cost/{}.json", backend.name()));
    let quick = args.iter().any(|a| a == "--quick");
    let command = format!(
        "cargo run --release --example fit_cost -- --backend {}",
        backend.name()
    );
    let start = Instant::now();
    let (samples, machine) = match flag(&args, "--from-points") {
        Some(path) => {
            // Refit on points measured before (after a change of features): the
            // machine is the committed table's unless `--machine` names it.
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let samples = read_points(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
            let machine = flag(&args, "--machine")
                .map_or_else(|| CostTable::of(backend).machine.clone(), str::to_string);
            (samples, machine)
        }
        None if args.iter().any(|a| a == "--backward-only") => {
            // The committed forward points, the backward routines measured again.
            let path = fnet::cost::points::committed_path(backend);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kept = read_points(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let (measured, machine) = measure_grid(backend, &args, quick, false);
            let forward = kept
                .into_iter()
                .filter(|s| matches!(s.algo, CostedAlgo::Forward(_)));
            (forward.chain(measured).collect(), machine)
        }
        None => measure_grid(backend, &args, quick, true),
    };
    eprintln!(
        "{} points in {:.1}s",
        samples.len(),
        start.elapsed().as_secs_f64()
    );
    let table = fit(&samples, backend, &machine, &command).unwrap_or_else(|e| panic!("{e}"));
    let csv = write_points(&samples, &table);
    let json = serde_json::to_string_pretty(&table).expect("table serialises") + "\n";
    // Atomically (a temporary file renamed over the old one), so an interrupted fit
    // never leaves a truncated table for the build to embed.
    let write = |path: &str, text: String| {
        fnet::io::output::write_output(std::path::Path::new(path), &[], |w| {
            w.write_all(text.as_bytes())
        })
        .unwrap_or_else(|e| panic!("write {path}: {e}"))
    };
    write(&out, json);
    let points = out.trim_end_matches(".json").to_string() + "_points.csv";
    write(&points, csv);
    for a in CostedAlgo::all() {
        let Some(c) = table.row(a) else {
            continue;
        };
        eprintln!(
            "{:<16} overhead {} coef {:?}  median rel err {:.1}%",
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
