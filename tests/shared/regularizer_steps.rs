// The body of tests/opencl_regularizers.rs and tests/jit_regularizers.rs: each
// brings `backend()` (and `program`) into scope and includes this file.

use common::{assert_close, input_shape, kinks, perturbed_weights, random};
use fnet::autodiff::{differentiate, Loss, Regularizer, TrainingGraph};
use fnet::backend::{Backend, Prepared, ReferenceBackend};
use fnet::ir::graph::Graph;
use fnet::recipe::AntialiasTarget;
use fnet::runtime::{Mode, ParamStore};
use fnet::tensor::Tensor;

/// Labels `0, 1, …` modulo the classes.
fn inputs(graph: &Graph, batch: usize, seed: u64) -> Vec<Tensor<f32>> {
    let classes = graph.node(graph.outputs[0]).ty.shape[1].known().unwrap() as usize;
    let labels = (0..batch).map(|i| (i % classes) as f32).collect();
    vec![
        random(&input_shape(graph, batch), seed),
        Tensor::from_vec(vec![batch], labels).expect("shape"),
    ]
}

/// One training step of `graph` with `loss` on both backends, every output compared;
/// returns the training graph, OpenCL's outputs and the output names. The reference
/// is the interpreter in f64 on the same parameters and inputs (the exact step: an
/// f32 interpreter may round a ReLU input across zero where OpenCL does not, see
/// `tests/opencl_train.rs`).
#[track_caller]
fn check(
    graph: &Graph,
    loss: &Loss,
    params: &ParamStore<f32>,
    batch: usize,
    seed: u64,
) -> (TrainingGraph, Vec<Tensor<f32>>, Vec<String>) {
    let tg = differentiate(graph, loss).unwrap_or_else(|e| panic!("{e}"));
    let x = inputs(graph, batch, seed);
    let shapes: Vec<Vec<usize>> = x.iter().map(|t| t.shape.clone()).collect();
    let params64: ParamStore<f64> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.cast::<f64>()))
        .collect();
    let x64: Vec<Tensor<f64>> = x.iter().map(|t| t.cast::<f64>()).collect();
    let mut reference = ReferenceBackend
        .prepare_f64(tg.graph.clone(), params64, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut run = backend()
        .prepare_plan(&tg.graph, params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = &run.executable().plan;
    for r in &loss.regularizers {
        let prefix = match r {
            Regularizer::Orthogonality { .. } => "ortho_",
            Regularizer::Antialias { .. } => "antialias_",
            Regularizer::KernelL2 { .. } => "norm_",
        };
        assert!(
            plan.kernels.iter().any(|k| k.name.starts_with(prefix)),
            "{prefix} kernels in the plan"
        );
    }
    reference.set_mode(Mode::Train).unwrap();
    let want = reference.forward(&x64).unwrap_or_else(|e| panic!("{e}"));
    let got = run.forward(&x).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|g| format!("grad.{g}")))
        .chain(tg.buffers.iter().map(|b| format!("update.{b}")))
        .chain(tg.terms.iter().cloned())
        .collect();
    assert_eq!(got.len(), names.len());
    for ((name, w), g) in names.iter().zip(&want).zip(&got) {
        assert!(g.data.iter().all(|v| v.is_finite()), "{name}: {g:?}");
        assert_close(name, g, w, 1e-4);
    }
    (tg, got, names)
}

/// The value of output `name`.
fn value(out: &[Tensor<f32>], names: &[String], name: &str) -> f32 {
    let at = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no {name}"));
    out[at].data[0]
}

fn only(reg: Regularizer) -> Loss {
    Loss {
        regularizers: vec![reg],
        ..Loss::default()
    }
}

const SHARED: &str = "model s {
  input x: f32[B, 3, 5, 5]
  seed 12
  basis b1 = shared_basis(channels: 4, shared: 3, unique: 1, sharing: SHARING, ortho: 10)
  block shared_block(b: basis) (h) {
    y = h |> basis_conv(b, 1) |> batchnorm |> relu |> basis_conv(b, 2) |> batchnorm
    return relu(y + h)
  }
  h = x |> conv2d(4, 3, padding: 1, bias: false) |> batchnorm |> relu
  h = h |> repeat 2 shared_block(b1)
  return h |> global_avg_pool |> linear(3)
}";

/// `ortho_penalty` and `ortho_penalty_backward` of every operand: single sharing (one
/// shared tensor, four unique) and double (two shared), where the shared rows meet
/// every row and unique rows only their own conv's.
#[test]
fn orthogonality_single_and_double() {
    for (sharing, seed) in [("single", 21), ("double", 22)] {
        let g = program(&SHARED.replace("SHARING", sharing)).graph;
        let params = perturbed_weights(&g, seed);
        let reg = Regularizer::Orthogonality { weight: 10.0 };
        let (_, out, names) = check(&g, &only(reg), &params, 2, seed + 1);
        assert!(value(&out, &names, "reg.orthogonality") > 0.0, "{sharing}");
    }
}

/// The 2×2 basis of `tests/regularizers.rs` by hand: rows (1, 2) and (0, 1), so
/// (B Bᵀ − I)² sums to 24 over 4 entries, times λ = 10: 60; the gradient of the
/// penalty alone is [[40, 100], [20, 40]].
#[test]
fn orthogonality_by_hand() {
    let g = program(
        "model h {
           input x: f32[B, 2, 3, 3]
           seed 1
           basis b = shared_basis(channels: 2, shared: 2, unique: 0, kernel: 1)
           return x |> basis_conv(b, 1) |> global_avg_pool |> linear(2)
         }",
    )
    .graph;
    let mut params = perturbed_weights(&g, 3);
    let name = "b.shared.0.weight";
    params.insert(
        name.into(),
        Tensor::from_vec(vec![2, 2, 1, 1], vec![1.0, 2.0, 0.0, 1.0]).unwrap(),
    );
    let reg = Regularizer::Orthogonality { weight: 10.0 };
    let (_, with, names) = check(&g, &only(reg), &params, 2, 4);
    assert_eq!(value(&with, &names, "reg.orthogonality"), 60.0);
    let (_, plain, plain_names) = check(&g, &Loss::default(), &params, 2, 4);
    let grad = format!("grad.{name}");
    let at = |n: &[String]| n.iter().position(|x| *x == grad).unwrap();
    let alone: Vec<f32> = with[at(&names)]
        .data
        .iter()
        .zip(&plain[at(&plain_names)].data)
        .map(|(a, b)| a - b)
        .collect();
    for (g, want) in alone.iter().zip([40.0, 100.0, 20.0, 40.0]) {
        assert!((g - want).abs() < 1e-4, "{alone:?}");
    }
}

const FLEX: &str = "model f {
  input x: f32[B, 2, 6, 6]
  seed 5
  h = x |> flexconv(3, horizon: 7, kernel: magnet(hidden: 5, layers: 2),
                    mask: gauss(sigma: 0.4, threshold: 0.1)) as f
  return h |> relu |> global_avg_pool |> linear(3)
}";

/// FLEX's mask parameters `[2, 2]`: (mean, sigma) per axis.
const MASK: &str = "f.mask_params";

fn antialias(target: AntialiasTarget) -> Regularizer {
    Regularizer::Antialias {
        weight: 0.1,
        stddevs: 2.0,
        target,
    }
}

/// `antialias_penalty` and its gradients to every Gabor weight and γ, and with
/// `gabor_mask` to the mask's sigmas: as initialised (equal sigmas on both axes, a tie
/// whose gradient is shared evenly) and moved apart (one axis gets it all).
#[test]
fn antialias_gabor_and_gabor_mask() {
    let g = program(FLEX).graph;
    let params = perturbed_weights(&g, 31);
    let (_, out, names) = check(&g, &only(antialias(AntialiasTarget::Gabor)), &params, 2, 32);
    assert!(value(&out, &names, "reg.antialias") > 0.0);
    let mask = only(antialias(AntialiasTarget::GaborMask));
    let sigmas = |p: &ParamStore<f32>| {
        let m = &p[MASK];
        (m.data[1], m.data[3])
    };
    let (a, b) = sigmas(&params);
    assert_eq!(a, b, "the sigmas start tied");
    check(&g, &mask, &params, 2, 33);
    let mut apart = params.clone();
    for (i, v) in apart.get_mut(MASK).unwrap().data.iter_mut().enumerate() {
        *v += 0.03 * (i + 1) as f32;
    }
    let (a, b) = sigmas(&apart);
    assert_ne!(a, b);
    check(&g, &mask, &apart, 2, 34);
}

/// `norm_penalty` and its gradient to the generated kernel and to the bias, unfused
/// (through `mask_mul` and MAGNet) and fused (the `flex_kernel` of the training
/// pipeline), each with the anti-aliasing penalty beside it.
#[test]
fn kernel_norm_unfused_and_fused() {
    use fnet::passes::{pipeline::from_names, CompileMode, PassContext};
    let unfused = program(FLEX).graph;
    let mut fused = unfused.clone();
    let mut ctx = PassContext::new(CompileMode::Training);
    ctx.batch = 2;
    let names: Vec<String> = ["canonicalize", "fuse-mask"].map(String::from).to_vec();
    from_names(&names)
        .unwrap()
        .run(&mut fused, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(fused
        .node_ids()
        .any(|n| fused.node(n).op.name() == "flex_kernel"));
    for (g, seed) in [(unfused, 41), (fused, 42)] {
        let params = perturbed_weights(&g, seed);
        let l2 = Regularizer::KernelL2 { weight: 0.05 };
        let (_, out, names) = check(&g, &only(l2.clone()), &params, 2, seed + 1);
        assert!(value(&out, &names, "reg.weight_decay") > 0.0);
        let both = Loss {
            regularizers: vec![antialias(AntialiasTarget::GaborMask), l2],
            ..Loss::default()
        };
        check(&g, &both, &params, 2, seed + 2);
    }
}

/// Every term with the cross-entropy and label smoothing, from a recipe, over a
/// FlexConv and a shared basis, at batch 3.
#[test]
fn all_terms_from_a_recipe() {
    let m = program(
        "model m {
          input x: f32[B, 4, 5, 5]
          seed 9
          basis b1 = shared_basis(channels: 4, shared: 2, unique: 2)
          h = x |> flexconv(4, horizon: 5, kernel: magnet(hidden: 4, layers: 1),
                            mask: gauss(sigma: 0.4, threshold: 0.1)) |> relu
          h = h |> basis_conv(b1, 1) |> batchnorm |> relu
          return h |> global_avg_pool |> linear(3)
        }
        train {
          loss: cross_entropy(label_smoothing: 0.1)
          regularizers: [kernel_l2(weight: 0.01), orthogonality(weight: 10),
                         antialias(weight: 0.1, target: gabor_mask)]
        }",
    );
    let loss = Loss::from_recipe(m.recipe.as_ref().unwrap(), 0).unwrap();
    let params = perturbed_weights(&m.graph, 51);
    let (tg, out, names) = check(&m.graph, &loss, &params, 3, 52);
    assert_eq!(tg.terms.len(), 4);
    let parts: f32 = tg.terms.iter().map(|t| value(&out, &names, t)).sum();
    assert!((value(&out, &names, "loss") - parts).abs() < 1e-5);
}

/// FlexNet-7 whole (15 FlexConvs, 2D, cropped by their masks) with the anti-aliasing
/// penalty on frequencies and masks and the kernel norm beside its cross-entropy (its
/// recipe has neither; these are the terms a FlexNet recipe may add), at batch 2.
#[test]
fn flexnet7_with_antialias_and_kernel_norm() {
    let m = common::example_module("flexnet7_cifar10");
    let loss = Loss {
        label_smoothing: 0.1,
        regularizers: vec![
            antialias(AntialiasTarget::GaborMask),
            Regularizer::KernelL2 { weight: 1e-3 },
        ],
        ..Loss::default()
    };
    let params = perturbed_weights(&m.graph, 61);
    // The first input seed that keeps every ReLU input clear of its kink (62 put
    // one 3.4e-8 from it).
    let seed = (0..8)
        .map(|k| 62 + 1000 * k)
        .find(|&s| {
            let x = &inputs(&m.graph, 2, s)[0];
            kinks::relu_margin(&m.graph, &params, x, 0) >= kinks::CLEAR
        })
        .expect("an input seed clear of the ReLU kinks");
    let (tg, out, names) = check(&m.graph, &loss, &params, 2, seed);
    assert!(value(&out, &names, "reg.antialias") > 0.0);
    assert!(value(&out, &names, "reg.weight_decay") > 0.0);
    let penalties = |op: &str| {
        tg.graph
            .node_ids()
            .filter(|&n| tg.graph.node(n).op.name() == op)
            .count()
    };
    assert_eq!(penalties("antialias_penalty"), 15);
    assert_eq!(penalties("norm_penalty"), 30, "kernel and bias of each");
}
