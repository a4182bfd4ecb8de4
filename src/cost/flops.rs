//! Nominal floating-point operations of one forward pass, counted from the graph, the
//! same for every backend (so throughput figures compare across backends and with
//! other frameworks):
//!
//! | op | counted |
//! |---|---|
//! | conv, fused conv | `2·N·Co·out·(Ci/groups)·taps` (2 per multiply-add, as a direct conv does it, whatever algorithm runs), `+1` per output for a bias and per epilogue step |
//! | linear | `2·B·F·O`, `+B·O` with a bias |
//! | batch norm | 2 per element (scale and shift) |
//! | relu, gelu, add, mul, scale | 1 per output element |
//! | pool | one per window tap per output (`+1` for the average's division) |
//! | global average pool | one per input element |
//! | data movement (flatten, concat, shortcut, last step, dropout, slots that do not pool) | 0 |
//!
//! Only nodes that depend on a model input count: parameter-only subgraphs (FlexConv
//! kernel synthesis, folds) run once when the model is loaded, not per forward.
//! A data-dependent size (a cropped FlexConv kernel whose crop is not known at compile
//! time) counts at its bound.

use crate::ir::graph::Graph;
use crate::ir::op::{Op, PoolKind, PoolSpec, TrainOp};
use crate::ir::types::Dim;
use crate::runtime::bind::{bind_inputs, eval_dim, DimEnv};
use crate::runtime::RunError;
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeSet;

/// Nominal flops of one forward of `graph` on inputs of `input_shapes`.
pub fn graph_flops(graph: &Graph, input_shapes: &[Vec<usize>]) -> Result<u64, RunError> {
    let shapes: Vec<&[usize]> = input_shapes.iter().map(Vec::as_slice).collect();
    let env = bind_inputs(graph, &shapes)?;
    let order = graph
        .topo_order()
        .map_err(|e| RunError::new(e.to_string()))?;
    let mut runtime = BTreeSet::new();
    let mut total = 0u64;
    for &id in &order {
        let ops = graph.operands(id);
        let depends = matches!(graph.node(id).op, Op::Input { .. })
            || ops.iter().any(|o| runtime.contains(o));
        if !depends {
            continue;
        }
        runtime.insert(id);
        total = total.saturating_add(node_flops(graph, id, &ops, &env));
    }
    Ok(total)
}

/// Sizes of a node's value (data-dependent dimensions at their bound).
fn dims(graph: &Graph, id: NodeIndex, env: &DimEnv) -> Vec<u64> {
    graph
        .node(id)
        .ty
        .shape
        .iter()
        .map(|d| match d {
            Dim::Dyn { max } => *max,
            other => eval_dim(other, env).unwrap_or(0),
        })
        .collect()
}

fn numel(graph: &Graph, id: NodeIndex, env: &DimEnv) -> u64 {
    dims(graph, id, env).iter().product()
}

fn pool_flops(spec: &PoolSpec, out: u64) -> u64 {
    let taps: u64 = spec.kernel.iter().product();
    let divide = u64::from(spec.kind == PoolKind::Avg);
    out * (taps + divide)
}

fn node_flops(graph: &Graph, id: NodeIndex, ops: &[NodeIndex], env: &DimEnv) -> u64 {
    let out = numel(graph, id, env);
    match &graph.node(id).op {
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Const { .. }
        | Op::CoordGrid { .. }
        | Op::Dropout { .. }
        | Op::Flatten
        | Op::LastStep
        | Op::Concat { .. }
        | Op::ShortcutA { .. } => 0,
        // Kernel synthesis and folds read parameters only; they count when (unusually)
        // they depend on an input, as one flop per output element.
        Op::MaskCrop { .. }
        | Op::Magnet { .. }
        | Op::FlexKernel { .. }
        | Op::GaussMask
        | Op::MaskMul
        | Op::LcFold
        | Op::BnFold { .. } => out,
        Op::Scale { .. } | Op::Relu | Op::Gelu | Op::Add | Op::Mul => out,
        Op::BatchNorm { .. } => 2 * out,
        Op::Pool(spec) => pool_flops(spec, out),
        Op::Slot { active, pool, .. } => {
            if *active {
                pool_flops(pool, out)
            } else {
                0
            }
        }
        Op::GlobalAvgPool => numel(graph, ops[0], env),
        Op::Linear { bias } => {
            let x = dims(graph, ops[0], env);
            let features = x.last().copied().unwrap_or(0);
            2 * out * features + if *bias { out } else { 0 }
        }
        Op::Conv(c) => conv_flops(graph, ops, out, c.bias, 0, env),
        Op::FusedConv { conv, epilogue } => {
            conv_flops(graph, ops, out, conv.bias, epilogue.len() as u64, env)
        }
        Op::Train(t) => train_flops(graph, t, ops, out, env),
    }
}

/// A backward op costs what its forward does: the same taps, scattered instead of
/// gathered. Counted from the upstream gradient, the forward's output.
fn train_flops(graph: &Graph, op: &TrainOp, ops: &[NodeIndex], out: u64, env: &DimEnv) -> u64 {
    let per_tap = |dy: NodeIndex, w: NodeIndex| {
        let w = dims(graph, w, env);
        2 * numel(graph, dy, env) * w[1..].iter().product::<u64>()
    };
    match op {
        TrainOp::ConvBackwardData(_) => per_tap(ops[0], ops[1]),
        TrainOp::ConvBackwardFilter(_) => per_tap(ops[1], ops[2]),
        TrainOp::LinearBackwardData => 2 * out * dims(graph, ops[0], env)[1],
        TrainOp::LinearBackwardFilter => 2 * out * dims(graph, ops[0], env)[0],
        // One multiply-add per (output element, basis row): J from the coefficients
        // `[Co, J, …]` or the basis `[J, …]`.
        TrainOp::LcFoldBackwardBasis => 2 * numel(graph, ops[0], env) * dims(graph, ops[1], env)[1],
        TrainOp::LcFoldBackwardCoeff => 2 * numel(graph, ops[0], env) * dims(graph, ops[1], env)[0],
        TrainOp::CrossEntropy { .. }
        | TrainOp::CrossEntropyBackward { .. }
        | TrainOp::BatchNormBackwardData { .. }
        | TrainOp::BatchNormBackwardGamma { .. }
        | TrainOp::RunningStatUpdate { .. } => 4 * numel(graph, ops[0], env),
        TrainOp::SumToChannels | TrainOp::GlobalAvgPoolBackward => numel(graph, ops[0], env),
        TrainOp::PoolBackward(spec) => pool_flops(spec, numel(graph, ops[1], env)),
        TrainOp::ReluBackward | TrainOp::GeluBackward | TrainOp::DropoutMask { .. } => out,
        // The whole MAGNet backward, about twice its forward, which the output linear
        // `V` `[O, H]` (the second-to-last operand) dominates.
        TrainOp::MagnetBackward { .. } => {
            let v = dims(graph, ops[ops.len() - 2], env);
            4 * numel(graph, ops[0], env) * v.get(1).copied().unwrap_or(1)
        }
        TrainOp::GaussMaskBackward | TrainOp::MaskMulBackwardMask => 4 * numel(graph, ops[0], env),
        TrainOp::ReshapeLike
        | TrainOp::LastStepBackward
        | TrainOp::Slice { .. }
        | TrainOp::ShortcutABackward { .. } => 0,
        // The Gram matrix of the N stacked filters, 2·N per value (twice for the
        // backward's product with B).
        TrainOp::OrthoPenalty { .. } | TrainOp::OrthoPenaltyBackward { .. } => {
            let n: u64 = ops.iter().map(|&o| dims(graph, o, env)[0]).sum();
            let values: u64 = ops.iter().map(|&o| numel(graph, o, env)).sum();
            let passes = if matches!(op, TrainOp::OrthoPenalty { .. }) {
                2
            } else {
                4
            };
            passes * n * values
        }
        TrainOp::AntialiasPenalty(_)
        | TrainOp::AntialiasPenaltyBackward { .. }
        | TrainOp::NormPenalty { .. }
        | TrainOp::NormPenaltyBackward { .. } => {
            2 * ops.iter().map(|&o| numel(graph, o, env)).sum::<u64>()
        }
    }
}

fn conv_flops(
    graph: &Graph,
    ops: &[NodeIndex],
    out: u64,
    bias: bool,
    epilogue: u64,
    env: &DimEnv,
) -> u64 {
    // The weight is [Co, Ci/groups, k…]: one output reads the product of the rest.
    let w = dims(graph, ops[1], env);
    let per_output: u64 = w[1..].iter().product();
    2 * out * per_output + out * (u64::from(bias) + epilogue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::compile_str;
    use crate::eval::Options;

    fn graph(src: &str) -> Graph {
        compile_str("t.fnet", src, &Options::default())
            .map(|(_, m)| m.graph)
            .unwrap_or_else(|r| panic!("{}", r.render()))
    }

    #[test]
    fn conv_counts_two_per_multiply_add() {
        let g = graph(
            "model c {\n  input x: f32[B, 32, 32, 32]\n  return x |> conv2d(32, 3, padding: 1, bias: false)\n}",
        );
        let f = graph_flops(&g, &[vec![64, 32, 32, 32]]).unwrap();
        assert_eq!(f, 2 * 64 * 32 * 32 * 32 * 32 * 9);
        // Same as the OpenCL conv kernel's own count.
        let spec = crate::kernel_ir::conv::ConvSpec {
            n: 64,
            ci: 32,
            h: 32,
            w: 32,
            co: 32,
            k: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [(1, 1), (1, 1)],
            residual: false,
            relu: false,
        };
        assert_eq!(f, spec.flops());
    }

    #[test]
    fn elementwise_linear_and_pools_count() {
        let g = graph(
            "model m {\n  input x: f32[B, 4, 8, 8]\n  return x |> relu |> global_avg_pool |> linear(10)\n}",
        );
        let b = 3u64;
        let relu = b * 4 * 64;
        let gap = b * 4 * 64;
        let linear = 2 * b * 4 * 10 + b * 10;
        assert_eq!(
            graph_flops(&g, &[vec![3, 4, 8, 8]]).unwrap(),
            relu + gap + linear
        );
    }

    #[test]
    fn resnet20_is_about_41_mflops_per_sample() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let g = crate::driver::compile_file(
            &root.join("examples/resnet20_cifar10.fnet"),
            &Options::default(),
        )
        .map(|(_, m)| m.graph)
        .unwrap_or_else(|r| panic!("{}", r.render()));
        let one = graph_flops(&g, &[vec![1, 3, 32, 32]]).unwrap();
        // 40.55 M multiply-adds in the convs and the linear layer (the usual figure).
        assert!((81_000_000..83_500_000).contains(&one), "{one}");
        assert_eq!(graph_flops(&g, &[vec![64, 3, 32, 32]]).unwrap(), 64 * one);
    }
}
