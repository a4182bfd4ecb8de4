//! Throughput of the OpenCL backend: the 3×3 conv (N64 C32 32×32, pad 1) in GFLOP/s and
//! ResNet-20 at batch 1 and 64 in samples/s. Best of several runs after a warm-up.
//! `cargo bench --bench opencl_conv` (needs an OpenCL device; `FNET_DEVICE` picks one).

use fnet::driver::{compile_file, compile_str};
use fnet::eval::Options;
use fnet::ir::Graph;
use fnet::kernel_ir::plan::build_plan;
use fnet::opencl::{target_for, ClContext, DeviceSel, Executable};
use fnet::runtime::initialise;
use fnet::tensor::Tensor;
use std::path::Path;
use std::time::Instant;

fn best_of(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn measure(ctx: &ClContext, name: &str, graph: &Graph, shape: Vec<usize>, runs: usize) {
    let store = initialise::<f32>(graph, 0).expect("init");
    let plan = build_plan(
        graph,
        &store,
        std::slice::from_ref(&shape),
        target_for(&ctx.info),
    )
    .expect("plan");
    let flops = plan.flops() as f64;
    let exe = Executable::new(ctx, plan).expect("build");
    let x = Tensor::from_vec(shape.clone(), vec![0.5; shape.iter().product()]).expect("x");
    exe.write_inputs(&[x]).expect("input");
    let secs = best_of(runs, || exe.launch().expect("run"));
    println!(
        "{name:<32} {:>9.3} ms  {:>8.1} GFLOP/s  {:>9.1} samples/s",
        secs * 1e3,
        flops / secs / 1e9,
        shape[0] as f64 / secs
    );
}

fn main() {
    let sel = std::env::var("FNET_DEVICE")
        .ok()
        .map(|s| s.parse::<DeviceSel>().expect("FNET_DEVICE"))
        .unwrap_or_default();
    let ctx = ClContext::new(sel, fnet::opencl::default_cache_dir()).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    println!("device {}", ctx.info);
    let conv = compile_str(
        "conv.fnet",
        "model c {\n  input x: f32[B, 32, 32, 32]\n  return x |> conv2d(32, 3, padding: 1, bias: false)\n}",
        &Options::default(),
    )
    .map(|(_, m)| m.graph)
    .unwrap_or_else(|r| panic!("{}", r.render()));
    measure(
        &ctx,
        "conv3x3 N64 C32 32x32",
        &conv,
        vec![64, 32, 32, 32],
        10,
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let resnet = compile_file(
        &root.join("examples/resnet20_cifar10.fnet"),
        &Options::default(),
    )
    .map(|(_, m)| m.graph)
    .unwrap_or_else(|r| panic!("{}", r.render()));
    measure(&ctx, "resnet20 batch 1", &resnet, vec![1, 3, 32, 32], 20);
    measure(&ctx, "resnet20 batch 64", &resnet, vec![64, 3, 32, 32], 5);
}
