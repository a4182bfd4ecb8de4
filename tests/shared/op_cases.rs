// The op and example cases of tests/opencl.rs and tests/jit.rs: each brings its
// backend's `agree` (and `example`, `input`, `program`, `weights`) into scope and
// includes this file.

fn check_op(body: &str, shape: &[usize]) {
    let dims = match shape.len() {
        3 => "[B, C, L]"
            .replace('C', &shape[1].to_string())
            .replace('L', &shape[2].to_string()),
        _ => format!("[B, {}, {}, {}]", shape[1], shape[2], shape[3]),
    };
    let src = format!("model t {{\n  input x: f32{dims}\n  {body}\n}}");
    let m = program(&src);
    let store = weights(&m, 7);
    agree(&src, &m, &store, input(shape, 3));
}

#[test]
fn conv2d_variants_match_the_reference() {
    for (body, shape) in [
        ("return x |> conv2d(5, 3, padding: 1)", &[2, 3, 9, 7][..]),
        ("return x |> conv2d(4, 3, padding: 1)", &[1, 4, 8, 16]),
        (
            "return x |> conv2d(6, [3, 5], stride: 2, padding: [1, 2])",
            &[2, 3, 9, 7],
        ),
        (
            "return x |> conv2d(4, 3, dilation: 2, padding: 2, bias: false)",
            &[1, 2, 11, 13],
        ),
        ("return x |> conv2d(9, 1)", &[2, 5, 6, 6]),
        ("return x |> conv2d(3, 5)", &[2, 2, 12, 12]),
        (
            "return x |> conv2d(8, 3, stride: 2, padding: same)",
            &[2, 3, 15, 15],
        ),
    ] {
        check_op(body, shape);
    }
}

#[test]
fn fused_conv_epilogues_match_the_reference() {
    for (body, shape) in [
        (
            "return x |> conv2d(16, 3, padding: 1) |> batchnorm |> relu",
            &[2, 8, 16, 16][..],
        ),
        (
            "return x |> conv2d(6, 3, padding: 1, bias: true) |> batchnorm",
            &[2, 3, 10, 9],
        ),
        (
            "h = x |> conv2d(8, 3, padding: 1, bias: false) |> batchnorm\n  return relu(h + x)",
            &[2, 8, 10, 10],
        ),
        (
            "h = x |> conv2d(5, 3, padding: 1) |> relu\n  return h + x",
            &[2, 5, 7, 7],
        ),
        (
            "p = x |> conv2d(4, 3, padding: 1)\n  q = x |> conv2d(4, 1)\n  return relu(p + q)",
            &[1, 3, 6, 11],
        ),
    ] {
        check_op(body, shape);
    }
}

#[test]
fn conv1d_variants_match_the_reference() {
    for (body, shape) in [
        (
            "return x |> conv1d(8, 3, stride: 2, padding: 1) |> relu",
            &[2, 3, 37][..],
        ),
        (
            "return x |> conv1d(5, 5, padding: causal, dilation: 2)",
            &[2, 3, 50],
        ),
        (
            "return x |> conv1d(4, 9, padding: causal) |> last",
            &[3, 2, 21],
        ),
        (
            "return x |> conv1d(6, 3, padding: same) |> batchnorm |> relu",
            &[2, 4, 16],
        ),
    ] {
        check_op(body, shape);
    }
}

#[test]
fn pools_and_layout_ops_match_the_reference() {
    for (body, shape) in [
        ("return x |> maxpool(2)", &[2, 3, 9, 8][..]),
        (
            "return x |> avgpool(3, stride: 2, padding: 1)",
            &[2, 3, 9, 9],
        ),
        ("return x |> maxpool(3, stride: 2, padding: 1)", &[2, 3, 20]),
        ("return x |> global_avg_pool |> linear(5)", &[3, 6, 5, 5]),
        ("return x |> global_avg_pool", &[2, 3, 4, 4]),
        (
            "return x |> flatten |> linear(7, bias: false)",
            &[2, 3, 4, 5],
        ),
        ("return x |> batchnorm", &[2, 3, 5, 5]),
        (
            "return x |> batchnorm(running_stats: false) |> relu",
            &[3, 5, 7, 9],
        ),
        (
            "return x |> batchnorm(running_stats: false, affine: false)",
            &[2, 3, 11],
        ),
        ("return x |> batchnorm(affine: false) |> relu", &[2, 3, 6]),
        ("return x |> gelu", &[2, 3, 5, 5]),
        ("return x |> dropout(0.3) |> relu", &[2, 3, 4, 4]),
        ("h = x |> relu\n  return h |> mul(x)", &[2, 3, 4, 4]),
        ("h = x |> relu\n  return h + x", &[2, 3, 3, 3]),
        ("return x |> shortcut(8, stride: 2)", &[2, 4, 9, 9]),
        ("return x |> shortcut(6, stride: 2)", &[2, 2, 15]),
        ("return concat(x |> conv2d(3, 1), x)", &[2, 2, 5, 5]),
        ("return x |> last", &[2, 3, 10]),
    ] {
        check_op(body, shape);
    }
}

#[test]
fn examples_match_the_reference() {
    for (file, shape) in [
        ("lenet_mnist.fnet", vec![3, 1, 28, 28]),
        ("resnet20_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet20_lc_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet32_s16u1d_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet20_slots_cifar10.fnet", vec![2, 3, 32, 32]),
    ] {
        let m = example(file);
        let store = weights(&m, 3);
        agree(file, &m, &store, input(&shape, 1));
    }
}

/// FlexConv models: the kernel nets, masks and crops are evaluated once on the host
/// when the plan is made; the convs (up to 33×33 and 784 taps) run on the device.
#[test]
fn flexconv_examples_match_the_reference() {
    for (file, shape) in [
        ("flextcn6_smnist.fnet", vec![1, 1, 784]),
        ("flexnet7_cifar10.fnet", vec![1, 3, 32, 32]),
    ] {
        let m = example(file);
        let store = weights(&m, 3);
        agree(file, &m, &store, input(&shape, 1));
    }
}

