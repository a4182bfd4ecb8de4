//! `fnetc train` and `fnetc search` compile their training graphs through the training
//! pipeline (`train::graphs::training_graph`): the passes before autodiff (frozen
//! tensors as constants, FlexConv masks, the LC and shared-basis fold), autodiff, then
//! conv algorithms, epilogue fusion and the memory plan. The independent reference is
//! the same model differentiated with every pass left out: one training step of each
//! graph on the JIT, with the same weights and batch, must give the same loss, loss
//! terms, gradients, running-statistic updates and logits within f32 tolerance, and
//! the optimised graph must really hold the rewrites (an `lc_fold` for LC layers).

mod common;

use common::{assert_close, example_path, input_shape, perturbed_weights, random};
use fnet::autodiff::{Loss, TrainingGraph};
use fnet::backend::{open, BackendKind};
use fnet::cost::CostTableId;
use fnet::driver::compile_file;
use fnet::eval::Options;
use fnet::ir::graph::Graph;
use fnet::passes::pipeline::registry;
use fnet::runtime::{Mode, ParamStore};
use fnet::tensor::Tensor;
use fnet::train::graphs::{training_graph, Compilation};
use std::collections::BTreeMap;
use std::path::Path;

const BATCH: usize = 3;

fn compile(graph: &Graph, loss: &Loss, params: &ParamStore<f32>, skip: &[String]) -> TrainingGraph {
    let how = Compilation {
        batch: BATCH as u64,
        cost: CostTableId::Jit,
        skip,
        params: Some(params),
    };
    training_graph(graph, loss, &how).unwrap_or_else(|e| panic!("{}: {e}", graph.name))
}

/// One training step of `tg` on the JIT: every output by name (`loss`, `grad.*`,
/// `update.*`, the terms, `logits`).
fn step(
    model: &Path,
    tg: &TrainingGraph,
    params: &ParamStore<f32>,
    x: &Tensor<f32>,
    labels: &Tensor<f32>,
) -> BTreeMap<String, Tensor<f32>> {
    let backend = open(BackendKind::Jit, None, model).expect("jit");
    let mut p = backend
        .prepare(
            tg.graph.clone(),
            params.clone(),
            &[x.shape.clone(), labels.shape.clone()],
        )
        .unwrap_or_else(|e| panic!("{}: prepare: {e}", tg.graph.name));
    p.set_mode(Mode::Train).unwrap();
    p.write_inputs(&[x.clone(), labels.clone()]).unwrap();
    p.run().unwrap();
    let outputs = p.read_outputs().unwrap();
    let names = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|g| format!("grad.{g}")))
        .chain(tg.buffers.iter().map(|b| format!("update.{b}")))
        .chain(tg.terms.iter().cloned())
        .chain(std::iter::once("logits".to_string()));
    let named: BTreeMap<String, Tensor<f32>> = names.zip(outputs).collect();
    assert_eq!(
        named.len(),
        2 + tg.grads.len() + tg.buffers.len() + tg.terms.len()
    );
    named
}

fn ops(g: &Graph, name: &str) -> usize {
    g.node_ids()
        .filter(|&i| g.node(i).op.name() == name)
        .count()
}

/// Compiles `file` both ways, checks the optimised graph has its memory plan and holds
/// `must_hold` ops of that name if given (and the unoptimised neither), and compares
/// one step.
fn optimised_step_equals_unoptimised(file: &str, set: &[(&str, &str)], must_hold: Option<&str>) {
    let path = example_path(file);
    let options = Options {
        overrides: set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    };
    let module = compile_file(&path, &options)
        .unwrap_or_else(|r| panic!("{file}: {}", r.render()))
        .1;
    let graph = module.graph;
    let loss = Loss::from_recipe(module.recipe.as_ref().expect("train section"), 0).unwrap();
    let params = perturbed_weights::<f32>(&graph, 5);
    let everything: Vec<String> = registry().iter().map(|p| p.name().to_string()).collect();
    let optimised = compile(&graph, &loss, &params, &[]);
    let plain = compile(&graph, &loss, &params, &everything);
    assert!(optimised.graph.memory.is_some(), "{file}: no memory plan");
    assert!(plain.graph.memory.is_none(), "{file}: unoptimised, planned");
    if let Some(op) = must_hold {
        assert!(
            ops(&optimised.graph, op) > 0,
            "{file}: the optimised training graph has no {op}"
        );
        assert_eq!(ops(&plain.graph, op), 0, "{file}: unoptimised");
    }
    let mut grads = optimised.grads.clone();
    grads.sort();
    let mut want = plain.grads.clone();
    want.sort();
    assert_eq!(grads, want, "{file}: the same parameters get gradients");

    let x = random::<f32>(&input_shape(&graph, BATCH), 11);
    let classes = graph.node(graph.outputs[0]).ty.shape[1].known().unwrap() as usize;
    let labels = Tensor::from_vec(
        vec![BATCH],
        (0..BATCH).map(|i| ((i * 7 + 3) % classes) as f32).collect(),
    )
    .unwrap();
    let got = step(&path, &optimised, &params, &x, &labels);
    let reference = step(&path, &plain, &params, &x, &labels);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "{file}: outputs"
    );
    for (name, want) in &reference {
        assert_close(&format!("{file}: {name}"), &got[name], want, 2e-4);
    }
}

#[test]
fn an_lc_network_trains_folded_and_matches_the_unfolded_step() {
    optimised_step_equals_unoptimised(
        "experiments/resnet8_lc_mnist",
        &[("E", "4")],
        Some("lc_fold"),
    );
}

#[test]
fn a_shared_basis_network_with_its_regulariser_matches_the_unoptimised_step() {
    optimised_step_equals_unoptimised("experiments/resnet14_shared_mnist", &[], None);
}

#[test]
fn a_flexnet_with_the_antialias_term_matches_the_unoptimised_step() {
    optimised_step_equals_unoptimised("experiments/flexnet_xres", &[], Some("flex_kernel"));
}

#[test]
fn an_unknown_skipped_pass_is_an_error_naming_the_passes() {
    let graph = common::example("lenet_mnist");
    let how = Compilation {
        batch: 2,
        cost: CostTableId::Jit,
        skip: &["fold-base".to_string()],
        params: None,
    };
    let Err(err) = training_graph(&graph, &Loss::default(), &how) else {
        panic!("an unknown pass compiled");
    };
    let err = err.to_string();
    assert!(err.contains("unknown pass `fold-base`"), "{err}");
    assert!(err.contains("did you mean `fold-bases`"), "{err}");
}
