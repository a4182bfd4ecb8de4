//! The graph-editing API of the passes: every change a pass makes to a graph goes
//! through these methods, which keep the invariants `verify` checks (dense operand
//! slots, stored types equal to inferred ones, inputs and outputs present) instead of
//! leaving each pass to keep them by hand.

use super::graph::{Graph, Node};
use super::op::Op;
use super::shape::infer;
use super::types::{Dim, TensorType};
use crate::diag::Span;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{Dfs, EdgeRef, Reversed};
use petgraph::Direction;
use std::collections::BTreeSet;

/// A rewrite that would break the graph. These are compiler bugs, not user errors;
/// the message names the nodes and types involved.
#[derive(Clone, Debug, PartialEq)]
pub struct RewriteError(pub String);

impl std::fmt::Display for RewriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RewriteError {}

impl From<RewriteError> for String {
    fn from(e: RewriteError) -> String {
        e.0
    }
}

/// Whether a value of type `new` may stand where `old` was: the same type, or one
/// that only narrows data-dependent sizes (`<=k` becoming a known size or a smaller
/// bound).
fn refines(new: &TensorType, old: &TensorType) -> bool {
    new.dtype == old.dtype
        && new.rank() == old.rank()
        && new.shape.iter().zip(&old.shape).all(|(n, o)| match (n, o) {
            (Dim::Known(k), Dim::Dyn { max }) | (Dim::Dyn { max: k }, Dim::Dyn { max }) => k <= max,
            (n, o) => n == o,
        })
}

impl Graph {
    fn describe(&self, n: NodeIndex) -> String {
        let node = self.node(n);
        format!("`{}` ({})", node.name, node.ty)
    }

    /// Points every use of `old` (operand slots and graph outputs) at `new`. Refuses
    /// when the types differ: the users were typed for `old`.
    pub fn replace_uses(&mut self, old: NodeIndex, new: NodeIndex) -> Result<(), RewriteError> {
        if self.node(old).ty != self.node(new).ty {
            return Err(RewriteError(format!(
                "cannot replace {} by {}: the types differ",
                self.describe(old),
                self.describe(new)
            )));
        }
        self.redirect(old, new);
        Ok(())
    }

    /// Like [`Graph::replace_uses`], but `new` may narrow data-dependent sizes of
    /// `old`'s type (a kernel whose crop became known); call [`Graph::retype`] after,
    /// so the users' types follow.
    pub fn replace_uses_refining(
        &mut self,
        old: NodeIndex,
        new: NodeIndex,
    ) -> Result<(), RewriteError> {
        if !refines(&self.node(new).ty, &self.node(old).ty) {
            return Err(RewriteError(format!(
                "cannot replace {} by {}: the new type does not refine the old one",
                self.describe(old),
                self.describe(new)
            )));
        }
        self.redirect(old, new);
        Ok(())
    }

    fn redirect(&mut self, old: NodeIndex, new: NodeIndex) {
        let uses: Vec<(NodeIndex, u32)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        // Remove every edge old → user, then add new → user per slot: a user that
        // reads `old` twice keeps both slots.
        for &(user, _) in &uses {
            while let Some(e) = self.g.find_edge(old, user) {
                self.g.remove_edge(e);
            }
        }
        for (user, slot) in uses {
            self.g.add_edge(new, user, slot);
        }
        for o in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Adds `op` over `operands` with the type shape inference gives it.
    pub fn add_op(
        &mut self,
        op: Op,
        operands: &[NodeIndex],
        name: String,
        span: Span,
    ) -> Result<NodeIndex, RewriteError> {
        let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.node(o).ty).collect();
        let ty = infer(&op, &tys).map_err(|e| RewriteError(format!("{name}: {}", e.message)))?;
        Ok(self.add(Node { op, ty, name, span }, operands))
    }

    /// Appends a graph input `name` of type `ty` (a training graph's labels).
    pub fn add_input(&mut self, name: &str, ty: TensorType, span: Span) -> NodeIndex {
        let op = Op::Input { name: name.into() };
        let n = self.add(
            Node {
                op,
                ty,
                name: name.into(),
                span,
            },
            &[],
        );
        self.inputs.push(n);
        n
    }

    /// Renames `n`: names are for printing and for the outputs' meaning, not identity.
    pub fn rename(&mut self, n: NodeIndex, name: String) {
        self.g[n].name = name;
    }

    /// Replaces the op of `n` by `op` over the same operands. Refuses when `op` gives
    /// another type: the users were typed for the old one.
    pub fn replace_op(&mut self, n: NodeIndex, op: Op) -> Result<(), RewriteError> {
        let operands = self.operands(n);
        let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.node(o).ty).collect();
        let node = self.node(n);
        let ty = infer(&op, &tys)
            .map_err(|e| RewriteError(format!("`{}`: {}", node.name, e.message)))?;
        if ty != node.ty {
            return Err(RewriteError(format!(
                "cannot make {} a {} of type {ty}: the types differ",
                self.describe(n),
                op.name()
            )));
        }
        self.g[n].op = op;
        Ok(())
    }

    /// Whether `n`'s value is read exactly once, by `user`, and is not a graph output.
    pub fn sole_use(&self, n: NodeIndex, user: NodeIndex) -> bool {
        let mut edges = self.g.edges_directed(n, Direction::Outgoing);
        let one = matches!((edges.next(), edges.next()), (Some(e), None) if e.target() == user);
        one && !self.outputs.contains(&n)
    }

    /// Removes `nodes`, which nothing outside them may still read. Refuses inputs,
    /// outputs and nodes with other users (replace their uses first). Removes in the
    /// order given: freed indices are reused by later additions, and the printed
    /// numbering follows indices among ready nodes, so the order must be stable.
    pub fn remove_unused(&mut self, nodes: &[NodeIndex]) -> Result<(), RewriteError> {
        let set: BTreeSet<NodeIndex> = nodes.iter().copied().collect();
        for &n in &set {
            if self.inputs.contains(&n) || self.outputs.contains(&n) {
                return Err(RewriteError(format!(
                    "cannot remove {}: it is a graph input or output",
                    self.describe(n)
                )));
            }
            if let Some(u) = self.users(n).into_iter().find(|u| !set.contains(u)) {
                return Err(RewriteError(format!(
                    "cannot remove {}: {} still reads it",
                    self.describe(n),
                    self.describe(u)
                )));
            }
        }
        for &n in nodes {
            self.g.remove_node(n);
        }
        Ok(())
    }

    /// Nodes some output depends on, and the inputs (they are the interface).
    pub fn live_nodes(&self) -> BTreeSet<NodeIndex> {
        let mut live = BTreeSet::new();
        let rev = Reversed(&self.g);
        for &out in &self.outputs {
            let mut dfs = Dfs::new(rev, out);
            while let Some(n) = dfs.next(rev) {
                live.insert(n);
            }
        }
        live.extend(self.inputs.iter().copied());
        live
    }

    /// Removes every node no output depends on, except the inputs; returns how many.
    pub fn remove_dead(&mut self) -> usize {
        let live = self.live_nodes();
        let dead: Vec<NodeIndex> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for &n in &dead {
            self.g.remove_node(n);
        }
        dead.len()
    }

    /// Re-derives every computed node's type from its operands, in topological order
    /// (after [`Graph::replace_uses_refining`] narrowed a type).
    pub fn retype(&mut self) -> Result<(), RewriteError> {
        let order = self.topo_order().map_err(|e| RewriteError(e.to_string()))?;
        for n in order {
            if matches!(self.node(n).op, Op::Input { .. } | Op::Param { .. }) {
                continue;
            }
            let operands = self.operands(n);
            let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.node(o).ty).collect();
            let ty = infer(&self.node(n).op, &tys)
                .map_err(|e| RewriteError(format!("`{}`: {}", self.node(n).name, e.message)))?;
            self.g[n].ty = ty;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{Init, ParamRole};
    use crate::ir::types::DType;

    fn leaf(g: &mut Graph, op: Op, name: &str, ty: TensorType) -> NodeIndex {
        let node = Node {
            op,
            ty,
            name: name.into(),
            span: Span::default(),
        };
        g.add(node, &[])
    }

    fn param(g: &mut Graph, name: &str, dims: &[u64]) -> NodeIndex {
        let op = Op::Param {
            role: ParamRole::Trainable,
            init: Init::Zeros,
            seed: None,
        };
        leaf(g, op, name, TensorType::known(DType::F32, dims))
    }

    /// x `[B, 3]` → linear(4) → relu → output; plus an unused parameter.
    fn small() -> (Graph, [NodeIndex; 5]) {
        let mut g = Graph::new("m");
        let ty = TensorType::new(DType::F32, vec![Dim::sym("B"), Dim::Known(3)]);
        let x = leaf(&mut g, Op::Input { name: "x".into() }, "x", ty);
        let w = param(&mut g, "fc.weight", &[4, 3]);
        let unused = param(&mut g, "spare", &[2]);
        let fc = g
            .add_op(
                Op::Linear { bias: false },
                &[x, w],
                "fc".into(),
                Span::new(3, 9),
            )
            .unwrap();
        let relu = g
            .add_op(Op::Relu, &[fc], "relu".into(), Span::default())
            .unwrap();
        g.inputs = vec![x];
        g.outputs = vec![relu];
        (g, [x, w, unused, fc, relu])
    }

    #[test]
    fn add_op_infers_the_type_and_keeps_the_span() {
        let (g, [.., fc, relu]) = small();
        let want = TensorType::new(DType::F32, vec![Dim::sym("B"), Dim::Known(4)]);
        assert_eq!(g.node(fc).ty, want);
        assert_eq!(g.node(relu).ty, want);
        assert_eq!(g.node(fc).span, Span::new(3, 9));
        assert!(g.verify().is_ok());
    }

    #[test]
    fn add_op_refuses_operands_that_do_not_fit() {
        let (mut g, [x, ..]) = small();
        let w = param(&mut g, "bad.weight", &[4, 5]);
        let e = g
            .add_op(
                Op::Linear { bias: false },
                &[x, w],
                "bad".into(),
                Span::default(),
            )
            .unwrap_err();
        assert!(
            e.0.starts_with("bad: linear expects 5 input features"),
            "{e}"
        );
    }

    #[test]
    fn replace_uses_refuses_a_type_mismatch_naming_both_types() {
        let (mut g, [x, .., relu]) = small();
        let before = crate::ir::print::print_graph(&g);
        let e = g.replace_uses(relu, x).unwrap_err();
        assert_eq!(
            e.0,
            "cannot replace `relu` (f32[B,4]) by `x` (f32[B,3]): the types differ"
        );
        assert_eq!(crate::ir::print::print_graph(&g), before, "graph changed");
    }

    #[test]
    fn replace_uses_moves_slots_and_outputs() {
        let (mut g, [_, _, _, fc, relu]) = small();
        let sum = g
            .add_op(Op::Add, &[relu, relu], "sum".into(), Span::default())
            .unwrap();
        g.outputs = vec![relu, sum];
        g.replace_uses(relu, fc).unwrap();
        assert_eq!(g.operands(sum), vec![fc, fc]);
        assert_eq!(g.outputs, vec![fc, sum]);
        assert!(g.users(relu).is_empty());
        g.remove_unused(&[relu]).unwrap();
        assert!(g.verify().is_ok());
    }

    #[test]
    fn refining_accepts_a_known_crop_and_refuses_a_wider_one() {
        let mut g = Graph::new("k");
        let dynamic = TensorType::new(DType::F32, vec![Dim::Known(2), Dim::Dyn { max: 9 }]);
        let old = param(&mut g, "old", &[1]);
        g.g[old].ty = dynamic;
        let s = g
            .add_op(Op::Relu, &[old], "s".into(), Span::default())
            .unwrap();
        let known = param(&mut g, "known", &[2, 5]);
        let wide = param(&mut g, "wide", &[2, 11]);
        let e = g.replace_uses_refining(old, wide).unwrap_err();
        assert!(
            e.0.contains("f32[2,<=9]") && e.0.contains("f32[2,11]"),
            "{e}"
        );
        assert!(g.replace_uses(old, known).is_err());
        g.replace_uses_refining(old, known).unwrap();
        g.retype().unwrap();
        assert_eq!(g.node(s).ty, TensorType::known(DType::F32, &[2, 5]));
    }

    #[test]
    fn replace_op_keeps_the_type_or_refuses() {
        let (mut g, [.., fc, relu]) = small();
        g.replace_op(relu, Op::Gelu).unwrap();
        assert_eq!(g.node(relu).op, Op::Gelu);
        let e = g.replace_op(fc, Op::Flatten).unwrap_err();
        assert!(e.0.contains("`fc` (f32[B,4])"), "{e}");
        assert_eq!(g.node(fc).op, Op::Linear { bias: false });
    }

    #[test]
    fn sole_use_sees_outputs_and_second_readers() {
        let (mut g, [x, w, _, fc, relu]) = small();
        assert!(g.sole_use(fc, relu));
        assert!(!g.sole_use(relu, fc), "an output is never a sole use");
        assert!(g.sole_use(w, fc));
        assert!(!g.sole_use(w, relu));
        g.add_op(Op::Relu, &[fc], "again".into(), Span::default())
            .unwrap();
        assert!(!g.sole_use(fc, relu));
        assert!(g.sole_use(x, fc));
    }

    #[test]
    fn remove_unused_refuses_nodes_still_read() {
        let (mut g, [x, _, _, fc, relu]) = small();
        let e = g.remove_unused(&[fc]).unwrap_err();
        assert_eq!(
            e.0,
            "cannot remove `fc` (f32[B,4]): `relu` (f32[B,4]) still reads it"
        );
        assert!(g.remove_unused(&[relu]).unwrap_err().0.contains("output"));
        assert!(g.remove_unused(&[x]).unwrap_err().0.contains("input"));
    }

    #[test]
    fn dead_node_removal_keeps_inputs_and_outputs() {
        let (mut g, [x, w, unused, fc, relu]) = small();
        // An input no output reads stays: it is part of the interface.
        let ty = TensorType::known(DType::F32, &[1]);
        let y = leaf(&mut g, Op::Input { name: "y".into() }, "y", ty);
        g.inputs.push(y);
        let dangling = g
            .add_op(Op::Relu, &[y], "dangling".into(), Span::default())
            .unwrap();
        assert_eq!(g.remove_dead(), 2);
        for n in [x, y, w, fc, relu] {
            assert!(g.contains(n), "{} removed", n.index());
        }
        assert!(!g.contains(unused) && !g.contains(dangling));
        assert_eq!(g.remove_dead(), 0);
        assert!(g.verify().is_ok());
    }
}
