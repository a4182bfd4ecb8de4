//! Whole-network gradients of the shipped examples against PyTorch
//! (`tools/golden_grads.py`, fixtures in `tests/fixtures/golden/grads/`): the autodiff
//! pass's training graph, run on the interpreter in training mode, must give PyTorch's
//! loss, the gradient of every parameter, and the running statistics PyTorch's
//! training-mode BatchNorm leaves (momentum 0.1, unbiased variance). Models: LeNet,
//! ResNet-20, FlexNet-7, a 64-step FlexTCN-6 (`flextcn_short.fnet`), LC-ResNet-20 at
//! E = 1 and E = 8, ResNet32-S16U1*, and the pooling supernet at slots {4, 7} and {1, 3}.
//!
//! The weights are not stored: both sides start from `fnetc init --seed 7` /
//! `initialise(…, 7)` (with the case's `--set`/`--config`) and apply golden_nets.py's
//! `perturb`. LeNet and ResNet-20 differentiate the elaborated graph; the newer cases
//! the graph after the training pipeline's passes before autodiff (slot
//! specialisation, `fuse-mask`'s `flex_kernel`, `fold-bases`' `lc_fold` where cheaper;
//! not `materialize-frozen`, which would seed the frozen LC bases with the model's
//! seed instead of 7). Dropout is set to p = 0 (the twins have none): its mask comes
//! from fnet's own generator, and its rule is checked by f64 differences in
//! tests/autodiff.rs.
//!
//! Gradients of more than 4096 elements in the newer fixtures are stored as a strided
//! sample (stride `sample_stride`, as in the script) plus the L2 norm of the whole
//! gradient, each compared at the same relative tolerance.
//!
//! The inputs are chosen (and the script checks) so that no ReLU input or max-pool
//! runner-up lies within the script's MARGIN of its kink: with an input 5.4e-7 from a ReLU's kink,
//! fnet's f32 forward put it on the other side and the f32 gradients differed from
//! PyTorch's by up to 1e-1 relative, exactly as flipping that one element does in f64.
//!
//! Tolerance, per tensor: |a − b| <= tol · max|expected|, tol 1e-4 for the f32
//! interpreter and 1e-6 for f64 (the fixture is PyTorch's float64 result rounded
//! once to float32, so the f64 run differs by that rounding only).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fnet::autodiff::{differentiate, Loss};
use fnet::driver::compile_file;
use fnet::eval::Options;
use fnet::io::weights::read_weights;
use fnet::ir::graph::Graph;
use fnet::ir::op::{Op, ParamRole};
use fnet::passes::{pipeline::from_names, CompileMode, PassContext};
use fnet::runtime::{run, Mode, ParamStore, RunOptions};
use fnet::tensor::{Scalar, Tensor};

const F32: f64 = 1e-4;
const F64: f64 = 1e-6;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(model: &str) -> PathBuf {
    root()
        .join("tests/fixtures/golden/grads")
        .join(format!("{model}.grads.safetensors"))
}

/// One fixture: the model source (relative to the repository), its `--set` and
/// `--config`, the label smoothing, and whether to run the training passes first.
struct Case {
    model: &'static str,
    source: &'static str,
    overrides: &'static [(&'static str, &'static str)],
    slots: Option<&'static [u64]>,
    smoothing: f64,
    passes: bool,
}

impl Case {
    fn new(model: &'static str, source: &'static str, smoothing: f64) -> Case {
        Case {
            model,
            source,
            overrides: &[],
            slots: None,
            smoothing,
            passes: true,
        }
    }

    /// The graph autodiff gets, with every dropout at p = 0.
    fn graph(&self) -> (Graph, Graph) {
        let options = Options {
            slot_config: self.slots.map(<[u64]>::to_vec),
            overrides: self
                .overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let path = root().join(self.source);
        let mut g = match compile_file(&path, &options) {
            Ok((_, m)) => m.graph,
            Err(report) => panic!("{} does not compile:\n{}", self.source, report.render()),
        };
        let elaborated = g.clone();
        let ids: Vec<_> = g.node_ids().collect();
        for n in ids {
            if let Op::Dropout { p } = &mut g.g[n].op {
                *p = 0.0;
            }
        }
        if self.passes {
            let mut ctx = PassContext::new(CompileMode::Training);
            ctx.batch = 2;
            let names: Vec<String> = [
                "specialize-slots",
                "canonicalize",
                "cse",
                "dce",
                "fuse-mask",
                "fold-bases",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            from_names(&names)
                .unwrap()
                .run(&mut g, &mut ctx, &mut |_| {})
                .unwrap_or_else(|e| panic!("{}: {e}", self.model));
        }
        (elaborated, g)
    }
}

fn count_ops(g: &Graph, name: &str) -> usize {
    g.node_ids()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

/// The stride of a sampled gradient of `n` elements: `sample_stride` in the script.
fn sample_stride(n: usize) -> usize {
    let mut s = n.div_ceil(2048);
    while [2, 3, 5, 7].iter().any(|&p| s.is_multiple_of(p)) {
        s += 1;
    }
    s
}

/// Below this fraction of the model's largest gradient, an expected gradient is zero
/// but for rounding: a bias or BatchNorm shift followed (through linear layers) by a
/// batch-statistics BatchNorm, which removes any per-channel constant (FlexConv biases
/// before `batchnorm`, ResNet32-S16U1*'s `bconv.bn.bias` before the 1×1 and the
/// block's BN). PyTorch's float64 value there is noise of order 1e-17.
const ZERO: f64 = 1e-9;

/// The largest |got − want| relative to `want`'s largest magnitude (gradients are
/// mostly far below 1, so `common::assert_close`'s floor of 1 would hide errors), or
/// to `model_scale` where `want` is zero up to rounding.
fn relative_error<T: Scalar, U: Scalar>(
    what: &str,
    got: &Tensor<T>,
    want: &Tensor<U>,
    model_scale: f64,
) -> f64 {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want.max_abs();
    let scale = if scale < ZERO * model_scale {
        model_scale
    } else {
        scale
    };
    assert!(
        scale > 0.0,
        "{what}: an all-zero expectation checks nothing"
    );
    got.max_abs_diff(want).expect("same shape") / scale
}

/// Compares `got` (gradient `name`) with the fixture: whole, or its strided sample
/// and its norm. Returns the worst relative error and what it was measured on.
fn compare<T: Scalar>(
    model: &str,
    name: &str,
    got: &Tensor<T>,
    fix: &BTreeMap<String, Tensor<f32>>,
    model_scale: f64,
) -> Vec<(f64, String)> {
    if let Some(want) = fix.get(name) {
        let rel = relative_error(&format!("{model} {name}"), got, want, model_scale);
        return vec![(rel, name.into())];
    }
    let param = name
        .strip_prefix("grad.")
        .expect("only gradients are sampled");
    let (sample, norm) = (
        &fix[&format!("sample.{param}")],
        &fix[&format!("norm.{param}")],
    );
    let picked: Vec<T> = got
        .data
        .iter()
        .copied()
        .step_by(sample_stride(got.numel()))
        .collect();
    let picked = Tensor::from_vec(vec![picked.len()], picked).unwrap();
    let got_norm = got
        .data
        .iter()
        .map(|v| v.to_f64().powi(2))
        .sum::<f64>()
        .sqrt();
    let want_norm = norm.data[0] as f64;
    vec![
        (
            relative_error(
                &format!("{model} sample.{param}"),
                &picked,
                sample,
                model_scale,
            ),
            format!("sample.{param}"),
        ),
        (
            (got_norm - want_norm).abs() / want_norm,
            format!("norm.{param}"),
        ),
    ]
}

/// Runs the training graph of `case` in `T` and checks every output against the
/// fixture; returns the worst relative error.
fn check<T: Scalar + rustfft::FftNum>(
    case: &Case,
    tol: f64,
    cast: fn(&Tensor<f32>) -> Tensor<T>,
) -> f64 {
    let model = case.model;
    let (elaborated, g) = case.graph();
    let fix = read_weights::<f32>(&fixture(model))
        .unwrap_or_else(|e| panic!("{e}"))
        .tensors;
    let tg = differentiate(
        &g,
        &Loss {
            output: 0,
            label_smoothing: case.smoothing,
            ..Loss::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The fixture holds exactly one gradient per trainable parameter and one update
    // per running statistic: nothing fnet computes goes unchecked, and nothing
    // PyTorch differentiates is missing. Frozen parameters (LC bases) have neither.
    let store = common::golden_weights::perturbed(&elaborated);
    let want_grads: BTreeSet<&str> = fix
        .keys()
        .filter_map(|k| k.strip_prefix("grad.").or(k.strip_prefix("sample.")))
        .collect();
    let want_updates: BTreeSet<&str> = fix
        .keys()
        .filter_map(|k| k.strip_prefix("update."))
        .collect();
    let got_grads: BTreeSet<&str> = tg.grads.iter().map(String::as_str).collect();
    let got_updates: BTreeSet<&str> = tg.buffers.iter().map(String::as_str).collect();
    assert_eq!(got_grads, want_grads, "{model}: gradients");
    assert_eq!(got_updates, want_updates, "{model}: running statistics");
    let frozen = elaborated
        .params()
        .filter(|(_, _, r)| *r == ParamRole::Frozen)
        .count();
    assert_eq!(
        store.len(),
        got_grads.len() + got_updates.len() + frozen,
        "{model}: every parameter is a gradient, a buffer or frozen"
    );

    let model_scale = fix
        .iter()
        .filter(|(k, _)| k.starts_with("grad.") || k.starts_with("sample."))
        .map(|(_, t)| t.max_abs())
        .fold(0.0, f64::max);
    let zero = fix
        .iter()
        .filter(|(k, t)| k.starts_with("grad.") && t.max_abs() < ZERO * model_scale)
        .count();

    let params: ParamStore<T> = store.iter().map(|(k, v)| (k.clone(), cast(v))).collect();
    let inputs = [cast(&fix["x"]), cast(&fix["labels"])];
    let options = RunOptions {
        mode: Mode::Train,
        ..RunOptions::default()
    };
    let out = run(&tg.graph, &params, &inputs, &options).unwrap_or_else(|e| panic!("{e}"));
    let names = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|n| format!("grad.{n}")))
        .chain(tg.buffers.iter().map(|n| format!("update.{n}")));
    // Every tensor is compared before failing, so a failure shows where the
    // disagreement starts in the backward sweep.
    let mut report = Vec::new();
    let mut worst = (0.0, String::new());
    for (name, got) in names.zip(&out.outputs) {
        for (rel, what) in compare(model, &name, got, &fix, model_scale) {
            if rel > tol {
                report.push(format!("{what}: relative error {rel:.3e}"));
            }
            if rel >= worst.0 {
                worst = (rel, what);
            }
        }
    }
    let kind = std::any::type_name::<T>();
    assert!(
        report.is_empty(),
        "{model} ({kind}): {} of {} tensors beyond {tol:e}:\n{}",
        report.len(),
        out.outputs.len(),
        report.join("\n")
    );
    eprintln!(
        "{model} ({kind}): worst relative error {:.3e} at {} ({zero} gradients zero up to rounding)",
        worst.0, worst.1
    );
    worst.0
}

fn both(case: &Case) {
    check::<f64>(case, F64, Tensor::to_f64);
    check::<f32>(case, F32, Tensor::clone);
}

#[test]
fn lenet_gradients_match_pytorch() {
    let case = Case {
        passes: false,
        ..Case::new("lenet", "examples/lenet_mnist.fnet", 0.0)
    };
    both(&case);
}

#[test]
fn resnet20_gradients_and_running_statistics_match_pytorch_with_label_smoothing() {
    let case = Case {
        passes: false,
        ..Case::new("resnet20", "examples/resnet20_cifar10.fnet", 0.1)
    };
    both(&case);
}

/// FlexNet-7 at batch 2: the FlexConv kernels from MAGNet and the Gaussian mask (5×5
/// crops), fused into `flex_kernel` by `fuse-mask` as in training; the gradients of
/// every MAGNet parameter and of every mask's mean and sigma.
#[test]
fn flexnet7_gradients_match_pytorch() {
    let case = Case::new("flexnet7", "examples/flexnet7_cifar10.fnet", 0.0);
    let (_, g) = case.graph();
    assert_eq!(count_ops(&g, "flex_kernel"), 15, "every FlexConv fused");
    both(&case);
}

/// FlexTCN-6's structure at 64 steps: causal 1D FlexConvs, projection shortcuts, the
/// `last` head.
#[test]
fn short_flextcn_gradients_match_pytorch() {
    let source = "tests/fixtures/golden/grads/flextcn_short.fnet";
    both(&Case::new("flextcn_short", source, 0.1));
}

/// LC-ResNet-20: the frozen bases get no gradient, the 1×1 coefficients do, through
/// `lc_fold` where `fold-bases` finds the fold cheaper at batch 2.
#[test]
fn lc20_gradients_match_pytorch_at_expansion_1_and_8() {
    for (model, e) in [("lc20_e1", "1"), ("lc20_e8", "8")] {
        let case = Case {
            overrides: if e == "1" {
                &[("E", "1")]
            } else {
                &[("E", "8")]
            },
            ..Case::new(model, "examples/resnet20_lc_cifar10.fnet", 0.1)
        };
        let (_, g) = case.graph();
        eprintln!("{model}: {} lc_fold", count_ops(&g, "lc_fold"));
        both(&case);
    }
}

/// ResNet32-S16U1*: each stage's two shared bases are read by four blocks, and their
/// gradients sum over the blocks.
#[test]
fn resnet32_s16u1d_shared_basis_gradients_match_pytorch() {
    both(&Case::new(
        "resnet32_s16u1d",
        "examples/resnet32_s16u1d_cifar10.fnet",
        0.0,
    ));
}

/// The pooling supernet specialised to two configurations (`--config 4,7`, the
/// default, and `--config 1,3`): max-pool backward through the active slots, BatchNorm
/// without affine parameters or running statistics.
#[test]
fn slots_supernet_gradients_match_pytorch_at_two_configurations() {
    let source = "examples/resnet20_slots_cifar10.fnet";
    for (model, slots, eps) in [("slots_4_7", &[4, 7], 0.0), ("slots_1_3", &[1, 3], 0.1)] {
        both(&Case {
            slots: Some(slots),
            ..Case::new(model, source, eps)
        });
    }
}
