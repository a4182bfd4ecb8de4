//! `fnetc compile --explain`: after the pipeline, one block per conv: its geometry, the
//! kernel size before and after cropping (FlexConvs), the chosen algorithm against the
//! alternatives' estimated costs, and every note the passes left for the layer (folds,
//! fusions, crops). Deterministic text, in the IR's topological order. A training
//! graph's backward convs follow, each with the routine the JIT runs it by and the
//! estimates of the JIT table's backward rows (`cost::jit_backward`): the choice
//! the lowering makes (`kernel_ir::native::choose_filter`, `choose_data`), on this
//! CPU and under the `FNET_JIT_CONV_FILTER` / `FNET_JIT_CONV_BWD` overrides.

use crate::cost::{fmt_seconds, ConvShape, CostTable, ALGOS};
use crate::ir::graph::Graph;
use crate::ir::op::{ConvAlgo, Op, TrainOp};
use crate::kernel_ir::native::{
    self, ConvGeometry, JitConv, JitConvData, JitConvFilter, NativeConvs,
};
use crate::passes::choose_conv_algo::{
    backward_conv_shape, conv_shape, decide, env_override, ConvGradient,
};
use crate::passes::{Note, PassContext};
use petgraph::stable_graph::NodeIndex;
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

fn shape_line(out: &mut String, shape: &ConvShape) {
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

/// `name* 1.2ms` for the chosen entry, `name 3.4ms` for the others.
fn alternatives<A: Copy + PartialEq>(
    ranked: &[(A, f64)],
    chosen: A,
    name: impl Fn(A) -> &'static str,
) -> String {
    let alts: Vec<String> = ranked
        .iter()
        .map(|&(a, secs)| {
            let mark = if a == chosen { "*" } else { "" };
            format!("{}{mark} {}", name(a), fmt_seconds(secs))
        })
        .collect();
    alts.join(", ")
}

/// The backward convs of a training graph: what the JIT runs each by (see the module
/// docs), or, for a table without backward rows, one line saying they follow their
/// forward convs.
fn backward_convs(graph: &Graph, ctx: &PassContext, order: &[NodeIndex], out: &mut String) {
    let convs: Vec<_> = order
        .iter()
        .filter_map(|&id| Some((id, backward_conv_shape(graph, id, ctx.batch)?)))
        .collect();
    if convs.is_empty() {
        return;
    }
    let table = CostTable::of(ctx.cost_backend);
    if table.backward.is_none() {
        let _ = writeln!(
            out,
            "\nbackward convs: {}, by generated kernels for {} (direct, or FFT where the forward \
             conv's algorithm is); the table has no backward rows",
            convs.len(),
            table.backend.target()
        );
        return;
    }
    // The overrides that keep every backward conv a generated kernel.
    let generated = match (native::backward_from_env(), NativeConvs::from_env()) {
        (Ok(None), _) => Some(format!("{}=generated", native::BACKWARD_ENV)),
        (_, Ok(NativeConvs::Force(JitConv::Generated))) => {
            Some(format!("{}=generated", native::ENV))
        }
        _ => None,
    };
    let env = env_override().ok().flatten();
    let strips = native::strips_available();
    let filter_forced = native::filter_from_env().ok().flatten();
    let data_forced = native::backward_from_env().ok().flatten().flatten();
    for (id, (shape, which, bound)) in convs {
        let node = graph.node(id);
        let what = match which {
            ConvGradient::Data => "data gradient",
            ConvGradient::Filter => "filter gradient",
        };
        let _ = writeln!(out, "\nbackward conv {} ({what})", node.name);
        shape_line(out, &shape);
        if bound {
            let _ = writeln!(
                out,
                "  kernel: <={} (cropped at run time: the plan chooses at the cropped size; \
                 costed here at the bound)",
                dims(&shape.kernel)
            );
        }
        let algo = match &node.op {
            Op::Train(TrainOp::ConvBackwardData(a) | TrainOp::ConvBackwardFilter(a)) => a.algo,
            _ => ConvAlgo::Auto,
        };
        let fft = decide(algo, env, &shape, table).0 == ConvAlgo::Fft;
        let (geometry, estimate) = match (
            ConvGeometry::of_shape(&shape),
            table.estimate_backward(&shape),
        ) {
            (Some(g), Some(e)) if !fft && generated.is_none() => (g, e),
            (g, _) => {
                let why = match &generated {
                    Some(var) => var.as_str(),
                    None if fft => "FFT, as its forward conv",
                    None if g.is_none() => "asymmetric padding, which no routine takes",
                    None => "no backward rows",
                };
                let _ = writeln!(out, "  algorithm: generated kernels ({why})");
                continue;
            }
        };
        let line = match which {
            ConvGradient::Filter => {
                let chosen =
                    native::choose_filter(&geometry, filter_forced, strips, &estimate.filter);
                let by = match filter_forced {
                    Some(f) if f == chosen => format!("forced by {}", native::FILTER_ENV),
                    _ => "by cost model".to_string(),
                };
                let alts = alternatives(&estimate.filter, chosen, JitConvFilter::name);
                format!("{} ({by}); estimated {alts}", chosen.name())
            }
            ConvGradient::Data => {
                let chosen = native::choose_data(&geometry, data_forced, &estimate.data);
                let by = match data_forced {
                    Some(f) if f == chosen => format!("forced by {}", native::BACKWARD_ENV),
                    _ => "by cost model".to_string(),
                };
                let alts = alternatives(&estimate.data, chosen, JitConvData::name);
                format!("{} ({by}); estimated {alts}", chosen.name())
            }
        };
        let _ = writeln!(out, "  algorithm: {line}");
        if !strips && which == ConvGradient::Filter && shape.kernel == [3, 3] {
            let _ = writeln!(
                out,
                "  - this CPU has no AVX-512 strip layout: Winograd left out of the 3x3 filter gradient"
            );
        }
    }
}

fn note_line(out: &mut String, n: &Note) {
    let _ = writeln!(out, "  - {}: {}", n.pass, n.text);
}

pub fn explain(graph: &Graph, ctx: &PassContext) -> String {
    let mut out = String::new();
    let table = CostTable::of(ctx.cost_backend);
    let order = graph.topo_order().unwrap_or_default();
    let convs: Vec<_> = order
        .iter()
        .copied()
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
            shape_line(&mut out, &shape);
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
    backward_convs(graph, ctx, &order, &mut out);
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
