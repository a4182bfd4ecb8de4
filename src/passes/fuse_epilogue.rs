//! `fuse-epilogue`: a conv and the elementwise work that follows it become one
//! `fused_conv`. In inference an eval-mode BatchNorm right after the conv folds into
//! the conv's weight and bias through `bn_fold` ops over the parameters (so a graph
//! with bound weights stays exact); then a chain of `relu` and residual `add`s joins
//! the conv's epilogue. Every intermediate must have the next step as its only user.
//!
//! In training BatchNorm normalises by batch statistics, so it is never folded there;
//! relu and add after a conv still fuse.

use super::manager::{CompileMode, Pass, PassContext};
use crate::ir::fold_ops::{Epilogue, FoldOutput};
use crate::ir::graph::Graph;
use crate::ir::op::{ConvAttrs, Op};
use petgraph::stable_graph::NodeIndex;

pub struct FuseEpilogue;

/// What follows one conv and can join it.
struct Chain {
    conv: NodeIndex,
    bn: Option<NodeIndex>,
    steps: Vec<Epilogue>,
    residuals: Vec<NodeIndex>,
    /// Every node the fused conv replaces after the conv, in order; the last one's
    /// users read the fused conv.
    absorbed: Vec<NodeIndex>,
}

/// The single user of `n`, when `n` is read once and is not a graph output.
fn only_user(graph: &Graph, n: NodeIndex) -> Option<NodeIndex> {
    let users = graph.users(n);
    match users.as_slice() {
        [u] if graph.sole_use(n, *u) => Some(*u),
        _ => None,
    }
}

fn chain(graph: &Graph, conv: NodeIndex, mode: CompileMode) -> Chain {
    let mut c = Chain {
        conv,
        bn: None,
        steps: Vec::new(),
        residuals: Vec::new(),
        absorbed: Vec::new(),
    };
    let mut cur = conv;
    if let Some(u) = only_user(graph, cur) {
        if let Op::BatchNorm {
            running_stats: true,
            ..
        } = graph.node(u).op
        {
            if mode == CompileMode::Inference {
                c.bn = Some(u);
                c.absorbed.push(u);
                cur = u;
            }
        }
    }
    while let Some(u) = only_user(graph, cur) {
        match graph.node(u).op {
            Op::Relu => c.steps.push(Epilogue::Relu),
            Op::Add => {
                let ops = graph.operands(u);
                let other = if ops[0] == cur { ops[1] } else { ops[0] };
                c.steps.push(Epilogue::AddResidual);
                c.residuals.push(other);
            }
            _ => break,
        }
        c.absorbed.push(u);
        cur = u;
    }
    c
}

fn fuse(graph: &mut Graph, c: &Chain) -> Result<NodeIndex, String> {
    let Op::Conv(conv) = graph.node(c.conv).op.clone() else {
        return Err("not a conv".into());
    };
    let name = graph.node(c.conv).name.clone();
    let ops = graph.operands(c.conv);
    let (x, mut w, mut b) = (ops[0], ops[1], ops.get(2).copied());
    if let Some(bn) = c.bn {
        let Op::BatchNorm { eps, affine, .. } = graph.node(bn).op else {
            return Err("not a batchnorm".into());
        };
        let p = graph.operands(bn)[1..].to_vec();
        let (affine_ops, stats) = p.split_at(if affine { 2 } else { 0 });
        let mut wops = vec![w];
        wops.extend(affine_ops.first());
        wops.push(stats[1]);
        let op = Op::BnFold {
            eps,
            affine,
            output: FoldOutput::Weight,
        };
        let span = graph.node(bn).span;
        w = graph.add_op(op, &wops, format!("{name}.bn_folded.weight"), span)?;
        let mut bops: Vec<NodeIndex> = b.into_iter().collect();
        bops.extend(affine_ops);
        bops.extend(stats);
        let op = Op::BnFold {
            eps,
            affine,
            output: FoldOutput::Bias {
                conv_bias: conv.bias,
            },
        };
        b = Some(graph.add_op(op, &bops, format!("{name}.bn_folded.bias"), span)?);
    }
    let op = Op::FusedConv {
        conv: ConvAttrs {
            bias: b.is_some(),
            ..conv
        },
        epilogue: c.steps.clone(),
    };
    let mut operands = vec![x, w];
    operands.extend(b);
    operands.extend(&c.residuals);
    let fused = graph.add_op(op, &operands, name, graph.node(c.conv).span)?;
    let last = *c.absorbed.last().unwrap_or(&c.conv);
    graph.replace_uses(last, fused)?;
    let mut replaced = vec![c.conv];
    replaced.extend(&c.absorbed);
    graph.remove_unused(&replaced)?;
    Ok(fused)
}

impl Pass for FuseEpilogue {
    fn name(&self) -> &'static str {
        "fuse-epilogue"
    }

    fn about(&self) -> &'static str {
        "merge bias, eval-mode batchnorm (inference), relu and residual add into the conv"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let order = graph.topo_order().map_err(|e| e.to_string())?;
        let mut fused = 0;
        for n in order {
            if !graph.contains(n) || !matches!(graph.node(n).op, Op::Conv { .. }) {
                continue;
            }
            let c = chain(graph, n, ctx.mode);
            let layer = graph.node(n).name.clone();
            let kept_bn = only_user(graph, n).and_then(|u| match graph.node(u).op {
                Op::BatchNorm { .. } if ctx.mode == CompileMode::Training => {
                    Some("training normalises by batch statistics")
                }
                Op::BatchNorm {
                    running_stats: false,
                    ..
                } => Some("it keeps no running statistics"),
                _ => None,
            });
            if let Some(why) = kept_bn {
                let text = format!("kept batchnorm: {why}");
                ctx.note(layer.clone(), "fuse-epilogue", text);
            }
            if c.absorbed.is_empty() {
                continue;
            }
            let mut parts = Vec::new();
            if matches!(&graph.node(n).op, Op::Conv(c) if c.bias) {
                parts.push("bias");
            }
            if c.bn.is_some() {
                parts.push("bn");
            }
            parts.extend(c.steps.iter().map(|s| s.name()));
            fuse(graph, &c)?;
            ctx.note(layer, "fuse-epilogue", format!("fused {}", parts.join("+")));
            fused += 1;
        }
        Ok(fused)
    }
}
