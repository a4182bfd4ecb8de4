//! `fnetc search` end to end on a tiny slotted model (3 slots, 2 active, one
//! configuration unbuildable) and crafted 12×12 data: the result files agree with
//! each other and with the step log (W replayed from the logged validation scores),
//! each configuration is compiled once, the chosen `.fnet` retrains as `--config`
//! does, a stopped or SIGKILLed search resumes to the same result, and the error
//! cases name their place.

mod common;

use common::train_data::{metrics, write_idx};
use fnet::io::npy::read_npy;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FNETC: &str = env!("CARGO_BIN_EXE_fnetc");

/// Pools of 2 in 2 of 3 slots; a 5×5 valid conv after slot 2 does not fit when slots
/// 1 and 2 both pool (12 → 6 → 3), so [1, 2] cannot be built.
fn model(train: (usize, usize), search: &str, epochs: u64) -> String {
    format!(
        r#"model tiny {{
  input x: f32[B, 1, 12, 12]
  seed 3
  slots pools = pool_slots(count: 3, active: 2, pool: maxpool(2))
  h = x |> conv2d(4, 3, padding: 1) |> relu
  h = h |> slot(pools) |> conv2d(4, 3, padding: 1) |> relu
  h = h |> slot(pools) |> conv2d(4, 5) |> relu
  h = h |> slot(pools) |> conv2d(4, 3, padding: 1) |> relu
  return h |> global_avg_pool |> linear(3)
}}

train {{
  data: idx(images: "images.idx", labels: "labels.idx", train: [{}, {}])
  optimizer: sgd(lr: 0.1, momentum: 0.9)
  {search}
  epochs: {epochs}
  batch: 16
  seed: 7
}}
"#,
        train.0, train.1
    )
}

fn setup(text: &str, n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), n, 12);
    let path = dir.path().join("tiny.fnet");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Searches here run on the JIT (the default backend; named anyway, so the tests do
/// not depend on the default): it needs no OpenCL driver and compiles these small plans
/// fast.
fn fnetc(args: &[&str], cwd: &Path) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    if args.first() == Some(&"search") {
        all.extend(["--backend", "jit"]);
    }
    Command::new(FNETC)
        .args(&all)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn slots(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn a_search_writes_consistent_results() {
    let text = model(
        (0, 160),
        "search: mixture(models: 2, t_max: 10, kl: 1e-4)",
        3,
    );
    let (dir, _) = setup(&text, 160);
    let d = dir.path();
    let out = ok(&fnetc(&["search", "tiny.fnet", "--out", "run"], d));
    let run = d.join("run");
    // 80 training samples in batches of 16: 5 steps an epoch, one batch size, so one
    // training and one validation plan per buildable configuration, for 15 steps.
    assert!(out.contains("searched 15 steps"), "{out}");
    assert!(out.contains("4 plans compiled"), "{out}");
    assert!(out.contains("excluded configuration [1,2]"), "{out}");
    let r = json(&run.join("ranking.json"));
    let configs: Vec<Vec<u64>> = r["configs"].as_array().unwrap().iter().map(slots).collect();
    assert_eq!(configs, vec![vec![1, 3], vec![2, 3]]);
    assert_eq!(slots(&r["excluded"][0]["config"]), vec![1, 2]);
    assert!(r["excluded"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("does not fit"));

    // W replayed from the step log: ones, then W[a, m] ← 0.9 W[a, m] + 0.1 acc.
    let w = read_npy::<f64>(&run.join("w.npy")).unwrap();
    assert_eq!(w.shape, vec![2, 2]);
    let steps = metrics(&run, "step");
    assert_eq!(steps.len(), 15);
    let mut replay = [1.0f64; 4];
    for s in &steps {
        let a = configs
            .iter()
            .position(|c| *c == slots(&s["config"]))
            .unwrap();
        let m = s["model"].as_u64().unwrap() as usize;
        let acc = s["val_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        replay[a * 2 + m] = 0.9 * replay[a * 2 + m] + 0.1 * acc;
    }
    assert_eq!(
        w.data,
        replay.to_vec(),
        "W is not the EMA of the logged scores"
    );

    // Temperature 1 → 10 linearly; each epoch balanced to KL ≤ 1e-4.
    let epochs = metrics(&run, "epoch");
    let t: Vec<f64> = epochs
        .iter()
        .map(|e| e["temperature"].as_f64().unwrap())
        .collect();
    assert_eq!(t, vec![1.0, 5.5, 10.0]);
    for e in &epochs {
        assert!(e["kl_balanced"].as_f64().unwrap() <= 1e-4, "{e}");
    }
    let last_w: Vec<f64> = (epochs[2]["w"].as_array().unwrap().iter())
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    assert_eq!(last_w, w.data);

    // The ranking: each configuration under its most likely model, sorted.
    let p = read_npy::<f64>(&run.join("p.npy")).unwrap();
    let acc = read_npy::<f64>(&run.join("val_accuracy.npy")).unwrap();
    for row in p.data.chunks(2) {
        assert!((row[0] + row[1] - 1.0).abs() < 1e-12);
    }
    let ranking = r["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 2);
    let mut prev = f64::INFINITY;
    for line in ranking {
        let a = configs
            .iter()
            .position(|c| *c == slots(&line["config"]))
            .unwrap();
        let m = line["model"].as_u64().unwrap() as usize;
        let row_p = &p.data[a * 2..a * 2 + 2];
        assert!(row_p[m] >= row_p[1 - m], "model {m} is not the most likely");
        assert_eq!(line["p"].as_f64().unwrap(), row_p[m]);
        let row_acc = &acc.data[a * 2..a * 2 + 2];
        assert_eq!(line["accuracy"].as_f64().unwrap(), row_acc[m]);
        assert_eq!(
            line["best_accuracy"].as_f64().unwrap(),
            row_acc[0].max(row_acc[1])
        );
        let here = line["accuracy"].as_f64().unwrap();
        assert!(here <= prev);
        prev = here;
    }
    assert_eq!(r["chosen"], ranking[0]["config"]);
    // `fnetc plot` draws the search's three plots beside the training ones.
    let plotted = ok(&fnetc(&["plot", "run"], d));
    for f in [
        "search_p.png",
        "search_w.png",
        "search_accuracy.png",
        "loss.png",
    ] {
        assert!(plotted.contains(f), "{f}: {plotted}");
        assert!(run.join("plots").join(f).is_file(), "{f}");
    }
    let table = std::fs::read_to_string(run.join("ranking.txt")).unwrap();
    assert!(table.contains("excluded"), "{table}");

    // The chosen file retrains exactly as `--config` does.
    let chosen = slots(&r["chosen"]);
    let words = format!("{},{}", chosen[0], chosen[1]);
    std::fs::copy(run.join("chosen.fnet"), d.join("chosen.fnet")).unwrap();
    ok(&fnetc(
        &[
            "train",
            "chosen.fnet",
            "--out",
            "t1",
            "--backend",
            "jit",
            "--epochs",
            "1",
        ],
        d,
    ));
    ok(&fnetc(
        &[
            "train",
            "tiny.fnet",
            "--config",
            &words,
            "--out",
            "t2",
            "--backend",
            "jit",
            "--epochs",
            "1",
        ],
        d,
    ));
    assert_eq!(
        std::fs::read(d.join("t1/final.safetensors")).unwrap(),
        std::fs::read(d.join("t2/final.safetensors")).unwrap()
    );
    // Without --config, train refuses the search entry and says what to do.
    // (A default that builds: the file's own default, [1, 2], does not.)
    std::fs::write(
        d.join("other.fnet"),
        text.replace("pool: maxpool(2))", "pool: maxpool(2), default: [2, 3])"),
    )
    .unwrap();
    let o = fnetc(&["train", "other.fnet", "--out", "t3"], d);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("fnetc search"));
}

#[test]
fn a_stopped_search_resumes_to_the_same_result() {
    let text = model((0, 160), "search: mixture(models: 2, t_max: 10)", 3);
    let (dir, _) = setup(&text, 160);
    let d = dir.path();
    ok(&fnetc(&["search", "tiny.fnet", "--out", "straight"], d));
    let o = ok(&fnetc(
        &["search", "tiny.fnet", "--out", "cut", "--stop-after", "7"],
        d,
    ));
    assert!(o.contains("stopped after step 7"), "{o}");
    ok(&fnetc(&["search", "tiny.fnet", "--resume", "cut"], d));
    for f in ["w.npy", "p.npy", "val_accuracy.npy", "ranking.json"] {
        assert_eq!(
            std::fs::read(d.join("straight").join(f)).unwrap(),
            std::fs::read(d.join("cut").join(f)).unwrap(),
            "{f}"
        );
    }
    let lines = |r: &str| {
        metrics(&d.join(r), "step")
            .into_iter()
            .map(|mut v| {
                for timing in ["samples_per_s", "train_s", "validate_s"] {
                    v[timing] = Value::Null;
                }
                v
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(lines("straight"), lines("cut"));
}

#[test]
fn a_killed_search_resumes_from_its_last_checkpoint() {
    // 600 training samples: 19 steps, a checkpoint after each.
    let text = model((0, 1200), "search: mixture(models: 2, t_max: 10)", 1);
    let (dir, _) = setup(&text, 1200);
    let d = dir.path();
    ok(&fnetc(&["search", "tiny.fnet", "--out", "straight"], d));
    let run = d.join("killed");
    let mut child = Command::new(FNETC)
        .args([
            "search",
            "tiny.fnet",
            "--out",
            "killed",
            "--checkpoint-every",
            "1",
            "--backend",
            "jit",
        ])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while fnet::train::checkpoint::list(&run)
        .last()
        .is_none_or(|c| c.0 < 3)
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let left = fnet::train::checkpoint::list(&run);
    assert!(!left.is_empty());
    for (_, path) in &left {
        fnet::search::state::load(path).unwrap();
    }
    ok(&fnetc(&["search", "tiny.fnet", "--resume", "killed"], d));
    for f in ["w.npy", "ranking.json"] {
        assert_eq!(
            std::fs::read(d.join("straight").join(f)).unwrap(),
            std::fs::read(run.join(f)).unwrap(),
            "{f}"
        );
    }
}

fn fails(text: &str, args: &[&str]) -> String {
    let (dir, _) = setup(text, 64);
    let mut all = vec!["search", "tiny.fnet", "--out", "run"];
    all.extend(args);
    let o = fnetc(&all, dir.path());
    assert!(!o.status.success(), "succeeded: {all:?}");
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn errors_name_the_place() {
    let good = model((0, 64), "search: mixture(models: 2)", 1);
    let e = fails(&good, &["--models", "0"]);
    assert!(e.contains("--models 0"), "{e}");
    let e = fails(&good, &["--models", "100000"]);
    assert!(e.contains("at most 256"), "{e}");
    // Impossible values in the entry point at it (line 15 of the file).
    for (bad, word) in [
        ("search: mixture(t_max: -1)", "t_max"),
        ("search: mixture(ema: 1.5)", "ema"),
        ("search: mixture(split: 0)", "split"),
        ("search: mixture(models: 0)", "models"),
    ] {
        let e = fails(&model((0, 64), bad, 1), &[]);
        assert!(e.contains("tiny.fnet:15:"), "{bad}: {e}");
        assert!(e.contains(word), "{bad}: {e}");
    }
    // A model without slots: with a search entry, the entry is the error; without
    // one, the command says there is nothing to search.
    let plain = good
        .replace(
            "  slots pools = pool_slots(count: 3, active: 2, pool: maxpool(2))\n",
            "",
        )
        .replace("slot(pools) |> ", "");
    let e = fails(&plain, &[]);
    assert!(
        e.contains("needs pooling slots") && e.contains("tiny.fnet:"),
        "{e}"
    );
    let e = fails(&plain.replace("search: mixture(models: 2)", ""), &[]);
    assert!(e.contains("declares no pooling slots"), "{e}");
    // A split that leaves nothing to validate.
    let e = fails(&model((0, 1), "search: mixture()", 1), &[]);
    assert!(e.contains("split"), "{e}");
    // Resuming a directory without checkpoints.
    let (dir, _) = setup(&good, 64);
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    // A damaged checkpoint, and a `fnetc train` one, are named.
    std::fs::create_dir_all(dir.path().join("bad/checkpoints")).unwrap();
    std::fs::write(
        dir.path().join("bad/checkpoints/step-00000003.safetensors"),
        b"not safetensors",
    )
    .unwrap();
    let o = fnetc(&["search", "tiny.fnet", "--resume", "bad"], dir.path());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("not a usable search checkpoint"),
        "{e}"
    );
    let o = fnetc(&["search", "tiny.fnet", "--resume", "empty"], dir.path());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("no checkpoint"), "{e}");
}

/// OpenCL searches too: the first step (W all ones, so the same draw) has the JIT's
/// loss, and W is the EMA of its own logged scores.
#[test]
fn opencl_searches_as_the_jit_does() {
    let text = model((0, 160), "search: mixture(models: 2, t_max: 10)", 1);
    let (dir, _) = setup(&text, 160);
    let d = dir.path();
    ok(&fnetc(&["search", "tiny.fnet", "--out", "jit"], d));
    let o = Command::new(FNETC)
        .args(["search", "tiny.fnet", "--out", "cl", "--backend", "opencl"])
        .current_dir(d)
        .output()
        .unwrap();
    ok(&o);
    let (jit, cl) = (
        metrics(&d.join("jit"), "step"),
        metrics(&d.join("cl"), "step"),
    );
    assert_eq!(jit.len(), cl.len());
    assert_eq!(jit[0]["config"], cl[0]["config"]);
    assert_eq!(jit[0]["model"], cl[0]["model"]);
    let (a, b) = (
        jit[0]["loss"].as_f64().unwrap(),
        cl[0]["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "{a} vs {b}");
    let r = json(&d.join("cl/ranking.json"));
    let configs: Vec<Vec<u64>> = r["configs"].as_array().unwrap().iter().map(slots).collect();
    let mut replay = [1.0f64; 4];
    for s in &cl {
        let a = configs
            .iter()
            .position(|c| *c == slots(&s["config"]))
            .unwrap();
        let m = s["model"].as_u64().unwrap() as usize;
        replay[a * 2 + m] = 0.9 * replay[a * 2 + m] + 0.1 * s["val_accuracy"].as_f64().unwrap();
    }
    let w = read_npy::<f64>(&d.join("cl/w.npy")).unwrap();
    assert_eq!(w.data, replay.to_vec());
}

/// A model named like an output, searched into its own directory with `--force`, is
/// neither removed (`--force` clears the output names) nor overwritten: the search
/// refuses before it starts, naming the file, and the model is intact. Before this
/// check, `--force` deleted the model and the search then wrote `chosen.fnet` over it.
#[test]
fn the_chosen_file_never_lands_on_the_model() {
    let text = model((0, 64), "search: mixture(models: 2)", 1);
    let (dir, tiny) = setup(&text, 64);
    let d = dir.path();
    let model = d.join("chosen.fnet");
    std::fs::rename(&tiny, &model).unwrap();
    let o = fnetc(&["search", "chosen.fnet", "--out", ".", "--force"], d);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "{}{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.contains("chosen.fnet") && err.contains("input"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&model).unwrap(), text);
}
