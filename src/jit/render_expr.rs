//! Kernel-IR expressions as Cranelift instructions.
//!
//! Cranelift's x86-64 backend lowers only 128-bit vectors, so a float value of width
//! `w` is held as `w/4` `f32x4` parts (w = 4, 8, 16) and a width of 2 or 1 as that
//! many `f32` scalars; every operation applies part by part. Integers (indices,
//! conditions) are `i32` scalars with OpenCL C's wrapping arithmetic; a comparison
//! gives 0 or 1.
//!
//! A conditional whose arms read memory (`cond ? load(..) : 0`, the zero padding of a
//! conv) must not read the arm it does not take, which may lie outside the buffer: such
//! a `select` (and the right side of such an `&&`) becomes a branch; others are
//! branch-free.

use super::render::{err, Renderer};
use crate::kernel_ir::{BinOp, Expr, Func};
use crate::runtime::RunError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};

/// A rendered value: an `i32`, or a float of `width` lanes in parts (see the module
/// doc).
#[derive(Clone, Debug)]
pub enum Val {
    I(Value),
    F(u8, Vec<Value>),
}

/// How a float of `width` lanes is held: the number of parts and their type.
pub fn parts_of(width: u8) -> (usize, Type) {
    if width >= 4 {
        (width as usize / 4, types::F32X4)
    } else {
        (width as usize, types::F32)
    }
}

/// Loads and stores: never trap-annotated as aligned (buffers hold f32s at any
/// element offset), and not `trusted`, which implies alignment.
pub fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Whether evaluating `e` reads memory (or calls out), so that it must not be
/// evaluated speculatively.
pub fn reads_memory(e: &Expr) -> bool {
    match e {
        Expr::Load { .. } | Expr::Gather { .. } => true,
        Expr::Int(_) | Expr::Float(_) | Expr::Var(_) | Expr::GlobalId(_) => false,
        Expr::Bin(_, a, b) | Expr::Hash(a, b) => reads_memory(a) || reads_memory(b),
        Expr::Call(_, a)
        | Expr::Splat(a, _)
        | Expr::Broadcast(a, _)
        | Expr::Lane(a, _)
        | Expr::ToFloat(a)
        | Expr::ToInt(a) => reads_memory(a),
        Expr::Fma(a, b, c) | Expr::Select(a, b, c) => {
            reads_memory(a) || reads_memory(b) || reads_memory(c)
        }
    }
}

impl Renderer<'_, '_> {
    pub fn expr(&mut self, e: &Expr) -> Result<Val, RunError> {
        Ok(match e {
            Expr::Int(v) => Val::I(self.b.ins().iconst(types::I32, *v as i32 as i64)),
            Expr::Float(v) => Val::F(1, vec![self.b.ins().f32const(*v)]),
            Expr::Var(name) => self.read_var(name)?,
            Expr::GlobalId(axis) => {
                let v = *self
                    .gids
                    .get(*axis as usize)
                    .ok_or_else(|| err(&self.kernel, format!("gid({axis}) of a grid axis")))?;
                Val::I(self.b.use_var(v))
            }
            Expr::Bin(op, a, b) => self.binary(*op, a, b)?,
            Expr::Call(f, a) => {
                let (w, parts) = self.float(a)?;
                let parts = parts
                    .into_iter()
                    .map(|p| self.call(*f, p))
                    .collect::<Result<_, _>>()?;
                Val::F(w, parts)
            }
            Expr::Load { buf, index, width } => {
                let addr = self.address(buf, index)?;
                let (n, ty) = parts_of(*width);
                let step = ty.bytes() as i32;
                let flags = self.load_flags(buf);
                let parts = (0..n)
                    .map(|k| self.b.ins().load(ty, flags, addr, k as i32 * step))
                    .collect();
                Val::F(*width, parts)
            }
            // A unit stride is a plain vector load (a conv's input row at stride 1):
            // one `movups` instead of four loads and three lane inserts per part.
            Expr::Gather {
                buf,
                index,
                stride: 1,
                width,
            } => self.expr(&Expr::Load {
                buf: buf.clone(),
                index: index.clone(),
                width: *width,
            })?,
            Expr::Gather {
                buf,
                index,
                stride,
                width,
            } => {
                let addr = self.address(buf, index)?;
                let flags = self.load_flags(buf);
                let lanes: Vec<Value> = (0..*width as i64)
                    .map(|l| {
                        let off = i32::try_from(l * stride * 4).map_err(|_| {
                            err(&self.kernel, format!("gather stride {stride} out of range"))
                        })?;
                        Ok(self.b.ins().load(types::F32, flags, addr, off))
                    })
                    .collect::<Result<_, RunError>>()?;
                Val::F(*width, self.pack(&lanes))
            }
            Expr::Splat(a, w) | Expr::Broadcast(a, w) => {
                let (aw, parts) = self.float(a)?;
                if aw != 1 {
                    return Err(err(&self.kernel, format!("splat of a {aw}-lane value")));
                }
                let (n, ty) = parts_of(*w);
                let part = if ty == types::F32 {
                    parts[0]
                } else {
                    self.b.ins().splat(ty, parts[0])
                };
                Val::F(*w, vec![part; n])
            }
            Expr::Lane(a, l) => {
                let (w, parts) = self.float(a)?;
                if *l >= w {
                    return Err(err(&self.kernel, format!("lane {l} of a {w}-lane value")));
                }
                let v = if w >= 4 {
                    self.b.ins().extractlane(parts[*l as usize / 4], *l % 4)
                } else {
                    parts[*l as usize]
                };
                Val::F(1, vec![v])
            }
            Expr::Fma(a, b, c) => {
                let (w, a) = self.float(a)?;
                let (_, b) = self.float_of(b, w)?;
                let (_, c) = self.float_of(c, w)?;
                let parts = (0..a.len())
                    .map(|k| self.b.ins().fma(a[k], b[k], c[k]))
                    .collect();
                Val::F(w, parts)
            }
            Expr::Select(c, a, b) => {
                if reads_memory(a) || reads_memory(b) {
                    self.select_branch(c, a, b)?
                } else {
                    let c = self.int(c)?;
                    match (self.expr(a)?, self.expr(b)?) {
                        (Val::I(x), Val::I(y)) => Val::I(self.b.ins().select(c, x, y)),
                        (Val::F(w, x), Val::F(v, y)) if w == v => {
                            let parts = (x.iter().zip(&y))
                                .map(|(&x, &y)| self.b.ins().select(c, x, y))
                                .collect();
                            Val::F(w, parts)
                        }
                        _ => return Err(err(&self.kernel, "select arms of two types")),
                    }
                }
            }
            Expr::ToFloat(a) => {
                let a = self.int(a)?;
                Val::F(1, vec![self.b.ins().fcvt_from_sint(types::F32, a)])
            }
            Expr::ToInt(a) => {
                let (w, p) = self.float(a)?;
                if w != 1 {
                    return Err(err(&self.kernel, "int() of a vector"));
                }
                // Saturating: OpenCL leaves out-of-range conversions undefined, and
                // a trap would kill the process.
                Val::I(self.b.ins().fcvt_to_sint_sat(types::I32, p[0]))
            }
            Expr::Hash(a, b) => {
                let a = self.int(a)?;
                let b = self.int(b)?;
                let fb = self.fmix(b);
                let x = self.b.ins().bxor(a, fb);
                Val::I(self.fmix(x))
            }
        })
    }

    /// `e` as an `i32`.
    pub fn int(&mut self, e: &Expr) -> Result<Value, RunError> {
        match self.expr(e)? {
            Val::I(v) => Ok(v),
            Val::F(..) => Err(err(&self.kernel, format!("`{e}` is a float, i32 expected"))),
        }
    }

    /// `e` as a float of any width.
    fn float(&mut self, e: &Expr) -> Result<(u8, Vec<Value>), RunError> {
        match self.expr(e)? {
            Val::F(w, p) => Ok((w, p)),
            Val::I(_) => Err(err(&self.kernel, format!("`{e}` is an i32, f32 expected"))),
        }
    }

    /// `e` as a float of `width` lanes (the type check made broadcasts explicit).
    fn float_of(&mut self, e: &Expr, width: u8) -> Result<(u8, Vec<Value>), RunError> {
        let (w, p) = self.float(e)?;
        if w != width {
            return Err(err(
                &self.kernel,
                format!("`{e}` has {w} lanes, {width} expected"),
            ));
        }
        Ok((w, p))
    }

    /// The address of element `index` of buffer `buf`: base + 4·index, the index
    /// sign-extended (a negative index is the kernel's bug, as in OpenCL).
    fn address(&mut self, buf: &str, index: &Expr) -> Result<Value, RunError> {
        let base = *self
            .bufs
            .get(buf)
            .ok_or_else(|| err(&self.kernel, format!("`{buf}` is not a parameter")))?;
        let i = self.int(index)?;
        let i = self.b.ins().sextend(types::I64, i);
        let off = self.b.ins().ishl_imm_s(i, 2);
        Ok(self.b.ins().iadd(base, off))
    }

    /// Scalars into the parts of a float of `lanes.len()` lanes.
    fn pack(&mut self, lanes: &[Value]) -> Vec<Value> {
        if lanes.len() < 4 {
            return lanes.to_vec();
        }
        lanes
            .chunks(4)
            .map(|q| {
                let mut v = self.b.ins().scalar_to_vector(types::F32X4, q[0]);
                for (l, &x) in q.iter().enumerate().skip(1) {
                    v = self.b.ins().insertlane(v, x, l as u8);
                }
                v
            })
            .collect()
    }

    pub fn call(&mut self, f: Func, x: Value) -> Result<Value, RunError> {
        if f == Func::Sqrt {
            return Ok(self.b.ins().sqrt(x));
        }
        let callee = *self
            .funcs
            .get(&f)
            .ok_or_else(|| err(&self.kernel, format!("no symbol for {f:?}")))?;
        if self.b.func.dfg.value_type(x) == types::F32 {
            let call = self.b.ins().call(callee, &[x]);
            return Ok(self.b.inst_results(call)[0]);
        }
        let mut out = x;
        for l in 0..4u8 {
            let s = self.b.ins().extractlane(x, l);
            let call = self.b.ins().call(callee, &[s]);
            let r = self.b.inst_results(call)[0];
            out = self.b.ins().insertlane(out, r, l);
        }
        Ok(out)
    }

    /// MurmurHash3's finaliser on an `i32` as `u32` (`runtime::dropout::fmix32`).
    fn fmix(&mut self, h: Value) -> Value {
        let ins = |r: &mut Self, h: Value, shift: i64| {
            let s = r.b.ins().ushr_imm_s(h, shift);
            r.b.ins().bxor(h, s)
        };
        let h = ins(self, h, 16);
        let h = self.b.ins().imul_imm_s(h, 0x85eb_ca6bu32 as i32 as i64);
        let h = ins(self, h, 13);
        let h = self.b.ins().imul_imm_s(h, 0xc2b2_ae35u32 as i32 as i64);
        ins(self, h, 16)
    }

    fn binary(&mut self, op: BinOp, a: &Expr, b: &Expr) -> Result<Val, RunError> {
        if op == BinOp::And && reads_memory(b) {
            // `&&` short-circuits: its right side may read what the left rules out.
            let zero = Expr::Int(0);
            let one = Expr::Int(1);
            let rhs = Expr::Select(
                Box::new(Expr::Bin(
                    BinOp::Eq,
                    Box::new(b.clone()),
                    Box::new(zero.clone()),
                )),
                Box::new(zero.clone()),
                Box::new(one),
            );
            return self.select_branch(a, &rhs, &zero);
        }
        let (x, y) = (self.expr(a)?, self.expr(b)?);
        match (x, y) {
            (Val::I(x), Val::I(y)) => Ok(Val::I(self.int_bin(op, x, y, b))),
            (Val::F(w, x), Val::F(v, y)) if w == v => {
                if matches!(op, BinOp::Lt | BinOp::Le | BinOp::Eq) {
                    if w != 1 {
                        return Err(err(&self.kernel, "a comparison of vectors"));
                    }
                    let cc = match op {
                        BinOp::Lt => FloatCC::LessThan,
                        BinOp::Le => FloatCC::LessThanOrEqual,
                        _ => FloatCC::Equal,
                    };
                    let c = self.b.ins().fcmp(cc, x[0], y[0]);
                    return Ok(Val::I(self.b.ins().uextend(types::I32, c)));
                }
                let parts = (0..x.len())
                    .map(|k| self.float_bin(op, x[k], y[k]))
                    .collect::<Result<_, _>>()?;
                Ok(Val::F(w, parts))
            }
            _ => Err(err(
                &self.kernel,
                format!(
                    "operands of `{}` of two types",
                    Expr::Bin(op, a.clone().into(), b.clone().into())
                ),
            )),
        }
    }

    fn int_bin(&mut self, op: BinOp, x: Value, y: Value, rhs: &Expr) -> Value {
        let i = self.b.ins();
        let cmp = |r: &mut Self, cc: IntCC| {
            let c = r.b.ins().icmp(cc, x, y);
            r.b.ins().uextend(types::I32, c)
        };
        match op {
            BinOp::Add => i.iadd(x, y),
            BinOp::Sub => i.isub(x, y),
            BinOp::Mul => i.imul(x, y),
            BinOp::Div | BinOp::Rem => {
                // A zero divisor would trap (SIGFPE); OpenCL leaves it undefined.
                // Kernels divide by constants, which need no check.
                let y = match rhs {
                    Expr::Int(c) if *c as i32 != 0 && *c as i32 != -1 => y,
                    _ => {
                        let one = self.b.ins().iconst(types::I32, 1);
                        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                        self.b.ins().select(zero, one, y)
                    }
                };
                if op == BinOp::Div {
                    self.b.ins().sdiv(x, y)
                } else {
                    self.b.ins().srem(x, y)
                }
            }
            BinOp::Min => i.smin(x, y),
            BinOp::Max => i.smax(x, y),
            BinOp::Lt => cmp(self, IntCC::SignedLessThan),
            BinOp::Le => cmp(self, IntCC::SignedLessThanOrEqual),
            BinOp::Eq => cmp(self, IntCC::Equal),
            BinOp::And => {
                let a = self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0);
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, y, 0);
                let both = self.b.ins().band(a, c);
                self.b.ins().uextend(types::I32, both)
            }
        }
    }

    fn float_bin(&mut self, op: BinOp, x: Value, y: Value) -> Result<Value, RunError> {
        Ok(match op {
            BinOp::Add => self.b.ins().fadd(x, y),
            BinOp::Sub => self.b.ins().fsub(x, y),
            BinOp::Mul => self.b.ins().fmul(x, y),
            BinOp::Div => self.b.ins().fdiv(x, y),
            // OpenCL's definitions: min(x, y) = y < x ? y : x and max(x, y) =
            // x < y ? y : x, so a NaN in x passes through (ReLU keeps NaN, as the
            // interpreter's does).
            BinOp::Min => self.pick_if_less(y, x, y, x),
            BinOp::Max => self.pick_if_less(x, y, y, x),
            _ => return Err(err(&self.kernel, format!("`{op:?}` of floats"))),
        })
    }

    /// `a < b ? then : other`, lane by lane.
    fn pick_if_less(&mut self, a: Value, b: Value, then: Value, other: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, a, b);
        if self.b.func.dfg.value_type(a) == types::F32 {
            self.b.ins().select(c, then, other)
        } else {
            let mask = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), c);
            self.b.ins().bitselect(mask, then, other)
        }
    }

    /// `c ? a : b` evaluating only the arm taken.
    fn select_branch(&mut self, c: &Expr, a: &Expr, b: &Expr) -> Result<Val, RunError> {
        let c = self.int(c)?;
        let then_b = self.b.create_block();
        let else_b = self.b.create_block();
        let merge = self.b.create_block();
        self.b.ins().brif(c, then_b, &[], else_b, &[]);
        self.b.seal_block(then_b);
        self.b.seal_block(else_b);
        self.b.switch_to_block(then_b);
        self.cond_depth += 1;
        let x = self.expr(a);
        self.cond_depth -= 1;
        let x = x?;
        let (ints, w, xs) = match &x {
            Val::I(v) => (true, 1, vec![*v]),
            Val::F(w, p) => (false, *w, p.clone()),
        };
        for &v in &xs {
            let ty = self.b.func.dfg.value_type(v);
            self.b.append_block_param(merge, ty);
        }
        let args: Vec<_> = xs.iter().map(|&v| v.into()).collect();
        self.b.ins().jump(merge, &args);
        self.b.switch_to_block(else_b);
        self.cond_depth += 1;
        let y = self.expr(b);
        self.cond_depth -= 1;
        let ys = match (y?, ints) {
            (Val::I(v), true) => vec![v],
            (Val::F(v, p), false) if v == w => p,
            _ => return Err(err(&self.kernel, "select arms of two types")),
        };
        let args: Vec<_> = ys.iter().map(|&v| v.into()).collect();
        self.b.ins().jump(merge, &args);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        let params = self.b.block_params(merge).to_vec();
        Ok(if ints {
            Val::I(params[0])
        } else {
            Val::F(w, params)
        })
    }
}
