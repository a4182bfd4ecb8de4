//! The type check on hand-built kernels: what it types, where it inserts broadcasts,
//! and what it refuses with which message.

use super::{check, verify};
use crate::kernel_ir::build::*;
use crate::kernel_ir::{BinOp, Expr, Func, Kernel, Param, Stmt, Ty};

fn kernel(name: &str, body: Vec<Stmt>) -> Kernel {
    let param = |name: &str, read_only| Param {
        name: name.into(),
        read_only,
    };
    Kernel {
        name: name.into(),
        params: vec![param("x", true), param("y", false)],
        body,
        grid: vec![16],
        local: None,
        flops: 0,
    }
}

fn broadcast(e: Expr, w: u8) -> Expr {
    Expr::Broadcast(Box::new(e), w)
}

/// The message of the check's refusal of `body`, which must name the kernel.
fn refusal(body: Vec<Stmt>) -> String {
    let mut k = kernel("bad_kernel", body);
    let e = check(&mut k).expect_err("ill-typed");
    assert_eq!(e.kernel, "bad_kernel");
    let shown = e.to_string();
    assert!(shown.starts_with("kernel `bad_kernel`: "), "{shown}");
    shown
}

/// A ReLU-and-scale kernel written the way the lowering writes them: scalars where
/// vectors are meant, in an initialiser, an assignment, `max`, `*` and `select`.
fn relu_scale() -> Vec<Stmt> {
    vec![
        let_("i", Ty::I32, gid(0) * 8usize),
        let_("acc", Ty::f32x(8), float(0.0)),
        assign("acc", max(load("x", var("i"), 8), float(0.0))),
        let_("s", Ty::F32, load("x", int(0), 1)),
        let_(
            "v",
            Ty::f32x(8),
            select(lt(var("i"), int(64)), var("acc") * var("s"), float(1.0)),
        ),
        store("y", var("i"), var("v"), 8),
    ]
}

#[test]
fn a_well_typed_kernel_gets_every_broadcast_made_explicit() {
    let mut k = kernel("relu_scale", relu_scale());
    assert!(verify(&k).is_err(), "implicit broadcasts before the check");
    check(&mut k).expect("well typed");
    let want = vec![
        let_("i", Ty::I32, gid(0) * 8usize),
        let_("acc", Ty::f32x(8), broadcast(float(0.0), 8)),
        assign("acc", max(load("x", var("i"), 8), broadcast(float(0.0), 8))),
        let_("s", Ty::F32, load("x", int(0), 1)),
        let_(
            "v",
            Ty::f32x(8),
            select(
                lt(var("i"), int(64)),
                var("acc") * broadcast(var("s"), 8),
                broadcast(float(1.0), 8),
            ),
        ),
        store("y", var("i"), var("v"), 8),
    ];
    assert_eq!(k.body, want);
    verify(&k).expect("no implicit broadcast left");
    let once = k.clone();
    check(&mut k).expect("still well typed");
    assert_eq!(k, once, "checking a checked kernel changes nothing");
}

#[test]
fn verify_names_the_scalar_that_needs_a_broadcast() {
    let k = kernel(
        "k",
        vec![
            let_("acc", Ty::f32x(4), load("x", int(0), 4)),
            assign("acc", var("acc") * float(2.0)),
        ],
    );
    let e = verify(&k).expect_err("implicit");
    assert!(
        e.message
            .contains("`2.0` is a scalar f32 where f32x4 is needed"),
        "{e}"
    );
    assert!(e.message.contains("broadcast it explicitly"), "{e}");
    assert!(e.message.starts_with("`(acc * 2.0)`"), "{e}");
}

#[test]
fn explicit_splats_stay_and_fma_operands_widen() {
    let mut k = kernel(
        "k",
        vec![
            let_("w", Ty::F32, load("x", int(0), 1)),
            let_(
                "v",
                Ty::f32x(4),
                fma(load("x", int(4), 4), splat(var("w"), 4), var("w")),
            ),
            store("y", int(0), var("v"), 4),
        ],
    );
    check(&mut k).expect("well typed");
    let Stmt::Let { init, .. } = &k.body[1] else {
        panic!("a let")
    };
    let want = fma(
        load("x", int(4), 4),
        splat(var("w"), 4),
        broadcast(var("w"), 4),
    );
    assert_eq!(*init, want);
}

#[test]
fn vectors_of_different_widths_are_refused() {
    let m = refusal(vec![let_(
        "v",
        Ty::f32x(8),
        load("x", int(0), 8) + load("x", int(8), 4),
    )]);
    assert!(
        m.contains("`(load8(x, 0) + load4(x, 8))`: operands of different widths (f32x8, f32x4)"),
        "{m}"
    );
    let m = refusal(vec![let_("v", Ty::f32x(4), load("x", int(0), 8))]);
    assert!(
        m.contains("the value of `v`: `load8(x, 0)` is f32x8, not f32x4"),
        "{m}"
    );
    let m = refusal(vec![store("y", int(0), load("x", int(0), 4), 8)]);
    assert!(m.contains("the value stored to `y`"), "{m}");
}

#[test]
fn an_i32_index_is_not_a_float_without_a_conversion() {
    let scaled = |i: Expr| load("x", var("i"), 1) * i;
    let body = |i: Expr| {
        vec![
            let_("i", Ty::I32, gid(0)),
            store("y", var("i"), scaled(i), 1),
        ]
    };
    let m = refusal(body(var("i")));
    assert!(m.contains("`(x[i] * i)`: mixes f32 and i32"), "{m}");
    assert!(m.contains("explicit conversion"), "{m}");
    let mut k = kernel("converted", body(to_float(var("i"))));
    check(&mut k).expect("ToFloat converts");
    // A float is no index either, and no loop bound.
    let m = refusal(vec![store("y", float(1.0), float(0.0), 1)]);
    assert!(
        m.contains("the index into `y` `1.0` is f32, not i32"),
        "{m}"
    );
    let m = refusal(vec![for_("k", int(0), float(4.0), false, vec![])]);
    assert!(m.contains("the loop end `4.0` is f32"), "{m}");
    let m = refusal(vec![let_("v", Ty::F32, call(Func::Exp, int(1)))]);
    assert!(
        m.contains("`exp(1)`: an argument of type i32: it takes f32"),
        "{m}"
    );
    let m = refusal(vec![let_("v", Ty::F32, to_float(float(1.0)))]);
    assert!(m.contains("only an i32 scalar becomes f32"), "{m}");
}

#[test]
fn conditions_and_comparisons_are_i32_scalars() {
    let m = refusal(vec![let_(
        "v",
        Ty::F32,
        select(float(1.0), float(0.0), float(1.0)),
    )]);
    assert!(m.contains("the condition `1.0` is f32"), "{m}");
    let m = refusal(vec![Stmt::Guard(lt(
        load("x", int(0), 4),
        load("x", int(4), 4),
    ))]);
    assert!(m.contains("only scalars compare"), "{m}");
    let m = refusal(vec![Stmt::Guard(and(lt(int(0), gid(0)), float(1.0)))]);
    assert!(m.contains("`&&` of i32 and f32"), "{m}");
    let m = refusal(vec![let_(
        "v",
        Ty::F32,
        bin(BinOp::Rem, float(1.0), float(2.0)),
    )]);
    assert!(m.contains("`%` of f32 and f32"), "{m}");
}

#[test]
fn names_and_buffers_are_checked() {
    let m = refusal(vec![assign("acc", float(0.0))]);
    assert!(m.contains("`acc` is assigned before it is declared"), "{m}");
    let m = refusal(vec![store("y", int(0), var("nope"), 1)]);
    assert!(m.contains("`nope`: used before it is declared"), "{m}");
    let m = refusal(vec![store("x", int(0), float(0.0), 1)]);
    assert!(m.contains("stores to `x`, which is read-only"), "{m}");
    let m = refusal(vec![let_("v", Ty::F32, load("z", int(0), 1))]);
    assert!(m.contains("`z` is not a parameter"), "{m}");
    let m = refusal(vec![let_("y", Ty::F32, float(0.0))]);
    assert!(m.contains("variable `y` has a buffer's name"), "{m}");
    let twice = vec![
        let_("a", Ty::F32, float(0.0)),
        let_("a", Ty::F32, float(1.0)),
    ];
    let m = refusal(twice.clone());
    assert!(m.contains("`a` is declared twice in one scope"), "{m}");
    // Shadowing in an inner scope is C's, and the lowering's (one `v` per block).
    let mut k = kernel(
        "shadow",
        vec![twice[0].clone(), Stmt::Block(vec![twice[1].clone()])],
    );
    check(&mut k).expect("an inner scope may shadow");
    // A loop variable lives in its loop only.
    let m = refusal(vec![
        for_("k", int(0), int(4), false, vec![]),
        store("y", var("k"), float(0.0), 1),
    ]);
    assert!(m.contains("`k`: used before it is declared"), "{m}");
}

#[test]
fn lanes_widths_literals_and_axes_are_bounded() {
    let m = refusal(vec![let_("v", Ty::F32, lane(load("x", int(0), 4), 4))]);
    assert!(m.contains("lane 4 of f32x4"), "{m}");
    let m = refusal(vec![let_("v", Ty::f32x(3), load("x", int(0), 1))]);
    assert!(m.contains("`v` has type f32x3: no such value type"), "{m}");
    let m = refusal(vec![let_(
        "v",
        Ty {
            width: 4,
            ..Ty::I32
        },
        int(0),
    )]);
    assert!(m.contains("i32x4: no such value type"), "{m}");
    let m = refusal(vec![let_("v", Ty::f32x(4), splat(int(1), 4))]);
    assert!(m.contains("only an f32 scalar widens"), "{m}");
    let m = refusal(vec![store("y", int(1i64 << 31), float(0.0), 1)]);
    assert!(
        m.contains("the literal 2147483648 does not fit in i32"),
        "{m}"
    );
    let m = refusal(vec![store("y", gid(1), float(0.0), 1)]);
    assert!(m.contains("`gid(1)`: the grid has 1 axis"), "{m}");
}

#[test]
fn the_innermost_faulty_expression_is_quoted() {
    let deep = load("x", int(0), 1) + (float(1.0) * (load("x", int(0), 8) + load("x", int(0), 4)));
    let m = refusal(vec![let_("v", Ty::f32x(8), deep)]);
    assert!(
        m.contains("kernel `bad_kernel`: `(load8(x, 0) + load4(x, 0))`: operands"),
        "{m}"
    );
}

#[test]
fn the_signature_is_checked() {
    let mut k = kernel("sig", vec![]);
    k.grid = vec![2, 2, 2, 2];
    let e = check(&mut k).expect_err("four axes");
    assert_eq!(
        e.to_string(),
        "kernel `sig`: a grid of 4 axes: 1 to 3 expected"
    );
    k.grid = vec![4, 4];
    k.local = Some(vec![4]);
    let e = verify(&k).expect_err("local of one axis");
    assert!(
        e.message.contains("a work-group of 1 axes for a grid of 2"),
        "{e}"
    );
    k.local = Some(vec![2, 2]);
    check(&mut k).expect("well formed");
    k.params.push(k.params[0].clone());
    let e = check(&mut k).expect_err("x twice");
    assert!(e.message.contains("parameter 2 `x` repeats a name"), "{e}");
}
