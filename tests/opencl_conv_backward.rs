//! The OpenCL kernels of the conv, linear and LC-fold backward ops (and the LC fold's
//! forward over computed inputs) against the reference interpreter, which runs the
//! `reference::grad` functions. Each test builds a one-op graph whose operands are all
//! graph inputs, so every weight is read from a device buffer, as in training.
//!
//! Needs an OpenCL platform (PoCL: `scripts/setup.sh`); `FNET_TEST_DEVICE` picks one.
#![cfg(feature = "opencl")]

mod common;

use common::assert_close as close;
use common::opencl::{ctx, input, targets};
use fnet::diag::Span;
use fnet::ir::graph::Graph;
use fnet::ir::op::{ConvAlgo, ConvAttrs, Op, Padding};
use fnet::ir::train_ops::TrainOp;
use fnet::ir::types::{DType, TensorType};
use fnet::kernel_ir::plan::build_plan;
use fnet::opencl::Executable;
use fnet::runtime::{run, ParamStore, RunOptions};
use fnet::tensor::Tensor;

/// A graph computing `op` over fresh inputs of `shapes`.
fn one_op(op: Op, shapes: &[Vec<usize>]) -> Graph {
    let mut g = Graph::new("t");
    let ins: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let dims: Vec<u64> = s.iter().map(|&d| d as u64).collect();
            let ty = TensorType::known(DType::F32, &dims);
            g.add_input(&format!("in{i}"), ty, Span::default())
        })
        .collect();
    let out = g
        .add_op(op, &ins, "op".into(), Span::default())
        .unwrap_or_else(|e| panic!("{e}"));
    g.outputs = vec![out];
    g
}

/// `op` on OpenCL (every target) against the interpreter, on random inputs; the
/// names of the kernels the plans launch.
fn agrees(what: &str, op: Op, shapes: &[Vec<usize>], rel: f64) -> Vec<String> {
    let g = one_op(op, shapes);
    let inputs: Vec<Tensor<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| input(s, 7 + i as u64))
        .collect();
    let store = ParamStore::new();
    let mut names = Vec::new();
    let want = run(&g, &store, &inputs, &RunOptions::default())
        .unwrap_or_else(|e| panic!("{what}: interpreter: {e}"))
        .outputs
        .remove(0);
    for target in targets() {
        let plan = build_plan(&g, &store, shapes, target)
            .unwrap_or_else(|e| panic!("{what}: lowering: {e}"));
        names.extend(
            plan.steps
                .iter()
                .map(|s| plan.kernels[s.kernel].name.clone()),
        );
        let exe = Executable::new(ctx(), plan).expect("build");
        let got = exe.run(&inputs).expect("run").remove(0);
        close(&format!("{what} {target:?}"), &got, &want, rel);
    }
    names
}

fn attrs(stride: &[u64], padding: Padding, dilation: &[u64], groups: u64) -> ConvAttrs {
    ConvAttrs {
        stride: stride.to_vec(),
        padding,
        dilation: dilation.to_vec(),
        groups,
        bias: false,
        algo: ConvAlgo::Direct,
    }
}

/// The forward output shape of `a` on `x` with `w`.
fn out_shape(a: &ConvAttrs, x: &[usize], w: &[usize]) -> Vec<usize> {
    let nd = x.len() - 2;
    let mut y = vec![x[0], w[0]];
    for i in 0..nd {
        let k = w[2 + i];
        let d = a.dilation[i] as usize;
        let reach = d * (k - 1);
        let (lo, hi) = match &a.padding {
            Padding::Explicit(p) => (p[i].0 as usize, p[i].1 as usize),
            Padding::Same => (reach / 2, reach - reach / 2),
            Padding::Causal => (reach, 0),
        };
        y.push((x[2 + i] + lo + hi - reach - 1) / a.stride[i] as usize + 1);
    }
    y
}

/// Backward to data and to filter of one conv; whether each ran by FFT.
fn conv_case(what: &str, a: ConvAttrs, x: &[usize], w: &[usize]) -> [bool; 2] {
    let y = out_shape(&a, x, w);
    // Sums of up to a few thousand products of values in [-1, 1].
    let rel = 2e-5;
    let data = agrees(
        &format!("{what}: to data"),
        Op::Train(TrainOp::ConvBackwardData(a.clone())),
        &[y.clone(), w.to_vec(), x.to_vec()],
        rel,
    );
    let filter = agrees(
        &format!("{what}: to filter"),
        Op::Train(TrainOp::ConvBackwardFilter(a)),
        &[x.to_vec(), y, w.to_vec()],
        rel,
    );
    let by_fft = |names: &[String]| names.iter().any(|n| n.starts_with("fft"));
    [by_fft(&data), by_fft(&filter)]
}

fn ex(p: &[(u64, u64)]) -> Padding {
    Padding::Explicit(p.to_vec())
}

#[test]
fn conv2d_backward_stride_one() {
    // The stride-1 backward to data runs the forward kernel on the flipped weight.
    let a = attrs(&[1, 1], ex(&[(1, 1), (1, 1)]), &[1, 1], 1);
    conv_case("3x3 pad 1", a, &[2, 3, 7, 6], &[5, 3, 3, 3]);
    let a = attrs(&[1, 1], ex(&[(0, 0), (0, 0)]), &[1, 1], 1);
    conv_case("1x1", a, &[2, 4, 5, 5], &[3, 4, 1, 1]);
}

#[test]
fn conv2d_backward_strided_padded_dilated() {
    let a = attrs(&[2, 2], ex(&[(1, 1), (1, 1)]), &[1, 1], 1);
    conv_case("3x3 stride 2", a, &[2, 3, 9, 8], &[5, 3, 3, 3]);
    let a = attrs(&[2, 2], ex(&[(0, 0), (0, 0)]), &[1, 1], 1);
    conv_case("1x1 stride 2", a, &[2, 4, 8, 8], &[6, 4, 1, 1]);
    // By phases (`kernel_ir::strided_data`): 1–2 taps per phase and axis.
    let a = attrs(&[3, 3], ex(&[(2, 2), (2, 2)]), &[1, 1], 1);
    conv_case("5x5 stride 3 pad 2", a, &[1, 2, 11, 10], &[3, 2, 5, 5]);
    // A phase whose window starts inside dy: spread instead.
    let a = attrs(&[3, 3], ex(&[(1, 1), (1, 1)]), &[1, 1], 1);
    conv_case("2x2 stride 3 pad 1", a, &[1, 2, 7, 8], &[2, 2, 2, 2]);
    let a = attrs(&[1, 2], ex(&[(0, 2), (1, 0)]), &[1, 1], 1);
    conv_case("asymmetric padding", a, &[1, 2, 6, 7], &[3, 2, 3, 2]);
    let a = attrs(&[1, 1], Padding::Same, &[2, 2], 1);
    conv_case("same, dilation 2", a, &[2, 2, 9, 9], &[3, 2, 3, 3]);
    let a = attrs(&[2, 1], Padding::Same, &[1, 2], 1);
    conv_case(
        "same, stride 2 × dilation 2",
        a,
        &[1, 3, 8, 10],
        &[2, 3, 4, 3],
    );
}

#[test]
fn conv2d_backward_groups() {
    let a = attrs(&[1, 1], ex(&[(1, 1), (1, 1)]), &[1, 1], 2);
    conv_case("groups 2", a, &[2, 4, 6, 6], &[6, 2, 3, 3]);
    let a = attrs(&[2, 2], ex(&[(1, 1), (1, 1)]), &[1, 1], 4);
    conv_case("depthwise stride 2", a, &[2, 4, 7, 6], &[4, 1, 3, 3]);
}

#[test]
fn conv1d_backward() {
    let a = attrs(&[1], Padding::Causal, &[2], 1);
    conv_case("causal k5 dilation 2", a, &[2, 3, 20], &[4, 3, 5]);
    let a = attrs(&[2], ex(&[(2, 1)]), &[1], 1);
    conv_case("stride 2, padding (2, 1)", a, &[2, 3, 17], &[2, 3, 4]);
    let a = attrs(&[1], Padding::Same, &[1], 1);
    conv_case("same, even kernel", a, &[1, 2, 11], &[3, 2, 4]);
    let a = attrs(&[1], Padding::Causal, &[1], 3);
    conv_case("causal, groups 3", a, &[2, 6, 13], &[3, 2, 3]);
}

fn fft(mut a: ConvAttrs) -> ConvAttrs {
    a.algo = ConvAlgo::Fft;
    a
}

#[test]
fn conv1d_backward_long_causal_kernel_direct_and_fft() {
    // FlexTCN's 784-tap causal conv over a 784-step sequence, both algorithms.
    let a = attrs(&[1], Padding::Causal, &[1], 1);
    conv_case(
        "784-tap causal, direct",
        a.clone(),
        &[3, 2, 784],
        &[3, 2, 784],
    );
    conv_case("784-tap causal, fft", fft(a), &[3, 2, 784], &[3, 2, 784]);
}

#[test]
fn conv_backward_by_fft() {
    let a = fft(attrs(&[1], Padding::Causal, &[1], 1));
    let r = conv_case("fft causal k9", a, &[3, 5, 30], &[4, 5, 9]);
    assert_eq!(r, [true, true]);
    let a = fft(attrs(&[1, 1], Padding::Same, &[1, 1], 1));
    let r = conv_case("fft same 3x5", a, &[2, 3, 7, 9], &[4, 3, 3, 5]);
    assert_eq!(r, [true, true]);
    let a = fft(attrs(&[1, 1], ex(&[(0, 2), (1, 0)]), &[1, 1], 1));
    let r = conv_case("fft asymmetric padding", a, &[1, 2, 6, 7], &[3, 2, 3, 2]);
    assert_eq!(r, [true, true]);
    // Where the FFT does not apply (strided, grouped) the direct kernels run.
    let a = fft(attrs(&[2, 2], ex(&[(1, 1), (1, 1)]), &[1, 1], 1));
    let r = conv_case("fft requested, stride 2", a, &[2, 3, 9, 8], &[5, 3, 3, 3]);
    assert_eq!(r, [false, false]);
    let a = fft(attrs(&[1, 1], ex(&[(1, 1), (1, 1)]), &[1, 1], 2));
    let r = conv_case("fft requested, groups 2", a, &[2, 4, 6, 6], &[6, 2, 3, 3]);
    assert_eq!(r, [false, false]);
}

/// Forward convs whose weight is a buffer (a parameter in training), not a host
/// constant: the FFT path computes the kernel's spectrum on the device.
#[test]
fn forward_convs_read_weights_from_buffers() {
    let cases = [
        (
            fft(attrs(&[1], Padding::Causal, &[1], 1)),
            vec![3, 4, 50],
            vec![5, 4, 50],
        ),
        (
            fft(attrs(&[1, 1], Padding::Same, &[1, 1], 1)),
            vec![2, 3, 8, 8],
            vec![4, 3, 3, 3],
        ),
        (
            attrs(&[2, 2], ex(&[(1, 1), (1, 1)]), &[1, 1], 1),
            vec![2, 3, 9, 8],
            vec![5, 3, 3, 3],
        ),
        (
            attrs(&[1, 1], ex(&[(1, 1), (1, 1)]), &[1, 1], 4),
            vec![2, 4, 6, 6],
            vec![4, 1, 3, 3],
        ),
    ];
    for (a, x, w) in cases {
        let what = format!("conv {:?} x {x:?} w {w:?}", a.algo);
        let fft = a.algo == ConvAlgo::Fft;
        let names = agrees(&what, Op::Conv(a), &[x, w], 2e-5);
        let spectrum = names.iter().any(|n| n.starts_with("spectrum"));
        assert_eq!(spectrum, fft, "{what}: spectrum on the device");
    }
}

#[test]
fn linear_backward() {
    agrees(
        "linear to data",
        Op::Train(TrainOp::LinearBackwardData),
        &[vec![3, 10], vec![10, 24]],
        1e-5,
    );
    agrees(
        "linear to filter",
        Op::Train(TrainOp::LinearBackwardFilter),
        &[vec![5, 13], vec![5, 7]],
        1e-5,
    );
}

#[test]
fn lc_fold_forward_and_backward() {
    // A 3×3 basis of J = 6 filters over 4 input channels, folded to Co = 5.
    let (basis, coeff, folded) = (vec![6, 4, 3, 3], vec![5, 6, 1, 1], vec![5, 4, 3, 3]);
    agrees("lc_fold", Op::LcFold, &[basis.clone(), coeff.clone()], 1e-5);
    agrees(
        "lc_fold to basis",
        Op::Train(TrainOp::LcFoldBackwardBasis),
        &[folded.clone(), coeff.clone()],
        1e-5,
    );
    agrees(
        "lc_fold to coefficients",
        Op::Train(TrainOp::LcFoldBackwardCoeff),
        &[folded, basis, coeff],
        1e-5,
    );
    // The bias basis `[J]`.
    agrees(
        "lc_fold of a bias",
        Op::LcFold,
        &[vec![6], vec![5, 6, 1, 1]],
        1e-5,
    );
}

/// The algorithm of a backward conv left on `auto` comes from the cost table: the
/// FFT for FlexTCN's 784-tap causal conv at batch 64, direct for a ResNet 3×3.
#[test]
fn auto_backward_algorithm_follows_the_cost_model() {
    let ran_fft = |a: ConvAttrs, x: &[usize], w: &[usize]| {
        let y = out_shape(&a, x, w);
        let mut uses = Vec::new();
        for (op, shapes) in [
            (
                TrainOp::ConvBackwardData(a.clone()),
                [y.clone(), w.to_vec(), x.to_vec()],
            ),
            (
                TrainOp::ConvBackwardFilter(a.clone()),
                [x.to_vec(), y.clone(), w.to_vec()],
            ),
        ] {
            let g = one_op(Op::Train(op), &shapes);
            let plan = build_plan(&g, &ParamStore::new(), &shapes, targets()[0]).expect("plan");
            uses.push(plan.kernels.iter().any(|k| k.name.starts_with("fft")));
        }
        uses
    };
    let mut a = attrs(&[1], Padding::Causal, &[1], 1);
    a.algo = ConvAlgo::Auto;
    assert_eq!(ran_fft(a, &[64, 32, 784], &[32, 32, 784]), [true, true]);
    let mut a = attrs(&[1, 1], ex(&[(1, 1), (1, 1)]), &[1, 1], 1);
    a.algo = ConvAlgo::Auto;
    assert_eq!(
        ran_fft(a, &[64, 16, 32, 32], &[16, 16, 3, 3]),
        [false, false]
    );
}

/// The best of three runs of `op` over random inputs of `shapes`, in seconds.
fn time(op: Op, shapes: &[Vec<usize>]) -> f64 {
    let g = one_op(op, shapes);
    let target = fnet::opencl::target_for(&ctx().info);
    let plan = build_plan(&g, &ParamStore::new(), shapes, target).expect("plan");
    let exe = Executable::new(ctx(), plan).expect("build");
    let inputs: Vec<Tensor<f32>> = shapes.iter().map(|s| input(s, 1)).collect();
    exe.write_inputs(&inputs).expect("inputs");
    exe.launch().expect("warm-up");
    (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            exe.launch().expect("run");
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Times FlexTCN-6's 784-tap causal convs (30 channels, batch 64) by FFT, forward
/// (spectrum on the device) and backward:
/// `cargo test --test opencl_conv_backward -- --ignored --nocapture flextcn`.
#[test]
#[ignore]
fn flextcn_backward_timing() {
    let a = fft(attrs(&[1], Padding::Causal, &[1], 1));
    let (x, w) = (vec![64, 30, 784], vec![30, 30, 784]);
    let f = time(Op::Conv(a.clone()), &[x.clone(), w.clone()]);
    let d = time(
        Op::Train(TrainOp::ConvBackwardData(a.clone())),
        &[x.clone(), w.clone(), x.clone()],
    );
    let k = time(
        Op::Train(TrainOp::ConvBackwardFilter(a)),
        &[x.clone(), x.clone(), w.clone()],
    );
    println!(
        "FlexTCN 30->30 784 taps batch 64, fft: forward {:.2} ms, to data {:.2} ms, to filter {:.2} ms",
        f * 1e3,
        d * 1e3,
        k * 1e3
    );
}

/// Times the backward convs of ResNet-20 at batch 64 (every conv's backward to filter,
/// every conv's but the first's backward to data) and the forward convs alike:
/// `cargo test --test opencl_conv_backward -- --ignored --nocapture resnet20`.
#[test]
#[ignore]
fn resnet20_backward_timing() {
    let b = 64;
    // (ci, co, input side, stride, count) of ResNet-20's convs.
    let layers = [
        (3, 16, 32, 1, 1),
        (16, 16, 32, 1, 6),
        (16, 32, 32, 2, 1),
        (32, 32, 16, 1, 5),
        (32, 64, 16, 2, 1),
        (64, 64, 8, 1, 5),
    ];
    let (mut fwd, mut data, mut filter) = (0.0, 0.0, 0.0);
    for (i, &(ci, co, side, stride, count)) in layers.iter().enumerate() {
        let a = attrs(&[stride, stride], ex(&[(1, 1), (1, 1)]), &[1, 1], 1);
        let (x, w) = (vec![b, ci, side, side], vec![co, ci, 3, 3]);
        let y = out_shape(&a, &x, &w);
        let f = time(Op::Conv(a.clone()), &[x.clone(), w.clone()]);
        let d = time(
            Op::Train(TrainOp::ConvBackwardData(a.clone())),
            &[y.clone(), w.clone(), x.clone()],
        );
        let k = time(
            Op::Train(TrainOp::ConvBackwardFilter(a)),
            &[x.clone(), y, w.clone()],
        );
        println!(
            "{ci:>3}->{co:<3} {side:>2}x{side:<2} s{stride} ×{count}: forward {:7.2} ms, to data {:7.2} ms, to filter {:7.2} ms",
            f * 1e3,
            d * 1e3,
            k * 1e3
        );
        let c = count as f64;
        fwd += f * c;
        filter += k * c;
        // The first conv reads the image: no gradient to its input.
        data += if i == 0 { 0.0 } else { d * c };
    }
    println!(
        "ResNet-20 batch {b}: forward convs {:.1} ms, backward to data {:.1} ms, to filter {:.1} ms",
        fwd * 1e3,
        data * 1e3,
        filter * 1e3
    );
}
