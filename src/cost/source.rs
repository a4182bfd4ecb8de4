//! A conv of the cost model's grid as a one-layer `.fnet` program with its `algo:`
//! fixed, which the backends' timing functions compile and lower as a model would be
//! (`opencl::conv_timing`, `backend::jit_timing`).

use super::ConvShape;
use crate::ir::op::{ConvAlgo, Padding};

fn ints(v: &[u64]) -> String {
    let parts: Vec<String> = v.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// The one-conv program of `shape` with `algo` fixed; `None` for padding the language
/// cannot write (explicit and uneven).
pub fn conv_source(shape: &ConvShape, algo: ConvAlgo) -> Option<String> {
    let padding = match &shape.padding {
        Padding::Same => "same".to_string(),
        Padding::Causal => "causal".to_string(),
        Padding::Explicit(p) if p.iter().all(|(lo, hi)| lo == hi) => {
            ints(&p.iter().map(|(lo, _)| *lo).collect::<Vec<_>>())
        }
        Padding::Explicit(_) => return None,
    };
    let mut dims = vec![shape.batch.to_string(), shape.ci.to_string()];
    dims.extend(shape.input.iter().map(u64::to_string));
    Some(format!(
        "model conv_timing {{\n  input x: f32[{}]\n  return x |> conv{}d({}, {}, stride: {}, dilation: {}, groups: {}, padding: {padding}, bias: false, algo: {})\n}}\n",
        dims.join(", "),
        shape.input.len(),
        shape.co,
        ints(&shape.kernel),
        ints(&shape.stride),
        ints(&shape.dilation),
        shape.groups,
        algo.name(),
    ))
}
