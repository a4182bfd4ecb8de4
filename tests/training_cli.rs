//! Seeing the training graph from the command line: `fnetc compile --training` prints
//! the forward and backward graph, `--print-after autodiff` shows it as autodiff left
//! it, a model autodiff refuses is an E0801 at its line and column, and `fnetc bench
//! --training` times a step and reports its planned and measured peak memory.

mod common;

use common::fnetc::{fnetc, fnetc_in, text};

#[test]
fn compile_training_prints_forward_loss_and_backward() {
    let out = fnetc(&["compile", "examples/lenet_mnist.fnet", "--training"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for want in [
        "input labels",
        "cross_entropy(",
        "relu_backward(",
        "conv_backward_filter(",
        "# grad.conv1.weight",
        "# grad.linear3.bias",
    ] {
        assert!(stdout.contains(want), "no `{want}` in\n{stdout}");
    }
    // The outputs: the loss, then LeNet's ten gradients.
    let ret = stdout
        .lines()
        .find(|l| l.contains("return"))
        .expect("return");
    assert_eq!(ret.split(',').count(), 11, "{ret}");
    // The recipe's label smoothing reaches the loss.
    let out = fnetc(&["compile", "examples/resnet20_lc_cifar10.fnet", "--training"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("label_smoothing=0.1"), "{stdout}");
}

#[test]
fn print_after_autodiff_shows_the_graph_before_the_later_passes() {
    let args = [
        "compile",
        "examples/lenet_mnist.fnet",
        "--training",
        "--print-after",
        "autodiff,choose-conv-algo",
    ];
    let out = fnetc(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let after = stdout
        .split("// IR after pass `choose-conv-algo`")
        .collect::<Vec<_>>();
    assert_eq!(after.len(), 2, "{stdout}");
    let autodiff = after[0];
    assert!(
        autodiff.starts_with("// IR after pass `autodiff`"),
        "{stdout}"
    );
    assert!(autodiff.contains("conv_backward_filter("), "{autodiff}");
    // Autodiff leaves every conv on `auto`; choose-conv-algo decides them after.
    assert!(autodiff.contains("algo=auto"), "{autodiff}");
    assert!(!after[1].contains("algo=auto"), "{}", after[1]);

    // Inference runs no autodiff: the error says how to get it.
    let out = fnetc(&[
        "compile",
        "examples/lenet_mnist.fnet",
        "--print-after",
        "autodiff",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--print-after autodiff") && stderr.contains("--training"),
        "{stderr}"
    );
}

#[test]
fn a_model_autodiff_refuses_is_an_error_at_its_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "model a {\n  input x: f32[B, 2, 6, 6]\n  seed 1\n  return x |> conv2d(3, 3)\n}\n";
    std::fs::write(dir.path().join("bad.fnet"), model).expect("write");
    let out = fnetc_in(
        dir.path(),
        &["compile", "bad.fnet", "--training"],
        &[("NO_COLOR", "1")],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("E0801"), "{stderr}");
    assert!(
        stderr.contains("bad.fnet:4:"),
        "line:col of the conv: {stderr}"
    );
    assert!(stderr.contains("classifier output"), "{stderr}");
    assert!(stderr.contains("linear"), "the hint: {stderr}");
    assert!(!stderr.contains("internal compiler error"), "{stderr}");
    // The same model compiles for inference.
    let out = fnetc_in(dir.path(), &["compile", "bad.fnet"], &[]);
    assert!(out.status.success(), "{}", text(&out).1);
}

/// The recipe's regularisers are part of the training loss: a recipe listing one kind
/// twice is an E0801 at its `regularizers` field, from `compile` and from `bench`; the
/// same recipe listing it once compiles, with the term's output.
#[test]
fn a_recipe_loss_autodiff_refuses_is_an_error_at_the_recipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = |regs: &str| {
        format!(
            "model d {{\n  input x: f32[B, 1, 8]\n  \
             h = x |> flexconv(2, horizon: 5, kernel: magnet(hidden: 3, layers: 1))\n  \
             return h |> last\n}}\ntrain {{\n  regularizers: [{regs}]\n}}\n"
        )
    };
    let twice = model("kernel_l2(weight: 1e-4), kernel_l2(weight: 2e-4)");
    std::fs::write(dir.path().join("twice.fnet"), twice).expect("write");
    let bench = [
        "bench",
        "twice.fnet",
        "--training",
        "--backend",
        "reference",
        "--batch",
        "2",
        "--iters",
        "1",
    ];
    for args in [&["compile", "twice.fnet", "--training"][..], &bench[..]] {
        let out = fnetc_in(dir.path(), args, &[("NO_COLOR", "1")]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("E0801"), "{stderr}");
        assert!(stderr.contains("`kernel_l2` twice"), "{stderr}");
        assert!(
            stderr.contains("twice.fnet:7:3"),
            "at `regularizers`: {stderr}"
        );
        assert!(stderr.contains("sum of the weights"), "the hint: {stderr}");
    }
    std::fs::write(
        dir.path().join("once.fnet"),
        model("kernel_l2(weight: 1e-4)"),
    )
    .expect("write");
    let out = fnetc_in(dir.path(), &["compile", "once.fnet", "--training"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("norm_penalty("), "{stdout}");
    assert!(stdout.contains("# reg.weight_decay"), "{stdout}");
}

/// The value of `memory   KEY ... (...; N bytes)` in a bench report.
fn bytes_after(report: &str, key: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.starts_with("memory") && l.contains(key))
        .unwrap_or_else(|| panic!("no `{key}` line in\n{report}"));
    let n = line
        .rsplit("; ")
        .next()
        .and_then(|t| t.strip_suffix(" bytes)"));
    n.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in `{line}`"))
}

#[test]
fn bench_training_times_a_step_and_reports_its_memory() {
    let out = fnetc(&[
        "bench",
        "examples/lenet_mnist.fnet",
        "--training",
        "--backend",
        "reference",
        "--batch",
        "64",
        "--iters",
        "2",
        "--warmup",
        "0",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("(batch 64, training step"), "{stdout}");
    assert!(stdout.contains("(2 runs)"), "{stdout}");
    let planned = bytes_after(&stdout, "planned peak");
    // LeNet at batch 64: the step's activations are a few MB (conv1's output alone,
    // kept for relu_backward, is 64·6·28·28·4 = 1.2 MB); its weights 0.25 MB.
    assert!((1 << 20..64 << 20).contains(&planned), "{planned}");
    if std::path::Path::new("/proc/self/status").exists() {
        let measured = bytes_after(&stdout, "measured peak");
        assert!(measured < 1 << 30, "{measured}");
    }
    // The training step costs about three forwards' flops.
    let fwd = fnetc(&[
        "bench",
        "examples/lenet_mnist.fnet",
        "--backend",
        "reference",
        "--batch",
        "64",
        "--iters",
        "1",
        "--warmup",
        "0",
    ]);
    let mflop = |t: &str| -> f64 {
        let l = t.lines().find(|l| l.starts_with("flops")).expect("flops");
        l.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("a number")
    };
    let ratio = mflop(&stdout) / mflop(&text(&fwd).0);
    assert!(
        (1.8..4.0).contains(&ratio),
        "training / forward flops {ratio}"
    );
}

#[test]
fn bench_training_on_a_backend_without_training_refuses_with_a_hint() {
    let out = fnetc(&[
        "bench",
        "examples/lenet_mnist.fnet",
        "--training",
        "--backend",
        "opencl",
        "--batch",
        "2",
        "--iters",
        "1",
    ]);
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        // A backend with training plans: it reports the step's device memory.
        assert!(bytes_after(&stdout, "measured peak") > 0, "{stdout}");
        assert!(stdout.contains("device buffers"), "{stdout}");
    } else if stderr.contains("training steps") {
        assert!(stderr.contains("--backend reference"), "{stderr}");
    } else {
        // No OpenCL platform on this machine: the open fails first, and says so.
        assert!(stderr.contains("OpenCL"), "{stderr}");
    }
}

#[test]
fn list_passes_shows_autodiff_in_the_training_pipeline_only() {
    let names = |args: &[&str]| -> Vec<String> {
        let out = fnetc(args);
        assert!(out.status.success(), "{}", text(&out).1);
        let stdout = text(&out).0;
        stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let training = names(&["compile", "--list-passes", "--training"]);
    let at = |n: &str| training.iter().position(|p| p == n).expect(n);
    assert_eq!(at("autodiff"), at("fold-bases") + 1, "{training:?}");
    let inference = names(&["compile", "--list-passes"]);
    assert!(!inference.iter().any(|p| p == "autodiff"), "{inference:?}");
    assert_eq!(inference.len() + 1, training.len());
}
