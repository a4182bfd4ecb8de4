//! Memory planning: assigns every activation to a buffer so that values whose lifetimes
//! do not overlap share storage, and reports the arena size (the peak bytes a run
//! needs for activations) next to the no-reuse total and the liveness lower bound.
//! A training graph is planned whole: what a backward op reads (a ReLU's input, a
//! conv's input for its filter gradient) stays live until that op.
//!
//! Lifetimes come from the topological order: a value lives from the step that
//! computes it to the last step that reads it (outputs live to the end). Buffers are
//! handed out best-fit from a free list; an elementwise op may write over its input
//! when that input dies at this step. Weights and constants are not activations and
//! are counted separately.

use super::manager::{Pass, PassContext};
use crate::ir::graph::{Graph, MemorySummary};
use crate::ir::op::Op;
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;

/// A full plan: which buffer holds each activation.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    pub assignment: BTreeMap<NodeIndex, usize>,
    pub buffer_bytes: Vec<u64>,
    /// (first step, last step) each activation is live, in topological steps.
    pub lifetime: BTreeMap<NodeIndex, (usize, usize)>,
    pub summary: MemorySummary,
}

fn bytes(graph: &Graph, n: NodeIndex, batch: u64) -> u64 {
    let ty = &graph.node(n).ty;
    let elem = match ty.dtype {
        crate::ir::types::DType::F32 => 4,
        crate::ir::types::DType::F64 => 8,
    };
    ty.dims_at_batch(batch)
        .into_iter()
        .fold(elem, u64::saturating_mul)
}

fn is_storage(op: &Op) -> bool {
    matches!(
        op,
        Op::Param { .. } | Op::CoordGrid { .. } | Op::Const { .. }
    )
}

/// Ops that may write their result over their first operand.
fn elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Relu
            | Op::Gelu
            | Op::Dropout { .. }
            | Op::Scale { .. }
            | Op::Add
            | Op::Mul
            | Op::BatchNorm { .. }
            | Op::Flatten
    )
}

/// Plans `graph` for a batch size (every symbolic dimension is set to `batch`).
pub fn plan(graph: &Graph, batch: u64) -> MemoryPlan {
    let order = graph.topo_order().unwrap_or_default();
    let step: BTreeMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let end = order.len();
    let mut lifetime = BTreeMap::new();
    let mut weight_bytes = 0;
    // Values computed from weights alone (folded BatchNorm, LC kernels, synthesised
    // FlexConv kernels) are the same for every input: a runtime computes them once
    // and keeps them with the weights, not in the activation arena.
    let mut storage = std::collections::BTreeSet::new();
    for &n in &order {
        let operands = graph.operands(n);
        let derived = !operands.is_empty() && operands.iter().all(|o| storage.contains(o));
        if is_storage(&graph.node(n).op) || derived {
            storage.insert(n);
        }
    }
    for &n in &order {
        if storage.contains(&n) {
            // Intermediates of a weight-only computation are transient; what
            // activations read is kept.
            let kept = is_storage(&graph.node(n).op)
                || graph.outputs.contains(&n)
                || graph.users(n).iter().any(|u| !storage.contains(u));
            if kept {
                weight_bytes = u64::saturating_add(weight_bytes, bytes(graph, n, batch));
            }
            continue;
        }
        let last = graph
            .users(n)
            .iter()
            .map(|u| step[u])
            .max()
            .unwrap_or(step[&n]);
        let last = if graph.outputs.contains(&n) {
            end
        } else {
            last
        };
        lifetime.insert(n, (step[&n], last));
    }
    let mut assignment = BTreeMap::new();
    let mut buffer_bytes: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let (mut live, mut peak_live, mut no_reuse) = (0u64, 0u64, 0u64);
    for (i, &n) in order.iter().enumerate() {
        let Some(&(_, last)) = lifetime.get(&n) else {
            continue;
        };
        let size = bytes(graph, n, batch);
        no_reuse = no_reuse.saturating_add(size);
        live = live.saturating_add(size);
        peak_live = peak_live.max(live);
        // Operands that die here release their buffers before this value takes one,
        // except that only elementwise ops may overwrite what they read.
        let mut dying: Vec<NodeIndex> = graph
            .operands(n)
            .into_iter()
            .filter(|o| lifetime.get(o).is_some_and(|l| l.1 == i))
            .collect();
        dying.dedup();
        let mut reuse = None;
        if elementwise(&graph.node(n).op) {
            if let Some(first) = graph.operands(n).first().filter(|o| dying.contains(o)) {
                reuse = assignment
                    .get(first)
                    .copied()
                    .filter(|b| buffer_bytes[*b] >= size);
            }
        }
        // Best fit among free buffers; failing that, grow the largest free one (sizes
        // are only fixed when planning ends), and only then open a new buffer.
        let buffer = reuse.unwrap_or_else(|| {
            let fits = free
                .iter()
                .enumerate()
                .filter(|(_, &b)| buffer_bytes[b] >= size)
                .min_by_key(|(_, &b)| buffer_bytes[b]);
            let largest = free
                .iter()
                .enumerate()
                .max_by_key(|(_, &b)| buffer_bytes[b]);
            match fits.or(largest).map(|(k, _)| k) {
                Some(k) => {
                    let b = free.swap_remove(k);
                    buffer_bytes[b] = buffer_bytes[b].max(size);
                    b
                }
                None => {
                    buffer_bytes.push(size);
                    buffer_bytes.len() - 1
                }
            }
        });
        assignment.insert(n, buffer);
        for o in dying {
            live = live.saturating_sub(bytes(graph, o, batch));
            if let Some(&b) = assignment.get(&o) {
                if b != buffer && !free.contains(&b) {
                    free.push(b);
                }
            }
        }
        if last == i {
            // Computed but never read (not an output): free at once.
            live = live.saturating_sub(size);
            free.push(buffer);
        }
    }
    let summary = MemorySummary {
        batch,
        buffers: buffer_bytes.len(),
        arena_bytes: buffer_bytes.iter().fold(0, |a, &b| a.saturating_add(b)),
        peak_live_bytes: peak_live,
        no_reuse_bytes: no_reuse,
        weight_bytes,
    };
    MemoryPlan {
        assignment,
        buffer_bytes,
        lifetime,
        summary,
    }
}

/// The bytes one run of `graph` at `batch` holds at its peak by the plan: the
/// activation arena plus the weights and the values computed from them alone. On a
/// training graph (forward, loss and backward) the arena is the whole step's: every
/// activation lives until its last reader, backward ops included, and the gradients
/// are outputs that live to the end. `fnetc bench --training` reports it as the
/// planned peak of a step.
pub fn planned_peak_bytes(graph: &Graph, batch: u64) -> u64 {
    let s = plan(graph, batch).summary;
    s.arena_bytes.saturating_add(s.weight_bytes)
}

pub struct MemoryPlanPass;

impl Pass for MemoryPlanPass {
    fn name(&self) -> &'static str {
        "memory-plan"
    }

    fn about(&self) -> &'static str {
        "assign activations to reusable buffers by liveness; report the peak bytes"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let p = plan(graph, ctx.batch.max(1));
        let s = &p.summary;
        ctx.note(
            graph.name.clone(),
            "memory-plan",
            format!(
                "{} buffers, arena {} bytes at batch {} (no reuse {}, live peak {}), weights {} bytes",
                s.buffers, s.arena_bytes, s.batch, s.no_reuse_bytes, s.peak_live_bytes, s.weight_bytes
            ),
        );
        graph.memory = Some(p.summary);
        Ok(0)
    }
}
