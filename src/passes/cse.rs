//! Common-subexpression elimination: two nodes with the same op, attributes and
//! operands compute the same value, so users of the later one read the earlier one.
//! Parameters and inputs are never merged (equal initialisers are not equal values).
//! Every FlexConv of one horizon builds the same coordinate grid; this keeps one.

use super::manager::{Pass, PassContext};
use crate::ir::graph::Graph;
use crate::ir::op::Op;
use petgraph::stable_graph::NodeIndex;

pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn about(&self) -> &'static str {
        "merge nodes that compute the same value from the same operands"
    }

    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<usize, String> {
        let order = graph.topo_order().map_err(|e| e.to_string())?;
        // Linear scan per op: graphs are small and `Op` holds floats, so no hashing.
        let mut seen: Vec<(Op, Vec<NodeIndex>, NodeIndex)> = Vec::new();
        let mut merged = 0;
        for n in order {
            if matches!(graph.node(n).op, Op::Input { .. } | Op::Param { .. }) {
                continue;
            }
            let key_op = graph.node(n).op.clone();
            let operands = graph.operands(n);
            let hit = seen
                .iter()
                .find(|(op, ops, _)| *op == key_op && *ops == operands)
                .map(|s| s.2);
            match hit {
                Some(first) if graph.node(first).ty == graph.node(n).ty => {
                    graph.replace_uses(n, first)?;
                    graph.remove_unused(&[n])?;
                    merged += 1;
                }
                _ => seen.push((key_op, operands, n)),
            }
        }
        Ok(merged)
    }
}
