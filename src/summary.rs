//! `fnetc check`'s report: inputs, outputs, a per-layer table and parameter totals, as
//! text for people and JSON for scripts.

use crate::eval::slots::choose;
use crate::eval::Module;
use crate::ir::op::Op;
use serde_json::{json, Value};
use std::fmt::Write;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn inputs(m: &Module) -> Vec<(String, String)> {
    m.graph
        .inputs
        .iter()
        .map(|&n| {
            let node = m.graph.node(n);
            let name = match &node.op {
                Op::Input { name } => name.clone(),
                _ => node.name.clone(),
            };
            (name, node.ty.to_string())
        })
        .collect()
}

pub fn table(m: &Module, file: &str) -> String {
    let mut out = String::new();
    let g = &m.graph;
    let _ = writeln!(out, "model {}  ({file})", g.name);
    let _ = writeln!(out, "inputs:");
    for (name, ty) in inputs(m) {
        let _ = writeln!(out, "  {name}: {ty}");
    }
    let _ = writeln!(out, "outputs:");
    for (i, &o) in g.outputs.iter().enumerate() {
        let _ = writeln!(out, "  #{i}: {}", g.node(o).ty);
    }
    let name_w = m
        .layers
        .iter()
        .map(|l| l.path.len())
        .max()
        .unwrap_or(4)
        .max(5);
    let kind_w = m
        .layers
        .iter()
        .map(|l| l.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let shape_w = m
        .layers
        .iter()
        .map(|l| l.shape.len())
        .max()
        .unwrap_or(5)
        .max(6);
    let _ = writeln!(out, "layers:");
    let _ = writeln!(
        out,
        "  {:<name_w$}  {:<kind_w$}  {:<shape_w$}  {:>10}",
        "layer", "kind", "output", "params"
    );
    for l in &m.layers {
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<kind_w$}  {:<shape_w$}  {:>10}",
            l.path,
            l.kind,
            l.shape,
            thousands(l.params)
        );
    }
    let c = g.param_counts();
    let _ = writeln!(out, "parameters:");
    let _ = writeln!(
        out,
        "  trainable  {:>12}  (of which shared: {})",
        thousands(c.trainable),
        thousands(c.shared)
    );
    let _ = writeln!(out, "  frozen     {:>12}", thousands(c.frozen));
    let _ = writeln!(
        out,
        "  total      {:>12}",
        thousands(c.trainable + c.frozen)
    );
    let _ = writeln!(
        out,
        "  buffers    {:>12}  (BatchNorm running statistics, not parameters)",
        thousands(c.buffers)
    );
    for b in &g.bases {
        // Every conv of the basis reads one of its shared tensors (double sharing: one
        // per conv position); unique parts cannot be counted when a conv has none.
        let users: std::collections::BTreeSet<_> = g
            .params()
            .filter(|(_, n, _)| b.shared.contains(&n.name))
            .flat_map(|(i, _, _)| g.users(i))
            .collect();
        let users = users.len();
        let _ = writeln!(
            out,
            "basis {}: {} shared tensor(s) used by {} conv(s), orthogonality weight {}",
            b.name,
            b.shared.len(),
            users,
            b.ortho_weight
        );
    }
    for s in &g.slots {
        let cfg: Vec<String> = s.config.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(
            out,
            "slots {}: {} of {} downsample, {} configurations; this graph: [{}]",
            s.name,
            s.active,
            s.count,
            thousands(choose(s.count, s.active)),
            cfg.join(", ")
        );
    }
    if let Some(r) = &m.recipe {
        let keys = r.keys();
        let _ = writeln!(out, "train: {}", keys.join(", "));
    }
    out
}

pub fn json(m: &Module) -> Value {
    let g = &m.graph;
    let c = g.param_counts();
    json!({
        "model": g.name,
        "inputs": inputs(m).into_iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        "outputs": g.outputs.iter().map(|&o| json!({"type": g.node(o).ty.to_string()})).collect::<Vec<_>>(),
        "params": {"trainable": c.trainable, "frozen": c.frozen, "shared": c.shared, "buffers": c.buffers},
        "layers": m.layers,
        "bases": g.bases.iter().map(|b| json!({"name": b.name, "shared": b.shared, "unique": b.unique, "ortho": b.ortho_weight})).collect::<Vec<_>>(),
        "slots": g.slots.iter().map(|s| json!({"name": s.name, "count": s.count, "active": s.active, "configurations": choose(s.count, s.active), "config": s.config})).collect::<Vec<_>>(),
        "train": m.recipe,
    })
}
