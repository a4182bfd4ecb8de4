//! How close a test step brings a ReLU input to its kink. A gradient is discontinuous
//! there, so an input within f32 rounding of zero lets any correct f32 backend land on
//! either side, and whole gradients then differ from the exact (f64) ones: LC-ResNet-20
//! at seed 104 put one ReLU input 3.4e-7 from zero, and a change of OpenCL's summation
//! order moved `conv1.coeff`'s gradient by 7.7e-3. Tests that compare a backend's step
//! with the interpreter's run at steps whose margin is clear ([`CLEAR`]).

#![allow(dead_code)]

use fnet::backend::{Backend, ReferenceBackend};
use fnet::ir::graph::Graph;
use fnet::ir::op::Op;
use fnet::runtime::{Mode, ParamStore};
use fnet::tensor::Tensor;

/// A margin several times f32's rounding of activations near 1 (over a million ReLU
/// inputs, as FlexNet-7's at batch 2, the smallest is near 1e-6).
pub const CLEAR: f64 = 4e-7;

/// The smallest nonzero |input| over every ReLU of `graph` (a model or training
/// graph) run in training mode in f64 on `params` and input `x` with dropout seed
/// `seed`. Exact zeros (a causal conv's padding, an all-zero input row) are exact in
/// f32 too.
pub fn relu_margin(graph: &Graph, params: &ParamStore<f32>, x: &Tensor<f32>, seed: u64) -> f64 {
    let mut probe = graph.clone();
    let relu_inputs: Vec<_> = probe
        .node_ids()
        .filter(|&n| matches!(probe.node(n).op, Op::Relu))
        .map(|n| probe.operands(n)[0])
        .collect();
    if relu_inputs.is_empty() {
        return f64::INFINITY;
    }
    probe.outputs = relu_inputs;
    let params64: ParamStore<f64> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.cast::<f64>()))
        .collect();
    let x = x.cast::<f64>();
    let mut reference = ReferenceBackend
        .prepare_f64(probe, params64, std::slice::from_ref(&x.shape))
        .unwrap_or_else(|e| panic!("{e}"));
    reference.set_mode(Mode::Train).unwrap();
    reference.set_seed(seed).unwrap();
    let values = reference.forward(&[x]).unwrap_or_else(|e| panic!("{e}"));
    values
        .iter()
        .flat_map(|t| t.data.iter())
        .filter(|v| **v != 0.0)
        .fold(f64::INFINITY, |m, v| m.min(v.abs()))
}

/// The first of `first`, `first + 1000`, … (eight tries) whose step keeps every ReLU
/// input clear of its kink; `margin_at(seed)` is [`relu_margin`] of that seed's step.
pub fn first_clear_seed(first: u64, margin_at: impl Fn(u64) -> f64) -> u64 {
    (0..8)
        .map(|k| first + 1000 * k)
        .find(|&s| {
            let m = margin_at(s);
            eprintln!("seed {s}: smallest ReLU input {m:e}");
            m >= CLEAR
        })
        .unwrap_or_else(|| panic!("no seed from {first} keeps the ReLU inputs off their kinks"))
}
