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
        ..Loss::default()
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
    assert_eq!(out.outputs.len(), 1 + tg.grads.len() + tg.buffers.len());
    // The running-statistic outputs equal what the forward batch norm itself updates.
    let updates = &out.outputs[1 + tg.grads.len()..];
    let names: BTreeSet<&String> = tg.buffers.iter().collect();
    assert_eq!(
        names,
        out.updated_buffers.keys().collect(),
        "every buffer updated"
    );
    for (name, got) in tg.buffers.iter().zip(updates) {
        common::assert_close(name, got, &out.updated_buffers[name], 1e-12);
    }
    let mut directional = 0.0;
    let u: Vec<Vec<f64>> = (0..tg.grads.len())
        .map(|i| noise(out.outputs[1 + i].numel(), seed * 1000 + i as u64))
        .collect();
    for ((name, g), u) in tg.grads.iter().zip(&out.outputs[1..]).zip(&u) {
        assert_eq!(
            g.shape, params[name].shape,
            "grad.{name} has its parameter's shape"
        );
        directional += g.data.iter().zip(u).map(|(a, b)| a * b).sum::<f64>();
    }
    // A step that carries a ReLU or max-pool input across its kink spoils the
    // difference quotient, not the gradient; deep nets have many such inputs, so a
    // smaller step is tried before failing. A wrong gradient matches at no step.
    let mut tried = Vec::new();
    for h in [1e-6, 1e-7, 1e-5] {
        let shifted = |s: f64| {
            let mut p = params.clone();
            for (name, u) in tg.grads.iter().zip(&u) {
                for (v, d) in p.get_mut(name).unwrap().data.iter_mut().zip(u) {
                    *v += s * d;
                }
            }
            p
        };
        let by_differences =
            (loss_of(&tg, &shifted(h), &inputs) - loss_of(&tg, &shifted(-h), &inputs)) / (2.0 * h);
        let scale = directional.abs().max(by_differences.abs());
        assert!(
            scale > 1e-6,
            "degenerate check: directional derivative {directional}"
        );
        let rel = (directional - by_differences).abs() / scale;
        if rel < 1e-6 {
            return tg;
        }
        tried.push(format!(
            "h = {h:e}: {by_differences} (relative error {rel:e})"
        ));
    }
    panic!(
        "⟨grad, u⟩ = {directional}, but central differences give\n{}",
        tried.join("\n")
    );
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
    let tg = check_gradients(&g, 4, 0.0, 15);
    // Two batch norms keep running statistics (the one without does not).
    assert_eq!(
        tg.buffers,
        [
            "bn1.running_mean",
            "bn1.running_var",
            "bn3.running_mean",
            "bn3.running_var"
        ]
    );
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

/// The training graph computes dropout as `x · mask` with one mask drawn per run, so
/// the backward sees the forward's mask; a fixed seed draws the same mask every run.
#[test]
fn dropout_shares_its_mask() {
    let g = program(
        "model a {
           input x: f32[B, 6]
           seed 13
           return x |> linear(8) |> relu |> dropout(p: 0.5) |> linear(3)
         }",
    );
    let tg = check_gradients(&g, 4, 0.0, 24);
    let text = print_graph(&tg.graph);
    assert!(text.contains("dropout_mask("), "{text}");
    assert!(
        !text.contains("= dropout("),
        "the forward dropout is replaced: {text}"
    );
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
    use fnet::passes::{pipeline::default_pipeline, CompileMode, PassContext};
    let path = common::example_path("resnet20_cifar10");
    let (source, m) = fnet::driver::compile_file(&path, &Default::default())
        .unwrap_or_else(|r| panic!("{}", r.render()));
    // The inference pipeline fuses convs with their epilogues: an inference rewrite.
    let mut graph = m.graph.clone();
    let mut ctx = PassContext::new(CompileMode::Inference);
    default_pipeline(CompileMode::Inference)
        .run(&mut graph, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let err = differentiate(&graph, &Loss::default()).expect_err("no rule for inference rewrites");
    assert!(
        err.message.contains("cannot compute gradients through")
            && err.message.contains("inference rewrite"),
        "{}",
        err.message
    );
    let rendered = err.to_diagnostic().render(&source);
    assert!(rendered.contains("resnet20_cifar10.fnet:"), "{rendered}");
    assert!(rendered.contains("help:"), "{rendered}");
}

#[test]
fn bad_losses_are_errors() {
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

    let g = program(
        "model a {
           input labels: f32[B, 4]
           seed 1
           return labels |> linear(3)
         }",
    );
    let err = differentiate(&g, &Loss::default()).expect_err("input name clash");
    assert!(err.message.contains("already has one"), "{}", err.message);
    let smoothing = Loss {
        output: 0,
        label_smoothing: 1.5,
        ..Loss::default()
    };
    let err = differentiate(&g, &smoothing).expect_err("smoothing out of range");
    assert!(
        err.message.contains("label smoothing must be in [0, 1]"),
        "{}",
        err.message
    );
    let second = Loss {
        output: 1,
        label_smoothing: 0.0,
        ..Loss::default()
    };
    let err = differentiate(&g, &second).expect_err("no second output");
    assert!(err.message.contains("has 1 output(s)"), "{}", err.message);
}

#[test]
fn backward_not_needed_is_pruned() {
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

#[test]
fn gelu_shortcut_and_concat() {
    let g = program(
        "model a {
           input x: f32[B, 2, 6, 6]
           seed 10
           block basic(c: int, stride: int = 1) (h) {
             y = h |> conv2d(c, 3, stride: stride, padding: 1, bias: false) |> batchnorm |> relu
             y = y |> conv2d(c, 3, padding: 1, bias: false) |> batchnorm
             return relu(y + shortcut(h, c, stride: stride))
           }
           left = x |> conv2d(1, 1) |> gelu
           right = x |> conv2d(3, 3, padding: 1)
           h = concat(left, right) |> basic(6, stride: 2)
           return h |> global_avg_pool |> linear(3)
         }",
    );
    check_gradients(&g, 3, 0.0, 20);
}

#[test]
fn last_time_step_and_1d_shortcut() {
    let g = program(
        "model a {
           input x: f32[B, 2, 9]
           seed 11
           h = x |> conv1d(4, 3, padding: causal) |> relu
           h = shortcut(h, 6, stride: 2) + (h |> conv1d(6, 3, stride: 2, padding: 1))
           return h |> last |> linear(3)
         }",
    );
    check_gradients(&g, 2, 0.0, 21);
}

/// A small ResNet32-S16U1* stage: shared bases read by several blocks through
/// `basis_conv`, so their gradients sum over every block.
#[test]
fn shared_bases_accumulate_over_blocks() {
    let g = program(
        "model a {
           input x: f32[B, 3, 6, 6]
           seed 12
           basis b1 = shared_basis(channels: 4, shared: 4, unique: 1, sharing: double, ortho: 10)
           block shared_block(b: basis) (h) {
             y = h |> basis_conv(b, 1) |> batchnorm |> relu |> basis_conv(b, 2) |> batchnorm
             return relu(y + h)
           }
           h = x |> conv2d(4, 3, padding: 1, bias: false) |> batchnorm |> relu
           h = h |> repeat 2 shared_block(b1)
           return h |> global_avg_pool |> linear(3)
         }",
    );
    let shared: Vec<String> = g
        .params()
        .filter(|(_, _, r)| *r == ParamRole::Shared)
        .map(|(_, n, _)| n.name.clone())
        .collect();
    assert_eq!(shared.len(), 2, "{shared:?}");
    let tg = check_gradients(&g, 2, 0.0, 22);
    let text = print_graph(&tg.graph);
    // Each shared tensor's gradient is a sum over the two blocks that read it.
    for name in &shared {
        let line = text
            .lines()
            .find(|l| l.ends_with(&format!("# grad.{name}")))
            .unwrap_or_else(|| panic!("no grad.{name} in\n{text}"));
        assert!(line.contains("= add("), "{line}");
    }
}

/// Whole networks at batch 2, every parameter at once: ResNet-20 (option-A shortcuts),
/// ResNet32-S16U1* (shared bases summed over all their blocks) and LC-ResNet-20
/// (frozen bases pass gradients to the 1×1 coefficients and get none).
#[test]
fn whole_networks() {
    for name in [
        "resnet20_cifar10",
        "resnet32_s16u1d_cifar10",
        "resnet20_lc_cifar10",
    ] {
        let m = example_module(name);
        let tg = check_gradients(&m.graph, 2, 0.0, 23);
        let frozen: Vec<String> = m
            .graph
            .params()
            .filter(|(_, _, r)| *r == ParamRole::Frozen)
            .map(|(_, n, _)| n.name.clone())
            .collect();
        assert_eq!(
            frozen.is_empty(),
            !name.contains("lc"),
            "{name}: {frozen:?}"
        );
        assert!(frozen.iter().all(|f| !tg.grads.contains(f)));
    }
}

/// The `autodiff` pass followed by every registered pass, in training mode: the
/// training graph survives them (verified after each) and computes what
/// `differentiate` alone computes.
#[test]
fn the_pass_then_the_pipeline() {
    use fnet::autodiff::Autodiff;
    use fnet::passes::{pipeline::registry, CompileMode, PassContext, PassManager};
    for name in ["lenet_mnist", "resnet20_cifar10"] {
        let m = example_module(name);
        let direct = differentiate(&m.graph, &Loss::default()).unwrap();
        let mut passes: Vec<Box<dyn fnet::passes::Pass>> = vec![Box::new(Autodiff {
            loss: Loss::default(),
        })];
        passes.extend(registry());
        let mut graph = m.graph.clone();
        let mut ctx = PassContext::new(CompileMode::Training);
        ctx.batch = 2;
        PassManager::new(passes)
            .run(&mut graph, &mut ctx, &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            graph.memory.is_some(),
            "{name}: the memory plan covers the training graph"
        );

        let params = perturbed_weights::<f64>(&m.graph, 25);
        let x = random::<f64>(&input_shape(&m.graph, 2), 26);
        let inputs = [x, Tensor::from_vec(vec![2], vec![1.0, 4.0]).unwrap()];
        let a = run(&direct.graph, &params, &inputs, &train_options()).unwrap();
        let b = run(&graph, &params, &inputs, &train_options()).unwrap();
        assert_eq!(a.outputs.len(), b.outputs.len(), "{name}");
        for (i, (x, y)) in a.outputs.iter().zip(&b.outputs).enumerate() {
            let err = x.max_abs_diff(y).unwrap();
            assert!(
                err <= 1e-9 * x.max_abs().max(1.0),
                "{name}: output {i} differs by {err:e}"
            );
        }
    }
}

/// The training graph runs on the interpreter in f32 too, close to f64.
#[test]
fn f32_gradients_match_f64() {
    let m = example_module("lenet_mnist");
    let tg = differentiate(&m.graph, &Loss::default()).unwrap();
    let shape = input_shape(&m.graph, 2);
    let labels = [0.0, 9.0];
    let p64 = perturbed_weights::<f64>(&m.graph, 27);
    let p32 = perturbed_weights::<f32>(&m.graph, 27);
    let in64 = [
        random::<f64>(&shape, 28),
        Tensor::from_vec(vec![2], labels.to_vec()).unwrap(),
    ];
    let in32 = [
        random::<f32>(&shape, 28),
        Tensor::from_vec(vec![2], labels.map(|l| l as f32).to_vec()).unwrap(),
    ];
    let a = run(&tg.graph, &p64, &in64, &train_options()).unwrap();
    let b = run(&tg.graph, &p32, &in32, &train_options()).unwrap();
    for (i, (x, y)) in a.outputs.iter().zip(&b.outputs).enumerate() {
        common::assert_close(&format!("output {i}"), y, x, 1e-4);
    }
}

#[test]
fn labels_that_are_not_class_indices_are_run_errors() {
    let m = example_module("lenet_mnist");
    let tg = differentiate(&m.graph, &Loss::default()).unwrap();
    let params = perturbed_weights::<f64>(&m.graph, 29);
    let x = random::<f64>(&input_shape(&m.graph, 2), 30);
    for (labels, expect) in [([0.0, 2.5], "label 1 is 2.5"), ([10.0, 0.0], "10")] {
        let inputs = [
            x.clone(),
            Tensor::from_vec(vec![2], labels.to_vec()).unwrap(),
        ];
        let err = run(&tg.graph, &params, &inputs, &train_options()).expect_err("bad labels");
        assert!(err.to_string().contains(expect), "{err}");
    }
}

/// The kernel lowering (the OpenCL backend's) plans a training graph in training mode
/// with every trained parameter a device buffer (`tests/opencl_train.rs` runs it).
#[test]
fn the_kernel_lowering_keeps_parameters_as_buffers_in_training() {
    use fnet::kernel_ir::plan::{build_plan_in, Target};
    let m = example_module("lenet_mnist");
    let tg = differentiate(&m.graph, &Loss::default()).unwrap();
    let params = perturbed_weights::<f32>(&m.graph, 31);
    let shapes = vec![input_shape(&m.graph, 2), vec![2]];
    let plan = build_plan_in(&tg.graph, &params, &shapes, Target::cpu(), Mode::Train)
        .unwrap_or_else(|e| panic!("{e}"));
    for name in &tg.grads {
        assert!(plan.params.contains_key(name), "{name} is a device buffer");
    }
    assert_eq!(plan.outputs.len(), 1 + tg.grads.len());
}

/// Gradient descent on the training graph's outputs lowers the loss: a few SGD steps
/// on one fixed LeNet batch.
#[test]
fn sgd_steps_lower_the_loss() {
    let m = example_module("lenet_mnist");
    let tg = differentiate(&m.graph, &Loss::default()).unwrap();
    let mut params = perturbed_weights::<f32>(&m.graph, 32);
    let inputs = [
        random::<f32>(&input_shape(&m.graph, 4), 33),
        Tensor::from_vec(vec![4], vec![0.0, 3.0, 3.0, 8.0]).unwrap(),
    ];
    let mut losses = Vec::new();
    for _ in 0..5 {
        let out = run(&tg.graph, &params, &inputs, &train_options()).unwrap();
        losses.push(out.outputs[0].data[0]);
        for (name, g) in tg.grads.iter().zip(&out.outputs[1..]) {
            for (p, d) in params.get_mut(name).unwrap().data.iter_mut().zip(&g.data) {
                *p -= 0.05 * d;
            }
        }
    }
    assert!(
        losses.windows(2).all(|w| w[1] < w[0]),
        "the loss should fall at every step: {losses:?}"
    );
}

/// `fold-bases` in training mode turns LC layers into `lc_fold` over the parameters:
/// the gradients reach the 1×1 coefficients through the fold, equal the unfolded
/// graph's, and the frozen basis gets none.
#[test]
fn lc_fold_in_training() {
    use fnet::passes::{pipeline::from_names, CompileMode, PassContext};
    let g = program(
        "model a {
           input x: f32[B, 3, 6, 6]
           seed 13
           h = x |> lc(4, 3, expansion: 2, padding: 1) |> relu
           return h |> lc(5, 3, stride: 2, padding: 1) |> relu |> flatten |> linear(3)
         }",
    );
    let mut folded = g.clone();
    let mut ctx = PassContext::new(CompileMode::Training);
    ctx.batch = 2;
    let names: Vec<String> = ["canonicalize", "cse", "dce", "fold-bases"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    from_names(&names)
        .unwrap()
        .run(&mut folded, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let folds = folded
        .g
        .node_indices()
        .filter(|&n| folded.node(n).op.name() == "lc_fold")
        .count();
    assert!(folds >= 2, "both LC layers fold: {folds} lc_fold");

    let tg = check_gradients(&folded, 2, 0.0, 31);
    let frozen: Vec<String> = folded
        .params()
        .filter(|(_, _, r)| *r == ParamRole::Frozen)
        .map(|(_, n, _)| n.name.clone())
        .collect();
    assert_eq!(frozen.len(), 2, "{frozen:?}");
    assert!(frozen.iter().all(|f| !tg.grads.contains(f)), "{frozen:?}");
    assert!(
        print_graph(&tg.graph).contains("lc_fold_backward_coeff"),
        "the coefficients get their gradient through the fold"
    );

    let unfolded = differentiate(&g, &Loss::default()).unwrap();
    assert_eq!(unfolded.grads, tg.grads);
    let params = perturbed_weights::<f64>(&g, 32);
    let x = random::<f64>(&input_shape(&g, 2), 33);
    let inputs = [x, Tensor::from_vec(vec![2], vec![2.0, 0.0]).unwrap()];
    let a = run(&unfolded.graph, &params, &inputs, &train_options()).unwrap();
    let b = run(&tg.graph, &params, &inputs, &train_options()).unwrap();
    for (i, (x, y)) in a.outputs.iter().zip(&b.outputs).enumerate() {
        common::assert_close(&format!("output {i}"), y, x, 1e-12);
    }

    // A trainable basis (as a shared one would be) gets its gradient through the fold.
    let mut trainable = folded.clone();
    let ids: Vec<_> = trainable
        .params()
        .filter(|(_, _, r)| *r == ParamRole::Frozen)
        .map(|(id, _, _)| id)
        .collect();
    for id in ids {
        if let fnet::ir::op::Op::Param { role, .. } = &mut trainable.g[id].op {
            *role = ParamRole::Trainable;
        }
    }
    let tg = check_gradients(&trainable, 2, 0.0, 34);
    assert!(
        frozen.iter().all(|f| tg.grads.contains(f)),
        "{:?}",
        tg.grads
    );
    assert!(print_graph(&tg.graph).contains("lc_fold_backward_basis"));
}

/// Runs the training pipeline's passes up to the autodiff slot (`fuse-mask` makes
/// FlexConv kernels `flex_kernel` ops, `fold-bases` LC folds) on a copy of `g`.
fn up_to_autodiff(g: &Graph, batch: u64) -> Graph {
    use fnet::passes::{pipeline::from_names, CompileMode, PassContext};
    let mut out = g.clone();
    let mut ctx = PassContext::new(CompileMode::Training);
    ctx.batch = batch;
    let names: Vec<String> = [
        "specialize-slots",
        "canonicalize",
        "materialize-frozen",
        "cse",
        "dce",
        "fuse-mask",
        "fold-bases",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    from_names(&names)
        .unwrap()
        .run(&mut out, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

fn count_ops(g: &Graph, name: &str) -> usize {
    g.g.node_indices()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

/// Checks a FlexConv model unfused (the elaborated chain) and fused (`flex_kernel`, as
/// the training pipeline has it before autodiff): every parameter passes the f64
/// check, both forms give the same gradients, and the mask parameters get one.
#[track_caller]
fn check_flexconv(source: &str, batch: usize, seed: u64) {
    let g = program(source);
    assert!(count_ops(&g, "magnet") > 0 && count_ops(&g, "gauss_mask") > 0);
    let unfused = check_gradients(&g, batch, 0.0, seed);
    let fused_graph = up_to_autodiff(&g, batch as u64);
    assert!(
        count_ops(&fused_graph, "flex_kernel") > 0,
        "fuse-mask fused"
    );
    let fused = check_gradients(&fused_graph, batch, 0.0, seed);
    assert_eq!(unfused.grads, fused.grads);
    let params = perturbed_weights::<f64>(&g, seed + 5);
    let x = random::<f64>(&input_shape(&g, batch), seed + 6);
    let labels = (0..batch).map(|i| (i % 2) as f64).collect();
    let inputs = [x, Tensor::from_vec(vec![batch], labels).unwrap()];
    let a = run(&unfused.graph, &params, &inputs, &train_options()).unwrap();
    let b = run(&fused.graph, &params, &inputs, &train_options()).unwrap();
    for (i, (x, y)) in a.outputs.iter().zip(&b.outputs).enumerate() {
        common::assert_close(&format!("output {i}"), y, x, 1e-10);
    }
    // Only the layers' forward kernels are reported, not the MAGNet the backward recomputes.
    assert_eq!(a.kernel_sizes, b.kernel_sizes);
    assert!(
        a.kernel_sizes.keys().all(|l| !l.contains(".grad")),
        "{:?}",
        a.kernel_sizes.keys()
    );
    let mask = unfused
        .grads
        .iter()
        .position(|n| n.ends_with("mask_params"))
        .expect("the mask parameters get a gradient");
    assert!(
        a.outputs[1 + mask].max_abs() > 1e-8,
        "a non-zero mask gradient"
    );
}

/// FlexConv in 2D: MAGNet's linears, Gabor frequencies, phases, centres and γ scales,
/// and the Gaussian mask's mean and sigma (wide enough that the crop keeps the grid).
#[test]
fn flexconv_2d() {
    check_flexconv(
        "model f {
           input x: f32[B, 2, 8, 8]
           seed 5
           h = x |> flexconv(4, horizon: 9, kernel: magnet(hidden: 8, layers: 2),
                             mask: gauss(sigma: 0.5, threshold: 0.1)) |> relu
           return h |> global_avg_pool |> linear(3)
         }",
        2,
        41,
    );
}

/// A causal 1D FlexConv whose mask crops the kernel (the crop is a constant of the
/// step: no gradient flows through it).
#[test]
fn flexconv_causal_1d() {
    check_flexconv(
        "model f {
           input x: f32[B, 2, 12]
           seed 6
           h = x |> flexconv(3, horizon: same, causal: true,
                             kernel: magnet(hidden: 6, layers: 1),
                             mask: gauss(sigma: 0.3, threshold: 0.1)) |> relu
           return h |> last |> linear(2)
         }",
        2,
        43,
    );
}

/// A reduced-width FlexNet (FlexNet-7's blocks: two FlexConvs with batch norm, ReLU
/// and dropout, a projection shortcut; widths 4 and 6 on 8×8, horizon 9) at batch 2,
/// every parameter at once, as the training pipeline has it before autodiff
/// (`flex_kernel`). FlexNet-7 itself takes about 90 s here in the test profile, and at
/// its size the ReLU kinks spoil the difference quotient (relative 1e-4).
#[test]
fn reduced_flexnet() {
    let g = program(
        "model flexnet_small {
           input x: f32[B, 3, 8, 8]
           seed 0
           def flex(c) = flexconv(c, horizon: 9,
                                  kernel: magnet(hidden: 6, layers: 2, input_scale: 6.4),
                                  mask: gauss(sigma: 0.3, threshold: 0.1))
           block res(c: int, p: float = 0.2) (h) {
             y = h |> flex(c) |> batchnorm |> relu |> dropout(p) |> flex(c) |> batchnorm
             return relu(y + shortcut(h, c, kind: projection, bias: true))
           }
           h = x |> flex(4) |> batchnorm |> relu
           h = h |> res(4) |> res(6)
           return h |> global_avg_pool |> linear(3, init: kaiming_normal)
         }",
    );
    let g = up_to_autodiff(&g, 2);
    assert_eq!(count_ops(&g, "flex_kernel"), 5);
    let tg = check_gradients(&g, 2, 0.0, 47);
    let masks = tg.grads.iter().filter(|n| n.ends_with("mask_params"));
    assert_eq!(masks.count(), 5);
}
