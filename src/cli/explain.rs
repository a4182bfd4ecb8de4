//! `fnetc compile --explain`: after the pipeline, one block per conv: its geometry, the
//! kernel size before and after cropping (FlexConvs), the chosen algorithm against the
//! alternatives' estimated costs, and every note the passes left for the layer (folds,
//! fusions, crops). Deterministic text, in the IR's topological order.

use crate::cost::{fmt_seconds, CostTable, ALGOS};
use crate::ir::graph::Graph;
use crate::ir::op::ConvAlgo;
use crate::passes::choose_conv_algo::conv_shape;
use crate::passes::{Note, PassContext};
use std::collections::BTreeSet;
use std::fmt::Write;

fn dims(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
}

/// Whether a note about `layer` belongs to the conv `conv` (itself or its parts, such
/// as `conv.kernel`).
fn belongs(layer: &str, conv: &str) -> bool {
    layer == conv || layer.strip_prefix(conv).is_some_and(|r| r.starts_with('.'))
}

fn note_line(out: &mut String, n: &Note) {
    let _ = writeln!(out, "  - {}: {}", n.pass, n.text);
}

pub fn explain(graph: &Graph, ctx: &PassContext) -> String {
    let mut out = String::new();
    let table = CostTable::of(ctx.cost_backend);
    let order = graph.topo_order().unwrap_or_default();
    let convs: Vec<_> = order
        .into_iter()
        .filter(|&n| graph.node(n).op.conv_attrs().is_some())
        .collect();
    let _ = writeln!(
        out,
        "explain {}: {} convs, batch {} where symbolic, costed for {} by cost table `{}` (table fitted on {})",
        graph.name,
        convs.len(),
        ctx.batch,
        table.backend.target(),
        table.backend.name(),
        table.machine
    );
    let mut used = BTreeSet::new();
    for id in convs {
        let node = graph.node(id);
        let Some(algo) = node.op.conv_attrs().map(|c| c.algo) else {
            continue;
        };
        let kernel_ty = &graph.node(graph.operands(id)[1]).ty;
        let _ = writeln!(out, "\nconv {}", node.name);
        if let Some((shape, _, _)) = conv_shape(graph, id, ctx.batch) {
            let _ = writeln!(
                out,
                "  shape: batch {}, {} -> {} channels, input {}, stride {}, dilation {}, groups {}, pad {}",
                shape.batch,
                shape.ci,
                shape.co,
                dims(&shape.input),
                dims(&shape.stride),
                dims(&shape.dilation),
                shape.groups,
                shape.padding
            );
        }
        let kernel: Vec<String> = kernel_ty.shape[2..].iter().map(|d| d.to_string()).collect();
        match graph.flexconvs.iter().find(|f| f.name == node.name) {
            Some(f) => {
                let after = if kernel.iter().any(|k| k.starts_with("<=")) {
                    "data-dependent crop; costed at the bound"
                } else {
                    "cropped"
                };
                let _ = writeln!(
                    out,
                    "  kernel: {} before cropping (horizon), {} after ({after})",
                    dims(&f.horizon),
                    kernel.join("x")
                );
            }
            None => {
                let _ = writeln!(out, "  kernel: {}", kernel.join("x"));
            }
        }
        match graph.conv_costs.get(&node.name) {
            Some(c) => {
                // Algorithms the table has no entry for (Winograd outside the JIT's)
                // are left out, so other tables' explanations read as before.
                let alts: Vec<String> = ALGOS
                    .iter()
                    .filter(|&&a| {
                        table.algo(a).is_some()
                            || !matches!(a, ConvAlgo::Winograd2 | ConvAlgo::Winograd4)
                    })
                    .map(|&a| {
                        let mark = if a == c.chosen { "*" } else { "" };
                        format!("{}{mark} {}", a.name(), fmt_seconds(c.estimate.get(a)))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  algorithm: {} (by {}); estimated {}",
                    c.chosen.name(),
                    c.decider.name(),
                    alts.join(", ")
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  algorithm: {} (choose-conv-algo did not run)",
                    algo.name()
                );
            }
        }
        for (i, n) in ctx.notes.iter().enumerate() {
            if belongs(&n.layer, &node.name) {
                used.insert(i);
                note_line(&mut out, n);
            }
        }
    }
    let rest: Vec<&Note> = ctx
        .notes
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, n)| n)
        .collect();
    if !rest.is_empty() {
        let _ = writeln!(out, "\nother layers");
        for n in rest {
            let _ = writeln!(out, "  - {} ({}): {}", n.layer, n.pass, n.text);
        }
    }
    out
}
