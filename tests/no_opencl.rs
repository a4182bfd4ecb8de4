//! fnetc built without the `opencl` cargo feature (issue 13, item 5): the binary does
//! not link the OpenCL loader, so it starts on a machine without one; it runs and
//! trains on the JIT (the default) and the reference interpreter, and asking for
//! OpenCL is a clear error, not a crash.
//!
//! Only compiled without the feature: `cargo test --no-default-features --test
//! no_opencl` (`scripts/test.sh` runs it).
#![cfg(not(feature = "opencl"))]

mod common;

use common::fnetc::{fnetc, text};
use std::path::{Path, PathBuf};
use std::process::Command;

const LENET: &str = "examples/lenet_mnist.fnet";
const IMAGES: &str = "data/mnist10k/images.idx3-ubyte.gz";
const LABELS: &str = "data/mnist10k/labels.idx1-ubyte.gz";

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no_opencl");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

/// The shared libraries the dynamic loader must find for the binary to start, as
/// `ldd` lists them.
fn needed_libraries() -> String {
    let o = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_fnetc"))
        .output()
        .expect("ldd runs (Debian's libc-bin)");
    assert!(o.status.success(), "{:?}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_binary_does_not_link_the_opencl_loader() {
    let libs = needed_libraries();
    assert!(libs.contains("libc.so"), "not a dynamic listing: {libs}");
    assert!(!libs.contains("libOpenCL"), "{libs}");
}

#[test]
fn run_defaults_to_the_jit_and_classifies_mnist() {
    let w = tmp("lenet.safetensors");
    let o = fnetc(&[
        "init",
        LENET,
        "-o",
        w.to_str().expect("utf8"),
        "--seed",
        "1",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    for backend in [None, Some("reference")] {
        let mut args = vec![
            "run",
            LENET,
            "-w",
            w.to_str().expect("utf8"),
            "-i",
            IMAGES,
            "--range",
            "0..20",
            "--labels",
            LABELS,
        ];
        if let Some(b) = backend {
            args.extend(["--backend", b]);
        }
        let o = fnetc(&args);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{backend:?}: {stderr}");
        assert!(stdout.contains("output shape [20, 10]"), "{stdout}");
        let want = match backend {
            None => "running on jit (Cranelift",
            Some(_) => "running on reference interpreter",
        };
        assert!(stderr.contains(want), "{backend:?}: {stderr}");
    }
}

#[test]
fn train_runs_on_the_jit() {
    let out = tmp("train_run");
    let _ = std::fs::remove_dir_all(&out);
    let o = fnetc(&[
        "train",
        LENET,
        "--epochs",
        "1",
        "--stop-after",
        "3",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(out.join("metrics.jsonl").is_file(), "{stderr}");
}

#[test]
fn asking_for_opencl_is_a_clear_error() {
    let opencl = fnetc(&["bench", LENET, "--backend", "opencl", "--iters", "1"]);
    let devices = fnetc(&["devices"]);
    let device = fnetc(&["bench", LENET, "--device", "0", "--iters", "1"]);
    for o in [opencl, devices, device] {
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("built without OpenCL") && stderr.contains("--backend jit"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
