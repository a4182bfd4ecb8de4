//! The kernel-level program cache (`ClContext::kernels`): a training plan
//! re-planned because one FlexConv's crop changed builds only the kernels whose text
//! changed and reuses the others from the programs built before, and still computes
//! what the interpreter computes; the disk cache keeps working for whole plans.
//!
//! Each test opens its own context (the shared test context's counts would mix with
//! other tests'). They need an OpenCL platform, as `tests/opencl.rs` does.
#![cfg(feature = "opencl")]

mod common;

use fnet::autodiff::{differentiate, Loss};
use fnet::backend::{Backend, OpenClBackend, Prepared, ReferenceBackend};
use fnet::ir::graph::Graph;
use fnet::kernel_ir::plan::{build_plan_in, Plan};
use fnet::kernel_ir::Kernel;
use fnet::opencl::{render, ClContext, DeviceSel, Executable};
use fnet::runtime::{flex_kernel, Mode, ParamStore};
use fnet::tensor::Tensor;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// Two FlexConvs, so that one can change its crop while the other keeps it.
const TWO_FLEX: &str = "model t {
  input x: f32[B, 2, 8, 8]
  seed 3
  def flex(c) = flexconv(c, horizon: 9, kernel: magnet(hidden: 8, layers: 1),
                         mask: gauss(sigma: 0.2, threshold: 0.1))
  h = x |> flex(3) |> batchnorm |> relu
  h = h |> flex(4) |> batchnorm |> relu
  return h |> global_avg_pool |> linear(3)
}";

/// A context of its own on the test device. The shared one is opened first: two
/// threads probing the platforms at once for the first time crash the ICD loader or
/// PoCL here (a SIGSEGV, or "no devices" under gdb), and the shared one's
/// `OnceLock` serialises that first probe.
fn fresh_context(cache_dir: Option<PathBuf>) -> Arc<ClContext> {
    let _ = common::opencl::ctx();
    let sel = std::env::var("FNET_TEST_DEVICE")
        .ok()
        .map(|s| s.parse::<DeviceSel>().expect("FNET_TEST_DEVICE"))
        .unwrap_or_default();
    Arc::new(ClContext::new(sel, cache_dir).unwrap_or_else(|e| panic!("{e}")))
}

/// A kernel's OpenCL text as the cache keys it: without its name, which numbers it
/// within the plan.
fn text(k: &Kernel) -> String {
    render::kernel(k).replacen(&format!(" {}(", k.name), " (", 1)
}

/// The distinct kernel texts of `plan`.
fn texts(plan: &Plan) -> BTreeSet<String> {
    plan.kernels.iter().map(text).collect()
}

fn crop(p: &ParamStore<f32>, name: &str) -> Vec<usize> {
    let axes = flex_kernel::crop_axes(&[9, 9], Some((&p[name], 0.1)), false).expect("crop");
    axes.iter().map(Vec::len).collect()
}

fn training_step(graph: &Graph) -> (Graph, Vec<String>, Vec<Tensor<f32>>) {
    let tg = differentiate(graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|g| format!("grad.{g}")))
        .chain(tg.buffers.iter().map(|b| format!("update.{b}")))
        .collect();
    let labels = Tensor::from_vec(vec![2], vec![2.0f32, 0.0]).expect("labels");
    let inputs = vec![common::random::<f32>(&[2, 2, 8, 8], 8), labels];
    (tg.graph, names, inputs)
}

fn close(what: &str, got: &[Tensor<f32>], want: &[Tensor<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.shape, w.shape, "{what}");
        for (i, (a, b)) in g.data.iter().zip(&w.data).enumerate() {
            // A gradient that is zero in exact arithmetic (a bias before a batch norm)
            // is f32 rounding noise: the 1e-2 floor.
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1e-2) + 1e-6,
                "{what}[{i}]: opencl {a} vs reference {b}"
            );
        }
    }
}

#[test]
fn a_crop_change_builds_only_the_kernels_whose_text_changed() {
    let m = common::opencl::program(TWO_FLEX);
    let (graph, names, inputs) = training_step(&m.graph);
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let params: ParamStore<f32> = common::perturbed_weights(&m.graph, 5);
    let ctx = fresh_context(None);
    let mut cl = OpenClBackend::new(ctx.clone())
        .prepare_plan(&graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    let first = texts(&cl.executable().plan);
    let n = cl.executable().plan.kernels.len();
    let s = ctx.stats();
    // A kernel repeated in the plan (the same shapes at two layers) is built once.
    assert_eq!(
        (s.kernels_built, s.kernels_reused),
        (first.len() as u32, (n - first.len()) as u32)
    );
    assert_eq!(s.builds, 1, "the first plan is one program");
    cl.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));

    // Widen the second FlexConv's crop only.
    let name = "flex2.mask_params";
    let wide = Tensor::from_vec(vec![2, 2], vec![0.05f32, 0.6, -0.05, 0.6]).expect("mask");
    let mut widened = params.clone();
    widened.insert(name.to_string(), wide.clone());
    assert_ne!(crop(&params, name), crop(&widened, name));
    assert_eq!(crop(&widened, name), [9, 9]);
    cl.write_param(name, &wide)
        .unwrap_or_else(|e| panic!("{e}"));
    let got = cl.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cl.plans_built(), 2, "the new crop is a new plan");

    let plan = &cl.executable().plan;
    let second = texts(plan);
    let changed: BTreeSet<&String> = second.difference(&first).collect();
    let kept = plan.kernels.len() - changed.len();

    assert!(!changed.is_empty() && kept > 0, "{} changed", changed.len());
    let t = ctx.stats();
    assert_eq!(
        (
            t.kernels_built - s.kernels_built,
            t.kernels_reused - s.kernels_reused
        ),
        (changed.len() as u32, kept as u32),
        "only the changed kernels are built"
    );
    assert_eq!(t.builds, 2, "one more program, of the changed kernels");
    // The changed kernels are the second FlexConv's (forward and backward): none of
    // the first layer's launches runs a new kernel.
    for step in &plan.steps {
        if changed.contains(&text(&plan.kernels[step.kernel])) {
            assert!(
                !step.layer.contains("flex1"),
                "{}: a kernel of the unchanged layer was rebuilt",
                step.layer
            );
        }
    }
    assert!(
        plan.steps
            .iter()
            .any(|s| s.layer.contains("flex2") && changed.contains(&text(&plan.kernels[s.kernel]))),
        "the second FlexConv's kernels changed"
    );

    // The executable mixing both programs computes the interpreter's step: a run,
    // the mask written, a second run, as above.
    let mut reference = ReferenceBackend
        .prepare(graph.clone(), params.clone(), &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    reference.set_mode(Mode::Train).expect("train");
    reference.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    reference.write_param(name, &wide).expect("mask");
    let want = reference.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
    assert!(names.contains(&format!("grad.{name}")));
    close("after the crop change", &got, &want);
}

/// A plan whose kernels were all built before (here: by an executable of the same
/// plan) builds nothing, and a context on the same disk cache loads the plan's
/// program from the disk instead of building it.
#[test]
fn reused_kernels_and_disk_binaries_build_nothing() {
    let dir = std::env::temp_dir().join(format!("fnet-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let m = common::opencl::program(TWO_FLEX);
    let (graph, _, inputs) = training_step(&m.graph);
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let params: ParamStore<f32> = common::perturbed_weights(&m.graph, 5);
    let plan = || {
        build_plan_in(
            &graph,
            &params,
            &shapes,
            common::opencl::targets()[0],
            Mode::Train,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let (all, n) = (plan().kernels.len() as u32, texts(&plan()).len() as u32);
    let a = fresh_context(Some(dir.clone()));
    let x = Executable::new(&a, plan()).unwrap_or_else(|e| panic!("{e}"));
    let y = Executable::new(&a, plan()).unwrap_or_else(|e| panic!("{e}"));
    let s = a.stats();
    assert_eq!(
        (s.builds, s.kernels_built, s.kernels_reused),
        (1, n, 2 * all - n)
    );
    let b = fresh_context(Some(dir.clone()));
    let z = Executable::new(&b, plan()).unwrap_or_else(|e| panic!("{e}"));
    let s = b.stats();
    assert_eq!((s.builds, s.disk_hits, s.kernels_built), (0, 1, n));
    // All three compute the same step.
    let run = |e: &Executable| e.run(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let (rx, ry, rz) = (run(&x), run(&y), run(&z));
    for (p, q) in rx.iter().zip(&ry).chain(rx.iter().zip(&rz)) {
        assert_eq!(p.data, q.data);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
