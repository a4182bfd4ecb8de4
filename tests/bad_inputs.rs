//! `fnetc` end to end with the inputs that used to lose data or mislead: an output
//! that names an input (directly, by symlink or by hard link), a run that fails after
//! its forward pass, an empty cache directory variable, label files of every kind,
//! NaN weights, binary files where a model belongs, and reversed ranges.
//!
//! Every data-loss case checks that the command fails and that the bytes of every
//! file it was given are unchanged.

mod common;

use common::fnetc::{fnetc, fnetc_in};
use fnet::io::npy::write_npy;
use fnet::io::weights::{read_weights, write_weights};
use fnet::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Output;

const LENET: &str = "examples/lenet_mnist.fnet";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// A directory with a copy of LeNet, its weights, a two-image input and two labels.
struct Setup {
    _dir: tempfile::TempDir,
    model: PathBuf,
    weights: PathBuf,
    input: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tmp");
        let model = dir.path().join("lenet.fnet");
        std::fs::copy(root().join(LENET), &model).expect("copy model");
        let weights = dir.path().join("w.safetensors");
        let o = fnetc(&["init", s(&model), "-o", s(&weights)]);
        assert!(o.status.success(), "{}", stderr(&o));
        let input = dir.path().join("x.npy");
        let data = (0..2 * 28 * 28).map(|i| (i % 17) as f32 / 17.0).collect();
        write_npy(
            &input,
            &Tensor::from_vec(vec![2, 1, 28, 28], data).expect("x"),
        )
        .expect("npy");
        Setup {
            _dir: dir,
            model,
            weights,
            input,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self._dir.path().join(name)
    }

    /// `fnetc run` on the setup's model, weights and input, plus `extra`.
    fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "run",
            s(&self.model),
            "-w",
            s(&self.weights),
            "-i",
            s(&self.input),
        ];
        args.extend(extra);
        fnetc(&args)
    }

    /// `fnetc compile` on the setup's model with its weights bound, plus `extra`.
    fn compile(&self, extra: &[&str]) -> Output {
        let mut args = vec!["compile", s(&self.model), "-w", s(&self.weights)];
        args.extend(extra);
        fnetc(&args)
    }

    fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        [&self.model, &self.weights, &self.input]
            .iter()
            .map(|p| (p.to_path_buf(), std::fs::read(p).expect("read")))
            .collect()
    }
}

/// The command failed, said why, and every file in `before` still has its bytes.
fn refused(o: &Output, before: &[(PathBuf, Vec<u8>)]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("would overwrite an input"), "{err}");
    assert!(err.contains("write to a new file"), "{err}");
    for (path, bytes) in before {
        assert_eq!(
            &std::fs::read(path).expect("still there"),
            bytes,
            "{} changed",
            path.display()
        );
    }
}

#[test]
fn init_refuses_to_overwrite_its_model() {
    let t = Setup::new();
    let before = t.files();
    refused(&fnetc(&["init", s(&t.model), "-o", s(&t.model)]), &before);
}

#[test]
fn run_refuses_to_overwrite_any_of_its_inputs() {
    let t = Setup::new();
    let before = t.files();
    for out in [&t.input, &t.weights, &t.model] {
        refused(&t.run(&["-o", s(out)]), &before);
    }
    // Through a symlink, a hard link, and a path with a `.` in it.
    let link = t.path("link.npy");
    std::os::unix::fs::symlink(&t.input, &link).expect("symlink");
    refused(&t.run(&["-o", s(&link)]), &before);
    let hard = t.path("hard.safetensors");
    std::fs::hard_link(&t.weights, &hard).expect("hard link");
    refused(&t.run(&["-o", s(&hard)]), &before);
    let dotted = t.path(".").join("x.npy");
    refused(&t.run(&["-o", s(&dotted)]), &before);
    // A fresh output is written.
    let out = t.path("y.npy");
    let o = t.run(&["-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fnet::io::npy::read_npy::<f32>(&out).expect("y").shape,
        vec![2, 10]
    );
}

#[test]
fn run_refuses_to_overwrite_its_artifact() {
    let t = Setup::new();
    let fnc = t.path("a.fnc");
    let o = t.compile(&["-o", s(&fnc)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut before = t.files();
    before.push((fnc.clone(), std::fs::read(&fnc).expect("fnc")));
    let o = fnetc(&["run", s(&fnc), "-i", s(&t.input), "-o", s(&fnc)]);
    refused(&o, &before);
    refused(&t.compile(&["-o", s(&t.weights)]), &before);
}

#[test]
fn a_failed_label_check_writes_no_output() {
    let t = Setup::new();
    let short = t.path("short.npy");
    write_npy(&short, &Tensor::from_vec(vec![1], vec![3.0f32]).expect("l")).expect("npy");
    let out = t.path("y.npy");
    let o = t.run(&["--labels", s(&short), "-o", s(&out)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("short.npy") && err.contains("1 labels for 2 inputs"),
        "{err}"
    );
    assert!(!out.exists(), "the output was written");
    // An existing output is left as it was, and no temporary file stays behind.
    std::fs::write(&out, b"earlier results").expect("write");
    let o = t.run(&["--labels", s(&short), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).expect("y"), b"earlier results");
    let names: Vec<String> = std::fs::read_dir(t._dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
}

/// `.npy` bytes with any descr, as numpy writes integer arrays.
fn npy_raw(descr: &str, n: usize, data: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
    h.push_str(&" ".repeat(63 - (10 + h.len()) % 64));
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((h.len() as u16).to_le_bytes());
    b.extend(h.as_bytes());
    b.extend(data);
    b
}

#[test]
fn labels_are_integers_or_integral_floats_within_the_classes() {
    let t = Setup::new();
    let labels = t.path("labels.npy");
    let accepted: [(&str, Vec<u8>); 4] = [
        (
            "<i8",
            [3i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "<i4",
            [3i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ("|u1", vec![3, 7]),
        (
            "<f4",
            [3f32, 7.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    for (descr, data) in accepted {
        std::fs::write(&labels, npy_raw(descr, 2, &data)).expect("write");
        let o = t.run(&["--labels", s(&labels)]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{descr}: {}", stderr(&o));
        assert!(
            out.contains("accuracy ") && out.contains("(2 samples)"),
            "{out}"
        );
    }
    let refused: [(&str, Vec<u8>, &str); 5] = [
        (
            "<f4",
            [3f32, 1.5].iter().flat_map(|v| v.to_le_bytes()).collect(),
            "label 1 is 1.5",
        ),
        (
            "<f8",
            [f64::NAN, 1.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            "label 0 is NaN",
        ),
        (
            "<f4",
            [0f32, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            "label 1 is -1.0",
        ),
        (
            "<i8",
            [300i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect(),
            "label 0 is 300",
        ),
        (
            "|u1",
            vec![2, 10],
            "label 1 is 10 (the model has 10 classes",
        ),
    ];
    for (descr, data, part) in refused {
        std::fs::write(&labels, npy_raw(descr, 2, &data)).expect("write");
        let o = t.run(&["--labels", s(&labels)]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{descr} {part}: {err}");
        assert!(err.contains("labels.npy") && err.contains(part), "{err}");
    }
}

#[test]
fn non_finite_weights_are_named() {
    let t = Setup::new();
    let mut w = read_weights::<f32>(&t.weights).expect("weights").tensors;
    let name = w.keys().next().expect("a tensor").clone();
    w.get_mut(&name).expect("tensor").data[5] = f32::NAN;
    let bad = t.path("nan.safetensors");
    write_weights(&bad, &w).expect("write");
    let o = fnetc(&["run", s(&t.model), "-w", s(&bad), "-i", s(&t.input)]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning:") && err.contains(&format!("`{name}`")) && err.contains("NaN"),
        "{err}"
    );
    // Clean weights say nothing.
    let o = t.run(&[]);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn binary_files_given_as_models_are_named() {
    let t = Setup::new();
    let fnc = t.path("a.fnc");
    let o = fnetc(&["compile", s(&t.model), "-o", s(&fnc)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cases = [
        (&fnc, "is a compiled artifact (.fnc)"),
        (&t.weights, "is a safetensors weights file"),
        (&t.input, "is a NumPy array (.npy)"),
    ];
    for (file, what) in cases {
        for cmd in [
            vec!["check", s(file)],
            vec!["compile", s(file)],
            vec!["bench", s(file), "--backend", "reference", "--iters", "1"],
        ] {
            let o = fnetc(&cmd);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{cmd:?}: {err}");
            assert!(
                err.contains(what) && err.contains("not a .fnet model"),
                "{err}"
            );
            assert!(!err.contains("UTF-8"), "{err}");
            assert!(err.len() < 1000, "{} bytes: {err}", err.len());
        }
    }
}

#[test]
fn reversed_and_empty_ranges_say_so() {
    let t = Setup::new();
    for (range, part) in [("100..50", "is reversed"), ("5..5", "is empty")] {
        let o = t.run(&["--range", range]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(part), "{err}");
    }
    // Open ends past the file's 2 items.
    let o = t.run(&["--range", "2.."]);
    assert!(stderr(&o).contains("range 2.. is empty"), "{}", stderr(&o));
    let o = t.run(&["--range", "..1"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_empty_cache_dir_variable_writes_nothing_here() {
    let t = Setup::new();
    let cwd = tempfile::tempdir().expect("tmp");
    let home = tempfile::tempdir().expect("tmp");
    let o = fnetc_in(
        cwd.path(),
        &[
            "run",
            s(&t.model),
            "-w",
            s(&t.weights),
            "-i",
            s(&t.input),
            "--backend",
            "opencl",
        ],
        &[
            ("FNET_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", ""),
            ("HOME", s(home.path())),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let here: Vec<_> = std::fs::read_dir(cwd.path()).expect("dir").collect();
    assert!(
        here.is_empty(),
        "files written in the working directory: {here:?}"
    );
    let cache = home.path().join(".cache/fnet/opencl");
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert!(cached > 0, "no program binaries in {}", cache.display());
}
