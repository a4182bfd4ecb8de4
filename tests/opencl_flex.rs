//! FlexConv kernel synthesis on the OpenCL device against the reference interpreter:
//! single `flex_kernel`s (1D causal and 2D centred, masked and unmasked, several
//! crops), FlexNet-7 and FlexTCN-6 after the default pipeline without bound weights,
//! the plan's structure, parameter updates without a new plan; snapshots of the
//! generated OpenCL C of every example; `fnetc devices`.
//!
//! These tests need an OpenCL platform (`scripts/setup.sh` installs PoCL); they run
//! on the default device (`FNET_TEST_DEVICE` overrides: a number, `cpu` or `gpu`).
#![cfg(feature = "opencl")]

mod common;

use common::opencl::{
    ctx, example, input, noise_f32 as noise, program, weights, without_platforms,
};
use fnet::eval::Module;
use fnet::ir::graph::Graph;
use fnet::ir::op::Op;
use fnet::kernel_ir::plan::{build_plan, BufKind, Plan, Target};
use fnet::opencl::{plan_source, Executable};
use fnet::passes::{pipeline::default_pipeline, CompileMode, PassContext};
use fnet::runtime::{flex_kernel, initialise, run, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;
use std::path::Path;

/// The graph after the default inference pipeline without `choose-conv-algo`, and
/// without weights: FlexConv kernels stay `flex_kernel` ops over parameters and the
/// convs keep `algo = auto`, which OpenCL runs direct on device-synthesised kernels.
/// (An FFT conv takes its kernel's spectrum from the host, so the cost model's FFT
/// choice for 33×33 horizons would move synthesis there; `opencl_fft.rs` covers it.)
fn optimised(m: &Module, batch: usize) -> Graph {
    let mut graph = m.graph.clone();
    let mut pc = PassContext::new(CompileMode::Inference);
    pc.batch = batch as u64;
    let names: Vec<String> = fnet::passes::pipeline::registry()
        .iter()
        .map(|p| p.name().to_string())
        .filter(|n| n != "choose-conv-algo")
        .collect();
    fnet::passes::pipeline::from_names(&names)
        .expect("known passes")
        .run(&mut graph, &mut pc, &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", m.graph.name));
    graph
}

fn flex_nodes(g: &Graph) -> Vec<NodeIndex> {
    let mut v: Vec<NodeIndex> =
        g.g.node_indices()
            .filter(|&n| matches!(g.node(n).op, Op::FlexKernel { .. }))
            .collect();
    v.sort();
    v
}

fn close(what: &str, got: &Tensor<f32>, want: &Tensor<f32>, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}");
    let d = got.max_abs_diff(want).expect("same shape");
    let scale = want.max_abs().max(1e-3);
    assert!(
        d <= tol * scale,
        "{what}: max |opencl - reference| = {d} (scale {scale})"
    );
}

/// Every `flex_kernel` of `src` (after `fuse-mask`, no weights bound), made a graph
/// output, synthesised on the device and by `flex_kernel::eval`, with mask parameters
/// `mask` (mean, sigma per axis) for every layer.
fn check_kernels(src: &str, shape: &[usize], mask: Option<&[f32]>, want_sizes: &[&[usize]]) {
    let m = program(src);
    let mut graph = optimised(&m, shape[0]);
    let flex = flex_nodes(&graph);
    assert_eq!(flex.len(), want_sizes.len(), "{src}");
    let mut store = weights(&m, 11);
    if let Some(mp) = mask {
        for (name, t) in store.iter_mut() {
            if name.ends_with("mask_params") {
                t.data.copy_from_slice(mp);
            }
        }
    }
    graph.outputs = flex.clone();
    let got = common::opencl::run_opencl(&graph, &store, &[input(shape, 1)])
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    for ((&n, g), sizes) in flex.iter().zip(&got).zip(want_sizes) {
        let operands: Vec<Tensor<f32>> = graph
            .operands(n)
            .iter()
            .map(|&o| store.get(&graph.node(o).name).expect("param").clone())
            .collect();
        let refs: Vec<&Tensor<f32>> = operands.iter().collect();
        let want = flex_kernel::eval(&graph.node(n).op, &refs).expect("reference");
        assert_eq!(&want.shape[2..], *sizes, "{src}: crop");
        close(&format!("{src}: {}", graph.node(n).name), g, &want, 1e-4);
    }
}

#[test]
fn synthesised_2d_kernels_match_the_reference() {
    let src = |mask: &str, h: usize| {
        format!(
            "model t {{\n  input x: f32[B, 3, 12, 12]\n  h = x |> flexconv(6, horizon: {h}, kernel: magnet(hidden: 16, layers: 2), mask: {mask})\n  return h |> flexconv(5, horizon: 9, mask: {mask}, sampling_rate_norm: 0.25)\n}}"
        )
    };
    let masked = src("gauss(sigma: 0.075, threshold: 0.1)", 13);
    // Crops: sigma 0.075 keeps |x| < 0.161 (13 → 1, 9 → 1); 0.2 → 5 and 3; an
    // off-centre, anisotropic mask crops each axis on its own; 0.6 keeps everything.
    check_kernels(&masked, &[1, 3, 12, 12], None, &[&[1, 1], &[1, 1]]);
    check_kernels(
        &masked,
        &[1, 3, 12, 12],
        Some(&[0.0, 0.2, 0.0, 0.2]),
        &[&[5, 5], &[3, 3]],
    );
    check_kernels(
        &masked,
        &[1, 3, 12, 12],
        Some(&[0.1, 0.3, 0.0, 0.1]),
        &[&[9, 3], &[5, 1]],
    );
    check_kernels(
        &masked,
        &[1, 3, 12, 12],
        Some(&[0.0, 0.6, 0.0, 0.6]),
        &[&[13, 13], &[9, 9]],
    );
    check_kernels(&src("none", 7), &[1, 3, 12, 12], None, &[&[7, 7], &[9, 9]]);
}

#[test]
fn synthesised_1d_causal_kernels_match_the_reference() {
    let src = |mask: &str| {
        format!(
            "model t {{\n  input x: f32[B, 2, 40]\n  h = x |> flexconv(5, horizon: 31, causal: true, mask: {mask})\n  return h |> flexconv(3, horizon: same, causal: true, kernel: magnet(hidden: 8, layers: 1), mask: {mask})\n}}"
        )
    };
    let masked = src("gauss(sigma: 0.075, threshold: 0.1)");
    check_kernels(&masked, &[2, 2, 40], None, &[&[3], &[4]]);
    check_kernels(&masked, &[2, 2, 40], Some(&[1.0, 0.3]), &[&[10], &[13]]);
    check_kernels(&masked, &[2, 2, 40], Some(&[0.2, 0.1]), &[&[16], &[20]]);
    check_kernels(&src("none"), &[2, 2, 40], None, &[&[31], &[40]]);
}

/// FlexNet-7 and FlexTCN-6 compiled without weights: the device synthesises every
/// kernel; outputs agree with the unoptimised graph on the reference interpreter.
#[test]
fn flex_examples_without_bound_weights_match_the_reference() {
    for (file, shape) in [
        ("flexnet7_cifar10.fnet", vec![1, 3, 32, 32]),
        ("flextcn6_smnist.fnet", vec![1, 1, 784]),
    ] {
        let m = example(file);
        let graph = optimised(&m, shape[0]);
        assert!(
            !flex_nodes(&graph).is_empty(),
            "{file}: flex_kernel ops remain"
        );
        let store = weights(&m, 5);
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
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        close(file, &got[0], &want[0], 1e-4);
    }
}

/// FlexTCN-6 compiled with bound weights: kernels are constants, and its blocks'
/// `fused_conv [relu, add, relu]` run as a conv with ReLU then one add+ReLU launch.
#[test]
fn flextcn6_with_bound_weights_matches_the_reference() {
    let m = example("flextcn6_smnist.fnet");
    let store = weights(&m, 6);
    let mut graph = m.graph.clone();
    let mut pc = PassContext::new(CompileMode::Inference);
    pc.weights = Some(store.clone());
    default_pipeline(CompileMode::Inference)
        .run(&mut graph, &mut pc, &mut |_| {})
        .expect("pipeline");
    assert!(flex_nodes(&graph).is_empty(), "folded");
    let x = input(&[1, 1, 784], 3);
    let want = run(
        &m.graph,
        &store,
        std::slice::from_ref(&x),
        &RunOptions::default(),
    )
    .expect("reference")
    .outputs;
    let got = common::opencl::run_opencl(&graph, &store, &[x]).expect("opencl");
    close("flextcn6", &got[0], &want[0], 1e-4);
}

fn kernel_kind<'a>(plan: &'a Plan, step: &fnet::kernel_ir::plan::Step) -> &'a str {
    let name = &plan.kernels[step.kernel].name;
    &name[..name.rfind('_').unwrap_or(name.len())]
}

/// The plan synthesises FlexNet-7's kernels with setup launches; every conv reads a
/// device-derived weight buffer, and no host constant is a flex kernel.
#[test]
fn plan_synthesises_flex_kernels_on_the_device() {
    let m = example("flexnet7_cifar10.fnet");
    let graph = optimised(&m, 1);
    let store = initialise::<f32>(&m.graph, 0).expect("init");
    let plan = build_plan(&graph, &store, &[vec![1, 3, 32, 32]], Target::cpu()).expect("plan");
    let flex = flex_nodes(&graph).len();
    assert_eq!(flex, 15);
    let count = |steps: &[fnet::kernel_ir::plan::Step], kind: &str| {
        steps
            .iter()
            .filter(|s| kernel_kind(&plan, s) == kind)
            .count()
    };
    assert_eq!(count(&plan.setup, "magnet_gabor"), 4 * flex);
    assert_eq!(count(&plan.setup, "flex_mask"), flex);
    assert_eq!(count(&plan.setup, "magnet_out"), flex);
    assert_eq!(count(&plan.setup, "repack"), flex);
    assert_eq!(count(&plan.steps, "magnet_gabor"), 0, "never per run");
    let convs: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| kernel_kind(&plan, s) == "conv")
        .collect();
    let derived = convs
        .iter()
        .filter(|s| plan.buffers[s.args[1]].kind == BufKind::Derived)
        .count();
    // 15 FlexConvs read synthesised weights; the 2 projection shortcuts are 1×1
    // convs with ordinary (host-packed) weights.
    assert_eq!((convs.len(), derived), (17, 15));
    // Kernel-net weights are writable buffers; mask parameters (they fix the crop)
    // and batch-norm statistics are baked in.
    assert!(plan
        .params
        .contains_key("res1.flex1.kernel_net.output_linear.weight"));
    assert!(!plan.params.keys().any(|k| k.ends_with("mask_params")));
    assert!(!plan.params.keys().any(|k| k.ends_with("running_var")));
}

/// A new kernel-net weight is a buffer write and a rerun of the setup launches.
#[test]
fn parameter_updates_resynthesise_without_a_new_plan() {
    let src = "model t {\n  input x: f32[B, 3, 10, 10]\n  return x |> flexconv(4, horizon: 11, mask: gauss(sigma: 0.2)) |> batchnorm |> relu\n}";
    let m = program(src);
    let graph = optimised(&m, 2);
    let mut store = weights(&m, 3);
    let x = input(&[2, 3, 10, 10], 4);
    let plan = build_plan(
        &graph,
        &store,
        std::slice::from_ref(&x.shape),
        Target::cpu(),
    )
    .expect("plan");
    let exe = Executable::new(ctx(), plan).expect("build");
    let reference = |store: &ParamStore<f32>| {
        run(
            &m.graph,
            store,
            std::slice::from_ref(&x),
            &RunOptions::default(),
        )
        .expect("reference")
        .outputs
    };
    let before = exe.run(std::slice::from_ref(&x)).expect("run");
    close("before", &before[0], &reference(&store)[0], 1e-4);
    for name in [
        "flexconv1.kernel_net.output_linear.weight",
        "flexconv1.kernel_net.filters.1.mu",
    ] {
        let t = store.get_mut(name).expect(name);
        let r = noise(t.numel(), 9);
        for (v, r) in t.data.iter_mut().zip(r) {
            *v += 0.3 * r;
        }
        exe.write_param(name, store.get(name).expect(name))
            .expect("write");
    }
    let after = exe.run(std::slice::from_ref(&x)).expect("run");
    let want = reference(&store);
    assert!(before[0].max_abs_diff(&want[0]).expect("shape") > 1e-3);
    close("after", &after[0], &want[0], 1e-4);
    let err = exe
        .write_param(
            "flexconv1.mask_params",
            store.get("flexconv1.mask_params").expect("mask"),
        )
        .expect_err("the crop is baked in");
    assert!(err.message.contains("baked in"), "{err}");
}

/// The generated OpenCL C for every example at batch 1 on the CPU target (no device
/// needed): the elaborated graphs (kernels synthesised on the host), and the flex
/// examples after the default pipeline without weights (synthesised on the device).
#[test]
fn generated_opencl_source_snapshots() {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
            .expect("examples")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .filter(|f| f.ends_with(".fnet"))
            .collect();
    files.sort();
    assert_eq!(files.len(), 8);
    for file in files {
        let m = example(&file);
        let node = m.graph.node(m.graph.inputs[0]);
        let mut shape: Vec<usize> = node
            .ty
            .shape
            .iter()
            .map(|d| d.to_string().parse().unwrap_or(1))
            .collect();
        shape[0] = 1;
        let store = initialise::<f32>(&m.graph, 0).expect("init");
        let name = file.trim_end_matches(".fnet");
        let plan = build_plan(&m.graph, &store, &[shape.clone()], Target::cpu()).expect("plan");
        insta::assert_snapshot!(name, plan_source(&plan));
        if name.starts_with("flex") {
            let graph = optimised(&m, 1);
            let plan = build_plan(&graph, &store, &[shape], Target::cpu()).expect("plan");
            insta::assert_snapshot!(format!("{name}_device_synthesis"), plan_source(&plan));
        }
    }
}

fn fnetc() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
}

#[test]
fn devices_lists_the_platforms_devices() {
    let out = fnetc().arg("devices").output().expect("fnetc");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let head = lines.next().expect("header");
    for col in ["index", "type", "compute units", "driver", "device"] {
        assert!(head.contains(col), "{head}");
    }
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "{text}");
    let first: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(first[0], "0");
    assert!(["cpu", "gpu", "other"].contains(&first[1]), "{text}");
    assert!(first[2].parse::<u32>().expect("compute units") >= 1);
    assert!(text.contains(&ctx().info.name), "{text}");

    let mut cmd = fnetc();
    cmd.arg("devices");
    if let Some((out, _)) = without_platforms(cmd) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no OpenCL platform"), "{err}");
        assert!(err.contains("pocl-opencl-icd"), "{err}");
    }
}
