//! Training plans of the benchmarked examples at the benchmark's batch (64), built as
//! `fnetc bench --training --backend opencl` builds them on a CPU device (the
//! `opencl-cpu` cost table, the CPU target), without running them: no OpenCL device
//! is needed. The batch matters: at 64 the cost model runs FlexTCN-6's convs direct
//! over kernels synthesised on the device, a path batch-2 tests do not take.

use fnet::backend::BackendKind;
use fnet::cli::bench::{compile_training, training_inputs, BenchArgs};
use fnet::cost::CostTableId;
use fnet::kernel_ir::plan::{build_plan_in, live_peak, Plan, Target};
use fnet::runtime::Mode;

fn plan(example: &str) -> Plan {
    let args = BenchArgs {
        model: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example),
        weights: None,
        options: Default::default(),
        backend: BackendKind::Opencl,
        device: None,
        batch: 64,
        iters: 1,
        warmup: 0,
        unoptimised: false,
        training: true,
    };
    let (graph, store, classes) = compile_training(&args, CostTableId::opencl(false))
        .unwrap_or_else(|e| panic!("{example}: {e}"));
    let inputs = training_inputs(&graph, 64, classes).expect("inputs");
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    build_plan_in(&graph, &store, &shapes, Target::cpu(), Mode::Train)
        .unwrap_or_else(|e| panic!("{example}: plan: {e}"))
}

/// FlexTCN-6's fused `flex_kernel`s read their kernel nets' shapes from the step's
/// parameters (a training plan has no host constants for them): the plan lowers, and
/// synthesises every kernel in every step from parameter buffers.
#[test]
fn flextcn6_trains_at_batch_64_with_direct_convs_over_synthesised_kernels() {
    let p = plan("flextcn6_smnist.fnet");
    let gabor = (p.steps.iter())
        .filter(|s| p.kernels[s.kernel].name.starts_with("magnet_gabor_"))
        .count();
    // 12 FlexConvs, 4 Gabor layers each (3 hidden layers + the first).
    assert!(gabor >= 48, "{gabor} MAGNet launches");
    assert!(p.setup.is_empty());
    assert!(p.params.keys().any(|k| k.ends_with("mask_params")));
}

/// ResNet-20's slots come within 20 % of the temporaries live at once (the first-fit
/// assignment this replaced allocated 1.48× of them: 210 MiB for 142), and the ReLU
/// backward keeps no batch norm output to the backward: 98 MiB live at most.
#[test]
fn resnet20_slots_stay_close_to_the_live_peak() {
    let p = plan("resnet20_cifar10.fnet");
    let slots: usize = p.slot_len.iter().sum();
    let live = live_peak(&p);
    assert!(slots >= live, "slots {slots} below the live peak {live}");
    assert!(
        (slots as f64) <= 1.2 * live as f64,
        "slots {slots} vs live peak {live}"
    );
    let mib = (live * 4) as f64 / 1048576.0;
    assert!(mib < 110.0, "{mib:.1} MiB live at once");
}

/// ResNet-20's residual adds run inside the batch norm kernels before them (with the
/// ReLU after them), except in the two downsampling blocks, whose shortcut is lowered
/// after that batch norm: seven `batchnorm` launches read a residual, and only those
/// two blocks keep a forward add of their own. In the backward, the two gradients of
/// each block's input (the stem's output and eight block outputs) are added by the
/// ReLU backward that reads them: nine of its 19 launches take two gradients, and no
/// gradient add is left.
#[test]
fn resnet20_batch_norms_add_the_residual_and_relu_backwards_the_gradients() {
    let p = plan("resnet20_cifar10.fnet");
    let with_residual = (p.steps.iter())
        .filter(|s| p.kernels[s.kernel].name.starts_with("batchnorm") && s.args.len() == 5)
        .count();
    assert_eq!(with_residual, 7);
    let mut adds: Vec<&str> = (p.steps.iter())
        .filter(|s| p.kernels[s.kernel].name.starts_with("add") && s.layer.ends_with(".add1"))
        .map(|s| s.layer.as_str())
        .collect();
    adds.sort();
    assert_eq!(adds, ["layer2.basic1.add1", "layer3.basic1.add1"]);
    let relu_backward: Vec<usize> = (p.steps.iter())
        .filter(|s| p.kernels[s.kernel].name.starts_with("relu_backward"))
        .map(|s| s.args.len())
        .collect();
    assert_eq!(relu_backward.len(), 19);
    assert_eq!(relu_backward.iter().filter(|&&a| a == 4).count(), 9);
    let gradient_adds = (p.steps.iter())
        .filter(|s| p.kernels[s.kernel].name.starts_with("add") && s.layer.ends_with(".grad"))
        .count();
    assert_eq!(gradient_adds, 0);
}
