//! Dead-code elimination: removes every node no output depends on. Parameters that no
//! longer feed anything (after a fold, say) leave the parameter layout with them.

use super::manager::{Pass, PassContext};
use crate::ir::graph::Graph;
use petgraph::visit::Dfs;
use petgraph::visit::Reversed;
use std::collections::BTreeSet;

pub struct Dce;

/// Nodes some output depends on (inputs are always kept: they are the interface).
pub fn live_nodes(graph: &Graph) -> BTreeSet<petgraph::stable_graph::NodeIndex> {
    let mut live = BTreeSet::new();
    let rev = Reversed(&graph.g);
    for &out in &graph.outputs {
        let mut dfs = Dfs::new(rev, out);
        while let Some(n) = dfs.next(rev) {
            live.insert(n);
        }
    }
    live.extend(graph.inputs.iter().copied());
    live
}

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn about(&self) -> &'static str {
        "remove nodes that no output depends on"
    }

    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<usize, String> {
        let live = live_nodes(graph);
        let dead: Vec<_> = graph
            .g
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for &n in &dead {
            graph.g.remove_node(n);
        }
        Ok(dead.len())
    }
}
