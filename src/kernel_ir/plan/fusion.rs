//! Epilogue fusion: which nodes after a conv its kernel computes. A conv absorbs, in
//! this order and each at most once, a batch norm with running statistics (folded into
//! the weights), an add of another value (the residual), and a ReLU; dropout is never
//! in between at inference because it is an alias. A node is absorbed only when the
//! previous one has no other user and is not a model output.

use crate::ir::graph::Graph;
use crate::ir::op::{Epilogue, Op};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet};

/// A conv and the nodes its kernel also computes.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    pub conv: NodeIndex,
    pub bn: Option<NodeIndex>,
    /// The other operand of the absorbed add.
    pub residual: Option<NodeIndex>,
    pub relu: bool,
    /// Every node of the chain, the conv first.
    pub nodes: Vec<NodeIndex>,
    /// The last node: its value is the kernel's output.
    pub tail: NodeIndex,
}

/// The chain a `fused_conv` stands for, when the conv kernel computes its epilogue:
/// `[]`, `[relu]`, `[add]` or `[add, relu]`.
fn fused_chain(graph: &Graph, id: NodeIndex, bias: bool, epilogue: &[Epilogue]) -> Option<Chain> {
    let (residual, relu) = match epilogue {
        [] => (false, false),
        [Epilogue::Relu] => (false, true),
        [Epilogue::AddResidual] => (true, false),
        [Epilogue::AddResidual, Epilogue::Relu] => (true, true),
        _ => return None,
    };
    let residual = residual.then(|| graph.operands(id)[2 + usize::from(bias)]);
    Some(Chain {
        conv: id,
        bn: None,
        residual,
        relu,
        nodes: vec![id],
        tail: id,
    })
}

/// Chains by tail node, for every conv that is not constant.
pub fn conv_chains(
    graph: &Graph,
    order: &[NodeIndex],
    constant: &BTreeSet<NodeIndex>,
) -> BTreeMap<NodeIndex, Chain> {
    conv_chains_in(graph, order, constant, false)
}

/// [`conv_chains`] for a training plan too, where a conv absorbs no batch norm (it
/// normalises with batch statistics). A backward op that reads a value inside a chain
/// is one more user of it, so the chain stops before it in either mode.
pub fn conv_chains_in(
    graph: &Graph,
    order: &[NodeIndex],
    constant: &BTreeSet<NodeIndex>,
    training: bool,
) -> BTreeMap<NodeIndex, Chain> {
    let mut claimed = BTreeSet::new();
    let mut chains = BTreeMap::new();
    for &id in order {
        if constant.contains(&id) {
            continue;
        }
        if let Op::FusedConv { conv, epilogue } = &graph.node(id).op {
            // fuse-epilogue already merged the chain (its BatchNorm folded into the
            // constant weights); its epilogue maps onto the kernel's flags.
            if let Some(chain) = fused_chain(graph, id, conv.bias, epilogue) {
                chains.insert(id, chain);
            }
            continue;
        }
        if !matches!(graph.node(id).op, Op::Conv { .. }) {
            continue;
        }
        let mut chain = Chain {
            conv: id,
            bn: None,
            residual: None,
            relu: false,
            nodes: vec![id],
            tail: id,
        };
        // 0: anything may follow; 1: after bn; 2: after add; 3: done.
        let mut stage = 0;
        let mut cur = id;
        while stage < 3 && !graph.outputs.contains(&cur) {
            let users = graph.users(cur);
            let [u] = users[..] else { break };
            let ops = graph.operands(u);
            if claimed.contains(&u) || ops.iter().filter(|&&o| o == cur).count() != 1 {
                break;
            }
            match &graph.node(u).op {
                Op::BatchNorm {
                    running_stats: true,
                    ..
                } if stage == 0
                    && !training
                    && ops[0] == cur
                    && ops[1..].iter().all(|o| constant.contains(o)) =>
                {
                    chain.bn = Some(u);
                    stage = 1;
                }
                Op::Add if stage <= 1 => {
                    let other = if ops[0] == cur { ops[1] } else { ops[0] };
                    if constant.contains(&other) {
                        break;
                    }
                    chain.residual = Some(other);
                    stage = 2;
                }
                Op::Relu => {
                    chain.relu = true;
                    stage = 3;
                }
                _ => break,
            }
            chain.nodes.push(u);
            cur = u;
        }
        chain.tail = cur;
        claimed.extend(chain.nodes.iter().copied());
        chains.insert(cur, chain);
    }
    chains
}
