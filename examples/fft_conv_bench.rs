//! FlexTCN-6 forward on OpenCL with its FlexConvs by FFT against `FNET_CONV_ALGO=direct`,
//! in the same run; one 784-tap conv by FFT at 1568 points, forced to 2048 points, and
//! direct (with the launch time of each kind of FFT-conv kernel alone); and the mixed-radix transform at 1568 = 2⁵·7² against 2048 points, whole and
//! stage by stage (a plan with only that stage's launch, launch overhead included):
//!
//! ```text
//! cargo run --release --example fft_conv_bench -- [--batches 1,64] [--reps 3]
//!     [--parts model,conv,fft] [--rows 1024]
//! ```
//!
//! Weights are not bound at compile time (the kernels are synthesised on the host when
//! the plan is made), as in `fnetc run` without `--weights`. Times are the best of
//! `--reps` runs after one warm-up run (program build and first launches excluded).

use fnet::driver::{compile_file, compile_str};
use fnet::eval::Options;
use fnet::ir::graph::Graph;
use fnet::kernel_ir::fft_conv::force_len;
use fnet::kernel_ir::plan::{build_plan, transform_plan, Plan, Target};
use fnet::opencl::{ClContext, DeviceSel, Executable};
use fnet::passes::{pipeline::default_pipeline, CompileMode, PassContext};
use fnet::runtime::initialise;
use fnet::tensor::Tensor;
use std::path::Path;
use std::time::Instant;

fn best(exe: &Executable, x: &[Tensor<f32>], reps: usize) -> f64 {
    exe.run(x).expect("warm-up run");
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            exe.run(x).expect("run");
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn optimised(graph: &Graph, batch: usize, algo: &str) -> Graph {
    // SAFETY: set before any other thread reads the environment.
    unsafe { std::env::set_var("FNET_CONV_ALGO", algo) };
    let mut g = graph.clone();
    let mut pc = PassContext::new(CompileMode::Inference);
    pc.batch = batch as u64;
    default_pipeline(CompileMode::Inference)
        .run(&mut g, &mut pc, &mut |_| {})
        .expect("pipeline");
    g
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let batches: Vec<usize> = flag("--batches")
        .unwrap_or_else(|| "1,64".into())
        .split(',')
        .map(|s| s.parse().expect("--batches"))
        .collect();
    let reps: usize = flag("--reps").map_or(3, |s| s.parse().expect("--reps"));
    // Which measurements to run: `model` (FlexTCN-6), `conv` (784 taps), `fft`.
    let parts = flag("--parts").unwrap_or_else(|| "model,conv,fft".into());
    let ctx = ClContext::new(DeviceSel::default(), None).unwrap_or_else(|e| panic!("{e}"));
    println!("device: {}", ctx.info.name);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flextcn6_smnist.fnet");
    let m = compile_file(&path, &Options::default())
        .map(|(_, m)| m)
        .unwrap_or_else(|r| panic!("{}", r.render()));
    let store = initialise::<f32>(&m.graph, 0).expect("init");
    for &b in batches.iter().filter(|_| parts.contains("model")) {
        let shape = vec![b, 1, 784];
        let x = vec![Tensor::from_vec(shape.clone(), vec![0.5; b * 784]).expect("shape")];
        let mut times = Vec::new();
        for algo in ["fft", "direct"] {
            let g = optimised(&m.graph, b, algo);
            let plan =
                build_plan(&g, &store, std::slice::from_ref(&shape), Target::cpu()).expect("plan");
            let ffts = plan
                .steps
                .iter()
                .filter(|s| plan.kernels[s.kernel].name.starts_with("fft_mac"))
                .count();
            let gflop = plan.flops() as f64 * 1e-9;
            let exe = Executable::new(&ctx, plan).expect("build");
            let r = if algo == "direct" && b > 8 { 1 } else { reps };
            let t = best(&exe, &x, r);
            println!(
                "flextcn6 batch {b:>3} {algo:>6}: {:>9.2} ms  {:>8.1} samples/s  ({ffts} FFT convs, {gflop:.2} GFLOP executed)",
                t * 1e3,
                b as f64 / t
            );
            times.push(t);
        }
        println!(
            "flextcn6 batch {b:>3}: direct / fft = {:.1}x",
            times[1] / times[0]
        );
    }
    // The full-horizon case (the crop of a trained FlexTCN reaches 784 taps): one
    // 30 → 30 causal conv with 784 taps over 784 steps.
    // The FFT at its 7-smooth length (1568) and forced to 2048 points.
    for &b in batches.iter().filter(|_| parts.contains("conv")) {
        let mut times = Vec::new();
        for (algo, len) in [("fft", None), ("fft", Some(2048)), ("direct", None)] {
            let src = format!(
                "model t {{\n  input x: f32[B, 30, 784]\n  return x |> conv1d(30, 784, padding: causal, algo: {algo})\n}}"
            );
            let m = compile_str("t.fnet", &src, &Options::default())
                .map(|(_, m)| m)
                .unwrap_or_else(|r| panic!("{}", r.render()));
            let store = initialise::<f32>(&m.graph, 0).expect("init");
            let shape = vec![b, 30, 784];
            force_len(len);
            let plan = build_plan(
                &m.graph,
                &store,
                std::slice::from_ref(&shape),
                Target::cpu(),
            )
            .expect("plan");
            force_len(None);
            let x = vec![Tensor::from_vec(shape, vec![0.5; b * 30 * 784]).expect("shape")];
            if algo == "fft" {
                breakdown(&ctx, &plan, &x, reps);
            }
            let exe = Executable::new(&ctx, plan).expect("build");
            let r = if algo == "direct" && b > 8 { 1 } else { reps };
            let t = best(&exe, &x, r);
            let n = if algo == "fft" {
                len.unwrap_or(1568)
            } else {
                0
            };
            println!(
                "conv1d 30->30 k=784 L=784 batch {b:>3} {algo:>6} n={n:>4}: {:>9.2} ms",
                t * 1e3
            );
            times.push(t);
        }
        println!(
            "conv1d k=784 batch {b:>3}: fft 2048 / fft 1568 = {:.2}x, direct / fft 1568 = {:.1}x",
            times[1] / times[0],
            times[2] / times[0]
        );
    }
    if !parts.contains("fft") {
        return;
    }
    let rows: usize = flag("--rows").map_or(1024, |s| s.parse().expect("--rows"));
    let mut t = Vec::new();
    for n in [1568, 2048] {
        let plan = transform_plan(n, rows, false, Target::cpu()).expect("FFT plan");
        let stages = plan.steps.len();
        let x = vec![Tensor::from_vec(vec![n, 2, rows], vec![0.25; 2 * n * rows]).expect("shape")];
        let s = launches(&ctx, plan.clone(), &x, reps);
        println!(
            "fft n={n} ({stages} stages) x {rows} rows: {:.2} ms",
            s * 1e3
        );
        // Each stage alone: a plan with only that stage's launch.
        for i in 0..stages {
            let mut one = plan.clone();
            one.steps = vec![plan.steps[i].clone()];
            let radix = n / plan.kernels[plan.steps[i].kernel].grid[1];
            let s = launches(&ctx, one, &x, reps);
            println!("  stage {i} (radix {radix}): {:.3} ms", s * 1e3);
        }
        t.push(s);
    }
    println!("fft 2048 / 1568 time = {:.2}x", t[1] / t[0]);
}

/// The best launch time of `plan` (launches only: the input stays on the device).
fn launches(ctx: &ClContext, plan: Plan, x: &[Tensor<f32>], reps: usize) -> f64 {
    let exe = Executable::new(ctx, plan).expect("build");
    exe.write_inputs(x).expect("write");
    exe.launch().expect("warm-up");
    (0..reps.max(5))
        .map(|_| {
            let t0 = Instant::now();
            exe.launch().expect("launch");
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The launch time of each kind of kernel in `plan` (the name without its number):
/// a plan with only those launches.
fn breakdown(ctx: &ClContext, plan: &Plan, x: &[Tensor<f32>], reps: usize) {
    let kind = |k: usize| {
        plan.kernels[k]
            .name
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '_')
            .to_string()
    };
    let mut kinds: Vec<String> = Vec::new();
    for s in &plan.steps {
        if !kinds.contains(&kind(s.kernel)) {
            kinds.push(kind(s.kernel));
        }
    }
    let all = launches(ctx, plan.clone(), x, reps);
    let mut line = format!("    launches only {:.2} ms =", all * 1e3);
    for k in kinds {
        let mut one = plan.clone();
        one.steps.retain(|s| kind(s.kernel) == k);
        let n = one.steps.len();
        let t = launches(ctx, one, x, reps);
        line += &format!(" {k} x{n}: {:.2} ms;", t * 1e3);
    }
    println!("{line}");
}
