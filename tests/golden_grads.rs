//! Whole-network gradients of the shipped LeNet and ResNet-20 examples against
//! PyTorch (`tools/golden_grads.py`, fixtures in `tests/fixtures/golden/grads/`):
//! the autodiff pass's training graph, run on the interpreter in training mode, must
//! give PyTorch's loss, the gradient of every parameter, and the running statistics
//! PyTorch's training-mode BatchNorm leaves (momentum 0.1, unbiased variance).
//!
//! The weights are not stored: both sides start from `fnetc init --seed 7` /
//! `initialise(…, 7)` and apply golden_nets.py's `perturb`. LeNet has no label
//! smoothing, ResNet-20 (batch statistics at every BN) 0.1.
//!
//! The inputs are chosen (and the script checks) so that no ReLU input or max-pool
//! runner-up lies within 1e-5 of its kink: with an input 5.4e-7 from a ReLU's kink,
//! fnet's f32 forward put it on the other side and the f32 gradients differed from
//! PyTorch's by up to 1e-1 relative, exactly as flipping that one element does in f64.
//!
//! Tolerance, per tensor: |a − b| <= tol · max|expected|, tol 1e-4 for the f32
//! interpreter and 1e-6 for f64 (the fixture is PyTorch's float64 result rounded
//! once to float32, so the f64 run differs by that rounding only).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fnet::autodiff::{differentiate, Loss};
use fnet::driver::compile_file;
use fnet::eval::Options;
use fnet::io::weights::read_weights;
use fnet::ir::graph::Graph;
use fnet::runtime::{run, Mode, ParamStore, RunOptions};
use fnet::tensor::{Scalar, Tensor};

const F32: f64 = 1e-4;
const F64: f64 = 1e-6;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(model: &str) -> PathBuf {
    root()
        .join("tests/fixtures/golden/grads")
        .join(format!("{model}.grads.safetensors"))
}

fn graph(example: &str) -> Graph {
    let path = root().join("examples").join(example);
    match compile_file(&path, &Options::default()) {
        Ok((_, m)) => m.graph,
        Err(report) => panic!("{example} does not compile:\n{}", report.render()),
    }
}

/// The largest |got − want| relative to `want`'s largest magnitude (gradients are
/// mostly far below 1, so `common::assert_close`'s floor of 1 would hide errors).
fn relative_error<T: Scalar, U: Scalar>(what: &str, got: &Tensor<T>, want: &Tensor<U>) -> f64 {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want.max_abs();
    assert!(
        scale > 0.0,
        "{what}: an all-zero expectation checks nothing"
    );
    got.max_abs_diff(want).expect("same shape") / scale
}

/// Runs the training graph of `example` in `T` and checks every output against
/// the fixture; returns the worst relative error.
fn check<T: Scalar + rustfft::FftNum>(
    model: &str,
    example: &str,
    smoothing: f64,
    tol: f64,
    cast: fn(&Tensor<f32>) -> Tensor<T>,
) -> f64 {
    let g = graph(example);
    let fix = read_weights::<f32>(&fixture(model))
        .unwrap_or_else(|e| panic!("{e}"))
        .tensors;
    let tg = differentiate(
        &g,
        &Loss {
            output: 0,
            label_smoothing: smoothing,
            ..Loss::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The fixture holds exactly one gradient per trainable parameter and one update
    // per running statistic: nothing fnet computes goes unchecked, and nothing
    // PyTorch differentiates is missing.
    let store = common::golden_weights::perturbed(&g);
    let want_grads: BTreeSet<&str> = fix.keys().filter_map(|k| k.strip_prefix("grad.")).collect();
    let want_updates: BTreeSet<&str> = fix
        .keys()
        .filter_map(|k| k.strip_prefix("update."))
        .collect();
    let got_grads: BTreeSet<&str> = tg.grads.iter().map(String::as_str).collect();
    let got_updates: BTreeSet<&str> = tg.buffers.iter().map(String::as_str).collect();
    assert_eq!(got_grads, want_grads, "{model}: gradients");
    assert_eq!(got_updates, want_updates, "{model}: running statistics");
    assert_eq!(
        store.len(),
        got_grads.len() + got_updates.len(),
        "{model}: every parameter is a gradient or a buffer"
    );

    let params: ParamStore<T> = store.iter().map(|(k, v)| (k.clone(), cast(v))).collect();
    let inputs = [cast(&fix["x"]), cast(&fix["labels"])];
    let options = RunOptions {
        mode: Mode::Train,
        ..RunOptions::default()
    };
    let out = run(&tg.graph, &params, &inputs, &options).unwrap_or_else(|e| panic!("{e}"));
    let names = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|n| format!("grad.{n}")))
        .chain(tg.buffers.iter().map(|n| format!("update.{n}")));
    // Every tensor is compared before failing, so a failure shows where the
    // disagreement starts in the backward sweep.
    let mut report = Vec::new();
    let mut worst = (0.0, String::new());
    for (name, got) in names.zip(&out.outputs) {
        let rel = relative_error(&format!("{model} {name}"), got, &fix[&name]);
        if rel > tol {
            report.push(format!("{name}: relative error {rel:.3e}"));
        }
        if rel >= worst.0 {
            worst = (rel, name);
        }
    }
    let kind = std::any::type_name::<T>();
    assert!(
        report.is_empty(),
        "{model} ({kind}): {} of {} tensors beyond {tol:e}:\n{}",
        report.len(),
        out.outputs.len(),
        report.join("\n")
    );
    eprintln!(
        "{model} ({kind}): worst relative error {:.3e} at {}",
        worst.0, worst.1
    );
    worst.0
}

#[test]
fn lenet_gradients_match_pytorch() {
    check::<f32>("lenet", "lenet_mnist.fnet", 0.0, F32, Tensor::clone);
    check::<f64>("lenet", "lenet_mnist.fnet", 0.0, F64, Tensor::to_f64);
}

#[test]
fn resnet20_gradients_and_running_statistics_match_pytorch_with_label_smoothing() {
    check::<f64>(
        "resnet20",
        "resnet20_cifar10.fnet",
        0.1,
        F64,
        Tensor::to_f64,
    );
    check::<f32>("resnet20", "resnet20_cifar10.fnet", 0.1, F32, Tensor::clone);
}
