//! `fold-bases`: a k×k basis conv followed by a 1×1 combination is one k×k conv whose
//! kernel is `Σ_j C[o, j]·W[j, …]` (exact: both convs are linear and the 1×1 is
//! pointwise; SEEDS.md §2.7). This covers LC layers (frozen basis, then the learned
//! 1×1) and shared-basis convs (`[unique ‖ shared]` basis → BatchNorm → 1×1); the
//! BatchNorm between them folds only in inference, where it uses running statistics.
//!
//! The folded kernel is computed by `lc_fold` (and `bn_fold`) over the parameters, so
//! the coefficients stay trainable parameters and training graphs fold too. A layer is
//! folded only where `fold_is_cheaper` says so at the batch size `ctx.batch`, by the
//! cost table of `ctx.cost_backend`.

use super::manager::{CompileMode, Pass, PassContext};
use crate::cost::CostTable;
use crate::ir::fold_ops::FoldOutput;
use crate::ir::graph::Graph;
use crate::ir::op::{ConvAttrs, Op, Padding};
use crate::ir::types::Dim;
use petgraph::stable_graph::NodeIndex;

pub struct FoldBases;

/// The sizes of one conv for the cost estimate, every dimension concrete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: u64,
    pub in_channels: u64,
    pub out_channels: u64,
    pub groups: u64,
    pub kernel: Vec<u64>,
    pub out_spatial: Vec<u64>,
}

impl ConvShape {
    /// Multiply-adds of a direct conv.
    pub fn macs(&self) -> u64 {
        let per_out = (self.in_channels / self.groups.max(1))
            .saturating_mul(self.kernel.iter().product::<u64>());
        self.out_spatial
            .iter()
            .fold(self.batch, |a, &d| a.saturating_mul(d))
            .saturating_mul(self.out_channels)
            .saturating_mul(per_out)
    }
}

/// Estimated cost of a layer in both forms: multiply-adds, and seconds from the
/// fitted cost model (each conv at its cheapest algorithm), which decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FoldDecision {
    /// The basis conv(s) plus the 1×1.
    pub unfolded: u64,
    /// The folded conv plus synthesising its kernel (`Co·J·Cin·k²`, once per run).
    pub folded: u64,
    pub unfolded_s: f64,
    pub folded_s: f64,
    pub cheaper: bool,
}

/// The cost model's estimate for a conv at its cheapest algorithm. The shape keeps
/// only output sizes, so it is costed as a stride-1 `same` conv of that size.
fn conv_seconds(table: &CostTable, s: &ConvShape) -> f64 {
    let mut shape = crate::cost::ConvShape::plain(
        s.batch,
        s.in_channels,
        s.out_channels,
        &s.out_spatial,
        &s.kernel,
        crate::ir::op::Padding::Same,
    );
    shape.groups = s.groups.max(1);
    let e = table.estimate(&shape);
    e.get(e.cheapest())
}

/// Kernel synthesis is one GEMM: its multiply-adds at the table's GEMM rate (the
/// reference table's for a backend that fits no im2col, which OpenCL does not).
fn gemm_seconds(table: &CostTable, macs: u64) -> f64 {
    let im2col = crate::ir::op::ConvAlgo::Im2col;
    let per_mac = (table.algo(im2col))
        .or_else(|| CostTable::reference().algo(im2col))
        .map_or(0.0, |c| c.coef[0]);
    macs as f64 * per_mac
}

/// The one place the fold decision is made: `basis` are the k×k convs whose outputs
/// the 1×1 `mix` combines (several for `[unique ‖ shared]`; same input, kernel and
/// output size), at the batch size in the shapes, by the cost table of the backend
/// the graph is compiled for (`PassContext::cost_backend`).
pub fn fold_is_cheaper(table: &CostTable, basis: &[ConvShape], mix: &ConvShape) -> FoldDecision {
    let unfolded = basis
        .iter()
        .fold(mix.macs(), |a, b| a.saturating_add(b.macs()));
    let first = &basis[0];
    let folded_conv = ConvShape {
        out_channels: mix.out_channels,
        ..first.clone()
    };
    let synth = ConvShape {
        batch: 1,
        in_channels: mix.in_channels,
        out_channels: mix.out_channels,
        groups: 1,
        kernel: first.kernel.clone(),
        out_spatial: vec![first.in_channels / first.groups.max(1)],
    };
    let folded = folded_conv.macs().saturating_add(synth.macs());
    let unfolded_s =
        basis.iter().map(|b| conv_seconds(table, b)).sum::<f64>() + conv_seconds(table, mix);
    let folded_s = conv_seconds(table, &folded_conv) + gemm_seconds(table, synth.macs());
    FoldDecision {
        unfolded,
        folded,
        unfolded_s,
        folded_s,
        cheaper: folded_s < unfolded_s,
    }
}

/// `12.3 MMAC`.
pub fn fmt_macs(m: u64) -> String {
    let v = m as f64;
    match m {
        0..=999 => format!("{m} MAC"),
        1_000..=999_999 => format!("{:.1} kMAC", v / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MMAC", v / 1e6),
        _ => format!("{:.2} GMAC", v / 1e9),
    }
}

/// A 1×1, stride-1, unpadded, ungrouped conv.
fn is_pointwise(graph: &Graph, n: NodeIndex) -> bool {
    let Op::Conv(c) = &graph.node(n).op else {
        return false;
    };
    let w = &graph.node(graph.operands(n)[1]).ty;
    let unpadded = match &c.padding {
        Padding::Explicit(p) => p.iter().all(|&(a, b)| a == 0 && b == 0),
        Padding::Same | Padding::Causal => true,
    };
    c.groups == 1
        && unpadded
        && c.stride.iter().all(|&s| s == 1)
        && w.shape[2..].iter().all(|d| *d == Dim::Known(1))
}

/// A basis layer in front of a 1×1 conv.
struct Candidate {
    mix: NodeIndex,
    bn: Option<NodeIndex>,
    concat: Option<NodeIndex>,
    branches: Vec<NodeIndex>,
}

fn candidate(graph: &Graph, mix: NodeIndex) -> Option<Candidate> {
    if !is_pointwise(graph, mix) {
        return None;
    }
    let z = graph.operands(mix)[0];
    let (bn, u) = match graph.node(z).op {
        Op::BatchNorm { .. } => (Some(z), graph.operands(z)[0]),
        _ => (None, z),
    };
    let (concat, branches) = match graph.node(u).op {
        Op::Concat { axis: 1 } => (Some(u), graph.operands(u)),
        Op::Conv { .. } => (None, vec![u]),
        _ => return None,
    };
    let first = &graph.node(branches[0]).op;
    let x = graph.operands(branches[0])[0];
    let alike = branches.iter().all(|&b| {
        let op = &graph.node(b).op;
        matches!(op, Op::Conv(c) if c.groups == 1) && op == first && graph.operands(b)[0] == x
    });
    let biased = matches!(first, Op::Conv(c) if c.bias);
    (alike && !(biased && branches.len() > 1)).then_some(Candidate {
        mix,
        bn,
        concat,
        branches,
    })
}

fn conv_shape(graph: &Graph, conv: NodeIndex, batch: u64) -> ConvShape {
    let ops = graph.operands(conv);
    let (x, w, y) = (
        &graph.node(ops[0]).ty,
        &graph.node(ops[1]).ty,
        &graph.node(conv).ty,
    );
    let groups = graph.node(conv).op.conv_attrs().map_or(1, |c| c.groups);
    ConvShape {
        batch: y.shape[0].at_batch(batch),
        in_channels: x.shape[1].at_batch(batch),
        out_channels: y.shape[1].at_batch(batch),
        groups,
        kernel: w.dims_at_batch(batch)[2..].to_vec(),
        out_spatial: y.dims_at_batch(batch)[2..].to_vec(),
    }
}

/// Why the candidate cannot be folded exactly in this graph, if it cannot.
fn blocker(graph: &Graph, c: &Candidate, mode: CompileMode) -> Option<String> {
    if let Some(bn) = c.bn {
        let Op::BatchNorm { running_stats, .. } = graph.node(bn).op else {
            return None;
        };
        if mode == CompileMode::Training || !running_stats {
            return Some(
                "the batchnorm between basis and 1x1 uses batch statistics (training)".into(),
            );
        }
    }
    let mut chain = vec![(graph.operands(c.mix)[0], c.mix)];
    if let Some(bn) = c.bn {
        chain.push((graph.operands(bn)[0], bn));
    }
    chain.extend(
        c.concat
            .iter()
            .flat_map(|&k| c.branches.iter().map(move |&b| (b, k))),
    );
    if chain.iter().any(|&(n, user)| !graph.sole_use(n, user)) {
        return Some("the basis output has other users".into());
    }
    None
}

fn describe(basis: &[ConvShape], mix: &ConvShape) -> String {
    let k: Vec<String> = basis[0].kernel.iter().map(u64::to_string).collect();
    let j: u64 = basis.iter().map(|b| b.out_channels).sum();
    format!(
        "basis {} conv ({} -> {j} channels{}) + 1x1 ({j} -> {})",
        k.join("x"),
        basis[0].in_channels,
        if basis.len() > 1 {
            ", unique+shared"
        } else {
            ""
        },
        mix.out_channels
    )
}

fn fold(graph: &mut Graph, c: &Candidate) -> Result<NodeIndex, String> {
    let layer = graph
        .node(c.mix)
        .name
        .trim_end_matches(".coeff")
        .to_string();
    let first = c.branches[0];
    let bops = graph.operands(first);
    let x = bops[0];
    let mut weight = bops[1];
    let mut bias_j = bops.get(2).copied();
    if c.branches.len() > 1 {
        let ws: Vec<NodeIndex> = c.branches.iter().map(|&b| graph.operands(b)[1]).collect();
        weight = graph.add_op(
            Op::Concat { axis: 0 },
            &ws,
            format!("{layer}.basis_weight"),
            graph.node(first).span,
        )?;
    }
    if let Some(bn) = c.bn {
        let Op::BatchNorm { eps, affine, .. } = graph.node(bn).op else {
            return Err("not a batchnorm".into());
        };
        let p = graph.operands(bn)[1..].to_vec();
        let (gamma, stats) = if affine {
            (vec![p[0]], &p[2..])
        } else {
            (vec![], &p[..])
        };
        let mut wops = vec![weight];
        wops.extend(&gamma);
        wops.push(stats[1]);
        let op = Op::BnFold {
            eps,
            affine,
            output: FoldOutput::Weight,
        };
        let span = graph.node(bn).span;
        weight = graph.add_op(op, &wops, format!("{layer}.basis_bn.weight"), span)?;
        let mut bops: Vec<NodeIndex> = bias_j.into_iter().collect();
        if affine {
            bops.extend(&p[..2]);
        }
        bops.extend(stats);
        let op = Op::BnFold {
            eps,
            affine,
            output: FoldOutput::Bias {
                conv_bias: bias_j.is_some(),
            },
        };
        bias_j = Some(graph.add_op(op, &bops, format!("{layer}.basis_bn.bias"), span)?);
    }
    let mops = graph.operands(c.mix);
    let coeff = mops[1];
    let span = graph.node(c.mix).span;
    let w = graph.add_op(
        Op::LcFold,
        &[weight, coeff],
        format!("{layer}.folded.weight"),
        span,
    )?;
    let mut bias = match bias_j {
        Some(b) => Some(graph.add_op(
            Op::LcFold,
            &[b, coeff],
            format!("{layer}.folded.bias"),
            span,
        )?),
        None => None,
    };
    if let Some(&mb) = mops.get(2) {
        bias = Some(match bias {
            Some(b) => graph.add_op(Op::Add, &[b, mb], format!("{layer}.folded.bias_sum"), span)?,
            None => mb,
        });
    }
    let Op::Conv(basis) = &graph.node(first).op else {
        return Err("not a conv".into());
    };
    let op = Op::Conv(ConvAttrs {
        groups: 1,
        bias: bias.is_some(),
        ..basis.clone()
    });
    let mut operands = vec![x, w];
    operands.extend(bias);
    let conv = graph.add_op(op, &operands, layer, span)?;
    graph.replace_uses(c.mix, conv)?;
    let mut replaced: Vec<NodeIndex> = [Some(c.mix), c.bn, c.concat]
        .into_iter()
        .flatten()
        .collect();
    replaced.extend(&c.branches);
    graph.remove_unused(&replaced)?;
    Ok(conv)
}

impl Pass for FoldBases {
    fn name(&self) -> &'static str {
        "fold-bases"
    }

    fn about(&self) -> &'static str {
        "fold a k x k basis conv and its 1x1 combination into one conv where cheaper"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let order = graph.topo_order().map_err(|e| e.to_string())?;
        let mut folds = 0;
        for mix in order {
            if !graph.contains(mix) {
                continue;
            }
            let Some(c) = candidate(graph, mix) else {
                continue;
            };
            let layer = graph.node(mix).name.trim_end_matches(".coeff").to_string();
            let batch = ctx.batch.max(1);
            let basis: Vec<ConvShape> = c
                .branches
                .iter()
                .map(|&b| conv_shape(graph, b, batch))
                .collect();
            let mix_shape = conv_shape(graph, mix, batch);
            let what = describe(&basis, &mix_shape);
            if let Some(why) = blocker(graph, &c, ctx.mode) {
                ctx.note(layer, "fold-bases", format!("kept unfolded: {what}: {why}"));
                continue;
            }
            let d = fold_is_cheaper(CostTable::of(ctx.cost_backend), &basis, &mix_shape);
            let k: Vec<String> = basis[0].kernel.iter().map(u64::to_string).collect();
            let cost = format!(
                "{} -> {}, est {} -> {} at batch {batch}",
                fmt_macs(d.unfolded),
                fmt_macs(d.folded),
                crate::cost::fmt_seconds(d.unfolded_s),
                crate::cost::fmt_seconds(d.folded_s)
            );
            if !d.cheaper {
                let text = format!("kept unfolded: {what}: folding costs more, {cost}");
                ctx.note(layer, "fold-bases", text);
                continue;
            }
            fold(graph, &c)?;
            let bn = if c.bn.is_some() {
                " (batchnorm folded)"
            } else {
                ""
            };
            let text = format!("folded {what} into one {} conv{bn}: {cost}", k.join("x"));
            ctx.note(layer, "fold-bases", text);
            folds += 1;
        }
        Ok(folds)
    }
}
