//! Where an OpenCL training step's time and memory go: per kernel kind and per layer.
//!
//! ```text
//! cargo run --release --example train_profile -- MODEL.fnet [--batch N] [--iters K] [--top T]
//! ```
//!
//! Compiles `MODEL` for a training step exactly as `fnetc bench --training` does
//! (`cli::bench::compile_training`, the device's cost table), prepares it on the
//! default OpenCL device, runs one warm-up step, then `K` steps (default 3) that wait
//! after every launch (`Executable::launch_timed`) and keeps each launch's best time.
//! Prints the plan's device memory (storage slots against the largest set of
//! temporaries live at once, parameters, constants), then the time per kernel kind
//! (the kernel's name without its number) and the `T` (default 15) slowest layers.
//! The waits add PoCL's per-launch overhead that a pipelined `launch` hides, so the
//! total is above `fnetc bench`'s step time; the shares are what to read.

use fnet::backend::opencl::OpenClBackend;
use fnet::backend::{program_cache, Backend};
use fnet::cli::bench::{compile_training, training_inputs, BenchArgs};
use fnet::kernel_ir::plan::{live_peak, BufKind};
use fnet::opencl::DeviceSel;
use std::collections::BTreeMap;
use std::time::Duration;

fn arg<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> T {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn mib(floats: usize) -> f64 {
    (floats * 4) as f64 / 1048576.0
}

/// `--live`: the temporaries live at the launch where most are, by the kernel and
/// layer that first touches them, with their last launch.
fn live_at_peak(plan: &fnet::kernel_ir::plan::Plan) {
    let n = plan.buffers.len();
    let (mut first, mut last) = (vec![usize::MAX; n], vec![0; n]);
    for (i, s) in plan.steps.iter().enumerate() {
        for &a in &s.args {
            first[a] = first[a].min(i);
            last[a] = i;
        }
    }
    let kept = plan.updates.iter().map(|&(u, _)| u);
    for o in plan.outputs.iter().map(|(o, _)| *o).chain(kept) {
        last[o] = plan.steps.len();
    }
    let temp = |b: usize| plan.buffers[b].kind == BufKind::Temp && first[b] != usize::MAX;
    let at = (0..plan.steps.len())
        .max_by_key(|&i| {
            (0..n)
                .filter(|&b| temp(b) && first[b] <= i && i <= last[b])
                .map(|b| plan.buffers[b].len)
                .sum::<usize>()
        })
        .unwrap_or(0);
    println!("\nlive at launch {at} ({}):", plan.steps[at].layer);
    let mut live: Vec<usize> = (0..n)
        .filter(|&b| temp(b) && first[b] <= at && at <= last[b])
        .collect();
    live.sort_by_key(|&b| std::cmp::Reverse(plan.buffers[b].len));
    for b in live {
        let s = &plan.steps[first[b]];
        println!(
            "  {:>7.2} MiB  launches {}..{}  {} {}",
            mib(plan.buffers[b].len),
            first[b],
            last[b],
            plan.kernels[s.kernel].name,
            s.layer
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .ok_or("usage: train_profile MODEL.fnet [--batch N] [--iters K] [--top T]")?;
    let bench = BenchArgs {
        model: model.into(),
        weights: None,
        options: Default::default(),
        backend: fnet::backend::BackendKind::Opencl,
        device: None,
        batch: arg(&args, "--batch", 64),
        iters: arg(&args, "--iters", 3),
        warmup: 1,
        unoptimised: false,
        training: true,
    };
    let top: usize = arg(&args, "--top", 15);
    let backend = OpenClBackend::open(DeviceSel::Default, program_cache(&bench.model))?;
    let (graph, store, classes) =
        compile_training(&bench, backend.cost_table()).map_err(|e| e.to_string())?;
    let inputs = training_inputs(&graph, bench.batch, classes)?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let prepared = backend.prepare_plan(&graph, &store, &shapes)?;
    let exe = prepared.executable();
    let plan = &exe.plan;

    let slots: usize = plan.slot_len.iter().sum();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (b, s) in plan.buffers.iter().zip(&plan.slot) {
        let kind = match (&b.kind, s) {
            (BufKind::Temp, Some(_)) => continue,
            (BufKind::Temp, None) => "temporaries in no slot (setup only, or idle)",
            (BufKind::Const(_), _) => "constants and parameters",
            (BufKind::Input(_), _) => "inputs",
            (BufKind::Derived, _) => "derived",
        };
        *by_kind.entry(kind).or_default() += b.len;
    }
    println!(
        "device memory {:.1} MiB",
        exe.device_bytes() as f64 / 1048576.0
    );
    println!(
        "  slots {:.1} MiB in {} slots (temporaries live at once: {:.1} MiB at most)",
        mib(slots),
        plan.slot_len.len(),
        mib(live_peak(plan))
    );
    for (kind, len) in &by_kind {
        println!("  {kind} {:.1} MiB", mib(*len));
    }

    if args.iter().any(|a| a == "--live") {
        live_at_peak(plan);
    }
    exe.write_inputs(&inputs)?;
    exe.launch()?;
    let mut best = vec![Duration::MAX; plan.steps.len()];
    for _ in 0..bench.iters {
        for (b, t) in best.iter_mut().zip(exe.launch_timed()?) {
            *b = (*b).min(t);
        }
    }
    let total: Duration = best.iter().sum();
    let mut kinds: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
    let mut layers: BTreeMap<&str, Duration> = BTreeMap::new();
    for (s, t) in plan.steps.iter().zip(&best) {
        let name = &plan.kernels[s.kernel].name;
        let kind = name.trim_end_matches(|c: char| c.is_ascii_digit());
        let e = kinds
            .entry(kind.trim_end_matches('_').to_string())
            .or_default();
        e.0 += *t;
        e.1 += 1;
        *layers.entry(s.layer.as_str()).or_default() += *t;
    }
    let pct = |t: Duration| 100.0 * t.as_secs_f64() / total.as_secs_f64();
    println!(
        "\n{} launches, {:.1} ms with a wait after each (best of {} per launch)",
        plan.steps.len(),
        total.as_secs_f64() * 1e3,
        bench.iters
    );
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, (t, _))| std::cmp::Reverse(*t));
    println!("\nby kernel kind:");
    for (k, (t, n)) in kinds {
        println!(
            "  {:>8.2} ms {:>5.1}%  {n:>4}×  {k}",
            t.as_secs_f64() * 1e3,
            pct(t)
        );
    }
    let mut layers: Vec<_> = layers.into_iter().collect();
    layers.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    println!("\nslowest layers:");
    for (l, t) in layers.into_iter().take(top) {
        println!("  {:>8.2} ms {:>5.1}%  {l}", t.as_secs_f64() * 1e3, pct(t));
    }
    Ok(())
}
