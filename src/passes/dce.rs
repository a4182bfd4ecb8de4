//! Dead-code elimination: removes every node no output depends on. Parameters that no
//! longer feed anything (after a fold, say) leave the parameter layout with them.

use super::manager::{Pass, PassContext};
use crate::ir::graph::Graph;

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn about(&self) -> &'static str {
        "remove nodes that no output depends on"
    }

    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<usize, String> {
        Ok(graph.remove_dead())
    }
}
