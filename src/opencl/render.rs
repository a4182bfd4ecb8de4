//! Renders kernel IR as OpenCL C 1.2. Vector values become `floatN`, vector loads and
//! stores `vloadN`/`vstoreN`, fused multiply-adds `fma`; nothing is left for the
//! driver to vectorise. The output is deterministic, so it can be snapshot and hashed
//! for the program cache.

use crate::kernel_ir::{BinOp, Elem, Expr, Func, Kernel, Stmt, Ty};
use std::fmt::Write;

pub fn ty(t: Ty) -> String {
    let base = match t.elem {
        Elem::F32 => "float",
        Elem::I32 => "int",
    };
    if t.width == 1 {
        base.to_string()
    } else {
        format!("{base}{}", t.width)
    }
}

fn float_literal(v: f32) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "INFINITY" } else { "(-INFINITY)" }.to_string();
    }
    if v.is_nan() {
        return "NAN".to_string();
    }
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') {
        format!("{s}f")
    } else {
        format!("{s}.0f")
    }
}

pub fn expr(e: &Expr) -> String {
    match e {
        Expr::Int(v) => {
            if *v < 0 {
                format!("({v})")
            } else {
                v.to_string()
            }
        }
        Expr::Float(v) => float_literal(*v),
        Expr::Var(n) => n.clone(),
        Expr::GlobalId(a) => format!("(int)get_global_id({a})"),
        Expr::Bin(op, a, b) => {
            // `min`/`max` take (vector, scalar) but not (scalar, vector).
            let (a, b) = match op {
                BinOp::Min | BinOp::Max => (expr(a), widened(b)),
                _ => (widened(a), widened(b)),
            };
            match op {
                BinOp::Min => format!("min({a}, {b})"),
                BinOp::Max => format!("max({a}, {b})"),
                _ => {
                    let sym = op.infix().expect("min and max are handled above");
                    format!("({a} {sym} {b})")
                }
            }
        }
        Expr::Call(f, a) => {
            let name = match f {
                Func::Exp => "exp",
                Func::Sqrt => "sqrt",
                Func::Erf => "erf",
                Func::Sin => "sin",
                Func::Log => "log",
            };
            format!("{name}({})", expr(a))
        }
        Expr::Load { buf, index, width } => {
            if *width == 1 {
                format!("{buf}[{}]", expr(index))
            } else {
                format!("vload{width}(0, {buf} + {})", expr(index))
            }
        }
        Expr::Gather {
            buf,
            index,
            stride,
            width,
        } => {
            let i = expr(index);
            let lanes: Vec<String> = (0..*width as i64)
                .map(|l| {
                    if l == 0 {
                        format!("{buf}[{i}]")
                    } else {
                        format!("{buf}[{i} + {}]", l * stride)
                    }
                })
                .collect();
            format!("(float{width})({})", lanes.join(", "))
        }
        Expr::Splat(a, w) | Expr::Broadcast(a, w) => format!("(float{w})({})", expr(a)),
        Expr::Lane(a, l) => format!("{}.s{l:x}", expr(a)),
        Expr::Fma(a, b, c) => format!("fma({}, {}, {})", expr(a), expr(b), expr(c)),
        Expr::Select(c, a, b) => format!("({} ? {} : {})", expr(c), widened(a), widened(b)),
        Expr::ToFloat(a) => format!("(float)({})", expr(a)),
        Expr::ToInt(a) => format!("(int)({})", expr(a)),
        Expr::Hash(a, b) => format!("fnet_hash({}, {})", expr(a), expr(b)),
    }
}

/// `e` where OpenCL C widens a scalar to a vector itself (operators, the arms of
/// `?:`, initialisers and assignments): the type check's broadcasts print as the bare
/// scalar there, so the source is the same as before the check made them explicit.
fn widened(e: &Expr) -> String {
    match e {
        Expr::Broadcast(a, _) => expr(a),
        _ => expr(e),
    }
}

fn stmts(out: &mut String, body: &[Stmt], depth: usize) {
    for s in body {
        stmt(out, s, depth);
    }
}

fn stmt(out: &mut String, s: &Stmt, depth: usize) {
    let pad = "  ".repeat(depth);
    match s {
        Stmt::Let { name, ty: t, init } => {
            let _ = writeln!(out, "{pad}{} {name} = {};", ty(*t), widened(init));
        }
        Stmt::Assign { name, value } => {
            let _ = writeln!(out, "{pad}{name} = {};", widened(value));
        }
        Stmt::For {
            var,
            start,
            end,
            step,
            unroll,
            body,
        } => {
            if *unroll {
                let _ = writeln!(out, "{pad}#pragma unroll");
            }
            let inc = if *step == 1 {
                format!("++{var}")
            } else {
                format!("{var} += {step}")
            };
            let _ = writeln!(
                out,
                "{pad}for (int {var} = {}; {var} < {}; {inc}) {{",
                expr(start),
                expr(end)
            );
            stmts(out, body, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::If {
            cond,
            then,
            otherwise,
        } => {
            let _ = writeln!(out, "{pad}if ({}) {{", expr(cond));
            stmts(out, then, depth + 1);
            if otherwise.is_empty() {
                let _ = writeln!(out, "{pad}}}");
            } else {
                let _ = writeln!(out, "{pad}}} else {{");
                stmts(out, otherwise, depth + 1);
                let _ = writeln!(out, "{pad}}}");
            }
        }
        Stmt::Block(body) => {
            let _ = writeln!(out, "{pad}{{");
            stmts(out, body, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::Guard(c) => {
            let _ = writeln!(out, "{pad}if (!{}) return;", expr(c));
        }
        Stmt::Store {
            buf,
            index,
            value,
            width,
        } => {
            if *width == 1 {
                let _ = writeln!(out, "{pad}{buf}[{}] = {};", expr(index), expr(value));
            } else {
                let _ = writeln!(
                    out,
                    "{pad}vstore{width}({}, 0, {buf} + {});",
                    expr(value),
                    expr(index)
                );
            }
        }
    }
}

/// One `__kernel` function.
pub fn kernel(k: &Kernel) -> String {
    let params: Vec<String> = k
        .params
        .iter()
        .map(|p| {
            if p.read_only {
                format!("__global const float* restrict {}", p.name)
            } else {
                format!("__global float* restrict {}", p.name)
            }
        })
        .collect();
    let mut out = format!(
        "// grid {:?}{}\n__kernel void {}({}) {{\n",
        k.grid,
        k.local
            .as_ref()
            .map(|l| format!(" local {l:?}"))
            .unwrap_or_default(),
        k.name,
        params.join(", ")
    );
    stmts(&mut out, &k.body, 1);
    out.push_str("}\n");
    out
}

/// `text` (a kernel named `name`, as [`kernel`] renders it) without its name: the
/// lowering numbers kernels through the whole plan (`conv_17`), so the same kernel in
/// two plans can differ in its name alone. The program cache keys kernels by this.
pub fn anonymous(text: &str, name: &str) -> String {
    text.replacen(&format!("__kernel void {name}("), "__kernel void (", 1)
}

/// `Expr::Hash`: `runtime::dropout::hash2` in OpenCL C, on `uint`s (whose arithmetic
/// wraps, unlike `int`'s). Emitted only into programs that use it, so other programs'
/// source is unchanged.
const HASH_HELPER: &str = "
uint fnet_fmix(uint h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}
int fnet_hash(int a, int b) {
  return as_int(fnet_fmix((uint)a ^ fnet_fmix((uint)b)));
}
";

/// A whole program: every kernel, in order.
pub fn program(kernels: &[&Kernel]) -> String {
    let bodies: Vec<String> = kernels.iter().map(|k| kernel(k)).collect();
    assemble(&bodies)
}

/// A program of kernels already rendered by [`kernel`], in order, with the helpers
/// they call: what the program cache builds for a batch of kernels it has not built
/// before (`ClContext::kernels`).
pub fn assemble<S: AsRef<str>>(bodies: &[S]) -> String {
    let mut out = String::from("// generated by fnet: OpenCL C 1.2\n");
    if bodies.iter().any(|b| b.as_ref().contains("fnet_hash(")) {
        out.push_str(HASH_HELPER);
    }
    for k in bodies {
        out.push('\n');
        out.push_str(k.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::kernel;
    use super::*;
    use crate::kernel_ir::build::*;
    use crate::kernel_ir::Param;

    #[test]
    fn renders_vector_code() {
        let k = Kernel {
            name: "axpy".into(),
            params: vec![
                Param {
                    name: "x".into(),
                    read_only: true,
                },
                Param {
                    name: "y".into(),
                    read_only: false,
                },
            ],
            body: vec![
                let_("i", Ty::I32, gid(0) * 8usize),
                let_(
                    "v",
                    Ty::f32x(8),
                    fma(
                        load("x", var("i"), 8),
                        splat(float(2.0), 8),
                        load("y", var("i"), 8),
                    ),
                ),
                store("y", var("i"), var("v"), 8),
            ],
            grid: vec![4],
            local: None,
            flops: 64,
        };
        let s = kernel(&k);
        assert!(s.contains("float8 v = fma(vload8(0, x + i), (float8)(2.0f), vload8(0, y + i));"));
        assert!(s.contains("vstore8(v, 0, y + i);"));
        assert!(s.contains("int i = ((int)get_global_id(0) * 8);"));
    }

    /// The check's broadcasts print as the bare scalar where OpenCL C widens scalars
    /// itself, and as a cast where it does not (`vstore`, `fma`, `min`'s first
    /// argument): checking leaves the source the lowering's.
    #[test]
    fn broadcasts_print_bare_where_opencl_widens() {
        let body = vec![
            let_("acc", Ty::f32x(4), float(0.0)),
            assign("acc", max(var("acc"), float(0.0))),
            assign("acc", bin(BinOp::Min, float(6.0), var("acc"))),
            assign("acc", fma(var("acc"), float(2.0), var("acc"))),
            assign(
                "acc",
                select(lt(int(0), int(1)), var("acc") * float(2.0), float(1.0)),
            ),
            store("y", int(0), var("acc"), 4),
            store("y", int(4), float(1.0), 4),
        ];
        let mut k = Kernel {
            name: "widen".into(),
            params: vec![Param {
                name: "y".into(),
                read_only: false,
            }],
            body,
            grid: vec![1],
            local: None,
            flops: 0,
        };
        let before = kernel(&k);
        crate::kernel_ir::typecheck::check(&mut k).expect("well typed");
        let after = kernel(&k);
        let lines: Vec<&str> = after.lines().skip(2).map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "float4 acc = 0.0f;",
                "acc = max(acc, 0.0f);",
                "acc = min((float4)(6.0f), acc);",
                "acc = fma(acc, (float4)(2.0f), acc);",
                "acc = ((0 < 1) ? (acc * 2.0f) : 1.0f);",
                "vstore4(acc, 0, y + 0);",
                "vstore4((float4)(1.0f), 0, y + 4);",
                "}",
            ]
        );
        // Where the lowering's source was valid OpenCL C, checking did not change it.
        let changed: Vec<(&str, &str)> = before
            .lines()
            .zip(after.lines())
            .filter(|(b, a)| b != a)
            .collect();
        assert_eq!(
            changed,
            [
                (
                    "  acc = min(6.0f, acc);",
                    "  acc = min((float4)(6.0f), acc);"
                ),
                (
                    "  acc = fma(acc, 2.0f, acc);",
                    "  acc = fma(acc, (float4)(2.0f), acc);"
                ),
                (
                    "  vstore4(1.0f, 0, y + 4);",
                    "  vstore4((float4)(1.0f), 0, y + 4);"
                ),
            ]
        );
    }
}
