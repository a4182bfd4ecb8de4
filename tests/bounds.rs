//! Inputs that once aborted `fnetc` in the allocator (exit 134) or ran for minutes:
//! each is now refused within seconds, exit 1, with an error that names the layer
//! (file:line:col), the size and what to change. And compile time depends on the size
//! of the graph, not of its tensors.

use fnet::io::npy::write_npy;
use fnet::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Far more than any of these commands takes when refused (a debug build on a loaded
/// 2-core machine); the aborts took minutes or hundreds of GB.
const SECONDS: Duration = Duration::from_secs(30);

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `fnetc` with `FNET_MAX_MEMORY` set to `limit` (unset with `None`), timing it.
fn fnetc(args: &[&str], limit: Option<&str>) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fnetc"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1");
    match limit {
        Some(l) => cmd.env("FNET_MAX_MEMORY", l),
        None => cmd.env_remove("FNET_MAX_MEMORY"),
    };
    let t = Instant::now();
    let out = cmd.output().expect("fnetc runs");
    let took = t.elapsed();
    assert!(took < SECONDS, "fnetc {args:?} took {took:?}");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bounds")
        .join(test);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// Writes `body` as a model with a 28×28 one-channel input, returning its path.
fn model(dir: &Path, name: &str, body: &str) -> String {
    model_with_input(dir, name, "f32[B, 1, 28, 28]", body)
}

/// Writes `body` as a model whose input `x` has type `input`, returning its path.
fn model_with_input(dir: &Path, name: &str, input: &str, body: &str) -> String {
    let path = dir.join(name);
    let src = format!("model m {{\n  input x: {input}\n  {body}\n}}\n");
    std::fs::write(&path, src).expect("write model");
    path.to_str().expect("utf8").to_string()
}

/// Asserts a clean E0701 refusal: exit 1, no panic or abort, the layer's place in the
/// source, and each of `expect` in the message.
fn refused(r: &Ran, place: &str, expect: &[&str]) {
    assert_eq!(r.code, Some(1), "exit status; stderr:\n{}", r.stderr);
    // Warnings (W0401) may come first.
    assert!(r.stderr.contains("error[E0701]: "), "{}", r.stderr);
    assert!(r.stderr.contains(place), "no `{place}` in\n{}", r.stderr);
    for e in expect {
        assert!(r.stderr.contains(e), "no `{e}` in\n{}", r.stderr);
    }
    assert!(r.stderr.contains("= help: "), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn init_with_billions_of_channels_is_refused() {
    let d = dir("channels");
    let m = model(&d, "m.fnet", "return x |> conv2d(4000000000, 3) |> relu");
    let out = d.join("w.safetensors");
    let r = fnetc(&["init", &m, "-o", out.to_str().unwrap()], Some("8G"));
    // 4·10⁹ × (1 × 3 × 3 + 1) floats: 160 GB, held three times while writing.
    refused(
        &r,
        "m.fnet:3:15",
        &[
            "initialising this model needs about 447 GiB, more than the memory limit of 8.00 GiB",
            "`conv1.weight` (f32[4000000000,1,3,3]) takes 134 GiB",
            "parameters 149 GiB (held 3 times while the file is written)",
            "the limit is FNET_MAX_MEMORY=8G",
            "make `conv1` smaller",
        ],
    );
    assert!(!out.exists(), "nothing is written when init is refused");
}

#[test]
fn init_of_a_two_billion_wide_linear_is_refused() {
    let d = dir("linear");
    let m = model(
        &d,
        "m.fnet",
        "return x |> conv2d(30, 3) |> global_avg_pool |> linear(2147483648)",
    );
    let out = d.join("w.safetensors");
    let r = fnetc(&["init", &m, "-o", out.to_str().unwrap()], Some("8G"));
    refused(
        &r,
        "m.fnet:3:51",
        &["`linear1.weight` (f32[2147483648,30]) takes 240 GiB"],
    );
    assert!(!out.exists());
}

#[test]
fn init_of_ten_million_channels_is_refused_instead_of_writing_gigabytes() {
    let d = dir("conv");
    let m = model_with_input(
        &d,
        "m.fnet",
        "f32[B, 24, 32, 32]",
        "return x |> conv2d(10000000, 3)",
    );
    let out = d.join("w.safetensors");
    let r = fnetc(&["init", &m, "-o", out.to_str().unwrap()], Some("4G"));
    refused(
        &r,
        "m.fnet:3:15",
        &["`conv1.weight` (f32[10000000,24,3,3]) takes 8.05 GiB"],
    );
    assert!(!out.exists());
}

#[test]
fn run_with_a_horizon_of_100001_is_refused_and_checking_it_warns() {
    let d = dir("horizon");
    let m = model(
        &d,
        "m.fnet",
        "return x |> flexconv(4, horizon: 100001, kernel: magnet(hidden: 32, layers: 3), mask: gauss(sigma: 0.075, threshold: 0.1))",
    );
    // Its parameters are small: init succeeds.
    let w = d.join("w.safetensors");
    let r = fnetc(&["init", &m, "-o", w.to_str().unwrap()], Some("8G"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let x = d.join("x.npy");
    write_npy(&x, &Tensor::<f32>::zeros(vec![2, 1, 28, 28])).unwrap();
    let out = d.join("y.npy");
    let r = fnetc(
        &[
            "run",
            &m,
            "-w",
            w.to_str().unwrap(),
            "-i",
            x.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        Some("8G"),
    );
    refused(
        &r,
        "m.fnet:3:15",
        &["running this model at batch 2 needs about", "`flexconv1`"],
    );
    assert!(!out.exists());
    // `check` accepts the model, with a warning that names the input size.
    let r = fnetc(&["check", &m], Some("8G"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("model m"), "{}", r.stdout);
    assert!(
        r.stderr
            .starts_with("warning[W0401]: flexconv horizon 100001 is far beyond the input size 28"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("m.fnet:3:36"), "{}", r.stderr);
    assert!(
        r.stderr.contains("use `horizon: same` (29 here)"),
        "{}",
        r.stderr
    );
    // Once per place in the source, not once per axis.
    assert_eq!(r.stderr.matches("warning[W0401]").count(), 1);
}

#[test]
fn a_horizon_within_twice_the_input_does_not_warn() {
    let d = dir("horizon_ok");
    let m = model(&d, "m.fnet", "return x |> flexconv(4, horizon: 55)");
    let r = fnetc(&["check", &m], Some("8G"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!r.stderr.contains("W0401"), "{}", r.stderr);
    let m = model(&d, "far.fnet", "return x |> flexconv(4, horizon: 57)");
    let r = fnetc(&["check", &m], Some("8G"));
    assert!(r.stderr.contains("W0401"), "{}", r.stderr);
}

#[test]
fn bench_with_a_batch_of_a_hundred_million_is_refused() {
    let r = fnetc(
        &[
            "bench",
            "examples/lenet_mnist.fnet",
            "--backend",
            "reference",
            "--batch",
            "100000000",
        ],
        Some("8G"),
    );
    refused(
        &r,
        "examples/lenet_mnist.fnet:7:12",
        &[
            "running this model at batch 100000000 needs about",
            "`conv1` (f32[100000000,6,28,28])",
            "run at most",
            "samples at once",
        ],
    );
}

#[test]
fn the_default_limit_refuses_terabytes() {
    let d = dir("default_limit");
    let wide = "flatten |> linear(60000000) |> linear(1000)";
    let m = model(
        &d,
        "m.fnet",
        &format!("return x |> {wide} |> {wide} |> {wide} |> {wide}"),
    );
    let out = d.join("w.safetensors");
    let r = fnetc(&["init", &m, "-o", out.to_str().unwrap()], None);
    refused(&r, "m.fnet:3:", &["of memory available"]);
}

#[test]
fn a_bad_limit_is_an_error_that_says_how_to_write_one() {
    let out = dir("bad_limit").join("w.safetensors");
    let r = fnetc(
        &[
            "init",
            "examples/lenet_mnist.fnet",
            "-o",
            out.to_str().unwrap(),
        ],
        Some("lots"),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("FNET_MAX_MEMORY=`lots` is not a size"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("FNET_MAX_MEMORY=16G"), "{}", r.stderr);
}

#[test]
fn a_small_enough_model_runs_under_a_tight_limit() {
    let d = dir("fits");
    let w = d.join("w.safetensors");
    let r = fnetc(
        &[
            "init",
            "examples/lenet_mnist.fnet",
            "-o",
            w.to_str().unwrap(),
        ],
        Some("64M"),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = |extra: &[&str], limit| {
        let mut args = vec![
            "run",
            "examples/lenet_mnist.fnet",
            "-w",
            w.to_str().unwrap(),
            "-i",
            "data/mnist10k/images.idx3-ubyte.gz",
        ];
        args.extend_from_slice(extra);
        fnetc(&args, Some(limit))
    };
    let r = run(&["--range", "0..100"], "64M");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // 10,000 images need more than 16 MB: the hint gives the batch that fits.
    let r = run(&[], "16M");
    refused(
        &r,
        "lenet_mnist.fnet:7:12",
        &["at batch 10000", "run at most"],
    );
}

#[cfg(unix)]
#[test]
fn check_of_dev_zero_stops_at_the_size_limit() {
    if !Path::new("/dev/zero").exists() {
        eprintln!("skipped: this system has no /dev/zero");
        return;
    }
    let r = fnetc(&["check", "/dev/zero"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`/dev/zero` is larger than 4194304 bytes, the limit for a model source"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_utf8_byte_order_mark_is_accepted() {
    let d = dir("bom");
    let path = d.join("bom.fnet");
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(&std::fs::read("examples/lenet_mnist.fnet").unwrap());
    std::fs::write(&path, bytes).unwrap();
    let r = fnetc(&["check", path.to_str().unwrap()], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("61,706"), "{}", r.stdout);
}

/// Every example with its last input dimension made 10¹²: compiling (with no memory
/// limit in the way) is as quick as for the real sizes. It took minutes while the FFT
/// size search scanned integers up to the next 7-smooth one, and overflowed the
/// cost model's work counts.
#[test]
fn compile_time_does_not_grow_with_tensor_sizes() {
    let d = dir("wide");
    let examples = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "fnet"));
    let mut compiled = 0;
    for p in examples {
        let src = std::fs::read_to_string(&p).unwrap();
        let Some(line) = src.lines().find(|l| l.trim_start().starts_with("input x:")) else {
            continue;
        };
        let last = line.rfind(", ").expect("a rank above 1") + 2;
        let wide = format!("{}1000000000000]", &line[..last]);
        let path = d.join(p.file_name().unwrap());
        std::fs::write(&path, src.replace(line, &wide)).unwrap();
        let r = fnetc(
            &["compile", path.to_str().unwrap(), "--explain"],
            Some("1000000T"),
        );
        // LeNet's flatten makes a linear too large to declare (E0302); the others compile.
        assert!(
            r.code == Some(0) || r.stderr.starts_with("error[E0302]"),
            "{}: {:?}\n{}",
            p.display(),
            r.code,
            r.stderr
        );
        compiled += usize::from(r.code == Some(0));
    }
    assert!(compiled >= 5, "only {compiled} wide examples compiled");
}
