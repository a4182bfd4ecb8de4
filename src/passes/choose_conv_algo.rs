//! `choose-conv-algo`: picks direct, im2col + GEMM or FFT for every conv by the
//! analytic cost model (`crate::cost`), stores the choice in the conv's `algo` and the
//! estimates in `Graph::conv_costs` (the IR printer shows them on the conv line).
//!
//! Precedence, most specific first: the program's explicit `algo:` on a layer, then
//! the environment variable `FNET_CONV_ALGO=direct|im2col|fft|auto` for every conv
//! left on `auto`, then the cost model. An `FNET_CONV_ALGO=fft` that cannot run a conv
//! (strided, dilated, grouped, or not causal-1D / same-2D-odd) falls back to the
//! model's choice for that conv, with a note.
//!
//! The table is the one of `PassContext::cost_backend`: the reference interpreter's by
//! default, OpenCL's on a CPU or a GPU when compiling for that device
//! (`fnetc run/bench --backend opencl`, `fnetc compile --cost-model`).
//!
//! Sizes: the batch is the input's if known, else `PassContext::batch` (`--batch`,
//! default 1). A FlexConv kernel whose crop is data-dependent (`<=k` in its type) is
//! costed at its bound `k`, the horizon: the crop grows while training, and with
//! weights bound `fuse-mask` replaces it by the known cropped size first. A symbolic
//! spatial size is costed at `NOMINAL_LEN`. These are forward convs only: the
//! backward convs (dX, dW) get their own choice when autodiff exists.

use super::manager::{CompileMode, Pass, PassContext};
use crate::cost::{ConvCost, ConvShape, CostTable, Decider};
use crate::ir::graph::Graph;
use crate::ir::op::{ConvAlgo, ConvAttrs, Op};
use crate::ir::train_ops::TrainOp;
use crate::ir::types::Dim;
use petgraph::stable_graph::NodeIndex;

pub const NAME: &str = "choose-conv-algo";

/// The environment variable that overrides the cost model on `auto` convs.
pub const ENV: &str = "FNET_CONV_ALGO";

/// The size a symbolic spatial dimension is costed at.
pub const NOMINAL_LEN: u64 = 1024;

pub struct ChooseConvAlgo;

/// `FNET_CONV_ALGO` parsed: `None` when unset, empty or `auto`.
pub fn env_override() -> Result<Option<ConvAlgo>, String> {
    match std::env::var(ENV) {
        Err(_) => Ok(None),
        Ok(v) => parse_algo(&v),
    }
}

pub fn parse_algo(v: &str) -> Result<Option<ConvAlgo>, String> {
    match v.trim() {
        "" | "auto" => Ok(None),
        "direct" => Ok(Some(ConvAlgo::Direct)),
        "im2col" => Ok(Some(ConvAlgo::Im2col)),
        "fft" => Ok(Some(ConvAlgo::Fft)),
        "winograd2" => Ok(Some(ConvAlgo::Winograd2)),
        "winograd4" => Ok(Some(ConvAlgo::Winograd4)),
        other => Err(format!(
            "{ENV}={other}: expected one of direct, im2col, fft, winograd2, winograd4, auto"
        )),
    }
}

/// The cost-model view of conv `id`: its shape with every size resolved, whether the
/// kernel size is a bound rather than known, and whether a spatial size was nominal.
pub fn conv_shape(graph: &Graph, id: NodeIndex, batch: u64) -> Option<(ConvShape, bool, bool)> {
    let attrs = graph.node(id).op.conv_attrs()?;
    let ops = graph.operands(id);
    shape_of(graph, attrs, [ops[0], ops[1]], batch)
}

/// Which gradient of its forward conv a backward conv computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvGradient {
    /// `conv_backward_data`: the input's.
    Data,
    /// `conv_backward_filter`: the weight's.
    Filter,
}

/// The cost-model view of the forward conv of the backward conv `id`
/// (`conv_backward_data`: operands dy, weight, x; `conv_backward_filter`: x, dy,
/// weight), as [`conv_shape`] gives it, with which gradient `id` computes and
/// whether the kernel size is a bound (a FlexConv's crop, known when the plan is
/// built).
pub fn backward_conv_shape(
    graph: &Graph,
    id: NodeIndex,
    batch: u64,
) -> Option<(ConvShape, ConvGradient, bool)> {
    let ops = graph.operands(id);
    let (attrs, x, w, which) = match &graph.node(id).op {
        Op::Train(TrainOp::ConvBackwardData(a)) => (a, *ops.get(2)?, ops[1], ConvGradient::Data),
        Op::Train(TrainOp::ConvBackwardFilter(a)) => {
            (a, ops[0], *ops.get(2)?, ConvGradient::Filter)
        }
        _ => return None,
    };
    let (shape, bound, _) = shape_of(graph, attrs, [x, w], batch)?;
    Some((shape, which, bound))
}

/// [`conv_shape`] of a conv with `attrs` on the input `x` with the weight `w`.
fn shape_of(
    graph: &Graph,
    attrs: &ConvAttrs,
    [x, w]: [NodeIndex; 2],
    batch: u64,
) -> Option<(ConvShape, bool, bool)> {
    let (x, w) = (&graph.node(x).ty.shape, &graph.node(w).ty.shape);
    let (mut bound, mut nominal) = (false, false);
    let batch = x[0].known().unwrap_or(batch);
    let input = x[2..]
        .iter()
        .map(|d| match d {
            Dim::Known(n) => *n,
            Dim::Dyn { max } => *max,
            Dim::Sym(_) => {
                nominal = true;
                NOMINAL_LEN
            }
        })
        .collect();
    let kernel = w[2..]
        .iter()
        .map(|d| match d {
            Dim::Known(k) => Some(*k),
            Dim::Dyn { max } => {
                bound = true;
                Some(*max)
            }
            Dim::Sym(_) => None,
        })
        .collect::<Option<Vec<u64>>>()?;
    let shape = ConvShape {
        batch,
        ci: x[1].known()?,
        co: w[0].known()?,
        input,
        kernel,
        stride: attrs.stride.clone(),
        dilation: attrs.dilation.clone(),
        groups: attrs.groups,
        padding: attrs.padding.clone(),
    };
    Some((shape, bound, nominal))
}

/// The algorithm a conv runs and who chose it, by the precedence above.
pub fn decide(
    written: ConvAlgo,
    env: Option<ConvAlgo>,
    shape: &ConvShape,
    table: &CostTable,
) -> (ConvAlgo, Decider) {
    let model = table.estimate(shape).cheapest();
    match (written, env) {
        (ConvAlgo::Auto, None) => (model, Decider::Model),
        (ConvAlgo::Auto, Some(ConvAlgo::Fft)) if !shape.fft_applicable() => (model, Decider::Model),
        (ConvAlgo::Auto, Some(e)) => (e, Decider::Env),
        (w, _) => (w, Decider::Program),
    }
}

impl Pass for ChooseConvAlgo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "picks direct, im2col or FFT for each conv by the fitted cost model (algo:, FNET_CONV_ALGO override)"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let env = env_override()?;
        let table = CostTable::of(ctx.cost_backend);
        let mut rewrites = 0;
        let convs: Vec<NodeIndex> = graph
            .node_ids()
            .filter(|&n| graph.node(n).op.conv_attrs().is_some())
            .collect();
        for id in convs {
            let Some((shape, bound, nominal)) = conv_shape(graph, id, ctx.batch) else {
                continue;
            };
            // A training graph's FlexConv kernel changes size as its mask learns: the
            // costing at the horizon (its largest size) would pick the FFT for crops
            // that run a few taps wide, so the plan, built for the current crops,
            // decides each time instead.
            if bound && ctx.mode == CompileMode::Training {
                continue;
            }
            let name = graph.node(id).name.clone();
            // A conv this pass already decided counts as `auto` again (idempotence).
            let written = match (graph.conv_costs.get(&name), graph.node(id).op.conv_attrs()) {
                (Some(c), _) if c.decider != Decider::Program => ConvAlgo::Auto,
                (_, Some(attrs)) => attrs.algo,
                _ => continue,
            };
            let (chosen, decider) = decide(written, env, &shape, table);
            if env == Some(ConvAlgo::Fft) && decider == Decider::Model {
                ctx.note(
                    &name,
                    NAME,
                    format!(
                        "{ENV}=fft does not apply to this conv; the cost model chose {}",
                        chosen.name()
                    ),
                );
            }
            if decider == Decider::Program && chosen == ConvAlgo::Fft && !shape.fft_applicable() {
                ctx.note(&name, NAME, "algo: fft does not apply to this conv (stride, dilation, groups or padding); it runs direct");
            }
            if nominal {
                ctx.note(
                    &name,
                    NAME,
                    format!("symbolic spatial size costed at {NOMINAL_LEN}"),
                );
            }
            let mut op = graph.node(id).op.clone();
            if let Some(attrs) = op.conv_attrs_mut().filter(|c| c.algo != chosen) {
                attrs.algo = chosen;
                graph.replace_op(id, op)?;
                rewrites += 1;
            }
            let estimate = table.estimate(&shape);
            graph.conv_costs.insert(
                name,
                ConvCost {
                    shape,
                    estimate,
                    chosen,
                    decider,
                    kernel_is_bound: bound,
                },
            );
        }
        Ok(rewrites)
    }
}
