//! Reverse-mode automatic differentiation as a graph rewrite: a model graph becomes a
//! training graph that computes the forward, a cross-entropy loss against a new
//! `labels` input, and the gradient of the loss to every trainable parameter.
//!
//! The training graph's outputs are, in order: the loss `[1]` (named `loss`), then one
//! gradient per trainable or shared parameter that reaches the loss, in the order of
//! the parameters in the graph, each named `grad.<parameter name>` and shaped as its
//! parameter ([`TrainingGraph::grads`] lists the names), then the updated value of
//! every batch norm running statistic, named `update.<buffer name>`
//! ([`TrainingGraph::buffers`]), then, when the loss has regularisers, `loss.ce` and
//! one `reg.<kind>` per regulariser ([`TrainingGraph::terms`]; `loss` is their sum).
//! Its inputs are the model's, then `labels` `[B]` (class indices, in the graph's
//! float type).
//!
//! - **Pruning:** only nodes that depend on a trainable parameter and that the loss
//!   depends on get a backward; a frozen parameter or constant is never a source.
//! - **Accumulation:** a value read by several users (a residual branch, a shared
//!   weight) gets the sum of its users' gradients, summed with `add` nodes.
//! - **Frozen parameters and constants** pass gradients through the ops that read
//!   them to their other operands, and get no gradient output. **Buffers** (batch
//!   norm running statistics) are never differentiated: their updates are outputs.
//!
//! Batch norm is differentiated with batch statistics, so the training graph must run
//! in training mode (`runtime::Mode::Train`), as a training step does. Dropout with
//! `p > 0` has no rule yet (the forward's mask is not shared with the backward).
//! Every rule is in [`rules`]; see `docs/autodiff.md`.

mod regularizers;
mod rules;

pub use regularizers::Regularizer;

use crate::diag::{Diagnostic, Span};
use crate::ir::graph::{Graph, Node};
use crate::ir::op::{Op, ParamRole, TrainOp};
use crate::ir::types::TensorType;
use crate::passes::{Pass, PassContext};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a graph cannot be differentiated, at the layer that stops it.
#[derive(Clone, Debug, PartialEq)]
pub struct AutodiffError {
    pub message: String,
    /// The IR node's name (the layer's dotted path).
    pub layer: String,
    /// The layer's place in the `.fnet` source.
    pub span: Span,
    pub hint: Option<String>,
}

impl AutodiffError {
    fn no_rule(layer: &str, span: Span, op: &str, why: &str) -> AutodiffError {
        AutodiffError {
            message: format!("cannot compute gradients through `{layer}` ({op}): {why}"),
            layer: layer.to_string(),
            span,
            hint: Some(
                "train a model without this layer for now; docs/autodiff.md lists the ops \
                 with gradients"
                    .into(),
            ),
        }
    }

    fn at(node: &Node, message: String, hint: &str) -> AutodiffError {
        AutodiffError {
            message,
            layer: node.name.clone(),
            span: node.span,
            hint: Some(hint.to_string()),
        }
    }

    /// A backward node that shape inference refuses: a bug in a rule, not in the model.
    fn internal(node: &Node, why: &str) -> AutodiffError {
        AutodiffError::at(
            node,
            format!("internal error differentiating `{}`: {why}", node.name),
            "this is a compiler bug; please report it with the model",
        )
    }

    /// The error as a diagnostic pointing at the layer in its source file.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let d = Diagnostic::at("E0801", self.span, &self.message, "in this layer");
        match &self.hint {
            Some(h) => d.hint(h.clone()),
            None => d,
        }
    }
}

impl fmt::Display for AutodiffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AutodiffError {}

/// The loss a training graph minimises: cross-entropy of one classifier output, plus
/// the regularisers' terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    /// Which of the graph's outputs holds the logits `[B, K]`.
    pub output: usize,
    /// In `[0, 1]`: the weight moved from the target class to the uniform one.
    pub label_smoothing: f64,
    /// Terms added to the cross-entropy, each also its own output; at most one of
    /// each kind.
    pub regularizers: Vec<Regularizer>,
}

impl Default for Loss {
    fn default() -> Loss {
        Loss {
            output: 0,
            label_smoothing: 0.0,
            regularizers: Vec::new(),
        }
    }
}

impl Loss {
    /// The loss a model's `train {}` section asks for, on the classifier `output`: its
    /// `loss:` (plain cross-entropy when unset) and its `regularizers:` in the order
    /// written. A kind listed twice is an error; whether the model has what a
    /// regulariser reads (shared bases, flexconvs, masks) is checked by
    /// [`differentiate`].
    pub fn from_recipe(
        recipe: &crate::recipe::Recipe,
        output: usize,
    ) -> Result<Loss, AutodiffError> {
        regularizers::from_recipe(recipe, output)
    }
}

/// A differentiated graph and the meaning of its outputs.
#[derive(Clone, Debug)]
pub struct TrainingGraph {
    /// Outputs: `loss` (the total), then `grad.<name>` for each name in `grads`, then
    /// `update.<name>` for each name in `buffers`, then, only when the loss has
    /// regularisers, one output per name in `terms`.
    pub graph: Graph,
    /// The parameter whose gradient each output after the loss holds, in order.
    pub grads: Vec<String>,
    /// The buffer (batch norm running statistic) whose updated value each output after
    /// the gradients holds, in order.
    pub buffers: Vec<String>,
    /// The parts of the loss, in output order after the buffers: empty without
    /// regularisers, else `loss.ce` (the cross-entropy) and one `reg.<kind>` per
    /// regulariser in the loss's order (`reg.orthogonality`, `reg.antialias`,
    /// `reg.weight_decay`). They sum to `loss`.
    pub terms: Vec<String>,
}

impl TrainingGraph {
    /// Reads the meaning of a training graph's outputs back from their names (`loss`,
    /// `grad.<name>`, `update.<name>`, `loss.ce`, `reg.<kind>`), as the autodiff pass leaves them, so that a
    /// graph that went through the whole training pipeline (where the passes after
    /// autodiff keep the outputs' names) is a `TrainingGraph` again. `None` when the
    /// outputs are not a training graph's.
    pub fn of(graph: Graph) -> Option<TrainingGraph> {
        let names: Vec<&str> = graph
            .outputs
            .iter()
            .map(|&o| graph.node(o).name.as_str())
            .collect();
        let (&"loss", rest) = names.split_first()? else {
            return None;
        };
        let grads: Vec<String> = rest
            .iter()
            .map_while(|n| n.strip_prefix("grad."))
            .map(str::to_string)
            .collect();
        let after = &rest[grads.len()..];
        let buffers: Vec<String> = after
            .iter()
            .map_while(|n| n.strip_prefix("update."))
            .map(str::to_string)
            .collect();
        let terms: Vec<String> = after[buffers.len()..]
            .iter()
            .map(|n| n.to_string())
            .collect();
        let is_term = |n: &String| n == "loss.ce" || n.starts_with("reg.");
        if !terms.iter().all(is_term) {
            return None;
        }
        Some(TrainingGraph {
            graph,
            grads,
            buffers,
            terms,
        })
    }
}

/// The name of the labels input the training graph adds.
pub const LABELS: &str = "labels";

/// Builds the training graph of `graph`: forward, loss and backward.
pub fn differentiate(graph: &Graph, loss: &Loss) -> Result<TrainingGraph, AutodiffError> {
    let mut g = graph.clone();
    // A memory plan of the forward does not describe the training graph.
    g.memory = None;
    let OutputNames {
        grads,
        buffers,
        terms,
    } = differentiate_in_place(&mut g, loss)?;
    g.compact()
        .map_err(|e| AutodiffError::internal(graph.node(graph.outputs[loss.output]), &e.0))?;
    Ok(TrainingGraph {
        graph: g,
        grads,
        buffers,
        terms,
    })
}

/// What the training graph's outputs after the loss hold, as [`TrainingGraph`] lists
/// them.
struct OutputNames {
    grads: Vec<String>,
    buffers: Vec<String>,
    terms: Vec<String>,
}

/// Returns the parameters with a gradient output, the buffers with an update output
/// and the loss's parts, in output order.
fn differentiate_in_place(g: &mut Graph, loss: &Loss) -> Result<OutputNames, AutodiffError> {
    let Some(&logits) = g.outputs.get(loss.output) else {
        return Err(AutodiffError {
            message: format!(
                "the loss reads output {} but the model has {} output(s)",
                loss.output,
                g.outputs.len()
            ),
            layer: g.name.clone(),
            span: Span::default(),
            hint: None,
        });
    };
    let out = g.node(logits);
    if !(0.0..=1.0).contains(&loss.label_smoothing) {
        return Err(AutodiffError::at(
            out,
            format!(
                "label smoothing must be in [0, 1], got {}",
                loss.label_smoothing
            ),
            "0.1 is the usual value; 0 turns smoothing off",
        ));
    }
    if out.ty.rank() != 2 {
        return Err(AutodiffError::at(
            out,
            format!(
                "cross-entropy needs a classifier output [B, K], but `{}` is {}",
                out.name, out.ty
            ),
            "end the model with a `linear` layer (after `flatten` or `global_avg_pool`)",
        ));
    }
    if let Some(&clash) = g
        .inputs
        .iter()
        .find(|&&i| matches!(&g.node(i).op, Op::Input { name } if name == LABELS))
    {
        return Err(AutodiffError::at(
            g.node(clash),
            format!("the training graph adds an input `{LABELS}`, and the model already has one"),
            "rename the model's input",
        ));
    }
    let order = g
        .topo_order()
        .map_err(|e| AutodiffError::internal(g.node(logits), &e.0))?;
    let reaching = reaching(g, &order, logits);
    let planned = loss
        .regularizers
        .iter()
        .map(|r| regularizers::plan(g, r))
        .collect::<Result<Vec<_>, _>>()?;
    // What a regulariser reads reaches the loss too.
    let mut reaches_loss = reaching.clone();
    for t in planned.iter().flatten() {
        for &o in t.operands() {
            reaches_loss.extend(self::reaching(g, &order, o));
        }
    }
    let active = active_nodes(g, &order, &reaches_loss);

    let (span, batch, dtype) = (out.span, out.ty.shape[0].clone(), out.ty.dtype);
    let labels = g.add_input(LABELS, TensorType::new(dtype, vec![batch]), span);
    let smoothing = loss.label_smoothing;
    let add = |g: &mut Graph, op: TrainOp, name: &str| {
        g.add_op(Op::Train(op), &[logits, labels], name.into(), span)
            .map_err(|e| AutodiffError::internal(g.node(logits), &e.0))
    };
    let loss_node = add(
        g,
        TrainOp::CrossEntropy {
            label_smoothing: smoothing,
        },
        "loss",
    )?;
    let seed = add(
        g,
        TrainOp::CrossEntropyBackward {
            label_smoothing: smoothing,
        },
        "loss.grad_logits",
    )?;

    let mut pending: BTreeMap<NodeIndex, Vec<NodeIndex>> = BTreeMap::new();
    pending.insert(logits, vec![seed]);
    // Each regulariser's value, and its gradients as contributions like any other.
    let mut parts = vec![loss_node];
    for (r, terms) in loss.regularizers.iter().zip(&planned) {
        let (value, grads) =
            regularizers::emit(g, terms, r.kind(), r.output(), |o| active.contains(&o))?;
        parts.push(value);
        for (o, d) in grads {
            pending.entry(o).or_default().push(d);
        }
    }
    let total = match parts.len() {
        1 => loss_node,
        _ => {
            g.rename(loss_node, "loss.ce".into());
            let mut acc = loss_node;
            for (i, &p) in parts.iter().enumerate().skip(1) {
                let name = if i + 1 == parts.len() {
                    "loss".to_string()
                } else {
                    format!("loss.{i}")
                };
                acc = g
                    .add_op(Op::Add, &[acc, p], name, span)
                    .map_err(|e| AutodiffError::internal(g.node(logits), &e.0))?;
            }
            acc
        }
    };
    let mut grads = Vec::new();
    let mut outputs = vec![loss_node];
    for &n in order.iter().rev() {
        let Some(parts) = pending.remove(&n) else {
            continue;
        };
        if let Op::Param { .. } = g.node(n).op {
            let name = g.node(n).name.clone();
            outputs.push(sum(g, n, parts, Some(format!("grad.{name}")))?);
            grads.push(name);
            continue;
        }
        let dy = sum(g, n, parts, None)?;
        let operands = g.operands(n);
        let want: Vec<bool> = operands.iter().map(|o| active.contains(o)).collect();
        let got = rules::vjp(g, n, dy, &want)?;
        for (o, d) in operands.into_iter().zip(got) {
            if let Some(d) = d {
                pending.entry(o).or_default().push(d);
            }
        }
    }
    // Reverse topological order visits parameters last-first; report them in the
    // graph's order.
    let mut pairs: Vec<(String, NodeIndex)> =
        grads.into_iter().zip(outputs[1..].to_vec()).collect();
    let rank: BTreeMap<&str, usize> = g
        .params()
        .enumerate()
        .map(|(i, (_, node, _))| (node.name.as_str(), i))
        .collect();
    pairs.sort_by_key(|(name, _)| rank[name.as_str()]);
    let (buffers, updates) = running_stat_updates(g, &order, &reaching)?;
    let terms: Vec<NodeIndex> = if parts.len() > 1 { parts } else { Vec::new() };
    let term_names = terms.iter().map(|&n| g.node(n).name.clone()).collect();
    g.outputs = std::iter::once(total)
        .chain(pairs.iter().map(|(_, n)| *n))
        .chain(updates)
        .chain(terms)
        .collect();
    g.remove_dead();
    Ok(OutputNames {
        grads: pairs.into_iter().map(|(name, _)| name).collect(),
        buffers,
        terms: term_names,
    })
}

/// One `running_mean_update` and one `running_var_update` per batch norm with running
/// statistics that the loss depends on: the buffers are updated, never differentiated.
fn running_stat_updates(
    g: &mut Graph,
    order: &[NodeIndex],
    reaching: &BTreeSet<NodeIndex>,
) -> Result<(Vec<String>, Vec<NodeIndex>), AutodiffError> {
    let (mut names, mut nodes) = (Vec::new(), Vec::new());
    for &n in order.iter().filter(|n| reaching.contains(n)) {
        let Op::BatchNorm {
            momentum,
            affine,
            running_stats: true,
            ..
        } = g.node(n).op
        else {
            continue;
        };
        let ops = g.operands(n);
        let at = if affine { 3 } else { 1 };
        for (slot, var) in [(at, false), (at + 1, true)] {
            let name = g.node(ops[slot]).name.clone();
            let op = Op::Train(TrainOp::RunningStatUpdate { momentum, var });
            let operands = [ops[0], ops[at], ops[at + 1]];
            let span = g.node(n).span;
            let u = g
                .add_op(op, &operands, format!("update.{name}"), span)
                .map_err(|e| AutodiffError::internal(g.node(n), &e.0))?;
            names.push(name);
            nodes.push(u);
        }
    }
    Ok((names, nodes))
}

/// `logits` and every node it depends on.
fn reaching(g: &Graph, order: &[NodeIndex], logits: NodeIndex) -> BTreeSet<NodeIndex> {
    let mut reaches = BTreeSet::from([logits]);
    for &n in order.iter().rev() {
        if reaches.contains(&n) {
            reaches.extend(g.operands(n));
        }
    }
    reaches
}

/// The nodes on a path from a trainable or shared parameter to the logits: the ones
/// whose gradient the loss needs.
fn active_nodes(
    g: &Graph,
    order: &[NodeIndex],
    reaching: &BTreeSet<NodeIndex>,
) -> BTreeSet<NodeIndex> {
    let mut depends = BTreeSet::new();
    for &n in order {
        let source = matches!(
            g.node(n).op,
            Op::Param {
                role: ParamRole::Trainable | ParamRole::Shared,
                ..
            }
        );
        if source || g.operands(n).iter().any(|o| depends.contains(o)) {
            depends.insert(n);
        }
    }
    depends.intersection(reaching).copied().collect()
}

/// The sum of the gradient contributions to `n`, one `add` per extra use.
fn sum(
    g: &mut Graph,
    n: NodeIndex,
    parts: Vec<NodeIndex>,
    name: Option<String>,
) -> Result<NodeIndex, AutodiffError> {
    let base = name.unwrap_or_else(|| format!("{}.grad", g.node(n).name));
    let span = g.node(n).span;
    let mut acc = parts[0];
    for (i, &p) in parts.iter().enumerate().skip(1) {
        let last = i + 1 == parts.len();
        let label = if last {
            base.clone()
        } else {
            format!("{base}.{i}")
        };
        acc = g
            .add_op(Op::Add, &[acc, p], label, span)
            .map_err(|e| AutodiffError::internal(g.node(n), &e.0))?;
    }
    if parts.len() == 1 && base.starts_with("grad.") {
        // A parameter's single gradient node is renamed so the output says whose it is.
        g.rename(acc, base);
    }
    Ok(acc)
}

/// The `autodiff` pass: replaces the graph by its training graph (outputs: the loss,
/// then `grad.<name>` per parameter, then `update.<name>` per buffer; see
/// [`TrainingGraph::of`]). The training pipeline runs it after
/// `passes::pipeline::AUTODIFF_AFTER`. A model it cannot differentiate leaves its
/// diagnostic (E0801, at the layer) in `PassContext::diagnostic`.
pub struct Autodiff {
    pub loss: Loss,
}

impl Pass for Autodiff {
    fn name(&self) -> &'static str {
        "autodiff"
    }

    fn about(&self) -> &'static str {
        "adds a cross-entropy loss on the classifier output and the backward graph: \
         outputs the loss and one gradient per trainable parameter"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let before = graph.g.node_count();
        let trained = differentiate(graph, &self.loss).map_err(|e| {
            ctx.diagnostic = Some(e.to_diagnostic());
            e.to_string()
        })?;
        *graph = trained.graph;
        Ok(graph.g.node_count().saturating_sub(before).max(1))
    }
}
