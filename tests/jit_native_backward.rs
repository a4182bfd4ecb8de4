//! The JIT's native backward convs (`NativeOp::ConvBackwardFilter` / `ConvBackwardData`,
//! `jit::kernels::conv_backward`, `conv_filter_direct`, `winograd_filter`) against the f64 interpreter's
//! training step: each data-gradient algorithm forced (`FNET_JIT_CONV_BWD`, read when
//! the plan is lowered, so each runs in a child process, as each ISA does with
//! `FNET_JIT_ISA`), and the filter gradient by im2col, F(2×2) and F(4×4)
//! (`FNET_JIT_CONV_FILTER`), on awkward convs: odd sizes, stride 2, padding 0/1/2,
//! groups, dilation, channel counts that are no multiple of 8 or 16, 1-D. Each model is a 1×1 conv (so the awkward conv's input
//! has a gradient), the awkward conv, a global average pool and a linear layer: no
//! ReLU, so no kink can move a gradient. Each case also checks the plan's native
//! steps, so a lowering that fell back to the generated kernels would fail, and that
//! unforced it took the routines the JIT cost table ranks cheapest.

mod common;

use common::models::{input, program};
use common::{assert_close, noise, perturbed_weights};
use fnet::autodiff::{differentiate, Loss};
use fnet::backend::{Backend, Prepared, ReferenceBackend};
use fnet::cost::{ConvShape, CostTable, CostTableId};
use fnet::ir::op::Padding;
use fnet::kernel_ir::native::{self, ConvGeometry, JitConvData, JitConvFilter, NativeOp};
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
        let one_d = shape.len() == 3;
        let table = CostTable::of(CostTableId::Jit);
        let estimate = |g: &ConvGeometry| {
            table
                .estimate_backward(&forward_shape(g, one_d))
                .expect("the JIT table has backward rows")
        };
        for (g, algo) in filters {
            // The sliding windows take 3-wide kernels at stride 1, width dilation 1;
            // Winograd 3×3 and 5×5 ones at stride 1, dilation 1, in one group. Unforced,
            // the cheapest by the JIT table's backward rows (3×3 Winograd only with the
            // AVX-512 strips).
            let covered = g.stride == (1, 1) && g.kw == 3 && g.dilation.1 == 1;
            let wino = g.winograd_applies();
            let strips = native::strips_available();
            let want = match forced_filter {
                Some(JitConvFilter::Im2col) => JitConvFilter::Im2col,
                Some(a @ (JitConvFilter::Winograd2 | JitConvFilter::Winograd4)) if wino => a,
                Some(JitConvFilter::Direct) if covered => JitConvFilter::Direct,
                _ => native::choose_filter(&g, None, strips, &estimate(&g).filter),
            };
            assert_eq!(
                algo, want,
                "{src} ({forced_filter:?}): filter gradient of {g:?}"
            );
            match algo {
                JitConvFilter::Direct => assert!(covered, "{src}: {g:?}"),
                JitConvFilter::Winograd2 | JitConvFilter::Winograd4 => {
                    assert!(wino, "{src}: {g:?}");
                    let forced = forced_filter.is_some();
                    assert!(forced || strips || g.kh != 3, "{src}: tiled 3×3 Winograd");
                }
                JitConvFilter::Im2col => {}
            }
            direct_filters += usize::from(algo == JitConvFilter::Direct);
            winograd_filters += usize::from(matches!(
                algo,
                JitConvFilter::Winograd2 | JitConvFilter::Winograd4
            ));
        }
        let data: Vec<(ConvGeometry, JitConvData)> = steps
            .iter()
            .filter_map(|s| match s.native {
                Some(NativeOp::ConvBackwardData { geometry, algo }) => Some((geometry, algo)),
                _ => None,
            })
            .collect();
        assert_eq!(data.len(), 1, "{src}: one native data gradient");
        let (g, got) = data[0];
        let expect = match forced {
            _ if !forward => JitConvData::Col2im,
            Some(JitConvData::Winograd2 | JitConvData::Winograd4) if !wino => JitConvData::Im2col,
            Some(a) => a,
            None => native::choose_data(&g, None, &estimate(&g).data),
        };
        assert_eq!(got, expect, "{src} ({forced:?}): data gradient step");
    }
    match forced_filter {
        Some(JitConvFilter::Direct) => assert!(
            direct_filters >= 8,
            "{direct_filters} direct filter gradients"
        ),
        Some(JitConvFilter::Winograd2 | JitConvFilter::Winograd4) => assert!(
            winograd_filters >= 6,
            "{winograd_filters} Winograd filter gradients"
        ),
        None | Some(JitConvFilter::Im2col) => {}
    }
}

/// The cost model's view of the forward conv of `g`, as the lowering builds it (a
/// 1-D conv on its one axis).
fn forward_shape(g: &ConvGeometry, one_d: bool) -> ConvShape {
    let pick = |(h, w): (usize, usize)| -> Vec<u64> {
        if one_d {
            vec![w as u64]
        } else {
            vec![h as u64, w as u64]
        }
    };
    let pads = pick(g.pad).into_iter().map(|p| (p, p)).collect();
    ConvShape {
        batch: g.n as u64,
        ci: g.ci as u64,
        co: g.co as u64,
        input: pick((g.h, g.w)),
        kernel: pick((g.kh, g.kw)),
        stride: pick(g.stride),
        dilation: pick(g.dilation),
        groups: g.groups as u64,
        padding: Padding::Explicit(pads),
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

/// Seconds from `fnetc`'s `fmt_seconds` text (`892us`, `1.81ms`, `2.0s`, `n/a`).
fn seconds(text: &str) -> f64 {
    let (num, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return f64::INFINITY;
    };
    num.parse::<f64>().map_or(f64::INFINITY, |v| v * scale)
}

/// `fnetc compile --training --explain --cost-model jit` lists every backward conv of
/// ResNet-20 with the routine of the least estimate among those that cover it (3×3
/// Winograd filter gradients left out, and said so, without the AVX-512 strips), and
/// the plan the JIT lowers for the same batch runs exactly those routines; a forced
/// routine, or the generated kernels, are said to be forced.
#[test]
fn explain_shows_the_backward_routines_the_plan_runs() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let batch = 8;
    let text = explain_training(&batch.to_string(), None);
    // name → (filter gradient?, chosen routine)
    let mut explained = std::collections::BTreeMap::new();
    let blocks: Vec<&str> = text.split("\nbackward conv ").skip(1).collect();
    for block in &blocks {
        let head = block.lines().next().unwrap_or("");
        let (name, kind) = head.split_once(" (").expect("name (kind)");
        let filter = kind.starts_with("filter");
        let line = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("algorithm: "))
            .unwrap_or_else(|| panic!("{block}"));
        let chosen = line.split(' ').next().unwrap_or("").to_string();
        assert!(line.contains("(by cost model)"), "{line}");
        let no_strips = block.contains("no AVX-512 strip layout");
        let estimates: Vec<(&str, f64)> = line
            .split_once("estimated ")
            .expect("estimates")
            .1
            .split(", ")
            .map(|e| {
                let (n, t) = e.split_once(' ').expect("name time");
                (n, seconds(t))
            })
            .collect();
        let least = estimates
            .iter()
            .filter(|(n, _)| !(no_strips && filter && n.starts_with("winograd")))
            .map(|&(_, t)| t)
            .fold(f64::INFINITY, f64::min);
        let mine = estimates
            .iter()
            .find(|(n, _)| n.strip_suffix('*') == Some(chosen.as_str()))
            .unwrap_or_else(|| panic!("no starred {chosen}: {line}"));
        assert_eq!(mine.1, least, "{name}: {line}");
        explained.insert(name.to_string(), (filter, chosen));
    }
    // 19 convs: 19 filter gradients, 18 data gradients (the image's is pruned).
    let filters = explained.values().filter(|(f, _)| *f).count();
    assert_eq!((filters, explained.len() - filters), (19, 18), "{text}");
    // The plan of the same training step.
    let m = common::models::example("resnet20_cifar10.fnet");
    let tg = differentiate(&m.graph, &Loss::default()).unwrap_or_else(|e| panic!("{e}"));
    let params: ParamStore<f32> = perturbed_weights(&m.graph, 5);
    let shapes = vec![vec![batch, 3, 32, 32], vec![batch]];
    let run = common::jit::backend()
        .prepare_plan(&tg.graph, &params, &shapes)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut planned = std::collections::BTreeMap::new();
    for s in &run.executable().plan.steps {
        let step = match s.native {
            Some(NativeOp::ConvBackwardFilter { algo, .. }) => (true, algo.name().to_string()),
            Some(NativeOp::ConvBackwardData { algo, .. }) => (false, algo.name().to_string()),
            _ => continue,
        };
        planned.insert(s.layer.clone(), step);
    }
    assert_eq!(planned, explained);
    // A forced routine is said to be forced.
    let text = explain_training("1", Some(("FNET_JIT_CONV_FILTER", "im2col")));
    let forced = "algorithm: im2col (forced by FNET_JIT_CONV_FILTER)";
    assert_eq!(text.matches(forced).count(), 19, "{text}");
    let text = explain_training("1", Some(("FNET_JIT_CONV_BWD", "generated")));
    let generated = "algorithm: generated kernels (FNET_JIT_CONV_BWD=generated)";
    assert_eq!(text.matches(generated).count(), 37, "{text}");
}

/// `fnetc compile examples/resnet20_cifar10.fnet --training --explain --cost-model jit
/// --batch BATCH` with `env` set: its standard output.
fn explain_training(batch: &str, env: Option<(&str, &str)>) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"));
    cmd.args(["compile", "examples/resnet20_cifar10.fnet", "--training"])
        .args(["--explain", "--cost-model", "jit", "--batch", batch])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("fnetc runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    String::from_utf8_lossy(&out.stdout).to_string()
}
