// The body of tests/opencl_train_conv.rs and tests/jit_train_conv.rs: each brings
// `backend()`, `example`, `input` and `program` into scope and includes this file.

use common::{assert_close, input_shape, noise, perturbed_weights};
use fnet::autodiff::{differentiate, Loss};
use fnet::backend::{Backend, Prepared, ReferenceBackend};
use fnet::ir::graph::Graph;
use fnet::runtime::{Mode, ParamStore};
use fnet::tensor::Tensor;

/// Labels in `0..classes` for `batch` samples.
fn labels(batch: usize, classes: usize, seed: u64) -> Tensor<f32> {
    let data = noise(batch, seed)
        .iter()
        .map(|r| ((r.abs() * classes as f64) as usize).min(classes - 1) as f32)
        .collect();
    Tensor::from_vec(vec![batch], data).expect("shape")
}

/// One training step of `graph` on both backends; the loss and every gradient agree.
/// Returns the number of gradients compared.
#[track_caller]
fn train_step_agrees(graph: &Graph, batch: usize, seed: u64, rel: f64) -> usize {
    let loss = Loss {
        output: 0,
        label_smoothing: 0.1,
        ..Loss::default()
    };
    let tg = differentiate(graph, &loss).unwrap_or_else(|e| panic!("{e}"));
    let params: ParamStore<f32> = perturbed_weights(graph, seed);
    let classes = graph.node(graph.outputs[0]).ty.shape[1].known().unwrap() as usize;
    let x = input(&input_shape(graph, batch), seed + 1);
    let inputs = vec![x, labels(batch, classes, seed + 2)];
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let mut backends: Vec<Box<dyn Prepared<f32>>> = vec![
        ReferenceBackend
            .prepare(tg.graph.clone(), params.clone(), &shapes)
            .unwrap_or_else(|e| panic!("{e}")),
        Box::new(
            backend()
                .prepare_plan(&tg.graph, &params, &shapes)
                .unwrap_or_else(|e| panic!("{e}")),
        ),
    ];
    let mut outs = Vec::new();
    for b in &mut backends {
        b.set_mode(Mode::Train).unwrap_or_else(|e| panic!("{e}"));
        b.set_seed(seed + 3).unwrap_or_else(|e| panic!("{e}"));
        outs.push(b.forward(&inputs).unwrap_or_else(|e| panic!("{e}")));
    }
    let names: Vec<String> = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|g| format!("grad.{g}")))
        .chain(tg.buffers.iter().map(|b| format!("update.{b}")))
        .collect();
    assert_eq!(outs[1].len(), names.len());
    for ((name, want), got) in names.iter().zip(&outs[0]).zip(&outs[1]) {
        assert!(got.data.iter().all(|v| v.is_finite()), "{name}: {got:?}");
        assert_close(name, got, want, rel);
    }
    tg.grads.len()
}

#[test]
fn strided_dilated_grouped_convs_with_bias() {
    let m = program(
        "model t {
           input x: f32[B, 4, 9, 8]
           seed 5
           h = x |> conv2d(6, 3, stride: 2, padding: 2, dilation: 2, groups: 2) |> relu
           h = h |> conv2d(6, 3, padding: 1, groups: 6) |> batchnorm |> relu
           h = h |> conv2d(4, [2, 3], stride: [1, 2], padding: same, bias: false)
           return h |> global_avg_pool |> linear(3)
         }",
    );
    train_step_agrees(&m.graph, 2, 21, 1e-4);
}

#[test]
fn causal_fft_and_strided_conv1d() {
    let m = program(
        "model t {
           input x: f32[B, 2, 40]
           seed 9
           h = x |> conv1d(4, 3, padding: causal, dilation: 2) |> relu
           h = h |> conv1d(4, 33, padding: causal, algo: fft) |> relu
           h = h |> conv1d(3, 3, stride: 2, padding: 1) |> batchnorm |> relu
           return h |> last |> linear(3)
         }",
    );
    train_step_agrees(&m.graph, 3, 22, 1e-4);
}

#[test]
fn lenet_trains() {
    let n = train_step_agrees(&example("lenet_mnist.fnet").graph, 2, 23, 1e-4);
    assert!(n >= 8, "{n} gradients");
}

#[test]
fn resnet20_trains() {
    train_step_agrees(&example("resnet20_cifar10.fnet").graph, 2, 24, 1e-4);
}

#[test]
fn lc_resnet20_trains() {
    train_step_agrees(&example("resnet20_lc_cifar10.fnet").graph, 2, 25, 1e-4);
}

#[test]
fn shared_basis_resnet32_trains() {
    train_step_agrees(&example("resnet32_s16u1d_cifar10.fnet").graph, 2, 26, 1e-4);
}

#[test]
fn slots_supernet_trains() {
    train_step_agrees(&example("resnet20_slots_cifar10.fnet").graph, 2, 27, 1e-4);
}

/// Times one ResNet-20 training step (forward, loss, backward) at batch 64 on the including file's backend:
/// `cargo test --test opencl_train_conv -- --ignored --nocapture step_timing`.
#[test]
#[ignore]
fn resnet20_step_timing() {
    let graph = example("resnet20_cifar10.fnet").graph;
    let loss = Loss {
        output: 0,
        label_smoothing: 0.0,
        ..Loss::default()
    };
    let tg = differentiate(&graph, &loss).unwrap_or_else(|e| panic!("{e}"));
    let params: ParamStore<f32> = perturbed_weights(&graph, 1);
    let inputs = vec![input(&[64, 3, 32, 32], 2), labels(64, 10, 3)];
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let mut p = backend()
        .prepare_plan(&tg.graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    p.set_mode(Mode::Train).unwrap_or_else(|e| panic!("{e}"));
    p.forward(&inputs).expect("warm-up");
    let best = (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            p.forward(&inputs).expect("step");
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    println!("ResNet-20 training step, batch 64: {:.1} ms", best * 1e3);
}
