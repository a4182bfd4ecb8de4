//! `fnetc train` end to end on a tiny model (a conv, batch norm, a linear) and a tiny
//! crafted IDX data set: the loss falls, the model learns, a resumed run ends with the
//! same bytes as an uninterrupted one, and every bad input is a named error.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::train_data::{args, metrics, quiet, write_idx};

const MODEL: &str = r#"
model tiny {
  input x: f32[B, 1, 6, 6]
  seed 3
  return x |> conv2d(4, 3, bias: false) |> batchnorm |> relu |> flatten |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, 48], test: [48, 64])
  loss: cross_entropy(label_smoothing: 0.05)
  optimizer: OPT
  epochs: 4
  batch: 10
  seed: 7
}
"#;

/// A directory with the data and the model, its optimiser replaced by `opt`.
fn setup(opt: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), 64, 6);
    let model = dir.path().join("tiny.fnet");
    std::fs::write(&model, MODEL.replace("OPT", opt)).unwrap();
    (dir, model)
}

#[test]
fn the_tiny_model_learns_and_the_run_directory_is_complete() {
    let (dir, model) = setup("adam(lr: 0.05)");
    let out = dir.path().join("run");
    let s = quiet(&args(&model, &out)).unwrap();
    assert_eq!(
        s.steps,
        4 * 5,
        "48 samples in batches of 10: 5 steps per epoch"
    );
    let epochs = metrics(&out, "epoch");
    assert_eq!(epochs.len(), 4);
    let first = epochs[0]["train_loss"].as_f64().unwrap();
    let last = epochs[3]["train_loss"].as_f64().unwrap();
    assert!(last < 0.5 * first, "training loss {first} → {last}");
    assert!(s.test_accuracy.unwrap() >= 0.9, "{s:?}");
    assert_eq!(metrics(&out, "step").len(), 20);
    assert!(metrics(&out, "step")[0]["samples_per_s"].as_f64().unwrap() > 0.0);
    // The final weights are a weights file of the model with its updated running
    // statistics; the recipe is resolved.
    let w = fnet::io::weights::read_weights::<f32>(&out.join("final.safetensors")).unwrap();
    let mean = w
        .names()
        .into_iter()
        .find(|n| n.ends_with("running_mean"))
        .unwrap();
    assert!(
        w.tensors[mean].data.iter().any(|v| *v != 0.0),
        "running mean updated"
    );
    let recipe = std::fs::read_to_string(out.join("recipe.json")).unwrap();
    assert!(
        recipe.contains("\"schedule\"") && recipe.contains("\"kind\": \"constant\""),
        "{recipe}"
    );
    // The model as trained, for `fnetc plot`: its text, not its path.
    let src = fnet::train::source::ModelSource::read(&out)
        .unwrap()
        .unwrap();
    assert_eq!(src.text, std::fs::read_to_string(&model).unwrap());
    // The last two checkpoints are kept.
    let ckpts = fnet::train::checkpoint::list(&out);
    assert_eq!(ckpts.iter().map(|c| c.0).collect::<Vec<_>>(), [15, 20]);
}

/// Train 4 epochs straight, and 2 epochs and a bit, stopped mid-epoch, then resumed:
/// the final weights are the same bytes.
#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    for opt in [
        "sgd(lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.001)",
        "adamw(lr: 0.01)",
    ] {
        let (dir, model) = setup(opt);
        let straight = dir.path().join("straight");
        quiet(&args(&model, &straight)).unwrap();
        let parts = dir.path().join("parts");
        let mut a = args(&model, &parts);
        a.stop_after = Some(12);
        let s = quiet(&a).unwrap();
        assert!(s.stopped && s.steps == 12);
        let mut r = args(&model, &parts);
        r.resume = true;
        quiet(&r).unwrap();
        let x = std::fs::read(straight.join("final.safetensors")).unwrap();
        let y = std::fs::read(parts.join("final.safetensors")).unwrap();
        assert!(x == y, "{opt}: resumed weights differ");
        // The metrics agree too, but for timings.
        let strip = |run: &Path| -> Vec<String> {
            metrics(run, "epoch")
                .into_iter()
                .map(|mut v| {
                    v.as_object_mut().unwrap().remove("wall_s");
                    v.to_string()
                })
                .collect()
        };
        assert_eq!(strip(&straight), strip(&parts), "{opt}");
        assert_eq!(metrics(&parts, "step").len(), 20);
    }
}

#[test]
fn resuming_the_wrong_thing_is_a_named_error() {
    let (dir, model) = setup("sgd(lr: 0.1)");
    let out = dir.path().join("run");
    let mut a = args(&model, &out);
    a.stop_after = Some(3);
    quiet(&a).unwrap();
    // Another recipe: the first differing key is named.
    let mut r = args(&model, &out);
    r.resume = true;
    r.overrides.lr = Some(0.2);
    let e = quiet(&r).unwrap_err();
    assert!(
        e.contains("another recipe") && e.contains("`optimizer`"),
        "{e}"
    );
    // Another model: the first differing parameter is named.
    let other = dir.path().join("other.fnet");
    std::fs::write(
        &other,
        MODEL
            .replace("OPT", "sgd(lr: 0.1)")
            .replace("conv2d(4", "conv2d(5"),
    )
    .unwrap();
    let mut r = args(&other, &out);
    r.resume = true;
    let e = quiet(&r).unwrap_err();
    assert!(
        e.contains("another model") && e.contains("is [5] in the model but [4]"),
        "{e}"
    );
    // A damaged checkpoint is named, not a panic.
    let (_, path) = fnet::train::checkpoint::list(&out).pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let mut r = args(&model, &out);
    r.resume = true;
    let e = quiet(&r).unwrap_err();
    assert!(
        e.contains("step-00000003.safetensors") && e.contains("not a usable checkpoint"),
        "{e}"
    );
    // No checkpoint at all.
    let mut r = args(&model, &dir.path().join("empty"));
    r.resume = true;
    assert!(quiet(&r).unwrap_err().contains("no checkpoint"));
    // An existing run is not clobbered without --force.
    let e = quiet(&args(&model, &out)).unwrap_err();
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert!(
        std::fs::read(&path).unwrap().len() == bytes.len() / 2,
        "left as it was"
    );
}

#[test]
fn bad_data_is_a_named_error() {
    let (dir, model) = setup("sgd(lr: 0.1)");
    let out = dir.path().join("run");
    std::fs::remove_file(dir.path().join("labels.idx")).unwrap();
    let e = quiet(&args(&model, &out)).unwrap_err();
    assert!(
        e.contains("data set is missing")
            && e.contains("`labels.idx`")
            && e.contains("`images.idx`"),
        "{e}"
    );
    // A label the model has no class for.
    write_idx(dir.path(), 64, 6);
    let mut lab = std::fs::read(dir.path().join("labels.idx")).unwrap();
    lab[8 + 5] = 7;
    std::fs::write(dir.path().join("labels.idx"), lab).unwrap();
    let e = quiet(&args(&model, &out)).unwrap_err();
    assert!(
        e.contains("label 5 of the train split") && e.contains("3 classes"),
        "{e}"
    );
    // Images of another size than the model's input.
    write_idx(dir.path(), 64, 6);
    std::fs::write(
        &model,
        MODEL
            .replace("OPT", "sgd(lr: 0.1)")
            .replace("6, 6]", "7, 7]"),
    )
    .unwrap();
    let e = quiet(&args(&model, &out)).unwrap_err();
    assert!(
        e.contains("shape [1, 6, 6]") && e.contains("[1, 7, 7]"),
        "{e}"
    );
    // A split past the file's end.
    std::fs::write(
        &model,
        MODEL
            .replace("OPT", "sgd(lr: 0.1)")
            .replace("[48, 64]", "[48, 65]"),
    )
    .unwrap();
    let e = quiet(&args(&model, &out)).unwrap_err();
    assert!(e.contains("images.idx") && e.contains("0..64"), "{e}");
}

#[test]
fn unsupported_settings_are_refused_by_name() {
    let (dir, model) = setup("sgd(lr: 0.1)");
    let text = std::fs::read_to_string(&model).unwrap();
    std::fs::write(
        &model,
        text.replace(
            "seed: 7",
            "seed: 7\n  augment: [random_crop(size: 4, padding: 1)]",
        ),
    )
    .unwrap();
    let e = quiet(&args(&model, &dir.path().join("run"))).unwrap_err();
    assert!(e.contains("random_crop(size: 4)"), "{e}");
}

#[test]
fn the_command_line_overrides_the_section() {
    let (dir, model) = setup("adam(lr: 0.01)");
    let out = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args([
            "train",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--epochs", "1", "--batch", "16", "--lr", "0.02", "--seed", "9",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("epoch 1/1") && stdout.contains("test accuracy"),
        "{stdout}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(r["epochs"], 1);
    assert_eq!(r["batch"], 16);
    assert_eq!(r["seed"], 9);
    assert_eq!(r["optimizer"]["lr"], 0.02);
    assert_eq!(
        metrics(&out, "step").len(),
        3,
        "48 samples in batches of 16"
    );
    // The same directory again without --force is refused, with exit code 1.
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args([
            "train",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}
