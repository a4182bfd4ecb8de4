//! Whole-network forward passes of the shipped resnet20, flexnet7 and flextcn6
//! examples against independent PyTorch twins (`tools/golden_nets.py`, fixtures
//! in `tests/fixtures/golden/nets/`).
//!
//! The weights are not stored: both sides start from fnet's deterministic
//! initialisation with seed 7 (`fnetc init --seed 7` there, `initialise` here),
//! then overwrite the BatchNorm affines and the zero-initialised biases with the
//! fixed formulas of `perturb`, and load the BatchNorm running statistics the twin
//! calibrated on the fixture input (`MODEL.buffers.safetensors`). Eval mode.
//!
//! Tolerance: |a − b| <= tol · max(1, max|expected|) with tol 1e-4 for the f32
//! interpreter and 1e-12 for f64 (the reference is float64 PyTorch on the same
//! float32 weights, so the f64 run differs only by summation order).

mod common;

use std::path::{Path, PathBuf};

use fnet::driver::compile_file;
use fnet::eval::Options;
use fnet::io::npy::read_npy;
use fnet::io::weights::read_weights;
use fnet::ir::graph::Graph;
use fnet::ir::op::ConvAlgo;
use fnet::runtime::{run, ParamStore, RunOptions, RunResult};
use fnet::tensor::{Scalar, Tensor};

const F32: f64 = 1e-4;
const F64: f64 = 1e-12;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/golden/nets").join(name)
}

fn graph(example: &str) -> Graph {
    let path = root().join("examples").join(example);
    match compile_file(&path, &Options::default()) {
        Ok((_, m)) => m.graph,
        Err(report) => panic!("{example} does not compile:\n{}", report.render()),
    }
}

/// The f32 weights both sides use.
fn weights(model: &str, g: &Graph) -> ParamStore<f32> {
    let mut store = common::golden_weights::perturbed(g);
    let buffers = read_weights::<f32>(&fixture(&format!("{model}.buffers.safetensors")))
        .unwrap_or_else(|e| panic!("{e}"));
    let running: Vec<&String> = store
        .keys()
        .filter(|k| k.ends_with(".running_mean") || k.ends_with(".running_var"))
        .collect();
    assert_eq!(
        running,
        buffers.tensors.keys().collect::<Vec<_>>(),
        "{model}: the calibrated buffers are exactly the model's running statistics"
    );
    for (name, t) in buffers.tensors {
        let old = store.insert(name.clone(), t).unwrap();
        assert_eq!(old.shape, store[&name].shape, "{name}");
    }
    store
}

fn cast_store(store: &ParamStore<f32>) -> ParamStore<f64> {
    store.iter().map(|(k, v)| (k.clone(), v.to_f64())).collect()
}

fn input(model: &str) -> Tensor<f32> {
    read_npy::<f32>(&fixture(&format!("{model}.x.npy"))).unwrap_or_else(|e| panic!("{e}"))
}

fn expected(model: &str) -> Tensor<f64> {
    read_npy::<f64>(&fixture(&format!("{model}.y.npy"))).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts closeness and returns the max |difference|.
#[track_caller]
fn close<T: Scalar, U: Scalar>(what: &str, got: &Tensor<T>, want: &Tensor<U>, tol: f64) -> f64 {
    let err = common::assert_close(what, got, want, tol);
    eprintln!(
        "{what}: max |diff| {err:.3e} (max |expected| {:.4})",
        want.max_abs()
    );
    err
}

fn forward<T: Scalar + rustfft::FftNum>(
    g: &Graph,
    store: &ParamStore<T>,
    x: Tensor<T>,
    options: &RunOptions,
) -> RunResult<T> {
    run(g, store, &[x], options).unwrap_or_else(|e| panic!("{}", e.message))
}

/// Runs `example` in f32 and f64 against the PyTorch logits; returns the f32 run.
fn golden(model: &str, example: &str) -> RunResult<f32> {
    let g = graph(example);
    let store = weights(model, &g);
    let x = input(model);
    let want = expected(model);
    assert_eq!(want.shape[0], x.shape[0], "{model}: batch");
    let opts = RunOptions::default();

    let r32 = forward(&g, &store, x.clone(), &opts);
    let r64 = forward(&g, &cast_store(&store), x.to_f64(), &opts);
    close(
        &format!("{model} f32 vs PyTorch"),
        &r32.outputs[0],
        &want,
        F32,
    );
    close(
        &format!("{model} f64 vs PyTorch"),
        &r64.outputs[0],
        &want,
        F64,
    );
    close(
        &format!("{model} f32 vs f64"),
        &r32.outputs[0],
        &r64.outputs[0],
        F32,
    );
    assert_eq!(r32.kernel_sizes, r64.kernel_sizes, "{model}: crop sizes");
    r32
}

#[test]
fn resnet20_matches_pytorch() {
    let r = golden("resnet20", "resnet20_cifar10.fnet");
    assert!(r.kernel_sizes.is_empty());
}

#[test]
fn flexnet7_matches_pytorch_with_5x5_initial_crops() {
    let r = golden("flexnet7", "flexnet7_cifar10.fnet");
    let sizes = &r.kernel_sizes;
    // The stem plus two FlexConvs in each of the 7 blocks.
    assert_eq!(sizes.len(), 15, "{sizes:?}");
    for (layer, k) in sizes {
        assert_eq!(k, &[5, 5], "{layer}: horizon 33, sigma 0.075 crops to 5x5");
    }
}

#[test]
fn flextcn6_matches_pytorch_with_64_tap_initial_crops() {
    let r = golden("flextcn6", "flextcn6_smnist.fnet");
    let sizes = &r.kernel_sizes;
    // Two causal FlexConvs in each of the 6 blocks.
    assert_eq!(sizes.len(), 12, "{sizes:?}");
    for (layer, k) in sizes {
        assert_eq!(k, &[64], "{layer}: 784 steps, sigma 0.075 crops to 64 taps");
    }
}

#[test]
fn flextcn6_fft_equals_direct() {
    let g = graph("flextcn6_smnist.fnet");
    let store = weights("flextcn6", &g);
    let x = input("flextcn6");
    let algo = |a| RunOptions {
        force_algo: Some(a),
        ..RunOptions::default()
    };
    let direct = forward(&g, &store, x.clone(), &algo(ConvAlgo::Direct));
    let fft = forward(&g, &store, x, &algo(ConvAlgo::Fft));
    close(
        "flextcn6 fft vs direct (f32)",
        &fft.outputs[0],
        &direct.outputs[0],
        F32,
    );
    close(
        "flextcn6 fft (f32) vs PyTorch",
        &fft.outputs[0],
        &expected("flextcn6"),
        F32,
    );
    assert_eq!(fft.kernel_sizes, direct.kernel_sizes);

    let fft64 = forward(
        &g,
        &cast_store(&store),
        input("flextcn6").to_f64(),
        &algo(ConvAlgo::Fft),
    );
    close(
        "flextcn6 fft (f64) vs PyTorch",
        &fft64.outputs[0],
        &expected("flextcn6"),
        F64,
    );
}
