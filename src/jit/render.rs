//! One typed kernel-IR [`Kernel`] as one Cranelift function
//!
//! ```text
//! extern "C" fn(bufs: *const *mut f32, lo: i64, hi: i64)
//! ```
//!
//! that runs the kernel's body for the grid points `lo..hi` of the flattened grid
//! (axis 0 fastest, as OpenCL numbers work-items), so that the executor can hand each
//! thread a contiguous range. The function computes the first point's ids once, by
//! division, and then steps them branch-free: an increment with a carry per axis.
//!
//! Statements map one to one: a `let` is a set of frontend variables (one per part,
//! `render_expr`), a `for` a loop over an `i32` variable (fully unrolled when the
//! kernel asks and the bounds are constants), an `if` a diamond, and a `guard` a
//! branch to the point's latch, which skips the rest of the body for that point.
//! Shapes are constants of the IR, so every index folds where it can.

use super::render_expr::{parts_of, Val};
use crate::kernel_ir::{Elem, Expr, Func, Kernel, Stmt, Ty};
use crate::runtime::RunError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Block, FuncRef, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use std::collections::HashMap;

/// The longest loop `unroll` expands fully; longer ones stay loops (big unrolled
/// bodies spill, ../shared/STACK.md).
const MAX_UNROLL: i64 = 32;

/// The most copies of a body that nested unrolled loops may make: an outer loop whose
/// trips times its inner unrolled loops' copies exceed it stays a loop (a 7×7 conv
/// unrolls its `kw` loop only), which bounds code size and compile time.
const MAX_COPIES: i64 = 16;

/// The constant trip count of a loop the kernel asks to unroll.
fn unroll_trips(s: &Stmt) -> Option<(i64, &[Stmt])> {
    match s {
        Stmt::For {
            start: Expr::Int(a),
            end: Expr::Int(b),
            step,
            unroll: true,
            body,
            ..
        } if *step > 0 => Some((((b - a).max(0) + step - 1) / step, body)),
        _ => None,
    }
}

/// How many copies of its innermost statements `body` makes when its unrollable
/// loops are unrolled as [`MAX_UNROLL`] and [`MAX_COPIES`] allow.
fn copies(body: &[Stmt]) -> i64 {
    body.iter()
        .map(|s| match s {
            Stmt::For { body: inner, .. } => {
                let c = copies(inner);
                match unroll_trips(s) {
                    Some((t, _)) if t <= MAX_UNROLL && t * c <= MAX_COPIES => t * c,
                    _ => c,
                }
            }
            Stmt::If {
                then, otherwise, ..
            } => copies(then).max(copies(otherwise)),
            Stmt::Block(b) => copies(b),
            _ => 1,
        })
        .max()
        .unwrap_or(1)
}

/// An error in a kernel the renderer cannot render: a bug in the lowering (the type
/// check passes every kernel of a plan), reported, never a panic.
pub fn err(kernel: &str, what: impl std::fmt::Display) -> RunError {
    RunError::new(format!("JIT: kernel `{kernel}`: {what}"))
        .hint("this is a bug in fnet's kernel lowering; use --backend opencl or reference")
}

/// A variable in scope: its frontend variables (one per part) and type.
#[derive(Clone)]
struct Binding {
    vars: Vec<Variable>,
    ty: Ty,
}

pub struct Renderer<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub kernel: String,
    /// Base address of each buffer parameter, loaded in the entry block.
    pub bufs: HashMap<String, Value>,
    /// The grid ids of the point being run, one per axis.
    pub gids: Vec<Variable>,
    /// The imported functions a `Call` uses.
    pub funcs: &'a HashMap<Func, FuncRef>,
    scopes: Vec<HashMap<String, Binding>>,
    /// Where a guard that fails goes: the latch that moves to the next point.
    next_point: Block,
    /// The read-only buffers, whose loads may be marked pure (`load_flags`).
    read_only: std::collections::HashSet<String>,
    /// How many conditionals (if arms, lazy select arms, the rest of a block after a
    /// guard) enclose the code being rendered inside the innermost loop.
    pub cond_depth: usize,
}

/// Fills `func` (whose signature is the kernel's: pointer, lo, hi) with `k`'s code.
/// `funcs` are the imported elementwise functions, declared in `func` already.
pub fn render(
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    k: &Kernel,
    funcs: &HashMap<Func, FuncRef>,
    config: TargetFrontendConfig,
) -> Result<(), RunError> {
    if k.grid.is_empty() || k.grid.len() > 3 || k.grid.contains(&0) {
        return Err(err(&k.name, format!("grid {:?}", k.grid)));
    }
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let [args, lo, hi] = b.block_params(entry) else {
        return Err(err(&k.name, "signature"));
    };
    let (args, lo, hi) = (*args, *lo, *hi);
    let ptr = MemFlagsData::new().with_notrap().with_readonly();
    let bufs = (k.params.iter().enumerate())
        .map(|(i, p)| {
            let v = b.ins().load(types::I64, ptr, args, 8 * i as i32);
            (p.name.clone(), v)
        })
        .collect();

    // The first point's ids: lo = g0 + G0·(g1 + G1·g2).
    let t = b.declare_var(types::I64);
    b.def_var(t, lo);
    let mut rest = lo;
    let mut gids = Vec::new();
    for (axis, &n) in k.grid.iter().enumerate() {
        let g = b.declare_var(types::I32);
        let id = if axis + 1 == k.grid.len() {
            rest
        } else {
            let id = b.ins().urem_imm_s(rest, n as i64);
            rest = b.ins().udiv_imm_s(rest, n as i64);
            id
        };
        let id = b.ins().ireduce(types::I32, id);
        b.def_var(g, id);
        gids.push(g);
    }

    let header = b.create_block();
    let body = b.create_block();
    let next_point = b.create_block();
    let exit = b.create_block();
    b.ins().jump(header, &[]);
    b.switch_to_block(header);
    let tv = b.use_var(t);
    let more = b.ins().icmp(IntCC::SignedLessThan, tv, hi);
    b.ins().brif(more, body, &[], exit, &[]);
    b.seal_block(body);
    b.seal_block(exit);
    b.switch_to_block(body);

    let mut r = Renderer {
        b: &mut b,
        kernel: k.name.clone(),
        bufs,
        gids,
        funcs,
        scopes: vec![HashMap::new()],
        next_point,
        read_only: (k.params.iter().filter(|p| p.read_only))
            .map(|p| p.name.clone())
            .collect(),
        cond_depth: 0,
    };
    r.block(&k.body)?;
    r.b.ins().jump(next_point, &[]);
    r.b.seal_block(next_point);
    r.b.switch_to_block(next_point);
    r.advance(t, &k.grid);
    r.b.ins().jump(header, &[]);
    r.b.seal_block(header);
    r.b.switch_to_block(exit);
    r.b.ins().return_(&[]);
    b.finalize(config);
    Ok(())
}

impl Renderer<'_, '_> {
    /// The latch: the next point's flat index and ids, carrying from axis to axis.
    fn advance(&mut self, t: Variable, grid: &[usize]) {
        let tv = self.b.use_var(t);
        let tv = self.b.ins().iadd_imm_s(tv, 1);
        self.b.def_var(t, tv);
        let mut carry = self.b.ins().iconst(types::I32, 1);
        for (axis, &n) in grid.iter().enumerate() {
            let g = self.gids[axis];
            let v = self.b.use_var(g);
            let v = self.b.ins().iadd(v, carry);
            if axis + 1 == grid.len() {
                self.b.def_var(g, v);
                break;
            }
            let wrap = self.b.ins().icmp_imm_s(IntCC::Equal, v, n as i64);
            let zero = self.b.ins().iconst(types::I32, 0);
            let v = self.b.ins().select(wrap, zero, v);
            self.b.def_var(g, v);
            carry = self.b.ins().uextend(types::I32, wrap);
        }
    }

    pub fn read_var(&mut self, name: &str) -> Result<Val, RunError> {
        let bind = self
            .lookup(name)
            .ok_or_else(|| err(&self.kernel, format!("`{name}` is not declared")))?;
        let parts: Vec<Value> = bind.vars.iter().map(|&v| self.b.use_var(v)).collect();
        Ok(match bind.ty.elem {
            Elem::I32 => Val::I(parts[0]),
            Elem::F32 => Val::F(bind.ty.width, parts),
        })
    }

    fn lookup(&self, name: &str) -> Option<Binding> {
        self.scopes.iter().rev().find_map(|s| s.get(name).cloned())
    }

    fn declare(&mut self, name: &str, ty: Ty) -> Binding {
        let vars = match ty.elem {
            Elem::I32 => vec![self.b.declare_var(types::I32)],
            Elem::F32 => {
                let (n, t) = parts_of(ty.width);
                (0..n).map(|_| self.b.declare_var(t)).collect()
            }
        };
        let bind = Binding { vars, ty };
        self.scopes
            .last_mut()
            .expect("the kernel's scope is never popped")
            .insert(name.to_string(), bind.clone());
        bind
    }

    /// Assigns `v` to `bind`'s variables, checking it has the variable's type.
    fn set(&mut self, name: &str, bind: &Binding, v: Val) -> Result<(), RunError> {
        let parts = match (v, bind.ty.elem) {
            (Val::I(x), Elem::I32) => vec![x],
            (Val::F(w, p), Elem::F32) if w == bind.ty.width => p,
            _ => {
                return Err(err(
                    &self.kernel,
                    format!("a value of another type assigned to `{name}`: {}", bind.ty),
                ))
            }
        };
        for (&var, p) in bind.vars.iter().zip(parts) {
            self.b.def_var(var, p);
        }
        Ok(())
    }

    /// The flags of a load from `buf`. A read-only buffer's load outside any
    /// conditional of its loop is marked pure (`readonly`, `can_move`), so that
    /// Cranelift schedules it beside its use: an in-order load keeps its place while
    /// the arithmetic on it sinks to the end of the block, and a conv's tap loop then
    /// holds every weight it loaded at once (all spilled). Under a conditional the
    /// load stays in order: loop-invariant code motion would hoist a pure load out of
    /// the branch that guards its index (a padding test), making it unconditional.
    pub fn load_flags(&self, buf: &str) -> MemFlagsData {
        let flags = super::render_expr::mem();
        if self.cond_depth == 0 && self.read_only.contains(buf) {
            flags.with_readonly().with_can_move()
        } else {
            flags
        }
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), RunError> {
        self.scopes.push(HashMap::new());
        let depth = self.cond_depth;
        let r = body.iter().try_for_each(|s| self.stmt(s));
        // A guard made the rest of this block conditional, not what follows it.
        self.cond_depth = depth;
        self.scopes.pop();
        r
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), RunError> {
        match s {
            Stmt::Let { name, ty, init } => {
                let v = self.expr(init)?;
                let bind = self.declare(name, *ty);
                self.set(name, &bind, v)
            }
            Stmt::Assign { name, value } => {
                let bind = self
                    .lookup(name)
                    .ok_or_else(|| err(&self.kernel, format!("`{name}` is not declared")))?;
                let v = self.expr(value)?;
                self.set(name, &bind, v)
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                unroll,
                body,
            } => self.for_loop(var, start, end, *step, *unroll, body),
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.int(cond)?;
                let then_b = self.b.create_block();
                let else_b = self.b.create_block();
                let merge = self.b.create_block();
                self.b.ins().brif(c, then_b, &[], else_b, &[]);
                self.b.seal_block(then_b);
                self.b.seal_block(else_b);
                self.b.switch_to_block(then_b);
                self.cond_depth += 1;
                self.block(then)?;
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(else_b);
                self.block(otherwise)?;
                self.cond_depth -= 1;
                self.b.ins().jump(merge, &[]);
                self.b.seal_block(merge);
                self.b.switch_to_block(merge);
                Ok(())
            }
            Stmt::Block(body) => self.block(body),
            Stmt::Guard(cond) => {
                let c = self.int(cond)?;
                let cont = self.b.create_block();
                self.b.ins().brif(c, cont, &[], self.next_point, &[]);
                self.b.seal_block(cont);
                self.b.switch_to_block(cont);
                self.cond_depth += 1;
                Ok(())
            }
            Stmt::Store {
                buf,
                index,
                value,
                width,
            } => {
                let v = self.expr(value)?;
                let parts = match v {
                    Val::F(w, p) if w == *width => p,
                    _ => {
                        return Err(err(
                            &self.kernel,
                            format!("store of `{value}` as {width} lanes"),
                        ))
                    }
                };
                let base = Expr::Load {
                    buf: buf.clone(),
                    index: Box::new(index.clone()),
                    width: *width,
                };
                self.store(&base, &parts)
            }
        }
    }

    /// Stores `parts` where `at` (a `Load` of the destination) would read them.
    fn store(&mut self, at: &Expr, parts: &[Value]) -> Result<(), RunError> {
        let Expr::Load { buf, index, .. } = at else {
            return Err(err(&self.kernel, "store"));
        };
        let base = *self
            .bufs
            .get(buf)
            .ok_or_else(|| err(&self.kernel, format!("`{buf}` is not a parameter")))?;
        let i = self.int(index)?;
        let i = self.b.ins().sextend(types::I64, i);
        let off = self.b.ins().ishl_imm_s(i, 2);
        let addr = self.b.ins().iadd(base, off);
        for (k, &p) in parts.iter().enumerate() {
            let bytes = self.b.func.dfg.value_type(p).bytes() as i32;
            self.b
                .ins()
                .store(super::render_expr::mem(), p, addr, k as i32 * bytes);
        }
        Ok(())
    }

    fn for_loop(
        &mut self,
        var: &str,
        start: &Expr,
        end: &Expr,
        step: i64,
        unroll: bool,
        body: &[Stmt],
    ) -> Result<(), RunError> {
        if step <= 0 {
            return Err(err(&self.kernel, format!("loop `{var}` with step {step}")));
        }
        self.scopes.push(HashMap::new());
        let bind = self.declare(var, Ty::I32);
        let iv = bind.vars[0];
        let result = (|| {
            if let (true, Expr::Int(s), Expr::Int(e)) = (unroll, start, end) {
                let trips = ((e - s).max(0) + step - 1) / step;
                if trips <= MAX_UNROLL && trips * copies(body) <= MAX_COPIES {
                    let mut i = *s;
                    while i < *e {
                        let c = self.b.ins().iconst(types::I32, i);
                        self.b.def_var(iv, c);
                        self.block(body)?;
                        i += step;
                    }
                    return Ok(());
                }
            }
            let s = self.int(start)?;
            self.b.def_var(iv, s);
            let header = self.b.create_block();
            let body_b = self.b.create_block();
            let exit = self.b.create_block();
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(header);
            let e = self.int(end)?;
            let i = self.b.use_var(iv);
            let more = self.b.ins().icmp(IntCC::SignedLessThan, i, e);
            self.b.ins().brif(more, body_b, &[], exit, &[]);
            self.b.seal_block(body_b);
            self.b.switch_to_block(body_b);
            // Inside a loop, only its own conditionals keep loads in order.
            let depth = std::mem::replace(&mut self.cond_depth, 0);
            let body_done = self.block(body);
            self.cond_depth = depth;
            body_done?;
            let i = self.b.use_var(iv);
            let i = self.b.ins().iadd_imm_s(i, step);
            self.b.def_var(iv, i);
            self.b.ins().jump(header, &[]);
            self.b.seal_block(header);
            self.b.seal_block(exit);
            self.b.switch_to_block(exit);
            Ok(())
        })();
        self.scopes.pop();
        result
    }
}
