//! Data-parallel `fnetc train` under `mpirun -np 2 --oversubscribe` (the `mpi`
//! feature; docs/distributed.md): two ranks at global batch B train the weights one
//! rank trains at B; BatchNorm keeps rank 0's shard statistics, or with `sync_bn` the
//! global batch's running mean and variance (tests/train_mpi_sync_bn.rs: the whole
//! step); a resumed two-rank run ends with the bytes of an
//! uninterrupted one; a rank killed mid-run ends the job within seconds, naming it,
//! and the last checkpoint resumes. Without the feature, the tests that need MPI are
//! skipped with a printed reason, and a launcher's environment is refused.

mod common;

use common::mpi::{mpirun, ok, skip, FNETC};
use common::train_data::{metrics, write_idx};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// No BatchNorm: the two-rank gradients are the one-rank ones up to summation order.
const PLAIN: &str = r#"
model plain {
  input x: f32[B, 1, 6, 6]
  seed 3
  return x |> conv2d(4, 3, bias: false) |> relu |> flatten |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, 48], test: [48, 64])
  optimizer: sgd(lr: 0.05, momentum: 0.9)
  epochs: 2
  batch: 9
  seed: 7
}
"#;

/// A BatchNorm on the input itself: its statistics after the first step are those of
/// the data, computable here without the model.
const BN: &str = r#"
model bn {
  input x: f32[B, 1, 6, 6]
  seed 3
  return x |> batchnorm |> conv2d(4, 3, bias: false) |> batchnorm |> relu |> flatten |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, NTRAIN], test: [NTRAIN, NALL])
  optimizer: adamw(lr: 0.01)
  epochs: 2
  batch: 10
  seed: 7
  SYNC
}
"#;

/// Three buckets at `bucket_kb: 1` (256 elements): the gradients from the last,
/// linear 3 + 192 and conv3 4 + 288; conv2 8 + 576; batchnorm and conv1 8 + 8 + 8 + 72.
const LAYERS: &str = r#"
model layers {
  input x: f32[B, 1, 6, 6]
  seed 3
  return x |> conv2d(8, 3, padding: 1) |> batchnorm |> relu |> conv2d(8, 3, padding: 1) |> relu
    |> conv2d(4, 3) |> relu |> flatten |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, NTRAIN], test: [NTRAIN, 64])
  optimizer: sgd(lr: 0.05, momentum: 0.9)
  epochs: 2
  batch: 9
  seed: 7
  BUCKET
}
"#;

/// A directory holding `n` samples and the model `text`.
fn setup(text: &str, n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), n, 6);
    let model = dir.path().join("m.fnet");
    std::fs::write(&model, text).unwrap();
    (dir, model)
}

fn bn_model(ntrain: usize, nall: usize, sync: &str) -> String {
    BN.replace("NTRAIN", &ntrain.to_string())
        .replace("NALL", &nall.to_string())
        .replace("SYNC", sync)
}

fn train_args<'a>(model: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    v.extend(extra);
    v
}

fn weights(run: &Path, file: &str) -> fnet::io::weights::WeightFile<f32> {
    fnet::io::weights::read_weights::<f32>(&run.join(file)).unwrap()
}

#[test]
fn two_ranks_train_the_weights_one_rank_trains() {
    if skip() {
        return;
    }
    // 48 samples in batches of 9: shards of 5 and 4, the last batch 3 (2 and 1).
    // 46: the last batch is 1 sample, so rank 1 has none and contributes zeros.
    for ntrain in [48, 46] {
        let text = PLAIN.replace(
            "train: [0, 48], test: [48",
            &format!("train: [0, {ntrain}], test: [{ntrain}"),
        );
        let (dir, model) = setup(&text, 64);
        let one = dir.path().join("one");
        let two = dir.path().join("two");
        ok(
            "one rank",
            Command::new(FNETC)
                .args(train_args(&model, &one, &[]))
                .output()
                .unwrap(),
        );
        ok(
            "two ranks",
            mpirun(&train_args(&model, &two, &[])).output().unwrap(),
        );
        let (s1, s2) = (metrics(&one, "step"), metrics(&two, "step"));
        assert_eq!(s1.len(), 12);
        assert_eq!(s2.len(), 12);
        for (a, b) in s1.iter().zip(&s2) {
            let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
            assert!(
                (la - lb).abs() <= 1e-5 * la.abs(),
                "{ntrain}: step loss {la} vs {lb}"
            );
            assert_eq!(a["accuracy"], b["accuracy"]);
            assert_eq!(b["ranks"], 2);
        }
        // The evaluation, split among the ranks, scores what one process scores.
        let (e1, e2) = (metrics(&one, "epoch"), metrics(&two, "epoch"));
        assert_eq!(e2.len(), 2);
        for (a, b) in e1.iter().zip(&e2) {
            let (la, lb) = (
                a["test_loss"].as_f64().unwrap(),
                b["test_loss"].as_f64().unwrap(),
            );
            assert!(
                (la - lb).abs() <= 1e-5 * la.abs(),
                "{ntrain}: test loss {la} vs {lb}"
            );
            assert_eq!(a["test_accuracy"], b["test_accuracy"]);
        }
        // The weights within f32 summation-order tolerance: the backend sums the 9
        // samples' gradients in one order, the ranks 5 and 4 and then the two sums.
        let (w1, w2) = (
            weights(&one, "final.safetensors"),
            weights(&two, "final.safetensors"),
        );
        assert_eq!(w1.names(), w2.names());
        for n in w1.names() {
            let (a, b) = (&w1.tensors[n], &w2.tensors[n]);
            assert_eq!(a.shape, b.shape);
            for (x, y) in a.data.iter().zip(&b.data) {
                let err = (x - y).abs() / (1e-3 + x.abs());
                assert!(err <= 1e-4, "{ntrain}: {n}: {x} vs {y}");
            }
        }
        // Rank 0 alone wrote the run.
        assert!(two.join("model.fnc").is_file());
    }
}

/// The overlapped all-reduce (gradients bucket by bucket on a thread of their own,
/// during the backward) gives the bytes of the one flat all-reduce after it: with two
/// ranks each element is the same sum of the same two products. Also when the last
/// batch leaves rank 1 without a sample (46 = 5 × 9 + 1), and on OpenCL too.
#[test]
fn overlapped_buckets_give_the_bytes_of_one_all_reduce() {
    if skip() {
        return;
    }
    let mut cases = vec![("jit", 48), ("jit", 46)];
    if cfg!(feature = "opencl") {
        cases.push(("opencl", 46));
    }
    for (backend, ntrain) in cases {
        let run = |bucket: &str| {
            let text = LAYERS
                .replace("NTRAIN", &ntrain.to_string())
                .replace("BUCKET", bucket);
            let (dir, model) = setup(&text, 64);
            let out = dir.path().join("run");
            ok(
                bucket,
                mpirun(&train_args(
                    &model,
                    &out,
                    &["--checkpoint-every", "3", "--backend", backend],
                ))
                .output()
                .unwrap(),
            );
            (dir, out)
        };
        let (_d0, flat) = run("bucket_kb: 0");
        let (_d1, overlapped) = run("bucket_kb: 1");
        let bytes = |d: &Path| std::fs::read(d.join("final.safetensors")).unwrap();
        assert!(
            bytes(&flat) == bytes(&overlapped),
            "{backend} {ntrain}: final weights differ"
        );
        let (a, b) = (metrics(&flat, "step"), metrics(&overlapped, "step"));
        assert_eq!(a.len(), 12);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["loss"], y["loss"], "{backend} {ntrain}");
            assert_eq!(x["accuracy"], y["accuracy"], "{backend} {ntrain}");
            // Only the overlapped run has an all-reduce thread to time.
            assert!(x.get("allreduce_s").is_none());
            assert!(y["allreduce_s"].as_f64().unwrap() >= 0.0);
        }
        // Both wrote their checkpoints, so the ranks' checksums agreed at each.
        assert_eq!(
            fnet::train::checkpoint::list(&flat).len(),
            fnet::train::checkpoint::list(&overlapped).len()
        );
    }
}

/// Mean and unbiased variance of the samples `idx` of the crafted data (pixels / 255).
fn stats(dir: &Path, idx: &[usize]) -> (f64, f64) {
    let bytes = std::fs::read(dir.join("images.idx")).unwrap();
    let px: Vec<f64> = idx
        .iter()
        .flat_map(|&i| bytes[16 + 36 * i..16 + 36 * (i + 1)].iter())
        .map(|&b| f64::from(b) / 255.0)
        .collect();
    let n = px.len() as f64;
    let mean = px.iter().sum::<f64>() / n;
    let var = px.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// The input BatchNorm's running mean and variance in `run`'s newest checkpoint.
fn input_bn(run: &Path) -> (f64, f64) {
    let (_, path) = fnet::train::checkpoint::list(run).pop().unwrap();
    let w = fnet::io::weights::read_weights::<f32>(&path).unwrap();
    let find = |suffix: &str| {
        let mut names: Vec<String> = (w.names().into_iter())
            .filter(|n| n.ends_with(suffix) && !n.contains(':'))
            .map(String::from)
            .collect();
        names.sort();
        f64::from(w.tensors[&names[0]].data[0])
    };
    (find("running_mean"), find("running_var"))
}

#[test]
fn batchnorm_keeps_rank_0s_statistics_and_sync_bn_the_global_batchs() {
    if skip() {
        return;
    }
    for (sync, expect_global) in [("", false), ("sync_bn: true", true)] {
        let (dir, model) = setup(&bn_model(40, 48, sync), 48);
        let run = dir.path().join("run");
        ok(
            sync,
            mpirun(&train_args(&model, &run, &["--stop-after", "1"]))
                .output()
                .unwrap(),
        );
        let order = fnet::train::data::epoch_order(7, 0, 40);
        let batch = &order[..10];
        let (rank0, global) = (stats(dir.path(), &batch[..5]), stats(dir.path(), batch));
        let (mean, var) = input_bn(&run);
        // PyTorch's update from (0, 1) with momentum 0.1.
        let want_mean = 0.1 * if expect_global { global.0 } else { rank0.0 };
        assert!(
            (mean - want_mean).abs() < 1e-6,
            "{sync:?}: running mean {mean}, want {want_mean} (rank 0 {:?}, global {:?})",
            rank0,
            global
        );
        // And the unbiased variance: rank 0's shard's, or with sync_bn (true
        // SyncBatchNorm) the global batch's, from the global count.
        let want_var = 0.9 + 0.1 * if expect_global { global.1 } else { rank0.1 };
        assert!(
            (var - want_var).abs() < 1e-6,
            "{sync:?}: running var {var} vs {want_var}"
        );
    }
}

#[test]
fn a_resumed_two_rank_run_ends_with_the_same_bytes() {
    if skip() {
        return;
    }
    let (dir, model) = setup(&bn_model(40, 48, ""), 48);
    let straight = dir.path().join("straight");
    ok(
        "straight",
        mpirun(&train_args(&model, &straight, &[]))
            .output()
            .unwrap(),
    );
    // A rank's error (here rank 0 refusing a directory that holds a run) ends the
    // job at once rather than leaving rank 1 waiting in its first all-reduce.
    let t = Instant::now();
    let o = mpirun(&train_args(&model, &straight, &[]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(
        err.contains("rank 0 of 2 failed") && err.contains("already exists"),
        "{err}"
    );
    let resumed = dir.path().join("resumed");
    ok(
        "stopped",
        mpirun(&train_args(&model, &resumed, &["--stop-after", "3"]))
            .output()
            .unwrap(),
    );
    assert!(!resumed.join("final.safetensors").exists());
    let r = resumed.to_str().unwrap();
    ok(
        "resumed",
        mpirun(&["train", model.to_str().unwrap(), "--resume", r])
            .output()
            .unwrap(),
    );
    let bytes = |d: &Path| std::fs::read(d.join("final.safetensors")).unwrap();
    assert!(bytes(&straight) == bytes(&resumed), "final weights differ");
    assert_eq!(metrics(&straight, "epoch"), {
        // wall_s is the only field that may differ.
        let mut e = metrics(&resumed, "epoch");
        for (a, b) in e.iter_mut().zip(metrics(&straight, "epoch")) {
            a["wall_s"] = b["wall_s"].clone();
        }
        e
    });
}

/// The fnetc children of `mpirun` (pid `parent`) and their ranks.
fn ranks_of(parent: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let rank = env.split(|&b| b == 0).find_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.strip_prefix("OMPI_COMM_WORLD_RANK=")
                .and_then(|r| r.parse().ok())
        });
        if let Some(r) = rank {
            out.push((pid, r));
        }
    }
    out
}

#[test]
fn a_killed_rank_ends_the_job_within_seconds_and_the_run_resumes() {
    if skip() {
        return;
    }
    let (dir, model) = setup(&bn_model(400, 420, ""), 420);
    let run = dir.path().join("run");
    let mut child = mpirun(&train_args(&model, &run, &["--checkpoint-every", "1"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ranks = ranks_of(child.id());
    let (victim, _) = *ranks
        .iter()
        .find(|(_, r)| *r == 1)
        .unwrap_or_else(|| panic!("rank 1 among mpirun's children: {ranks:?}"));
    let killed = Instant::now();
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the job still runs 20 s after rank 1 died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let ended = killed.elapsed();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    println!("the job ended {ended:?} after the kill, saying:\n{text}");
    assert!(!status.success(), "the job must fail");
    assert!(
        ended < Duration::from_secs(10),
        "the job ended {ended:?} after the kill"
    );
    assert!(
        text.contains("rank 1"),
        "the message names the rank:\n{text}"
    );
    assert!(!run.join("final.safetensors").exists());
    // The last checkpoint resumes, and the run finishes under two ranks.
    ok(
        "resumed",
        mpirun(&[
            "train",
            model.to_str().unwrap(),
            "--resume",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
    );
    assert!(run.join("final.safetensors").is_file());
}

#[test]
fn a_hung_rank_ends_the_job_after_the_collective_timeout() {
    if skip() {
        return;
    }
    // Also with the overlapped all-reduce, whose thread has a watchdog of its own:
    // rank 0 then waits there (or in the main thread's reductions after the run).
    for setting in ["bucket_kb: 0", "bucket_kb: 1"] {
        hung_rank_ends_the_job(setting);
    }
}

fn hung_rank_ends_the_job(setting: &str) {
    let (dir, model) = setup(&bn_model(400, 420, setting), 420);
    let run = dir.path().join("run");
    let mut child = mpirun(&train_args(
        &model,
        &run,
        &[
            "--checkpoint-every",
            "1",
            "--epochs",
            "50",
            "--collective-timeout",
            "2",
        ],
    ))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
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
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ranks = ranks_of(child.id());
    let (victim, _) = *ranks.iter().find(|(_, r)| *r == 1).expect("rank 1");
    // Stopped, not dead: mpirun sees nothing; rank 0 waits in its next all-reduce.
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-STOP", &victim.to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            let _ = Command::new("kill")
                .args(["-KILL", &victim.to_string()])
                .status();
            let _ = child.kill();
            panic!("the job still runs 30 s after rank 1 stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ended = stopped.elapsed();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    println!("{setting:?}: the job ended {ended:?} after the stop, saying:\n{text}");
    assert!(!status.success());
    assert!(
        ended >= Duration::from_secs(2),
        "not before the timeout: {ended:?}"
    );
    assert!(
        text.contains("rank 0 of 2 has waited") && text.contains("stopped responding"),
        "{text}"
    );
}

#[test]
fn a_launcher_without_mpi_support_is_refused() {
    if cfg!(feature = "mpi") {
        println!("skipped: this build has MPI support; the refusal is for builds without it");
        return;
    }
    let (dir, model) = setup(PLAIN, 64);
    let o = Command::new(FNETC)
        .args(train_args(&model, &dir.path().join("run"), &[]))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("built without MPI support") && err.contains("--features mpi"),
        "{err}"
    );
    assert!(!dir.path().join("run").exists(), "nothing written");
}
