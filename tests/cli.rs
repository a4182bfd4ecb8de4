//! The `fnetc` binary end to end: init, run, and the errors a user meets with files.

mod common;

use common::fnetc::{fnetc, text};
use fnet::io::npy::write_npy;
use fnet::io::weights::write_weights;
use fnet::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

const LENET: &str = "examples/lenet_mnist.fnet";
const IMAGES: &str = "data/mnist10k/images.idx3-ubyte.gz";
const LABELS: &str = "data/mnist10k/labels.idx1-ubyte.gz";

fn init(path: &Path, seed: &str) {
    let o = fnetc(&[
        "init",
        LENET,
        "-o",
        path.to_str().expect("utf8"),
        "--seed",
        seed,
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn init_then_run_on_shipped_mnist() {
    let w = tmp("lenet_a.safetensors");
    init(&w, "5");
    let out = tmp("logits.npy");
    let o = fnetc(&[
        "run",
        LENET,
        "-w",
        w.to_str().expect("utf8"),
        "-i",
        IMAGES,
        "--range",
        "8000..8050",
        "--labels",
        LABELS,
        "-o",
        out.to_str().expect("utf8"),
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("output shape [50, 10]"), "{stdout}");
    assert!(stdout.contains("top-1: "), "{stdout}");
    assert!(
        stdout.contains("accuracy ") && stdout.contains("(50 samples)"),
        "{stdout}"
    );
    let y = fnet::io::npy::read_npy::<f32>(&out).expect("written");
    assert_eq!(y.shape, vec![50, 10]);
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let (a, b, c) = (
        tmp("seed_a.safetensors"),
        tmp("seed_b.safetensors"),
        tmp("seed_c.safetensors"),
    );
    init(&a, "3");
    init(&b, "3");
    init(&c, "4");
    let read = |p: &Path| std::fs::read(p).expect("file");
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let w = tmp("lenet_b.safetensors");
    init(&w, "1");
    let ws = w.to_str().expect("utf8");
    let o = fnetc(&["run", LENET, "-w", "no/such.safetensors", "-i", IMAGES]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("no/such.safetensors"), "{err}");

    let truncated = tmp("truncated.safetensors");
    std::fs::write(&truncated, &std::fs::read(&w).expect("weights")[..100]).expect("write");
    let o = fnetc(&[
        "run",
        LENET,
        "-w",
        truncated.to_str().expect("utf8"),
        "-i",
        IMAGES,
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("truncated.safetensors") && err.to_lowercase().contains("truncated"),
        "{err}"
    );

    let o = fnetc(&["run", LENET, "-w", ws, "-i", "no/such/input.npy"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no/such/input.npy"));
}

#[test]
fn output_in_a_missing_directory_fails_before_any_work() {
    let w = tmp("lenet_c.safetensors");
    init(&w, "1");
    let o = fnetc(&[
        "run",
        LENET,
        "-w",
        w.to_str().expect("utf8"),
        "-i",
        IMAGES,
        "--range",
        "0..2",
        "-o",
        "missing_dir/y.npy",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("directory `missing_dir` does not exist"),
        "{err}"
    );
    let o = fnetc(&["init", LENET, "-o", "missing_dir/w.safetensors"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("missing_dir")
        .exists());
}

#[test]
fn weights_of_another_model_name_every_mismatch() {
    let w = tmp("resnet.safetensors");
    let o = fnetc(&[
        "init",
        "examples/resnet20_cifar10.fnet",
        "-o",
        w.to_str().expect("utf8"),
    ]);
    assert!(o.status.success());
    let o = fnetc(&[
        "run",
        LENET,
        "-w",
        w.to_str().expect("utf8"),
        "-i",
        IMAGES,
        "--range",
        "0..2",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("missing tensors (9)"), "{err}");
    assert!(err.contains("conv1.bias [6] (trainable)"), "{err}");
    assert!(
        err.contains("conv1.weight: expected [6, 1, 5, 5], found [16, 3, 3, 3]"),
        "{err}"
    );
    assert!(err.contains("tensors the model does not have"), "{err}");
}

#[test]
fn wrong_dtype_shape_and_range_are_reported() {
    let w64 = tmp("f64.safetensors");
    let mut m = BTreeMap::new();
    m.insert(
        "conv1.weight".to_string(),
        Tensor::<f64>::zeros(vec![6, 1, 5, 5]),
    );
    write_weights(&w64, &m).expect("write");
    let o = fnetc(&[
        "run",
        LENET,
        "-w",
        w64.to_str().expect("utf8"),
        "-i",
        IMAGES,
        "--range",
        "0..2",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("f64") && err.contains("f32"), "{err}");

    let w = tmp("lenet_d.safetensors");
    init(&w, "1");
    let x = tmp("wrong.npy");
    write_npy(&x, &Tensor::<f32>::zeros(vec![2, 3, 32, 32])).expect("npy");
    let o = fnetc(&[
        "run",
        LENET,
        "-w",
        w.to_str().expect("utf8"),
        "-i",
        x.to_str().expect("utf8"),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("expected shape f32[B,1,28,28], got [2, 3, 32, 32]"),
        "{err}"
    );

    let o = fnetc(&[
        "run",
        LENET,
        "-w",
        w.to_str().expect("utf8"),
        "-i",
        IMAGES,
        "--range",
        "9990..10010",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("range 9990..10010 is not within the 10000 items"),
        "{err}"
    );
}

#[test]
fn every_command_has_help() {
    for cmd in ["check", "compile", "init", "run"] {
        let o = fnetc(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}");
        assert!(text(&o).0.contains("Usage: fnetc"), "{cmd}");
    }
}

#[test]
fn a_compiled_artifact_runs_like_its_model() {
    let w = tmp("lenet_fnc.safetensors");
    init(&w, "11");
    let (ws, fnc) = (w.to_str().expect("utf8"), tmp("lenet.fnc"));
    let fncs = fnc.to_str().expect("utf8");
    let o = fnetc(&["compile", LENET, "-w", ws, "-o", fncs, "--batch", "64"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("10 parameter tensors (10 bound)"),
        "{stdout}"
    );
    let run = |model: &str, extra: &[&str], out: &Path| {
        let mut a = vec!["run", model, "-i", IMAGES, "--range", "8000..8020"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["-o", out.to_str().expect("utf8")]);
        let o = fnetc(&a);
        assert!(o.status.success(), "{:?}", text(&o));
        fnet::io::npy::read_npy::<f32>(out).expect("written")
    };
    let from_fnc = run(fncs, &[], &tmp("fnc.npy"));
    let from_fnet = run(LENET, &["-w", ws, "-O", "0"], &tmp("fnet.npy"));
    assert_eq!(from_fnc.shape, vec![20, 10]);
    for (a, b) in from_fnc.data.iter().zip(&from_fnet.data) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
    // Bound weights cannot be swapped; unbound artifacts need them.
    let o = fnetc(&["run", fncs, "-w", ws, "-i", IMAGES]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("weights bound at compile time"),
        "{:?}",
        text(&o)
    );
    let bare = tmp("bare.fnc");
    let o = fnetc(&["compile", LENET, "-o", bare.to_str().expect("utf8")]);
    assert!(o.status.success());
    let o = fnetc(&["run", bare.to_str().expect("utf8"), "-i", IMAGES]);
    assert!(
        text(&o).1.contains("compiled without weights"),
        "{:?}",
        text(&o)
    );
}

/// An artifact compiled without weights holds the LC bases as seeded constants; the
/// weights file `fnetc init` wrote still carries them, which is fine while they agree.
#[test]
fn unbound_artifacts_accept_init_weights_and_refuse_other_frozen_values() {
    let lc = "examples/resnet20_lc_cifar10.fnet";
    let (fnc, same, other) = (
        tmp("lc.fnc"),
        tmp("lc_same.safetensors"),
        tmp("lc_other.safetensors"),
    );
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    // The model's own seed (what the artifact used), and another one.
    let o = fnetc(&["init", lc, "-o", &s(&same)]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = fnetc(&["init", lc, "-o", &s(&other), "--seed", "2"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = fnetc(&["compile", lc, "-o", &s(&fnc)]);
    assert!(o.status.success(), "{:?}", text(&o));
    let x = tmp("lc_x.npy");
    let data: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| (i % 17) as f32 / 17.0)
        .collect();
    write_npy(&x, &Tensor::from_vec(vec![2, 3, 32, 32], data).expect("x")).expect("npy");
    let o = fnetc(&["run", &s(&fnc), "-w", &s(&same), "-i", &s(&x)]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = fnetc(&["run", &s(&fnc), "-w", &s(&other), "-i", &s(&x)]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("differs from the frozen value"),
        "{:?}",
        text(&o)
    );
}
