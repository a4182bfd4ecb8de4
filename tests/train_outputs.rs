//! What `fnetc train` records and leaves beyond the loop itself: the loss's
//! regulariser terms per step, FlexConv kernel sizes per epoch, and the inference
//! artifact `model.fnc` that reproduces the last evaluation.

mod common;

use common::train_data::{args, metrics, quiet, write_idx, FLEX};
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
    epoch_term_means(&none, &zero, &some, &steps);
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

/// Each epoch record carries every term's mean over the epoch's steps (each step
/// weighted by its samples; here all have 10), and the means sum to `train_loss`; no
/// terms without regularisers; λ = 0 averages to a zero term.
fn epoch_term_means(none: &Path, zero: &Path, some: &Path, steps: &[serde_json::Value]) {
    let epochs = metrics(some, "epoch");
    assert_eq!(epochs.len(), 2);
    for (e, record) in epochs.iter().enumerate() {
        let of_epoch: Vec<&serde_json::Value> =
            (steps.iter()).filter(|s| s["epoch"] == e as u64).collect();
        assert_eq!(of_epoch.len(), 4);
        let mut total = 0.0;
        for name in ["loss.ce", "reg.orthogonality"] {
            let want = of_epoch.iter().map(|s| term(s, name)).sum::<f64>() / 4.0;
            let got = term(record, name);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "epoch {e} {name}: {got} vs the steps' mean {want}"
            );
            total += got;
        }
        let loss = record["train_loss"].as_f64().unwrap();
        // The terms are f32 outputs of the graph, as the loss is: they sum to it
        // within f32 rounding, as each step's do.
        assert!((total - loss).abs() <= 1e-5 * loss, "{total} vs {loss}");
        assert_eq!(record["terms"].as_object().unwrap().len(), 2, "{record}");
    }
    assert!(metrics(none, "epoch")
        .iter()
        .all(|e| e.get("terms").is_none()));
    for e in metrics(zero, "epoch") {
        assert_eq!(term(&e, "reg.orthogonality"), 0.0);
    }
}

/// A run stopped mid-epoch and resumed writes the same epoch term means as one that
/// ran straight through: the checkpoint keeps the epoch's running term sums.
#[test]
fn epoch_term_means_survive_a_resume_mid_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let regs = "regularizers: [orthogonality(weight: 0.5)]";
    let model = setup(dir.path(), "m", &SHARED.replace("REGS", regs));
    let straight = dir.path().join("straight");
    quiet(&args(&model, &straight)).unwrap();
    let resumed = dir.path().join("resumed");
    let mut a = args(&model, &resumed);
    a.stop_after = Some(6);
    quiet(&a).unwrap();
    let mut r = args(&model, &resumed);
    r.resume = true;
    quiet(&r).unwrap();
    let terms = |run: &Path| -> Vec<serde_json::Value> {
        (metrics(run, "epoch").into_iter())
            .map(|e| e["terms"].clone())
            .collect()
    };
    assert_eq!(terms(&straight).len(), 2);
    assert!(terms(&straight)[1].is_object());
    assert_eq!(terms(&resumed), terms(&straight));
}

/// The interpreter's own record of each FlexConv's kernel size (`RunResult::
/// kernel_sizes`) when it runs the model on `params`.
fn interpreter_sizes(model: &Path, params: &fnet::runtime::ParamStore<f32>) -> serde_json::Value {
    let (_, m) = fnet::driver::compile_file(model, &fnet::eval::Options::default()).unwrap();
    let x = fnet::tensor::Tensor::<f32>::zeros(vec![1, 1, 6, 6]);
    let r = fnet::runtime::run(
        &m.graph,
        params,
        &[x],
        &fnet::runtime::RunOptions::default(),
    )
    .unwrap();
    assert!(!r.kernel_sizes.is_empty(), "a FlexConv ran");
    serde_json::to_value(&r.kernel_sizes).unwrap()
}

/// Each epoch records every FlexConv's kernel size as its mask crops it: what the
/// interpreter's forward gives with that epoch's checkpointed weights.
#[test]
fn epochs_record_flexconv_kernel_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let model = setup(dir.path(), "flexy", FLEX);
    let out = dir.path().join("run");
    let mut a = args(&model, &out);
    a.keep = 3;
    quiet(&a).unwrap();
    let epochs = metrics(&out, "epoch");
    assert_eq!(epochs.len(), 3);
    let ckpts = fnet::train::checkpoint::list(&out);
    assert_eq!(ckpts.len(), 3, "one checkpoint per epoch");
    for (e, (_, path)) in epochs.iter().zip(&ckpts) {
        let c = fnet::train::checkpoint::load(path).unwrap();
        assert_eq!(
            e["kernel_sizes"],
            interpreter_sizes(&model, &c.params),
            "{e}"
        );
        assert_eq!(e["kernel_sizes"]["flexconv1"].as_array().unwrap().len(), 2);
    }
    // By hand: the seeded σ 0.3 keeps |x| < 0.3·√(2 ln 10) ≈ 0.64 of the 7 grid
    // points (0, ±1/3, ±2/3, ±1): 0 and ±1/3, 3 per axis. The fast-learning mask
    // moves it.
    let (_, m) = fnet::driver::compile_file(&model, &fnet::eval::Options::default()).unwrap();
    let init = fnet::runtime::initialise::<f32>(&m.graph, m.graph.seed).unwrap();
    let before = fnet::train::flex_sizes::kernel_sizes(&m.graph, &init).unwrap();
    assert_eq!(before["flexconv1"], [3, 3]);
    assert_eq!(
        serde_json::to_value(&before).unwrap(),
        interpreter_sizes(&model, &init)
    );
    assert_ne!(
        epochs[0]["kernel_sizes"]["flexconv1"],
        serde_json::json!([3, 3])
    );
    // Models without FlexConvs record none.
    let plain = setup(dir.path(), "plain", &SHARED.replace("REGS", ""));
    let out = dir.path().join("plain_run");
    quiet(&args(&plain, &out)).unwrap();
    assert!(metrics(&out, "epoch")[0].get("kernel_sizes").is_none());
}

/// The accuracy `fnetc run` prints for `artifact` on the test split (images 40..52).
fn run_accuracy(dir: &Path, artifact: &Path, backend: &str) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .arg("run")
        .arg(artifact)
        .args(["--backend", backend, "-i"])
        .arg(dir.join("images.idx"))
        .args(["--range", "40..52", "--labels"])
        .arg(dir.join("labels.idx"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("accuracy "))
        .unwrap_or_else(|| panic!("no accuracy in {stdout}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

/// A run leaves `final.safetensors`, `recipe.json` and `model.fnc`, the inference
/// artifact with the trained weights bound: run on the test split, on either backend,
/// it scores what the trainer's last evaluation scored.
#[test]
fn the_run_leaves_an_artifact_that_scores_the_last_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let model = setup(
        dir.path(),
        "shared",
        &SHARED.replace("REGS", "regularizers: [orthogonality(weight: 0.1)]"),
    );
    let out = dir.path().join("run");
    let s = quiet(&args(&model, &out)).unwrap();
    for f in ["final.safetensors", "recipe.json", "model.fnc"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let last = metrics(&out, "epoch").pop().unwrap();
    let want = format!("{:.2}%", 100.0 * last["test_accuracy"].as_f64().unwrap());
    assert_eq!(s.test_accuracy, last["test_accuracy"].as_f64());
    let artifact = out.join("model.fnc");
    assert_eq!(run_accuracy(dir.path(), &artifact, "reference"), want);
    assert_eq!(run_accuracy(dir.path(), &artifact, "opencl"), want);
    // The artifact has the trained weights bound: it is not the seeded model.
    let a = fnet::io::artifact::read_artifact(&artifact).unwrap();
    assert!(a.header.layout.iter().any(|e| e.bound), "weights bound");
}

/// `--log-grad-norm`: each step record carries the L2 norm of every matching
/// parameter's gradient. Independent check: the first step of SGD with momentum moves
/// a weight by exactly `lr · g` (the momentum buffer starts as the gradient), so the
/// logged norm is ‖w₁ − w₀‖ / lr, from the seeded initial weights and the checkpoint
/// after one step.
#[test]
fn gradient_norms_are_logged_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let model = setup(dir.path(), "norms", &SHARED.replace("REGS", ""));
    let out = dir.path().join("norms");
    let mut a = args(&model, &out);
    a.stop_after = Some(1);
    a.log_grad_norms = vec!["b1.*".into(), "linear*.weight".into()];
    quiet(&a).unwrap();
    let steps = metrics(&out, "step");
    let norms = steps[0]["grad_norms"].as_object().expect("grad_norms");
    let names: Vec<&String> = norms.keys().collect();
    assert!(
        names.iter().any(|n| n.starts_with("b1."))
            && names
                .iter()
                .all(|n| n.starts_with("b1.") || n.starts_with("linear")),
        "{names:?}"
    );
    let module = fnet::driver::compile_file(&model, &Default::default())
        .unwrap()
        .1;
    let w0 = fnet::runtime::initialise::<f32>(&module.graph, module.graph.seed).unwrap();
    let ckpt = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("a checkpoint");
    let w1 = fnet::io::weights::read_weights::<f32>(&ckpt).unwrap();
    for (name, logged) in norms {
        let (a, b) = (&w0[name], w1.get(name, None).unwrap());
        let moved: f64 = (a.data.iter().zip(&b.data))
            .map(|(x, y)| f64::from(y - x).powi(2))
            .sum::<f64>()
            .sqrt();
        let want = moved / 0.1;
        let got = logged.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-3 * want.max(1e-6),
            "{name}: logged {got}, from the step {want}"
        );
    }
}
