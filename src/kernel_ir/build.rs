//! Helpers that make lowering code read like the index arithmetic it builds. The
//! arithmetic operators fold constants (`x·1`, `x+0`, `2·3`) so the rendered source
//! stays short and stable.

use super::{BinOp, Expr, Func, Kernel, Param, Stmt, Ty};
use std::ops::{Add, Div, Mul, Rem, Sub};

pub fn int(v: impl TryInto<i64>) -> Expr {
    Expr::Int(v.try_into().unwrap_or(i64::MAX))
}

pub fn float(v: f32) -> Expr {
    Expr::Float(v)
}

pub fn var(name: &str) -> Expr {
    Expr::Var(name.to_string())
}

pub fn gid(axis: u8) -> Expr {
    Expr::GlobalId(axis)
}

pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Bin(op, Box::new(a), Box::new(b))
}

pub fn lt(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Lt, a, b)
}

pub fn le(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Le, a, b)
}

pub fn and(a: Expr, b: Expr) -> Expr {
    bin(BinOp::And, a, b)
}

pub fn max(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Max, a, b)
}

pub fn call(f: Func, a: Expr) -> Expr {
    Expr::Call(f, Box::new(a))
}

pub fn load(buf: &str, index: Expr, width: u8) -> Expr {
    Expr::Load {
        buf: buf.to_string(),
        index: Box::new(index),
        width,
    }
}

/// `width` elements `stride` apart; a unit stride is a plain vector load.
pub fn gather(buf: &str, index: Expr, stride: i64, width: u8) -> Expr {
    if stride == 1 || width == 1 {
        return load(buf, index, width);
    }
    Expr::Gather {
        buf: buf.to_string(),
        index: Box::new(index),
        stride,
        width,
    }
}

pub fn splat(e: Expr, width: u8) -> Expr {
    if width == 1 {
        e
    } else {
        Expr::Splat(Box::new(e), width)
    }
}

pub fn lane(e: Expr, lane: u8) -> Expr {
    Expr::Lane(Box::new(e), lane)
}

pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
    Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
}

pub fn select(cond: Expr, a: Expr, b: Expr) -> Expr {
    Expr::Select(Box::new(cond), Box::new(a), Box::new(b))
}

pub fn to_float(e: Expr) -> Expr {
    Expr::ToFloat(Box::new(e))
}

pub fn to_int(e: Expr) -> Expr {
    Expr::ToInt(Box::new(e))
}

pub fn hash(a: Expr, b: Expr) -> Expr {
    Expr::Hash(Box::new(a), Box::new(b))
}

pub fn let_(name: &str, ty: Ty, init: Expr) -> Stmt {
    Stmt::Let {
        name: name.to_string(),
        ty,
        init,
    }
}

pub fn assign(name: &str, value: Expr) -> Stmt {
    Stmt::Assign {
        name: name.to_string(),
        value,
    }
}

pub fn store(buf: &str, index: Expr, value: Expr, width: u8) -> Stmt {
    Stmt::Store {
        buf: buf.to_string(),
        index,
        value,
        width,
    }
}

pub fn for_(var: &str, start: Expr, end: Expr, unroll: bool, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var: var.to_string(),
        start,
        end,
        step: 1,
        unroll,
        body,
    }
}

pub fn if_(cond: Expr, then: Vec<Stmt>, otherwise: Vec<Stmt>) -> Stmt {
    Stmt::If {
        cond,
        then,
        otherwise,
    }
}

fn fold(op: BinOp, a: Expr, b: Expr) -> Expr {
    use Expr::Int;
    match (op, &a, &b) {
        (BinOp::Add, Int(x), Int(y)) => Int(x + y),
        (BinOp::Sub, Int(x), Int(y)) => Int(x - y),
        (BinOp::Mul, Int(x), Int(y)) => Int(x * y),
        (BinOp::Div, Int(x), Int(y)) if *y != 0 => Int(x / y),
        (BinOp::Add | BinOp::Sub, _, Int(0)) => a,
        (BinOp::Add, Int(0), _) => b,
        (BinOp::Mul | BinOp::Div, _, Int(1)) => a,
        (BinOp::Mul, Int(1), _) => b,
        (BinOp::Mul, Int(0), _) | (BinOp::Mul, _, Int(0)) => Int(0),
        (BinOp::Rem, _, Int(1)) => Int(0),
        _ => bin(op, a, b),
    }
}

macro_rules! arith {
    ($tr:ident, $f:ident, $op:expr) => {
        impl $tr for Expr {
            type Output = Expr;
            fn $f(self, rhs: Expr) -> Expr {
                fold($op, self, rhs)
            }
        }
        impl $tr<i64> for Expr {
            type Output = Expr;
            fn $f(self, rhs: i64) -> Expr {
                fold($op, self, Expr::Int(rhs))
            }
        }
        impl $tr<usize> for Expr {
            type Output = Expr;
            fn $f(self, rhs: usize) -> Expr {
                fold($op, self, int(rhs))
            }
        }
    };
}

arith!(Add, add, BinOp::Add);
arith!(Sub, sub, BinOp::Sub);
arith!(Mul, mul, BinOp::Mul);
arith!(Div, div, BinOp::Div);
arith!(Rem, rem, BinOp::Rem);

/// A kernel parameter: buffer `name`, read-only or written.
pub fn param(name: &str, read_only: bool) -> Param {
    Param {
        name: name.to_string(),
        read_only,
    }
}

/// A kernel over `grid` with no fixed work-group size; `flops` feeds the cost model.
pub fn kernel(
    name: &str,
    params: Vec<Param>,
    body: Vec<Stmt>,
    grid: Vec<usize>,
    flops: impl TryInto<u64>,
) -> Kernel {
    Kernel {
        name: name.to_string(),
        params,
        body,
        grid,
        local: None,
        flops: flops.try_into().unwrap_or(u64::MAX),
    }
}

pub fn eq(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Eq, a, b)
}

/// The widest of 8, 4, 1 lanes (at most `max`) that divides `n`.
pub fn width_for(n: usize, max: u8) -> u8 {
    [8u8, 4, 1]
        .into_iter()
        .find(|&w| w <= max && n.is_multiple_of(w as usize))
        .unwrap_or(1)
}

/// The sum of a vector's lanes (the value itself for a scalar).
pub fn lanes_sum(e: Expr, w: u8) -> Expr {
    if w == 1 {
        return e;
    }
    (0..w)
        .map(|l| lane(e.clone(), l))
        .reduce(|a, b| a + b)
        .expect("lanes")
}

/// A loop over channel `c` of `[outer, channels, inner]` in vectors of `w`: `body`
/// sees the element index in `at`.
pub fn channel_sweep(outer: usize, channels: usize, inner: usize, w: u8, body: Vec<Stmt>) -> Stmt {
    let mut inside = vec![let_(
        "at",
        Ty::I32,
        (var("n") * channels + var("c")) * inner + var("j") * w as usize,
    )];
    inside.extend(body);
    for_(
        "n",
        int(0),
        int(outer),
        false,
        vec![for_("j", int(0), int(inner / w as usize), false, inside)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_constants() {
        assert_eq!(int(2) * int(3) + 0usize, int(6));
        assert_eq!(var("x") * 1usize + 0usize, var("x"));
        assert_eq!(var("x") * 2usize, bin(BinOp::Mul, var("x"), Expr::Int(2)));
    }
}
