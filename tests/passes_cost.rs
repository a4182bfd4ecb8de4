//! The cost model and `choose-conv-algo`: decisions that flip where the fitted table
//! says they should (FFT for FlexTCN's long causal 30-channel kernels at length 784
//! from batch 2, the register-blocked direct conv for every 3×3 conv of ResNet-20 at
//! batch 1 and 64), a monotone kernel-size sweep, the `algo:` and `FNET_CONV_ALGO`
//! overrides, numeric equivalence on the interpreter before and after the pass,
//! `--print-after=choose-conv-algo` snapshots of every example, and `--explain`.

use std::path::{Path, PathBuf};
use std::process::Command;

use fnet::cli::compile::{compile, CompileArgs};
use fnet::cost::{ConvShape, CostTable, Decider};
use fnet::driver::{compile_file, compile_str};
use fnet::eval::Options;
use fnet::ir::graph::Graph;
use fnet::ir::op::{ConvAlgo, Op, Padding};
use fnet::passes::choose_conv_algo::{decide, parse_algo, ChooseConvAlgo};
use fnet::passes::{CompileMode, PassContext, PassManager};
use fnet::runtime::{initialise, run, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

const EXAMPLES: &[&str] = &[
    "flexnet7_cifar10",
    "flextcn6_smnist",
    "lenet_mnist",
    "resnet20_cifar10",
    "resnet20_lc_cifar10",
    "resnet20_slots_cifar10",
    "resnet32_s16u1d_cifar10",
];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.fnet"))
}

fn graph(name: &str) -> Graph {
    match compile_file(&example(name), &Options::default()) {
        Ok((_, m)) => m.graph,
        Err(r) => panic!("{name}:\n{}", r.render()),
    }
}

fn program(text: &str) -> Graph {
    match compile_str("test.fnet", text, &Options::default()) {
        Ok((_, m)) => m.graph,
        Err(r) => panic!("{}", r.render()),
    }
}

/// The graph after `choose-conv-algo` alone, and its context.
fn choose(g: Graph) -> (Graph, PassContext) {
    choose_at(g, 1)
}

/// As [`choose`], with a symbolic batch costed at `batch`.
fn choose_at(mut g: Graph, batch: u64) -> (Graph, PassContext) {
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.batch = batch;
    PassManager::new(vec![Box::new(ChooseConvAlgo)])
        .run(&mut g, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e:?}"));
    (g, ctx)
}

/// Every conv's (name, algo).
fn algos(g: &Graph) -> Vec<(String, ConvAlgo)> {
    let order = g.topo_order().expect("acyclic");
    order
        .into_iter()
        .filter_map(|n| match &g.node(n).op {
            Op::Conv(c) => Some((g.node(n).name.clone(), c.algo)),
            _ => None,
        })
        .collect()
}

fn conv1d_program(k: u64, extra: &str) -> Graph {
    program(&format!(
        "model m {{\n  input x: f32[4, 30, 784]\n  return x |> conv1d(30, {k}, padding: causal{extra})\n}}\n"
    ))
}

#[test]
fn fft_wins_for_flextcn_long_causal_kernels_at_784() {
    // From batch 2 the FFT wins the 30 -> 30 channel FlexConvs (784-tap bound). The
    // first FlexConv has one input channel: the blocked direct loop wins it.
    for batch in [2, 8, 64] {
        let (g, _) = choose_at(graph("flextcn6_smnist"), batch);
        let mut flex = 0;
        for (name, algo) in algos(&g) {
            let c = &g.conv_costs[&name];
            assert_eq!(c.decider, Decider::Model);
            if name.contains(".flex") && c.shape.ci == 30 {
                flex += 1;
                assert_eq!(algo, ConvAlgo::Fft, "{name} at batch {batch}");
                assert!(c.estimate.fft < c.estimate.direct && c.estimate.fft < c.estimate.im2col);
            } else {
                // The 1x1 projection shortcut and the 1-channel FlexConv.
                assert_ne!(algo, ConvAlgo::Fft, "{name} at batch {batch}");
            }
        }
        assert_eq!(flex, 11);
    }
    // At batch 1 the FFT's 900 kernel transforms are not amortised: the blocked direct
    // loop is measured faster (8.3 ms against 18.0 ms) and the model agrees.
    let (g, _) = choose_at(graph("flextcn6_smnist"), 1);
    for (name, algo) in algos(&g) {
        if name.contains(".flex") {
            assert_eq!(algo, ConvAlgo::Direct, "{name} at batch 1");
        }
    }
}

#[test]
fn three_by_three_convs_of_resnet20_never_take_the_fft() {
    let (g, _) = choose(graph("resnet20_cifar10"));
    let table = CostTable::reference();
    let convs = algos(&g);
    assert_eq!(convs.len(), 19, "option-A shortcuts have no conv");
    for (name, algo) in convs {
        let c = &g.conv_costs[&name];
        assert_ne!(algo, ConvAlgo::Fft, "{name}");
        assert_eq!(algo, table.estimate(&c.shape).cheapest(), "{name}");
    }
    // Where the FFT could run a 3x3 ("same" padding), it still loses by far.
    for &(c, hw) in &[(16, 32), (32, 16), (64, 8)] {
        let s = ConvShape::plain(1, c, c, &[hw, hw], &[3, 3], Padding::Same);
        let e = table.estimate(&s);
        assert!(e.fft > 2.0 * e.direct.min(e.im2col), "{c}x{hw}: {e:?}");
    }
}

#[test]
fn direct_wins_every_3x3_conv_of_resnet20_at_batch_1_and_64() {
    // The register-blocked direct kernel beats im2col + matrixmultiply on these shapes
    // (examples/conv_gflops.rs), and the fitted model says so.
    for batch in [1, 64] {
        let (g, _) = choose_at(graph("resnet20_cifar10"), batch);
        let convs = algos(&g);
        assert_eq!(convs.len(), 19);
        for (name, algo) in convs {
            let c = &g.conv_costs[&name];
            assert_eq!(c.shape.kernel, vec![3, 3], "{name}");
            assert_eq!(c.shape.batch, batch);
            assert_eq!(
                algo,
                ConvAlgo::Direct,
                "{name} at batch {batch}: {:?}",
                c.estimate
            );
            assert!(c.estimate.direct < c.estimate.im2col, "{name}");
        }
    }
}

#[test]
fn direct_wins_for_3x3_where_there_is_little_to_multiply() {
    // Depthwise and single-channel 3x3 convs: no GEMM to amortise the unfold.
    for text in [
        "model m {\n  input x: f32[1, 32, 32, 32]\n  return x |> conv2d(32, 3, padding: 1, groups: 32)\n}\n",
        "model m {\n  input x: f32[1, 1, 28, 28]\n  return x |> conv2d(1, 3, padding: 1)\n}\n",
    ] {
        let (g, _) = choose(program(text));
        assert_eq!(algos(&g)[0].1, ConvAlgo::Direct, "{text}");
    }
}

#[test]
fn kernel_size_sweep_flips_once_to_fft() {
    let table = CostTable::reference();
    let picks: Vec<(u64, ConvAlgo)> = (1..=785)
        .map(|k| {
            let s = ConvShape::plain(4, 30, 30, &[784], &[k], Padding::Causal);
            (k, table.estimate(&s).cheapest())
        })
        .collect();
    let first_fft = picks
        .iter()
        .position(|&(_, a)| a == ConvAlgo::Fft)
        .expect("the FFT wins somewhere");
    assert!(first_fft > 0, "a 1-tap conv should not take the FFT");
    for &(k, a) in &picks[first_fft..] {
        assert_eq!(a, ConvAlgo::Fft, "not monotone at k = {k}");
    }
    for &(k, a) in &picks[..first_fft] {
        assert_ne!(a, ConvAlgo::Fft, "k = {k}");
    }
    let flip = picks[first_fft].0;
    assert!((2..=400).contains(&flip), "flip at {flip}");
    // The pass sees the same: just below and at the flip.
    let below = algos(&choose(conv1d_program(flip - 1, "")).0)[0].1;
    let at = algos(&choose(conv1d_program(flip, "")).0)[0].1;
    assert_ne!(below, ConvAlgo::Fft);
    assert_eq!(at, ConvAlgo::Fft);
}

#[test]
fn programs_algo_overrides_the_model() {
    let (g, _) = choose(conv1d_program(785, ", algo: direct"));
    let (name, algo) = algos(&g).remove(0);
    assert_eq!(algo, ConvAlgo::Direct);
    let c = &g.conv_costs[&name];
    assert_eq!(c.decider, Decider::Program);
    assert_eq!(c.estimate.cheapest(), ConvAlgo::Fft, "the model disagrees");
    assert!(fnet::ir::print::print_graph(&g).contains("(by algo: in the program)"));
    // An `algo: fft` the FFT cannot run is kept and noted (the interpreter runs direct).
    let (g, ctx) = choose(program(
        "model m {\n  input x: f32[1, 8, 64]\n  return x |> conv1d(8, 9, stride: 2, algo: fft)\n}\n",
    ));
    assert_eq!(algos(&g)[0].1, ConvAlgo::Fft);
    assert!(ctx.notes.iter().any(|n| n.text.contains("does not apply")));
    // Idempotent: running the pass again changes nothing.
    let (again, _) = choose(g.clone());
    assert_eq!(algos(&again), algos(&g));
}

#[test]
fn env_override_precedence() {
    let table = CostTable::reference();
    let long = ConvShape::plain(8, 30, 30, &[784], &[785], Padding::Causal);
    let mut strided = ConvShape::plain(1, 8, 8, &[64], &[9], Padding::Causal);
    strided.stride = vec![2];
    let d = ConvAlgo::Direct;
    assert_eq!(
        decide(ConvAlgo::Auto, None, &long, table),
        (ConvAlgo::Fft, Decider::Model)
    );
    assert_eq!(
        decide(ConvAlgo::Auto, Some(d), &long, table),
        (d, Decider::Env)
    );
    assert_eq!(
        decide(ConvAlgo::Im2col, Some(d), &long, table).1,
        Decider::Program
    );
    // fft where it cannot run falls back to the model.
    let (a, by) = decide(ConvAlgo::Auto, Some(ConvAlgo::Fft), &strided, table);
    assert_ne!(a, ConvAlgo::Fft);
    assert_eq!(by, Decider::Model);
    assert_eq!(parse_algo("im2col"), Ok(Some(ConvAlgo::Im2col)));
    assert_eq!(parse_algo("auto"), Ok(None));
    assert!(parse_algo("winograd")
        .unwrap_err()
        .contains("FNET_CONV_ALGO"));
}

fn fnetc(args: &[&str], env: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fnetc"));
    cmd.args(args).env_remove("FNET_CONV_ALGO");
    if let Some(v) = env {
        cmd.env("FNET_CONV_ALGO", v);
    }
    let o = cmd.output().expect("fnetc runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn env_variable_overrides_every_auto_conv() {
    let lenet = example("lenet_mnist");
    let lenet = lenet.to_str().unwrap();
    let args = ["compile", lenet, "--print-after=choose-conv-algo"];
    for algo in ["direct", "im2col"] {
        let (ok, out, err) = fnetc(&args, Some(algo));
        assert!(ok, "{err}");
        let convs: Vec<&str> = out.lines().filter(|l| l.contains(" = conv(")).collect();
        assert_eq!(convs.len(), 2);
        for l in convs {
            assert!(l.contains(&format!("algo={algo} ")), "{l}");
            assert!(l.contains("(by FNET_CONV_ALGO)"), "{l}");
        }
    }
    let (ok, _, err) = fnetc(&args, Some("winograd"));
    assert!(!ok);
    assert!(err.contains("FNET_CONV_ALGO=winograd"), "{err}");
    // fft on convs it cannot run: the model decides, and --explain says so.
    let (ok, out, err) = fnetc(&["compile", lenet, "--explain"], Some("fft"));
    assert!(ok, "{err}");
    assert!(out.contains("FNET_CONV_ALGO=fft does not apply"), "{out}");
}

fn random_input(shape: &[usize], seed: u64) -> Tensor<f32> {
    let mut rng = Pcg64::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect(),
    )
    .unwrap()
}

/// Non-trivial BatchNorm statistics and biases.
fn perturb(store: &mut ParamStore<f32>) {
    for (name, t) in store.iter_mut() {
        for (i, v) in t.data.iter_mut().enumerate() {
            let c = i as f32;
            if name.ends_with("running_var") {
                *v = 0.5 + 0.3 * (c * 0.7).sin().abs();
            } else if name.ends_with("running_mean") || name.ends_with("bias") {
                *v += 0.1 * (c * 1.3).cos();
            }
        }
    }
}

#[test]
fn outputs_equal_before_and_after_choose_conv_algo() {
    for (name, shape) in [
        ("lenet_mnist", vec![2, 1, 28, 28]),
        ("resnet20_cifar10", vec![2, 3, 32, 32]),
        ("flextcn6_smnist", vec![1, 1, 784]),
    ] {
        let before = graph(name);
        let (after, _) = choose(before.clone());
        let chosen = algos(&after);
        assert!(chosen.iter().all(|(_, a)| *a != ConvAlgo::Auto), "{name}");
        let mut store = initialise::<f32>(&before, 11).unwrap();
        perturb(&mut store);
        let x = random_input(&shape, 5);
        let opts = RunOptions::default();
        let y0 = run(&before, &store, std::slice::from_ref(&x), &opts).unwrap();
        let y1 = run(&after, &store, &[x], &opts).unwrap();
        let (a, b) = (&y0.outputs[0], &y1.outputs[0]);
        assert_eq!(a.shape, b.shape);
        let err = a.max_abs_diff(b).unwrap();
        let scale = a.max_abs().max(1.0);
        assert!(err <= 2e-4 * scale, "{name}: {err:e} (scale {scale})");
        assert!(a.data.iter().all(|v| v.is_finite()));
        eprintln!("{name}: max |diff| {err:.2e}, algos {chosen:?}");
    }
}

fn compiled(name: &str, print_after: &[&str], batch: u64) -> fnet::cli::compile::Compiled {
    compile(&CompileArgs {
        model: example(name),
        options: Options::default(),
        mode: CompileMode::Inference,
        passes: None,
        print_after: print_after.iter().map(|s| s.to_string()).collect(),
        verbose: false,
        weights: None,
        batch,
        cost_backend: fnet::cost::CostTableId::Reference,
        precision: fnet::ir::DType::F32,
    })
    .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn print_after_choose_conv_algo_snapshots() {
    if std::env::var_os("FNET_CONV_ALGO").is_some() {
        return; // The snapshots are of the cost model's own choices.
    }
    for name in EXAMPLES {
        let out = compiled(name, &["choose-conv-algo"], 1);
        assert!(out.printed.contains(" est direct "), "{name}");
        insta::assert_snapshot!(format!("choose-conv-algo__{name}"), out.printed);
    }
}

#[test]
fn explain_reports_kernels_algorithms_and_costs() {
    let explain = |name: &str| {
        let path = example(name);
        let (ok, out, err) = fnetc(
            &[
                "compile",
                path.to_str().unwrap(),
                "--explain",
                "--batch",
                "8",
            ],
            None,
        );
        assert!(ok, "{err}");
        out
    };
    let out = explain("flextcn6_smnist");
    assert!(out.starts_with("explain flextcn6: 13 convs"), "{out}");
    assert!(out.contains("\nconv tcn1.flex1\n"), "{out}");
    assert!(out.contains("before cropping (horizon)"), "{out}");
    assert!(
        out.contains("algorithm: fft (by cost model); estimated direct "),
        "{out}"
    );
    assert!(out.contains("fft* "), "{out}");
    assert!(out.contains("\nconv tcn1.shortcut1\n"), "{out}");
    let out = explain("resnet20_cifar10");
    assert!(out.contains("19 convs, batch 8"), "{out}");
    assert!(out.contains("  kernel: 3x3\n"), "{out}");
    assert!(
        out.contains("shape: batch 8, 16 -> 16 channels, input 32x32"),
        "{out}"
    );
    // The library call gives the same text.
    let c = compiled("resnet20_cifar10", &[], 8);
    assert_eq!(fnet::cli::explain::explain(&c.graph, &c.ctx), out);
}
