//! The loss's regularisers as graph terms: each reads parameters (or a FlexConv's
//! generated kernel) through a penalty `TrainOp`, its value is added to the
//! cross-entropy, and its backward ops seed the gradients of what it reads, which
//! the reverse sweep then carries on like any other contribution (through the MAGNet
//! and the mask, for a generated kernel). The forms are the authors' code's
//! (docs/autodiff.md, "Regularisers"; SEEDS §1.6, §3.2).

use super::AutodiffError;
use crate::diag::Span;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, TrainOp};
use crate::ir::train_ops::AntialiasAttrs;
use crate::recipe::{self, AntialiasTarget, Recipe};
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;

/// One term added to the cross-entropy.
#[derive(Clone, Debug, PartialEq)]
pub enum Regularizer {
    /// Shared bases' orthogonality (Deeply Shared Filter Bases): `weight · mean over
    /// the counted entries of (B Bᵀ − I)²` over every declared basis.
    Orthogonality { weight: f64 },
    /// FlexConv's anti-aliasing penalty on MAGNet's Gabor frequencies above each
    /// layer's Nyquist share (and the mask's with `GaborMask`).
    Antialias {
        weight: f64,
        stddevs: f64,
        target: AntialiasTarget,
    },
    /// FlexConv's weight decay in the loss: `weight · Σ (‖kernel‖₂ + ‖bias‖₂)` over
    /// every FlexConv's generated (masked) kernel and its bias, unsquared.
    KernelL2 { weight: f64 },
}

impl Regularizer {
    /// The name of the training graph's output that holds this term's value.
    pub fn output(&self) -> &'static str {
        match self {
            Regularizer::Orthogonality { .. } => "reg.orthogonality",
            Regularizer::Antialias { .. } => "reg.antialias",
            Regularizer::KernelL2 { .. } => "reg.weight_decay",
        }
    }

    /// The recipe's name for it.
    pub fn kind(&self) -> &'static str {
        match self {
            Regularizer::Orthogonality { .. } => "orthogonality",
            Regularizer::Antialias { .. } => "antialias",
            Regularizer::KernelL2 { .. } => "kernel_l2",
        }
    }

    fn weight(&self) -> f64 {
        match self {
            Regularizer::Orthogonality { weight }
            | Regularizer::Antialias { weight, .. }
            | Regularizer::KernelL2 { weight } => *weight,
        }
    }
}

/// The loss a recipe asks for: its cross-entropy (plain when `loss:` is unset) and
/// its regularisers in the order written. Two of one kind are refused: each term is
/// one output, logged under its kind's name.
pub(super) fn from_recipe(recipe: &Recipe, output: usize) -> Result<super::Loss, AutodiffError> {
    let label_smoothing = match &recipe.loss {
        Some(recipe::Loss::CrossEntropy { label_smoothing }) => *label_smoothing,
        None => 0.0,
    };
    let mut regularizers: Vec<Regularizer> = Vec::new();
    for r in recipe.regularizers.iter().flatten() {
        let term = match r {
            recipe::Regularizer::Orthogonality { weight } => {
                Regularizer::Orthogonality { weight: *weight }
            }
            recipe::Regularizer::Antialias {
                weight,
                stddevs,
                target,
            } => Regularizer::Antialias {
                weight: *weight,
                stddevs: *stddevs,
                target: *target,
            },
            recipe::Regularizer::KernelL2 { weight } => Regularizer::KernelL2 { weight: *weight },
        };
        if regularizers.iter().any(|t| t.kind() == term.kind()) {
            return Err(recipe_error(
                format!("`regularizers` lists `{}` twice", term.kind()),
                "list each regulariser once, with the sum of the weights",
            ));
        }
        regularizers.push(term);
    }
    Ok(super::Loss {
        output,
        label_smoothing,
        regularizers,
    })
}

fn recipe_error(message: String, hint: &str) -> AutodiffError {
    AutodiffError {
        message,
        layer: "train".into(),
        span: Span::default(),
        hint: Some(hint.into()),
    }
}

/// One penalty node: its op, what it reads, and per operand the op of its gradient.
pub(super) struct Term {
    /// Names the nodes: `<label>.<kind>` and `<label>.grad_<kind><slot>`.
    label: String,
    span: Span,
    value: TrainOp,
    operands: Vec<NodeIndex>,
    grads: Vec<TrainOp>,
}

impl Term {
    pub(super) fn operands(&self) -> &[NodeIndex] {
        &self.operands
    }
}

/// Finds the penalty terms of `reg` in `g` before anything is added, so that the
/// pass can count what they read as reaching the loss.
pub(super) fn plan(g: &Graph, reg: &Regularizer) -> Result<Vec<Term>, AutodiffError> {
    let w = reg.weight();
    if !(w.is_finite() && w >= 0.0) {
        return Err(whole_graph(
            g,
            format!(
                "the weight of `{}` must be a non-negative number, got {w}",
                reg.kind()
            ),
            "weights are 0 or more; 0 turns the term off",
        ));
    }
    let params: BTreeMap<&str, NodeIndex> =
        g.params().map(|(id, n, _)| (n.name.as_str(), id)).collect();
    let param = |name: &str| -> Result<NodeIndex, AutodiffError> {
        params.get(name).copied().ok_or_else(|| {
            whole_graph(
                g,
                format!(
                    "internal error: `{}` reads a parameter `{name}` the graph does not have",
                    reg.kind()
                ),
                "this is a compiler bug; please report it with the model",
            )
        })
    };
    match reg {
        Regularizer::Orthogonality { weight } => {
            if g.bases.is_empty() {
                return Err(whole_graph(
                    g,
                    "`orthogonality` needs shared bases, and this model declares none".into(),
                    "declare one with `basis NAME = shared_basis(...)`, or drop the regulariser",
                ));
            }
            let mut terms = Vec::new();
            let mut count = 0;
            for b in &g.bases {
                let names: Vec<&String> = b.shared.iter().chain(&b.unique).collect();
                let operands = names
                    .iter()
                    .map(|n| param(n))
                    .collect::<Result<Vec<_>, _>>()?;
                let rows: Vec<usize> = operands
                    .iter()
                    .map(|&o| g.node(o).ty.shape[0].known().unwrap_or(0) as usize)
                    .collect();
                count += crate::ir::train_ops::ortho_count(&rows, b.shared.len());
                let span = g.node(operands[0]).span;
                terms.push((
                    b.name.clone(),
                    span,
                    b.shared.len(),
                    b.unique.len(),
                    operands,
                ));
            }
            // The authors' code divides the sum over every stage by the number of entries
            // summed over every stage: one mean, not a mean per stage.
            let scale = weight / count.max(1) as f64;
            Ok(terms
                .into_iter()
                .map(|(label, span, shared, unique, operands)| Term {
                    label,
                    span,
                    value: TrainOp::OrthoPenalty {
                        shared,
                        unique,
                        scale,
                    },
                    grads: (0..operands.len())
                        .map(|slot| TrainOp::OrthoPenaltyBackward {
                            shared,
                            unique,
                            scale,
                            slot,
                        })
                        .collect(),
                    operands,
                })
                .collect())
        }
        Regularizer::Antialias {
            weight,
            stddevs,
            target,
        } => {
            no_flexconvs(g, reg)?;
            let mut terms = Vec::new();
            for f in &g.flexconvs {
                let mut operands = Vec::new();
                for l in 0.. {
                    let base = format!("{}.kernel_net.filters.{l}", f.name);
                    match params.get(format!("{base}.linear.weight").as_str()) {
                        Some(&wg) => operands.extend([wg, param(&format!("{base}.gamma"))?]),
                        None => break,
                    }
                }
                let filters = operands.len() / 2;
                if filters == 0 {
                    param(&format!("{}.kernel_net.filters.0.linear.weight", f.name))?;
                }
                let span = g.node(operands[0]).span;
                let mask = *target == AntialiasTarget::GaborMask;
                if mask {
                    match params.get(format!("{}.mask_params", f.name).as_str()) {
                        Some(&m) => operands.push(m),
                        None => {
                            return Err(AutodiffError {
                                message: format!(
                                    "`antialias(target: gabor_mask)` counts each flexconv's mask, \
                                     and `{}` has none",
                                    f.name
                                ),
                                layer: f.name.clone(),
                                span,
                                hint: Some(
                                    "give the layer a `mask: gauss(...)`, or use `target: gabor`"
                                        .into(),
                                ),
                            })
                        }
                    }
                }
                // The horizon k samples [-1, 1] at (k − 1)/2 per unit; Nyquist is half of
                // that. With unequal axes the coarsest one bounds every frequency.
                let k = f.horizon.iter().copied().min().unwrap_or(1);
                let attrs = AntialiasAttrs {
                    filters,
                    stddevs: *stddevs,
                    nyquist: (k as f64 - 1.0) / 4.0,
                    mask,
                    weight: *weight,
                };
                terms.push(Term {
                    label: f.name.clone(),
                    span,
                    value: TrainOp::AntialiasPenalty(attrs.clone()),
                    grads: (0..operands.len())
                        .map(|slot| TrainOp::AntialiasPenaltyBackward {
                            attrs: attrs.clone(),
                            slot,
                        })
                        .collect(),
                    operands,
                });
            }
            Ok(terms)
        }
        Regularizer::KernelL2 { weight } => {
            no_flexconvs(g, reg)?;
            let mut terms = Vec::new();
            for f in &g.flexconvs {
                let conv = g
                    .node_ids()
                    .find(|&id| g.node(id).name == f.name && matches!(g.node(id).op, Op::Conv(_)))
                    .ok_or_else(|| {
                        whole_graph(
                            g,
                            format!(
                                "internal error: the flexconv `{}` is not a conv node",
                                f.name
                            ),
                            "this is a compiler bug; please report it with the model",
                        )
                    })?;
                // The conv's own kernel operand: the masked (and sampling-rate scaled)
                // kernel it convolves with, and its bias.
                for (i, &o) in g.operands(conv).iter().enumerate().skip(1) {
                    terms.push(Term {
                        label: format!("{}.{}", f.name, if i == 1 { "kernel" } else { "bias" }),
                        span: g.node(conv).span,
                        value: TrainOp::NormPenalty { weight: *weight },
                        grads: vec![TrainOp::NormPenaltyBackward { weight: *weight }],
                        operands: vec![o],
                    });
                }
            }
            Ok(terms)
        }
    }
}

fn no_flexconvs(g: &Graph, reg: &Regularizer) -> Result<(), AutodiffError> {
    if !g.flexconvs.is_empty() {
        return Ok(());
    }
    let hint = match reg {
        Regularizer::KernelL2 { .. } => {
            "`kernel_l2` penalises FlexConv's generated kernels; for plain weights use the \
             optimiser's `weight_decay`"
        }
        _ => "drop the regulariser, or use flexconv layers",
    };
    Err(whole_graph(
        g,
        format!(
            "`{}` needs flexconv layers, and this model has none",
            reg.kind()
        ),
        hint,
    ))
}

fn whole_graph(g: &Graph, message: String, hint: &str) -> AutodiffError {
    AutodiffError {
        message,
        layer: g.name.clone(),
        span: Span::default(),
        hint: Some(hint.into()),
    }
}

/// Adds the terms' value nodes and their sum, named `output`, and the gradient nodes of
/// the operands `wanted` says need one; returns the sum and `(operand, gradient)` pairs.
pub(super) fn emit(
    g: &mut Graph,
    terms: &[Term],
    kind: &str,
    output: &str,
    wanted: impl Fn(NodeIndex) -> bool,
) -> Result<(NodeIndex, Vec<(NodeIndex, NodeIndex)>), AutodiffError> {
    let mut grads = Vec::new();
    let mut total: Option<NodeIndex> = None;
    let internal =
        |g: &Graph, t: &Term, e: String| AutodiffError::internal(g.node(t.operands[0]), &e);
    for (i, t) in terms.iter().enumerate() {
        let last = i + 1 == terms.len();
        let name = format!("{}.{kind}", t.label);
        let v = g
            .add_op(Op::Train(t.value.clone()), &t.operands, name, t.span)
            .map_err(|e| internal(g, t, e.0))?;
        total = Some(match total {
            None => v,
            Some(acc) => {
                let name = if last {
                    output.to_string()
                } else {
                    format!("{output}.{i}")
                };
                g.add_op(Op::Add, &[acc, v], name, t.span)
                    .map_err(|e| internal(g, t, e.0))?
            }
        });
        for (slot, (&o, op)) in t.operands.iter().zip(&t.grads).enumerate() {
            if !wanted(o) {
                continue;
            }
            let name = format!("{}.grad_{kind}{slot}", t.label);
            let d = g
                .add_op(Op::Train(op.clone()), &t.operands, name, t.span)
                .map_err(|e| internal(g, t, e.0))?;
            grads.push((o, d));
        }
    }
    let total = total.ok_or_else(|| {
        whole_graph(
            g,
            format!("internal error: `{kind}` has no terms"),
            "this is a compiler bug; please report it with the model",
        )
    })?;
    if terms.len() == 1 {
        g.rename(total, output.to_string());
    }
    Ok((total, grads))
}
