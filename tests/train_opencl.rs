//! `fnetc train --backend opencl`: the same run on OpenCL and on the reference
//! interpreter ends with the same weights within f32 tolerance — LeNet on a few
//! shipped MNIST digits, and a FlexConv whose mask learns fast enough that its crop
//! changes (the OpenCL plan switches with it, cached by crop size).
#![cfg(feature = "opencl")]

mod common;

use common::train_data::{args, metrics, quiet, write_idx, FLEX};
use fnet::backend::BackendKind;
use std::path::Path;

/// Trains `model` into `dir/<backend>` on both backends; returns the two run dirs.
fn both(dir: &Path, model: &Path) -> [std::path::PathBuf; 2] {
    [BackendKind::Reference, BackendKind::Opencl].map(|b| {
        let out = dir.join(b.name());
        let mut a = args(model, &out);
        a.backend = b;
        a.keep = 4;
        quiet(&a).unwrap_or_else(|e| panic!("{}: {e}", b.name()));
        out
    })
}

/// Every tensor of the two weight files agrees to `|a − b| ≤ atol + rtol·|b|`.
fn weights_close(a: &Path, b: &Path, atol: f32, rtol: f32) {
    let read = |p: &Path| fnet::io::weights::read_weights::<f32>(p).unwrap().tensors;
    let (a, b) = (read(a), read(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, x) in &a {
        let y = &b[name];
        assert_eq!(x.shape, y.shape, "{name}");
        for (i, (p, q)) in x.data.iter().zip(&y.data).enumerate() {
            assert!(
                (p - q).abs() <= atol + rtol * q.abs(),
                "{name}[{i}]: opencl {p} vs reference {q}"
            );
        }
    }
}

fn step_losses(run: &Path) -> Vec<f64> {
    metrics(run, "step")
        .iter()
        .map(|s| s["loss"].as_f64().unwrap())
        .collect()
}

fn losses_close(cl: &Path, reference: &Path) {
    let (a, b) = (step_losses(cl), step_losses(reference));
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * y.abs().max(1.0),
            "step {i}: {x} vs {y}"
        );
    }
}

#[test]
fn lenet_trains_on_opencl_as_on_the_reference_backend() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/examples/lenet_mnist.fnet"))
        .unwrap()
        .replace("\"data/mnist10k/", &format!("\"{root}/data/mnist10k/"))
        .replace(
            "train: [0, 8000], test: [8000, 10000]",
            "train: [0, 64], test: [64, 96]",
        )
        .replace("adam(lr: 0.003)", "sgd(lr: 0.05, momentum: 0.9)")
        .replace("epochs: 5", "epochs: 1")
        .replace("batch: 32", "batch: 16");
    assert!(
        text.contains("train: [0, 64]") && text.contains("sgd("),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lenet.fnet");
    std::fs::write(&model, text).unwrap();
    let [reference, cl] = both(dir.path(), &model);
    assert_eq!(metrics(&cl, "step").len(), 4);
    losses_close(&cl, &reference);
    weights_close(
        &cl.join("final.safetensors"),
        &reference.join("final.safetensors"),
        1e-5,
        1e-3,
    );
    let acc = |r: &Path| metrics(r, "epoch")[0]["test_accuracy"].as_f64().unwrap();
    assert_eq!(acc(&cl), acc(&reference));
}

#[test]
fn a_flexconv_whose_crop_changes_trains_on_opencl_as_on_the_reference_backend() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), 52, 6);
    let model = dir.path().join("flexy.fnet");
    // SGD, not Adam: the FlexConv bias feeds a batch norm, so its gradient is zero
    // up to rounding, and Adam would scale that rounding noise up to a full step.
    let text = FLEX.replace("epochs: 3", "epochs: 2").replace(
        "adam(lr: 0.02, groups: [group(match: \"*.mask_params\", lr_factor: 5)])",
        "sgd(lr: 0.05, momentum: 0.9, groups: [group(match: \"*.mask_params\", lr_factor: 10)])",
    );
    assert!(text.contains("sgd("), "{text}");
    std::fs::write(&model, text).unwrap();
    let [reference, cl] = both(dir.path(), &model);
    losses_close(&cl, &reference);
    weights_close(
        &cl.join("final.safetensors"),
        &reference.join("final.safetensors"),
        1e-4,
        1e-2,
    );
    let sizes = |r: &Path| -> Vec<serde_json::Value> {
        metrics(r, "epoch")
            .into_iter()
            .map(|e| e["kernel_sizes"].clone())
            .collect()
    };
    assert_eq!(sizes(&cl), sizes(&reference));
    // The crop moved during training (3×3 at the start, 7×5 after the first epoch),
    // so the OpenCL run switched plans.
    let (_, m) = fnet::driver::compile_file(&model, &fnet::eval::Options::default()).unwrap();
    let init = fnet::runtime::initialise::<f32>(&m.graph, m.graph.seed).unwrap();
    let before =
        serde_json::to_value(fnet::train::flex_sizes::kernel_sizes(&m.graph, &init).unwrap())
            .unwrap();
    assert_ne!(sizes(&reference)[0], before, "the crop changed in epoch 1");
}
