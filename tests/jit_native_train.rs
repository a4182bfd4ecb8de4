//! The JIT training tests (`tests/shared/train_steps.rs`, as `tests/jit_train.rs` runs
//! them) with every forward conv forced onto a native step, plus Winograd and
//! sliding-window direct training steps. Training weights are parameter buffers, so a
//! Winograd filter is transformed in every run, and a conv's bias is read from its
//! buffer by the step's epilogue.
//! Loss, gradients and updates must equal the f64 interpreter's.
//!
//! The shared suite runs with im2col forced (`NativeConvs::Force`, what
//! `FNET_JIT_CONV=im2col` sets). Winograd rounds differently from a dot product (its
//! transforms mix a tile's inputs: errors of a few 1e-7 of Σ|w·x|, docs/jit_kernels.md),
//! which is more than the ReLU-kink margin the shared suite's seeds keep
//! (`common::kinks::CLEAR`, 4e-7): LC-ResNet-20's step at seed 1104 has a ReLU input
//! 5.7e-7 from zero, and F(2×2) lands it on the other side (`conv1.coeff`'s gradient
//! moves by 3.9e-3). The Winograd steps below are therefore checked on models and
//! seeds whose margin is wide.

mod common;

use common::models::{example, input, program};
use fnet::backend::JitBackend;
use fnet::kernel_ir::native::{JitConv, NativeConvs, NativeOp};
use fnet::kernel_ir::plan::Target;
use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    /// The algorithm the calling test forces (each test runs on its own thread).
    static FORCED: Cell<JitConv> = const { Cell::new(JitConv::Im2col) };
}

fn backend() -> JitBackend {
    static BACKEND: OnceLock<JitBackend> = OnceLock::new();
    let base = BACKEND.get_or_init(|| JitBackend::new().unwrap_or_else(|e| panic!("{e}")));
    base.with_target(Target {
        native: NativeConvs::Force(FORCED.get()),
        ..JitBackend::default_target()
    })
}

include!("shared/train_steps.rs");

/// The native steps in the training plan of `model` (whose training graph is `tg`)
/// under the forced target.
fn native_steps(model: &Graph, tg: &TrainingGraph, batch: usize) -> Vec<NativeOp> {
    let (params, inputs) = step_data(model, batch, 1);
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let run = backend()
        .prepare_plan(&tg.graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    run.executable()
        .plan
        .steps
        .iter()
        .filter_map(|s| s.native)
        .collect()
}

/// The algorithm of each forward conv among `steps`.
fn native_convs(steps: &[NativeOp]) -> Vec<JitConv> {
    steps
        .iter()
        .filter_map(|s| match s {
            NativeOp::Conv2d { algo, .. } => Some(*algo),
            _ => None,
        })
        .collect()
}

/// Training steps with every 3×3 stride-1 conv on Winograd F(2×2) and F(4×4), and on
/// the sliding-window direct conv (the others on im2col): ResNet-20 (batch norms,
/// residual adds, strided convs, native option-A shortcuts) and a conv with a bias
/// parameter and a residual.
#[test]
fn winograd_and_direct_training_steps_match_the_reference() {
    let small = program(
        "model t {
           input x: f32[B, 5, 9, 7]
           h = x |> conv2d(5, 3, padding: 1, bias: true)
           return relu(h + x) |> global_avg_pool |> linear(3)
         }",
    );
    let resnet = example("resnet20_cifar10.fnet");
    for algo in [JitConv::Winograd2, JitConv::Winograd4, JitConv::Direct] {
        FORCED.set(algo);
        let tg = check_training(&small.graph, 2, 0.0, 11);
        let steps = native_steps(&small.graph, &tg, 2);
        assert_eq!(native_convs(&steps), vec![algo], "{algo:?}");
        let seed = seed_clear_of_kinks(&resnet.graph, 2, 103);
        let tg = check_training(&resnet.graph, 2, 0.0, seed);
        let steps = native_steps(&resnet.graph, &tg, 2);
        let convs = native_convs(&steps);
        assert_eq!(convs.len(), 19, "ResNet-20 has 19 forward convs");
        // Its two option-A shortcuts, forward and backward, are native steps too.
        let shortcuts: Vec<bool> = steps
            .iter()
            .filter_map(|s| match s {
                NativeOp::Shortcut(g) => Some(g.backward),
                _ => None,
            })
            .collect();
        assert_eq!(shortcuts, vec![false, false, true, true], "{algo:?}");
        // The gradient at each block's input (the stem's output and eight block
        // outputs) is summed by the ReLU backward that reads it.
        let summed = (steps.iter())
            .filter(|s| matches!(s, NativeOp::ReluBackward { summed: true, .. }))
            .count();
        assert_eq!(summed, 9, "{algo:?}");
        // The first conv (3 → 16) is 3×3 stride 1 too; the two strided ones are not
        // Winograd's, but the direct routine's (on the input's phases).
        let covered = if algo == JitConv::Direct { 19 } else { 17 };
        assert_eq!(
            convs.iter().filter(|&&a| a == algo).count(),
            covered,
            "{convs:?}"
        );
    }
}
