//! The kernel IR's type check. The lowering builds expressions untyped, and some of
//! them use a scalar where a vector is meant (`max(v, 0.0)`, `acc = 0.0` for a vector
//! `acc`): C-like languages widen such a scalar implicitly, a JIT does not. [`check`]
//! gives every expression a type, wraps each such scalar in an explicit
//! [`Expr::Broadcast`], and refuses every other mismatch. After it, every binary
//! operation, `fma` and `select` has operands of one type, and every `let`, assignment
//! and store has a value of its target's type.
//!
//! The rules:
//! - literals and indices are `i32` scalars, loads give `f32` of the load's width;
//!   vectors are `f32` only (2, 4, 8 or 16 lanes);
//! - arithmetic, `min`/`max`, `fma` and `select` arms take one element type, and the
//!   same width or a scalar, which is broadcast; `%` takes `i32`;
//! - comparisons take scalars of one type and `&&` takes `i32`; both give `i32`, the
//!   type of every condition and index;
//! - `i32` becomes `f32` only through `ToFloat`, `f32` becomes `i32` only through
//!   `ToInt`, never implicitly; `hash` takes and gives `i32` scalars;
//! - variables are declared before use, once per scope, and do not reuse a buffer's
//!   name; loads read kernel parameters and stores write writable ones.

use super::{BinOp, Elem, Expr, Kernel, Param, Stmt, Ty};
use std::collections::HashMap;
use std::fmt;

/// An ill-typed kernel: a bug in the code that built it, never in the user's program.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeError {
    pub kernel: String,
    pub message: String,
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel `{}`: {}", self.kernel, self.message)
    }
}

impl std::error::Error for TypeError {}

/// Types `k` and makes its broadcasts explicit, in place. Checking a checked kernel
/// changes nothing.
pub fn check(k: &mut Kernel) -> Result<(), TypeError> {
    signature(k)?;
    let mut body = std::mem::take(&mut k.body);
    let result = Checker::new(k, true).block(&mut body);
    k.body = body;
    result
}

/// Checks `k` as [`check`] does but refuses, instead of inserting, implicit
/// broadcasts: passes exactly when a renderer without implicit widening can render `k`
/// as it is.
pub fn verify(k: &Kernel) -> Result<(), TypeError> {
    signature(k)?;
    let mut body = k.body.clone();
    Checker::new(k, false).block(&mut body)
}

/// Distinct parameter names, and a grid of 1 to 3 axes with a work-group of as many.
fn signature(k: &Kernel) -> Result<(), TypeError> {
    let error = |message: String| {
        Err(TypeError {
            kernel: k.name.clone(),
            message,
        })
    };
    if let Some((i, p)) =
        (k.params.iter().enumerate()).find(|(i, p)| k.params[..*i].iter().any(|q| q.name == p.name))
    {
        return error(format!("parameter {i} `{}` repeats a name", p.name));
    }
    if !(1..=3).contains(&k.grid.len()) {
        return error(format!("a grid of {} axes: 1 to 3 expected", k.grid.len()));
    }
    match &k.local {
        Some(l) if l.len() != k.grid.len() => error(format!(
            "a work-group of {} axes for a grid of {}",
            l.len(),
            k.grid.len()
        )),
        _ => Ok(()),
    }
}

/// The longest expression a message quotes whole.
const QUOTE_LIMIT: usize = 240;

fn quote(e: &Expr) -> String {
    let s = e.to_string();
    match s.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("`{}…`", &s[..cut]),
        None => format!("`{s}`"),
    }
}

/// Why a node is ill-typed: a message about the node itself, which the caller prefixes
/// with the node, or an error already placed in a sub-expression.
enum Fault {
    Here(String),
    Inner(TypeError),
}

impl From<TypeError> for Fault {
    fn from(e: TypeError) -> Self {
        Fault::Inner(e)
    }
}

struct Checker<'k> {
    kernel: &'k str,
    params: &'k [Param],
    axes: usize,
    /// Innermost scope last.
    scopes: Vec<HashMap<String, Ty>>,
    /// Insert broadcasts (`check`) or refuse them (`verify`).
    insert: bool,
}

fn valid_width(w: u8) -> bool {
    matches!(w, 1 | 2 | 4 | 8 | 16)
}

fn valid_ty(t: Ty) -> bool {
    valid_width(t.width) && (t.elem == Elem::F32 || t.width == 1)
}

impl<'k> Checker<'k> {
    fn new(k: &'k Kernel, insert: bool) -> Checker<'k> {
        Checker {
            kernel: &k.name,
            params: &k.params,
            axes: k.grid.len(),
            scopes: vec![HashMap::new()],
            insert,
        }
    }

    fn error(&self, message: String) -> TypeError {
        TypeError {
            kernel: self.kernel.to_string(),
            message,
        }
    }

    fn param(&self, buf: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == buf)
    }

    fn lookup(&self, name: &str) -> Option<Ty> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn declare(&mut self, name: &str, ty: Ty) -> Result<(), TypeError> {
        if self.param(name).is_some() {
            return Err(self.error(format!("variable `{name}` has a buffer's name")));
        }
        let scope = self.scopes.last_mut().expect("the kernel's scope");
        if scope.insert(name.to_string(), ty).is_some() {
            return Err(self.error(format!("`{name}` is declared twice in one scope")));
        }
        Ok(())
    }

    fn scoped(&mut self, body: &mut [Stmt], vars: &[(&str, Ty)]) -> Result<(), TypeError> {
        self.scopes.push(HashMap::new());
        let result = vars
            .iter()
            .try_for_each(|&(n, t)| self.declare(n, t))
            .and_then(|()| self.block(body));
        self.scopes.pop();
        result
    }

    fn block(&mut self, body: &mut [Stmt]) -> Result<(), TypeError> {
        body.iter_mut().try_for_each(|s| self.stmt(s))
    }

    /// An `i32` scalar: an index, a bound or a condition.
    fn index(&mut self, e: &mut Expr, role: &str) -> Result<(), TypeError> {
        let t = self.expr(e)?;
        if t != Ty::I32 {
            return Err(self.error(format!("{role} {} is {t}, not i32", quote(e))));
        }
        Ok(())
    }

    /// Wraps `e`, a scalar, in a broadcast to `width` lanes, or says why not.
    fn broadcast(&self, e: &mut Expr, have: Ty, width: u8) -> Result<(), String> {
        if !self.insert {
            return Err(format!(
                "{} is a scalar {have} where {} is needed: broadcast it explicitly",
                quote(e),
                Ty { width, ..have }
            ));
        }
        let scalar = std::mem::replace(e, Expr::Int(0));
        *e = Expr::Broadcast(Box::new(scalar), width);
        Ok(())
    }

    /// Makes `e`, of type `have`, a value of type `want`; `what` names the place.
    fn coerce(&self, e: &mut Expr, have: Ty, want: Ty, what: &str) -> Result<(), TypeError> {
        if have == want {
            return Ok(());
        }
        if have.elem == want.elem && have.width == 1 {
            return self
                .broadcast(e, have, want.width)
                .map_err(|m| self.error(format!("{what}: {m}")));
        }
        Err(self.error(format!("{what}: {} is {have}, not {want}", quote(e))))
    }

    /// The common type of operands: one element type, and one width to which scalars
    /// are broadcast.
    fn unify(&self, operands: &mut [(&mut Expr, Ty)]) -> Result<Ty, Fault> {
        let first = operands[0].1;
        if let Some((_, t)) = operands.iter().find(|(_, t)| t.elem != first.elem) {
            return Err(Fault::Here(format!(
                "mixes {first} and {t}: an i32 becomes f32 only through an explicit conversion"
            )));
        }
        let width = operands.iter().map(|(_, t)| t.width).max().unwrap_or(1);
        let to = Ty { width, ..first };
        for (e, t) in operands.iter_mut() {
            if t.width == width {
                continue;
            }
            if t.width != 1 {
                let types: Vec<String> = operands.iter().map(|(_, t)| t.to_string()).collect();
                return Err(Fault::Here(format!(
                    "operands of different widths ({})",
                    types.join(", ")
                )));
            }
            self.broadcast(e, *t, width).map_err(Fault::Here)?;
        }
        Ok(to)
    }

    fn stmt(&mut self, s: &mut Stmt) -> Result<(), TypeError> {
        match s {
            Stmt::Let { name, ty, init } => {
                if !valid_ty(*ty) {
                    return Err(self.error(format!("`{name}` has type {ty}: no such value type")));
                }
                let have = self.expr(init)?;
                self.coerce(init, have, *ty, &format!("the value of `{name}`"))?;
                self.declare(name, *ty)
            }
            Stmt::Assign { name, value } => {
                let Some(want) = self.lookup(name) else {
                    return Err(self.error(format!("`{name}` is assigned before it is declared")));
                };
                let have = self.expr(value)?;
                self.coerce(
                    value,
                    have,
                    want,
                    &format!("the value assigned to `{name}`"),
                )
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
                ..
            } => {
                self.index(start, "the loop start")?;
                self.index(end, "the loop end")?;
                if *step < 1 {
                    return Err(self.error(format!("loop over `{var}` steps by {step}")));
                }
                self.scoped(body, &[(var, Ty::I32)])
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                self.index(cond, "the condition")?;
                self.scoped(then, &[])?;
                self.scoped(otherwise, &[])
            }
            Stmt::Block(body) => self.scoped(body, &[]),
            Stmt::Guard(cond) => self.index(cond, "the guard"),
            Stmt::Store {
                buf,
                index,
                value,
                width,
            } => {
                match self.param(buf) {
                    None => return Err(self.error(format!("stores to `{buf}`, not a parameter"))),
                    Some(p) if p.read_only => {
                        return Err(self.error(format!("stores to `{buf}`, which is read-only")))
                    }
                    Some(_) => {}
                }
                if !valid_width(*width) {
                    return Err(self.error(format!("stores {width} lanes to `{buf}`")));
                }
                self.index(index, &format!("the index into `{buf}`"))?;
                let have = self.expr(value)?;
                let what = format!("the value stored to `{buf}`");
                self.coerce(value, have, Ty::f32x(*width), &what)
            }
        }
    }

    /// The type of `e`, with broadcasts made explicit below it.
    fn expr(&mut self, e: &mut Expr) -> Result<Ty, TypeError> {
        match self.node(e) {
            Ok(t) => Ok(t),
            Err(Fault::Here(m)) => Err(self.error(format!("{}: {m}", quote(e)))),
            Err(Fault::Inner(err)) => Err(err),
        }
    }

    fn node(&mut self, e: &mut Expr) -> Result<Ty, Fault> {
        let here = |m: String| Err(Fault::Here(m));
        match e {
            Expr::Int(v) => match i32::try_from(*v) {
                Ok(_) => Ok(Ty::I32),
                Err(_) => here(format!("the literal {v} does not fit in i32")),
            },
            Expr::Float(_) => Ok(Ty::F32),
            Expr::Var(n) => match self.lookup(n) {
                Some(t) => Ok(t),
                None => here("used before it is declared".into()),
            },
            Expr::GlobalId(a) if (*a as usize) < self.axes => Ok(Ty::I32),
            Expr::GlobalId(_) => match self.axes {
                1 => here("the grid has 1 axis".into()),
                n => here(format!("the grid has {n} axes")),
            },
            Expr::Bin(op, a, b) => {
                let (ta, tb) = (self.expr(a)?, self.expr(b)?);
                match op {
                    BinOp::And if ta == Ty::I32 && tb == Ty::I32 => Ok(Ty::I32),
                    BinOp::And => here(format!("`&&` of {ta} and {tb}: it takes i32 conditions")),
                    BinOp::Lt | BinOp::Le | BinOp::Eq => {
                        if ta.width != 1 || tb.width != 1 {
                            return here(format!("compares {ta} with {tb}: only scalars compare"));
                        }
                        self.unify(&mut [(&mut **a, ta), (&mut **b, tb)])?;
                        Ok(Ty::I32)
                    }
                    BinOp::Rem if ta.elem != Elem::I32 || tb.elem != Elem::I32 => {
                        here(format!("`%` of {ta} and {tb}: it takes i32"))
                    }
                    _ => self.unify(&mut [(&mut **a, ta), (&mut **b, tb)]),
                }
            }
            Expr::Call(_, a) => match self.expr(a)? {
                t if t.elem == Elem::F32 => Ok(t),
                t => here(format!("an argument of type {t}: it takes f32")),
            },
            Expr::Load { buf, index, width }
            | Expr::Gather {
                buf, index, width, ..
            } => {
                if self.param(buf).is_none() {
                    return here(format!("`{buf}` is not a parameter"));
                }
                if !valid_width(*width) {
                    return here(format!("loads {width} lanes"));
                }
                self.index(index, &format!("the index into `{buf}`"))?;
                Ok(Ty::f32x(*width))
            }
            Expr::Splat(a, w) | Expr::Broadcast(a, w) => {
                let t = self.expr(a)?;
                if t != Ty::F32 || *w == 1 || !valid_width(*w) {
                    return here(format!(
                        "{t} to {w} lanes: only an f32 scalar widens, to 2, 4, 8 or 16"
                    ));
                }
                Ok(Ty::f32x(*w))
            }
            Expr::Lane(a, l) => match self.expr(a)? {
                t if t.width > *l && t.width > 1 => Ok(Ty { width: 1, ..t }),
                t => here(format!("lane {l} of {t}")),
            },
            Expr::Fma(a, b, c) => {
                let (ta, tb, tc) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                let t = self.unify(&mut [(&mut **a, ta), (&mut **b, tb), (&mut **c, tc)])?;
                if t.elem != Elem::F32 {
                    return here(format!("fma of {t}: it takes f32"));
                }
                Ok(t)
            }
            Expr::Select(c, a, b) => {
                self.index(c, "the condition")?;
                let (ta, tb) = (self.expr(a)?, self.expr(b)?);
                self.unify(&mut [(&mut **a, ta), (&mut **b, tb)])
            }
            Expr::ToFloat(a) => match self.expr(a)? {
                Ty::I32 => Ok(Ty::F32),
                t => here(format!("converts {t}: only an i32 scalar becomes f32")),
            },
            Expr::ToInt(a) => match self.expr(a)? {
                Ty::F32 => Ok(Ty::I32),
                t => here(format!("converts {t}: only an f32 scalar becomes i32")),
            },
            Expr::Hash(a, b) => match (self.expr(a)?, self.expr(b)?) {
                (Ty::I32, Ty::I32) => Ok(Ty::I32),
                (ta, tb) => here(format!("hash of {ta} and {tb}: it takes i32 scalars")),
            },
        }
    }
}

#[cfg(test)]
mod tests;
