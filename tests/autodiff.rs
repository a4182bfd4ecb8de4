//! The autodiff pass on whole graphs, checked in f64 against central differences of
//! the loss: for a random direction `u` over every trainable parameter,
//! `(L(θ + h·u) − L(θ − h·u)) / 2h` must equal `Σ_p ⟨grad_p, u_p⟩` (the training
//! graph's gradient outputs) to a relative 1e-6. Every graph runs in training mode, so
//! batch norm uses batch statistics in the forward and the backward alike.

mod common;

use common::{example_module, input_shape, noise, perturbed_weights, program, random};
use fnet::autodiff::{differentiate, Loss, TrainingGraph};
use fnet::ir::graph::Graph;
use fnet::ir::op::ParamRole;
use fnet::ir::print::print_graph;
use fnet::runtime::{run, Mode, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use std::collections::BTreeSet;

fn train_options() -> RunOptions {
    RunOptions {
        mode: Mode::Train,
        ..RunOptions::default()
    }
}

fn loss_of(tg: &TrainingGraph, params: &ParamStore<f64>, inputs: &[Tensor<f64>]) -> f64 {
    let r = run(&tg.graph, params, inputs, &train_options()).unwrap_or_else(|e| panic!("{e}"));
    r.outputs[0].data[0]
}

/// Differentiates `graph` and checks every parameter gradient along one random
/// direction; returns the training graph.
#[track_caller]
fn check_gradients(graph: &Graph, batch: usize, smoothing: f64, seed: u64) -> TrainingGraph {
    let loss = Loss {
        output: 0,
        label_smoothing: smoothing,
    };
    let tg = differentiate(graph, &loss).unwrap_or_else(|e| panic!("{e}"));
    let trainable: BTreeSet<String> = graph
        .params()
        .filter(|(_, _, r)| matches!(r, ParamRole::Trainable | ParamRole::Shared))
        .map(|(_, n, _)| n.name.clone())
        .collect();
    let got: BTreeSet<String> = tg.grads.iter().cloned().collect();
    assert_eq!(got, trainable, "one gradient per trainable parameter");

    let params = perturbed_weights::<f64>(graph, seed);
    let classes = graph.node(graph.outputs[0]).ty.shape[1].known().unwrap() as usize;
    let x = random::<f64>(&input_shape(graph, batch), seed + 1);
    let labels: Vec<f64> = noise(batch, seed + 2)
        .iter()
        .map(|r| ((r.abs() * classes as f64) as usize).min(classes - 1) as f64)
        .collect();
    let inputs = [x, Tensor::from_vec(vec![batch], labels).unwrap()];

    let out = run(&tg.graph, &params, &inputs, &train_options()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.outputs.len(), 1 + tg.grads.len());
    let mut directional = 0.0;
    let mut plus = params.clone();
    let mut minus = params.clone();
    let h = 1e-6;
    for (i, (name, g)) in tg.grads.iter().zip(&out.outputs[1..]).enumerate() {
        assert_eq!(
            g.shape, params[name].shape,
            "grad.{name} has its parameter's shape"
        );
        let u = noise(g.numel(), seed * 1000 + i as u64);
        directional += g.data.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>();
        for ((p, m), d) in plus
            .get_mut(name)
            .unwrap()
            .data
            .iter_mut()
            .zip(&mut minus.get_mut(name).unwrap().data)
            .zip(&u)
        {
            *p += h * d;
            *m -= h * d;
        }
    }
    let by_differences = (loss_of(&tg, &plus, &inputs) - loss_of(&tg, &minus, &inputs)) / (2.0 * h);
    let scale = directional.abs().max(by_differences.abs());
    assert!(
        scale > 1e-6,
        "degenerate check: directional derivative {directional}"
    );
    let rel = (directional - by_differences).abs() / scale;
    assert!(
        rel < 1e-6,
        "⟨grad, u⟩ = {directional}, central differences {by_differences}, relative error {rel:e}"
    );
    tg
}

#[test]
fn conv_relu_linear() {
    let g = program(
        "model a {
           input x: f32[B, 2, 6, 6]
           seed 3
           return x |> conv2d(3, 3, padding: 1) |> relu |> flatten |> linear(5) |> relu |> linear(4)
         }",
    );
    check_gradients(&g, 3, 0.0, 11);
}

#[test]
fn label_smoothing() {
    let g = program(
        "model a {
           input x: f32[B, 2, 5, 5]
           seed 4
           return x |> conv2d(3, 3) |> relu |> flatten |> linear(4)
         }",
    );
    check_gradients(&g, 3, 0.1, 12);
}

#[test]
fn strided_dilated_grouped_convs() {
    let g = program(
        "model a {
           input x: f32[B, 4, 9, 8]
           seed 5
           h = x |> conv2d(6, 3, stride: 2, padding: 2, dilation: 2, groups: 2) |> relu
           h = h |> conv2d(4, [2, 3], stride: [1, 2], padding: same, bias: false)
           return h |> global_avg_pool |> linear(3)
         }",
    );
    check_gradients(&g, 2, 0.0, 13);
}

#[test]
fn pooling() {
    let g = program(
        "model a {
           input x: f32[B, 2, 8, 8]
           seed 6
           h = x |> conv2d(3, 3, padding: 1) |> maxpool(2)
           h = h |> avgpool(3, stride: 2, padding: 1) |> relu
           return h |> flatten |> linear(3)
         }",
    );
    check_gradients(&g, 2, 0.0, 14);
}

#[test]
fn batchnorm_in_training_mode() {
    let g = program(
        "model a {
           input x: f32[B, 2, 5, 5]
           seed 7
           h = x |> conv2d(4, 3, padding: 1, bias: false) |> batchnorm |> relu
           h = h |> conv2d(3, 3) |> batchnorm(affine: false, running_stats: false)
           return h |> flatten |> linear(8) |> batchnorm |> relu |> linear(3)
         }",
    );
    check_gradients(&g, 4, 0.0, 15);
}

#[test]
fn residual_branches_accumulate() {
    let g = program(
        "model a {
           input x: f32[B, 3, 6, 6]
           seed 8
           block res() (h) {
             y = h |> conv2d(3, 3, padding: 1) |> relu |> conv2d(3, 3, padding: 1)
             return relu(y + h)
           }
           h = x |> conv2d(3, 1) |> relu
           h = h |> repeat 2 res()
           return (h * h) |> global_avg_pool |> linear(4)
         }",
    );
    check_gradients(&g, 2, 0.0, 16);
}

#[test]
fn causal_and_strided_conv1d() {
    let g = program(
        "model a {
           input x: f32[B, 2, 12]
           seed 9
           h = x |> conv1d(4, 3, padding: causal, dilation: 2) |> relu
           h = h |> conv1d(4, 4, padding: causal, algo: fft) |> relu
           h = h |> conv1d(3, 3, stride: 2, padding: 1) |> maxpool(2)
           return h |> global_avg_pool |> linear(3)
         }",
    );
    check_gradients(&g, 2, 0.0, 17);
}

#[test]
fn lenet_all_parameters() {
    let m = example_module("lenet_mnist");
    let tg = check_gradients(&m.graph, 2, 0.0, 18);
    assert_eq!(tg.grads.len(), 10, "5 layers × (weight, bias)");
}

#[test]
fn lenet_training_graph() {
    let m = example_module("lenet_mnist");
    let tg = differentiate(&m.graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
    tg.graph.verify().unwrap();
    insta::assert_snapshot!(print_graph(&tg.graph));
}

#[test]
fn an_op_without_a_rule_is_an_error_at_its_layer() {
    let path = common::example_path("flextcn6_smnist");
    let (source, m) = fnet::driver::compile_file(&path, &Default::default())
        .unwrap_or_else(|r| panic!("{}", r.render()));
    let err = differentiate(&m.graph, &Loss::default()).expect_err("no FlexConv rule yet");
    assert!(
        err.message.contains("cannot compute gradients through"),
        "{}",
        err.message
    );
    let rendered = err.to_diagnostic().render(&source);
    assert!(rendered.contains("flextcn6_smnist.fnet:"), "{rendered}");
    assert!(rendered.contains("help:"), "{rendered}");

    let dropout = program(
        "model a {
           input x: f32[B, 4]
           seed 1
           return x |> linear(4) |> dropout(p: 0.5) |> linear(2) as head
         }",
    );
    let err = differentiate(&dropout, &Loss::default()).expect_err("no dropout rule yet");
    assert!(err.message.contains("dropout"), "{}", err.message);
}

#[test]
fn a_loss_on_a_non_classifier_output_is_an_error() {
    let g = program(
        "model a {
           input x: f32[B, 2, 5, 5]
           seed 1
           return x |> conv2d(3, 3)
         }",
    );
    let err = differentiate(&g, &Loss::default()).expect_err("rank-4 output");
    assert!(
        err.message.contains("classifier output [B, K]"),
        "{}",
        err.message
    );
    assert_eq!(err.layer, "conv1");
}

#[test]
fn frozen_inputs_and_unused_branches_are_pruned() {
    // Only the classifier's path is differentiated: the second output's layer gets no
    // backward, and the graph keeps nothing that the loss and gradients do not need.
    let g = program(
        "model a {
           input x: f32[B, 3]
           seed 2
           return x |> linear(3) |> relu |> linear(2)
         }",
    );
    let tg = check_gradients(&g, 3, 0.0, 19);
    let text = print_graph(&tg.graph);
    // The input needs no gradient, so the first layer's backward to its input is pruned.
    assert!(!text.contains("linear1.grad_input"), "{text}");
    assert!(text.contains("linear2.grad_input"), "{text}");
}
