//! The OpenCL backend against the reference interpreter: every lowered op on small,
//! odd shapes (sizes that are not multiples of the vector width, strides, padding,
//! dilation, 1D and 2D), whole examples, the program cache, build logs and the
//! missing-driver error.
//!
//! These tests need an OpenCL platform; `scripts/setup.sh` installs PoCL. They run on
//! the default device (`FNET_TEST_DEVICE` overrides: a number, `cpu` or `gpu`).
#![cfg(feature = "opencl")]

mod common;

use common::opencl::{agree, ctx, example, input, program, weights, without_platforms};
use fnet::kernel_ir::plan::{build_plan, Target};
use fnet::opencl::{ClContext, DeviceSel};
use fnet::runtime::{initialise, run, RunOptions};
use std::path::Path;

include!("shared/op_cases.rs");

#[test]
fn resnet20_fuses_every_batch_norm_add_and_relu_into_convs() {
    let m = example("resnet20_cifar10.fnet");
    let store = initialise::<f32>(&m.graph, 0).expect("init");
    let plan = build_plan(&m.graph, &store, &[vec![1, 3, 32, 32]], Target::cpu()).expect("plan");
    let kinds: Vec<&str> = plan
        .steps
        .iter()
        .map(|s| plan.kernels[s.kernel].name.split('_').next().unwrap_or(""))
        .collect();
    let count = |k: &str| kinds.iter().filter(|&&n| n == k).count();
    assert_eq!(count("conv"), 19);
    assert_eq!(
        count("batchnorm") + count("relu") + count("add"),
        0,
        "{kinds:?}"
    );
    assert_eq!(count("shortcut"), 2);
}

#[test]
fn program_cache_reloads_binaries_from_disk() {
    let dir = std::env::temp_dir().join(format!("fnet-ocl-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = "__kernel void twice(__global float* x) { int i = get_global_id(0); x[i] = 2.0f * x[i] + 0.0f * 11.0f; }\n";
    let a = ClContext::new(DeviceSel::Default, Some(dir.clone())).expect("context");
    a.program(src).expect("build");
    a.program(src).expect("memory hit");
    assert_eq!(
        (a.stats().builds, a.stats().memory_hits, a.stats().disk_hits),
        (1, 1, 0)
    );
    let b = ClContext::new(DeviceSel::Default, Some(dir.clone())).expect("context");
    b.program(src).expect("load");
    assert_eq!((b.stats().builds, b.stats().disk_hits), (0, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The OpenCL compiler prints this program's error (PoCL: "1 error generated.") on
/// stderr while the test runs; that is expected, the test checks it reaches the error.
#[test]
fn a_failed_build_shows_the_build_log() {
    let err = ctx()
        .program("__kernel void f(__global float* x) { x[0] = undeclared_thing; }\n")
        .expect_err("must not build");
    assert!(err.message.contains("build failed"), "{err}");
    assert!(err.message.contains("undeclared_thing"), "{err}");
}

/// Grouped convs used to be refused; they lower to the bounds-checked grouped kernel
/// (`tests/opencl_fft.rs` checks their values).
#[test]
fn grouped_convs_lower_to_the_grouped_kernel() {
    let m = program("model t {\n  input x: f32[B, 4, 6, 6]\n  return x |> conv2d(4, 3, padding: 1, groups: 2)\n}");
    let store = initialise::<f32>(&m.graph, 0).expect("init");
    let plan = build_plan(&m.graph, &store, &[vec![1, 4, 6, 6]], Target::cpu()).expect("groups");
    assert!(plan.kernels.iter().any(|k| k.name.starts_with("gconv")));
}

fn fnetc() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
}

#[test]
fn no_platform_fails_fast_naming_the_package() {
    let dir = std::env::temp_dir().join(format!("fnet-ocl-noplat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let w = dir.join("w.safetensors");
    let x = dir.join("x.npy");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("examples/lenet_mnist.fnet");
    assert!(fnetc()
        .args(["init"])
        .arg(&model)
        .arg("-o")
        .arg(&w)
        .status()
        .expect("fnetc")
        .success());
    fnet::io::npy::write_npy(&x, &input(&[1, 1, 28, 28], 0)).expect("npy");
    // The reference backend does not touch OpenCL at all.
    let ok = fnetc()
        .arg("run")
        .arg(&model)
        .arg("-w")
        .arg(&w)
        .arg("-i")
        .arg(&x)
        .env("OCL_ICD_VENDORS", dir.join("no-vendors"))
        .output()
        .expect("fnetc");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut cmd = fnetc();
    cmd.arg("run")
        .arg(&model)
        .arg("-w")
        .arg(&w)
        .arg("-i")
        .arg(&x)
        .args(["--backend", "opencl"]);
    let hidden = without_platforms(cmd);
    std::fs::remove_dir_all(&dir).ok();
    let Some((out, secs)) = hidden else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no OpenCL platform"), "{err}");
    assert!(err.contains("pocl-opencl-icd"), "{err}");
    assert!(secs < 5.0, "took {secs} s");
}

/// The optimised graph (every pass, weights bound: folded kernels, `fused_conv`s,
/// `bn_fold`/`lc_fold` constants) runs on OpenCL to the unoptimised reference outputs.
#[test]
fn optimised_examples_match_the_unoptimised_reference() {
    use fnet::passes::{pipeline::default_pipeline, CompileMode, PassContext};
    for (file, shape) in [
        ("lenet_mnist.fnet", vec![2, 1, 28, 28]),
        ("resnet20_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet20_lc_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet32_s16u1d_cifar10.fnet", vec![2, 3, 32, 32]),
        ("flexnet7_cifar10.fnet", vec![1, 3, 32, 32]),
    ] {
        let m = example(file);
        let store = weights(&m, 5);
        let mut graph = m.graph.clone();
        let mut pc = PassContext::new(CompileMode::Inference);
        pc.weights = Some(store.clone());
        pc.batch = shape[0] as u64;
        default_pipeline(CompileMode::Inference)
            .run(&mut graph, &mut pc, &mut |_| {})
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            graph.g.node_weights().any(|n| n.op.name() == "fused_conv"),
            "{file}: the pipeline fused convs"
        );
        let x = input(&shape, 2);
        let want = run(
            &m.graph,
            &store,
            std::slice::from_ref(&x),
            &RunOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{file}: reference: {e}"))
        .outputs;
        let got = common::opencl::run_opencl(&graph, &store, &[x])
            .unwrap_or_else(|e| panic!("{file}: opencl: {e}"));
        let d = got[0].max_abs_diff(&want[0]).expect("same shape");
        let scale = want[0].max_abs().max(1.0);
        assert!(d <= 1e-4 * scale, "{file}: max diff {d} (scale {scale})");
    }
}
