//! Constant folding runs in the precision the graph will run in. With weights bound,
//! `fuse-mask` evaluates each FlexConv kernel at compile time; for a graph that runs
//! in f64 (`fnetc run --f64`) it must fold in f64 and keep an f64 constant, so the
//! optimised graph agrees with the unoptimised one (`-O0`) to f64 rounding, not f32's.

mod common;

use common::{perturbed_weights, program, random};
use fnet::io::npy::{read_npy, write_npy};
use fnet::io::weights::write_weights;
use fnet::ir::graph::Graph;
use fnet::ir::types::DType;
use fnet::passes::pipeline::default_pipeline;
use fnet::passes::{CompileMode, PassContext};
use fnet::runtime::{run, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Two 2-D FlexConvs with learnable masks (cropped from the bound mask parameters).
const FLEX2D: &str = "model flex {
  input x: f32[B, 2, 12, 12]
  seed 0
  def flex(c) = flexconv(c, horizon: 9,
                         kernel: magnet(hidden: 8, layers: 2, input_scale: 25.6),
                         mask: gauss(sigma: 0.3, threshold: 0.1))
  return x |> flex(3) |> relu |> flex(4) |> global_avg_pool |> linear(5)
}";

/// A causal 1-D FlexConv (the crop keeps the newest taps).
const FLEX1D: &str = "model tcn {
  input x: f32[B, 1, 40]
  seed 0
  return x |> flexconv(3, horizon: same, causal: true,
                       kernel: magnet(hidden: 8, layers: 2),
                       mask: gauss(sigma: 0.2, threshold: 0.1)) |> relu
}";

fn outputs(g: &Graph, store: &ParamStore<f32>, x: &Tensor<f64>) -> Tensor<f64> {
    let store: ParamStore<f64> = store.iter().map(|(k, v)| (k.clone(), v.cast())).collect();
    run(g, &store, std::slice::from_ref(x), &RunOptions::default())
        .expect("runs")
        .outputs
        .remove(0)
}

/// The default inference pipeline with `store` bound, folding in `precision`.
fn optimised(g: &Graph, store: &ParamStore<f32>, precision: DType) -> Graph {
    let mut out = g.clone();
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.weights = Some(store.clone());
    ctx.precision = precision;
    default_pipeline(CompileMode::Inference)
        .run(&mut out, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

/// max |a − b| / max(1, max |b|).
fn rel(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    a.max_abs_diff(b).expect("same shape") / b.max_abs().max(1.0)
}

#[test]
fn folded_flexconv_kernels_keep_f64_precision() {
    for (text, shape) in [(FLEX2D, vec![2, 2, 12, 12]), (FLEX1D, vec![2, 1, 40])] {
        let g = program(text);
        let store = perturbed_weights::<f32>(&g, 7);
        let x = random::<f64>(&shape, 5);
        let want = outputs(&g, &store, &x);
        let f64_fold = optimised(&g, &store, DType::F64);
        let consts = (f64_fold.g.node_weights())
            .filter(|n| n.op.name() == "const")
            .count();
        assert!(
            consts > 0,
            "{}: the kernels fold with bound weights",
            g.name
        );
        let err = rel(&outputs(&f64_fold, &store, &x), &want);
        assert!(err < 1e-12, "{}: folded in f64, rel diff {err:e}", g.name);
        // Folding in f32 (the graph's own dtype) is f32-accurate only: this is what
        // the check above tells apart.
        let f32_fold = optimised(&g, &store, DType::F32);
        let err = rel(&outputs(&f32_fold, &store, &x), &want);
        assert!(
            err > 1e-10 && err < 1e-5,
            "{}: folded in f32, {err:e}",
            g.name
        );
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("f64_folding");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn fnetc(args: &[&Path]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args(args)
        .output()
        .expect("fnetc runs");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

#[test]
fn fnetc_run_f64_agrees_with_o0_on_a_flexconv_model() {
    let model = tmp("flex.fnet");
    std::fs::write(&model, FLEX2D).expect("write model");
    let g = program(FLEX2D);
    let weights = tmp("flex.safetensors");
    write_weights(&weights, &perturbed_weights::<f32>(&g, 9)).expect("write weights");
    let input = tmp("x.npy");
    write_npy(&input, &random::<f64>(&[3, 2, 12, 12], 4)).expect("write input");
    let run = |extra: &[&str], out: &Path| {
        let mut args: Vec<&Path> = ["run"].iter().map(Path::new).collect();
        args.extend([model.as_path(), Path::new("-w"), &weights]);
        args.extend([Path::new("-i"), &input, Path::new("-o"), out]);
        args.extend(extra.iter().map(Path::new));
        fnetc(&args);
        read_npy::<f64>(out).expect("output written")
    };
    let o0 = run(&["--f64", "-O0"], &tmp("o0.npy"));
    let default = run(&["--f64"], &tmp("default.npy"));
    let err = rel(&default, &o0);
    assert!(err < 1e-12, "run --f64 vs -O0 --f64: rel diff {err:e}");
}
