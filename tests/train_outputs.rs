//! What `fnetc train` records and leaves beyond the loop itself: the loss's
//! regulariser terms per step, FlexConv kernel sizes per epoch, and the inference
//! artifact `model.fnc` that reproduces the last evaluation.

mod common;

use common::train_data::{args, metrics, quiet, write_idx};
use std::path::{Path, PathBuf};

/// A conv feeding a shared-basis conv (two shared and two unique 3×3 filters).
const SHARED: &str = r#"
model shared {
  input x: f32[B, 1, 6, 6]
  seed 3
  basis b1 = shared_basis(channels: 4, shared: 2, unique: 2)
  h = x |> conv2d(4, 3, padding: 1, bias: false) |> batchnorm |> relu
  h = h |> basis_conv(b1, 1) |> batchnorm |> relu
  return h |> global_avg_pool |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, 40], test: [40, 52])
  optimizer: sgd(lr: 0.1, momentum: 0.9)
  REGS
  epochs: 2
  batch: 10
  seed: 5
}
"#;

fn setup(dir: &Path, name: &str, text: &str) -> PathBuf {
    write_idx(dir, 52, 6);
    let model = dir.join(format!("{name}.fnet"));
    std::fs::write(&model, text).unwrap();
    model
}

fn term(step: &serde_json::Value, name: &str) -> f64 {
    step["terms"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no term {name} in {step}"))
}

/// The orthogonality term is logged per step, the terms sum to the loss, and its λ
/// changes the trajectory: λ = 0 trains exactly as no regulariser, λ > 0 does not.
#[test]
fn regulariser_terms_are_logged_and_steer_training() {
    let dir = tempfile::tempdir().unwrap();
    let run = |regs: &str, out: &str| {
        let model = setup(dir.path(), out, &SHARED.replace("REGS", regs));
        let out = dir.path().join(out);
        quiet(&args(&model, &out)).unwrap();
        out
    };
    let none = run("", "none");
    let zero = run("regularizers: [orthogonality(weight: 0)]", "zero");
    let some = run("regularizers: [orthogonality(weight: 0.5)]", "some");
    let steps = metrics(&some, "step");
    assert_eq!(steps.len(), 8);
    for s in &steps {
        let (ce, reg) = (term(s, "loss.ce"), term(s, "reg.orthogonality"));
        let loss = s["loss"].as_f64().unwrap();
        assert!(reg > 0.0, "{s}");
        assert!(
            (ce + reg - loss).abs() <= 1e-5 * loss.abs(),
            "terms {ce} + {reg} vs loss {loss}"
        );
    }
    // Without regularisers there are no terms; with λ = 0 the term is 0.
    assert!(metrics(&none, "step")
        .iter()
        .all(|s| s.get("terms").is_none()));
    for s in metrics(&zero, "step") {
        assert_eq!(term(&s, "reg.orthogonality"), 0.0);
        assert_eq!(term(&s, "loss.ce"), s["loss"].as_f64().unwrap());
    }
    let weights = |run: &Path| std::fs::read(run.join("final.safetensors")).unwrap();
    assert!(
        weights(&none) == weights(&zero),
        "λ = 0 trains as no regulariser"
    );
    assert!(
        weights(&none) != weights(&some),
        "λ > 0 changes the weights"
    );
    // The first step sees the same weights, so the same cross-entropy; the penalty's
    // gradient then moves the trajectory off.
    let zero_steps = metrics(&zero, "step");
    assert_eq!(term(&steps[0], "loss.ce"), term(&zero_steps[0], "loss.ce"));
    assert_ne!(
        term(&steps[7], "loss.ce"),
        term(&zero_steps[7], "loss.ce"),
        "the trajectories part"
    );
}
