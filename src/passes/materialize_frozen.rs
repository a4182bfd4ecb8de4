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
use crate::ir::constant::ConstValue;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, ParamRole};
use crate::ir::types::DType;
use crate::runtime::params::initialise_param;

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
            let op = Op::Const {
                value: ConstValue::new(value),
                origin,
            };
            graph.replace_op(*id, op)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::compile_str;
    use crate::eval::Options;
    use crate::ir::print::print_graph;
    use crate::passes::CompileMode;
    use crate::tensor::Tensor;

    fn graph(src: &str) -> Graph {
        compile_str("t.fnet", src, &Options::default())
            .map(|(_, m)| m.graph)
            .unwrap_or_else(|r| panic!("{}", r.render()))
    }

    const LC: &str = "model m {
      input x: f32[B, 2, 6, 6]
      seed 4
      return x |> lc(3, 3, expansion: 2) |> relu
    }";

    #[test]
    fn nothing_frozen_nothing_changes() {
        let mut g = graph("model m { input x: f32[B, 2, 6, 6]\n return x |> conv2d(3, 3) }");
        let before = g.clone();
        let mut ctx = PassContext::new(CompileMode::Training);
        assert_eq!(MaterializeFrozen.run(&mut g, &mut ctx), Ok(0));
        assert_eq!(print_graph(&g), print_graph(&before));
        assert!(ctx.notes.is_empty());
    }

    #[test]
    fn seeded_constant_and_note() {
        let mut g = graph(LC);
        let mut ctx = PassContext::new(CompileMode::Inference);
        assert_eq!(MaterializeFrozen.run(&mut g, &mut ctx), Ok(1));
        let c = g
            .node_ids()
            .find(|&n| g.node(n).name == "lc1.basis.weight")
            .unwrap();
        let Op::Const { value, origin } = &g.node(c).op else {
            panic!("not a constant")
        };
        assert_eq!(value.shape, vec![6, 2, 3, 3]);
        assert_eq!(origin, "frozen lc1.basis.weight (seed 4)");
        assert!(g.verify().is_ok());
        assert_eq!(ctx.notes.len(), 1);
        assert!(ctx.notes[0].text.contains("no update, no decay"));
    }

    #[test]
    fn bound_value_of_the_wrong_shape_is_an_error() {
        let mut g = graph(LC);
        let mut ctx = PassContext::new(CompileMode::Inference);
        let wrong = Tensor::from_vec(vec![2, 2], vec![0.0f32; 4]).unwrap();
        ctx.weights = Some([("lc1.basis.weight".to_string(), wrong)].into());
        let e = MaterializeFrozen.run(&mut g, &mut ctx).unwrap_err();
        assert!(
            e.contains("lc1.basis.weight") && e.contains("[2, 2]"),
            "{e}"
        );
    }
}
