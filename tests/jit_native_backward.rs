//! The JIT's native backward convs (`NativeOp::ConvBackwardFilter` / `ConvBackwardData`,
//! `jit::kernels::conv_backward`, `conv_filter_direct`, `winograd_filter`) against the f64 interpreter's
//! training step: each data-gradient algorithm forced (`FNET_JIT_CONV_BWD`, read when
//! the plan is lowered, so each runs in a child process, as each ISA does with
//! `FNET_JIT_ISA`), and the filter gradient by im2col, F(2×2) and F(4×4)
//! (`FNET_JIT_CONV_FILTER`), on awkward convs: odd sizes, stride 2, padding 0/1/2,
//! groups, dilation, channel counts that are no multiple of 8 or 16, 1-D. Each model is a 1×1 conv (so the awkward conv's input
//! has a gradient), the awkward conv, a global average pool and a linear layer: no
//! ReLU, so no kink can move a gradient. Each case also checks the plan's native
//! steps, so a lowering that fell back to the generated kernels would fail.

mod common;

use common::models::{input, program};
use common::{assert_close, noise, perturbed_weights};
use fnet::autodiff::{differentiate, Loss};
use fnet::backend::{Backend, Prepared, ReferenceBackend};
use fnet::kernel_ir::native::{JitConvData, JitConvFilter, NativeOp};
use fnet::runtime::{Mode, ParamStore};
use fnet::tensor::Tensor;

/// Set in the child processes.
const CHILD: &str = "FNET_JIT_BWD_CHILD";

/// (awkward conv, input shape, whether its data gradient is a stride-1 forward conv,
/// whether Winograd covers that conv).
const CASES: &[(&str, &[usize], bool, bool)] = &[
    ("conv2d(7, 3, padding: 1)", &[2, 5, 9, 7], true, true),
    (
        "conv2d(17, 3, padding: 2, bias: false)",
        &[2, 3, 6, 5],
        true,
        true,
    ),
    ("conv2d(4, 2, padding: 2)", &[2, 3, 6, 5], false, false),
    ("conv2d(9, 3)", &[1, 11, 11, 13], true, true),
    (
        "conv2d(10, 3, stride: 2, padding: 1)",
        &[2, 6, 9, 9],
        false,
        false,
    ),
    ("conv2d(5, 3, stride: 2)", &[3, 3, 8, 7], false, false),
    (
        "conv2d(6, 3, padding: 1, groups: 2)",
        &[2, 4, 9, 7],
        true,
        false,
    ),
    (
        "conv2d(6, 3, stride: 2, padding: 1, groups: 3)",
        &[2, 9, 7, 8],
        false,
        false,
    ),
    (
        "conv2d(4, 3, dilation: 2, padding: 2)",
        &[1, 2, 11, 13],
        true,
        false,
    ),
    ("conv2d(5, 1)", &[2, 9, 6, 6], true, false),
    ("conv2d(5, 1, stride: 2)", &[2, 9, 7, 6], false, false),
    (
        "conv2d(6, [5, 3], padding: [2, 1])",
        &[2, 3, 9, 8],
        true,
        false,
    ),
    ("conv2d(18, 3, padding: 1)", &[2, 17, 6, 6], true, true),
    // 5×5 (FlexNet's cropped kernels): Winograd F(m×m, 5×5), padded and not.
    ("conv2d(7, 5, padding: 2)", &[2, 5, 9, 10], true, true),
    ("conv2d(4, 5)", &[1, 3, 11, 9], true, true),
    (
        "conv1d(8, 3, stride: 2, padding: 1)",
        &[2, 3, 37],
        false,
        false,
    ),
    ("conv1d(5, 5, padding: 2)", &[2, 3, 21], true, false),
    ("conv1d(6, 3, padding: 1)", &[2, 5, 19], true, false),
    (
        "conv2d(5, 3, dilation: [2, 1], padding: [2, 1])",
        &[1, 3, 10, 9],
        true,
        false,
    ),
];

fn source(conv: &str, shape: &[usize]) -> String {
    let (dims, one) = match shape.len() {
        3 => (format!("[B, {}, {}]", shape[1], shape[2]), "conv1d"),
        _ => (
            format!("[B, {}, {}, {}]", shape[1], shape[2], shape[3]),
            "conv2d",
        ),
    };
    format!(
        "model t {{\n  input x: f32{dims}\n  h = x |> {one}({}, 1)\n  \
         return h |> {conv} |> global_avg_pool |> linear(3)\n}}",
        shape[1]
    )
}

fn labels(batch: usize, seed: u64) -> Tensor<f32> {
    let data = noise(batch, seed)
        .iter()
        .map(|r| ((r.abs() * 3.0) as usize).min(2) as f32)
        .collect();
    Tensor::from_vec(vec![batch], data).expect("shape")
}

/// The forced algorithm of this process (`None`: the rule).
fn forced() -> Option<JitConvData> {
    fnet::kernel_ir::native::backward_from_env()
        .expect("a valid FNET_JIT_CONV_BWD")
        .expect("not generated")
}

/// The filter-gradient algorithm forced in this process (`None`: the rule).
fn forced_filter() -> Option<JitConvFilter> {
    fnet::kernel_ir::native::filter_from_env().expect("a valid FNET_JIT_CONV_FILTER")
}

/// One training step of each case equals the f64 interpreter's, and the plan holds
/// the native backward steps the forced algorithms give.
#[test]
fn backward_convs_match_the_reference() {
    let forced = forced();
    let forced_filter = forced_filter();
    let mut direct_filters = 0;
    let mut winograd_filters = 0;
    for (i, &(conv, shape, forward, wino)) in CASES.iter().enumerate() {
        let src = source(conv, shape);
        let m = program(&src);
        let tg = differentiate(&m.graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
        let seed = 40 + i as u64;
        let params: ParamStore<f32> = perturbed_weights(&m.graph, seed);
        let inputs = vec![input(shape, seed + 1), labels(shape[0], seed + 2)];
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        let params64: ParamStore<f64> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.cast::<f64>()))
            .collect();
        let inputs64: Vec<Tensor<f64>> = inputs.iter().map(|t| t.cast::<f64>()).collect();
        let mut reference = ReferenceBackend
            .prepare_f64(tg.graph.clone(), params64, &shapes)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut run = common::jit::backend()
            .prepare_plan(&tg.graph, &params, &shapes)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        reference.set_mode(Mode::Train).unwrap();
        run.set_mode(Mode::Train).unwrap();
        let want = reference
            .forward(&inputs64)
            .unwrap_or_else(|e| panic!("{e}"));
        let got = run.forward(&inputs).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = std::iter::once("loss".to_string())
            .chain(tg.grads.iter().map(|g| format!("grad.{g}")))
            .chain(tg.buffers.iter().map(|b| format!("update.{b}")))
            .collect();
        for ((name, want), got) in names.iter().zip(&want).zip(&got) {
            assert_close(&format!("{src} ({forced:?}): {name}"), got, want, 1e-4);
        }
        let steps = &run.executable().plan.steps;
        let filters: Vec<_> = steps
            .iter()
            .filter_map(|s| match s.native {
                Some(NativeOp::ConvBackwardFilter { geometry, algo }) => Some((geometry, algo)),
                _ => None,
            })
            .collect();
        assert_eq!(filters.len(), 2, "{src}: two native filter gradients");
        for (g, algo) in filters {
            // The sliding windows take 3-wide kernels at stride 1, width dilation 1;
            // Winograd 3×3 and 5×5 ones at stride 1, dilation 1, in one group. The
            // rule takes Winograd for 5×5 only, F(2×2) for outputs under 16 wide (all
            // here).
            let covered = g.stride == (1, 1) && g.kw == 3 && g.dilation.1 == 1;
            let wino = g.kh == g.kw
                && matches!(g.kh, 3 | 5)
                && g.stride == (1, 1)
                && g.dilation == (1, 1)
                && g.groups == 1;
            let want = match forced_filter {
                Some(JitConvFilter::Im2col) => JitConvFilter::Im2col,
                Some(a @ (JitConvFilter::Winograd2 | JitConvFilter::Winograd4)) if wino => a,
                _ if wino && g.kh == 5 => JitConvFilter::Winograd2,
                _ if covered => JitConvFilter::Direct,
                _ => JitConvFilter::Im2col,
            };
            assert_eq!(
                algo, want,
                "{src} ({forced_filter:?}): filter gradient of {g:?}"
            );
            direct_filters += usize::from(algo == JitConvFilter::Direct);
            winograd_filters += usize::from(matches!(
                algo,
                JitConvFilter::Winograd2 | JitConvFilter::Winograd4
            ));
        }
        let data: Vec<JitConvData> = steps
            .iter()
            .filter_map(|s| match s.native {
                Some(NativeOp::ConvBackwardData { algo, .. }) => Some(algo),
                _ => None,
            })
            .collect();
        let expect = match forced {
            _ if !forward => JitConvData::Col2im,
            Some(JitConvData::Winograd2 | JitConvData::Winograd4) if !wino => JitConvData::Im2col,
            Some(a) => a,
            // The rule follows the cost table's forward pick: any routine that runs
            // the gradient as a forward conv (checked below), never col2im.
            None => data[0],
        };
        if forced.is_none() && forward {
            assert_ne!(data[0], JitConvData::Col2im, "{src}: the rule took col2im");
        }
        assert_eq!(
            data,
            vec![expect],
            "{src} ({forced:?}): data gradient steps"
        );
    }
    match forced_filter {
        None | Some(JitConvFilter::Direct) => assert!(
            direct_filters >= 8,
            "{direct_filters} direct filter gradients"
        ),
        Some(JitConvFilter::Winograd2 | JitConvFilter::Winograd4) => assert!(
            winograd_filters >= 6,
            "{winograd_filters} Winograd filter gradients"
        ),
        Some(JitConvFilter::Im2col) => {}
    }
}

/// Every data-gradient algorithm under every ISA this CPU has (the filter gradient by
/// its rule), and the filter gradient by im2col, each in a child process running
/// [`backward_convs_match_the_reference`].
#[test]
fn every_algorithm_and_isa_agrees() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    for isa in fnet::jit::kernels::isa::Isa::available() {
        for (algo, filter) in [
            ("auto", "auto"),
            ("col2im", "auto"),
            ("direct", "auto"),
            ("im2col", "auto"),
            ("winograd2", "auto"),
            ("winograd4", "auto"),
            ("auto", "im2col"),
            ("auto", "winograd2"),
            ("auto", "winograd4"),
        ] {
            let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "backward_convs_match_the_reference",
                    "--test-threads",
                    "1",
                ])
                .env("FNET_JIT_ISA", isa.to_string())
                .env("FNET_JIT_CONV_BWD", algo)
                .env("FNET_JIT_CONV_FILTER", filter)
                .env(CHILD, "1")
                .output()
                .expect("the test binary runs");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let what = format!(
                "FNET_JIT_ISA={isa} FNET_JIT_CONV_BWD={algo} FNET_JIT_CONV_FILTER={filter}"
            );
            assert!(out.status.success(), "{what}:\n{text}");
            assert!(text.contains("1 passed"), "{what}: ran nothing:\n{text}");
        }
    }
}

/// A bad `FNET_JIT_CONV_BWD` or `FNET_JIT_CONV_FILTER` is an error that names the
/// variable, not a panic.
#[test]
fn a_bad_variable_is_an_error() {
    for var in ["FNET_JIT_CONV_BWD", "FNET_JIT_CONV_FILTER"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
            .args(["bench", "--training", "--backend", "jit", "--batch", "2"])
            .args(["--iters", "1"])
            .arg(common::example_path("lenet_mnist"))
            .env(var, "sideways")
            .output()
            .expect("fnetc runs");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(&format!("{var}=sideways")), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}
