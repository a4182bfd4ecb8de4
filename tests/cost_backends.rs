//! The per-backend cost tables: each committed table is fitted for its backend and
//! agrees with the measurements it was fitted on (`src/cost/<backend>_points.csv`),
//! `choose-conv-algo` consults the table of `PassContext::cost_backend`, and the
//! decisions differ where the backends' measurements differ: FlexTCN-6's long
//! 30-channel kernels at batch 1 run direct on the reference interpreter (measured
//! faster there) and by FFT on a GPU (measured faster there).

mod common;

use common::example;
use fnet::cost::cheapest;
use fnet::cost::points::{committed_path, read_points};
use fnet::cost::{ConvShape, CostTable, CostTableId, CostedAlgo};
use fnet::ir::graph::Graph;
use fnet::ir::op::{ConvAlgo, Op};
use fnet::passes::choose_conv_algo::ChooseConvAlgo;
use fnet::passes::{CompileMode, PassContext, PassManager};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn fnetc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args(args)
        .env_remove("FNET_CONV_ALGO")
        .output()
        .expect("fnetc runs")
}

/// `g` after `choose-conv-algo` with `backend`'s table at `batch`.
fn choose(mut g: Graph, backend: CostTableId, batch: u64) -> Graph {
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.batch = batch;
    ctx.cost_backend = backend;
    PassManager::new(vec![Box::new(ChooseConvAlgo)])
        .run(&mut g, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e:?}"));
    g
}

/// Every conv's name, input channels and algorithm.
fn convs(g: &Graph) -> Vec<(String, u64, ConvAlgo)> {
    g.g.node_weights()
        .filter_map(|n| match &n.op {
            Op::Conv(conv) => {
                let ci = g.conv_costs.get(&n.name).map_or(0, |c| c.shape.ci);
                Some((n.name.clone(), ci, conv.algo))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn every_committed_table_is_fitted_for_its_backend() {
    for b in CostTableId::ALL {
        let t = CostTable::of(b);
        assert_eq!(t.backend, b);
        assert!(
            t.command.contains(&format!("--backend {}", b.name())),
            "{}",
            t.command
        );
        assert!(t.points >= 100, "{}: {} points", b.name(), t.points);
        assert_eq!(
            t.im2col.is_some(),
            matches!(b, CostTableId::Reference | CostTableId::Jit),
            "{}",
            b.name()
        );
        // Only the JIT runs Winograd.
        assert_eq!(t.winograd2.is_some(), b == CostTableId::Jit, "{}", b.name());
        assert_eq!(t.winograd4.is_some(), b == CostTableId::Jit, "{}", b.name());
        for (algo, c) in [("direct", &t.direct), ("fft", &t.fft)] {
            assert!(c.median_rel_err < 0.5, "{} {algo}: {c:?}", b.name());
            assert!(c.overhead_s >= 0.0 && c.coef.iter().all(|&v| v >= 0.0));
        }
    }
    assert_eq!("opencl-gpu".parse(), Ok(CostTableId::OpenclGpu));
    assert!("cuda"
        .parse::<CostTableId>()
        .unwrap_err()
        .contains("opencl-cpu"));
}

/// The committed points of `backend` of the rows `rows` lets through, grouped by
/// shape: every row's seconds.
fn measured(
    backend: CostTableId,
    rows: impl Fn(CostedAlgo) -> bool,
) -> BTreeMap<String, (ConvShape, BTreeMap<&'static str, f64>)> {
    let text = std::fs::read_to_string(committed_path(backend)).expect("committed points");
    let mut out = BTreeMap::new();
    let points = read_points(&text).unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
    for s in points.into_iter().filter(|s| rows(s.algo)) {
        let key = format!("{:?}", s.shape);
        let entry = out.entry(key).or_insert((s.shape, BTreeMap::new()));
        entry.1.insert(s.algo.name(), s.seconds);
    }
    out
}

#[test]
fn each_tables_choices_are_near_the_measured_best() {
    // Over the shapes where more than one algorithm was measured, the model's pick is
    // the measured fastest in most cases, and never far from it.
    for b in CostTableId::ALL {
        let table = CostTable::of(b);
        let (mut shapes, mut right, mut worst) = (0, 0, 1.0f64);
        let forward = |r| matches!(r, CostedAlgo::Forward(_));
        for (key, (shape, times)) in measured(b, forward) {
            if times.len() < 2 {
                continue;
            }
            shapes += 1;
            let best = times.values().copied().fold(f64::INFINITY, f64::min);
            let pick = table.estimate(&shape).cheapest();
            let got = times[pick.name()];
            right += usize::from(got == best);
            worst = worst.max(got / best);
            assert!(
                got <= 3.0 * best,
                "{}: {key}: picked {pick:?}, {times:?}",
                b.name()
            );
        }
        assert!(shapes >= 40, "{}: {shapes} shapes", b.name());
        let share = right as f64 / shapes as f64;
        assert!(
            share >= 0.8,
            "{}: right on {share:.2} of {shapes}",
            b.name()
        );
        eprintln!(
            "{}: measured fastest on {right}/{shapes}, worst pick {worst:.2}x the best",
            b.name()
        );
    }
}

/// The JIT table's backward rows pick, per backward conv, the routine measured fastest
/// in most cases and one near it in the rest: over the shapes where more than one
/// filter-gradient (data-gradient) routine was measured, the cheapest estimate
/// among them against the measured times.
#[test]
fn the_jit_tables_backward_choices_are_near_the_measured_best() {
    let table = CostTable::of(CostTableId::Jit);
    let backward = table
        .backward
        .as_ref()
        .expect("the JIT table has backward rows");
    assert_eq!(backward.filter.len(), 4);
    assert_eq!(backward.data.len(), 5);
    for c in backward.filter.values().chain(backward.data.values()) {
        assert!(c.median_rel_err < 0.5, "{c:?}");
        assert!(c.overhead_s >= 0.0 && c.coef.iter().all(|&v| v >= 0.0));
    }
    for kind in ["filter", "data"] {
        let rows = |r: CostedAlgo| match r {
            CostedAlgo::Filter(_) => kind == "filter",
            CostedAlgo::Data(_) => kind == "data",
            CostedAlgo::Forward(_) => false,
        };
        let (mut shapes, mut right, mut worst) = (0, 0, 1.0f64);
        for (key, (shape, times)) in measured(CostTableId::Jit, rows) {
            if times.len() < 2 {
                continue;
            }
            shapes += 1;
            let est = table.estimate_backward(&shape).expect("backward rows");
            let filter = est.filter.iter().map(|&(a, s)| (CostedAlgo::Filter(a), s));
            let data = est.data.iter().map(|&(a, s)| (CostedAlgo::Data(a), s));
            let ranked: Vec<(&str, f64)> = filter
                .chain(data)
                .filter(|&(r, _)| rows(r))
                .map(|(r, s)| (r.name(), s))
                .collect();
            let pick = cheapest(&ranked, |a| times.contains_key(a)).expect("a finite estimate");
            let best = times.values().copied().fold(f64::INFINITY, f64::min);
            let got = times[pick];
            right += usize::from(got == best);
            worst = worst.max(got / best);
            // Training batches within half again of the best; a first conv's filter
            // gradient at batch 1 (3 input channels, a few microseconds) further.
            let slack = if shape.batch >= 8 { 1.5 } else { 3.5 };
            assert!(
                got <= slack * best,
                "{kind}: {key}: picked {pick}, {times:?}"
            );
        }
        assert!(shapes >= 40, "{kind}: {shapes} shapes");
        let share = right as f64 / shapes as f64;
        eprintln!("{kind}: measured fastest on {right}/{shapes}, worst pick {worst:.2}x the best");
        assert!(share >= 0.6, "{kind}: right on {share:.2} of {shapes}");
    }
}

#[test]
fn flextcn_at_batch_1_runs_direct_on_the_reference_and_by_fft_on_a_gpu() {
    let g = example("flextcn6_smnist");
    let long = |g: &Graph| -> Vec<ConvAlgo> {
        convs(g)
            .into_iter()
            .filter(|(name, ci, _)| name.contains(".flex") && *ci == 30)
            .map(|(.., a)| a)
            .collect()
    };
    let reference = long(&choose(g.clone(), CostTableId::Reference, 1));
    let gpu = long(&choose(g.clone(), CostTableId::OpenclGpu, 1));
    assert_eq!(reference.len(), 11);
    assert!(
        reference.iter().all(|&a| a == ConvAlgo::Direct),
        "{reference:?}"
    );
    assert!(gpu.iter().all(|&a| a == ConvAlgo::Fft), "{gpu:?}");
    // At batch 64 every table takes the FFT for them.
    for b in CostTableId::ALL {
        let algos = long(&choose(g.clone(), b, 64));
        assert!(
            algos.iter().all(|&a| a == ConvAlgo::Fft),
            "{}: {algos:?}",
            b.name()
        );
    }
}

#[test]
fn compile_takes_the_cost_model_by_name() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flextcn6_smnist.fnet");
    let model = model.to_str().expect("utf-8 path");
    let out = fnetc(&["compile", model, "--explain", "--cost-model", "opencl-gpu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cost table `opencl-gpu`"), "{text}");
    let out = fnetc(&["compile", model, "--cost-model", "cuda"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opencl-gpu"), "{err}");
}
