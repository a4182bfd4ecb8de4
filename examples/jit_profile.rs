//! Where a JIT forward's time goes: per kernel kind, and the slowest launches.
//!
//! ```text
//! cargo run --release --example jit_profile -- MODEL.fnet [--batch N] [--iters K] [--vector V] [--tile T] [--training]
//! ```
//!
//! Compiles `MODEL` as `fnetc bench --backend jit` does (`cli::bench::compile_bound`,
//! the JIT's cost table), prepares it on the JIT with `V`-lane vectors and `T` output
//! channels per conv work-item (default: the
//! backend's), runs one warm-up forward, then `K` (default 5) forwards launch by launch
//! (`JitExecutable::launch_timed`), keeping each launch's best time. Prints the compile
//! time, then the time per kernel kind (the kernel's name without its number) and the
//! ten slowest launches with their grid and GFLOP/s (`FNET_PROFILE_TOP=N`: the `N`
//! slowest). With `--training` it profiles a
//! training step instead (the training graph as `fnetc bench --training` compiles it,
//! with its fixed labels).

use fnet::backend::{Backend, BackendKind, JitBackend};
use fnet::cli::bench::{bench_input, compile_bound, compile_training, training_inputs, BenchArgs};
use std::collections::BTreeMap;
use std::time::Duration;

fn arg<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> T {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .ok_or("usage: jit_profile MODEL.fnet [--batch N]")?;
    let batch = arg(&args, "--batch", 1usize);
    let iters = arg(&args, "--iters", 5usize);
    let jit = JitBackend::new()?;
    let mut target = jit.target();
    target.vector = arg(&args, "--vector", target.vector);
    target.tile_co = arg(&args, "--tile", target.tile_co);
    let jit = jit.with_target(target);
    let bench = BenchArgs {
        model: model.into(),
        weights: None,
        options: Default::default(),
        backend: BackendKind::Jit,
        device: None,
        batch,
        iters,
        warmup: 1,
        unoptimised: false,
        training: args.iter().any(|a| a == "--training"),
    };
    let (graph, store, inputs) = if bench.training {
        let (g, store, classes) =
            compile_training(&bench, jit.cost_table()).map_err(|e| e.to_string())?;
        let inputs = training_inputs(&g, batch, classes)?;
        (g, store, inputs)
    } else {
        let (g, store) = compile_bound(&bench, jit.cost_table()).map_err(|e| e.to_string())?;
        let x = bench_input(&g, batch)?;
        (g, store, vec![x])
    };
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let prepared = jit.prepare_plan(&graph, &store, &shapes)?;
    let exe = prepared.executable();
    let stats = prepared.compile_stats();
    println!(
        "{model} batch {batch}, {target:?}: {} kernels compiled in {:.1} ms",
        stats.compiled,
        stats.time.as_secs_f64() * 1e3
    );
    exe.write_inputs(&inputs)?;
    exe.launch();
    let mut best = vec![Duration::MAX; exe.plan.steps.len()];
    for _ in 0..iters {
        for (b, t) in best.iter_mut().zip(exe.launch_timed()) {
            *b = (*b).min(t);
        }
    }
    let total: Duration = best.iter().sum();
    let mut kinds: BTreeMap<String, (Duration, u64)> = BTreeMap::new();
    // A native step (`kernel_ir::native`) is named after its routine.
    let name = |s: &fnet::kernel_ir::plan::Step| match &s.native {
        Some(op) => op.name(),
        None => exe.plan.kernels[s.kernel].name.clone(),
    };
    for (s, t) in exe.plan.steps.iter().zip(&best) {
        let n = name(s);
        let kind = n.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_');
        let e = kinds.entry(kind.to_string()).or_default();
        e.0 += *t;
        e.1 += exe.plan.step_flops(s);
    }
    println!(
        "total {:.3} ms over {} launches",
        total.as_secs_f64() * 1e3,
        best.len()
    );
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, (t, _))| std::cmp::Reverse(*t));
    for (kind, (t, flops)) in kinds {
        println!(
            "  {kind:<28} {:>8.3} ms  {:>5.1}%  {:>7.2} GFLOP/s",
            t.as_secs_f64() * 1e3,
            100.0 * t.as_secs_f64() / total.as_secs_f64(),
            flops as f64 / t.as_secs_f64() / 1e9
        );
    }
    let mut order: Vec<usize> = (0..best.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(best[i]));
    println!("slowest launches:");
    let shown = std::env::var("FNET_PROFILE_TOP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for &i in order.iter().take(shown) {
        let s = &exe.plan.steps[i];
        let grid = match s.native {
            Some(_) => vec![],
            None => exe.plan.kernels[s.kernel].grid.clone(),
        };
        println!(
            "  {:<24} {:<24} grid {:?}  {:.3} ms  {:.2} GFLOP/s",
            s.layer,
            name(s),
            grid,
            best[i].as_secs_f64() * 1e3,
            exe.plan.step_flops(s) as f64 / best[i].as_secs_f64() / 1e9
        );
    }
    Ok(())
}
