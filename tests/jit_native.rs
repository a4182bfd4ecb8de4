//! The JIT's native conv steps (`kernel_ir::native`, `jit::native`) against the
//! reference interpreter: each algorithm forced through the target
//! (`NativeConvs::Force`, what `FNET_JIT_CONV` sets), on awkward convs (odd sizes, 1×1
//! maps, channel counts that are no multiple of 8 or 16, padding 0/1/2, stride 2,
//! groups, dilation, 1-D) with every epilogue (bias, folded batch norm, residual add,
//! ReLU), and under every ISA this CPU has (child processes with `FNET_JIT_ISA`).
//! Each case also checks that the plan holds the native steps the forced algorithm
//! should give, so a lowering that fell back to the generated kernel would fail.

mod common;

use common::models::{input, program, weights};
use fnet::backend::{Backend, ReferenceBackend};
use fnet::ir::op::ConvAlgo;
use fnet::ir::op::ConvAlgo::Auto;
use fnet::kernel_ir::native::{choose, ConvGeometry, JitConv, NativeConvs, NativeOp};
use fnet::kernel_ir::plan::{build_plan_in, Target};
use fnet::runtime::Mode;

/// Set in the child processes of [`every_isa_agrees`].
const CHILD: &str = "FNET_JIT_NATIVE_CHILD";

/// (body, input shape, convs Winograd covers, convs in all): one model each.
const CASES: &[(&str, &[usize], usize, usize)] = &[
    ("return x |> conv2d(7, 3, padding: 1)", &[2, 5, 9, 7], 1, 1),
    (
        "return x |> conv2d(19, 3, padding: 1)",
        &[1, 17, 1, 1],
        1,
        1,
    ),
    (
        "return x |> conv2d(17, 3, padding: 2, bias: false)",
        &[2, 3, 6, 5],
        1,
        1,
    ),
    ("return x |> conv2d(9, 3)", &[1, 33, 11, 13], 1, 1),
    (
        "return x |> conv2d(10, 3, stride: 2, padding: 1)",
        &[2, 6, 9, 9],
        0,
        1,
    ),
    (
        "return x |> conv2d(6, 3, padding: 1, groups: 2)",
        &[2, 4, 9, 7],
        0,
        1,
    ),
    (
        "return x |> conv2d(4, 3, dilation: 2, padding: 2)",
        &[1, 2, 11, 13],
        0,
        1,
    ),
    ("return x |> conv2d(5, 1)", &[2, 9, 6, 6], 0, 1),
    // 5×5 (FlexNet's cropped kernels): Winograd F(m×m, 5×5).
    (
        "return x |> conv2d(12, 5, padding: 2) |> batchnorm |> relu",
        &[2, 6, 11, 9],
        1,
        1,
    ),
    ("return x |> conv2d(5, 5)", &[1, 3, 9, 12], 1, 1),
    ("return x |> conv2d(5, 1, stride: 2)", &[2, 9, 7, 6], 0, 1),
    (
        "return x |> conv2d(6, [5, 3], padding: [2, 1])",
        &[2, 3, 9, 8],
        0,
        1,
    ),
    (
        "return x |> conv2d(16, 3, padding: 1) |> batchnorm |> relu",
        &[2, 8, 16, 16],
        1,
        1,
    ),
    (
        "return x |> conv2d(6, 3, padding: 1, bias: true) |> batchnorm",
        &[2, 3, 10, 9],
        1,
        1,
    ),
    (
        "h = x |> conv2d(8, 3, padding: 1, bias: false) |> batchnorm\n  return relu(h + x)",
        &[2, 8, 10, 10],
        1,
        1,
    ),
    (
        "h = x |> conv2d(5, 3, padding: 1) |> relu\n  return h + x",
        &[2, 5, 7, 7],
        1,
        1,
    ),
    (
        "p = x |> conv2d(4, 3, padding: 1)\n  q = x |> conv2d(4, 1)\n  return relu(p + q)",
        &[1, 3, 6, 11],
        1,
        2,
    ),
    (
        "return x |> conv1d(8, 3, stride: 2, padding: 1) |> relu",
        &[2, 3, 37],
        0,
        1,
    ),
];

fn source(body: &str, shape: &[usize]) -> String {
    let dims = match shape.len() {
        3 => format!("[B, {}, {}]", shape[1], shape[2]),
        _ => format!("[B, {}, {}, {}]", shape[1], shape[2], shape[3]),
    };
    format!("model t {{\n  input x: f32{dims}\n  {body}\n}}")
}

fn target(native: NativeConvs) -> Target {
    Target {
        native,
        ..fnet::backend::JitBackend::default_target()
    }
}

/// Native conv steps of each algorithm in the plan of `src` under `native`.
fn native_steps(src: &str, shape: &[usize], native: NativeConvs) -> Vec<JitConv> {
    let m = program(src);
    let plan = build_plan_in(
        &m.graph,
        &weights(&m, 7),
        &[shape.to_vec()],
        target(native),
        Mode::Eval,
    )
    .unwrap_or_else(|e| panic!("{src}: {e}"));
    plan.steps
        .iter()
        .filter_map(|s| match s.native {
            Some(NativeOp::Conv2d { algo, .. }) => Some(algo),
            _ => None,
        })
        .collect()
}

/// Every case under `native` equals the interpreter, with `rel` of the output's
/// magnitude; F(4×4) loses more to rounding than the others (docs/jit_kernels.md).
fn all_cases_agree(native: NativeConvs, rel: f64) {
    for &(body, shape, winograd, convs) in CASES {
        let src = source(body, shape);
        let m = program(&src);
        let store = weights(&m, 7);
        let x = input(shape, 3);
        let shapes = vec![x.shape.clone()];
        let want = ReferenceBackend
            .prepare(m.graph.clone(), store.clone(), &shapes)
            .and_then(|mut p| p.forward(std::slice::from_ref(&x)))
            .unwrap_or_else(|e| panic!("{src}: reference: {e}"));
        let got = common::jit::backend()
            .with_target(target(native))
            .prepare(m.graph.clone(), store.clone(), &shapes)
            .and_then(|mut p| p.forward(std::slice::from_ref(&x)))
            .unwrap_or_else(|e| panic!("{src} ({native:?}): jit: {e}"));
        for (g, w) in got.iter().zip(&want) {
            common::assert_close(&format!("{src} ({native:?})"), g, w, rel);
        }
        let steps = native_steps(&src, shape, native);
        let expect = match native {
            NativeConvs::Force(JitConv::Generated) | NativeConvs::Off => vec![],
            // The sliding-window direct conv covers every stride (on the phases).
            NativeConvs::Force(JitConv::Direct) => vec![JitConv::Direct; convs],
            NativeConvs::Force(JitConv::Im2col) => vec![JitConv::Im2col; convs],
            NativeConvs::Force(w) => {
                let mut e = vec![w; winograd];
                e.extend(vec![JitConv::Im2col; convs - winograd]);
                e
            }
            NativeConvs::Auto => steps.clone(),
        };
        let mut sorted = steps.clone();
        sorted.sort_by_key(|a| a.name());
        let mut expect = expect;
        expect.sort_by_key(|a| a.name());
        assert_eq!(sorted, expect, "{src} ({native:?}): native steps");
    }
}

fn every_mode_agrees() {
    for native in [
        NativeConvs::Force(JitConv::Im2col),
        NativeConvs::Force(JitConv::Winograd2),
        NativeConvs::Force(JitConv::Direct),
        NativeConvs::Force(JitConv::Generated),
        NativeConvs::Auto,
    ] {
        all_cases_agree(native, 2e-5);
    }
    all_cases_agree(NativeConvs::Force(JitConv::Winograd4), 1e-4);
}

/// Under the ISA this process detects (or `FNET_JIT_ISA` forces, in a child).
#[test]
fn native_convs_match_the_reference() {
    every_mode_agrees();
}

/// Every ISA this CPU has, each in a child process running
/// [`native_convs_match_the_reference`] with `FNET_JIT_ISA` set.
#[test]
fn every_isa_agrees() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    for isa in fnet::jit::kernels::isa::Isa::available() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "native_convs_match_the_reference",
                "--test-threads",
                "1",
            ])
            .env("FNET_JIT_ISA", isa.to_string())
            .env(CHILD, "1")
            .output()
            .expect("the test binary runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "FNET_JIT_ISA={isa}:\n{text}");
        assert!(
            text.contains("1 passed"),
            "FNET_JIT_ISA={isa}: ran nothing:\n{text}"
        );
    }
}

/// A bad `FNET_JIT_ISA` is an error that names the variable, not a panic.
#[test]
fn a_bad_isa_is_an_error() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args([
            "bench",
            "examples/lenet_mnist.fnet",
            "--backend",
            "jit",
            "--iters",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FNET_JIT_ISA", "sse9")
        .output()
        .expect("fnetc runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FNET_JIT_ISA"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args([
            "bench",
            "examples/lenet_mnist.fnet",
            "--backend",
            "jit",
            "--iters",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FNET_JIT_CONV", "winograd9")
        .output()
        .expect("fnetc runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FNET_JIT_CONV=winograd9"), "{text}");
    assert!(text.contains("winograd2"), "{text}");
}

/// The forced choice falls back where the algorithm does not apply, and asymmetric
/// padding (causal, `same` with an even kernel) stays a generated kernel.
#[test]
fn choice_falls_back_where_an_algorithm_does_not_apply() {
    let g = |k: usize, stride: usize, groups: usize| ConvGeometry {
        n: 1,
        pad: (1, 1),
        groups,
        ..geometry(k, stride)
    };
    let w4 = NativeConvs::Force(JitConv::Winograd4);
    assert_eq!(choose(w4, &g(3, 1, 1), true, Auto), JitConv::Winograd4);
    assert_eq!(choose(w4, &g(3, 2, 1), true, Auto), JitConv::Im2col);
    assert_eq!(choose(w4, &g(3, 1, 2), true, Auto), JitConv::Im2col);
    assert_eq!(choose(w4, &g(5, 1, 1), true, Auto), JitConv::Winograd4);
    assert_eq!(choose(w4, &g(7, 1, 1), true, Auto), JitConv::Im2col);
    assert_eq!(choose(w4, &g(3, 1, 1), false, Auto), JitConv::Generated);
    assert_eq!(
        choose(NativeConvs::Off, &g(3, 1, 1), true, Auto),
        JitConv::Generated
    );
    let direct = NativeConvs::Force(JitConv::Direct);
    assert_eq!(choose(direct, &g(5, 1, 2), true, Auto), JitConv::Direct);
    assert_eq!(choose(direct, &g(3, 2, 1), true, Auto), JitConv::Direct);
    // Auto follows the conv's `algo` (the cost table's choice), falling back where
    // the written algorithm does not apply; `auto` (no pass ran) takes the rule.
    let auto = NativeConvs::Auto;
    assert_eq!(
        choose(auto, &g(3, 1, 1), true, ConvAlgo::Direct),
        JitConv::Direct
    );
    // A program's `direct` on a stride: the sliding windows on the phases.
    assert_eq!(
        choose(auto, &g(3, 2, 1), true, ConvAlgo::Direct),
        JitConv::Direct
    );
    assert_eq!(
        choose(auto, &g(3, 1, 1), true, ConvAlgo::Fft),
        JitConv::Generated
    );
    assert_eq!(
        choose(auto, &g(3, 1, 1), true, ConvAlgo::Im2col),
        JitConv::Im2col
    );
    assert_eq!(
        choose(auto, &g(3, 1, 1), true, ConvAlgo::Winograd4),
        JitConv::Winograd4
    );
    assert_eq!(
        choose(auto, &g(3, 2, 1), true, ConvAlgo::Winograd2),
        JitConv::Im2col
    );
    assert_eq!(choose(auto, &g(3, 1, 1), true, Auto), JitConv::Direct);
    assert_eq!(choose(auto, &g(5, 1, 2), true, Auto), JitConv::Direct);
    assert_eq!(choose(auto, &g(3, 2, 1), true, Auto), JitConv::Direct);
    for (body, shape) in [
        (
            "return x |> conv1d(5, 5, padding: causal, dilation: 2)",
            &[2, 3, 50][..],
        ),
        ("return x |> conv2d(4, 2, padding: same)", &[1, 3, 7, 7]),
    ] {
        let src = source(body, shape);
        assert_eq!(native_steps(&src, shape, w4), vec![], "{src}");
        assert_eq!(
            native_steps(&src, shape, NativeConvs::Auto),
            vec![],
            "{src}"
        );
    }
}

/// `fnetc compile --explain --cost-model jit` prints each conv's choice among the
/// JIT's algorithms, Winograd's estimates beside the others for 3×3 stride-1 convs
/// and `n/a` for a strided one; other tables' explanations do not list Winograd.
#[test]
fn explain_prints_the_jit_tables_choice() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let run = |table: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fnetc"))
            .args([
                "compile",
                "examples/resnet20_cifar10.fnet",
                "--explain",
                "--cost-model",
                table,
                "--batch",
                "64",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("fnetc runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    let jit = run("jit");
    assert!(
        jit.contains("costed for the CPU JIT by cost table `jit`"),
        "{jit}"
    );
    let algos: Vec<&str> = jit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("algorithm: "))
        .collect();
    assert_eq!(algos.len(), 19, "{jit}");
    for a in &algos {
        for name in ["direct", "im2col", "fft", "winograd2", "winograd4"] {
            assert!(a.contains(name), "{a}");
        }
        let chosen = a.split(' ').next().unwrap_or("");
        assert!(a.contains(&format!("{chosen}* ")), "{a}");
    }
    // The 3×3 stride-1 convs have Winograd estimates; the stride-2 ones do not.
    assert!(algos.iter().any(|a| a.contains("winograd2 n/a")), "{jit}");
    assert!(algos.iter().any(|a| !a.contains("winograd2 n/a")), "{jit}");
    let cpu = run("opencl-cpu");
    assert!(!cpu.contains("winograd"), "{cpu}");
}

/// The data gradient's choice: a forced routine where it covers the conv (Winograd
/// falling back to im2col where the gradient is a forward conv, anything to col2im
/// where it is not), else the cheapest estimate among the routines that cover it,
/// else the direct conv (a forward conv) or col2im.
#[test]
fn data_gradient_choice_and_fallbacks() {
    use fnet::kernel_ir::native::{choose_data, JitConvData::*};
    let g = geometry;
    let est = [
        (Col2im, 5.0),
        (Direct, 3.0),
        (Im2col, 4.0),
        (Winograd2, 1.0),
        (Winograd4, 2.0),
    ];
    assert_eq!(choose_data(&g(3, 1), None, &est), Winograd2);
    assert_eq!(choose_data(&g(5, 1), None, &est), Winograd2);
    // A 7×7 conv's gradient is no Winograd's, a strided one's no forward conv.
    assert_eq!(choose_data(&g(7, 1), None, &est), Direct);
    assert_eq!(choose_data(&g(3, 2), None, &est), Col2im);
    let unknown = [(Winograd2, f64::INFINITY)];
    assert_eq!(choose_data(&g(3, 1), None, &unknown), Direct);
    assert_eq!(choose_data(&g(3, 1), None, &[]), Direct);
    assert_eq!(choose_data(&g(3, 2), None, &[]), Col2im);
    for forced in [Col2im, Direct, Im2col, Winograd4] {
        assert_eq!(choose_data(&g(3, 1), Some(forced), &est), forced);
    }
    assert_eq!(choose_data(&g(7, 1), Some(Winograd2), &est), Im2col);
    assert_eq!(choose_data(&g(3, 2), Some(Direct), &est), Col2im);
}

/// A 16 → 16 channel conv on 8×8 maps of two images, `k × k` at `stride`, padded by
/// `k / 2`.
fn geometry(k: usize, stride: usize) -> ConvGeometry {
    ConvGeometry {
        n: 2,
        ci: 16,
        h: 8,
        w: 8,
        co: 16,
        kh: k,
        kw: k,
        stride: (stride, stride),
        pad: (k / 2, k / 2),
        dilation: (1, 1),
        groups: 1,
    }
}

/// The filter gradient's choice: a forced routine where it covers the conv, else the
/// cheapest estimate among the routines that cover it (Winograd for 3×3 kernels only
/// with the AVX-512 strips), else the sliding windows (3-wide kernels at stride 1
/// and width dilation 1, any height, height dilation and groups) or im2col.
#[test]
fn filter_gradient_choice_and_fallbacks() {
    use fnet::kernel_ir::native::{choose_filter, JitConvFilter::*};
    let est = [
        (Im2col, 4.0),
        (Direct, 3.0),
        (Winograd2, 2.0),
        (Winograd4, 1.0),
    ];
    let direct = [
        ConvGeometry {
            kh: 1,
            ..geometry(3, 1)
        },
        ConvGeometry {
            kh: 5,
            dilation: (2, 1),
            groups: 4,
            ..geometry(3, 1)
        },
    ];
    let im2col = [
        geometry(3, 2),
        geometry(1, 1),
        ConvGeometry {
            dilation: (1, 2),
            ..geometry(3, 1)
        },
    ];
    for g in &direct {
        assert_eq!(choose_filter(g, None, true, &est), Direct, "{g:?}");
        assert_eq!(choose_filter(g, Some(Winograd4), true, &est), Direct);
        assert_eq!(choose_filter(g, Some(Im2col), true, &est), Im2col);
    }
    for g in &im2col {
        for forced in [None, Some(Direct), Some(Winograd2)] {
            assert_eq!(choose_filter(g, forced, true, &est), Im2col, "{g:?}");
        }
    }
    // 3×3: Winograd by cost only with the strips; forced in any layout.
    let g = geometry(3, 1);
    assert_eq!(choose_filter(&g, None, true, &est), Winograd4);
    assert_eq!(choose_filter(&g, None, false, &est), Direct);
    assert_eq!(choose_filter(&g, Some(Winograd2), false, &est), Winograd2);
    assert_eq!(choose_filter(&g, None, true, &[]), Direct);
    // 5×5 has no sliding windows, and its Winograd needs no strips.
    let five = geometry(5, 1);
    assert_eq!(choose_filter(&five, None, false, &est), Winograd4);
    assert_eq!(choose_filter(&five, Some(Direct), false, &est), Winograd4);
    assert_eq!(choose_filter(&five, None, false, &[]), Im2col);
}

/// With the committed JIT table, ResNet-20's training convs at batch 64 take the
/// routines measured fastest there (`src/cost/jit_points.csv`): F(4×4) for both
/// gradients of its stride-1 convs; col2im and im2col for its downsampling convs.
#[test]
fn resnet20_backward_convs_by_the_jit_table() {
    use fnet::cost::{ConvShape, CostTable, CostTableId};
    use fnet::ir::op::Padding;
    use fnet::kernel_ir::native::{choose_data, choose_filter, JitConvData, JitConvFilter};
    let table = CostTable::of(CostTableId::Jit);
    let pick = |ci, co, hw, stride| {
        let mut s = ConvShape::plain(
            64,
            ci,
            co,
            &[hw, hw],
            &[3, 3],
            Padding::Explicit(vec![(1, 1); 2]),
        );
        s.stride = vec![stride, stride];
        let g = ConvGeometry::of_shape(&s).expect("symmetric");
        let est = table.estimate_backward(&s).expect("backward rows");
        (
            choose_filter(&g, None, true, &est.filter),
            choose_data(&g, None, &est.data),
        )
    };
    for (c, hw) in [(16, 32), (32, 16), (64, 8)] {
        assert_eq!(
            pick(c, c, hw, 1),
            (JitConvFilter::Winograd4, JitConvData::Winograd4),
            "{c} channels"
        );
    }
    for (c, hw) in [(16, 32), (32, 16)] {
        assert_eq!(
            pick(c, 2 * c, hw, 2),
            (JitConvFilter::Im2col, JitConvData::Col2im)
        );
    }
}
