//! Common-subexpression elimination: two nodes with the same op, attributes and
//! operands compute the same value, so users of the later one read the earlier one.
//! Parameters and inputs are never merged (equal initialisers are not equal values).
//! Every FlexConv of one horizon builds the same coordinate grid; this keeps one.

use super::manager::{Pass, PassContext};
use crate::ir::graph::Graph;
use crate::ir::op::Op;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashMap;

pub struct Cse;

/// Points every use of `old` at `new`, keeping operand slots.
pub fn replace_uses(graph: &mut Graph, old: NodeIndex, new: NodeIndex) {
    let uses: Vec<(NodeIndex, u32)> = graph
        .g
        .edges_directed(old, Direction::Outgoing)
        .map(|e| (e.target(), *e.weight()))
        .collect();
    for (user, slot) in uses {
        if let Some(e) = graph.g.find_edge(old, user) {
            graph.g.remove_edge(e);
        }
        graph.g.add_edge(new, user, slot);
    }
    for o in graph.outputs.iter_mut() {
        if *o == old {
            *o = new;
        }
    }
}

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn about(&self) -> &'static str {
        "merge nodes that compute the same value from the same operands"
    }

    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<usize, String> {
        let order = graph.topo_order().map_err(|e| e.to_string())?;
        // `Op` holds floats, so it is not hashed: candidates are bucketed by op kind and
        // operands, and compared in full only within a bucket. A linear scan over all
        // earlier nodes made a 170,000-node graph take 35 s here.
        let mut seen: HashMap<(&'static str, Vec<NodeIndex>), Vec<(Op, NodeIndex)>> =
            HashMap::new();
        let mut merged = 0;
        for n in order {
            if matches!(graph.node(n).op, Op::Input { .. } | Op::Param { .. }) {
                continue;
            }
            let key_op = graph.node(n).op.clone();
            let bucket = seen.entry((key_op.name(), graph.operands(n))).or_default();
            let hit = bucket.iter().find(|(op, _)| *op == key_op).map(|s| s.1);
            match hit {
                Some(first) if graph.node(first).ty == graph.node(n).ty => {
                    replace_uses(graph, n, first);
                    graph.g.remove_node(n);
                    merged += 1;
                }
                _ => bucket.push((key_op, n)),
            }
        }
        Ok(merged)
    }
}
