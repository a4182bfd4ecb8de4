//! Canonicalisation: removes ops that compute their input unchanged, so later passes
//! see one form. Dropout is the identity at inference; scaling by 1 and flattening an
//! already flat tensor are identities always.

use super::manager::{CompileMode, Pass, PassContext};
use crate::ir::graph::Graph;
use crate::ir::op::Op;

pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn about(&self) -> &'static str {
        "drop identities: dropout at inference, scale by 1, flatten of a flat tensor"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let identities: Vec<_> = graph
            .node_ids()
            .filter(|&n| match &graph.node(n).op {
                Op::Dropout { .. } => ctx.mode == CompileMode::Inference,
                Op::Scale { factor } => *factor == 1.0,
                Op::Flatten => {
                    graph.node(n).ty.rank() == 2
                        && graph
                            .operands(n)
                            .first()
                            .is_some_and(|&x| graph.node(x).ty.rank() == 2)
                }
                _ => false,
            })
            .collect();
        for &n in &identities {
            let input = graph.operands(n)[0];
            graph.replace_uses(n, input)?;
            graph.remove_unused(&[n])?;
        }
        Ok(identities.len())
    }
}
