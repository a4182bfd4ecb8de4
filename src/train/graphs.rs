//! The graphs a training run prepares from the model: the differentiated training
//! graph with the logits as an extra output, and the inference-compiled graph that
//! evaluation runs; and the model's sample shape and class count that the data must
//! match.

use crate::autodiff::{differentiate, AutodiffError, Loss, TrainingGraph};
use crate::cost::CostTableId;
use crate::diag::Diagnostic;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, ParamRole, TrainOp};
use crate::passes::pipeline::{registry, AUTODIFF_AFTER};
use crate::passes::{CompileMode, Pass, PassContext, PassManager};
use crate::runtime::{ParamStore, RunError};

/// The model's sample shape (its input without the batch axis) and class count.
pub fn io_shape(graph: &Graph) -> Result<(Vec<usize>, usize), RunError> {
    let one_input = || {
        RunError::new(format!(
            "model `{}` has {} inputs; fnetc train feeds one input of samples [B, ...]",
            graph.name,
            graph.inputs.len()
        ))
    };
    let [input] = graph.inputs[..] else {
        return Err(one_input());
    };
    let dims = &graph.node(input).ty.shape;
    let sample: Option<Vec<usize>> = dims[1..]
        .iter()
        .map(|d| d.known().map(|v| v as usize))
        .collect();
    let out = graph.outputs.first().map(|&o| &graph.node(o).ty.shape);
    let classes = out.filter(|s| s.len() == 2).and_then(|s| s[1].known());
    match (sample, classes) {
        (Some(s), Some(k)) if k >= 1 => Ok((s, k as usize)),
        _ => Err(RunError::new(format!(
            "model `{}`: training needs an input [B, ...] of known sample shape and logits [B, K] as the first output",
            graph.name
        ))),
    }
}

/// Appends the logits (the loss's first operand) to the training graph's outputs, so a
/// step reports its accuracy without a second forward.
pub fn add_logits_output(tg: &mut TrainingGraph) -> Result<(), RunError> {
    let g = &mut tg.graph;
    let loss = g
        .node_ids()
        .find(|&i| matches!(g.node(i).op, Op::Train(TrainOp::CrossEntropy { .. })));
    let logits = loss.and_then(|l| g.operands(l).first().copied());
    match logits {
        Some(l) => {
            g.outputs.push(l);
            Ok(())
        }
        None => Err(RunError::new(
            "internal error: the training graph has no cross-entropy loss",
        )),
    }
}

/// How the graphs of a run are compiled: the batch and cost table the cost-driven
/// passes decide for, the passes left out (`--skip-pass`), and the values of the
/// frozen tensors (so a frozen basis becomes the constant the run holds).
#[derive(Clone, Debug)]
pub struct Compilation<'a> {
    pub batch: u64,
    pub cost: CostTableId,
    pub skip: &'a [String],
    pub params: Option<&'a ParamStore<f32>>,
}

/// Why a training graph could not be built: a diagnostic about the model or its
/// recipe (it points at a line), or an internal error.
#[derive(Debug)]
pub enum GraphError {
    Model(Diagnostic),
    Internal(RunError),
}

impl From<AutodiffError> for GraphError {
    fn from(e: AutodiffError) -> GraphError {
        GraphError::Model(e.to_diagnostic())
    }
}

impl From<RunError> for GraphError {
    fn from(e: RunError) -> GraphError {
        GraphError::Internal(e)
    }
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GraphError::Model(d) => f.write_str(&d.message),
            GraphError::Internal(e) => write!(f, "{e}"),
        }
    }
}

/// The training graph `fnetc train` and `fnetc search` run: the model through the
/// training pipeline's passes before autodiff (slots, frozen tensors as constants,
/// CSE, FlexConv masks, the LC and shared-basis fold), differentiated with `loss`,
/// then the passes after it (conv algorithms, epilogue fusion, the memory plan). It is
/// the graph `fnetc compile --training` prints and `fnetc bench --training` times.
/// The logits are appended as the last output (see [`add_logits_output`]).
pub fn training_graph(
    graph: &Graph,
    loss: &Loss,
    how: &Compilation<'_>,
) -> Result<TrainingGraph, GraphError> {
    let (before, after) = split_at_autodiff(kept_passes(how.skip)?);
    let mut ctx = context(CompileMode::Training, how, graph);
    let mut forward = graph.clone();
    run_passes(before, CompileMode::Training, &mut forward, &mut ctx)?;
    let mut tg = differentiate(&forward, loss)?;
    run_passes(after, CompileMode::Training, &mut tg.graph, &mut ctx)?;
    add_logits_output(&mut tg)?;
    Ok(tg)
}

/// The registry without the passes `skip` names; an unknown name is an error listing
/// the known ones.
fn kept_passes(skip: &[String]) -> Result<Vec<Box<dyn Pass>>, RunError> {
    let known: Vec<&str> = registry().iter().map(|p| p.name()).collect();
    for name in skip {
        if !known.contains(&name.as_str()) {
            let near = crate::diag::nearest(name, known.iter().copied())
                .map(|b| format!(" (did you mean `{b}`?)"))
                .unwrap_or_default();
            return Err(
                RunError::new(format!("--skip-pass: unknown pass `{name}`{near}"))
                    .hint(format!("passes are: {}", known.join(", "))),
            );
        }
    }
    Ok(registry()
        .into_iter()
        .filter(|p| !skip.iter().any(|s| s == p.name()))
        .collect())
}

type Passes = Vec<Box<dyn Pass>>;

/// The passes up to and including [`AUTODIFF_AFTER`], and those after it.
fn split_at_autodiff(passes: Passes) -> (Passes, Passes) {
    let order: Vec<&str> = registry().iter().map(|p| p.name()).collect();
    let slot = order.iter().position(|&n| n == AUTODIFF_AFTER).unwrap_or(0);
    passes
        .into_iter()
        .partition(|p| order.iter().position(|&n| n == p.name()).unwrap_or(0) <= slot)
}

/// A pass context for `graph` in `mode` as `how` says. Only the frozen tensors are
/// bound: what the optimiser updates must stay a parameter.
fn context(mode: CompileMode, how: &Compilation<'_>, graph: &Graph) -> PassContext {
    let mut ctx = PassContext::new(mode);
    ctx.batch = how.batch.max(1);
    ctx.cost_backend = how.cost;
    ctx.weights = how.params.map(|store| {
        graph
            .params()
            .filter(|(_, _, role)| *role == ParamRole::Frozen)
            .filter_map(|(_, n, _)| store.get(&n.name).map(|t| (n.name.clone(), t.clone())))
            .collect()
    });
    ctx
}

fn run_passes(
    passes: Vec<Box<dyn Pass>>,
    mode: CompileMode,
    graph: &mut Graph,
    ctx: &mut PassContext,
) -> Result<(), GraphError> {
    PassManager::for_mode(passes, mode)
        .run(graph, ctx, &mut |_| {})
        .map_err(|e| match ctx.diagnostic.take() {
            Some(d) => GraphError::Model(d),
            None => GraphError::Internal(
                RunError::new(format!("internal compiler error in {e}"))
                    .hint("this is a bug in fnetc; please report it with the model (`--skip-pass NAME` leaves a pass out)"),
            ),
        })
}

/// The model compiled for inference with the same passes (nothing trainable bound:
/// the weights change every epoch).
pub fn inference_graph(graph: &Graph, how: &Compilation<'_>) -> Result<Graph, GraphError> {
    let mut g = graph.clone();
    let mut ctx = context(CompileMode::Inference, how, graph);
    run_passes(
        kept_passes(how.skip)?,
        CompileMode::Inference,
        &mut g,
        &mut ctx,
    )?;
    Ok(g)
}
