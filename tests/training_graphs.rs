//! The training pipeline (`CompileMode::Training`: the forward rewrites, autodiff,
//! then `choose-conv-algo`, `fuse-epilogue` and `memory-plan` over the forward and
//! backward graph) on every example:
//! - each pass after autodiff keeps the loss, every gradient and every running
//!   statistic update equal to the graph autodiff left, and the whole pipeline keeps
//!   them equal to the unoptimised training graph (autodiff of the elaborated model),
//!   on the interpreter in f64 in training mode;
//! - the memory plan covers the whole step: a value a backward op reads lives until
//!   that op;
//! - each example's training graph has an insta snapshot.

mod common;

use common::{assert_close, example_module, noise, perturbed_weights, random, EXAMPLES};
use fnet::autodiff::{differentiate, TrainingGraph};
use fnet::eval::Module;
use fnet::ir::graph::Graph;
use fnet::ir::op::{Op, ParamRole, TrainOp};
use fnet::ir::print::print_graph;
use fnet::ir::types::DType;
use fnet::passes::memory_plan::{plan, planned_peak_bytes};
use fnet::passes::pipeline::{default_pipeline, pipeline_for, training_loss};
use fnet::passes::{CompileMode, PassContext, PassManager};
use fnet::runtime::params::initialise_param;
use fnet::runtime::{run, Mode, ParamStore, RunOptions};
use fnet::tensor::Tensor;

const BATCH: usize = 2;

fn context() -> PassContext {
    let mut ctx = PassContext::new(CompileMode::Training);
    ctx.batch = BATCH as u64;
    ctx.precision = DType::F64;
    ctx
}

/// The training pipeline of `m`, run up to and including autodiff; returns that graph
/// and the passes that follow it.
fn through_autodiff(m: &Module) -> (Graph, PassManager) {
    let mut pm = pipeline_for(CompileMode::Training, m.recipe.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", m.graph.name));
    let at = pm
        .names()
        .iter()
        .position(|&p| p == "autodiff")
        .expect("autodiff");
    let after = PassManager::new(pm.passes.split_off(at + 1));
    let mut g = m.graph.clone();
    pm.run(&mut g, &mut context(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", m.graph.name));
    (g, after)
}

/// Dropout masks are drawn per topological step, which the passes renumber; with
/// `p = 0` every mask is ones, so the comparison sees the passes and not the draw.
fn without_dropout(g: &mut Graph) {
    let ids: Vec<_> = g.node_ids().collect();
    for n in ids {
        let op = match g.node(n).op {
            Op::Train(TrainOp::DropoutMask { .. }) => Op::Train(TrainOp::DropoutMask { p: 0.0 }),
            Op::Dropout { .. } => Op::Dropout { p: 0.0 },
            _ => continue,
        };
        g.replace_op(n, op).expect("same types");
    }
}

struct Step {
    params: ParamStore<f64>,
    inputs: Vec<Tensor<f64>>,
}

fn step(m: &Module) -> Step {
    let g = &m.graph;
    let out = &g.node(g.outputs[0]).ty;
    let classes = out.shape[1].known().expect("classes") as usize;
    let x = random::<f64>(&common::input_shape(g, BATCH), 5);
    let labels = noise(BATCH, 6)
        .iter()
        .map(|r| ((r.abs() * classes as f64) as usize).min(classes - 1) as f64)
        .collect();
    let mut params = perturbed_weights::<f64>(g, 4);
    // Frozen tensors as `materialize-frozen` makes them constants (seeded in f32), so
    // the unoptimised graph, which reads them as parameters, computes the same model.
    for (_, node, role) in g.params() {
        if role == ParamRole::Frozen {
            let v = initialise_param::<f32>(g, g.seed, &node.name).expect("init");
            params.insert(node.name.clone(), v.to_f64());
        }
    }
    Step {
        params,
        inputs: vec![x, Tensor::from_vec(vec![BATCH], labels).expect("labels")],
    }
}

/// Loss, gradients and updates by output name.
fn outputs(g: &Graph, s: &Step) -> Vec<(String, Tensor<f64>)> {
    let options = RunOptions {
        mode: Mode::Train,
        ..RunOptions::default()
    };
    let r = run(g, &s.params, &s.inputs, &options).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    let names = g.outputs.iter().map(|&o| g.node(o).name.clone());
    names.zip(r.outputs).collect()
}

#[track_caller]
fn assert_same(what: &str, got: &[(String, Tensor<f64>)], want: &[(String, Tensor<f64>)]) {
    let names = |o: &[(String, Tensor<f64>)]| o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: outputs");
    for ((name, g), (_, w)) in got.iter().zip(want) {
        assert_close(&format!("{what}: {name}"), g, w, 1e-10);
    }
}

/// FlexNet and FlexTCN in miniature: the FlexConv chain (MAGNet, mask, crop), batch
/// norm, dropout, and a projection shortcut that `fuse-epilogue` fuses with its add,
/// small enough to run in f64 in seconds (the full examples take minutes each: see
/// `passes_keep_the_gradients_of_the_flexconv_examples`).
const MINI_FLEXNET: &str = "model miniflexnet {
  input x: f32[B, 2, 8, 8]
  seed 3
  def flex(c) = flexconv(c, horizon: 9, kernel: magnet(hidden: 8, layers: 2),
                         mask: gauss(sigma: 0.3, threshold: 0.1))
  block res(c: int) (h) {
    y = h |> flex(c) |> batchnorm |> relu |> dropout(0.2) |> flex(c) |> batchnorm
    return relu(y + shortcut(h, c, kind: projection, bias: true))
  }
  h = x |> flex(3) |> batchnorm |> relu |> res(4) |> res(4)
  return h |> global_avg_pool |> linear(3)
}";

const MINI_FLEXTCN: &str = "model miniflextcn {
  input x: f32[B, 1, 32]
  seed 4
  def flex(c) = flexconv(c, horizon: same, causal: true, kernel: magnet(hidden: 8, layers: 2),
                         mask: gauss(sigma: 0.3, threshold: 0.1))
  block tcn(c: int) (h) {
    y = h |> flex(c) |> batchnorm |> relu |> dropout(0.1)
    return relu(y + shortcut(h, c, kind: projection, bias: true))
  }
  h = x |> repeat 2 tcn(4)
  return h |> last |> linear(3)
}";

fn mini(text: &str) -> Module {
    fnet::driver::compile_str("mini.fnet", text, &fnet::eval::Options::default())
        .unwrap_or_else(|r| panic!("{}", r.render()))
        .1
}

/// The full FlexConv examples, which take minutes each in f64 on the interpreter.
const SLOW: [&str; 2] = ["flexnet7_cifar10", "flextcn6_smnist"];

#[test]
fn passes_after_autodiff_keep_every_gradient() {
    for name in EXAMPLES.iter().filter(|n| !SLOW.contains(n)) {
        check_passes(name, &example_module(name));
    }
    let mut fused = 0;
    for m in [mini(MINI_FLEXNET), mini(MINI_FLEXTCN)] {
        fused += check_passes(&m.graph.name.clone(), &m);
    }
    assert!(fused >= 2, "the shortcuts fuse with their adds: {fused}");
}

/// About ten minutes on a loaded 2-core machine.
#[test]
#[ignore = "minutes: run with --include-ignored"]
fn passes_keep_the_gradients_of_the_flexconv_examples() {
    for name in SLOW {
        check_passes(name, &example_module(name));
    }
}

/// Runs the passes after autodiff one by one on `m`'s training graph and checks every
/// output after each against the graph autodiff left, and that graph against the
/// unoptimised one; returns how many convs `fuse-epilogue` fused.
fn check_passes(name: &str, m: &Module) -> usize {
    let mut fused = 0;
    {
        let s = step(m);
        let (mut g, after) = through_autodiff(m);
        without_dropout(&mut g);
        let tg = TrainingGraph::of(g.clone()).expect("a training graph's outputs");
        assert!(!tg.grads.is_empty(), "{name}: gradients");
        let want = outputs(&g, &s);

        // The unoptimised training graph: autodiff of the elaborated model.
        let loss = training_loss(m.recipe.as_ref()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut raw = differentiate(&m.graph, &loss)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .graph;
        without_dropout(&mut raw);
        assert_same(&format!("{name} vs unoptimised"), &want, &outputs(&raw, &s));

        let mut ctx = context();
        for pass in after.passes {
            let pass_name = pass.name();
            let before = print_graph(&g);
            PassManager::new(vec![pass])
                .run(&mut g, &mut ctx, &mut |_| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // The printed graph without the memory summary and the cost notes: what a
            // run computes.
            let body = |t: &str| {
                let ops = t.lines().filter(|l| !l.contains("memory batch="));
                ops.map(|l| l.split("  # ").next().unwrap_or(l))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if pass_name == "memory-plan" {
                // It annotates and rewrites nothing.
                assert_eq!(body(&print_graph(&g)), body(&before), "{name}: memory-plan");
                assert!(g.memory.is_some(), "{name}: a memory summary");
                continue;
            }
            if body(&print_graph(&g)) == body(&before) {
                continue; // the same computation: nothing to run again
            }
            if pass_name == "fuse-epilogue" {
                let is_fused = |op: &Op| matches!(op, Op::FusedConv { .. });
                fused += g.g.node_weights().filter(|n| is_fused(&n.op)).count();
            }
            let got = outputs(&g, &s);
            assert_same(&format!("{name} after {pass_name}"), &got, &want);
        }
    }
    fused
}

/// The step at which each value is computed, by node name.
fn steps(g: &Graph) -> std::collections::BTreeMap<String, usize> {
    let order = g.topo_order().expect("acyclic");
    order
        .iter()
        .enumerate()
        .map(|(i, &n)| (g.node(n).name.clone(), i))
        .collect()
}

#[test]
fn the_memory_plan_keeps_what_the_backward_reads_alive() {
    let m = example_module("lenet_mnist");
    let mut g = m.graph.clone();
    pipeline_for(CompileMode::Training, m.recipe.as_ref())
        .expect("the recipe's loss")
        .run(&mut g, &mut context(), &mut |_| {})
        .expect("compiles");
    let p = plan(&g, 8);
    let at = steps(&g);
    let order = g.topo_order().expect("acyclic");
    // Every ReLU's input lives until its `relu_backward`, which reads it.
    let mut checked = 0;
    for &n in &order {
        if !matches!(g.node(n).op, Op::Train(TrainOp::ReluBackward)) {
            continue;
        }
        let x = g.operands(n)[0];
        let (_, last) = p.lifetime[&x];
        assert!(
            last >= at[&g.node(n).name],
            "{} dies before its backward",
            g.node(x).name
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "LeNet's four ReLUs");
    // No two values that are live at once share a buffer.
    for (&a, &(sa, ea)) in &p.lifetime {
        for (&b, &(sb, eb)) in &p.lifetime {
            let overlap = a < b && sa.max(sb) < ea.min(eb);
            if overlap && p.assignment.get(&a) == p.assignment.get(&b) {
                panic!(
                    "{} and {} share a buffer while both live",
                    g.node(a).name,
                    g.node(b).name
                );
            }
        }
    }
    // A training step holds more than a forward: activations wait for the backward.
    let mut fwd = m.graph.clone();
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.batch = 8;
    default_pipeline(CompileMode::Inference)
        .run(&mut fwd, &mut ctx, &mut |_| {})
        .expect("compiles");
    let (train, infer) = (plan(&g, 8).summary, plan(&fwd, 8).summary);
    assert!(
        train.arena_bytes > infer.arena_bytes,
        "{train:?} vs {infer:?}"
    );
    assert_eq!(
        planned_peak_bytes(&g, 8),
        train.arena_bytes + train.weight_bytes
    );
    // The peak grows with the batch.
    assert!(planned_peak_bytes(&g, 16) > planned_peak_bytes(&g, 8));
}

#[test]
fn training_graph_of_every_example() {
    for name in EXAMPLES {
        let m = example_module(name);
        let mut g = m.graph.clone();
        let mut ctx = PassContext::new(CompileMode::Training);
        pipeline_for(CompileMode::Training, m.recipe.as_ref())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .run(&mut g, &mut ctx, &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = print_graph(&g);
        assert!(text.contains("cross_entropy("), "{name}");
        insta::assert_snapshot!(format!("training_graph_{name}"), text);
    }
}
