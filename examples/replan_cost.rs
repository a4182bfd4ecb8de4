//! What a FlexConv crop change costs an OpenCL training run, and where it goes.
//!
//! ```text
//! POCL_KERNEL_CACHE=0 cargo run --release --example replan_cost -- MODEL.fnet [--batch N] [--layers K]
//! ```
//!
//! Differentiates `MODEL` as `fnetc train` does (`autodiff::differentiate`, the model
//! graph uncompiled, so each crop is a `mask_crop` the backend keys plans by),
//! prepares its training graph on the default OpenCL device with an in-memory program
//! cache, runs two steps, then widens the mask of `K` FlexConvs (default 3, spread
//! over the model) one at a time, and for each:
//!
//! - `step with re-plan`: the first step after the mask was written, as the trainer
//!   runs it (`Prepared::run`: the crops from the masks, the plan lowered, the
//!   executable made from the kernel cache, the parameters and inputs written, the
//!   launches), against a plain step;
//! - its parts, redone outside the backend for the next crop: the crops from the
//!   masks (`kernel_sizes`), the plan lowering (`build_plan_in`), the executable on
//!   the same context (`after`: only the new kernels built) and on a fresh one
//!   (`before`: every kernel built, as the whole-program cache did for a crop not
//!   seen before), each with its first launch, which is where PoCL compiles the
//!   work-group functions; and the executable made again with every kernel
//!   reused, which is its host side alone (buffers, constants, kernel objects).
//!
//! `POCL_KERNEL_CACHE=0` keeps PoCL's own on-disk cache from hiding the builds.

use fnet::autodiff::{differentiate, Loss};
use fnet::backend::{OpenClBackend, Prepared};
use fnet::kernel_ir::plan::build_plan_in;
use fnet::opencl::{ClContext, DeviceSel, Executable};
use fnet::runtime::{initialise, Mode, ParamStore};
use fnet::tensor::Tensor;
use fnet::train::flex_sizes::kernel_sizes;
use std::sync::Arc;
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> T {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn secs<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// `params` with the Gaussian mask of `layer` twice as wide (its sigmas doubled:
/// the parameters are `[axes, (mean, sigma)]`).
fn widen(params: &ParamStore<f32>, layer: &str) -> (String, Tensor<f32>) {
    let name = format!("{layer}.mask_params");
    let mut t = params[&name].clone();
    for (i, v) in t.data.iter_mut().enumerate() {
        if i % 2 == 1 {
            *v *= 2.0;
        }
    }
    (name, t)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .expect("usage: replan_cost MODEL.fnet [--batch N]");
    let batch: usize = arg(&args, "--batch", 16);
    let spread: usize = arg(&args, "--layers", 3);
    let (_, m) = fnet::driver::compile_file(std::path::Path::new(model), &Default::default())
        .unwrap_or_else(|r| panic!("{}", r.render()));
    let mut params: ParamStore<f32> = initialise(&m.graph, m.graph.seed).expect("init");
    let tg = differentiate(&m.graph, &Loss::default()).expect("differentiate");
    let input = &m.graph.node(m.graph.inputs[0]).ty.shape;
    let mut shape = vec![batch];
    shape.extend(
        input[1..]
            .iter()
            .map(|d| d.known().expect("known") as usize),
    );
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec(
        shape.clone(),
        (0..n).map(|i| (i % 7) as f32 / 7.0).collect(),
    )
    .expect("x");
    let labels = Tensor::from_vec(vec![batch], vec![0.0; batch]).expect("labels");
    let inputs = vec![x, labels];
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();

    let ctx = Arc::new(ClContext::new(DeviceSel::Default, None).expect("device"));
    let backend = OpenClBackend::new(ctx.clone());
    let (prepared, t_first) = secs(|| backend.prepare_plan(&tg.graph, &params, &shapes));
    let mut prepared = prepared.expect("prepare");
    let kernels = prepared.executable().plan.kernels.len();
    println!(
        "{model} batch {batch}: training plan of {kernels} kernels, {} launches",
        prepared.executable().plan.steps.len()
    );
    println!("first plan (every kernel built): {t_first:.2} s");
    prepared.write_inputs(&inputs).expect("inputs");
    let (_, t_launch) = secs(|| prepared.run().expect("run"));
    println!("first step (PoCL compiles the work-group functions): {t_launch:.2} s");
    let (_, t_step) = secs(|| prepared.run().expect("run"));
    println!("plain step: {t_step:.3} s");

    let sizes = kernel_sizes(&m.graph, &params).expect("sizes");
    let layers: Vec<String> = sizes.keys().cloned().collect();
    let picks: Vec<&String> = (0..spread.min(layers.len()))
        .map(|i| &layers[i * (layers.len() - 1) / (spread.max(2) - 1).max(1)])
        .collect();
    for layer in picks {
        let (name, wide) = widen(&params, layer);
        let before_stats = ctx.stats();
        params.insert(name.clone(), wide.clone());
        let new_sizes = kernel_sizes(&m.graph, &params).expect("sizes");
        prepared.write_param(&name, &wide).expect("write");
        let (_, t_replan) = secs(|| prepared.run().expect("run"));
        let s = ctx.stats();
        println!(
            "\n{layer}: crop {:?} -> {:?}; step with re-plan {t_replan:.2} s \
             ({} kernels built, {} reused)",
            sizes[layer],
            new_sizes[layer],
            s.kernels_built - before_stats.kernels_built,
            s.kernels_reused - before_stats.kernels_reused
        );

        // The parts, for the next crop of the same layer (wider again).
        let current = params.clone();
        let (name2, wider) = widen(&params, layer);
        params.insert(name2, wider);
        let (_, t_crops) = secs(|| kernel_sizes(&m.graph, &params).expect("sizes"));
        let target = backend.target();
        let lower = || build_plan_in(&tg.graph, &params, &shapes, target, Mode::Train);
        let (plan, t_lower) = secs(lower);
        let plan = plan.expect("plan");
        let s0 = ctx.stats();
        let (after, t_after) = secs(|| Executable::new(&ctx, plan.clone()).expect("exe"));
        let s1 = ctx.stats();
        let (_, t_after_run) = secs(|| after.run(&inputs).expect("run"));
        drop(after);
        // The host side of an executable alone: every kernel reused now.
        let (again, t_host) = secs(|| Executable::new(&ctx, plan.clone()).expect("exe"));
        drop(again);
        let fresh = ClContext::new(DeviceSel::Default, None).expect("device");
        let (before, t_before) = secs(|| Executable::new(&fresh, plan).expect("exe"));
        let (_, t_before_run) = secs(|| before.run(&inputs).expect("run"));
        println!(
            "  next crop: masks -> crops {:.1} ms, plan lowering {t_lower:.3} s; executable \
             after {t_after:.2} s + first run {t_after_run:.2} s ({} kernels built), \
             before {t_before:.2} s + first run {t_before_run:.2} s ({} built); \
             executable with every kernel reused (buffers, constants, kernel objects) \
             {t_host:.3} s",
            t_crops * 1e3,
            s1.kernels_built - s0.kernels_built,
            fresh.stats().kernels_built
        );
        params = current;
    }
}
