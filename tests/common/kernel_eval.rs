//! A naive evaluator of the kernel IR: a tree walk over `Vec<f32>` lanes, one grid
//! point at a time, with the meaning OpenCL C gives each form (wrapping `i32`
//! arithmetic, truncating division, `min`/`max` as `y < x ? y : x` and `x < y ? y : x`,
//! lazy `?:` and `&&`, a guard that leaves the point). `tests/jit_render.rs` checks
//! the JIT against it.

use fnet::kernel_ir::{BinOp, Expr, Func, Kernel, Stmt};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub enum V {
    I(i32),
    F(Vec<f32>),
}

/// The naive evaluator: the kernel's meaning, as OpenCL C defines it.
pub struct Naive<'a> {
    pub bufs: HashMap<String, &'a mut Vec<f32>>,
    pub scopes: Vec<HashMap<String, V>>,
    pub gid: [i32; 3],
}

impl Naive<'_> {
    fn get(&self, name: &str) -> V {
        self.scopes
            .iter()
            .rev()
            .find_map(|s| s.get(name).cloned())
            .unwrap_or_else(|| panic!("`{name}`"))
    }

    fn set(&mut self, name: &str, v: V) {
        for s in self.scopes.iter_mut().rev() {
            if let Some(slot) = s.get_mut(name) {
                *slot = v;
                return;
            }
        }
        panic!("`{name}` undeclared");
    }

    fn int(&mut self, e: &Expr) -> i32 {
        match self.expr(e) {
            V::I(v) => v,
            V::F(_) => panic!("int expected: {e}"),
        }
    }

    fn f(&mut self, e: &Expr) -> Vec<f32> {
        match self.expr(e) {
            V::F(v) => v,
            V::I(_) => panic!("float expected: {e}"),
        }
    }

    fn expr(&mut self, e: &Expr) -> V {
        match e {
            Expr::Int(v) => V::I(*v as i32),
            Expr::Float(v) => V::F(vec![*v]),
            Expr::Var(n) => self.get(n),
            Expr::GlobalId(a) => V::I(self.gid[*a as usize]),
            Expr::Bin(BinOp::And, a, b) => V::I(i32::from(self.int(a) != 0 && self.int(b) != 0)),
            Expr::Bin(op, a, b) => match (self.expr(a), self.expr(b)) {
                (V::I(x), V::I(y)) => V::I(match op {
                    BinOp::Add => x.wrapping_add(y),
                    BinOp::Sub => x.wrapping_sub(y),
                    BinOp::Mul => x.wrapping_mul(y),
                    BinOp::Div => x.wrapping_div(y),
                    BinOp::Rem => x.wrapping_rem(y),
                    BinOp::Min => x.min(y),
                    BinOp::Max => x.max(y),
                    BinOp::Lt => i32::from(x < y),
                    BinOp::Le => i32::from(x <= y),
                    BinOp::Eq => i32::from(x == y),
                    BinOp::And => unreachable!(),
                }),
                (V::F(x), V::F(y)) => match op {
                    BinOp::Lt => V::I(i32::from(x[0] < y[0])),
                    BinOp::Le => V::I(i32::from(x[0] <= y[0])),
                    BinOp::Eq => V::I(i32::from(x[0] == y[0])),
                    _ => V::F(
                        x.iter()
                            .zip(&y)
                            .map(|(&x, &y)| match op {
                                BinOp::Add => x + y,
                                BinOp::Sub => x - y,
                                BinOp::Mul => x * y,
                                BinOp::Div => x / y,
                                BinOp::Min => {
                                    if y < x {
                                        y
                                    } else {
                                        x
                                    }
                                }
                                BinOp::Max => {
                                    if x < y {
                                        y
                                    } else {
                                        x
                                    }
                                }
                                _ => panic!("{op:?} of floats"),
                            })
                            .collect(),
                    ),
                },
                _ => panic!("mixed operands: {e}"),
            },
            Expr::Call(f, a) => V::F(
                self.f(a)
                    .into_iter()
                    .map(|x| match f {
                        Func::Exp => x.exp(),
                        Func::Sqrt => x.sqrt(),
                        Func::Sin => x.sin(),
                        Func::Log => x.ln(),
                        Func::Erf => fnet::reference::activation::erf(f64::from(x)) as f32,
                    })
                    .collect(),
            ),
            Expr::Load { buf, index, width } => {
                let i = self.int(index) as usize;
                V::F(self.bufs[buf.as_str()][i..i + *width as usize].to_vec())
            }
            Expr::Gather {
                buf,
                index,
                stride,
                width,
            } => {
                let i = self.int(index) as i64;
                let b = &self.bufs[buf.as_str()];
                V::F(
                    (0..*width as i64)
                        .map(|l| b[(i + l * stride) as usize])
                        .collect(),
                )
            }
            Expr::Splat(a, w) | Expr::Broadcast(a, w) => V::F(vec![self.f(a)[0]; *w as usize]),
            Expr::Lane(a, l) => V::F(vec![self.f(a)[*l as usize]]),
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (self.f(a), self.f(b), self.f(c));
                V::F((0..a.len()).map(|k| a[k].mul_add(b[k], c[k])).collect())
            }
            Expr::Select(c, a, b) => {
                if self.int(c) != 0 {
                    self.expr(a)
                } else {
                    self.expr(b)
                }
            }
            Expr::ToFloat(a) => V::F(vec![self.int(a) as f32]),
            Expr::ToInt(a) => V::I(self.f(a)[0] as i32),
            Expr::Hash(a, b) => {
                let (a, b) = (self.int(a), self.int(b));
                V::I(fnet::runtime::dropout::hash2(a as u32, b as u32) as i32)
            }
        }
    }

    /// Runs `body`; `false` when a guard left the point.
    pub fn block(&mut self, body: &[Stmt]) -> bool {
        self.scopes.push(HashMap::new());
        let go_on = body.iter().all(|s| self.stmt(s));
        self.scopes.pop();
        go_on
    }

    fn stmt(&mut self, s: &Stmt) -> bool {
        match s {
            Stmt::Let { name, init, .. } => {
                let v = self.expr(init);
                self.scopes.last_mut().unwrap().insert(name.clone(), v);
            }
            Stmt::Assign { name, value } => {
                let v = self.expr(value);
                self.set(name, v);
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
                ..
            } => {
                let mut i = self.int(start);
                self.scopes.push(HashMap::new());
                while i < self.int(end) {
                    self.scopes.last_mut().unwrap().insert(var.clone(), V::I(i));
                    if !self.block(body) {
                        self.scopes.pop();
                        return false;
                    }
                    i = match self.get(var) {
                        V::I(v) => v,
                        V::F(_) => unreachable!(),
                    } + *step as i32;
                }
                self.scopes.pop();
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.int(cond) != 0;
                return self.block(if c { then } else { otherwise });
            }
            Stmt::Block(body) => return self.block(body),
            Stmt::Guard(c) => return self.int(c) != 0,
            Stmt::Store {
                buf, index, value, ..
            } => {
                let i = self.int(index) as usize;
                let v = self.f(value);
                self.bufs.get_mut(buf.as_str()).unwrap()[i..i + v.len()].copy_from_slice(&v);
            }
        }
        true
    }
}

/// Runs `k` over its whole grid, axis 0 fastest, on `bufs` (one per parameter).
pub fn naive(k: &Kernel, bufs: &mut [Vec<f32>]) {
    let g = |a: usize| k.grid.get(a).copied().unwrap_or(1) as i32;
    for z in 0..g(2) {
        for y in 0..g(1) {
            for x in 0..g(0) {
                let mut n = Naive {
                    bufs: k
                        .params
                        .iter()
                        .map(|p| p.name.clone())
                        .zip(bufs.iter_mut())
                        .collect(),
                    scopes: vec![HashMap::new()],
                    gid: [x, y, z],
                };
                n.block(&k.body);
            }
        }
    }
}
