//! Whole-model forward throughput (samples/s, criterion `Throughput::Elements(batch)`)
//! for ResNet-20, FlexNet-7 and FlexTCN-6 at batch 1 and 64 on the OpenCL backend, and
//! on the reference interpreter at batch 1 as the baseline. Each model is compiled as
//! `fnetc bench` does: the default inference pipeline with its seeded initial weights
//! bound, and the cost table of the backend it runs on (the device's kind on OpenCL). GFLOP/s = samples/s × the nominal MFLOP per sample printed first.
//!
//! `cargo bench --bench models` (`FNET_DEVICE` picks the OpenCL device; with no OpenCL
//! platform only the reference baseline runs). A model the OpenCL backend cannot lower
//! yet is reported and skipped.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fnet::backend::{Backend, BackendKind, OpenClBackend, ReferenceBackend};
use fnet::cli::bench::{bench_input, compile_bound, BenchArgs};
use fnet::cost::flops::graph_flops;
use fnet::eval::Options;
use fnet::opencl::DeviceSel;
use std::path::Path;
use std::time::Duration;

const MODELS: [(&str, &str); 3] = [
    ("resnet20", "examples/resnet20_cifar10.fnet"),
    ("flexnet7", "examples/flexnet7_cifar10.fnet"),
    ("flextcn6", "examples/flextcn6_smnist.fnet"),
];

fn args(path: &str, batch: usize) -> BenchArgs {
    BenchArgs {
        model: Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
        weights: None,
        options: Options::default(),
        backend: BackendKind::Reference,
        device: None,
        batch,
        iters: 1,
        warmup: 0,
        unoptimised: false,
        training: false,
    }
}

fn opencl() -> Option<OpenClBackend> {
    let sel = std::env::var("FNET_DEVICE")
        .ok()
        .map(|s| s.parse::<DeviceSel>().expect("FNET_DEVICE"))
        .unwrap_or_default();
    match OpenClBackend::open(sel, fnet::opencl::default_cache_dir()) {
        Ok(backend) => Some(backend),
        Err(e) => {
            eprintln!("no OpenCL benches: {e}");
            None
        }
    }
}

fn models(c: &mut Criterion) {
    let opencl = opencl();
    for (name, path) in MODELS {
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for batch in [1, 64] {
            // Each backend runs the model as compiled for it: the cost table of the
            // backend (and device kind) picks the conv algorithms.
            let compiled = |cost| {
                compile_bound(&args(path, batch), cost)
                    .unwrap_or_else(|e| panic!("compiling {path}: {e}"))
            };
            let (graph, store) = compiled(ReferenceBackend.cost_table());
            let x = bench_input(&graph, batch).expect("input");
            let flops = graph_flops(&graph, std::slice::from_ref(&x.shape)).expect("flops");
            eprintln!(
                "{name}: {:.2} MFLOP per sample",
                flops as f64 / batch as f64 / 1e6
            );
            group.throughput(Throughput::Elements(batch as u64));
            if batch == 1 {
                let mut prepared = ReferenceBackend
                    .prepare(graph, store, std::slice::from_ref(&x.shape))
                    .expect("prepare");
                group.bench_function(BenchmarkId::new("reference", batch), |b| {
                    b.iter(|| prepared.forward(std::slice::from_ref(&x)).expect("run"))
                });
            }
            let Some(opencl) = &opencl else { continue };
            let (graph, store) = compiled(opencl.cost_table());
            let mut prepared = match opencl.prepare(graph, store, std::slice::from_ref(&x.shape)) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{name} batch {batch}: skipped on OpenCL: {e}");
                    continue;
                }
            };
            group.bench_function(BenchmarkId::new("opencl", batch), |b| {
                b.iter(|| prepared.forward(std::slice::from_ref(&x)).expect("run"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, models);
criterion_main!(benches);
