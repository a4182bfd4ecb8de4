//! SyncBatchNorm under `mpirun -np 2 --oversubscribe` (`sync_bn: true`, the `mpi`
//! feature; docs/distributed.md): two ranks at global batch B train the weights and
//! BatchNorm running statistics that one process trains at B, within f32 summation
//! order, on a small ResNet: evenly split batches, unevenly split ones (odd B), and a
//! last batch of one sample, where rank 1 runs a stand-in that adds nothing. Without
//! `sync_bn` the same comparison fails by orders of magnitude more (each rank
//! normalises with its shard's statistics), which shows the check can fail. Without the
//! feature the tests are skipped with a printed reason.

mod common;

use common::mpi::{mpirun, ok, skip, tiny_resnet, FNETC};
use common::train_data::write_idx;
use std::path::Path;
use std::process::Command;

/// The train section of the tests' runs (after `common::mpi::tiny_resnet(6)`).
const TRAIN: &str = r#"
train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, NTRAIN], test: [NTRAIN, 48])
  optimizer: sgd(lr: 0.1, momentum: 0.9)
  epochs: 1
  batch: BATCH
  seed: 7
  SYNC
}
"#;

/// The largest relative difference `|a − b| / (1e-3 + |a|)` over every tensor of the
/// two runs' final weights (parameters and running statistics), with its name.
fn largest_difference(a: &Path, b: &Path) -> (f32, String) {
    let read =
        |d: &Path| fnet::io::weights::read_weights::<f32>(&d.join("final.safetensors")).unwrap();
    let (wa, wb) = (read(a), read(b));
    assert_eq!(wa.names(), wb.names());
    assert!(
        wa.names()
            .iter()
            .filter(|n| n.contains("running_var"))
            .count()
            == 5,
        "five batch norms' statistics are compared: {:?}",
        wa.names()
    );
    let mut worst = (0.0f32, String::new());
    for n in wa.names() {
        let (x, y) = (&wa.tensors[n], &wb.tensors[n]);
        assert_eq!(x.shape, y.shape);
        for (p, q) in x.data.iter().zip(&y.data) {
            let err = (p - q).abs() / (1e-3 + p.abs());
            if err > worst.0 {
                worst = (err, n.to_string());
            }
        }
    }
    worst
}

/// The test model in `dir` with `ntrain` samples in batches of `batch`, and `extra`
/// (train-section lines, e.g. `sync_bn: true`).
fn model(dir: &Path, ntrain: usize, batch: usize, extra: &str) -> std::path::PathBuf {
    let tag: String = extra.chars().filter(char::is_ascii_alphanumeric).collect();
    let path = dir.join(format!("m-{tag}.fnet"));
    let text = (tiny_resnet(6) + TRAIN)
        .replace("NTRAIN", &ntrain.to_string())
        .replace("BATCH", &batch.to_string())
        .replace("SYNC", extra);
    std::fs::write(&path, text).unwrap();
    path
}

/// Trains `m` on `ranks` processes (1: fnetc alone) into `dir/out`.
fn run(dir: &Path, m: &Path, out: &str, ranks: usize, backend: &str) -> std::path::PathBuf {
    let out = dir.join(out);
    let args = [
        "train",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--backend",
        backend,
    ];
    let mut c = if ranks == 1 {
        let mut c = Command::new(FNETC);
        c.args(args).env("RAYON_NUM_THREADS", "1");
        c
    } else {
        mpirun(&args)
    };
    let o = c.env("POCL_MAX_PTHREAD_COUNT", "1").output();
    ok(&format!("{ranks} rank(s), {}", m.display()), o.unwrap());
    out
}

/// One process and two ranks on `ntrain` samples in batches of `batch` on `backend`,
/// with and without `sync_bn`: the largest differences from the one-process weights.
fn compare(
    ntrain: usize,
    batch: usize,
    sync_only: bool,
    backend: &str,
) -> ((f32, String), Option<(f32, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_idx(d, 48, 6);
    let synced = model(d, ntrain, batch, "sync_bn: true");
    let one = run(d, &synced, "one", 1, backend);
    let two = run(d, &synced, "two", 2, backend);
    let with = largest_difference(&one, &two);
    let without = (!sync_only).then(|| {
        let plain = run(d, &model(d, ntrain, batch, ""), "plain", 2, backend);
        largest_difference(&one, &plain)
    });
    (with, without)
}

#[test]
fn synced_statistics_and_the_overlapped_all_reduce_run_together() {
    if skip() {
        return;
    }
    // Buckets of 1 KiB (several, all-reduced on their own thread while the backward
    // runs its statistics collectives on the world communicator) against one
    // all-reduce after the backward: the same bytes, uneven shards included.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_idx(d, 48, 6);
    let flat = model(d, 37, 9, "sync_bn: true\n  bucket_kb: 0");
    let buckets = model(d, 37, 9, "sync_bn: true\n  bucket_kb: 1");
    let a = run(d, &flat, "flat", 2, "jit");
    let b = run(d, &buckets, "buckets", 2, "jit");
    let bytes = |r: &Path| std::fs::read(r.join("final.safetensors")).unwrap();
    assert!(
        bytes(&a) == bytes(&b),
        "overlapped sync_bn training differs from flat"
    );
}

#[test]
fn two_synced_ranks_train_what_one_process_trains() {
    if skip() {
        return;
    }
    // 40 samples in batches of 10: four steps, shards of 5 and 5.
    let (with, without) = compare(40, 10, false, "jit");
    let without = without.unwrap();
    eprintln!("largest differences from one process: sync_bn {with:?}, without {without:?}");
    assert!(with.0 <= 1e-4, "sync_bn: {} differs by {}", with.1, with.0);
    // Per-shard statistics give other weights (and running statistics): far outside
    // the tolerance, so the check above can fail.
    assert!(
        without.0 > 1e-2,
        "without sync_bn the largest difference is only {} ({})",
        without.0,
        without.1
    );
}

#[test]
fn uneven_shards_and_a_stand_in_rank_train_what_one_process_trains() {
    if skip() {
        return;
    }
    // 37 samples in batches of 9: shards of 5 and 4 in four steps, then a last batch
    // of one sample, which rank 0 trains while rank 1 runs a stand-in of weight 0.
    // The one-sample last batch amplifies f32 summation differences (see the OpenCL
    // test below); with the optimised training graph, whose convs may take Winograd
    // at one batch size and im2col at another, two ranks measured 1.1e-4 here.
    let (with, _) = compare(37, 9, true, "jit");
    eprintln!("largest difference from one process: sync_bn {with:?}");
    assert!(with.0 <= 1e-3, "sync_bn: {} differs by {}", with.1, with.0);
}

#[test]
fn opencl_runs_the_statistics_steps_on_the_host_between_launches() {
    if skip() {
        return;
    }
    // The same on PoCL: each statistics step reads its buffers back, combines them
    // and writes them before the next launch. Uneven shards, then the one-sample last
    // batch with rank 1's stand-in. That last step (batch norms over one sample's 9
    // values) amplifies f32 summation differences: one process on the JIT and one on
    // PoCL differ by 1.4e-4 on `basic2.conv1.weight` here, so the bound is looser than
    // the JIT's (two ranks measured 2.0e-4; without sync_bn the JIT's differ by 11).
    let (with, _) = compare(37, 9, true, "opencl");
    eprintln!("opencl: largest difference from one process: sync_bn {with:?}");
    assert!(with.0 <= 1e-3, "sync_bn: {} differs by {}", with.1, with.0);
}
