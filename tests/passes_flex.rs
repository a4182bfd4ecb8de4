//! The `materialize-frozen` and `fuse-mask` passes: numeric equivalence on the
//! reference interpreter before and after each pass (random weights, perturbed so no
//! tensor keeps its trivial initial value, and random inputs), the constant-folded
//! kernel path with bound weights, and `--print-after` snapshots on every example.

mod common;

use common::{program, random};
use fnet::cli::compile::{compile, CompileArgs};
use fnet::driver::compile_file;
use fnet::eval::Options;
use fnet::ir::graph::Graph;
use fnet::ir::op::{Op, ParamRole};
use fnet::ir::types::Dim;
use fnet::passes::pipeline::from_names;
use fnet::passes::{CompileMode, PassContext};
use fnet::runtime::{initialise, run, Mode, ParamStore, RunOptions, RunResult};
use fnet::tensor::Tensor;
use std::path::Path;

/// A 2D FlexConv with a frozen mask and a sampling-rate norm, an unmasked one, and an
/// LC block (frozen basis).
const SMALL_2D: &str = "model small2d {
  input x: f32[B, 2, 9, 9]
  seed 3
  h = x |> flexconv(4, horizon: 9, kernel: magnet(hidden: 8, layers: 2),
                    mask: gauss(sigma: 0.2, learnable: false), sampling_rate_norm: 0.5) |> relu
  h = h |> flexconv(3, horizon: 9, kernel: magnet(hidden: 8, layers: 1), mask: none) |> relu
  return h |> lc(5, 3, expansion: 2) |> batchnorm
}";

/// Causal 1D FlexConvs: a frozen mask, then a learnable one with a scale.
const SMALL_1D: &str = "model small1d {
  input x: f32[B, 2, 40]
  seed 5
  h = x |> flexconv(3, horizon: same, causal: true, kernel: magnet(hidden: 8, layers: 2),
                    mask: gauss(sigma: 0.1, learnable: false)) |> relu
  return h |> flexconv(2, horizon: same, causal: true, kernel: magnet(hidden: 8, layers: 1),
                       sampling_rate_norm: 2.0)
}";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> Graph {
    compile_file(&root().join("examples").join(name), &Options::default())
        .map(|(_, m)| m.graph)
        .unwrap_or_else(|r| panic!("{}", r.render()))
}

/// Runs the named passes (verification after each is the manager's).
fn passes(graph: &Graph, names: &[&str], ctx: &mut PassContext) -> Graph {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut g = graph.clone();
    from_names(&names)
        .expect("known passes")
        .run(&mut g, ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    g
}

/// Initialised weights, every value moved a little (relative ±20% and an additive
/// ±0.02), so zero biases, unit BatchNorm scales and running variances, and mask
/// means all differ from their defaults; variances and widths stay positive. Frozen
/// tensors keep their seeded values (a weights file from `fnetc init` has those)
/// unless `frozen_too`.
fn perturbed(graph: &Graph, frozen_too: bool) -> ParamStore<f32> {
    let roles = fnet::runtime::params::roles(graph);
    let mut store = initialise::<f32>(graph, graph.seed).expect("initialise");
    for (t, (name, v)) in store.iter_mut().enumerate() {
        if roles[name] == ParamRole::Frozen && !frozen_too {
            continue;
        }
        for (i, x) in v.data.iter_mut().enumerate() {
            let k = (i as f32) * 0.731 + (t as f32) * 1.37;
            *x = *x * (1.0 + 0.2 * k.sin()) + 0.02 * k.cos();
        }
    }
    store
}

fn weights(graph: &Graph) -> ParamStore<f32> {
    perturbed(graph, false)
}

fn forward(graph: &Graph, store: &ParamStore<f32>, x: &Tensor<f32>, mode: Mode) -> RunResult<f32> {
    let options = RunOptions {
        mode,
        ..RunOptions::default()
    };
    run(graph, store, std::slice::from_ref(x), &options).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn assert_close(a: &Tensor<f32>, b: &Tensor<f32>, tol: f64, what: &str) {
    common::assert_close(what, a, b, tol);
}

fn ops(graph: &Graph, name: &str) -> usize {
    graph
        .g
        .node_indices()
        .filter(|&n| graph.node(n).op.name() == name)
        .count()
}

/// The conv fed by each kernel: (conv name, kernel type dims).
fn conv_kernels(graph: &Graph) -> Vec<(String, Vec<Dim>)> {
    let mut out = Vec::new();
    for n in graph.g.node_indices() {
        if matches!(graph.node(n).op, Op::Conv { .. }) {
            let w = graph.operands(n)[1];
            out.push((graph.node(n).name.clone(), graph.node(w).ty.shape.clone()));
        }
    }
    out
}

/// Before vs after `names` on one model, with the given input shape and mode.
fn equivalent(graph: &Graph, names: &[&str], shape: &[usize], mode: CompileMode) -> Graph {
    let store = weights(graph);
    let x: Tensor<f32> = random(shape, 11);
    let run_mode = match mode {
        CompileMode::Inference => Mode::Eval,
        CompileMode::Training => Mode::Train,
    };
    let before = forward(graph, &store, &x, run_mode);
    let after_graph = passes(graph, names, &mut PassContext::new(mode));
    let after = forward(&after_graph, &store, &x, run_mode);
    assert_close(&after.outputs[0], &before.outputs[0], 1e-5, &graph.name);
    assert_eq!(after.kernel_sizes, before.kernel_sizes, "{}", graph.name);
    after_graph
}

#[test]
fn materialize_frozen_keeps_outputs_and_seeds_constants() {
    for src in [SMALL_2D, SMALL_1D] {
        for mode in [CompileMode::Inference, CompileMode::Training] {
            let g = program(src);
            let frozen: Vec<String> = g
                .params()
                .filter(|p| p.2 == ParamRole::Frozen)
                .map(|p| p.1.name.clone())
                .collect();
            assert!(!frozen.is_empty());
            let shape = if src == SMALL_2D {
                [2, 2, 9, 9].as_slice()
            } else {
                &[2, 2, 40]
            };
            let after = equivalent(&g, &["materialize-frozen"], shape, mode);
            assert_eq!(
                after.params().filter(|p| p.2 == ParamRole::Frozen).count(),
                0
            );
            // Each constant holds exactly the seeded value `fnetc init` writes.
            let init = initialise::<f32>(&g, g.seed).unwrap();
            for name in &frozen {
                let n = after
                    .g
                    .node_indices()
                    .find(|&n| after.node(n).name == *name);
                let Op::Const { value, .. } = &after.node(n.expect(name)).op else {
                    panic!("{name} is not a constant");
                };
                assert_eq!(**value, init[name], "{name}");
            }
            // Trainable parameters are untouched.
            let trainable = |g: &Graph| g.params().filter(|p| p.2 != ParamRole::Frozen).count();
            assert_eq!(trainable(&after), trainable(&g));
        }
    }
}

#[test]
fn materialize_frozen_on_resnet20_lc() {
    let g = example("resnet20_lc_cifar10.fnet");
    let frozen = g.params().filter(|p| p.2 == ParamRole::Frozen).count();
    assert_eq!(frozen, 19);
    let after = equivalent(
        &g,
        &["materialize-frozen"],
        &[1, 3, 32, 32],
        CompileMode::Inference,
    );
    assert_eq!(ops(&after, "const"), frozen);
}

#[test]
fn materialize_frozen_uses_bound_weights() {
    let g = program(SMALL_2D);
    let store = perturbed(&g, true);
    let x: Tensor<f32> = random(&[1, 2, 9, 9], 5);
    let before = forward(&g, &store, &x, Mode::Eval);
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.weights = Some(store.clone());
    let after = passes(&g, &["materialize-frozen"], &mut ctx);
    // Run without the frozen tensors: the constants must carry the bound values.
    let mut rest = store.clone();
    rest.retain(|k, _| !k.ends_with("mask_params") && !k.ends_with("basis.weight"));
    let out = forward(&after, &rest, &x, Mode::Eval);
    assert_close(&out.outputs[0], &before.outputs[0], 1e-6, "bound frozen");
    assert!(ctx.notes.iter().any(|n| n.pass == "materialize-frozen"));
}

#[test]
fn fuse_mask_keeps_outputs_on_small_programs() {
    for mode in [CompileMode::Inference, CompileMode::Training] {
        let g2 = equivalent(&program(SMALL_2D), &["fuse-mask"], &[2, 2, 9, 9], mode);
        let g1 = equivalent(&program(SMALL_1D), &["fuse-mask"], &[2, 2, 40], mode);
        for g in [&g2, &g1] {
            assert_eq!(ops(g, "flex_kernel"), 2);
            for op in [
                "magnet",
                "mask_crop",
                "gauss_mask",
                "mask_mul",
                "coord_grid",
                "scale",
            ] {
                assert_eq!(ops(g, op), 0, "{op} left in {}", g.name);
            }
        }
        // With the frozen masks materialised the crop is known at compile time.
        let both = ["materialize-frozen", "fuse-mask"];
        let g = equivalent(&program(SMALL_2D), &both, &[2, 2, 9, 9], mode);
        let k = conv_kernels(&g);
        assert!(k[0].1.iter().all(|d| matches!(d, Dim::Known(_))), "{k:?}");
        let g = equivalent(&program(SMALL_1D), &both, &[2, 2, 40], mode);
        let k = conv_kernels(&g);
        assert!(matches!(k[0].1[2], Dim::Known(e) if e < 40), "{k:?}");
        assert!(matches!(k[1].1[2], Dim::Dyn { max: 40 }), "{k:?}");
    }
}

#[test]
fn fuse_mask_keeps_outputs_on_flexnet7_and_flextcn6() {
    let both = ["materialize-frozen", "fuse-mask"];
    let g = equivalent(
        &example("flexnet7_cifar10.fnet"),
        &both,
        &[1, 3, 32, 32],
        CompileMode::Inference,
    );
    assert_eq!(ops(&g, "flex_kernel"), 15);
    let g = equivalent(
        &example("flextcn6_smnist.fnet"),
        &both,
        &[1, 1, 784],
        CompileMode::Inference,
    );
    assert_eq!(ops(&g, "flex_kernel"), 12);
    assert_eq!(ops(&g, "magnet"), 0);
}

/// Inference with bound weights: every kernel becomes a constant of the cropped size,
/// the kernel networks leave the graph, and the outputs do not move.
fn folded(graph: &Graph, shape: &[usize]) {
    let store = weights(graph);
    let x: Tensor<f32> = random(shape, 23);
    let before = forward(graph, &store, &x, Mode::Eval);
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.weights = Some(store.clone());
    let after = passes(graph, &["materialize-frozen", "fuse-mask"], &mut ctx);
    for op in [
        "magnet",
        "flex_kernel",
        "mask_crop",
        "gauss_mask",
        "mask_mul",
        "coord_grid",
    ] {
        assert_eq!(ops(&after, op), 0, "{op} left in {}", graph.name);
    }
    assert!(!after.params().any(|p| p.1.name.contains("kernel_net")));
    for (conv, dims) in conv_kernels(&after) {
        if let Some(size) = before.kernel_sizes.get(&conv) {
            let want: Vec<Dim> = size.iter().map(|&k| Dim::Known(k as u64)).collect();
            assert_eq!(dims[2..], want[..], "{conv}");
            let note = ctx
                .notes
                .iter()
                .find(|n| n.layer == conv && n.pass == "fuse-mask");
            assert!(
                note.expect("a note").text.contains("folded to a constant"),
                "{conv}"
            );
        }
    }
    let out = forward(&after, &store, &x, Mode::Eval);
    assert_close(&out.outputs[0], &before.outputs[0], 1e-5, &graph.name);
    assert!(out.kernel_sizes.is_empty());
}

#[test]
fn fuse_mask_folds_kernels_with_bound_weights() {
    folded(&program(SMALL_2D), &[2, 2, 9, 9]);
    folded(&program(SMALL_1D), &[2, 2, 40]);
    folded(&example("flextcn6_smnist.fnet"), &[1, 1, 784]);
    folded(&example("flexnet7_cifar10.fnet"), &[1, 3, 32, 32]);
}

#[test]
fn training_graphs_are_fused_but_never_folded() {
    let g = example("flextcn6_smnist.fnet");
    let mut ctx = PassContext::new(CompileMode::Training);
    ctx.weights = Some(weights(&g));
    let after = passes(&g, &["materialize-frozen", "fuse-mask"], &mut ctx);
    assert_eq!(ops(&after, "flex_kernel"), 12);
    assert_eq!(ops(&after, "const"), 0);
    assert_eq!(after.param_counts(), g.param_counts());
    let note = &ctx
        .notes
        .iter()
        .find(|n| n.layer == "tcn1.flex1")
        .unwrap()
        .text;
    assert_eq!(note, "kernel 784 -> cropped at run time (learnable mask)");
}

#[test]
fn print_after_snapshots() {
    let mut examples: Vec<_> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fnet"))
        .collect();
    examples.sort();
    for path in examples {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        for pass in ["materialize-frozen", "fuse-mask"] {
            let out = compile(&CompileArgs {
                model: path.clone(),
                options: Options::default(),
                mode: CompileMode::Inference,
                passes: None,
                print_after: vec![pass.to_string()],
                verbose: false,
                weights: None,
                batch: 1,
                cost_backend: fnet::cost::CostTableId::Reference,
                precision: fnet::ir::DType::F32,
            })
            .unwrap_or_else(|e| panic!("{stem}: {e:?}"));
            insta::assert_snapshot!(format!("{pass}__{stem}"), out.printed);
        }
    }
}

fn compile_with(model: &str, weights: Option<std::path::PathBuf>) -> Result<String, String> {
    compile(&CompileArgs {
        model: root().join("examples").join(model),
        options: Options::default(),
        mode: CompileMode::Inference,
        passes: Some(vec!["materialize-frozen".into(), "fuse-mask".into()]),
        print_after: vec!["fuse-mask".into()],
        verbose: false,
        weights,
        batch: 1,
        cost_backend: fnet::cost::CostTableId::Reference,
        precision: fnet::ir::DType::F32,
    })
    .map(|c| c.printed)
    .map_err(|e| match e {
        fnet::cli::CliError::Run(r) => r.message,
        fnet::cli::CliError::Program(p) => p.render(),
    })
}

#[test]
fn compile_binds_weights_from_a_file() {
    let dir = std::env::temp_dir().join(format!("fnet-passes-flex-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let g = example("flextcn6_smnist.fnet");
    let path = dir.join("w.safetensors");
    fnet::io::weights::write_weights(&path, &weights(&g)).unwrap();
    let ir = compile_with("flextcn6_smnist.fnet", Some(path.clone())).unwrap();
    assert_eq!(ir.matches("from fuse-mask").count(), 12, "{ir}");
    assert!(!ir.contains("magnet"));
    // Weights for another model, and a missing file, are errors naming the file.
    let e = compile_with("flexnet7_cifar10.fnet", Some(path.clone())).unwrap_err();
    assert!(
        e.contains("w.safetensors") && e.contains("does not match"),
        "{e}"
    );
    let e = compile_with("flextcn6_smnist.fnet", Some(dir.join("none.safetensors"))).unwrap_err();
    assert!(e.contains("none.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
