//! `fnetc train` against PyTorch (tools/train_golden.py): three steps of SGD with
//! momentum and weight decay, and of Adam, on LeNet and on a small FlexConv
//! classifier, from the same initial weights (the model's seed) on the same four
//! samples. PyTorch runs the twins in float64 with its own optimisers; fnet trains in
//! float32 on the reference backend. Each step's loss and every parameter after the
//! three steps (a strided sample of each, as the script stores them) agree within
//! float32 tolerance.

mod common;

use common::train_data::{args, metrics, quiet};
use fnet::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SAMPLE: usize = 256;

/// tools/train_golden.py's `sample_stride`.
fn sample_stride(n: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut s = n.div_ceil(SAMPLE);
    while gcd(s, 210) != 1 {
        s += 1;
    }
    s
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_golden")
}

/// The model of `name` with a train section over its fixture samples: one full batch
/// of four per epoch, three epochs.
fn model_text(name: &str, optimizer: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = match name {
        "lenet" => format!("{root}/examples/lenet_mnist.fnet"),
        _ => fixtures()
            .join(format!("{name}.fnet"))
            .display()
            .to_string(),
    };
    let text = std::fs::read_to_string(source).unwrap();
    let model = match text.find("\ntrain {") {
        Some(at) => &text[..at],
        None => &text,
    };
    let data = |kind: &str| {
        fixtures()
            .join(format!("{name}.{kind}.npy"))
            .display()
            .to_string()
    };
    format!(
        "{model}\ntrain {{\n  data: npy(inputs: \"{}\", labels: \"{}\")\n  optimizer: {optimizer}\n  epochs: 3\n  batch: 4\n}}\n",
        data("x"),
        data("y")
    )
}

#[test]
fn three_steps_of_sgd_and_adam_match_pytorch() {
    let golden: BTreeMap<String, Tensor<f32>> =
        fnet::io::weights::read_weights::<f32>(&fixtures().join("golden.safetensors"))
            .unwrap()
            .tensors;
    let dir = tempfile::tempdir().unwrap();
    // tools/train_golden.py's OPTIMIZERS.
    let optimizers = [
        ("sgd", "sgd(lr: 0.05, momentum: 0.9, weight_decay: 0.001)"),
        ("adam", "adam(lr: 0.002)"),
    ];
    for name in ["lenet", "flex"] {
        for (opt, recipe) in optimizers {
            let what = format!("{name}.{opt}");
            let model = dir.path().join(format!("{what}.fnet"));
            std::fs::write(&model, model_text(name, recipe)).unwrap();
            let out = dir.path().join(&what);
            quiet(&args(&model, &out)).unwrap_or_else(|e| panic!("{what}: {e}"));
            let losses: Vec<f64> = metrics(&out, "step")
                .iter()
                .map(|s| s["loss"].as_f64().unwrap())
                .collect();
            let want = &golden[&format!("{what}.loss")].data;
            assert_eq!(losses.len(), 3, "{what}");
            for (i, (l, w)) in losses.iter().zip(want).enumerate() {
                let w = f64::from(*w);
                assert!(
                    (l - w).abs() <= 1e-5 * w.abs(),
                    "{what} step {i}: loss {l} vs {w}"
                );
            }
            let trained = fnet::io::weights::read_weights::<f32>(&out.join("final.safetensors"))
                .unwrap()
                .tensors;
            let mut compared = 0;
            for (param, t) in &trained {
                if param.ends_with("running_mean") || param.ends_with("running_var") {
                    continue;
                }
                let want = &golden[&format!("{what}.{param}")].data;
                let got: Vec<f32> = t
                    .data
                    .iter()
                    .step_by(sample_stride(t.data.len()))
                    .copied()
                    .collect();
                assert_eq!(got.len(), want.len(), "{what} {param}");
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (g - w).abs() <= 2e-6 + 1e-4 * w.abs(),
                        "{what} {param}[{i}·stride]: fnet {g} vs PyTorch {w}"
                    );
                }
                compared += 1;
            }
            assert_eq!(compared, trained.len(), "{what}: every parameter compared");
        }
    }
}
