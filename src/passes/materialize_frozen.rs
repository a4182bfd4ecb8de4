//! Frozen parameters become seeded constants.
//!
//! A frozen tensor (an LC basis, a FlexConv mask with `learnable: false`) is seeded at
//! initialisation and never updated or decayed, so it is not part of what a run or a
//! training step needs as input: it is a constant of the model. This pass replaces
//! every `param … frozen` node by an `Op::Const` holding its value — the bound value
//! when weights are bound at compile time, otherwise exactly what `fnetc init` (the
//! seeded initialiser, with the model's `seed`) produces for that tensor.
//!
//! Training graphs get the same rewrite: a frozen tensor takes no optimiser update and
//! no weight decay either way. It must still pass input gradients, and it does: a
//! constant is an ordinary operand of the conv it feeds, so the gradient with respect
//! to the conv's *input* flows through it unchanged; only the gradient with respect to
//! the constant itself is never formed.
//!
//! The parameter layout shrinks by the frozen tensors; a weights file made by
//! `fnetc init` for the unoptimised model still runs the optimised graph (extra
//! tensors are ignored by name).

use super::manager::{Pass, PassContext};
use crate::ir::graph::Graph;
use crate::ir::op::{Op, ParamRole};
use crate::ir::types::DType;
use crate::runtime::params::initialise_param;
use std::sync::Arc;

pub struct MaterializeFrozen;

impl Pass for MaterializeFrozen {
    fn name(&self) -> &'static str {
        "materialize-frozen"
    }

    fn about(&self) -> &'static str {
        "turn frozen parameters (LC bases, fixed masks) into seeded constants"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let frozen: Vec<_> = graph
            .params()
            .filter(|(_, n, role)| *role == ParamRole::Frozen && n.ty.dtype == DType::F32)
            .map(|(id, n, _)| (id, n.name.clone()))
            .collect();
        for (id, name) in &frozen {
            let bound = ctx.weights.as_ref().and_then(|w| w.get(name)).cloned();
            let (value, origin) = match bound {
                Some(v) => (v, format!("frozen {name} (bound weights)")),
                None => (
                    initialise_param::<f32>(graph, graph.seed, name).map_err(|e| e.message)?,
                    format!("frozen {name} (seed {})", graph.seed),
                ),
            };
            let want: Vec<usize> = (graph.node(*id).ty.shape.iter())
                .map(|d| d.known().unwrap_or(0) as usize)
                .collect();
            if value.shape != want {
                return Err(format!(
                    "frozen `{name}`: value {:?} does not match its type {}",
                    value.shape,
                    graph.node(*id).ty
                ));
            }
            let shape = value.shape.clone();
            graph.g[*id].op = Op::Const {
                value: Arc::new(value),
                origin,
            };
            let layer = graph
                .users(*id)
                .first()
                .map_or_else(|| name.clone(), |&u| graph.node(u).name.clone());
            ctx.note(
                layer,
                "materialize-frozen",
                format!("frozen `{name}` {shape:?} is a seeded constant (no update, no decay)"),
            );
        }
        Ok(frozen.len())
    }
}
