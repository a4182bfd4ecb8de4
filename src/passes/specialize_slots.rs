//! Slot specialisation: a graph elaborated for one pooling configuration turns each
//! active slot into its pool and removes the inactive ones, leaving a plain network.

use super::manager::{Pass, PassContext};
use crate::ir::graph::Graph;
use crate::ir::op::Op;

pub struct SpecializeSlots;

impl Pass for SpecializeSlots {
    fn name(&self) -> &'static str {
        "specialize-slots"
    }

    fn about(&self) -> &'static str {
        "replace pooling slots by their pool (active) or nothing (inactive)"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let slots: Vec<_> = graph
            .node_ids()
            .filter(|&n| matches!(graph.node(n).op, Op::Slot { .. }))
            .collect();
        for &n in &slots {
            let Op::Slot {
                active,
                pool,
                family,
                index,
            } = graph.node(n).op.clone()
            else {
                unreachable!()
            };
            if active {
                graph.replace_op(n, Op::Pool(pool))?;
                ctx.note(
                    graph.node(n).name.clone(),
                    "specialize-slots",
                    format!("slot {index} of `{family}` downsamples"),
                );
            } else {
                let input = graph.operands(n)[0];
                graph.replace_uses(n, input)?;
                graph.remove_unused(&[n])?;
            }
        }
        Ok(slots.len())
    }
}
