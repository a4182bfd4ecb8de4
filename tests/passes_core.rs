//! The pass manager and the structural passes (specialize-slots, canonicalize, cse,
//! dce, memory-plan): what each rewrites, that outputs are unchanged on the reference
//! interpreter, `--print-after` snapshots on every example, and the manager's guards.

mod common;

use common::{example, input_shape, perturbed_weights, program, EXAMPLES};
use fnet::ir::graph::Graph;
use fnet::ir::print::print_graph;
use fnet::passes::manager::{Pass, PassManager};
use fnet::passes::pipeline::from_names;
use fnet::passes::{CompileMode, PassContext};
use fnet::runtime::{run, ParamStore, RunOptions};
use fnet::tensor::Tensor;

const CORE: &[&str] = &[
    "specialize-slots",
    "canonicalize",
    "cse",
    "dce",
    "memory-plan",
];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs `passes` over a copy of `graph`; returns it, the rewrite counts and the IR
/// printed after each pass.
fn apply(graph: &Graph, passes: &[&str]) -> (Graph, Vec<usize>, Vec<String>) {
    let mut g = graph.clone();
    let mut ctx = PassContext::new(CompileMode::Inference);
    let (mut rewrites, mut printed) = (Vec::new(), Vec::new());
    from_names(&names(passes))
        .expect("known passes")
        .run(&mut g, &mut ctx, &mut |r| {
            rewrites.push(r.rewrites);
            printed.push(print_graph(r.graph));
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (g, rewrites, printed)
}

fn assert_same_outputs(what: &str, before: &Graph, after: &Graph, store: &ParamStore<f32>) {
    let shape = input_shape(before, 2);
    let x: Tensor<f32> = common::random(&shape, 7);
    let opts = RunOptions::default();
    let want = run(before, store, std::slice::from_ref(&x), &opts).expect("before runs");
    let got = run(after, store, &[x], &opts).expect("after runs");
    for (w, g) in want.outputs.iter().zip(&got.outputs) {
        let d = w.max_abs_diff(g).expect("same shape");
        assert!(d <= 1e-5 * w.max_abs().max(1.0), "{what}: max diff {d}");
    }
}

#[test]
fn print_after_snapshots() {
    for name in EXAMPLES {
        let (_, _, printed) = apply(&example(name), CORE);
        for (pass, ir) in CORE.iter().zip(printed) {
            insta::assert_snapshot!(format!("{pass}__{name}"), ir);
        }
    }
}

/// Each structural pass alone leaves the outputs of the small examples unchanged.
#[test]
fn each_pass_keeps_the_outputs_of_the_examples() {
    for name in [
        "lenet_mnist",
        "resnet20_cifar10",
        "resnet20_slots_cifar10",
        "resnet20_lc_cifar10",
    ] {
        let graph = example(name);
        let store = perturbed_weights::<f32>(&graph, 3);
        for pass in CORE {
            let (after, _, _) = apply(&graph, &[pass]);
            assert_same_outputs(&format!("{name} / {pass}"), &graph, &after, &store);
        }
    }
}

#[test]
fn specialize_slots_leaves_exactly_the_active_pools() {
    let graph = example("resnet20_slots_cifar10");
    let slots = |g: &Graph| g.g.node_weights().filter(|n| n.op.name() == "slot").count();
    let pools = |g: &Graph| {
        g.g.node_weights()
            .filter(|n| n.op.name() == "maxpool")
            .count()
    };
    assert_eq!((slots(&graph), pools(&graph)), (9, 0));
    let (after, rewrites, _) = apply(&graph, &["specialize-slots"]);
    assert_eq!(rewrites, vec![9]);
    assert_eq!((slots(&after), pools(&after)), (0, 2));
}

#[test]
fn canonicalize_cse_and_dce_remove_what_they_should() {
    let src = "model m {
  input x: f32[B, 3, 8, 8]
  h = x |> conv2d(4, 3, padding: 1) as c1 |> dropout(0.5) |> relu
  unused = x |> conv2d(2, 1) as dead
  y = relu(h) * 1.0
  return y + relu(h)
}";
    let graph = program(src);
    let count = |g: &Graph, op: &str| g.g.node_weights().filter(|n| n.op.name() == op).count();
    let (canon, r, _) = apply(&graph, &["canonicalize"]);
    assert_eq!(r, vec![2], "dropout and scale by 1");
    assert_eq!((count(&canon, "dropout"), count(&canon, "scale")), (0, 0));
    let (cse, r, _) = apply(&canon, &["cse"]);
    assert_eq!(r, vec![1], "relu(h) twice");
    assert_eq!(count(&cse, "relu"), 2);
    let (dce, r, _) = apply(&cse, &["dce"]);
    assert!(r[0] >= 3, "the dead conv, its weight and bias: {r:?}");
    assert_eq!(count(&dce, "conv"), 1);
    assert!(!dce.g.node_weights().any(|n| n.name.starts_with("dead")));
    let store = perturbed_weights::<f32>(&graph, 3);
    assert_same_outputs("canonicalize+cse+dce", &graph, &dce, &store);
}

/// A pass that breaks the graph is stopped by the manager, which names it.
struct Breaker;

impl Pass for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }
    fn about(&self) -> &'static str {
        "removes the edges of the first conv"
    }
    fn run(&self, graph: &mut Graph, _: &mut PassContext) -> Result<usize, String> {
        let conv = graph
            .g
            .node_indices()
            .find(|&n| graph.node(n).op.name() == "conv")
            .expect("a conv");
        let edges: Vec<_> = graph
            .g
            .edges_directed(conv, petgraph::Direction::Incoming)
            .map(|e| petgraph::visit::EdgeRef::id(&e))
            .collect();
        for e in edges {
            graph.g.remove_edge(e);
        }
        Ok(1)
    }
}

/// A pass that claims more rewrites than the limit.
struct Looper;

impl Pass for Looper {
    fn name(&self) -> &'static str {
        "looper"
    }
    fn about(&self) -> &'static str {
        "reports endless rewrites"
    }
    fn run(&self, _: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        Ok(ctx.rewrite_limit + 1)
    }
}

#[test]
fn the_manager_verifies_after_every_pass_and_limits_rewrites() {
    let graph = example("lenet_mnist");
    let mut ctx = PassContext::new(CompileMode::Inference);
    let err = PassManager::new(vec![Box::new(Breaker)])
        .run(&mut graph.clone(), &mut ctx, &mut |_| {})
        .expect_err("broken graph");
    assert_eq!(err.pass, "breaker");
    assert!(err.message.contains("invalid graph"), "{err}");
    let err = PassManager::new(vec![Box::new(Looper)])
        .run(&mut graph.clone(), &mut ctx, &mut |_| {})
        .expect_err("too many rewrites");
    assert_eq!(err.pass, "looper");
    assert!(err.message.contains("over the limit"), "{err}");
}

#[test]
fn unknown_pass_names_are_errors_with_a_suggestion() {
    let Err(e) = from_names(&names(&["canonicalise"])) else {
        panic!("unknown pass accepted");
    };
    assert!(e.contains("did you mean `canonicalize`"), "{e}");
    assert!(e.contains("memory-plan"), "lists the passes: {e}");
}
