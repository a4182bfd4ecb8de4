//! The loss's regularisers (docs/autodiff.md, "Regularisers"): shared bases'
//! orthogonality, FlexConv's anti-aliasing penalty and the unsquared kernel norm.
//!
//! - f64 central differences, for each term alone (the gradient with the term minus
//!   the gradient without it, against differences of the term's own output) and
//!   combined with the cross-entropy (differences of the total loss), along a random
//!   direction over every trainable parameter, relative error below 1e-6;
//! - values by hand on a 2×2 basis;
//! - values and gradients against PyTorch running the authors' code
//!   (`tools/golden_regularizers.py`, fixture in `tests/fixtures/golden/regularizers/`);
//! - the recipe's regularisers become the loss, and what a model cannot support is an
//!   error at its layer.

mod common;

use common::{input_shape, noise, perturbed_weights, random};
use fnet::autodiff::{differentiate, Loss, Regularizer, TrainingGraph};
use fnet::driver::compile_str;
use fnet::eval::{Module, Options};
use fnet::ir::graph::Graph;
use fnet::ir::op::ParamRole;
use fnet::recipe::AntialiasTarget;
use fnet::runtime::{run, Mode, ParamStore, RunOptions};
use fnet::tensor::{Scalar, Tensor};
use std::collections::BTreeSet;

fn module(text: &str) -> Module {
    compile_str("test.fnet", text, &Options::default())
        .unwrap_or_else(|r| panic!("{}", r.render()))
        .1
}

fn fixture(name: &str) -> Module {
    let path = format!(
        "{}/tests/fixtures/golden/regularizers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    module(&std::fs::read_to_string(path).expect("fixture model"))
}

fn train() -> RunOptions {
    RunOptions {
        mode: Mode::Train,
        ..RunOptions::default()
    }
}

fn loss(regularizers: Vec<Regularizer>) -> Loss {
    Loss {
        regularizers,
        ..Loss::default()
    }
}

fn inputs<T: Scalar>(graph: &Graph, batch: usize, seed: u64) -> Vec<Tensor<T>> {
    let classes = graph.node(graph.outputs[0]).ty.shape[1].known().unwrap() as usize;
    let labels = (0..batch)
        .map(|i| T::from_f64((i % classes) as f64))
        .collect();
    vec![
        random::<T>(&input_shape(graph, batch), seed),
        Tensor::from_vec(vec![batch], labels).unwrap(),
    ]
}

fn outputs(tg: &TrainingGraph, p: &ParamStore<f64>, x: &[Tensor<f64>]) -> Vec<Tensor<f64>> {
    run(&tg.graph, p, x, &train())
        .unwrap_or_else(|e| panic!("{e}"))
        .outputs
}

/// The index of output `name` of a training graph.
fn output(tg: &TrainingGraph, name: &str) -> usize {
    let at = tg.terms.iter().position(|t| t == name);
    1 + tg.grads.len() + tg.buffers.len() + at.unwrap_or_else(|| panic!("no {name}"))
}

/// `(f(θ + h·u) − f(θ − h·u)) / 2h` against `want`, at the first of a few steps that
/// agree to a relative 1e-6 (a step across a ReLU kink spoils the quotient, not the
/// gradient; a wrong gradient agrees at no step).
#[track_caller]
fn agrees(what: &str, want: f64, f: impl Fn(f64) -> f64) {
    let mut tried = Vec::new();
    for h in [1e-6, 1e-7, 1e-5] {
        let got = (f(h) - f(-h)) / (2.0 * h);
        let scale = want.abs().max(got.abs());
        assert!(scale > 1e-6, "{what}: degenerate check ({want})");
        let rel = (want - got).abs() / scale;
        if rel < 1e-6 {
            return;
        }
        tried.push(format!("h = {h:e}: {got} (relative {rel:e})"));
    }
    panic!(
        "{what}: ⟨grad, u⟩ = {want}, differences give\n{}",
        tried.join("\n")
    );
}

/// Checks the loss with `regs` on `graph`: the outputs are `loss.ce` and one per
/// regulariser, they sum to `loss`, the cross-entropy is the plain loss's; the total's
/// gradient and each term's alone match central differences.
#[track_caller]
fn check(graph: &Graph, regs: &[Regularizer], batch: usize, seed: u64) -> TrainingGraph {
    let plain = differentiate(graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
    let tg = differentiate(graph, &loss(regs.to_vec())).unwrap_or_else(|e| panic!("{e}"));
    let mut names = vec!["loss.ce".to_string()];
    names.extend(regs.iter().map(|r| r.output().to_string()));
    if regs.is_empty() {
        names.clear();
    }
    assert_eq!(tg.terms, names);
    assert_eq!(tg.grads, plain.grads);
    let trainable: BTreeSet<&String> = graph
        .params()
        .filter(|(_, _, r)| matches!(r, ParamRole::Trainable | ParamRole::Shared))
        .map(|(_, n, _)| &n.name)
        .collect();
    assert_eq!(tg.grads.iter().collect::<BTreeSet<_>>(), trainable);

    let mut params = perturbed_weights::<f64>(graph, seed);
    // The mask's sigmas start equal on both axes, where the anti-aliasing penalty's
    // max over them has no derivative (its gradient splits the tie, as PyTorch's):
    // move them apart so that differences measure a derivative.
    for (name, t) in params.iter_mut() {
        if name.ends_with("mask_params") {
            for (i, v) in t.data.iter_mut().enumerate() {
                *v += 0.03 * (i + 1) as f64;
            }
        }
    }
    let x = inputs::<f64>(graph, batch, seed + 1);
    let out = outputs(&tg, &params, &x);
    let base = outputs(&plain, &params, &x);
    let value = |o: &[Tensor<f64>], i: usize| o[i].data[0];
    if !regs.is_empty() {
        let sum: f64 = names.iter().map(|n| value(&out, output(&tg, n))).sum();
        assert!((value(&out, 0) - sum).abs() <= 1e-12 * sum.abs().max(1.0));
        assert_eq!(value(&out, output(&tg, "loss.ce")), value(&base, 0));
    }

    let u: Vec<Vec<f64>> = (0..tg.grads.len())
        .map(|i| noise(out[1 + i].numel(), seed * 1000 + i as u64))
        .collect();
    let dot = |o: &[Tensor<f64>]| -> f64 {
        u.iter()
            .enumerate()
            .map(|(i, u)| o[1 + i].data.iter().zip(u).map(|(a, b)| a * b).sum::<f64>())
            .sum()
    };
    let shifted = |s: f64| {
        let mut p = params.clone();
        for (name, u) in tg.grads.iter().zip(&u) {
            for (v, d) in p.get_mut(name).unwrap().data.iter_mut().zip(u) {
                *v += s * d;
            }
        }
        p
    };
    agrees("the total loss", dot(&out), |s| {
        value(&outputs(&tg, &shifted(s), &x), 0)
    });
    for r in regs {
        let alone = differentiate(graph, &loss(vec![r.clone()])).unwrap();
        let o = outputs(&alone, &params, &x);
        let at = output(&alone, r.output());
        assert_eq!(o[at].data[0], value(&out, output(&tg, r.output())));
        agrees(r.output(), dot(&o) - dot(&base), |s| {
            outputs(&alone, &shifted(s), &x)[at].data[0]
        });
    }
    tg
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

/// A ResNet-like stage of two blocks reading one shared basis (single sharing) or
/// two (double), with a unique filter per conv.
#[test]
fn orthogonality_on_single_and_double_shared_bases() {
    for (sharing, seed) in [("single", 21), ("double", 22)] {
        let g = module(&SHARED.replace("SHARING", sharing)).graph;
        let reg = Regularizer::Orthogonality { weight: 10.0 };
        let tg = check(&g, &[reg], 2, seed);
        let shared = if sharing == "double" { 2 } else { 1 };
        let ops = tg
            .graph
            .node_ids()
            .filter(|&n| tg.graph.node(n).op.name() == "ortho_penalty_backward");
        // One gradient per basis tensor: the shared ones and 4 unique ones.
        assert_eq!(ops.count(), shared + 4, "{sharing}");
    }
}

const FLEX: &str = "model f {
  input x: f32[B, 2, 6, 6]
  seed 5
  h = x |> flexconv(3, horizon: 7, kernel: magnet(hidden: 5, layers: 2),
                    mask: gauss(sigma: 0.4, threshold: 0.1)) |> relu
  return h |> global_avg_pool |> linear(3)
}";

fn antialias(target: AntialiasTarget) -> Regularizer {
    Regularizer::Antialias {
        weight: 0.1,
        stddevs: 2.0,
        target,
    }
}

/// A 2D FlexConv: the anti-aliasing penalty (to MAGNet's Gabor frequencies and γ, and
/// with `gabor_mask` to the mask's sigma) and the kernel norm (through the MAGNet and
/// the mask to all of their parameters, and to the bias), alone and together.
#[test]
fn flexconv_antialias_and_kernel_norm() {
    let g = module(FLEX).graph;
    let l2 = Regularizer::KernelL2 { weight: 0.05 };
    check(&g, &[antialias(AntialiasTarget::Gabor)], 2, 31);
    check(&g, &[antialias(AntialiasTarget::GaborMask)], 2, 32);
    let tg = check(&g, std::slice::from_ref(&l2), 2, 33);
    // The norm's gradient reaches the mask through the masked kernel.
    assert!(tg.grads.iter().any(|n| n.ends_with("mask_params")));
    check(&g, &[antialias(AntialiasTarget::GaborMask), l2], 2, 34);
}

/// As the training pipeline has it before autodiff: the kernel is one `flex_kernel`.
#[test]
fn kernel_norm_through_the_fused_flex_kernel() {
    use fnet::passes::{pipeline::from_names, CompileMode, PassContext};
    let mut g = module(FLEX).graph;
    let mut ctx = PassContext::new(CompileMode::Training);
    ctx.batch = 2;
    let names: Vec<String> = ["canonicalize", "fuse-mask"].map(String::from).to_vec();
    from_names(&names)
        .unwrap()
        .run(&mut g, &mut ctx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(g.node_ids().any(|n| g.node(n).op.name() == "flex_kernel"));
    let regs = [
        Regularizer::KernelL2 { weight: 0.05 },
        antialias(AntialiasTarget::GaborMask),
    ];
    check(&g, &regs, 2, 35);
}

/// Every term together with the cross-entropy, label smoothing included, in f32 too.
#[test]
fn all_terms_in_f64_and_f32() {
    let src = "model m {
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
    }";
    let m = module(src);
    let l = Loss::from_recipe(m.recipe.as_ref().unwrap(), 0).unwrap();
    assert_eq!(l.label_smoothing, 0.1);
    let regs = [
        Regularizer::KernelL2 { weight: 0.01 },
        Regularizer::Orthogonality { weight: 10.0 },
        antialias(AntialiasTarget::GaborMask),
    ];
    assert_eq!(l.regularizers, regs);
    let tg = differentiate(&m.graph, &l).unwrap();
    assert_eq!(
        tg.terms,
        [
            "loss.ce",
            "reg.weight_decay",
            "reg.orthogonality",
            "reg.antialias"
        ]
    );
    check(&m.graph, &regs, 3, 41);
    // f32 evaluates the same graph to f32 accuracy.
    let p64 = perturbed_weights::<f64>(&m.graph, 42);
    let p32 = perturbed_weights::<f32>(&m.graph, 42);
    let a = run(&tg.graph, &p64, &inputs::<f64>(&m.graph, 3, 43), &train()).unwrap();
    let b = run(&tg.graph, &p32, &inputs::<f32>(&m.graph, 3, 43), &train()).unwrap();
    for (i, (x, y)) in a.outputs.iter().zip(&b.outputs).enumerate() {
        common::assert_close(&format!("output {i}"), y, x, 1e-4);
    }
}

/// A 2×2 basis by hand: one basis of 2 shared 1×1 filters over 2 channels, rows
/// (1, 2) and (0, 1). B Bᵀ − I = [[4, 2], [2, 0]]; squared, the entries sum to 24 over
/// the 2·2 counted, a mean of 6, times λ = 10: 60. Its gradient, λ/4 · 2(E + Eᵀ)B
/// with E = [[4, 2], [2, 0]], is 2.5·4·[[4, 2], [2, 0]]·B = [[40, 100], [20, 40]].
#[test]
fn a_two_by_two_basis_by_hand() {
    let m = module(
        "model h {
           input x: f32[B, 2, 3, 3]
           seed 1
           basis b = shared_basis(channels: 2, shared: 2, unique: 0, kernel: 1)
           return x |> basis_conv(b, 1) |> global_avg_pool |> linear(2)
         }",
    );
    let reg = Regularizer::Orthogonality { weight: 10.0 };
    let tg = differentiate(&m.graph, &loss(vec![reg.clone()])).unwrap();
    let plain = differentiate(&m.graph, &Loss::default()).unwrap();
    let mut p = perturbed_weights::<f64>(&m.graph, 3);
    let name = "b.shared.0.weight";
    *p.get_mut(name).unwrap() =
        Tensor::from_vec(vec![2, 2, 1, 1], vec![1.0, 2.0, 0.0, 1.0]).unwrap();
    let x = inputs::<f64>(&m.graph, 2, 4);
    let (o, base) = (outputs(&tg, &p, &x), outputs(&plain, &p, &x));
    assert_eq!(o[output(&tg, "reg.orthogonality")].data, [60.0]);
    let at = 1 + tg.grads.iter().position(|n| n == name).unwrap();
    let reg_grad: Vec<f64> = o[at]
        .data
        .iter()
        .zip(&base[at].data)
        .map(|(a, b)| a - b)
        .collect();
    for (g, want) in reg_grad.iter().zip([40.0, 100.0, 20.0, 40.0]) {
        assert!((g - want).abs() < 1e-12, "{reg_grad:?}");
    }
}

/// The penalties and their gradients equal PyTorch's, running the authors' code on
/// the same values (tools/golden_regularizers.py).
#[test]
fn penalties_match_pytorch() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden/regularizers/regularizers.json"
    ))
    .expect("fixture");
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (model, key) in [("shared.fnet", "orthogonality"), ("flex.fnet", "antialias")] {
        let m = fixture(model);
        let recipe = Loss::from_recipe(m.recipe.as_ref().unwrap(), 0).unwrap();
        let reg: Vec<Regularizer> = recipe
            .regularizers
            .into_iter()
            .filter(|r| r.kind() == key)
            .collect();
        let tg = differentiate(&m.graph, &loss(reg)).unwrap();
        let plain = differentiate(&m.graph, &Loss::default()).unwrap();
        let want = &golden[key];
        let mut p = perturbed_weights::<f64>(&m.graph, 5);
        let fixed = want["params"].as_object().unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        for (name, t) in fixed {
            let shape: Vec<usize> = floats(&t["shape"]).iter().map(|&d| d as usize).collect();
            assert_eq!(p[name].shape, shape, "{name}");
            *p.get_mut(name).unwrap() = Tensor::from_vec(shape, floats(&t["data"])).unwrap();
        }
        let x = inputs::<f64>(&m.graph, 2, 6);
        let (o, base) = (outputs(&tg, &p, &x), outputs(&plain, &p, &x));
        let value = o[output(&tg, &format!("reg.{key}"))].data[0];
        let expected = want["value"].as_f64().unwrap();
        assert!(
            (value - expected).abs() <= 1e-12 * expected.abs(),
            "{key}: {value} vs {expected}"
        );
        for (name, g) in want["grads"].as_object().unwrap() {
            let at = 1 + tg.grads.iter().position(|n| n == name).unwrap();
            for (i, want) in floats(g).iter().enumerate() {
                let got = o[at].data[i] - base[at].data[i];
                assert!((got - want).abs() <= 1e-10, "{name}[{i}]: {got} vs {want}");
            }
        }
    }
}

#[test]
fn what_a_model_cannot_support_is_an_error() {
    let plain = module(
        "model p {
           input x: f32[B, 2, 4, 4]
           return x |> conv2d(2, 3) |> global_avg_pool |> linear(2)
         }",
    )
    .graph;
    for reg in [
        Regularizer::Orthogonality { weight: 1.0 },
        Regularizer::KernelL2 { weight: 1.0 },
        antialias(AntialiasTarget::Gabor),
    ] {
        let e = differentiate(&plain, &loss(vec![reg.clone()])).unwrap_err();
        assert!(e.message.contains(reg.kind()), "{}", e.message);
        assert!(e.hint.is_some());
    }
    // A mask-less FlexConv has no mask frequency to count: the error is at its layer.
    let src = "model u {
           input x: f32[B, 1, 4, 4]
           h = x |> flexconv(2, horizon: 5, kernel: magnet(hidden: 3, layers: 1), mask: none)
           return h |> global_avg_pool |> linear(2)
         }";
    let unmasked = module(src).graph;
    let e = differentiate(
        &unmasked,
        &loss(vec![antialias(AntialiasTarget::GaborMask)]),
    )
    .unwrap_err();
    assert!(e.message.contains("has none"), "{}", e.message);
    assert!(
        src[e.span.start..e.span.end].contains("flexconv"),
        "{:?}",
        e.span
    );
    assert!(differentiate(&unmasked, &loss(vec![antialias(AntialiasTarget::Gabor)])).is_ok());
    let negative = differentiate(
        &unmasked,
        &loss(vec![Regularizer::KernelL2 { weight: -1.0 }]),
    );
    assert!(negative.unwrap_err().message.contains("non-negative"));
    // A kind twice in a recipe.
    let recipe = fnet::recipe::Recipe {
        regularizers: Some(vec![
            fnet::recipe::Regularizer::KernelL2 { weight: 1.0 },
            fnet::recipe::Regularizer::KernelL2 { weight: 2.0 },
        ]),
        ..Default::default()
    };
    let e = Loss::from_recipe(&recipe, 0).unwrap_err();
    assert!(e.message.contains("twice"), "{}", e.message);
    // No regularisers: no extra outputs, the graph as before.
    let tg = differentiate(
        &unmasked,
        &Loss::from_recipe(&Default::default(), 0).unwrap(),
    )
    .unwrap();
    assert!(tg.terms.is_empty());
    assert_eq!(
        tg.graph.outputs.len(),
        1 + tg.grads.len() + tg.buffers.len()
    );
}

/// ResNet32-S16U1* as its example declares it (three stages, double sharing, its
/// recipe's `orthogonality(weight: 10)`): `reg.orthogonality` equals the authors'
/// formula computed here directly from the parameters, one mean over all three
/// stages' counted entries.
#[test]
fn the_shared_basis_example_recipe() {
    let m = common::example_module("resnet32_s16u1d_cifar10");
    let l = Loss::from_recipe(m.recipe.as_ref().unwrap(), 0).unwrap();
    assert_eq!(
        l.regularizers,
        [Regularizer::Orthogonality { weight: 10.0 }]
    );
    let tg = differentiate(&m.graph, &l).unwrap();
    assert_eq!(tg.terms, ["loss.ce", "reg.orthogonality"]);
    let p = perturbed_weights::<f64>(&m.graph, 7);
    let out = run(&tg.graph, &p, &inputs::<f64>(&m.graph, 1, 8), &train()).unwrap();
    let got = out.outputs[output(&tg, "reg.orthogonality")].data[0];

    let (mut sim, mut count) = (0.0, 0usize);
    for b in &m.graph.bases {
        let rows: Vec<&[f64]> = b
            .shared
            .iter()
            .chain(&b.unique)
            .flat_map(|n| {
                let t = &p[n];
                t.data.chunks(t.numel() / t.shape[0])
            })
            .collect();
        let s: usize = b.shared.iter().map(|n| p[n].shape[0]).sum();
        let u = p[&b.unique[0]].shape[0];
        let n = rows.len();
        let d = |i: usize, j: usize| {
            let g: f64 = rows[i].iter().zip(rows[j]).map(|(a, b)| a * b).sum();
            let e = g - if i == j { 1.0 } else { 0.0 };
            e * e
        };
        for i in 0..s {
            for j in 0..n {
                sim += d(i, j);
            }
        }
        count += s * n;
        for k in 0..b.unique.len() {
            let base = s + k * u;
            for i in base..base + u {
                for j in base..base + u {
                    sim += d(i, j);
                }
            }
            count += u * u;
        }
    }
    let want = 10.0 * sim / count as f64;
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    assert!(want > 1e-3, "a non-trivial penalty: {want}");
}

/// A causal 1D FlexConv whose mask crops the kernel: one mask axis, the kernel norm of
/// the cropped kernel.
#[test]
fn causal_1d_flexconv() {
    let g = module(
        "model c {
           input x: f32[B, 2, 12]
           seed 6
           h = x |> flexconv(3, horizon: same, causal: true,
                             kernel: magnet(hidden: 4, layers: 1),
                             mask: gauss(sigma: 0.3, threshold: 0.1)) |> relu
           return h |> last |> linear(2)
         }",
    )
    .graph;
    let regs = [
        antialias(AntialiasTarget::GaborMask),
        Regularizer::KernelL2 { weight: 0.05 },
    ];
    check(&g, &regs, 2, 51);
}
