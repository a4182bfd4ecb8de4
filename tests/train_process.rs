//! A real `fnetc train` process killed with SIGKILL mid-epoch: every checkpoint it
//! left loads, `--resume` removes the temporary file a cut-short write may leave and
//! finishes the run, and the final weights are the same bytes as an uninterrupted
//! run's.

mod common;

use common::train_data::{args, quiet, write_idx};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = r#"
model tiny {
  input x: f32[B, 1, 6, 6]
  seed 3
  return x |> conv2d(4, 3, bias: false) |> batchnorm |> relu |> flatten |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, 600], test: [600, 640])
  optimizer: sgd(lr: 0.05, momentum: 0.9, nesterov: true)
  epochs: 2
  batch: 10
  seed: 7
}
"#;

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), 640, 6);
    let model = dir.path().join("tiny.fnet");
    std::fs::write(&model, MODEL).unwrap();
    let straight = dir.path().join("straight");
    // On the backend `fnetc train` takes without --backend, as the runs below.
    let mut uninterrupted = args(&model, &straight);
    uninterrupted.backend = fnet::backend::default_kind(None, false);
    quiet(&uninterrupted).unwrap();

    let run = dir.path().join("killed");
    let fnetc = env!("CARGO_BIN_EXE_fnetc");
    let mut child = Command::new(fnetc)
        .arg("train")
        .arg(&model)
        .arg("--out")
        .arg(&run)
        .args(["--checkpoint-every", "1", "--keep", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // 60 steps per epoch, a checkpoint (written and fsynced) after each: kill it once
    // the third exists, well inside the first epoch.
    let started = Instant::now();
    while fnet::train::checkpoint::list(&run)
        .last()
        .is_none_or(|c| c.0 < 3)
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    assert!(!run.join("final.safetensors").exists());
    let left = fnet::train::checkpoint::list(&run);
    let newest = left.last().unwrap().0;
    assert!((3..60).contains(&newest), "mid-epoch: step {newest}");
    for (_, path) in &left {
        fnet::train::checkpoint::load(path)
            .unwrap_or_else(|e| panic!("a checkpoint left by the kill is damaged: {e}"));
    }

    let o = Command::new(fnetc)
        .arg("train")
        .arg(&model)
        .arg("--resume")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .chain(std::fs::read_dir(&run).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp-")),
        "no temporary file is left: {names:?}"
    );
    let x = std::fs::read(straight.join("final.safetensors")).unwrap();
    let y = std::fs::read(run.join("final.safetensors")).unwrap();
    assert!(x == y, "the resumed run's weights differ");
}

/// `--force` starts a run directory over by removing what a run writes; a model kept
/// there under one of those names (here `source.json`) is refused, not deleted.
#[test]
fn force_never_removes_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), 640, 6);
    let model = dir.path().join("source.json");
    std::fs::write(&model, MODEL).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args(["train", "source.json", "--out", ".", "--force"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("source.json") && err.contains("input"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&model).unwrap(), MODEL);
}
