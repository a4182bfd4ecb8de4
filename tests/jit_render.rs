//! Every kernel-IR expression and statement form, JIT-compiled and run against a
//! naive evaluator of the same kernel (`common::kernel_eval`: a tree walk over
//! `Vec<f32>` lanes, one grid point at a time). Every operation the IR has is exactly rounded in IEEE f32
//! (or integer), so the two agree bit for bit; NaNs are compared as NaNs. Each kernel
//! runs at every vector width the IR allows (1, 2, 4, 8, 16: scalars, and one, two and
//! four `f32x4` parts) and with its grid split into several chunks, so the flattened
//! point ranges and their carries are tested too.

mod common;

use common::kernel_eval::{naive, Naive};
use fnet::jit::{run_kernel, Compiler};
use fnet::kernel_ir::build::*;
use fnet::kernel_ir::typecheck::check;
use fnet::kernel_ir::{BinOp, Func, Kernel, Stmt, Ty};
use std::collections::HashMap;

/// Inputs with the values that tell semantics apart: signed zeros, infinities, NaN,
/// negatives (for sqrt and log), and large magnitudes.
fn data(n: usize, seed: u32) -> Vec<f32> {
    let special = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -2.5,
        1e30,
    ];
    (0..n)
        .map(|i| {
            let h = fnet::runtime::dropout::hash2(i as u32, seed);
            if h.is_multiple_of(11) {
                special[(h / 11) as usize % special.len()]
            } else {
                (h as i32) as f32 / 2.0f32.powi(29)
            }
        })
        .collect()
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Type-checks `k` (inserting broadcasts), then runs it on the JIT with 1, 3 and 7
/// chunks and on the naive evaluator, from the same buffers; every buffer must agree.
#[track_caller]
fn check_kernel(mut k: Kernel, lens: &[usize]) {
    check(&mut k).unwrap_or_else(|e| panic!("{e}"));
    let bufs: Vec<Vec<f32>> = (lens.iter().enumerate())
        .map(|(i, &n)| data(n, i as u32 + 1))
        .collect();
    let mut want = bufs.clone();
    naive(&k, &mut want);
    let compiler = Compiler::new().unwrap_or_else(|e| panic!("{e}"));
    for chunks in [1, 3, 7] {
        let mut got = bufs.clone();
        // SAFETY: every kernel here indexes within the lengths it is given.
        unsafe { run_kernel(&compiler, &k, &mut got, chunks) }.unwrap_or_else(|e| panic!("{e}"));
        for (p, (g, w)) in k.params.iter().zip(got.iter().zip(&want)) {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                assert!(
                    same(g, w),
                    "{} ({chunks} chunks): `{}`[{i}] = {g}, the naive evaluator's {w}",
                    k.name,
                    p.name
                );
            }
        }
    }
}

const WIDTHS: [u8; 5] = [1, 2, 4, 8, 16];

#[test]
fn float_arithmetic_fma_min_max_and_sqrt_at_every_width() {
    for w in WIDTHS {
        let x = || load("x", var("i"), w);
        let z = || load("z", var("i"), w);
        let body = vec![
            let_("i", Ty::I32, gid(0) * w as usize),
            let_("a", Ty::f32x(w), fma(x(), z(), splat(float(1.5), w))),
            assign("a", var("a") - x() / z() * z()),
            let_(
                "m",
                Ty::f32x(w),
                bin(BinOp::Min, x(), z()) + max(x(), float(0.0)),
            ),
            assign("m", var("m") + bin(BinOp::Min, float(0.25), x())),
            store("y", var("i"), var("a") + call(Func::Sqrt, var("m")), w),
            store("u", var("i"), var("m") * float(-3.0), w),
        ];
        let k = kernel(
            &format!("arith{w}"),
            vec![
                param("x", true),
                param("z", true),
                param("y", false),
                param("u", false),
            ],
            body,
            vec![13],
            0,
        );
        let n = 13 * w as usize;
        check_kernel(k, &[n, n, n, n]);
    }
}

#[test]
fn calls_of_exp_erf_sin_log_at_every_width() {
    for f in [Func::Exp, Func::Erf, Func::Sin, Func::Log, Func::Sqrt] {
        for w in WIDTHS {
            let body = vec![
                let_("i", Ty::I32, gid(0) * w as usize),
                store("y", var("i"), call(f, load("x", var("i"), w)), w),
            ];
            let k = kernel(
                &format!("{f:?}{w}"),
                vec![param("x", true), param("y", false)],
                body,
                vec![9],
                0,
            );
            check_kernel(k, &[9 * w as usize, 9 * w as usize]);
        }
    }
}

/// Integer arithmetic (wrapping, C's truncating `/` and `%` on negatives), min, max,
/// comparisons, `&&`, conversions both ways (saturating, NaN to 0) and the dropout
/// hash, each stored as a float.
#[test]
fn integer_ops_conversions_and_the_hash() {
    let g = || gid(0) - 20usize;
    let ints = [
        g() * 7usize + 3usize,
        g() * int(1_000_000_007) - int(2_000_000_000),
        bin(BinOp::Div, g(), int(3)),
        bin(BinOp::Rem, g(), int(3)),
        bin(BinOp::Div, g() * 5usize, int(-7)),
        bin(BinOp::Rem, g(), gid(0) + 1usize),
        bin(BinOp::Min, g(), int(4)),
        bin(BinOp::Max, g(), int(-4)),
        lt(g(), int(0)),
        le(g(), int(0)),
        eq(g(), int(0)),
        and(lt(int(-10), g()), lt(g(), int(10))),
        to_int(load("x", gid(0), 1) * float(1e9)),
        to_int(load("x", gid(0), 1)),
        bin(BinOp::Rem, hash(g(), int(12345)), int(65536)),
        bin(BinOp::Div, hash(int(-7), g()), int(65536)),
    ];
    let mut body = Vec::new();
    for (j, e) in ints.iter().enumerate() {
        body.push(store(
            "y",
            gid(0) * (ints.len() + 1) + j,
            to_float(e.clone()),
            1,
        ));
    }
    body.push(store(
        "y",
        gid(0) * (ints.len() + 1) + ints.len(),
        select(lt(load("x", gid(0), 1), float(0.5)), float(1.0), float(2.0))
            + to_float(gid(0) * 1000usize),
        1,
    ));
    let k = kernel(
        "ints",
        vec![param("x", true), param("y", false)],
        body,
        vec![41],
        0,
    );
    check_kernel(k, &[41, 41 * (ints.len() + 1)]);
}

/// Gathers with a stride, lanes of a vector, and broadcasts the type check inserts
/// (a scalar where a vector is meant), at every vector width.
#[test]
fn gather_lane_and_broadcast() {
    // A scalar has no lanes: widths from 2.
    for w in [2, 4, 8, 16] {
        let body = vec![
            let_("v", Ty::f32x(w), gather("x", gid(0), 5, w)),
            let_("s", Ty::F32, lane(var("v"), w - 1)),
            // `acc = 0.0` and `acc * s`: scalars in a vector's place.
            let_("acc", Ty::f32x(w), float(0.0)),
            assign("acc", var("acc") + var("v") * var("s")),
            assign("acc", max(var("acc"), float(0.5))),
            store("y", gid(0) * w as usize, var("acc"), w),
            store("l", gid(0), lane(var("acc"), 0) + lane(var("v"), w / 2), 1),
        ];
        let k = kernel(
            &format!("gather{w}"),
            vec![param("x", true), param("y", false), param("l", false)],
            body,
            vec![6],
            0,
        );
        check_kernel(k, &[6 + 5 * w as usize, 6 * w as usize, 6]);
    }
}

/// Loops (a runtime bound, an unrolled constant one, a step of 3), if/else, nested
/// blocks that shadow a variable, and a guard on a grid tail, on a 3-axis grid.
#[test]
fn loops_branches_blocks_and_guards_on_a_3d_grid() {
    let point = || gid(0) + gid(1) * 5usize + gid(2) * 15usize;
    let body = vec![
        Stmt::Guard(lt(gid(0), int(4))),
        let_("p", Ty::I32, point()),
        let_("acc", Ty::f32x(4), load("x", var("p"), 4)),
        for_(
            "k",
            int(0),
            gid(1) + 1usize,
            false,
            vec![assign("acc", var("acc") + splat(to_float(var("k")), 4))],
        ),
        for_(
            "u",
            int(0),
            int(3),
            true,
            vec![
                Stmt::Guard(lt(var("u") + gid(2), int(3))),
                assign(
                    "acc",
                    fma(var("acc"), splat(float(0.5), 4), load("x", var("u"), 4)),
                ),
            ],
        ),
        Stmt::For {
            var: "s".into(),
            start: int(1),
            end: int(11),
            step: 3,
            unroll: false,
            body: vec![assign("acc", var("acc") - splat(to_float(var("s")), 4))],
        },
        if_(
            lt(lane(var("acc"), 0), float(0.0)),
            vec![assign("acc", var("acc") * float(-1.0))],
            vec![if_(
                eq(gid(2), int(1)),
                vec![assign("acc", var("acc") + float(100.0))],
                vec![],
            )],
        ),
        Stmt::Block(vec![
            let_("acc", Ty::F32, float(7.0)),
            store("l", var("p"), var("acc"), 1),
        ]),
        store("y", var("p") * 4usize, var("acc"), 4),
    ];
    let k = kernel(
        "control",
        vec![param("x", true), param("y", false), param("l", false)],
        body,
        vec![5, 3, 4],
        0,
    );
    check_kernel(k, &[60 + 4, 240, 60]);
}

/// A select or `&&` whose arm reads memory evaluates only the arm taken: the other
/// reads far outside the buffer (it would fault), as a conv's zero padding does.
#[test]
fn selects_and_ands_do_not_read_the_arm_not_taken() {
    let inside = || lt(gid(0), int(8));
    let far = || gid(0) + int(1 << 28);
    let body = vec![
        let_(
            "v",
            Ty::f32x(4),
            select(inside(), load("x", gid(0) * 4usize, 4), load("x", far(), 4)),
        ),
        let_(
            "c",
            Ty::I32,
            and(inside(), lt(load("x", gid(0), 1), float(0.0))),
        ),
        let_(
            "d",
            Ty::I32,
            and(lt(int(8), gid(0)), lt(load("x", far(), 1), float(0.0))),
        ),
        store(
            "y",
            gid(0) * 4usize,
            var("v") + to_float(var("c") + var("d") * 2usize),
            4,
        ),
    ];
    let k = kernel(
        "lazy",
        vec![param("x", true), param("y", false)],
        body,
        vec![12],
        0,
    );
    let compiler = Compiler::new().unwrap_or_else(|e| panic!("{e}"));
    let mut k2 = k.clone();
    check(&mut k2).unwrap_or_else(|e| panic!("{e}"));
    // Points 8..12 select the far arm: both evaluators would fault there, so only the
    // points that do not take it run (one chunk of 0..8), and the far arm is never
    // evaluated for them.
    let mut got = vec![data(48, 1), vec![0.0; 48]];
    let mut want = got.clone();
    // SAFETY: points 0..8 read only within x.
    unsafe {
        let (fns, _) = compiler.compile(std::slice::from_ref(&k2)).unwrap();
        let args: Vec<*mut f32> = got.iter_mut().map(|b| b.as_mut_ptr()).collect();
        (fns[0].f)(args.as_ptr(), 0, 8);
    }
    let mut n = Naive {
        bufs: ["x", "y"]
            .iter()
            .map(|s| s.to_string())
            .zip(want.iter_mut())
            .collect(),
        scopes: vec![HashMap::new()],
        gid: [0; 3],
    };
    for x in 0..8 {
        n.gid = [x, 0, 0];
        n.scopes = vec![HashMap::new()];
        n.block(&k2.body);
    }
    for (i, (g, w)) in got[1].iter().zip(&want[1]).enumerate() {
        assert!(same(*g, *w), "y[{i}] = {g}, want {w}");
    }
}

/// The compiler caches by kernel text: compiling the same kernel again compiles
/// nothing, a changed one compiles once.
#[test]
fn the_cache_compiles_each_kernel_text_once() {
    let make = |c: f32| {
        kernel(
            "axpy",
            vec![param("x", true), param("y", false)],
            vec![store("y", gid(0), load("x", gid(0), 1) * float(c), 1)],
            vec![4],
            4,
        )
    };
    let compiler = Compiler::new().unwrap_or_else(|e| panic!("{e}"));
    let (_, first) = compiler.compile(&[make(2.0), make(2.0)]).unwrap();
    assert_eq!((first.compiled, first.cached), (1, 1));
    let (_, again) = compiler.compile(&[make(2.0)]).unwrap();
    assert_eq!((again.compiled, again.cached), (0, 1));
    let (fns, other) = compiler.compile(&[make(3.0)]).unwrap();
    assert_eq!((other.compiled, other.cached), (1, 0));
    assert_eq!(compiler.compiled(), 2);
    let mut bufs = [vec![1.0, 2.0, 3.0, 4.0], vec![0.0; 4]];
    let args: Vec<*mut f32> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
    // SAFETY: four points over four-element buffers.
    unsafe { (fns[0].f)(args.as_ptr(), 0, 4) };
    assert_eq!(bufs[1], [3.0, 6.0, 9.0, 12.0]);
}

/// Nested loops marked `unroll`: small nests unroll fully, a nest of more copies than
/// the renderer allows keeps its outer loop rolled; both compute the same sums.
#[test]
fn nested_unrolled_loops_small_and_large() {
    for (outer, inner) in [(3, 3), (6, 5), (40, 2)] {
        let body = vec![
            let_("acc", Ty::f32x(4), splat(float(0.0), 4)),
            for_(
                "a",
                int(0),
                int(outer),
                true,
                vec![for_(
                    "b",
                    int(0),
                    int(inner),
                    true,
                    vec![assign(
                        "acc",
                        fma(
                            load("x", var("a") * inner + var("b") + gid(0), 4),
                            splat(to_float(var("a") - var("b")), 4),
                            var("acc"),
                        ),
                    )],
                )],
            ),
            store("y", gid(0) * 4usize, var("acc"), 4),
        ];
        let k = kernel(
            &format!("nest{outer}x{inner}"),
            vec![param("x", true), param("y", false)],
            body,
            vec![5],
            0,
        );
        check_kernel(k, &[outer * inner + 8, 20]);
    }
}
