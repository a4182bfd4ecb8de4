//! The graphs a training run prepares from the model: the differentiated training
//! graph with the logits as an extra output, and the inference-compiled graph that
//! evaluation runs; and the model's sample shape and class count that the data must
//! match.

use crate::autodiff::TrainingGraph;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, TrainOp};
use crate::passes::pipeline::default_pipeline;
use crate::passes::{CompileMode, PassContext};
use crate::runtime::RunError;

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

/// The model compiled for inference (nothing bound: the weights change every epoch).
pub fn inference_graph(graph: &Graph, batch: u64) -> Result<Graph, RunError> {
    let mut g = graph.clone();
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.batch = batch.max(1);
    default_pipeline(CompileMode::Inference)
        .run(&mut g, &mut ctx, &mut |_| {})
        .map_err(|e| {
            RunError::new(format!("internal compiler error in {e}"))
                .hint("this is a bug in fnetc; please report it with the model")
        })?;
    Ok(g)
}
