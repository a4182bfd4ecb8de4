//! The default pipeline honours its mode: compiled for training, with weights bound,
//! every example keeps every parameter the optimiser updates, every FlexConv kernel
//! is computed from its parameters, and every batchnorm stays; compiled for inference
//! the same weights fold. The training pipeline has a place for the autodiff pass, and
//! a pipeline refuses a context of the other mode.

mod common;

use common::{example, perturbed_weights, EXAMPLES};
use fnet::ir::graph::Graph;
use fnet::ir::op::{Op, ParamRole};
use fnet::passes::pipeline::{default_pipeline, AUTODIFF_AFTER};
use fnet::passes::{CompileMode, Pass, PassContext};
use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;

/// `g` through the default pipeline of `mode`, with weights bound.
fn compiled(g: &Graph, mode: CompileMode) -> Graph {
    let mut out = g.clone();
    let mut ctx = PassContext::new(mode);
    ctx.weights = Some(perturbed_weights::<f32>(g, 3));
    default_pipeline(mode)
        .run(&mut out, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", g.name));
    out
}

fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.g.node_weights().filter(|n| f(&n.op)).count()
}

fn updated_params(g: &Graph) -> Vec<String> {
    let mut names: Vec<String> = g
        .params()
        .filter(|(_, _, role)| matches!(role, ParamRole::Trainable | ParamRole::Shared))
        .map(|(_, n, _)| n.name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn training_keeps_parameters_kernel_networks_and_batchnorm() {
    for name in EXAMPLES {
        let g = example(name);
        let t = compiled(&g, CompileMode::Training);
        // Every tensor the optimiser updates is still a parameter the graph reads.
        assert_eq!(updated_params(&t), updated_params(&g), "{name}");
        // Constants come only from frozen tensors, never from a fold.
        for n in t.g.node_weights() {
            if let Op::Const { origin, .. } = &n.op {
                assert!(
                    origin.starts_with("frozen "),
                    "{name}: `{}` {origin}",
                    n.name
                );
            }
        }
        // One kernel synthesis per FlexConv, computed at run time.
        let flex = count(&t, |op| matches!(op, Op::FlexKernel { .. }));
        assert_eq!(flex, g.flexconvs.len(), "{name}: flex_kernel ops");
        // Batch statistics: no batchnorm folds into a conv.
        let is_bn = |op: &Op| matches!(op, Op::BatchNorm { .. });
        assert_eq!(count(&t, is_bn), count(&g, is_bn), "{name}: batchnorms");
        assert_eq!(count(&t, |op| matches!(op, Op::BnFold { .. })), 0, "{name}");

        // The same weights compiled for inference do fold, so the checks above bite.
        let i = compiled(&g, CompileMode::Inference);
        if !g.flexconvs.is_empty() {
            assert_eq!(count(&i, |op| matches!(op, Op::FlexKernel { .. })), 0);
            assert!(
                updated_params(&i).len() < updated_params(&g).len(),
                "{name}"
            );
        }
        let folded_bn = count(&i, |op| matches!(op, Op::BnFold { .. }));
        let stats_bn = count(&g, |op| {
            matches!(
                op,
                Op::BatchNorm {
                    running_stats: true,
                    ..
                }
            )
        });
        assert_eq!(
            folded_bn > 0,
            stats_bn > 0,
            "{name}: inference folds batchnorm"
        );
    }
}

/// Records its name when it runs, standing in for the autodiff pass.
struct Probe(Rc<RefCell<Vec<&'static str>>>);

impl Pass for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn about(&self) -> &'static str {
        "records that it ran"
    }

    fn run(&self, _: &mut Graph, _: &mut PassContext) -> Result<usize, String> {
        self.0.borrow_mut().push("probe");
        Ok(0)
    }
}

#[test]
fn the_autodiff_pass_goes_after_the_forward_rewrites_and_before_algorithm_choice() {
    let mut pm = default_pipeline(CompileMode::Training);
    let seen = Rc::new(RefCell::new(Vec::new()));
    pm.insert_after(AUTODIFF_AFTER, Box::new(Probe(seen.clone())))
        .expect("the slot exists");
    let names = pm.names();
    let at = |n: &str| names.iter().position(|&p| p == n).expect(n);
    for forward in ["materialize-frozen", "fuse-mask", "fold-bases"] {
        assert!(at(forward) < at("probe"), "{names:?}");
    }
    for after in ["choose-conv-algo", "fuse-epilogue", "memory-plan"] {
        assert!(at("probe") < at(after), "{names:?}");
    }
    let mut g = example("lenet_mnist");
    let mut ctx = PassContext::new(CompileMode::Training);
    let mut order = Vec::new();
    pm.run(&mut g, &mut ctx, &mut |r| order.push(r.name))
        .expect("runs");
    assert_eq!(*seen.borrow(), ["probe"]);
    assert_eq!(order, names);
    let err = pm
        .insert_after("autodiff-slot", Box::new(Probe(seen)))
        .expect_err("no such pass");
    assert!(err.contains("fold-bases"), "{err}");
}

#[test]
fn a_default_pipeline_refuses_a_context_of_the_other_mode() {
    let g = example("lenet_mnist");
    for (built, ctx_mode) in [
        (CompileMode::Inference, CompileMode::Training),
        (CompileMode::Training, CompileMode::Inference),
    ] {
        let mut out = g.clone();
        let mut ctx = PassContext::new(ctx_mode);
        let err = default_pipeline(built)
            .run(&mut out, &mut ctx, &mut |_| {})
            .expect_err("mode mismatch");
        assert!(
            err.message.contains(&format!("built for {built:?}")),
            "{err}"
        );
    }
}

#[test]
fn compile_training_snapshot() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args(["compile", "examples/flextcn6_smnist.fnet", "--training"])
        .current_dir(&root)
        .env("NO_COLOR", "1")
        .output()
        .expect("fnetc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.contains("flex_kernel("), "{text}");
    insta::assert_snapshot!("compile_training_flextcn6", text);
}
