//! Lowering a graph to an execution plan: a list of kernel launches over buffers, for
//! one set of input shapes. Backend-neutral: every kernel is type-checked, so any
//! renderer of the kernel IR can run the plan (the OpenCL executor is one).
//!
//! - Subgraphs that read only parameters (FlexConv kernel synthesis, masks, crops) are
//!   evaluated once on the host by the reference interpreter; their results become
//!   constant buffers. A `flex_kernel` over parameters is the exception: the device
//!   synthesises it in `setup` launches (`lower_flex`).
//! - A conv absorbs a following batch norm (folded into its weights and bias), one
//!   residual add and a ReLU: one kernel writes the block's output.
//! - Identity ops (dropout in evaluation, flatten, inactive pooling slots) alias their
//!   input's buffer.
//! - Temporary buffers share storage slots when their lifetimes do not overlap.
//!
//! A **training plan** ([`build_plan_in`] with `Mode::Train`) runs a training graph
//! (or a model graph in training mode): every parameter the graph reads is a device
//! buffer in `Plan::params` (written by the trainer, never folded into another
//! constant); only parameter-free subgraphs (coordinate grids, frozen tensors) and the
//! FlexConv crops (a constant of one step, decided from the parameters the plan is
//! built with) are evaluated on the host. Batch norm uses batch statistics; a conv
//! absorbs no batch norm; kernels synthesised from parameters run in every step, not
//! once. Running-statistic updates are copied into their buffers after a run
//! (`Plan::updates`), and dropout draws its mask from the seed buffer (`Plan::seed`).

use super::batch_norm;
use super::native::{NativeConvs, NativeOp};
use super::ops::{self, MapKind};
use super::Kernel;
use crate::ir::graph::{Graph, Node};
use crate::ir::op::Op;
use crate::ir::train_ops::TrainOp;
use crate::runtime::bind::{bind_inputs, conforms, eval_dim, DimEnv};
use crate::runtime::{run, Mode, ParamStore, RunError, RunOptions};
use crate::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet};

pub mod fusion;
mod lower_conv;
mod lower_conv_backward;
mod lower_fft;
mod lower_flex;
mod lower_flex_train;
mod lower_grouped;
mod lower_regularizers;
mod lower_train;
mod slots;
mod target;

pub use lower_fft::transform_plan;
use slots::assign_slots;
pub use slots::live_peak;
pub use target::Target;

use lower_conv::lift;

use fusion::conv_chains_in;

pub type BufId = usize;

/// The `kernel` of a native step: it indexes no kernel.
pub const NATIVE: usize = usize::MAX;

#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    /// The i-th model input.
    Input(usize),
    /// Uploaded once when the plan is loaded.
    Const(Vec<f32>),
    /// Written by a kernel; shares its storage slot with others.
    Temp,
    /// Written by the `setup` launches (kernels synthesised from parameters) and kept
    /// for the life of the plan.
    Derived,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// Length in f32 elements.
    pub len: usize,
    pub kind: BufKind,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Index into `Plan::kernels`; [`NATIVE`] for a native step.
    pub kernel: usize,
    /// A native routine call instead of a kernel launch (only where the target allows
    /// them, `Target::native`): its arguments are `args`, as `NativeOp` lists them.
    pub native: Option<NativeOp>,
    /// One buffer per kernel parameter, in order.
    pub args: Vec<BufId>,
    /// The layer this launch computes.
    pub layer: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub buffers: Vec<Buffer>,
    /// Distinct kernels; steps with identical code share one.
    pub kernels: Vec<Kernel>,
    pub steps: Vec<Step>,
    /// Launches that derive buffers from parameters (FlexConv kernel synthesis): run
    /// once when the plan is loaded and again after a parameter is rewritten.
    pub setup: Vec<Step>,
    /// Parameters uploaded as buffers that a new value may overwrite in place.
    pub params: BTreeMap<String, BufId>,
    pub inputs: Vec<(BufId, Vec<usize>)>,
    pub outputs: Vec<(BufId, Vec<usize>)>,
    /// Storage slot of each `Temp` buffer (`None` for inputs and constants).
    pub slot: Vec<Option<usize>>,
    /// Length of each storage slot, in elements.
    pub slot_len: Vec<usize>,
    /// Training plans: (an output's buffer, the running statistic it updates); after a
    /// run each output is copied into its statistic's buffer.
    pub updates: Vec<(BufId, BufId)>,
    /// Training plans with dropout: the run's seed as two 16-bit words
    /// (`runtime::dropout::seed_words`), which every dropout kernel reads.
    pub seed: Option<BufId>,
}

impl Plan {
    /// Floating-point operations of one run.
    pub fn flops(&self) -> u64 {
        self.steps.iter().map(|s| self.step_flops(s)).sum()
    }

    /// Floating-point operations of one step, a launch or a native call.
    pub fn step_flops(&self, s: &Step) -> u64 {
        match &s.native {
            Some(op) => op.flops(),
            None => self.kernels[s.kernel].flops,
        }
    }

    /// When each output is final, as a count of steps run: 0 before the first step,
    /// `k` after step `k - 1`, `steps.len() + 1` after the running-statistic updates.
    /// That is after the last step whose arguments include its buffer (a read after
    /// the final write only delays it); before the first step for a buffer no step
    /// touches (an input, a parameter); after the updates for a statistic's buffer
    /// they write. Outputs live to the end of the run (`slots`), so no later step
    /// writes their storage through another buffer sharing its slot. Backends that
    /// hand outputs out during a run (`Prepared::run_streaming`) read each one here.
    pub fn output_ready(&self) -> Vec<usize> {
        let mut last = vec![0; self.buffers.len()];
        for (k, s) in self.steps.iter().enumerate() {
            for &a in &s.args {
                last[a] = k + 1;
            }
        }
        for &(_, to) in &self.updates {
            last[to] = self.steps.len() + 1;
        }
        self.outputs.iter().map(|(b, _)| last[*b]).collect()
    }

    /// [`Plan::output_ready`] turned around: for each count of steps run (0 to
    /// `steps.len() + 1`), the outputs final from then on.
    pub fn outputs_due(&self) -> Vec<Vec<usize>> {
        due_after(&self.output_ready(), self.steps.len())
    }

    /// Temporaries that no launch (step or setup) reads or writes and that are no output,
    /// update or parameter: a lowering allocated them and then took another path (FlexTCN-6's
    /// training plan has 63 MiB of them). Backends give them a one-element buffer, not their length.
    pub fn idle_temps(&self) -> Vec<bool> {
        let mut idle: Vec<bool> = self
            .buffers
            .iter()
            .map(|b| b.kind == BufKind::Temp)
            .collect();
        let used = (self.steps.iter().chain(&self.setup)).flat_map(|s| s.args.iter().copied());
        let kept = (self.outputs.iter().map(|(o, _)| *o))
            .chain(self.updates.iter().flat_map(|&(u, to)| [u, to]))
            .chain(self.params.values().copied())
            .chain(self.seed);
        for b in used.chain(kept) {
            idle[b] = false;
        }
        idle
    }
}

#[derive(Clone, Debug)]
struct Val {
    buf: BufId,
    shape: Vec<usize>,
}

struct Builder<'a> {
    graph: &'a Graph,
    target: Target,
    env: DimEnv,
    plan: Plan,
    values: BTreeMap<NodeIndex, Val>,
    consts: BTreeMap<NodeIndex, Tensor<f32>>,
    const_bufs: BTreeMap<NodeIndex, Val>,
    /// A training plan (see the module doc).
    training: bool,
    /// A model graph in training mode: batch norms update their running statistics.
    update_running: bool,
    /// The per-channel sums of batch norm backwards, by (x, dy, eps bits).
    bn_sums: BTreeMap<(NodeIndex, NodeIndex, u64), BufId>,
    /// Batch moments by the batch norm input they describe (`lower_train::moments`).
    moments: BTreeMap<NodeIndex, BufId>,
    /// ReLUs applied by the kernel of their operand ([`Builder::relu_after`]).
    fused_relu: BTreeSet<NodeIndex>,
    /// Adds a batch norm's kernel computed (`add_after`), with that batch norm.
    fused_add: BTreeMap<NodeIndex, NodeIndex>,
    /// ReLU backwards whose `dy` is an add of two gradients, with that add, which
    /// they compute (`summed_gradients`).
    summed_dy: BTreeMap<NodeIndex, NodeIndex>,
    /// A training plan's trainable, shared and buffer parameters, by node: uploaded as
    /// device buffers, never a host constant (`const_tensor` refuses them, so every
    /// lowering reads them from their buffers); [`Builder::host_value`] reads them to
    /// decide a FlexConv crop, a constant of the step.
    params_now: BTreeMap<NodeIndex, Tensor<f32>>,
    /// Every MAGNet parameter's gradient, by the operands of the layer's
    /// `magnet_backward` ops, which share one lowering.
    magnet_grads: BTreeMap<Vec<NodeIndex>, Vec<Val>>,
    /// What a regulariser's value and gradients share (`lower_regularizers`), by the
    /// penalty's kind and operands.
    penalties: BTreeMap<(&'static str, Vec<NodeIndex>), Vec<Val>>,
}

fn unsupported(node: &Node, why: &str) -> RunError {
    RunError::new(format!(
        "`{}` ({}): the kernel lowering does not support {why} yet",
        node.name,
        node.op.name()
    ))
    .hint("use --backend reference")
}

/// Lowers `graph` for inputs of `input_shapes`, with parameters from `params`.
pub fn build_plan(
    graph: &Graph,
    params: &ParamStore<f32>,
    input_shapes: &[Vec<usize>],
    target: Target,
) -> Result<Plan, RunError> {
    build_plan_in(graph, params, input_shapes, target, Mode::Eval)
}

/// [`build_plan`] for evaluation or training mode (a training plan: see the module
/// doc).
pub fn build_plan_in(
    graph: &Graph,
    params: &ParamStore<f32>,
    input_shapes: &[Vec<usize>],
    target: Target,
    mode: Mode,
) -> Result<Plan, RunError> {
    let training = mode == Mode::Train;
    let shapes: Vec<&[usize]> = input_shapes.iter().map(Vec::as_slice).collect();
    let env = bind_inputs(graph, &shapes)?;
    let order = graph
        .topo_order()
        .map_err(|e| RunError::new(e.to_string()))?;
    let constant = if training {
        training_constants(graph, &order)
    } else {
        constant_nodes(graph, &order)
    };
    let constant = lower_flex::host_constants(graph, &order, constant);
    let mut consts = evaluate_constants(graph, params, &order, &constant)?;
    let params_now = if training {
        let trained: Vec<NodeIndex> = consts
            .keys()
            .copied()
            .filter(|&n| {
                matches!(graph.node(n).op, Op::Param { role, .. } if role != crate::ir::op::ParamRole::Frozen)
            })
            .collect();
        trained
            .into_iter()
            .filter_map(|n| Some((n, consts.remove(&n)?)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let chains = conv_chains_in(graph, &order, &constant, training);
    let mut absorbed: BTreeSet<NodeIndex> = chains
        .values()
        .flat_map(|c| c.nodes.iter().copied().filter(|&n| n != c.tail))
        .collect();
    let in_chains: BTreeSet<NodeIndex> = chains.values().flat_map(|c| c.nodes.clone()).collect();
    let summed_dy = summed_gradients(graph, &order, &constant, &in_chains);
    absorbed.extend(summed_dy.values().copied());
    let mut b = Builder {
        graph,
        target,
        env,
        plan: Plan::default(),
        values: BTreeMap::new(),
        consts,
        const_bufs: BTreeMap::new(),
        training,
        update_running: training
            && !order
                .iter()
                .any(|&n| matches!(graph.node(n).op, Op::Train(_))),
        bn_sums: BTreeMap::new(),
        moments: BTreeMap::new(),
        fused_relu: BTreeSet::new(),
        fused_add: BTreeMap::new(),
        summed_dy,
        params_now,
        magnet_grads: BTreeMap::new(),
        penalties: BTreeMap::new(),
    };
    for (i, shape) in input_shapes.iter().enumerate() {
        let buf = b.buffer(shape.iter().product(), BufKind::Input(i));
        b.plan.inputs.push((buf, shape.clone()));
        b.values.insert(
            graph.inputs[i],
            Val {
                buf,
                shape: shape.clone(),
            },
        );
    }
    for &id in &order {
        if constant.contains(&id) || absorbed.contains(&id) || graph.inputs.contains(&id) {
            continue;
        }
        let val = match chains.get(&id) {
            Some(chain) => b.conv(chain)?,
            None => b.lower(id)?,
        };
        let node = graph.node(id);
        if !conforms(&node.ty, &val.shape, &b.env) {
            return Err(RunError::new(format!(
                "internal error: the kernel lowering of `{}` gives {:?} but its type is {}",
                node.name, val.shape, node.ty
            )));
        }
        b.values.insert(id, val);
    }
    for &o in &graph.outputs {
        let v = b.val(o)?;
        b.plan.outputs.push((v.buf, v.shape));
    }
    if training {
        device_params_only(graph, &order, &constant, &b.plan)?;
    }
    let mut plan = b.plan;
    assign_slots(&mut plan);
    check_kernels(&mut plan)?;
    Ok(plan)
}

/// The ReLU backwards of `order` whose `dy` is an add of two gradients read by nothing
/// else, with those adds: the backward sums them as it reads them, so the sum is
/// never written. At a ResNet block's input the gradient is the main path's plus the
/// skip's, and the block before starts with that ReLU's backward.
fn summed_gradients(
    graph: &Graph,
    order: &[NodeIndex],
    constant: &BTreeSet<NodeIndex>,
    in_chains: &BTreeSet<NodeIndex>,
) -> BTreeMap<NodeIndex, NodeIndex> {
    let mut summed = BTreeMap::new();
    for &id in order {
        if !matches!(graph.node(id).op, Op::Train(TrainOp::ReluBackward)) {
            continue;
        }
        let ops = graph.operands(id);
        let [x, dy] = ops[..] else { continue };
        let terms = graph.operands(dy);
        let sum_of_two = matches!(graph.node(dy).op, Op::Add)
            && terms.len() == 2
            && terms.iter().all(|&t| graph.node(t).ty == graph.node(dy).ty);
        let only_here = graph.users(dy) == [id]
            && x != dy
            && !graph.outputs.contains(&dy)
            && !constant.contains(&dy)
            && !in_chains.contains(&dy);
        if sum_of_two && only_here {
            summed.insert(id, dy);
        }
    }
    summed
}

/// Types every kernel and makes its broadcasts explicit (`typecheck`), so that any
/// renderer can take the plan. A failure is a bug in the lowering.
fn check_kernels(plan: &mut Plan) -> Result<(), RunError> {
    for k in &mut plan.kernels {
        super::typecheck::check(k).map_err(|e| {
            RunError::new(format!(
                "internal error: the kernel lowering built an ill-typed {e}"
            ))
        })?;
    }
    Ok(())
}

/// Nodes whose value depends on parameters only.
fn constant_nodes(graph: &Graph, order: &[NodeIndex]) -> BTreeSet<NodeIndex> {
    let mut constant = BTreeSet::new();
    for &id in order {
        let c = match &graph.node(id).op {
            Op::Input { .. } => false,
            Op::Param { .. } | Op::CoordGrid { .. } => true,
            _ => graph.operands(id).iter().all(|o| constant.contains(o)),
        };
        if c {
            constant.insert(id);
        }
    }
    constant
}

/// A training plan's constants: parameters (each a device buffer, read as it is), the
/// parameter-free subgraphs (coordinate grids, constants, frozen tensors and what is
/// computed from them only), and the FlexConv crops, a constant of the step.
fn training_constants(graph: &Graph, order: &[NodeIndex]) -> BTreeSet<NodeIndex> {
    use crate::ir::op::ParamRole;
    let (mut pure, mut constant) = (BTreeSet::new(), BTreeSet::new());
    for &id in order {
        let operands = graph.operands(id);
        match &graph.node(id).op {
            Op::Input { .. } => {}
            Op::Param {
                role: ParamRole::Frozen,
                ..
            } => {
                pure.insert(id);
                constant.insert(id);
            }
            Op::Param { .. } => {
                constant.insert(id);
            }
            Op::MaskCrop { .. } if operands.iter().all(|o| constant.contains(o)) => {
                constant.insert(id);
            }
            _ if operands.iter().all(|o| pure.contains(o)) => {
                pure.insert(id);
                constant.insert(id);
            }
            _ => {}
        }
    }
    constant
}

/// Checks that a training plan keeps every trainable, shared or buffer parameter that
/// a kernel reads as a device buffer: one the lowering read on the host instead would
/// silently stop training.
fn device_params_only(
    graph: &Graph,
    order: &[NodeIndex],
    constant: &BTreeSet<NodeIndex>,
    plan: &Plan,
) -> Result<(), RunError> {
    use crate::ir::op::ParamRole;
    for &id in order {
        let node = graph.node(id);
        let Op::Param { role, .. } = node.op else {
            continue;
        };
        let read =
            graph.users(id).iter().any(|u| !constant.contains(u)) || graph.outputs.contains(&id);
        if role != ParamRole::Frozen && read && !plan.params.contains_key(&node.name) {
            return Err(RunError::new(format!(
                "parameter `{}`: the training plan would read it on the host, not as a \
                 device buffer the trainer updates",
                node.name
            ))
            .hint("use --backend reference to train this model"));
        }
    }
    Ok(())
}

/// Runs the parameter-only subgraph on the reference interpreter, once, and returns the
/// constants that runtime nodes read.
fn evaluate_constants(
    graph: &Graph,
    params: &ParamStore<f32>,
    order: &[NodeIndex],
    constant: &BTreeSet<NodeIndex>,
) -> Result<BTreeMap<NodeIndex, Tensor<f32>>, RunError> {
    let needed: Vec<NodeIndex> = order
        .iter()
        .copied()
        .filter(|n| constant.contains(n))
        .filter(|&n| {
            graph.outputs.contains(&n) || graph.users(n).iter().any(|u| !constant.contains(u))
        })
        .collect();
    // Parameters read directly need no interpreter run.
    let mut out = BTreeMap::new();
    let mut computed = Vec::new();
    for &n in &needed {
        let node = graph.node(n);
        if let Op::Param { .. } = node.op {
            let t = params.get(&node.name).ok_or_else(|| {
                RunError::new(format!("no tensor `{}` in the weights", node.name))
            })?;
            out.insert(n, t.clone());
        } else {
            computed.push(n);
        }
    }
    if computed.is_empty() {
        return Ok(out);
    }
    let mut sub = Graph::new(format!("{}.constants", graph.name));
    let mut remap = BTreeMap::new();
    for &n in order.iter().filter(|n| constant.contains(n)) {
        let operands: Vec<NodeIndex> = graph.operands(n).iter().map(|o| remap[o]).collect();
        remap.insert(n, sub.add(graph.node(n).clone(), &operands));
    }
    sub.outputs = computed.iter().map(|n| remap[n]).collect();
    let result = run(&sub, params, &[], &RunOptions::default()).map_err(|e| RunError {
        message: format!("evaluating constant subgraphs: {}", e.message),
        hint: e.hint,
    })?;
    out.extend(computed.into_iter().zip(result.outputs));
    Ok(out)
}

impl Builder<'_> {
    fn buffer(&mut self, len: usize, kind: BufKind) -> BufId {
        self.plan.buffers.push(Buffer { len, kind });
        self.plan.buffers.len() - 1
    }

    fn temp(&mut self, shape: Vec<usize>) -> Val {
        let buf = self.buffer(shape.iter().product(), BufKind::Temp);
        Val { buf, shape }
    }

    fn constant(&mut self, data: Vec<f32>) -> BufId {
        self.buffer(data.len(), BufKind::Const(data))
    }

    /// Adds a launch, sharing the kernel with an earlier launch of identical code.
    fn emit(&mut self, prefix: &str, mut kernel: Kernel, args: Vec<BufId>, layer: &str) {
        kernel.name = String::new();
        let found = self.plan.kernels.iter().position(|k| {
            k.body == kernel.body && k.params == kernel.params && k.grid == kernel.grid
        });
        let index = match found {
            Some(i) => i,
            None => {
                kernel.name = format!("{prefix}_{}", self.plan.kernels.len());
                self.plan.kernels.push(kernel);
                self.plan.kernels.len() - 1
            }
        };
        self.plan.steps.push(Step {
            kernel: index,
            native: None,
            args,
            layer: layer.to_string(),
        });
    }

    /// Adds a native step (the target must allow them: `Target::native`).
    fn emit_native(&mut self, op: NativeOp, args: Vec<BufId>, layer: &str) {
        self.plan.steps.push(Step {
            kernel: NATIVE,
            native: Some(op),
            args,
            layer: layer.to_string(),
        });
    }

    fn const_tensor(&self, id: NodeIndex) -> Result<&Tensor<f32>, RunError> {
        self.consts.get(&id).ok_or_else(|| {
            let node = self.graph.node(id);
            RunError::new(format!(
                "`{}` is computed at run time; the kernel lowering needs it constant here",
                node.name
            ))
            .hint("use --backend reference")
        })
    }

    /// The value of an operand; constants are uploaded on first use.
    fn val(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        if let Some(v) = self.values.get(&id).or(self.const_bufs.get(&id)) {
            return Ok(v.clone());
        }
        let t = match self.params_now.get(&id) {
            Some(t) => t.clone(),
            None => self.const_tensor(id)?.clone(),
        };
        let v = Val {
            buf: self.constant(t.data),
            shape: t.shape,
        };
        let node = self.graph.node(id);
        if let Op::Param { .. } = node.op {
            self.plan.params.insert(node.name.clone(), v.buf);
        }
        self.const_bufs.insert(id, v.clone());
        Ok(v)
    }

    /// A value known on the host when the plan is built: a constant, or a training
    /// plan's parameter at that time. It decides FlexConv crops (a crop is a constant
    /// of the step) and gives shapes; never use it for values a step must read from
    /// the parameter's buffer.
    pub(super) fn host_value(&self, id: NodeIndex) -> Result<&Tensor<f32>, RunError> {
        match self.params_now.get(&id) {
            Some(t) => Ok(t),
            None => self.const_tensor(id),
        }
    }

    fn declared_shape(&self, id: NodeIndex) -> Result<Vec<usize>, RunError> {
        let node = self.graph.node(id);
        node.ty
            .shape
            .iter()
            .map(|d| eval_dim(d, &self.env).map(|v| v as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unsupported(node, "a data-dependent shape"))
    }

    /// Whether the kernel of `id` applies the ReLU that is its only user, so that the
    /// ReLU needs no kernel of its own (it aliases `id`'s buffer). A training step's
    /// batch norms and residual adds feed ReLUs this way: a sweep of the activation
    /// and a launch fewer each. `id`'s own value is then never seen, so it must have
    /// no other user and not be an output.
    fn relu_after(&mut self, id: NodeIndex) -> bool {
        let users = self.graph.users(id);
        let fuses = matches!(users[..], [u] if matches!(self.graph.node(u).op, Op::Relu))
            && !self.graph.outputs.contains(&id);
        if fuses {
            self.fused_relu.insert(users[0]);
        }
        fuses
    }

    /// Whether the kernel of `id` (a batch norm) also adds the value that its only
    /// user, an add, adds to it: then the add, and the ReLU after it (`relu_after`),
    /// alias `id`'s buffer. A ResNet block's second batch norm feeds its residual add
    /// so: a write and a read of the activation fewer. `id`'s own value is never seen
    /// (a batch norm's gradients read its input), so it must have no other user and
    /// not be an output, and the other operand must be lowered already. The add and
    /// the buffer of its other operand, when it fuses.
    fn add_after(&mut self, id: NodeIndex) -> Result<Option<(NodeIndex, BufId)>, RunError> {
        let users = self.graph.users(id);
        let [add] = users[..] else { return Ok(None) };
        let ops = self.graph.operands(add);
        let fuses = matches!(self.graph.node(add).op, Op::Add)
            && ops.len() == 2
            && ops.iter().filter(|&&o| o == id).count() == 1
            && !self.graph.outputs.contains(&id);
        let other = if ops.first() == Some(&id) {
            ops.get(1)
        } else {
            ops.first()
        };
        let Some(&other) = other.filter(|_| fuses) else {
            return Ok(None);
        };
        let same = self.graph.node(other).ty == self.graph.node(id).ty;
        if !same || !self.values.contains_key(&other) {
            return Ok(None);
        }
        self.fused_add.insert(add, id);
        Ok(Some((add, self.val(other)?.buf)))
    }

    fn lower(&mut self, id: NodeIndex) -> Result<Val, RunError> {
        let node = self.graph.node(id);
        let operands = self.graph.operands(id);
        let layer = node.name.clone();
        let v = self.target.vector;
        match &node.op {
            Op::Input { .. } | Op::Param { .. } | Op::CoordGrid { .. } | Op::Const { .. } => {
                unreachable!("inputs and constants are bound before lowering")
            }
            Op::FlexKernel { .. } => self.flex_kernel(id),
            Op::BnFold { .. } => self.bn_fold_weight(id),
            Op::LcFold => self.lc_fold(id),
            Op::MaskCrop { .. } | Op::Magnet { .. } | Op::GaussMask | Op::MaskMul => {
                self.flex_forward(id)
            }
            Op::FusedConv { .. } => self.fused_conv_split(id),
            Op::Train(t) => self.train_op(id, t),
            Op::Concat { axis } => {
                let shape = self.declared_shape(id)?;
                let outer: usize = shape[..*axis].iter().product();
                let total: usize = shape[*axis..].iter().product();
                let y = self.temp(shape);
                let mut offset = 0;
                for o in operands {
                    let x = self.val(o)?;
                    let chunk: usize = x.shape[*axis..].iter().product();
                    let k = ops::copy_block("concat", outer, chunk, total, offset);
                    self.emit("concat", k, vec![x.buf, y.buf], &layer);
                    offset += chunk;
                }
                Ok(y)
            }
            Op::Conv { .. } => unreachable!("every conv heads a chain"),
            // Its operand's kernel wrote max(·, 0) already.
            Op::Relu if self.fused_relu.contains(&id) => self.val(operands[0]),
            // The batch norm before it added the other operand.
            Op::Add if self.fused_add.contains_key(&id) => self.val(self.fused_add[&id]),
            Op::Scale { .. } | Op::Relu | Op::Gelu | Op::Add | Op::Mul => {
                let kind = match &node.op {
                    Op::Scale { factor } => MapKind::Scale(*factor as f32),
                    Op::Relu => MapKind::Relu,
                    Op::Gelu => MapKind::Gelu,
                    Op::Add => MapKind::Add {
                        relu: self.relu_after(id),
                    },
                    _ => MapKind::Mul,
                };
                let mut args = Vec::new();
                let mut shape = Vec::new();
                for o in operands {
                    let x = self.val(o)?;
                    shape = x.shape.clone();
                    args.push(x.buf);
                }
                let y = self.temp(shape);
                args.push(y.buf);
                let k = ops::map(node.op.name(), kind, y.shape.iter().product(), v);
                self.emit(node.op.name(), k, args, &layer);
                Ok(y)
            }
            Op::Linear { bias } => {
                let x = self.val(operands[0])?;
                let w = self.val(operands[1])?;
                let (o, f) = (w.shape[0], w.shape[1]);
                let bias_buf = if *bias {
                    self.val(operands[2])?.buf
                } else {
                    self.constant(vec![0.0; o])
                };
                let y = self.temp(vec![x.shape[0], o]);
                let args = vec![x.buf, w.buf, bias_buf, y.buf];
                if self.target.native == NativeConvs::Off {
                    let k = ops::linear("linear", x.shape[0], f, o, v);
                    self.emit("linear", k, args, &layer);
                } else {
                    let op = NativeOp::Linear {
                        batch: x.shape[0],
                        features: f,
                        outputs: o,
                    };
                    self.emit_native(op, args, &layer);
                }
                Ok(y)
            }
            Op::BatchNorm {
                eps,
                affine,
                running_stats,
                ..
            } => {
                let x = self.val(operands[0])?;
                let (outer, c) = (x.shape[0], x.shape[1]);
                let inner: usize = x.shape[2..].iter().product();
                if self.update_running {
                    self.bn_running_updates(id)?;
                }
                let (sb, tb) = if *running_stats && !self.training {
                    let (s, t) = self.bn_fold(&operands, *eps, *affine)?;
                    (self.constant(s), self.constant(t))
                } else {
                    // Batch statistics, in evaluation too.
                    let m = self.moments(operands[0], &layer)?;
                    let (s, t) = (self.temp(vec![c]).buf, self.temp(vec![c]).buf);
                    let mut args = vec![m];
                    if *affine {
                        args.push(self.val(operands[1])?.buf);
                        args.push(self.val(operands[2])?.buf);
                    }
                    args.extend([s, t]);
                    let k = batch_norm::scale_shift("bn_scale", c, *eps as f32, *affine);
                    self.emit("bn_scale", k, args, &layer);
                    (s, t)
                };
                let y = self.temp(x.shape.clone());
                let mut args = vec![x.buf, sb, tb];
                let residual = self.add_after(id)?;
                let relu = match residual {
                    Some((add, r)) => {
                        args.push(r);
                        self.relu_after(add)
                    }
                    None => self.relu_after(id),
                };
                args.push(y.buf);
                let shape = (outer, c, inner);
                let k = ops::affine_channel("batchnorm", shape, residual.is_some(), relu, v);
                self.emit("batchnorm", k, args, &layer);
                Ok(y)
            }
            Op::Dropout { p } if self.training => self.dropout_forward(id, *p),
            Op::Dropout { .. } => self.val(operands[0]),
            Op::Flatten => {
                let x = self.val(operands[0])?;
                let b = x.shape[0];
                let rest = x.shape.iter().product::<usize>() / b.max(1);
                Ok(Val {
                    buf: x.buf,
                    shape: vec![b, rest],
                })
            }
            Op::Pool(spec) => self.pool(operands[0], spec, &layer),
            Op::Slot { active, pool, .. } => {
                if *active {
                    self.pool(operands[0], pool, &layer)
                } else {
                    self.val(operands[0])
                }
            }
            Op::GlobalAvgPool => {
                let x = self.val(operands[0])?;
                let planes = x.shape[0] * x.shape[1];
                let inner: usize = x.shape[2..].iter().product();
                let y = self.temp(vec![x.shape[0], x.shape[1]]);
                let k = ops::row_mean("global_avg_pool", planes, inner, v);
                self.emit("global_avg_pool", k, vec![x.buf, y.buf], &layer);
                Ok(y)
            }
            Op::LastStep => {
                let x = self.val(operands[0])?;
                let (b, c, t) = (x.shape[0], x.shape[1], x.shape[2]);
                let y = self.temp(vec![b, c]);
                let k = ops::strided_take("last", b * c, t, t - 1);
                self.emit("last", k, vec![x.buf, y.buf], &layer);
                Ok(y)
            }
            Op::ShortcutA {
                stride,
                out_channels,
            } => {
                let x = self.val(operands[0])?;
                let s = *stride as usize;
                let co = *out_channels as usize;
                let (hw, st) = lift(&x.shape, [s, s]);
                let out = [hw[0].div_ceil(st[0]), hw[1].div_ceil(st[1])];
                let mut shape = vec![x.shape[0], co];
                shape.extend(if x.shape.len() == 3 {
                    vec![out[1]]
                } else {
                    out.to_vec()
                });
                let y = self.temp(shape);
                self.shortcut(&x.shape, co, s, false, vec![x.buf, y.buf], &layer);
                Ok(y)
            }
        }
    }
}

/// For each count of steps run (0 to `steps + 1`), the outputs that `ready` (each
/// output's count, as [`Plan::output_ready`] gives it) makes final then.
pub fn due_after(ready: &[usize], steps: usize) -> Vec<Vec<usize>> {
    let mut due: Vec<Vec<usize>> = vec![Vec::new(); steps + 2];
    for (i, &at) in ready.iter().enumerate() {
        due[at].push(i);
    }
    due
}
