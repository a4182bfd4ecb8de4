//! The deterministic text form of the IR: nodes in stable topological order, weights
//! elided to their type, role and initialiser, so snapshots never flicker.

use super::graph::Graph;
use super::op::{Op, PoolSpec};
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;
use std::fmt::Write;

fn list(v: &[u64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn pool_attrs(p: &PoolSpec) -> String {
    format!(
        "kernel={} stride={} pad={}",
        list(&p.kernel),
        list(&p.stride),
        list(&p.padding)
    )
}

/// Attributes after the operands, in a fixed order.
pub fn op_attrs(op: &Op) -> String {
    match op {
        Op::Input { .. } | Op::Param { .. } => String::new(),
        Op::Const { origin, .. } => format!("from {origin}"),
        Op::CoordGrid { horizon } => format!("horizon={}", list(horizon)),
        Op::MaskCrop { threshold, causal } => format!("threshold={threshold} causal={causal}"),
        Op::Magnet {
            layers,
            hidden,
            out_channels,
            in_channels,
        } => format!("layers={layers} hidden={hidden} out={out_channels} in={in_channels}"),
        Op::FlexKernel { .. } => super::flex_kernel::attrs(op),
        Op::GaussMask | Op::MaskMul => String::new(),
        Op::Scale { factor } => format!("factor={factor}"),
        Op::Conv(c) => format!(
            "stride={} pad={} dilation={} groups={} algo={}",
            list(&c.stride),
            c.padding,
            list(&c.dilation),
            c.groups,
            c.algo.name()
        ),
        Op::Linear { .. } => String::new(),
        Op::BatchNorm {
            eps,
            momentum,
            affine,
            running_stats,
        } => format!("eps={eps} momentum={momentum} affine={affine} running_stats={running_stats}"),
        Op::Relu
        | Op::Gelu
        | Op::GlobalAvgPool
        | Op::Flatten
        | Op::LastStep
        | Op::Add
        | Op::Mul => String::new(),
        Op::Dropout { p } => format!("p={p}"),
        Op::LcFold | Op::BnFold { .. } | Op::FusedConv { .. } => super::fold_ops::fold_attrs(op),
        Op::Pool(p) => pool_attrs(p),
        Op::Train(t) => t.attrs(),
        Op::Concat { axis } => format!("axis={axis}"),
        Op::ShortcutA {
            stride,
            out_channels,
        } => format!("stride={stride} out={out_channels}"),
        Op::Slot {
            family,
            index,
            active,
            pool,
        } => format!(
            "family={family} index={index} active={active} {} {}",
            if pool.kind == super::op::PoolKind::Max {
                "max"
            } else {
                "avg"
            },
            pool_attrs(pool)
        ),
    }
}

pub fn print_graph(graph: &Graph) -> String {
    let order = match graph.topo_order() {
        Ok(o) => o,
        Err(e) => return format!("<invalid graph: {e}>"),
    };
    let ids: BTreeMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "graph {} seed={} {{", graph.name, graph.seed);
    for &n in &order {
        let node = graph.node(n);
        let id = ids[&n];
        match &node.op {
            Op::Input { name } => {
                let _ = writeln!(out, "  %{id} = input {name} : {}", node.ty);
            }
            Op::Param { role, init, seed } => {
                let seed = seed.map(|s| format!(" seed={s}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  %{id} = param {} : {} {} init={init}{seed}",
                    node.name,
                    node.ty,
                    role.name()
                );
            }
            Op::Const { .. } => {
                let _ = writeln!(
                    out,
                    "  %{id} = const {} : {} {}",
                    node.name,
                    node.ty,
                    op_attrs(&node.op)
                );
            }
            op => {
                let operands: Vec<String> = graph
                    .operands(n)
                    .iter()
                    .map(|o| format!("%{}", ids[o]))
                    .collect();
                let attrs = op_attrs(op);
                let sep = if attrs.is_empty() { "" } else { " " };
                let cost = match graph.conv_costs.get(&node.name) {
                    Some(c) if op.conv_attrs().is_some() => {
                        format!("  {}", c.ir_comment())
                    }
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  %{id} = {}({}){sep}{attrs} : {}  # {}{cost}",
                    op.name(),
                    operands.join(", "),
                    node.ty,
                    node.name
                );
            }
        }
    }
    let outs: Vec<String> = graph
        .outputs
        .iter()
        .map(|o| format!("%{}", ids[o]))
        .collect();
    let _ = writeln!(out, "  return {}", outs.join(", "));
    for b in &graph.bases {
        let _ = writeln!(
            out,
            "  basis {} shared=[{}] unique={} ortho={}",
            b.name,
            b.shared.join(", "),
            b.unique.len(),
            b.ortho_weight
        );
    }
    for s in &graph.slots {
        let _ = writeln!(
            out,
            "  slots {} count={} active={} config={}",
            s.name,
            s.count,
            s.active,
            list(&s.config)
        );
    }
    if let Some(m) = &graph.memory {
        let _ = writeln!(
            out,
            "  memory batch={} buffers={} arena={}B live_peak={}B no_reuse={}B weights={}B",
            m.batch, m.buffers, m.arena_bytes, m.peak_live_bytes, m.no_reuse_bytes, m.weight_bytes
        );
    }
    out.push_str("}\n");
    out
}
