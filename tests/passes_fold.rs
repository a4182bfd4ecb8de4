//! `fold-bases` and `fuse-epilogue`: the reference interpreter gives the same outputs
//! before and after each pass (random weights with BatchNorm statistics and biases moved
//! away from their initial values, random inputs, f64), the fold decision flips where
//! the cost model says, training keeps BatchNorm, and `--print-after` snapshots.

mod common;

use common::{example, example_path, input_shape, program, random, EXAMPLES};
use fnet::cli::compile::{compile, CompileArgs};
use fnet::cost::{CostTable, CostTableId};
use fnet::eval::Options;
use fnet::ir::graph::Graph;
use fnet::ir::op::Op;
use fnet::passes::fold_bases::{fold_is_cheaper, ConvShape};
use fnet::passes::pipeline::from_names;
use fnet::passes::{CompileMode, PassContext};
use fnet::runtime::interp::Mode;
use fnet::runtime::{initialise, run, ParamStore, RunOptions};
use fnet::tensor::Tensor;

/// Runs `passes` on a copy of `g`; returns the graph and the notes' texts by layer.
fn passes(g: &Graph, names: &[&str], mode: CompileMode, batch: u64) -> (Graph, PassContext) {
    let mut g = g.clone();
    let mut ctx = PassContext::new(mode);
    ctx.batch = batch;
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    from_names(&names)
        .unwrap()
        .run(&mut g, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    (g, ctx)
}

fn count(g: &Graph, name: &str) -> usize {
    g.g.node_indices()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

/// `initialise`, then every 1-D tensor (BatchNorm affine and statistics, biases) moved
/// deterministically away from its init; variances stay positive.
fn weights(g: &Graph) -> ParamStore<f64> {
    let mut store = initialise::<f64>(g, 11).unwrap();
    for (i, (name, t)) in store.iter_mut().enumerate() {
        if t.ndim() != 1 {
            continue;
        }
        for (c, v) in t.data.iter_mut().enumerate() {
            let s = (1.7 * c as f64 + 0.3 * i as f64 + 0.5).sin();
            if name.ends_with("running_var") {
                *v = 0.4 + 0.8 * s * s;
            } else {
                *v += 0.2 * s;
            }
        }
    }
    store
}

/// Asserts `a` and `b` compute the same outputs (and the same updated running
/// statistics in training), |diff| <= 1e-9 · max(1, max|output|).
fn same_outputs(what: &str, a: &Graph, b: &Graph, mode: Mode) {
    let w = weights(a);
    let x: Tensor<f64> = random(&input_shape(a, 2), 5);
    let opts = RunOptions {
        mode,
        ..RunOptions::default()
    };
    let ra = run(a, &w, std::slice::from_ref(&x), &opts).unwrap();
    let rb = run(b, &w, &[x], &opts).unwrap();
    for (ya, yb) in ra.outputs.iter().zip(&rb.outputs) {
        let scale = ya.max_abs().max(1.0);
        let err = ya.max_abs_diff(yb).unwrap();
        assert!(err <= 1e-9 * scale, "{what}: |diff| {err} at scale {scale}");
    }
    for (k, v) in &ra.updated_buffers {
        let err = v.max_abs_diff(&rb.updated_buffers[k]).unwrap();
        assert!(err <= 1e-9 * v.max_abs().max(1.0), "{what}: buffer {k}");
    }
}

fn notes(ctx: &PassContext, pass: &str) -> Vec<String> {
    ctx.notes
        .iter()
        .filter(|n| n.pass == pass)
        .map(|n| format!("{}: {}", n.layer, n.text))
        .collect()
}

const PRE: &[&str] = &["canonicalize", "cse", "dce"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    PRE.iter().chain(extra).copied().collect()
}

#[test]
fn fold_bases_is_exact_on_lc_and_shared_basis_resnets() {
    // (example, folds at batch 256, lc_fold ops): 19 LC layers, one kernel each;
    // 3 stages x 4 blocks x 2 basis convs, a kernel and (from the BN) a bias each.
    for (name, folds, lc_folds) in [
        ("resnet20_lc_cifar10", 19, 19),
        ("resnet32_s16u1d_cifar10", 24, 48),
        ("resnet20_cifar10", 0, 0),
    ] {
        let g = example(name);
        let (before, _) = passes(&g, PRE, CompileMode::Inference, 256);
        let (after, ctx) = passes(&g, &with(&["fold-bases"]), CompileMode::Inference, 256);
        assert_eq!(count(&after, "lc_fold"), lc_folds, "{name}");
        let folded = notes(&ctx, "fold-bases");
        assert_eq!(
            folded.iter().filter(|n| n.contains(": folded")).count(),
            folds,
            "{name}: {folded:#?}"
        );
        same_outputs(name, &before, &after, Mode::Eval);
    }
}

#[test]
fn fold_bases_folds_lc_in_training_with_trainable_coefficients() {
    let g = example("resnet20_lc_cifar10");
    let (before, _) = passes(&g, PRE, CompileMode::Training, 256);
    let (after, _) = passes(&g, &with(&["fold-bases"]), CompileMode::Training, 256);
    assert_eq!(count(&after, "lc_fold"), 19);
    // Every coefficient is still a trainable parameter read by an lc_fold.
    let coeffs: Vec<_> = after
        .params()
        .filter(|(_, n, _)| n.name.ends_with(".coeff.weight"))
        .collect();
    assert_eq!(coeffs.len(), 19);
    for (id, _, role) in coeffs {
        assert_eq!(role, fnet::ir::op::ParamRole::Trainable);
        let users = after.users(id);
        assert!(users.iter().all(|&u| after.node(u).op == Op::LcFold));
    }
    same_outputs("lc training", &before, &after, Mode::Train);

    // Shared bases have a BatchNorm between basis and 1x1: training keeps them.
    let g = example("resnet32_s16u1d_cifar10");
    let (after, ctx) = passes(&g, &with(&["fold-bases"]), CompileMode::Training, 256);
    assert_eq!(count(&after, "lc_fold"), 0);
    let kept = notes(&ctx, "fold-bases");
    assert_eq!(kept.len(), 24);
    assert!(
        kept.iter().all(|n| n.contains("kept unfolded")),
        "{kept:#?}"
    );
}

#[test]
fn fuse_epilogue_is_exact_on_the_resnets() {
    for name in [
        "resnet20_cifar10",
        "resnet20_lc_cifar10",
        "resnet32_s16u1d_cifar10",
    ] {
        let g = example(name);
        let (before, _) = passes(&g, &with(&["fold-bases"]), CompileMode::Inference, 256);
        let (after, ctx) = passes(
            &g,
            &with(&["fold-bases", "fuse-epilogue"]),
            CompileMode::Inference,
            256,
        );
        assert_eq!(count(&after, "batchnorm"), 0, "{name}: every BN folds");
        assert_eq!(count(&after, "relu"), 0, "{name}: every relu fuses");
        assert_eq!(count(&after, "conv"), 0, "{name}: every conv fuses");
        let fused = notes(&ctx, "fuse-epilogue");
        assert!(fused.iter().any(|n| n.ends_with("fused bn+add+relu")));
        same_outputs(name, &before, &after, Mode::Eval);
        // The epilogue alone on the unfolded graph, too.
        let (before, _) = passes(&g, PRE, CompileMode::Inference, 1);
        let (after, _) = passes(&g, &with(&["fuse-epilogue"]), CompileMode::Inference, 1);
        same_outputs(name, &before, &after, Mode::Eval);
    }
}

#[test]
fn training_does_not_fold_batchnorm() {
    let g = example("resnet20_cifar10");
    let (before, _) = passes(&g, PRE, CompileMode::Training, 1);
    let (after, ctx) = passes(&g, &with(&["fuse-epilogue"]), CompileMode::Training, 1);
    assert_eq!(count(&after, "bn_fold"), 0);
    assert_eq!(count(&after, "batchnorm"), count(&before, "batchnorm"));
    assert_eq!(count(&after, "batchnorm"), 19);
    let kept = notes(&ctx, "fuse-epilogue");
    assert_eq!(
        kept.iter().filter(|n| n.contains("kept batchnorm")).count(),
        19
    );
    same_outputs("resnet20 training", &before, &after, Mode::Train);
}

/// One LC layer: 8 -> 8 channels, 3x3, on a `side` x `side` input.
fn lc_program(side: u64) -> String {
    format!(
        "model lc_small {{\n  input x: f32[B, 8, {side}, {side}]\n  seed 0\n  \
         return x |> lc(8, 3, padding: 1) as mix |> relu\n}}\n"
    )
}

/// One shared-basis conv, 16 -> 16 channels on 16x16, `shared` shared filters.
fn basis_program(shared: u64) -> String {
    format!(
        "model sb {{\n  input x: f32[B, 16, 16, 16]\n  seed 0\n  \
         basis b = shared_basis(channels: 16, shared: {shared}, unique: 1)\n  \
         return x |> basis_conv(b, 1) as mix |> batchnorm |> relu\n}}\n"
    )
}

fn decide(text: &str, batch: u64) -> (Graph, Graph, String) {
    let g = program(text);
    let (before, _) = passes(&g, PRE, CompileMode::Inference, batch);
    let (after, ctx) = passes(&g, &with(&["fold-bases"]), CompileMode::Inference, batch);
    let n = notes(&ctx, "fold-bases");
    assert_eq!(n.len(), 1, "{n:#?}");
    (before, after, n[0].clone())
}

#[test]
fn the_fold_decision_flips_with_size_and_basis_width() {
    // LC, E = 1: the folded conv does the basis conv's work without the 1×1, and the
    // fitted model adds a per-conv overhead, so folding pays at any size: at 4×4 with
    // batch 1 the saved launch outweighs synthesising the kernel.
    let (before, after, note) = decide(&lc_program(4), 1);
    assert!(note.starts_with("mix: folded"), "{note}");
    assert_eq!(count(&after, "lc_fold"), 1);
    same_outputs("lc 4x4 batch 1", &before, &after, Mode::Eval);
    let (_, after, note) = decide(&lc_program(4), 8);
    assert!(note.starts_with("mix: folded"), "{note}");
    assert_eq!(count(&after, "conv"), 1);
    same_outputs("lc 4x4", &before, &after, Mode::Eval);
    let (before, after, note) = decide(&lc_program(32), 1);
    assert!(note.contains("folded basis 3x3 conv (8 -> 8 channels) + 1x1 (8 -> 8)"));
    same_outputs("lc 32x32", &before, &after, Mode::Eval);

    // Shared basis: 17 basis filters mixed to 16 fold.
    let (before, after, note) = decide(&basis_program(16), 1);
    assert!(
        note.contains("folded") && note.contains("batchnorm folded"),
        "{note}"
    );
    // The basis' BatchNorm folded; the one after the layer is fuse-epilogue's.
    assert_eq!(
        (count(&before, "batchnorm"), count(&after, "batchnorm")),
        (2, 1)
    );
    same_outputs("basis 16", &before, &after, Mode::Eval);
    // 3 filters (2 shared + 1 unique, two convs) mixed to 16: the blocked direct
    // kernel runs each small basis conv at a full 8-channel block, so the one folded
    // 16-channel conv costs less than the two basis convs and the 1x1.
    let (before, after, note) = decide(&basis_program(2), 64);
    assert!(
        note.contains("folded") && !note.contains("kept unfolded"),
        "{note}"
    );
    assert_eq!((count(&before, "conv"), count(&after, "conv")), (3, 1));
}

#[test]
fn fold_is_cheaper_follows_the_cost_model() {
    let conv = |cin, cout, k, side| ConvShape {
        batch: 1,
        in_channels: cin,
        out_channels: cout,
        groups: 1,
        kernel: vec![k, k],
        out_spatial: vec![side, side],
    };
    let reference = CostTable::reference();
    // 64 -> 64x8 basis then 64: 8x the k x k work unfolded.
    let d = fold_is_cheaper(reference, &[conv(64, 512, 3, 32)], &conv(512, 64, 1, 32));
    assert!(d.cheaper);
    assert_eq!(d.unfolded, 1024 * (512 * 64 * 9 + 64 * 512));
    assert_eq!(d.folded, 1024 * 64 * 64 * 9 + 64 * 512 * 64 * 9);
    // 4 basis filters combined into 64 outputs: the two steps are cheaper.
    let d = fold_is_cheaper(reference, &[conv(64, 4, 3, 32)], &conv(4, 64, 1, 32));
    assert!(!d.cheaper);
}

#[test]
fn fused_conv_keeps_its_algorithm() {
    let text = "model f {\n  input x: f32[B, 4, 12, 12]\n  seed 0\n  \
                return x |> conv2d(6, 5, padding: same, algo: fft) |> relu\n}\n";
    let g = program(text);
    let (before, _) = passes(&g, PRE, CompileMode::Inference, 1);
    let (after, _) = passes(&g, &with(&["fuse-epilogue"]), CompileMode::Inference, 1);
    let fused: Vec<_> = after
        .g
        .node_weights()
        .filter_map(|n| match &n.op {
            Op::FusedConv { conv, epilogue } => Some((conv.algo, epilogue.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        fused,
        vec![(
            fnet::ir::op::ConvAlgo::Fft,
            vec![fnet::ir::op::Epilogue::Relu]
        )]
    );
    same_outputs("fft conv", &before, &after, Mode::Eval);
}

#[test]
fn print_after_snapshots() {
    for name in EXAMPLES {
        for pass in ["fold-bases", "fuse-epilogue"] {
            let args = CompileArgs {
                model: example_path(name),
                options: Options::default(),
                mode: CompileMode::Inference,
                passes: Some(
                    with(&["fold-bases", "fuse-epilogue"])
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
                print_after: vec![pass.to_string()],
                verbose: false,
                weights: None,
                batch: 1,
                cost_backend: fnet::cost::CostTableId::Reference,
                precision: fnet::ir::DType::F32,
            };
            let out = compile(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
            insta::assert_snapshot!(format!("{pass}__{name}"), out.printed);
        }
    }
}

#[test]
fn fold_bases_decides_by_the_contexts_cost_table() {
    // 64 -> 16 basis, 16 -> 16 mix at 8x8, batch 1: the reference interpreter's fitted
    // times keep the two convs, an OpenCL device's launch overheads favour one conv.
    let text = "model f {\n  input x: f32[B, 64, 8, 8]\n  seed 0\n  \
                return x |> lc(16, 3, expansion: 1, padding: 1)\n}\n";
    let g = program(text);
    let convs = |backend| {
        let mut g = g.clone();
        let mut ctx = PassContext::new(CompileMode::Inference);
        ctx.cost_backend = backend;
        let names = ["materialize-frozen", "fold-bases"].map(String::from);
        from_names(&names)
            .unwrap()
            .run(&mut g, &mut ctx, &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        let note = ctx.notes.last().map(|n| n.text.clone()).unwrap_or_default();
        (count(&g, "conv"), note)
    };
    let (reference, why) = convs(CostTableId::Reference);
    assert_eq!(reference, 2, "{why}");
    assert!(why.starts_with("kept unfolded"), "{why}");
    for backend in [CostTableId::OpenclCpu, CostTableId::OpenclGpu] {
        let (n, why) = convs(backend);
        assert_eq!(n, 1, "{backend:?}: {why}");
        assert!(why.starts_with("folded"), "{backend:?}: {why}");
    }
    // The same decision through the function the pass calls, per table.
    let shape = |cin, cout, k| ConvShape {
        batch: 1,
        in_channels: cin,
        out_channels: cout,
        groups: 1,
        kernel: vec![k, k],
        out_spatial: vec![8, 8],
    };
    let decide = |b| fold_is_cheaper(CostTable::of(b), &[shape(64, 16, 3)], &shape(16, 16, 1));
    assert!(!decide(CostTableId::Reference).cheaper);
    assert!(decide(CostTableId::OpenclGpu).cheaper);
}
