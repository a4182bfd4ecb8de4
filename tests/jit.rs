//! The JIT against the reference interpreter, through the `Backend` seam: every op
//! form the OpenCL tests cover (convs with their fused epilogues, pools, layout ops),
//! and every example's forward, on the JIT's default target and on the 8- and 16-lane
//! tiles (values of two and four `f32x4` parts).

mod common;

use common::jit::agree;
use common::models::{example, input, program, weights};

include!("shared/op_cases.rs");

fn fnetc(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("fnetc runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `fnetc bench --backend jit` (forward and training step) names the JIT and prints its
/// compile time in the `prepare` line; `--device` is refused for it with a hint.
#[test]
fn bench_on_the_jit_prints_its_compile_time() {
    for training in [false, true] {
        let mut args = vec![
            "bench",
            "examples/lenet_mnist.fnet",
            "--backend",
            "jit",
            "--batch",
            "2",
            "--iters",
            "2",
        ];
        if training {
            args.push("--training");
        }
        let (ok, out) = fnetc(&args);
        assert!(ok, "{out}");
        assert!(out.contains("backend  jit (Cranelift"), "{out}");
        let prepare = out
            .lines()
            .find(|l| l.starts_with("prepare"))
            .unwrap_or_else(|| panic!("no prepare line in {out}"));
        let ms: f64 = prepare
            .split("(JIT compile ")
            .nth(1)
            .and_then(|r| r.strip_suffix(" ms)"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no JIT compile time in `{prepare}`"));
        assert!(ms > 0.0, "{prepare}");
    }
    let (ok, out) = fnetc(&[
        "bench",
        "examples/lenet_mnist.fnet",
        "--backend",
        "jit",
        "--device",
        "cpu",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("but the backend is the JIT"), "{out}");
    assert!(out.contains("drop --device"), "{out}");
}
