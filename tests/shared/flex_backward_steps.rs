// The body of tests/opencl_flex_backward.rs and tests/jit_flex_backward.rs: each
// defines `BACKEND`, `backend()`, `run_backend` and `plan_target` and includes this
// file, then adds its own crop test.

use common::noise;
use fnet::diag::Span;
use fnet::ir::graph::{Graph, Node};
use fnet::ir::op::{Init, Op, ParamRole, TrainOp};
use fnet::ir::types::{DType, TensorType};
use fnet::runtime::{flex_kernel, run, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;

struct Case {
    name: &'static str,
    horizon: Vec<u64>,
    /// Mask parameters (mean, sigma per axis), the crop threshold and causality; `None`
    /// for an uncropped grid.
    crop: Option<(Vec<f64>, f64, bool)>,
    hidden: usize,
    layers: usize,
    cout: usize,
    cin: usize,
}

fn node(op: Op, shape: &[usize], name: &str) -> Node {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    Node {
        op,
        ty: TensorType::known(DType::F32, &dims),
        name: name.to_string(),
        span: Span::default(),
    }
}

/// The grid nodes (`coord_grid`, then `mask_crop` over a `mask` parameter) in `g`.
fn grid_nodes(g: &mut Graph, case: &Case, shape: &[usize]) -> NodeIndex {
    let full: Vec<usize> = std::iter::once(case.horizon.len())
        .chain(case.horizon.iter().map(|&k| k as usize))
        .collect();
    let grid = g.add(
        node(
            Op::CoordGrid {
                horizon: case.horizon.clone(),
            },
            &full,
            "grid",
        ),
        &[],
    );
    let Some((_, threshold, causal)) = &case.crop else {
        return grid;
    };
    let param = Op::Param {
        role: ParamRole::Trainable,
        init: Init::Zeros,
        seed: None,
    };
    let mask = g.add(node(param, &[case.horizon.len(), 2], "mask"), &[]);
    let crop = Op::MaskCrop {
        threshold: *threshold,
        causal: *causal,
    };
    g.add(node(crop, shape, "crop"), &[grid, mask])
}

fn store(case: &Case) -> ParamStore<f64> {
    let mut s = ParamStore::new();
    if let Some((m, _, _)) = &case.crop {
        let t = Tensor::from_vec(vec![case.horizon.len(), 2], m.clone()).expect("mask");
        s.insert("mask".to_string(), t);
    }
    s
}

/// The (cropped) grid's shape `[D, k…]`, from the fused op's crop rule.
fn grid_shape(case: &Case) -> Vec<usize> {
    let mask = case.crop.as_ref().map(|(m, t, _)| {
        let mt = Tensor::from_vec(vec![case.horizon.len(), 2], m.clone()).expect("mask");
        (mt, *t)
    });
    let causal = case.crop.as_ref().is_some_and(|c| c.2);
    let axes = flex_kernel::crop_axes(&case.horizon, mask.as_ref().map(|(m, t)| (m, *t)), causal)
        .expect("crop");
    std::iter::once(axes.len())
        .chain(axes.iter().map(Vec::len))
        .collect()
}

/// MAGNet's parameter shapes in operand order and a random value of each, at the
/// magnitudes of a trained kernel net (Gabor frequencies of a few cycles, scales
/// 1–5, unit-variance linears).
fn net_params(case: &Case, seed: u64) -> Vec<Tensor<f64>> {
    let (d, h, o) = (case.horizon.len(), case.hidden, case.cout * case.cin);
    let mut out = Vec::new();
    let mut k = seed;
    let mut t = |shape: Vec<usize>, f: &dyn Fn(f64) -> f64| {
        k += 1;
        let data = noise(shape.iter().product(), k)
            .into_iter()
            .map(f)
            .collect();
        Tensor::from_vec(shape, data).expect("shape")
    };
    let inv = 1.0 / (h as f64).sqrt();
    for _ in 0..=case.layers {
        out.push(t(vec![h, d], &|r| 6.0 * r));
        out.push(t(vec![h], &|r| r));
        out.push(t(vec![h, d], &|r| 3.0 + 2.0 * r));
        out.push(t(vec![h, d], &|r| r));
    }
    for _ in 0..case.layers {
        out.push(t(vec![h, h], &|r| 1.7 * inv * r));
        out.push(t(vec![h], &|r| 0.5 * r));
    }
    out.push(t(vec![o, h], &|r| 1.7 * inv * r));
    out.push(t(vec![o], &|r| 0.1 * r));
    out
}

/// `|got − want| ≤ tol·max(|want|, floor)` elementwise at the largest.
fn close_with(what: &str, got: &Tensor<f32>, want: &Tensor<f64>, tol: f64, floor: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let d = got.max_abs_diff(want).expect("same shape");
    let scale = want.max_abs().max(floor);
    assert!(
        d <= tol * scale,
        "{what}: max |{BACKEND} − reference| = {d:e} (scale {scale:e})"
    );
}

fn close(what: &str, got: &Tensor<f32>, want: &Tensor<f64>, tol: f64) {
    close_with(what, got, want, tol, 1e-6);
}

/// Builds the case's graph (every forward and backward op of the FlexConv chain over
/// inputs), runs it on both backends and compares every output.
fn check(case: &Case) {
    let grid = grid_shape(case);
    let d = case.horizon.len();
    if case.crop.is_some() {
        assert!(
            grid[1..]
                .iter()
                .zip(&case.horizon)
                .any(|(&k, &h)| k < h as usize),
            "{}: the mask crops the grid {grid:?}",
            case.name
        );
    }
    let spatial = grid[1..].to_vec();
    let mut g = Graph::new(case.name);
    let grid_id = grid_nodes(&mut g, case, &grid);
    let params = net_params(case, 17);
    let mut inputs: Vec<Tensor<f64>> = Vec::new();
    let mut input = |g: &mut Graph, t: Tensor<f64>, name: &str| {
        let op = Op::Input {
            name: name.to_string(),
        };
        let id = g.add(node(op, &t.shape, name), &[]);
        g.inputs.push(id);
        inputs.push(t);
        id
    };
    let net: Vec<NodeIndex> = params
        .iter()
        .enumerate()
        .map(|(i, t)| input(&mut g, t.clone(), &format!("p{i}")))
        .collect();
    let mp_value = match &case.crop {
        Some((m, _, _)) => m.clone(),
        None => (0..d).flat_map(|a| [0.1 * a as f64, 0.4]).collect(),
    };
    let mp = input(
        &mut g,
        Tensor::from_vec(vec![d, 2], mp_value).expect("mp"),
        "mp",
    );
    let mut kshape = vec![case.cout, case.cin];
    kshape.extend(&spatial);
    let dy = input(&mut g, common::random(&kshape, 5), "dy");
    let dm = input(&mut g, common::random(&spatial, 6), "dm");

    let with_grid = |ops: &[NodeIndex]| [&[grid_id][..], ops].concat();
    let magnet = Op::Magnet {
        layers: case.layers as u64,
        hidden: case.hidden as u64,
        out_channels: case.cout as u64,
        in_channels: case.cin as u64,
    };
    let k = g.add(node(magnet, &kshape, "magnet"), &with_grid(&net));
    let m = g.add(node(Op::GaussMask, &spatial, "gauss"), &[grid_id, mp]);
    let km = g.add(node(Op::MaskMul, &kshape, "mask_mul"), &[k, m]);
    let mut outputs = vec![k, m, km];
    for (slot, p) in params.iter().enumerate() {
        let back = Op::Train(TrainOp::MagnetBackward {
            layers: case.layers as u64,
            slot,
        });
        let ops = [&[dy][..], &with_grid(&net)].concat();
        outputs.push(g.add(node(back, &p.shape, &format!("grad.p{slot}")), &ops));
    }
    let gmb = Op::Train(TrainOp::GaussMaskBackward);
    outputs.push(g.add(node(gmb, &[d, 2], "grad.mp"), &[grid_id, mp, dm]));
    let mmb = Op::Train(TrainOp::MaskMulBackwardMask);
    outputs.push(g.add(node(mmb, &spatial, "grad.mask"), &[dy, k]));
    g.outputs = outputs.clone();

    let want = run(&g, &store(case), &inputs, &RunOptions::default())
        .unwrap_or_else(|e| panic!("{}: reference: {e}", case.name))
        .outputs;
    let store32: ParamStore<f32> = store(case)
        .into_iter()
        .map(|(k, v)| (k, v.cast()))
        .collect();
    let inputs32: Vec<Tensor<f32>> = inputs.iter().map(Tensor::cast).collect();
    let got = run_backend(&g, &store32, &inputs32)
        .unwrap_or_else(|e| panic!("{}: {BACKEND}: {e}", case.name));
    assert_eq!(got.len(), want.len());
    for ((id, got), want) in outputs.iter().zip(&got).zip(&want) {
        let what = format!("{}: {}", case.name, g.node(*id).name);
        close(&what, got, want, 2e-4);
    }
}

#[test]
fn flexconv_2d_cropped_backward_matches_the_reference() {
    for layers in [1, 3] {
        check(&Case {
            name: "2d_cropped",
            horizon: vec![13, 11],
            crop: Some((vec![0.1, 0.3, 0.0, 0.2], 0.1, false)),
            hidden: 16,
            layers,
            cout: 3,
            cin: 2,
        });
    }
}

#[test]
fn flexconv_2d_uncropped_backward_matches_the_reference() {
    // 4 × 4 = 16 points: the forward synthesis kernels take their vectorised path.
    for (horizon, layers) in [(vec![4, 4], 0), (vec![9, 9], 1)] {
        check(&Case {
            name: "2d",
            horizon,
            crop: None,
            hidden: 8,
            layers,
            cout: 4,
            cin: 3,
        });
    }
}

#[test]
fn causal_1d_cropped_backward_matches_the_reference() {
    for layers in [1, 3] {
        check(&Case {
            name: "1d_causal",
            horizon: vec![31],
            crop: Some((vec![1.0, 0.3], 0.1, true)),
            hidden: 32,
            layers,
            cout: 5,
            cin: 4,
        });
    }
    // 5 points, fewer than a vector: the vectorised reductions take their tails only.
    check(&Case {
        name: "1d_short",
        horizon: vec![5],
        crop: None,
        hidden: 4,
        layers: 1,
        cout: 2,
        cin: 1,
    });
}

/// Each layer's `magnet_backward` ops share one recomputation of MAGNet's
/// intermediates: one launch per Gabor filter of the forward kernel, not one per
/// parameter slot.
#[test]
fn magnet_backward_recomputes_the_forward_once_per_layer() {
    let case = Case {
        name: "shared",
        horizon: vec![9],
        crop: None,
        hidden: 8,
        layers: 2,
        cout: 2,
        cin: 2,
    };
    let grid = grid_shape(&case);
    let mut g = Graph::new("shared");
    let grid_id = grid_nodes(&mut g, &case, &grid);
    let params = net_params(&case, 3);
    let mut shapes = Vec::new();
    let mut add_input = |g: &mut Graph, shape: &[usize], name: &str| {
        let op = Op::Input {
            name: name.to_string(),
        };
        let id = g.add(node(op, shape, name), &[]);
        g.inputs.push(id);
        shapes.push(shape.to_vec());
        id
    };
    let net: Vec<NodeIndex> = params
        .iter()
        .enumerate()
        .map(|(i, t)| add_input(&mut g, &t.shape, &format!("p{i}")))
        .collect();
    let dy = add_input(&mut g, &[2, 2, 9], "dy");
    for (slot, p) in params.iter().enumerate() {
        let back = Op::Train(TrainOp::MagnetBackward { layers: 2, slot });
        let ops = [&[dy, grid_id][..], &net].concat();
        let id = g.add(node(back, &p.shape, &format!("grad.p{slot}")), &ops);
        g.outputs.push(id);
    }
    let plan = fnet::kernel_ir::plan::build_plan(
        &g,
        &ParamStore::new(),
        &shapes,
        fnet::kernel_ir::plan::Target::cpu(),
    )
    .expect("plan");
    let count = |kind: &str| {
        plan.steps
            .iter()
            .filter(|s| plan.kernels.get(s.kernel).is_some_and(|k| k.name.starts_with(kind)))
            .count()
    };
    assert_eq!(params.len(), 4 * 3 + 2 * 2 + 2);
    assert_eq!(
        count("magnet_fwd_"),
        3,
        "one forward launch per Gabor filter"
    );
    assert_eq!(count("magnet_gabor_bwd_"), 3);
    assert_eq!(count("magnet_dw_"), 3, "V and both U");
}

/// One training step of `src`'s training graph (`autodiff::differentiate`; with
/// `fused`, after `fuse-mask`, so the forward is `flex_kernel`) on OpenCL and on the
/// interpreter, same parameters, inputs and labels: the loss and every gradient agree.
/// A random input of `shape` and labels for `graph`'s classes.
fn step_inputs(graph: &Graph, shape: &[usize]) -> Vec<Tensor<f32>> {
    let classes = graph.node(graph.outputs[0]).ty.shape[1].known().expect("K") as usize;
    let labels: Vec<f32> = noise(shape[0], 9)
        .iter()
        .map(|r| ((r.abs() * classes as f64) as usize).min(classes - 1) as f32)
        .collect();
    vec![
        common::random::<f32>(shape, 8),
        Tensor::from_vec(vec![shape[0]], labels).expect("labels"),
    ]
}

/// `horizon` and `causal` are the FlexConvs' (all alike), to check that the masks
/// crop their kernels.
fn check_training_step(
    what: &str,
    src: &str,
    shape: &[usize],
    fused: bool,
    horizon: &[u64],
    causal: bool,
) {
    use fnet::autodiff::{differentiate, Loss};
    use fnet::backend::{Backend, Prepared, ReferenceBackend};
    use fnet::passes::{CompileMode, PassContext};
    use fnet::runtime::Mode;
    let m = common::models::program(src);
    let mut graph = m.graph.clone();
    if fused {
        let mut pc = PassContext::new(CompileMode::Training);
        fnet::passes::pipeline::from_names(&["fuse-mask".to_string()])
            .expect("pass")
            .run(&mut graph, &mut pc, &mut |_| {})
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            graph
                .g
                .node_indices()
                .any(|n| matches!(graph.node(n).op, Op::FlexKernel { .. })),
            "{what}: fused"
        );
    }
    let loss = Loss {
        output: 0,
        label_smoothing: 0.0,
        ..Loss::default()
    };
    let tg = differentiate(&graph, &loss).unwrap_or_else(|e| panic!("{what}: {e}"));
    let params: ParamStore<f32> = common::perturbed_weights(&m.graph, 7);
    let inputs = step_inputs(&graph, shape);
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    // The training plan computes the FlexConv kernels in every step from parameter
    // buffers the trainer writes, mask parameters included: nothing in `setup`, no
    // kernel-net or mask parameter folded on the host.
    let plan = fnet::kernel_ir::plan::build_plan_in(
        &tg.graph,
        &params,
        &shapes,
        plan_target(),
        Mode::Train,
    )
    .unwrap_or_else(|e| panic!("{what}: plan: {e}"));
    assert!(plan.setup.is_empty(), "{what}: no setup launches");
    let flex_params: Vec<&String> = params
        .keys()
        .filter(|k| k.contains("kernel_net") || k.ends_with("mask_params"))
        .collect();
    assert!(flex_params.len() > 2, "{what}");
    for (name, mask) in params.iter().filter(|(k, _)| k.ends_with("mask_params")) {
        let axes = flex_kernel::crop_axes(horizon, Some((mask, 0.1)), causal).expect("crop");
        let sizes: Vec<usize> = axes.iter().map(Vec::len).collect();
        assert!(
            sizes.iter().zip(horizon).any(|(&k, &h)| (k as u64) < h),
            "{what}: {name} crops the kernel ({sizes:?})"
        );
    }
    for name in flex_params {
        assert!(plan.params.contains_key(name), "{what}: {name} is a buffer");
    }
    let synthesis = plan
        .steps
        .iter()
        .filter(|s| plan.kernels.get(s.kernel).is_some_and(|k| k.name.starts_with("magnet_gabor_")))
        .count();
    assert!(synthesis > 0, "{what}: MAGNet synthesised in every step");
    let mut backends: Vec<Box<dyn Prepared<f32>>> = vec![
        ReferenceBackend
            .prepare(tg.graph.clone(), params.clone(), &shapes)
            .unwrap_or_else(|e| panic!("{what}: {e}")),
        Box::new(
            backend()
                .prepare_plan(&tg.graph, &params, &shapes)
                .unwrap_or_else(|e| panic!("{what}: {BACKEND}: {e}")),
        ),
    ];
    let mut outs = Vec::new();
    for b in &mut backends {
        b.set_mode(Mode::Train).unwrap_or_else(|e| panic!("{e}"));
        outs.push(b.forward(&inputs).unwrap_or_else(|e| panic!("{what}: {e}")));
    }
    let names: Vec<String> = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|g| format!("grad.{g}")))
        .chain(tg.buffers.iter().map(|b| format!("update.{b}")))
        .collect();
    assert_eq!(outs[1].len(), names.len());
    let mut checked = 0;
    for ((name, want), got) in names.iter().zip(&outs[0]).zip(&outs[1]) {
        let want = want.cast::<f64>();
        // A gradient that is zero in exact arithmetic (a conv bias before a batch
        // norm) is f32 rounding noise of the gradients around it: the floor.
        close_with(&format!("{what}: {name}"), got, &want, 1e-4, 1e-2);
        checked += usize::from(name.contains("kernel_net") || name.contains("mask_params"));
    }
    assert!(checked > 0, "{what}: FlexConv gradients checked");
}

#[test]
fn reduced_flexnet_training_step_matches_the_interpreter() {
    let src = "model t {
  input x: f32[B, 3, 8, 8]
  seed 1
  def flex(c) = flexconv(c, horizon: 9, kernel: magnet(hidden: 8, layers: 1),
                         mask: gauss(sigma: 0.2, threshold: 0.1))
  h = x |> flex(4) |> batchnorm |> relu
  h = h |> flex(5) |> batchnorm |> relu
  return h |> global_avg_pool |> linear(3)
}";
    for fused in [false, true] {
        check_training_step("reduced flexnet", src, &[2, 3, 8, 8], fused, &[9, 9], false);
    }
}

#[test]
fn short_flextcn_training_step_matches_the_interpreter() {
    let src = "model t {
  input x: f32[B, 1, 64]
  seed 2
  def flex(c) = flexconv(c, horizon: same, causal: true,
                         kernel: magnet(hidden: 8, layers: 3),
                         mask: gauss(sigma: 0.075, threshold: 0.1))
  h = x |> flex(3) |> batchnorm |> relu
  h = h |> flex(3) |> batchnorm |> relu
  return h |> last |> linear(4)
}";
    for fused in [false, true] {
        check_training_step("short flextcn", src, &[2, 1, 64], fused, &[64], true);
    }
}

