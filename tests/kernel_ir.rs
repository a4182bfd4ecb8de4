//! The typed kernel IR on real plans: every kernel of every example's plan, for every
//! code-generation target, before and after the default pipeline, type-checks with
//! every broadcast explicit (no device needed); and the plans rendered with every
//! broadcast written out, as a renderer without implicit widening must, run on the
//! OpenCL device to the reference interpreter's outputs (needs an OpenCL platform,
//! as the `opencl*.rs` tests do).

mod common;

use common::{example_module, input_shape, perturbed_weights, EXAMPLES};
use fnet::ir::graph::Graph;
use fnet::kernel_ir::native::NativeConvs;
use fnet::kernel_ir::plan::{build_plan, transform_plan, Plan, Target};
use fnet::kernel_ir::typecheck::verify;
use fnet::kernel_ir::{Expr, Kernel, Stmt};
use fnet::passes::{pipeline, CompileMode, PassContext};
use fnet::runtime::ParamStore;

const TARGETS: [Target; 3] = [
    Target {
        vector: 8,
        tile_co: 8,
        broadcast_weights: true,
        native: NativeConvs::Off,
        sync_batch_stats: false,
    },
    Target {
        vector: 16,
        tile_co: 8,
        broadcast_weights: true,
        native: NativeConvs::Off,
        sync_batch_stats: false,
    },
    Target {
        vector: 4,
        tile_co: 2,
        broadcast_weights: false,
        native: NativeConvs::Off,
        sync_batch_stats: false,
    },
];

/// `graph` after the passes named by `keep` (all of the default pipeline's when it
/// keeps every name), with `weights` bound or not.
fn passed(
    graph: &Graph,
    batch: usize,
    weights: Option<&ParamStore<f32>>,
    keep: impl Fn(&str) -> bool,
) -> Graph {
    let mut g = graph.clone();
    let mut pc = PassContext::new(CompileMode::Inference);
    pc.batch = batch as u64;
    pc.weights = weights.cloned();
    let names: Vec<String> = pipeline::registry()
        .iter()
        .map(|p| p.name().to_string())
        .filter(|n| keep(n))
        .collect();
    pipeline::from_names(&names)
        .expect("known passes")
        .run(&mut g, &mut pc, &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", graph.name));
    g
}

/// Every graph of an example that lowers differently: as elaborated, after the whole
/// pipeline with weights bound (folded kernels, fused convs, FFT where the cost model
/// picks it), and after it without weights and without the algorithm choice (FlexConv
/// kernels synthesised on the device).
fn variants(name: &str, batch: usize) -> (Vec<(String, Graph)>, ParamStore<f32>) {
    let m = example_module(name);
    let store = perturbed_weights(&m.graph, 7);
    let optimised = passed(&m.graph, batch, Some(&store), |_| true);
    let synthesised = passed(&m.graph, batch, None, |n| n != "choose-conv-algo");
    let graphs = vec![
        (format!("{name} (elaborated)"), m.graph),
        (format!("{name} (optimised)"), optimised),
        (format!("{name} (device synthesis)"), synthesised),
    ];
    (graphs, store)
}

/// Calls `f` on every expression of `body`, operands before the node.
fn visit(body: &mut [Stmt], f: &mut dyn FnMut(&mut Expr)) {
    fn expr(e: &mut Expr, f: &mut dyn FnMut(&mut Expr)) {
        match e {
            Expr::Int(_) | Expr::Float(_) | Expr::Var(_) | Expr::GlobalId(_) => {}
            Expr::Bin(_, a, b) | Expr::Hash(a, b) => {
                expr(a, f);
                expr(b, f);
            }
            Expr::Call(_, a)
            | Expr::Splat(a, _)
            | Expr::Broadcast(a, _)
            | Expr::Lane(a, _)
            | Expr::ToFloat(a)
            | Expr::ToInt(a) => expr(a, f),
            Expr::Load { index, .. } | Expr::Gather { index, .. } => expr(index, f),
            Expr::Fma(a, b, c) | Expr::Select(a, b, c) => {
                expr(a, f);
                expr(b, f);
                expr(c, f);
            }
        }
        f(e)
    }
    for s in body {
        match s {
            Stmt::Let { init: e, .. } | Stmt::Assign { value: e, .. } | Stmt::Guard(e) => {
                expr(e, f)
            }
            Stmt::For {
                start, end, body, ..
            } => {
                expr(start, f);
                expr(end, f);
                visit(body, f);
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                expr(cond, f);
                visit(then, f);
                visit(otherwise, f);
            }
            Stmt::Block(body) => visit(body, f),
            Stmt::Store { index, value, .. } => {
                expr(index, f);
                expr(value, f);
            }
        }
    }
}

fn broadcasts(k: &Kernel) -> usize {
    let mut n = 0;
    visit(&mut k.body.clone(), &mut |e| {
        n += usize::from(matches!(e, Expr::Broadcast(..)))
    });
    n
}

/// Asserts every kernel of `plan` needs no implicit conversion; returns how many
/// broadcasts the check made explicit.
fn explicit_broadcasts(what: &str, plan: &Plan) -> usize {
    for k in &plan.kernels {
        verify(k).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    plan.kernels.iter().map(broadcasts).sum()
}

#[test]
fn every_kernel_of_every_example_type_checks_with_explicit_broadcasts() {
    for name in EXAMPLES {
        let mut broadcasts = 0;
        for batch in [1, 3] {
            let (graphs, store) = variants(name, batch);
            for (what, graph) in &graphs {
                let shape = input_shape(graph, batch);
                for target in TARGETS {
                    let what = format!("{what}, batch {batch}, {target:?}");
                    let plan = build_plan(graph, &store, std::slice::from_ref(&shape), target)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(!plan.kernels.is_empty(), "{what}");
                    broadcasts += explicit_broadcasts(&what, &plan);
                }
            }
        }
        // Every example has a ReLU or a zero-initialised vector accumulator, written
        // with a scalar: the check made those broadcasts explicit.
        assert!(broadcasts > 0, "{name}: no broadcast made explicit");
    }
}

#[test]
fn fft_transform_kernels_type_check() {
    // Radix 2, 3, 5 and 7 stages, the 16-lane radix-7 stage on 8-lane targets, and
    // both directions.
    for (n, rows) in [(8, 32), (60, 32), (49, 32), (1568, 32)] {
        for target in TARGETS {
            for inverse in [false, true] {
                let plan = transform_plan(n, rows, inverse, target).expect("FFT plan");
                assert!(!plan.kernels.is_empty());
                explicit_broadcasts(&format!("fft {n} × {rows}, {target:?}"), &plan);
            }
        }
    }
}

/// Every broadcast written as a splat: what a renderer without implicit widening sees
/// (OpenCL prints a splat as a `(floatN)(x)` cast).
#[cfg(feature = "opencl")]
fn spelled_out(plan: &mut Plan) -> usize {
    let mut n = 0;
    for k in &mut plan.kernels {
        visit(&mut k.body, &mut |e| {
            if let Expr::Broadcast(a, w) = e {
                *e = Expr::Splat(a.clone(), *w);
                n += 1;
            }
        });
        verify(k).expect("splats are explicit");
    }
    n
}

/// The plans with every broadcast spelled out build and run on the device to the
/// reference interpreter's outputs: the check put each broadcast where the lowering
/// meant one.
#[test]
#[cfg(feature = "opencl")]
fn plans_with_spelled_out_broadcasts_match_the_reference() {
    use common::opencl::{ctx, input};
    use fnet::opencl::{plan_source, Executable};
    use fnet::runtime::{run, RunOptions};
    for name in ["lenet_mnist", "resnet20_cifar10", "flextcn6_smnist"] {
        let (graphs, store) = variants(name, 2);
        for (what, graph) in &graphs[1..] {
            let x = input(&input_shape(graph, 2), 3);
            let want = run(
                graph,
                &store,
                std::slice::from_ref(&x),
                &RunOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{what}: reference: {e}"))
            .outputs;
            let shapes = [x.shape.clone()];
            let mut plan = build_plan(graph, &store, &shapes, Target::cpu()).expect("plan");
            let implicit = plan_source(&plan);
            assert!(spelled_out(&mut plan) > 0, "{what}: no broadcast");
            assert_ne!(plan_source(&plan), implicit, "{what}");
            let got = Executable::new(ctx(), plan)
                .and_then(|exe| exe.run(std::slice::from_ref(&x)))
                .unwrap_or_else(|e| panic!("{what}: opencl: {e}"));
            assert_eq!(got.len(), want.len(), "{what}: outputs");
            for (g, w) in got.iter().zip(&want) {
                common::assert_close(what, g, w, 2e-5);
            }
        }
    }
}
