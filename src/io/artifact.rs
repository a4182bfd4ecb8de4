//! Compiled artifacts (`.fnc`): the optimised graph, its parameter layout and how it
//! was made, plus the bound weights when `fnetc compile --weights` was given.
//!
//! An artifact is a safetensors file. Its tensors are the bound weights (none when
//! compiled without weights); its header metadata holds one key, `fnet.artifact`,
//! whose value is the JSON [`ArtifactHeader`]. Reusing safetensors means any
//! safetensors reader can list the weights of an artifact, and the guarded writer and
//! the truncation/corruption checks of `weights.rs` apply unchanged.
//!
//! The graph is stored as a node list in topological order, each node with the
//! positions of its operands, so loading rebuilds exactly the graph that was written;
//! it is then verified like the output of any pass, so a damaged or hand-edited
//! header is refused instead of run.

use super::read_all;
use super::weights::{parse_metadata, parse_weights, safetensors_bytes};
use super::write_output;
use super::{IoError, IoErrorKind};
use crate::cost::ConvCost;
use crate::ir::graph::{BasisInfo, FlexInfo, Graph, MemorySummary, Node, SlotFamily};
use crate::ir::op::{Op, ParamRole};
use crate::passes::CompileMode;
use crate::runtime::ParamStore;
use petgraph::stable_graph::NodeIndex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The value of `format` in every artifact.
pub const FORMAT: &str = "fnet-compiled";
/// Bumped whenever the header or the IR changes incompatibly.
pub const VERSION: u32 = 1;
/// The safetensors metadata key holding the header.
pub const METADATA_KEY: &str = "fnet.artifact";

/// How the artifact was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The `.fnet` path as given to `fnetc compile`.
    pub source: String,
    /// FNV-1a of the source text, hex: tells which version of the model this was.
    pub source_hash: String,
    pub mode: CompileMode,
    pub slot_config: Option<Vec<u64>>,
    pub overrides: Vec<(String, String)>,
    /// The passes that ran, in order.
    pub passes: Vec<String>,
}

/// One tensor the graph reads by name (parameters and buffers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayoutEntry {
    pub name: String,
    pub shape: Vec<u64>,
    pub role: ParamRole,
    /// Whether the artifact carries its value.
    pub bound: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: Node,
    /// Positions in `GraphRecord::nodes` of the operands, in slot order.
    pub operands: Vec<usize>,
}

/// A graph as plain data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphRecord {
    pub name: String,
    pub seed: u64,
    pub nodes: Vec<NodeRecord>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    pub bases: Vec<BasisInfo>,
    pub slots: Vec<SlotFamily>,
    pub flexconvs: Vec<FlexInfo>,
    pub memory: Option<MemorySummary>,
    /// `choose-conv-algo`'s estimates, by conv name.
    pub conv_costs: BTreeMap<String, ConvCost>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactHeader {
    pub format: String,
    pub version: u32,
    /// The fnet that wrote it.
    pub fnet_version: String,
    pub provenance: Provenance,
    pub layout: Vec<LayoutEntry>,
    pub graph: GraphRecord,
}

/// A loaded artifact: its header, the rebuilt graph and the bound weights, if any.
pub struct Artifact {
    pub header: ArtifactHeader,
    pub graph: Graph,
    pub weights: Option<ParamStore<f32>>,
}

impl GraphRecord {
    pub fn from_graph(graph: &Graph) -> GraphRecord {
        // `compact` + `verify` after every pass guarantee a topological order exists.
        let order = graph.topo_order().unwrap_or_default();
        let position: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let at = |n: &NodeIndex| position[n];
        GraphRecord {
            name: graph.name.clone(),
            seed: graph.seed,
            nodes: order
                .iter()
                .map(|&n| NodeRecord {
                    node: graph.node(n).clone(),
                    operands: graph.operands(n).iter().map(at).collect(),
                })
                .collect(),
            inputs: graph.inputs.iter().map(at).collect(),
            outputs: graph.outputs.iter().map(at).collect(),
            bases: graph.bases.clone(),
            slots: graph.slots.clone(),
            flexconvs: graph.flexconvs.clone(),
            memory: graph.memory.clone(),
            conv_costs: graph.conv_costs.clone(),
        }
    }

    /// Rebuilds the graph; `Err` says what is inconsistent.
    pub fn to_graph(&self) -> Result<Graph, String> {
        let mut graph = Graph::new(self.name.clone());
        graph.seed = self.seed;
        let mut ids = Vec::with_capacity(self.nodes.len());
        for (i, record) in self.nodes.iter().enumerate() {
            let operands = record
                .operands
                .iter()
                .map(|&o| {
                    ids.get(o).copied().ok_or_else(|| {
                        format!("node {i} reads node {o}, which does not come before it")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            ids.push(graph.add(record.node.clone(), &operands));
        }
        let pick = |list: &[usize], what: &str| {
            list.iter()
                .map(|&i| {
                    ids.get(i)
                        .copied()
                        .ok_or_else(|| format!("{what} {i} is not a node"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        graph.inputs = pick(&self.inputs, "input")?;
        graph.outputs = pick(&self.outputs, "output")?;
        graph.bases = self.bases.clone();
        graph.slots = self.slots.clone();
        graph.flexconvs = self.flexconvs.clone();
        graph.memory = self.memory.clone();
        graph.conv_costs = self.conv_costs.clone();
        graph.verify().map_err(|e| e.to_string())?;
        Ok(graph)
    }
}

/// The tensors `graph` reads by name, in graph order.
pub fn layout(graph: &Graph, weights: Option<&ParamStore<f32>>) -> Vec<LayoutEntry> {
    let order = graph.topo_order().unwrap_or_default();
    order
        .iter()
        .filter_map(|&n| {
            let node = graph.node(n);
            let Op::Param { role, .. } = &node.op else {
                return None;
            };
            Some(LayoutEntry {
                name: node.name.clone(),
                shape: node.ty.shape.iter().filter_map(|d| d.known()).collect(),
                role: *role,
                bound: weights.is_some_and(|w| w.contains_key(&node.name)),
            })
        })
        .collect()
}

/// Writes `graph` (and the weights it reads, when given) to `path` through
/// [`write_output`]: atomically, and refusing a `path` that is one of `inputs`.
pub fn write_artifact(
    path: &Path,
    inputs: &[&Path],
    graph: &Graph,
    provenance: Provenance,
    weights: Option<&ParamStore<f32>>,
) -> Result<ArtifactHeader, IoError> {
    let layout = layout(graph, weights);
    let tensors: BTreeMap<_, _> = match weights {
        Some(w) => layout
            .iter()
            .filter_map(|e| w.get(&e.name).map(|t| (e.name.clone(), t.clone())))
            .collect(),
        None => BTreeMap::new(),
    };
    let header = ArtifactHeader {
        format: FORMAT.to_string(),
        version: VERSION,
        fnet_version: env!("CARGO_PKG_VERSION").to_string(),
        provenance,
        layout,
        graph: GraphRecord::from_graph(graph),
    };
    let json = serde_json::to_string(&header).map_err(|e| {
        IoError::new(
            path,
            IoErrorKind::BadFormat,
            "a graph that serialises to JSON",
            e.to_string(),
            "this is a bug in fnetc; please report it with the model",
        )
    })?;
    let metadata = HashMap::from([(METADATA_KEY.to_string(), json)]);
    let bytes = safetensors_bytes(path, &tensors, Some(metadata))?;
    write_output(path, inputs, |w| w.write_all(&bytes))?;
    Ok(header)
}

fn bad(path: &Path, expected: &str, found: impl Into<String>, hint: &str) -> IoError {
    IoError::new(path, IoErrorKind::BadFormat, expected, found, hint)
}

/// Reads an artifact written by `write_artifact`.
pub fn read_artifact(path: &Path) -> Result<Artifact, IoError> {
    const RECOMPILE: &str = "compile the model again: fnetc compile MODEL.fnet -o MODEL.fnc";
    // Read once: the header and the tensors come from the same bytes.
    let bytes = read_all(path)?;
    let meta = parse_metadata(path, &bytes)?;
    let json = meta
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            bad(
                path,
                "a compiled fnet artifact (safetensors with `fnet.artifact` metadata)",
                "a safetensors file without it (a weights file?)",
                "pass weights with --weights; make artifacts with fnetc compile -o",
            )
        })?;
    let header: ArtifactHeader = serde_json::from_str(json)
        .map_err(|e| bad(path, "a readable artifact header", e.to_string(), RECOMPILE))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(bad(
            path,
            &format!("format `{FORMAT}` version {VERSION}"),
            format!(
                "format `{}` version {} (written by fnet {})",
                header.format, header.version, header.fnet_version
            ),
            RECOMPILE,
        ));
    }
    let graph = header
        .graph
        .to_graph()
        .map_err(|e| bad(path, "a consistent compiled graph", e, RECOMPILE))?;
    let file = parse_weights::<f32>(path, &bytes)?;
    let weights = (!file.tensors.is_empty()).then_some(file.tensors);
    Ok(Artifact {
        header,
        graph,
        weights,
    })
}
