// The body of tests/jit_streaming.rs and tests/opencl_streaming.rs: each brings
// `backend()` (whose `prepare_plan` gives a `P`), `example`, `input`, `program` and
// `perturbed_weights` into scope, names its prepared type `P`, and includes this file.

use fnet::autodiff::{differentiate, Loss, TrainingGraph};
use fnet::backend::Prepared;
use fnet::runtime::ParamStore;
use fnet::tensor::Tensor;

fn labels(n: usize, classes: usize) -> Tensor<f32> {
    Tensor::from_vec(vec![n], (0..n).map(|i| (i % classes) as f32).collect()).unwrap()
}

/// The training graph of `m` prepared on the JIT for batch `n`, and its inputs.
fn prepared(m: &fnet::eval::Module, n: usize) -> (TrainingGraph, P, Vec<Tensor<f32>>) {
    let tg = differentiate(&m.graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
    let params: ParamStore<f32> = perturbed_weights(&m.graph, 5);
    let mut shape = vec![n];
    let x_ty = &m.graph.node(m.graph.inputs[0]).ty.shape;
    shape.extend(x_ty[1..].iter().map(|d| d.known().unwrap() as usize));
    let classes = m.graph.node(m.graph.outputs[0]).ty.shape[1]
        .known()
        .unwrap() as usize;
    let inputs = vec![input(&shape, 9), labels(n, classes)];
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let jit = backend()
        .prepare_plan(&tg.graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    (tg, jit, inputs)
}

/// Streams one step on `jit` and checks it against a plain run of the same step on
/// `plain` (prepared alike: a run updates the running statistics the next reads);
/// returns the output indices in the order they were handed out.
fn stream_matches_run(
    jit: &mut P,
    plain: &mut P,
    inputs: &[Tensor<f32>],
) -> Vec<usize> {
    plain.write_inputs(inputs).unwrap();
    plain.run().unwrap();
    let want = plain.read_outputs().unwrap();
    jit.write_inputs(inputs).unwrap();
    let mut got: Vec<Option<Tensor<f32>>> = vec![None; want.len()];
    let mut order = Vec::new();
    jit.run_streaming(None, &mut |i, t| {
        assert!(got[i].is_none(), "output {i} handed out twice");
        got[i] = Some(t);
        order.push(i);
    })
    .unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("output {i} never handed out"));
        assert_eq!(g.shape, w.shape, "output {i}");
        let (gb, wb): (Vec<u32>, Vec<u32>) = (
            g.data.iter().map(|v| v.to_bits()).collect(),
            w.data.iter().map(|v| v.to_bits()).collect(),
        );
        assert_eq!(
            gb, wb,
            "output {i}: streamed bits differ from run + read_outputs"
        );
    }
    order
}

#[test]
fn a_small_step_streams_every_output_once_with_the_run_values() {
    let m = program(
        "model t {
           input x: f32[B, 2, 8, 8]
           seed 3
           return x |> conv2d(4, 3) |> batchnorm |> relu |> conv2d(4, 3) |> relu |> flatten |> linear(3)
         }",
    );
    let (tg, mut jit, inputs) = prepared(&m, 3);
    let (_, mut plain, _) = prepared(&m, 3);
    let order = stream_matches_run(&mut jit, &mut plain, &inputs);
    assert_eq!(order.len(), tg.graph.outputs.len());
    // The linear layer's gradients are final before the first conv's backward runs.
    let ready = jit.executable().plan.output_ready();
    let steps = jit.executable().plan.steps.len();
    let at = |name: &str| {
        let i = tg.grads.iter().position(|g| g.ends_with(name)).unwrap();
        ready[1 + i]
    };
    let first_linear = tg
        .grads
        .iter()
        .find(|g| g.contains("linear"))
        .unwrap()
        .clone();
    let first_conv = tg
        .grads
        .iter()
        .find(|g| g.contains("conv"))
        .unwrap()
        .clone();
    assert!(
        at(&first_linear) < at(&first_conv),
        "{first_linear} ready after {} steps, {first_conv} after {}",
        at(&first_linear),
        at(&first_conv)
    );
    assert!(ready[1..=tg.grads.len()].iter().min().unwrap() < &steps);
}

/// ResNet-20's training step: the gradients become final spread through the backward
/// (the last layer's about when the backward starts), not all at the end of the plan.
#[test]
fn resnet20_gradients_are_ready_through_the_backward() {
    let m = example("resnet20_cifar10.fnet");
    let (tg, mut jit, inputs) = prepared(&m, 2);
    let (_, mut plain, _) = prepared(&m, 2);
    let order = stream_matches_run(&mut jit, &mut plain, &inputs);
    let ready = jit.executable().plan.output_ready();
    let steps = jit.executable().plan.steps.len();
    let ng = tg.grads.len();
    let grad_ready: Vec<usize> = ready[1..=ng].to_vec();
    let first = *grad_ready.iter().min().unwrap();
    let last = *grad_ready.iter().max().unwrap();
    eprintln!(
        "{steps} steps; gradients ready from step {first} to {last}; order of grads: {:?}",
        order
            .iter()
            .filter(|&&i| (1..=ng).contains(&i))
            .map(|&i| (tg.grads[i - 1].as_str(), ready[i]))
            .collect::<Vec<_>>()
    );
    // The first gradient is final in the first half of the plan's backward, and the
    // gradients spread over at least a third of the plan.
    assert!(
        first < steps / 2 + steps / 4,
        "first gradient at step {first} of {steps}"
    );
    assert!(
        last - first > steps / 3,
        "gradients ready in steps {first}..{last} of {steps}"
    );
    // The classifier's gradient is among the first ready, the stem's among the last.
    let of = |p: &str| {
        let i = tg
            .grads
            .iter()
            .position(|g| g.starts_with(p))
            .unwrap_or_else(|| {
                panic!("no gradient of {p}: {:?}", tg.grads);
            });
        grad_ready[i]
    };
    let (fc, stem) = (of(tg.grads.last().unwrap()), of(&tg.grads[0]));
    assert!(
        fc < stem,
        "last parameter's gradient at {fc}, first's at {stem}"
    );
}
