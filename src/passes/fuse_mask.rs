//! Mask fusion: a FlexConv's kernel synthesis becomes one op.
//!
//! Elaboration builds each FlexConv kernel from pieces: `coord_grid` → `mask_crop`
//! (mask parameters) → `magnet` (the kernel network) → `gauss_mask` → `mask_mul` →
//! `scale` (the sampling-rate norm). This pass recognises that chain and replaces it
//! by one `flex_kernel` op with the same operands (mask parameters, then the MAGNet
//! parameters), so a backend synthesises the kernel in one go, on the cropped grid
//! only. When the mask parameters are constants (a frozen mask, materialised by
//! `materialize-frozen`, or any mask when weights are bound for inference), the crop
//! is computed here and the op records its extent, so the kernel and the conv get
//! fully known types instead of data-dependent ones.
//!
//! Inference with bound weights goes further: every operand is then known, so the
//! kernel is evaluated at compile time and the op is replaced by an `Op::Const`
//! holding the fixed, cropped kernel `[Cout, Cin, k…]`, computed in the precision the
//! graph will run in (`PassContext::precision`: f64 for `fnetc run --f64`). The kernel network and its
//! parameters leave the graph: it costs nothing at run time. The conv keeps its
//! padding attribute: `same` and `causal` are resolved from the kernel it is given,
//! and the unfused graph already handed it the cropped kernel, so outputs are
//! unchanged (`same` pads `(k−1)/2` per side of an odd, symmetric crop; `causal` pads
//! `k−1` on the left of a crop that keeps the most recent taps).
//!
//! Training graphs are fused but never folded: the MAGNet parameters stay parameters,
//! and a learnable mask keeps a crop decided at run time.

use super::manager::{CompileMode, Pass, PassContext};
use crate::ir::constant::ConstValue;
use crate::ir::graph::{Graph, Node};
use crate::ir::op::Op;
use crate::ir::types::{DType, TensorType};
use crate::runtime::flex_kernel;
use crate::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;

pub struct FuseMask;

/// One recognised kernel-synthesis chain.
struct Chain {
    magnet: NodeIndex,
    /// The last node of the chain, whose users receive the kernel.
    end: NodeIndex,
    horizon: Vec<u64>,
    /// (threshold, causal, mask parameters) for a masked FlexConv.
    mask: Option<(f64, bool, NodeIndex)>,
    scale: f64,
}

fn single_user(graph: &Graph, n: NodeIndex) -> Option<NodeIndex> {
    let users = graph.users(n);
    (users.len() == 1 && !graph.outputs.contains(&n)).then(|| users[0])
}

/// Matches the chain that ends at (or after) the `magnet` node `m`.
fn match_chain(graph: &Graph, m: NodeIndex) -> Option<Chain> {
    let ops = graph.operands(m);
    let first = *ops.first()?;
    let (horizon, mask, mut end) = match &graph.node(first).op {
        Op::CoordGrid { horizon } => (horizon.clone(), None, m),
        Op::MaskCrop { threshold, causal } => {
            let crop_ops = graph.operands(first);
            let Op::CoordGrid { horizon } = &graph.node(crop_ops[0]).op else {
                return None;
            };
            let params = crop_ops[1];
            // magnet → mask_mul(magnet, gauss_mask(crop, params)), nothing else reading
            // the intermediate values.
            let mul = single_user(graph, m)?;
            let mul_ops = graph.operands(mul);
            if graph.node(mul).op != Op::MaskMul || mul_ops[0] != m {
                return None;
            }
            let gauss = mul_ops[1];
            if graph.node(gauss).op != Op::GaussMask
                || graph.operands(gauss) != [first, params]
                || single_user(graph, gauss) != Some(mul)
                || graph.users(first).iter().any(|&u| u != m && u != gauss)
            {
                return None;
            }
            (horizon.clone(), Some((*threshold, *causal, params)), mul)
        }
        _ => return None,
    };
    let mut scale = 1.0;
    if let Some(s) = single_user(graph, end) {
        if let Op::Scale { factor } = graph.node(s).op {
            scale = factor;
            end = s;
        }
    }
    Some(Chain {
        magnet: m,
        end,
        horizon,
        mask,
        scale,
    })
}

/// The compile-time value of `n`, if it has one: a constant, or (inference only) a
/// parameter whose weights are bound.
fn known_value(graph: &Graph, ctx: &PassContext, n: NodeIndex) -> Option<Tensor<f32>> {
    match &graph.node(n).op {
        Op::Const { value, .. } => Some((**value).clone()),
        Op::Param { .. } if ctx.mode == CompileMode::Inference => ctx
            .weights
            .as_ref()
            .and_then(|w| w.get(&graph.node(n).name))
            .cloned(),
        _ => None,
    }
}

fn dims(v: &[u64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    parts.join("x")
}

/// The kernel from its known operands, evaluated in `precision`. The operands are f32
/// (bound weights), so an f64 fold starts from exactly the values an f64 run reads.
fn fold_kernel(
    op: &Op,
    values: &[Tensor<f32>],
    precision: DType,
) -> Result<ConstValue, crate::runtime::RunError> {
    Ok(match precision {
        DType::F32 => ConstValue::new(flex_kernel::eval(op, &values.iter().collect::<Vec<_>>())?),
        DType::F64 => {
            let wide: Vec<Tensor<f64>> = values.iter().map(Tensor::cast).collect();
            ConstValue::exact(flex_kernel::eval(op, &wide.iter().collect::<Vec<_>>())?)
        }
    })
}

fn fuse(graph: &mut Graph, ctx: &mut PassContext, c: &Chain) -> Result<(), String> {
    let magnet = graph.node(c.magnet).clone();
    let Op::Magnet {
        layers,
        hidden,
        out_channels,
        in_channels,
    } = magnet.op
    else {
        return Err(format!("`{}` is not a magnet", magnet.name));
    };
    let mut operands: Vec<NodeIndex> = c.mask.iter().map(|m| m.2).collect();
    operands.extend(&graph.operands(c.magnet)[1..]);
    let extent = match c.mask {
        Some((threshold, causal, params)) => match known_value(graph, ctx, params) {
            Some(v) => Some(
                flex_kernel::crop_extent(&c.horizon, &v, threshold, causal)
                    .map_err(|e| format!("`{}`: {}", magnet.name, e.message))?,
            ),
            None => None,
        },
        None => None,
    };
    let op = Op::FlexKernel {
        layers,
        hidden,
        out_channels,
        in_channels,
        horizon: c.horizon.clone(),
        threshold: c.mask.map(|m| m.0),
        causal: c.mask.is_some_and(|m| m.1),
        scale: c.scale,
        extent: extent.clone(),
    };
    let layer = magnet.name.trim_end_matches(".kernel").to_string();
    let mut text = match (&extent, c.mask) {
        (_, None) => format!("kernel {} (no mask, no crop)", dims(&c.horizon)),
        (Some(e), _) => format!("kernel {} -> cropped {}", dims(&c.horizon), dims(e)),
        (None, Some(_)) => format!(
            "kernel {} -> cropped at run time (learnable mask)",
            dims(&c.horizon)
        ),
    };
    // Inference with bound weights: evaluate the kernel now.
    let values: Option<Vec<Tensor<f32>>> = (ctx.mode == CompileMode::Inference
        && ctx.weights.is_some())
    .then(|| {
        operands
            .iter()
            .map(|&o| known_value(graph, ctx, o))
            .collect()
    })
    .flatten();
    let new_node = if let Some(values) = values {
        let kernel = fold_kernel(&op, &values, ctx.precision)
            .map_err(|e| format!("folding `{}`: {}", magnet.name, e.message))?;
        let shape: Vec<u64> = kernel.shape.iter().map(|&d| d as u64).collect();
        text += ", folded to a constant (bound weights)";
        let node = Node {
            ty: TensorType::known(DType::F32, &shape),
            op: Op::Const {
                value: kernel,
                origin: format!("fuse-mask, {layer} kernel folded"),
            },
            name: magnet.name.clone(),
            span: magnet.span,
        };
        graph.add(node, &[])
    } else {
        graph.add_op(op, &operands, magnet.name.clone(), magnet.span)?
    };
    // The fused kernel may have a known crop where the chain's type said `<=k`.
    graph.replace_uses_refining(c.end, new_node)?;
    ctx.note(layer, "fuse-mask", text);
    Ok(())
}

impl Pass for FuseMask {
    fn name(&self) -> &'static str {
        "fuse-mask"
    }

    fn about(&self) -> &'static str {
        "fuse FlexConv kernel synthesis (grid, crop, MAGNet, mask, scale) into one op; fold it with bound weights"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String> {
        let magnets: Vec<NodeIndex> = graph
            .node_ids()
            .filter(|&n| matches!(graph.node(n).op, Op::Magnet { .. }))
            .collect();
        let mut fused = 0;
        for m in magnets {
            if let Some(chain) = match_chain(graph, m) {
                fuse(graph, ctx, &chain)?;
                fused += 1;
            }
        }
        if fused > 0 {
            // The old chains (and, after a fold, the kernel networks' parameters) no
            // longer feed anything.
            graph.remove_dead();
            graph.retype()?;
        }
        Ok(fused)
    }
}
