//! The graph IR: a petgraph `StableDiGraph` of typed nodes. Edges point from operand
//! to user and carry the operand slot; `operands` is the one place that reads them back
//! in slot order.

use super::op::{Op, ParamRole};
use super::shape::infer;
use super::types::TensorType;
use crate::diag::Span;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{BTreeMap, BTreeSet};

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
    /// Stable dotted path: `layer1.0.conv1` for layers, `layer1.0.conv1.weight` for
    /// parameters.
    pub name: String,
    pub span: Span,
}

/// A filter basis shared by several convs, with its orthogonality-regulariser weight.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct BasisInfo {
    pub name: String,
    /// Parameter names of the shared tensors (one, or two for double sharing).
    pub shared: Vec<String>,
    /// Parameter names of the unique bases of every conv that uses this basis.
    pub unique: Vec<String>,
    pub ortho_weight: f64,
}

/// A family of pooling slots: `count` places, `active` of which downsample.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct SlotFamily {
    pub name: String,
    pub count: u64,
    pub active: u64,
    /// 1-based slot numbers that downsample in this graph.
    pub config: Vec<u64>,
    /// Slots actually placed by the program (must equal `count`).
    pub placed: u64,
}

/// A FlexConv layer's anti-aliasing regulariser weight, for training.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct FlexInfo {
    pub name: String,
    pub horizon: Vec<u64>,
    pub antialias_weight: f64,
}

/// The report stored on the graph and printed with the IR.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct MemorySummary {
    /// The batch size (value of every symbolic dimension) the plan was made for.
    pub batch: u64,
    pub buffers: usize,
    /// Sum of the buffer sizes: what a run allocates for activations.
    pub arena_bytes: u64,
    /// Largest total of simultaneously live values, an op's dying inputs counted
    /// with its output: no plan without in-place writes can use less.
    pub peak_live_bytes: u64,
    /// Every activation in its own buffer.
    pub no_reuse_bytes: u64,
    /// Parameters, buffers and constants.
    pub weight_bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub g: StableDiGraph<Node, u32>,
    pub inputs: Vec<NodeIndex>,
    pub outputs: Vec<NodeIndex>,
    pub seed: u64,
    pub bases: Vec<BasisInfo>,
    pub slots: Vec<SlotFamily>,
    pub flexconvs: Vec<FlexInfo>,
    /// Each conv's algorithm decision and cost estimates, by node name
    /// (`choose-conv-algo`).
    pub conv_costs: BTreeMap<String, super::conv_cost::ConvCost>,
    /// Set by the `memory-plan` pass.
    pub memory: Option<MemorySummary>,
}

/// A broken invariant found by `verify`. These are compiler bugs, not user errors.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyError(pub String);

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IR verification failed: {}", self.0)
    }
}

impl std::error::Error for VerifyError {}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a node whose operands are `operands`, in slot order.
    pub fn add(&mut self, node: Node, operands: &[NodeIndex]) -> NodeIndex {
        let id = self.g.add_node(node);
        for (slot, &src) in operands.iter().enumerate() {
            self.g.add_edge(src, id, slot as u32);
        }
        id
    }

    pub fn node(&self, id: NodeIndex) -> &Node {
        &self.g[id]
    }

    /// Every node, in index order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.g.node_indices()
    }

    /// Whether `id` is still in the graph (a rewrite may have removed it).
    pub fn contains(&self, id: NodeIndex) -> bool {
        self.g.contains_node(id)
    }

    /// Operands of `id` ordered by slot.
    pub fn operands(&self, id: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<(u32, NodeIndex)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Distinct users of `id`, in index order.
    pub fn users(&self, id: NodeIndex) -> Vec<NodeIndex> {
        let set: BTreeSet<NodeIndex> = self.g.neighbors_directed(id, Direction::Outgoing).collect();
        set.into_iter().collect()
    }

    /// Parameter nodes in index order.
    pub fn params(&self) -> impl Iterator<Item = (NodeIndex, &Node, ParamRole)> {
        self.g
            .node_indices()
            .filter_map(move |i| match &self.g[i].op {
                Op::Param { role, .. } => Some((i, &self.g[i], *role)),
                _ => None,
            })
    }

    /// A topological order that depends only on the graph, not on hash order: Kahn's
    /// algorithm taking the smallest ready index first.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>, VerifyError> {
        let mut indegree: BTreeMap<NodeIndex, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BTreeSet<NodeIndex> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indegree.get_mut(&e.target()).expect("target exists");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != self.g.node_count() {
            return Err(VerifyError("the graph has a cycle".into()));
        }
        Ok(order)
    }

    /// Renumbers nodes densely in a stable topological order, dropping holes left by
    /// removed nodes, so that printed IR does not depend on the history of rewrites.
    pub fn compact(&mut self) -> Result<(), VerifyError> {
        let order = self.topo_order()?;
        let mut remap = BTreeMap::new();
        let mut g = StableDiGraph::with_capacity(order.len(), self.g.edge_count());
        for &old in &order {
            remap.insert(old, g.add_node(self.g[old].clone()));
        }
        for &old in &order {
            for (slot, src) in self.operands(old).into_iter().enumerate() {
                g.add_edge(remap[&src], remap[&old], slot as u32);
            }
        }
        self.inputs = self.inputs.iter().map(|n| remap[n]).collect();
        self.outputs = self.outputs.iter().map(|n| remap[n]).collect();
        self.g = g;
        Ok(())
    }

    /// Checks the invariants every pass must keep: operand slots are dense, arity
    /// matches the op, stored types equal re-inferred ones, inputs/outputs exist, the
    /// graph is acyclic.
    pub fn verify(&self) -> Result<(), VerifyError> {
        self.topo_order()?;
        for id in self.g.node_indices() {
            let node = &self.g[id];
            let mut slots: Vec<u32> = self
                .g
                .edges_directed(id, Direction::Incoming)
                .map(|e| *e.weight())
                .collect();
            slots.sort();
            if slots.iter().enumerate().any(|(i, s)| *s as usize != i) {
                return Err(VerifyError(format!(
                    "node {} `{}`: operand slots {slots:?} are not 0..n",
                    id.index(),
                    node.name
                )));
            }
            match node.op.arity() {
                Some(a) if a != slots.len() => {
                    return Err(VerifyError(format!(
                        "node {} `{}` ({}): expected {a} operands, found {}",
                        id.index(),
                        node.name,
                        node.op.name(),
                        slots.len()
                    )))
                }
                None if slots.len() < 2 => {
                    return Err(VerifyError(format!(
                        "node {} `{}`: variadic {} needs at least 2 operands",
                        id.index(),
                        node.name,
                        node.op.name()
                    )))
                }
                _ => {}
            }
            if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
                continue;
            }
            let operand_types: Vec<&TensorType> = self
                .operands(id)
                .into_iter()
                .map(|o| &self.g[o].ty)
                .collect();
            let inferred = infer(&node.op, &operand_types).map_err(|e| {
                VerifyError(format!(
                    "node {} `{}`: {}",
                    id.index(),
                    node.name,
                    e.message
                ))
            })?;
            if inferred != node.ty {
                return Err(VerifyError(format!(
                    "node {} `{}`: stored type {} but operands give {}",
                    id.index(),
                    node.name,
                    node.ty,
                    inferred
                )));
            }
        }
        for &n in self.inputs.iter().chain(&self.outputs) {
            if !self.g.contains_node(n) {
                return Err(VerifyError(format!("dangling input/output {}", n.index())));
            }
        }
        Ok(())
    }

    /// Parameter totals by role, each tensor counted once however many layers use it.
    pub fn param_counts(&self) -> ParamCounts {
        let mut c = ParamCounts::default();
        for (_, node, role) in self.params() {
            let n = node.ty.numel().unwrap_or(0);
            match role {
                ParamRole::Trainable => c.trainable += n,
                ParamRole::Shared => {
                    c.trainable += n;
                    c.shared += n;
                }
                ParamRole::Frozen => c.frozen += n,
                ParamRole::Buffer => c.buffers += n,
            }
        }
        c
    }
}

/// Parameter totals. `shared` is the part of `trainable` held by shared tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    pub trainable: u64,
    pub frozen: u64,
    pub shared: u64,
    pub buffers: u64,
}
