//! `fnetc bench`: runs on the reference backend (no OpenCL needed) and reports the
//! nominal flops of the model, and rejects a model whose input sizes it cannot fix.

use std::process::Command;

fn fnetc(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("fnetc runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn bench_reports_times_and_throughput() {
    let (ok, out) = fnetc(&[
        "bench",
        "examples/lenet_mnist.fnet",
        "--backend",
        "reference",
        "--batch",
        "2",
        "--iters",
        "3",
        "--warmup",
        "0",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("(batch 2)"), "{out}");
    assert!(out.contains("reference interpreter"), "{out}");
    for line in ["median", "best"] {
        let l = out
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no `{line}` line in {out}"));
        assert!(l.contains("samples/s") && l.contains("GFLOP/s") && l.contains("(3 runs)"));
    }
    // LeNet-5: ≈ 0.42 M multiply-adds, so 0.8–0.9 nominal MFLOP per sample.
    let mflop: f64 = out
        .lines()
        .find(|l| l.starts_with("flops"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("a flops line");
    assert!((0.5..1.5).contains(&mflop), "{out}");
    // The forward's measured peak: LeNet's weights (~0.25 MB) and more, far under 1 GB.
    let peak: u64 = out
        .lines()
        .find(|l| l.starts_with("memory   measured peak"))
        .and_then(|l| l.rsplit("; ").next())
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no measured peak in {out}"));
    assert!(peak > 0 && peak < 1 << 30, "{out}");
}

#[test]
fn bench_rejects_a_zero_batch_and_missing_models() {
    let (ok, out) = fnetc(&["bench", "examples/lenet_mnist.fnet", "--batch", "0"]);
    assert!(!ok && out.contains("--batch"), "{out}");
    let (ok, out) = fnetc(&["bench", "examples/nope.fnet", "--backend", "reference"]);
    assert!(!ok && out.contains("nope.fnet"), "{out}");
}
