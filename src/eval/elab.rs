//! The elaborator: evaluates a syntax tree into a typed graph. Constant arguments are
//! computed, blocks and templates are expanded, layers get stable PyTorch-style names,
//! and every node is shape-checked as it is created so errors point at the layer.

use super::builtins;
use super::scope::{Naming, Scopes};
use super::value::{LayerValue, Spanned, Value};
use crate::diag::{nearest, Diagnostic, Span};
use crate::ir::graph::{Graph, Node};
use crate::ir::op::{Init, Op, ParamRole};
use crate::ir::shape::infer;
use crate::ir::types::{DType, Dim, TensorType};
use crate::syntax::ast::*;
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Most layer applications one model may expand to; guards against `repeat 10^9`.
pub const MAX_NODES: usize = 200_000;
/// Most layer applications one model may perform; guards against nested repeats of
/// layers that add no nodes (`repeat 10000 (shortcut(3) |> repeat 10000 ...)`).
pub const MAX_APPLICATIONS: usize = 1_000_000;
/// Largest `repeat` count.
pub const MAX_REPEAT: i64 = 10_000;
/// Deepest nesting of block and template calls.
pub const MAX_CALL_DEPTH: usize = 64;
/// Largest element count of one parameter tensor (2^36 floats = 256 GiB).
pub const MAX_PARAM_NUMEL: u64 = 1 << 36;

/// One row of `fnetc check`'s layer table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerRecord {
    pub path: String,
    pub kind: String,
    pub shape: String,
    /// Parameters owned by this layer (shared tensors are counted where declared).
    pub params: u64,
    #[serde(skip)]
    pub span: Span,
}

pub(crate) type Env = HashMap<String, Spanned>;

pub struct Elab<'a> {
    pub graph: Graph,
    pub layers: Vec<LayerRecord>,
    pub dtype: DType,
    pub(crate) defs: BTreeMap<String, &'a DefDecl>,
    pub(crate) blocks: BTreeMap<String, &'a BlockDecl>,
    pub(crate) globals: HashMap<String, Spanned>,
    pub(crate) scopes: Scopes,
    pub(crate) call_stack: Vec<String>,
    pub(crate) param_spans: HashMap<String, Span>,
    /// Parameters created so far, by element count; a layer's own count is the
    /// difference across its application.
    pub(crate) param_total: u64,
    /// Parameters already shown in some layer row, so nested layers are not counted
    /// twice.
    pub(crate) attributed: u64,
    pub(crate) shared: super::shared::SharedState,
    pub(crate) slot_config: Option<Vec<u64>>,
    pub(crate) slot_states: Vec<super::slots::SlotState>,
    /// Layer applications so far, against `MAX_APPLICATIONS`.
    pub(crate) applications: usize,
    /// Legal but suspicious choices, reported without stopping (see `Module::warnings`).
    pub(crate) warnings: Vec<Diagnostic>,
}

impl<'a> Elab<'a> {
    pub fn new(slot_config: Option<Vec<u64>>) -> Elab<'a> {
        Elab {
            graph: Graph::new(""),
            layers: Vec::new(),
            dtype: DType::F32,
            defs: BTreeMap::new(),
            blocks: BTreeMap::new(),
            globals: HashMap::new(),
            scopes: Scopes::default(),
            call_stack: Vec::new(),
            param_spans: HashMap::new(),
            param_total: 0,
            attributed: 0,
            shared: Default::default(),
            slot_config,
            slot_states: Vec::new(),
            applications: 0,
            warnings: Vec::new(),
        }
    }

    pub(crate) fn check_budget(&self, span: Span) -> Result<(), Diagnostic> {
        if self.graph.g.node_count() > MAX_NODES {
            return Err(Diagnostic::at(
                "E0301",
                span,
                format!("the model expands to more than {MAX_NODES} graph nodes"),
                "while expanding this",
            )
            .hint("check `repeat` counts; real CNNs are far smaller"));
        }
        Ok(())
    }

    /// Adds an op node, inferring its type; a shape error becomes a diagnostic at `span`
    /// naming the layer.
    pub fn op(
        &mut self,
        op: Op,
        operands: &[NodeIndex],
        name: &str,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        self.check_budget(span)?;
        let types: Vec<&TensorType> = operands.iter().map(|o| &self.graph.node(*o).ty).collect();
        let ty = infer(&op, &types).map_err(|e| {
            let shown = name.rsplit('.').next().unwrap_or(name);
            let d = Diagnostic::at(
                "E0401",
                span,
                format!("shape mismatch in `{shown}` ({}): {}", op.name(), e.message),
                format!("`{name}` gets {}", describe_types(&types)),
            );
            match e.hint {
                Some(h) => d.hint(h),
                None => d,
            }
        })?;
        Ok(self.graph.add(
            Node {
                op,
                ty,
                name: name.to_string(),
                span,
            },
            operands,
        ))
    }

    /// Adds a parameter tensor named `path` with every dimension known.
    pub fn param(
        &mut self,
        path: String,
        shape: &[u64],
        role: ParamRole,
        init: Init,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        self.seeded_param(path, shape, role, init, None, span)
    }

    pub fn seeded_param(
        &mut self,
        path: String,
        shape: &[u64],
        role: ParamRole,
        init: Init,
        seed: Option<u64>,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        let ty = TensorType::known(self.dtype, shape);
        let numel = ty
            .numel()
            .filter(|n| *n <= MAX_PARAM_NUMEL)
            .ok_or_else(|| {
                Diagnostic::at(
                    "E0302",
                    span,
                    format!("parameter `{path}` of shape {shape:?} is too large"),
                    "declared here",
                )
                .hint(format!(
                    "one tensor may hold at most {MAX_PARAM_NUMEL} elements"
                ))
            })?;
        if let Some(prev) = self.param_spans.get(&path) {
            return Err(Diagnostic::at(
                "E0303",
                span,
                format!("two parameters would both be named `{path}`"),
                "second here",
            )
            .label(*prev, "first here")
            .hint("give one of the layers another name with `as NAME`"));
        }
        self.param_spans.insert(path.clone(), span);
        if role != ParamRole::Buffer {
            self.param_total = self.param_total.saturating_add(numel);
        }
        self.check_budget(span)?;
        Ok(self.graph.add(
            Node {
                op: Op::Param { role, init, seed },
                ty,
                name: path,
                span,
            },
            &[],
        ))
    }

    pub fn ty(&self, n: NodeIndex) -> &TensorType {
        &self.graph.node(n).ty
    }

    /// The known size of dimension `axis` of `n`, or a diagnostic at `span`.
    pub fn known_dim(
        &self,
        n: NodeIndex,
        axis: usize,
        what: &str,
        span: Span,
    ) -> Result<u64, Diagnostic> {
        let ty = self.ty(n);
        match ty.shape.get(axis).and_then(Dim::known) {
            Some(v) => Ok(v),
            None => Err(Diagnostic::at(
                "E0402",
                span,
                format!("{what} must be known here, but the input is {ty}"),
                "needs a concrete size",
            )
            .hint("declare this dimension of the input with a concrete size")),
        }
    }

    // ------------------------------------------------------------------ expressions

    pub(crate) fn eval(
        &mut self,
        env: &Env,
        e: &Expr,
        naming: Naming,
    ) -> Result<Spanned, Diagnostic> {
        let value = match &e.kind {
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(f) => Value::Float(*f),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Ident(name) => return self.lookup(env, name, e.span, None),
            ExprKind::List(items) => Value::List(
                items
                    .iter()
                    .map(|i| self.eval(env, i, Naming::Auto))
                    .collect::<Result<_, _>>()?,
            ),
            ExprKind::Neg(inner) => {
                let v = self.eval(env, inner, Naming::Auto)?;
                match v.value {
                    Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(|| overflow(e.span))?),
                    Value::Float(f) => Value::Float(-f),
                    other => {
                        return Err(Diagnostic::at(
                            "E0202",
                            inner.span,
                            format!("cannot negate a {}", other.type_name()),
                            "not a number",
                        ))
                    }
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(env, lhs, Naming::Auto)?;
                let b = self.eval(env, rhs, Naming::Auto)?;
                self.binary(*op, a, b, e.span)?
            }
            ExprKind::Call { callee, args } => self.eval_call(env, callee, args, e.span, naming)?,
            ExprKind::Named { inner, name } => {
                if !matches!(
                    inner.kind,
                    ExprKind::Call { .. } | ExprKind::Ident(_) | ExprKind::Pipe { .. }
                ) {
                    return Err(Diagnostic::at(
                        "E0304",
                        name.span,
                        "`as` names a layer or block call",
                        "nothing to name here",
                    )
                    .hint("write it after a call: `conv2d(16, 3) as conv1`"));
                }
                let v = self.eval(env, inner, Naming::Explicit(name.clone()))?;
                return match v.value {
                    Value::Layer(l) => Ok(Spanned {
                        value: Value::Layer(Rc::new(super::calls::with_name(&l, name.clone()))),
                        span: e.span,
                    }),
                    Value::Tensor(_) if matches!(inner.kind, ExprKind::Call { .. }) => Ok(v),
                    other => Err(Diagnostic::at(
                        "E0304",
                        name.span,
                        format!(
                            "`as` names a layer or block call, not a {}",
                            other.type_name()
                        ),
                        "nothing to name here",
                    )),
                };
            }
            ExprKind::Pipe { lhs, stage } => return self.eval_pipe(env, lhs, stage, e.span),
        };
        Ok(Spanned {
            value,
            span: e.span,
        })
    }

    /// A name: a local, a global (basis, slots), a block or template used as a layer,
    /// a builtin layer without arguments, or (where `words` allows) a bare word.
    pub(crate) fn lookup(
        &mut self,
        env: &Env,
        name: &str,
        span: Span,
        words: Option<&[&str]>,
    ) -> Result<Spanned, Diagnostic> {
        if let Some(v) = env.get(name).or_else(|| self.globals.get(name)) {
            return Ok(Spanned {
                value: v.value.clone(),
                span,
            });
        }
        let callee = Ident {
            name: name.to_string(),
            span,
        };
        if self.defs.contains_key(name)
            || self.blocks.contains_key(name)
            || builtins::lookup(name).is_some()
        {
            return Ok(Spanned {
                value: self.eval_call(env, &callee, &[], span, Naming::Auto)?,
                span,
            });
        }
        if words.is_some() || builtins::all_words().contains(&name) {
            return Ok(Spanned {
                value: Value::Word(name.to_string()),
                span,
            });
        }
        let mut known: Vec<&str> = builtins::names().collect();
        known.extend(env.keys().map(String::as_str));
        known.extend(self.globals.keys().map(String::as_str));
        known.extend(self.defs.keys().map(String::as_str));
        known.extend(self.blocks.keys().map(String::as_str));
        known.sort();
        let d = Diagnostic::at(
            "E0101",
            span,
            format!("unknown name `{name}`"),
            "not defined here",
        );
        Err(match nearest(name, known.iter().copied()) {
            Some(best) => d.hint(format!("did you mean `{best}`?")),
            None => {
                d.hint("define it with `NAME = ...` before use, or pass it as a block parameter")
            }
        })
    }

    fn binary(
        &mut self,
        op: BinOp,
        a: Spanned,
        b: Spanned,
        span: Span,
    ) -> Result<Value, Diagnostic> {
        use Value::*;
        Ok(match (&a.value, &b.value) {
            (Int(x), Int(y)) => {
                let r = match op {
                    BinOp::Add => x.checked_add(*y),
                    BinOp::Sub => x.checked_sub(*y),
                    BinOp::Mul => x.checked_mul(*y),
                    BinOp::Div => {
                        if *y == 0 {
                            return Err(Diagnostic::at(
                                "E0305",
                                b.span,
                                "division by zero",
                                "this is 0",
                            )
                            .hint("check the value of the divisor"));
                        }
                        // checked: i64::MIN / -1 overflows.
                        match x.checked_rem(*y) {
                            Some(r) if r != 0 => return Ok(Float(*x as f64 / *y as f64)),
                            _ => x.checked_div(*y),
                        }
                    }
                };
                Int(r.ok_or_else(|| overflow(span))?)
            }
            (Int(_) | Float(_), Int(_) | Float(_)) => {
                let (x, y) = (as_f64(&a.value), as_f64(&b.value));
                let r = match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => x / y,
                };
                if !r.is_finite() {
                    return Err(overflow(span));
                }
                Float(r)
            }
            (Tensor(x), Tensor(y)) if matches!(op, BinOp::Add | BinOp::Mul) => {
                let (op_node, kind) = if op == BinOp::Add {
                    (Op::Add, "add")
                } else {
                    (Op::Mul, "mul")
                };
                let path = self.scopes.alloc(kind, &Naming::Auto)?;
                let n = self.op(op_node, &[*x, *y], &path, span)?;
                self.record(&path, kind, n, 0, span);
                Tensor(n)
            }
            (Tensor(x), Int(_) | Float(_)) | (Int(_) | Float(_), Tensor(x)) if op == BinOp::Mul => {
                let factor = if let Tensor(_) = a.value {
                    as_f64(&b.value)
                } else {
                    as_f64(&a.value)
                };
                let path = self.scopes.alloc("scale", &Naming::Auto)?;
                let n = self.op(Op::Scale { factor }, &[*x], &path, span)?;
                self.record(&path, "scale", n, 0, span);
                Tensor(n)
            }
            (l, r) => {
                return Err(Diagnostic::at(
                    "E0202",
                    span,
                    format!(
                        "cannot apply `{}` to {} and {}",
                        op.symbol(),
                        l.type_name(),
                        r.type_name()
                    ),
                    "unsupported operands",
                )
                .hint("tensors support `+` (residual add) and `*`; numbers support + - * /"))
            }
        })
    }

    fn eval_pipe(
        &mut self,
        env: &Env,
        lhs: &Expr,
        stage: &Stage,
        span: Span,
    ) -> Result<Spanned, Diagnostic> {
        let input = self.eval(env, lhs, Naming::Auto)?;
        let layer = match stage {
            Stage::Apply(e) => {
                let v = self.eval(env, e, Naming::Auto)?;
                match v.value {
                    Value::Layer(l) => l,
                    other => {
                        return Err(Diagnostic::at(
                            "E0306",
                            e.span,
                            format!("`|>` needs a layer on its right, got {}", other.type_name()),
                            "not a layer",
                        )
                        .hint("write a layer call without its input, e.g. `x |> conv2d(16, 3)`"))
                    }
                }
            }
            Stage::Repeat { count, body, span } => {
                let c = self.eval(env, count, Naming::Auto)?;
                let n = match c.value {
                    Value::Int(n) if (0..=MAX_REPEAT).contains(&n) => n as u64,
                    Value::Int(n) => {
                        return Err(Diagnostic::at(
                            "E0204",
                            c.span,
                            format!("repeat count {n} is out of range"),
                            format!("expected 0..={MAX_REPEAT}"),
                        )
                        .hint(format!(
                            "`repeat` takes 0 to {MAX_REPEAT}; real networks repeat a block a few times"
                        )))
                    }
                    other => {
                        return Err(Diagnostic::at(
                            "E0202",
                            c.span,
                            format!("repeat count must be an int, got {}", other.type_name()),
                            "not an int",
                        )
                        .hint("write `repeat N layer` with a whole number N"))
                    }
                };
                let (body_expr, name) = match &body.kind {
                    ExprKind::Named { inner, name } => (inner.as_ref(), Some(name.clone())),
                    _ => (body, None),
                };
                let b = self.eval(env, body_expr, Naming::Auto)?;
                let Value::Layer(l) = b.value else {
                    return Err(Diagnostic::at(
                        "E0306",
                        body.span,
                        format!("`repeat` needs a layer, got {}", b.value.type_name()),
                        "not a layer",
                    ));
                };
                Rc::new(LayerValue::Repeat {
                    count: n,
                    body: l,
                    name,
                    span: *span,
                })
            }
        };
        match input.value {
            Value::Tensor(t) => {
                let out = self.apply(&layer, t, Naming::Auto)?;
                Ok(Spanned {
                    value: Value::Tensor(out),
                    span,
                })
            }
            Value::Layer(first) => Ok(Spanned {
                value: Value::Layer(Rc::new(LayerValue::Compose {
                    parts: vec![first, layer],
                    name: None,
                })),
                span,
            }),
            other => Err(Diagnostic::at(
                "E0306",
                lhs.span,
                format!(
                    "`|>` needs a tensor or layer on its left, got {}",
                    other.type_name()
                ),
                "not a tensor",
            )),
        }
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn overflow(span: Span) -> Diagnostic {
    Diagnostic::at("E0004", span, "arithmetic overflow", "result does not fit")
        .hint("ints are 64-bit and numbers must stay finite; check the constants")
}

fn describe_types(types: &[&TensorType]) -> String {
    let parts: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    parts.join(", ")
}
