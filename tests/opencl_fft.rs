//! The OpenCL FFT path: the mixed-radix transform kernels against rustfft, FFT convs
//! (`algo: fft`) against the reference interpreter's direct convs, FlexTCN-6 through
//! the default pipeline (its 784-tap convs by FFT), and grouped / depthwise convs.
//!
//! Needs an OpenCL platform (PoCL: `scripts/setup.sh`); `FNET_TEST_DEVICE` picks one.
#![cfg(feature = "opencl")]

mod common;

use common::opencl::{ctx, example, input, program, targets, weights};
use fnet::kernel_ir::fft::radices;
use fnet::kernel_ir::fft_conv::force_len;
use fnet::kernel_ir::plan::{build_plan, transform_plan, Target};
use fnet::opencl::Executable;
use fnet::runtime::{run, RunOptions};
use fnet::tensor::Tensor;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use common::assert_close as close;

/// The batched transform kernels against rustfft, forward and inverse, rows of the
/// `[n][2][rows]` layout each transformed independently.
#[test]
fn fft_kernels_match_rustfft() {
    // 32 rows: 16-row radix-7 work-items for 8- and 16-lane targets alike.
    let rows = 32;
    // Radix 8 alone (8), 8·2 (16), 8·7 (56), 8·8 (64), 7³ (343), 8·4·7·7 (1568).
    for (n, target) in [8, 12, 16, 49, 56, 64, 98, 343, 1568, 2048]
        .into_iter()
        .flat_map(|n| targets().into_iter().map(move |t| (n, t)))
    {
        for inverse in [false, true] {
            let x = input(&[n, 2, rows], n as u64 + inverse as u64);
            let plan = transform_plan(n, rows, inverse, target).expect("FFT plan");
            let stages = radices(n).expect("7-smooth").len();
            assert_eq!(plan.steps.len(), stages, "n={n}: one launch per stage");
            let exe = Executable::new(ctx(), plan).expect("build");
            let got = exe.run(std::slice::from_ref(&x)).expect("run").remove(0);
            let mut planner = FftPlanner::<f64>::new();
            let fft = if inverse {
                planner.plan_fft_inverse(n)
            } else {
                planner.plan_fft_forward(n)
            };
            let mut want = vec![0.0f32; 2 * n * rows];
            for r in 0..rows {
                let mut line: Vec<Complex<f64>> = (0..n)
                    .map(|i| {
                        let re = x.data[(2 * i) * rows + r] as f64;
                        let im = x.data[(2 * i + 1) * rows + r] as f64;
                        Complex::new(re, im)
                    })
                    .collect();
                fft.process(&mut line);
                for (i, c) in line.iter().enumerate() {
                    want[(2 * i) * rows + r] = c.re as f32;
                    want[(2 * i + 1) * rows + r] = c.im as f32;
                }
            }
            let want = Tensor::from_vec(vec![n, 2, rows], want).expect("shape");
            let tol = 2e-6 * (n as f64).log2();
            close(
                &format!("fft n={n} inverse={inverse} {target:?}"),
                &got,
                &want,
                tol,
            );
        }
    }
}

/// `body` with `algo: fft` on OpenCL against the same program with `algo: direct` on
/// the reference interpreter (same weights: the parameter names agree).
fn fft_conv_agrees(body: &str, shape: &[usize]) {
    let dims = match shape.len() {
        3 => format!("[B, {}, {}]", shape[1], shape[2]),
        _ => format!("[B, {}, {}, {}]", shape[1], shape[2], shape[3]),
    };
    let src = |algo: &str| {
        format!(
            "model t {{\n  input x: f32{dims}\n  {}\n}}",
            body.replace("ALGO", algo)
        )
    };
    let fft = program(&src("fft"));
    let direct = program(&src("direct"));
    let store = weights(&fft, 11);
    let x = input(shape, 5);
    let want = run(
        &direct.graph,
        &store,
        std::slice::from_ref(&x),
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{body}: reference: {e}"))
    .outputs;
    for target in targets() {
        let plan = build_plan(&fft.graph, &store, &[shape.to_vec()], target)
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(
            plan.kernels.iter().any(|k| k.name.starts_with("fft_mac")),
            "{body}: lowered through the FFT"
        );
        let got = Executable::new(ctx(), plan)
            .and_then(|e| e.run(std::slice::from_ref(&x)))
            .unwrap_or_else(|e| panic!("{body} ({target:?}): opencl: {e}"));
        close(&format!("{body} ({target:?})"), &got[0], &want[0], 5e-5);
    }
}

#[test]
fn causal_fft_conv1d_matches_the_direct_reference() {
    for (body, shape) in [
        (
            "return x |> conv1d(30, 784, padding: causal, algo: ALGO)",
            &[1, 1, 784][..],
        ),
        (
            "return x |> conv1d(30, 784, padding: causal, algo: ALGO)",
            &[3, 30, 784],
        ),
        (
            "return x |> conv1d(5, 64, padding: causal, algo: ALGO)",
            &[2, 3, 100],
        ),
        (
            "return x |> conv1d(7, 9, padding: causal, algo: ALGO) |> batchnorm |> relu",
            &[5, 4, 33],
        ),
        (
            "h = x |> conv1d(6, 20, padding: causal, bias: false, algo: ALGO)\n  return relu(h + x)",
            &[4, 6, 50],
        ),
        (
            "return x |> conv1d(3, 1, padding: causal, algo: ALGO)",
            &[2, 2, 7],
        ),
    ] {
        fft_conv_agrees(body, shape);
    }
}

/// The 784-tap conv with its transforms forced to 2048 points (as the FFT conv bench
/// measures it) and to 1600 = 2⁶·5² (radices 8, 8, 5, 5).
#[test]
fn fft_conv1d_at_forced_lengths_matches_the_direct_reference() {
    for n in [2048, 1600] {
        force_len(Some(n));
        fft_conv_agrees(
            "return x |> conv1d(30, 784, padding: causal, algo: ALGO)",
            &[3, 30, 784],
        );
        force_len(None);
    }
}

#[test]
fn same_fft_conv2d_matches_the_direct_reference() {
    for (body, shape) in [
        (
            "return x |> conv2d(4, 5, padding: same, algo: ALGO)",
            &[3, 3, 12, 10][..],
        ),
        (
            "return x |> conv2d(6, 9, padding: same, algo: ALGO) |> batchnorm |> relu",
            &[2, 5, 9, 11],
        ),
        (
            "return x |> conv2d(2, 33, padding: same, algo: ALGO)",
            &[1, 3, 32, 32],
        ),
        (
            "return x |> conv2d(3, [3, 5], padding: 1, algo: ALGO)",
            &[2, 2, 7, 8],
        ),
    ] {
        fft_conv_agrees(body, shape);
    }
}

/// FlexTCN-6 through the default pipeline without bound weights: the kernels are
/// synthesised on the host when the plan is made (784 taps), and every conv the cost
/// model sent to the FFT (the eleven 30 → 30 FlexConvs from batch 2; the first, with
/// one input channel, stays direct) runs through it. An odd batch exercises the
/// paired transforms' padding.
#[test]
fn flextcn6_runs_its_flexconvs_by_fft() {
    use fnet::passes::{pipeline::default_pipeline, CompileMode, PassContext};
    let m = example("flextcn6_smnist.fnet");
    let store = weights(&m, 3);
    let mut graph = m.graph.clone();
    let mut pc = PassContext::new(CompileMode::Inference);
    pc.batch = 3;
    default_pipeline(CompileMode::Inference)
        .run(&mut graph, &mut pc, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let shape = vec![3, 1, 784];
    let plan = build_plan(&graph, &store, std::slice::from_ref(&shape), Target::cpu())
        .unwrap_or_else(|e| panic!("{e}"));
    let macs: std::collections::BTreeSet<&str> = plan
        .steps
        .iter()
        .filter(|s| plan.kernels[s.kernel].name.starts_with("fft_mac"))
        .map(|s| s.layer.as_str())
        .collect();
    let chosen: std::collections::BTreeSet<&str> = graph
        .g
        .node_weights()
        .filter(|n| {
            n.op.conv_attrs()
                .is_some_and(|c| c.algo == fnet::ir::op::ConvAlgo::Fft)
        })
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(chosen.len(), 11, "the cost model's FFT convs: {chosen:?}");
    assert_eq!(macs, chosen, "every FFT conv runs by FFT");
    let x = input(&shape, 4);
    let want = run(
        &graph,
        &store,
        std::slice::from_ref(&x),
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("reference: {e}"))
    .outputs;
    let got = Executable::new(ctx(), plan)
        .and_then(|e| e.run(&[x]))
        .unwrap_or_else(|e| panic!("opencl: {e}"));
    close("flextcn6", &got[0], &want[0], 1e-4);
}

#[test]
fn grouped_and_depthwise_convs_match_the_reference() {
    for (body, shape) in [
        ("return x |> conv2d(6, 3, padding: 1, groups: 2)", &[2, 4, 9, 7][..]),
        (
            "return x |> conv2d(8, 3, padding: 1, groups: 8) |> batchnorm |> relu",
            &[2, 8, 10, 10],
        ),
        (
            "return x |> conv2d(6, 5, stride: 2, padding: 2, dilation: 1, groups: 3)",
            &[1, 6, 11, 12],
        ),
        (
            "h = x |> conv2d(4, 3, padding: 2, dilation: 2, groups: 4, bias: false)\n  return relu(h + x)",
            &[2, 4, 8, 9],
        ),
        (
            "return x |> conv1d(6, 9, padding: causal, groups: 6)",
            &[3, 6, 40],
        ),
    ] {
        let dims = match shape.len() {
            3 => format!("[B, {}, {}]", shape[1], shape[2]),
            _ => format!("[B, {}, {}, {}]", shape[1], shape[2], shape[3]),
        };
        let src = format!("model t {{\n  input x: f32{dims}\n  {body}\n}}");
        let m = program(&src);
        let store = weights(&m, 9);
        let x = input(shape, 2);
        let want = run(
            &m.graph,
            &store,
            std::slice::from_ref(&x),
            &RunOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{body}: reference: {e}"))
        .outputs;
        let got = common::opencl::run_opencl(&m.graph, &store, &[x])
            .unwrap_or_else(|e| panic!("{body}: opencl: {e}"));
        close(body, &got[0], &want[0], 2e-5);
    }
}
