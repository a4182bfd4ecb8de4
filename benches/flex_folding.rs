//! What folding FlexConv kernels buys, per model at batch 1:
//!
//! - on the reference interpreter, the unfused graph (kernel networks evaluated every
//!   forward) against the graph after `materialize-frozen` and `fuse-mask` with bound
//!   weights (kernels folded to cropped constants), and the time the fold takes;
//! - on OpenCL (FlexNet-7), kernels synthesised on the device against kernels folded
//!   on the host, forward time interleaved in one run, and the cost of re-synthesising
//!   after a weight update (`Executable::write_param`) against re-running the pipeline.
//!
//! `cargo bench --bench flex_folding` (`FNET_DEVICE` picks the OpenCL device; without
//! an OpenCL platform only the interpreter part runs). Prints best-of-N times.

use fnet::cost::fit::best_seconds;
use fnet::driver::compile_file;
use fnet::eval::{Module, Options};
use fnet::ir::graph::Graph;
use fnet::kernel_ir::plan::build_plan;
use fnet::opencl::{target_for, ClContext, DeviceSel, Executable};
use fnet::passes::pipeline::{default_pipeline, from_names, registry};
use fnet::passes::{CompileMode, PassContext};
use fnet::runtime::{initialise, run, ParamStore, RunError, RunOptions};
use fnet::tensor::Tensor;
use std::path::Path;

fn example(file: &str) -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    compile_file(&path, &Options::default())
        .map(|(_, m)| m)
        .unwrap_or_else(|r| panic!("{}", r.render()))
}

fn input(shape: &[usize]) -> Tensor<f32> {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    Tensor::from_vec(shape.to_vec(), data).expect("shape")
}

/// `graph` after the passes `names`, with `store` bound.
fn passes(graph: &Graph, names: &[&str], store: &ParamStore<f32>) -> Graph {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut g = graph.clone();
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.weights = Some(store.clone());
    from_names(&names)
        .expect("known passes")
        .run(&mut g, &mut ctx, &mut |_| {})
        .expect("pipeline");
    g
}

fn interpreter(file: &str, shape: &[usize]) {
    let m = example(file);
    let store = initialise::<f32>(&m.graph, 0).expect("init");
    let x = input(shape);
    let fold = best_seconds(1, 3, 0.0, || {
        passes(&m.graph, &["materialize-frozen", "fuse-mask"], &store);
        Ok::<(), RunError>(())
    })
    .expect("fold");
    let folded = passes(&m.graph, &["materialize-frozen", "fuse-mask"], &store);
    let time = |g: &Graph| {
        best_seconds(3, 3, 0.0, || {
            run(g, &store, std::slice::from_ref(&x), &RunOptions::default()).map(|_| ())
        })
        .expect("forward")
    };
    let (a, b) = (time(&m.graph), time(&folded));
    println!(
        "{file}: fold {:.1} ms; interpreter forward unfused {:.1} ms, folded {:.1} ms ({:.2}x); nodes {} -> {}",
        fold * 1e3,
        a * 1e3,
        b * 1e3,
        a / b,
        m.graph.g.node_count(),
        folded.g.node_count()
    );
}

/// FlexNet-7 compiled without weights (kernels synthesised on the device) against
/// the default pipeline with bound weights (kernels folded on the host).
fn device_synthesis(ctx: &ClContext) -> Result<(), RunError> {
    let m = example("flexnet7_cifar10.fnet");
    let store = initialise::<f32>(&m.graph, 0)?;
    let shape = vec![1, 3, 32, 32];
    let x = input(&shape);
    // Every pass but the algorithm choice: device synthesis feeds direct convs only.
    let names: Vec<&str> = registry()
        .iter()
        .map(|p| p.name())
        .filter(|&n| n != "choose-conv-algo")
        .collect();
    let mut device_graph = m.graph.clone();
    let mut pc = PassContext::new(CompileMode::Inference);
    from_names(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(RunError::new)?
        .run(&mut device_graph, &mut pc, &mut |_| {})
        .map_err(|e| RunError::new(e.to_string()))?;
    let mut host_graph = m.graph.clone();
    let fold = best_seconds(1, 3, 0.0, || {
        host_graph = m.graph.clone();
        let mut pc = PassContext::new(CompileMode::Inference);
        pc.weights = Some(store.clone());
        default_pipeline(CompileMode::Inference)
            .run(&mut host_graph, &mut pc, &mut |_| {})
            .map_err(|e| RunError::new(e.to_string()))
    })?;
    let target = target_for(&ctx.info);
    let shapes = std::slice::from_ref(&shape);
    let device = Executable::new(ctx, build_plan(&device_graph, &store, shapes, target)?)?;
    let host = Executable::new(ctx, build_plan(&host_graph, &store, shapes, target)?)?;
    let mut fwd = [f64::INFINITY; 2];
    // Interleaved rounds so drift on a shared machine hits both alike.
    for _ in 0..5 {
        for (i, exe) in [&device, &host].into_iter().enumerate() {
            exe.write_inputs(std::slice::from_ref(&x))?;
            fwd[i] = fwd[i].min(best_seconds(30, 30, 0.0, || exe.launch())?);
        }
    }
    let name = "res1.flex1.kernel_net.output_linear.weight";
    let w = store
        .get(name)
        .ok_or_else(|| RunError::new(format!("no `{name}`")))?;
    let resynth = best_seconds(20, 20, 0.0, || device.write_param(name, w))?;
    println!(
        "flexnet7 on {}: forward batch 1, device synthesis {:.3} ms, host constants {:.3} ms (ratio {:.3})",
        ctx.info.name,
        fwd[0] * 1e3,
        fwd[1] * 1e3,
        fwd[0] / fwd[1]
    );
    println!(
        "kernel synthesis of all 15 layers after a weight update: on the device {:.3} ms, by the host pipeline {:.1} ms (ratio {:.3})",
        resynth * 1e3,
        fold * 1e3,
        resynth / fold
    );
    Ok(())
}

fn main() {
    interpreter("flexnet7_cifar10.fnet", &[1, 3, 32, 32]);
    interpreter("flextcn6_smnist.fnet", &[1, 1, 784]);
    let sel = std::env::var("FNET_DEVICE")
        .ok()
        .map(|s| s.parse::<DeviceSel>().expect("FNET_DEVICE"))
        .unwrap_or_default();
    match ClContext::new(sel, fnet::opencl::default_cache_dir()) {
        Ok(ctx) => device_synthesis(&ctx).unwrap_or_else(|e| panic!("{e}")),
        Err(e) => eprintln!("no OpenCL part: {e}"),
    }
}
