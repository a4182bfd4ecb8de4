//! CI-sized runs of the four experiment scripts (`scripts/experiments/*.sh`,
//! docs/experiments.md) with `SMOKE=1`: one seed, a sliver of MNIST-10k, one epoch,
//! the JIT backend and this build's `fnetc`, so the scripts cannot rot. Each must
//! finish and write its table with every arm's row (and its PNG). The PyTorch
//! controls are left out here (`CONTROL=0`): they need torch, and are exercised by
//! the full runs. The full experiments are not run in CI.

use std::path::Path;
use std::process::Command;

fn run_script(name: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join(format!("scripts/experiments/{name}.sh")))
        .env("SMOKE", "1")
        .env("BACKEND", "jit")
        .env("CONTROL", "0")
        .env("FNETC", env!("CARGO_BIN_EXE_fnetc"))
        .env("OUT", out.path());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{name}.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let table = std::fs::read_to_string(out.path().join("table.md"))
        .unwrap_or_else(|e| panic!("{name}.sh wrote no table.md: {e}"));
    (out, table)
}

fn png(dir: &Path, name: &str) {
    let b = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("no {name}: {e}"));
    assert!(
        b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 100,
        "{name} is not a PNG"
    );
}

#[test]
fn flexconv_xres_writes_its_table() {
    let (out, t) = run_script("flexconv_xres", &[("TRAIN", "0,64"), ("TEST", "8000,8064")]);
    for arm in [
        "FlexNet + anti-aliasing",
        "FlexNet, no regulariser",
        "3×3 CNN",
    ] {
        assert!(t.contains(&format!("| {arm}")), "{arm} missing:\n{t}");
    }
    // The FlexNet's parameter count, from fnetc check; the initial crop at horizon 15
    // is 3 (SEEDS §1.12), logged per layer.
    assert!(t.contains("22,510") && t.contains("| flex1 | 3 |"), "{t}");
    png(out.path(), "accuracy.png");
    png(out.path(), "kernel_sizes.png");
}

#[test]
fn lc_frozen_writes_its_table() {
    let (out, t) = run_script("lc_frozen", &[("TRAIN", "0,64"), ("TEST", "8000,8064")]);
    assert!(t.contains("| baseline | — | fnet | 19,074 | 0 |"), "{t}");
    // E = 1: the frozen 3×3 bases and the trainable 1×1 combinations.
    assert!(t.contains("| frozen | 1 | fnet | 3,322 | 18,504 |"), "{t}");
    assert!(t.contains("| learnable | 1 | fnet | 21,826 | 0 |"), "{t}");
    // The same frozen training timed unfolded (`--skip-pass fold-bases`).
    assert!(
        t.contains("| unfolded | 1 | fnet | 3,322 | 18,504 |"),
        "{t}"
    );
    assert!(t.contains("with `--skip-pass fold-bases`"), "{t}");
    png(out.path(), "accuracy.png");
}

#[test]
fn shared_bases_writes_its_table_and_residual_trace() {
    let (out, t) = run_script("shared_bases", &[("TRAIN", "0,128"), ("TEST", "8000,8064")]);
    assert!(t.contains("| plain | fnet | 67,906 |"), "{t}");
    for arm in ["shared_l10", "shared_l0"] {
        let row = t
            .lines()
            .find(|l| l.starts_with(&format!("| {arm} | fnet | 39,706 |")))
            .unwrap_or_else(|| panic!("{arm} missing:\n{t}"));
        // A residual was computed from the checkpoints (a number, not "—").
        assert!(!row.contains("| — |"), "{row}");
    }
    // Each shared run's basis gradient norm per step, from `--log-grad-norm`.
    let results = std::fs::read_to_string(out.path().join("results.jsonl")).unwrap();
    for line in results
        .lines()
        .filter(|l| l.contains("\"fnet\"") && l.contains("\"shared_"))
    {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let trace = r["grad_trace"].as_array().expect("grad_trace");
        assert!(
            !trace.is_empty() && trace.iter().all(|p| p[1].as_f64().unwrap() > 0.0),
            "{line}"
        );
    }
    png(out.path(), "residual.png");
}

#[test]
fn mixture_writes_its_table() {
    let (out, t) = run_script("mixture", &[]);
    for m in ["| 1 |", "| 2 |"] {
        assert!(
            t.lines().any(|l| l.starts_with(m)),
            "M row {m} missing:\n{t}"
        );
    }
    png(out.path(), "tau.png");
}
