//! Calls and application: binding a call's arguments, currying a layer that still
//! waits for its input, and expanding builtins, templates (`def`) and blocks, each in
//! its naming scope.

use super::args::{bind, ParamSpec, Ty};
use super::builtins::{self, Arity, Builtin, BuiltinCall};
use super::elab::{Elab, Env, LayerRecord, MAX_APPLICATIONS, MAX_CALL_DEPTH};
use super::scope::Naming;
use super::value::{ArgValue, Callee, LayerValue, Spanned, Value};
use crate::diag::{nearest, Diagnostic, Span};
use crate::syntax::ast::*;
use petgraph::stable_graph::NodeIndex;
use std::rc::Rc;

impl Elab<'_> {
    // ------------------------------------------------------------------ calls

    fn callee_params(&self, callee: &Ident) -> Result<(Callee, Vec<ParamSpec>, Arity), Diagnostic> {
        if let Some(d) = self.defs.get(&callee.name) {
            return Ok((
                Callee::Def(callee.name.clone()),
                user_params(&d.params),
                Arity::Exactly(1),
            ));
        }
        if let Some(b) = self.blocks.get(&callee.name) {
            return Ok((
                Callee::Block(callee.name.clone()),
                user_params(&b.params),
                Arity::Exactly(b.inputs.len()),
            ));
        }
        if let Some(b) = builtins::lookup(&callee.name) {
            return Ok((Callee::Builtin(b.name), (b.params)(), b.arity));
        }
        let mut known: Vec<&str> = builtins::names().collect();
        known.extend(self.defs.keys().map(String::as_str));
        known.extend(self.blocks.keys().map(String::as_str));
        let d = Diagnostic::at(
            "E0102",
            callee.span,
            format!("unknown layer or function `{}`", callee.name),
            "not a builtin, `def` or `block`",
        );
        Err(match nearest(&callee.name, known.iter().copied()) {
            Some(best) => d.hint(format!("did you mean `{best}`?")),
            None => d.hint("see docs/language.md for the list of layers"),
        })
    }

    pub(crate) fn eval_call(
        &mut self,
        env: &Env,
        callee: &Ident,
        args: &[Arg],
        span: Span,
        naming: Naming,
    ) -> Result<Value, Diagnostic> {
        let (target, params, arity) = self.callee_params(callee)?;
        // Leading positional tensors are operands; the rest bind to parameters.
        let mut tensors = Vec::new();
        let mut rest = Vec::new();
        for a in args {
            // Positional arguments precede keywords, so `rest.len()` is the parameter
            // this one binds to.
            let words = match &a.name {
                Some(n) => params
                    .iter()
                    .find(|p| p.name == n.name)
                    .and_then(|p| p.ty.words()),
                None => params.get(rest.len()).and_then(|p| p.ty.words()),
            };
            let v = match (&a.value.kind, words) {
                (ExprKind::Ident(name), Some(w)) => {
                    self.lookup(env, name, a.value.span, Some(w))?
                }
                _ => self.eval(env, &a.value, Naming::Auto)?,
            };
            match (&v.value, &a.name) {
                (Value::Tensor(t), None) if rest.is_empty() && arity != Arity::Exactly(0) => {
                    tensors.push(*t)
                }
                _ => rest.push(ArgValue {
                    name: a.name.clone(),
                    value: v,
                }),
            }
        }
        let explicit = match &naming {
            Naming::Explicit(n) => Some(n.clone()),
            _ => None,
        };
        let layer = LayerValue::Call {
            callee: target.clone(),
            args: rest,
            trailing: Vec::new(),
            name: explicit,
            span,
        };
        let needed = match arity {
            Arity::Exactly(0) => {
                // Configuration objects: bind now so errors show at the call.
                let Callee::Builtin(name) = target else {
                    unreachable!("only builtins are specs")
                };
                let LayerValue::Call { args, .. } = &layer else {
                    unreachable!()
                };
                return builtins::make_spec(self, name, args, span);
            }
            Arity::Exactly(n) => n,
            Arity::AtLeast(n) => n.max(tensors.len()),
        };
        if tensors.len() > needed {
            return Err(Diagnostic::at(
                "E0206",
                span,
                format!(
                    "`{}` takes {needed} tensor input(s), got {}",
                    callee.name,
                    tensors.len()
                ),
                "too many tensors",
            ));
        }
        if tensors.len() == needed && needed > 0 {
            let out = self.apply_with_inputs(&layer, tensors, naming)?;
            return Ok(Value::Tensor(out));
        }
        if needed - tensors.len() > 1 {
            return Err(Diagnostic::at(
                "E0206",
                span,
                format!(
                    "`{}` needs {needed} tensor inputs but got {}; a pipeline can supply only the first",
                    callee.name,
                    tensors.len()
                ),
                "missing tensor inputs",
            ));
        }
        let LayerValue::Call {
            callee,
            args,
            name,
            span,
            ..
        } = layer
        else {
            unreachable!()
        };
        Ok(Value::Layer(Rc::new(LayerValue::Call {
            callee,
            args,
            trailing: tensors,
            name,
            span,
        })))
    }

    /// Applies a layer waiting for one input.
    pub(crate) fn apply(
        &mut self,
        layer: &LayerValue,
        input: NodeIndex,
        naming: Naming,
    ) -> Result<NodeIndex, Diagnostic> {
        self.applications += 1;
        if self.applications > MAX_APPLICATIONS {
            return Err(Diagnostic::at(
                "E0301",
                layer.span(),
                format!("the model applies more than {MAX_APPLICATIONS} layers"),
                "while expanding this",
            )
            .hint("check nested `repeat` counts; real CNNs are far smaller"));
        }
        match layer {
            LayerValue::Call { trailing, .. } => {
                let mut inputs = vec![input];
                inputs.extend(trailing);
                self.apply_with_inputs(layer, inputs, naming)
            }
            LayerValue::Compose { parts, name } => {
                // A named composition is a scope of its own (`as stem`, a repeat child).
                let naming = match (naming, name) {
                    (Naming::Auto, Some(n)) => Naming::Explicit(n.clone()),
                    (n, _) => n,
                };
                let scoped = !matches!(naming, Naming::Auto);
                if scoped {
                    let path = self.scopes.alloc("seq", &naming)?;
                    self.scopes.push(path);
                }
                let mut x = Ok(input);
                for p in parts {
                    x = x.and_then(|x| self.apply(p, x, Naming::Auto));
                }
                if scoped {
                    self.scopes.pop();
                }
                x
            }
            LayerValue::Repeat {
                count,
                body,
                name,
                span,
            } => {
                let mut x = input;
                match name {
                    None => {
                        for _ in 0..*count {
                            x = self.apply(body, x, Naming::Auto)?;
                        }
                    }
                    Some(n) => {
                        let path = self.scopes.alloc("repeat", &Naming::Explicit(n.clone()))?;
                        self.scopes.push(path);
                        for i in 0..*count {
                            x = self.apply(body, x, Naming::Given(i.to_string()))?;
                            self.check_budget(*span)?;
                        }
                        self.scopes.pop();
                    }
                }
                Ok(x)
            }
        }
    }

    fn apply_with_inputs(
        &mut self,
        layer: &LayerValue,
        inputs: Vec<NodeIndex>,
        naming: Naming,
    ) -> Result<NodeIndex, Diagnostic> {
        let LayerValue::Call {
            callee,
            args,
            name,
            span,
            ..
        } = layer
        else {
            unreachable!("only calls take several inputs")
        };
        let naming = match (naming, name) {
            (Naming::Auto, Some(n)) => Naming::Explicit(n.clone()),
            (n, _) => n,
        };
        match callee {
            Callee::Builtin(b) => {
                let builtin = builtins::lookup(b).expect("builtin exists");
                self.apply_builtin(builtin, inputs, args, *span, naming)
            }
            Callee::Def(d) => self.apply_def(d, inputs, args, *span, naming),
            Callee::Block(b) => self.apply_block(b, inputs, args, *span, naming),
        }
    }

    fn apply_builtin(
        &mut self,
        b: &'static Builtin,
        inputs: Vec<NodeIndex>,
        args: &[ArgValue],
        span: Span,
        naming: Naming,
    ) -> Result<NodeIndex, Diagnostic> {
        let bound = bind(b.name, &(b.params)(), args, span)?;
        let path = self.scopes.alloc(b.kind, &naming)?;
        let before = (self.param_total, self.attributed);
        let call = BuiltinCall {
            inputs,
            args: bound,
            path: path.clone(),
            span,
        };
        let out = (b.apply)(self, &call)?;
        if out != call.inputs[0] {
            let owned = (self.param_total - before.0) - (self.attributed - before.1);
            self.record(&path, b.name, out, owned, span);
        }
        Ok(out)
    }

    pub(crate) fn record(
        &mut self,
        path: &str,
        kind: &str,
        out: NodeIndex,
        params: u64,
        span: Span,
    ) {
        self.attributed += params;
        self.layers.push(LayerRecord {
            path: path.to_string(),
            kind: kind.to_string(),
            shape: self.ty(out).to_string(),
            params,
            span,
        });
    }

    fn enter(&mut self, what: &str, span: Span) -> Result<(), Diagnostic> {
        if self.call_stack.iter().any(|c| c == what) {
            return Err(Diagnostic::at(
                "E0307",
                span,
                format!("`{what}` uses itself"),
                "recursive use here",
            )
            .note(format!(
                "call chain: {} -> {what}",
                self.call_stack.join(" -> ")
            ))
            .hint("the language has no conditionals, so recursion never ends; use `repeat`"));
        }
        if self.call_stack.len() >= MAX_CALL_DEPTH {
            return Err(Diagnostic::at(
                "E0307",
                span,
                format!("blocks nest deeper than {MAX_CALL_DEPTH} levels"),
                "here",
            ));
        }
        self.call_stack.push(what.to_string());
        Ok(())
    }

    fn apply_def(
        &mut self,
        name: &str,
        inputs: Vec<NodeIndex>,
        args: &[ArgValue],
        span: Span,
        naming: Naming,
    ) -> Result<NodeIndex, Diagnostic> {
        self.enter(name, span)?;
        // The def stays on the call stack while its body is applied, so a def whose
        // body names another def that names it back is caught as recursion.
        let out = self.expand_def(name, inputs, args, span, naming);
        self.call_stack.pop();
        out
    }

    fn expand_def(
        &mut self,
        name: &str,
        inputs: Vec<NodeIndex>,
        args: &[ArgValue],
        span: Span,
        naming: Naming,
    ) -> Result<NodeIndex, Diagnostic> {
        let def = self.defs[name];
        let env = self.bind_user(name, &def.params, args, span)?;
        let body = self.eval(&env, &def.body, Naming::Auto)?;
        let Value::Layer(layer) = body.value else {
            return Err(Diagnostic::at(
                "E0306",
                span,
                format!(
                    "`{name}` is applied to a tensor, but its body is a {}",
                    body.value.type_name()
                ),
                "applied here",
            )
            .label(def.body.span, "this is not a layer"));
        };
        let input = inputs[0];
        match &*layer {
            // A one-layer template names that layer after itself (`flex1`).
            LayerValue::Call { .. } => {
                let path = self.scopes.alloc(name, &naming)?;
                let last = path.rsplit('.').next().unwrap_or(&path).to_string();
                self.apply(&layer, input, Naming::Given(last))
            }
            _ => {
                let path = self.scopes.alloc(name, &naming)?;
                self.scopes.push(path);
                let out = self.apply(&layer, input, Naming::Auto);
                self.scopes.pop();
                out
            }
        }
    }

    fn apply_block(
        &mut self,
        name: &str,
        inputs: Vec<NodeIndex>,
        args: &[ArgValue],
        span: Span,
        naming: Naming,
    ) -> Result<NodeIndex, Diagnostic> {
        let block = self.blocks[name];
        self.enter(name, span)?;
        let mut env = self.bind_user(name, &block.params, args, span)?;
        for (ident, t) in block.inputs.iter().zip(&inputs) {
            env.insert(
                ident.name.clone(),
                Spanned {
                    value: Value::Tensor(*t),
                    span: ident.span,
                },
            );
        }
        let path = self.scopes.alloc(name, &naming)?;
        self.scopes.push(path);
        let owner = (format!("block `{name}`"), block.name.span);
        let result = self.run_stmts(&mut env, &block.body, &owner);
        self.scopes.pop();
        self.call_stack.pop();
        let outs = result?;
        match outs.as_slice() {
            [one] => Ok(*one),
            _ => Err(Diagnostic::at(
                "E0308",
                block.name.span,
                format!(
                    "block `{name}` returns {} tensors; blocks return exactly one",
                    outs.len()
                ),
                "defined here",
            )),
        }
    }

    /// Binds a `def`/`block` call's arguments; defaults are evaluated in the scope of the
    /// earlier parameters.
    fn bind_user(
        &mut self,
        what: &str,
        params: &[Param],
        args: &[ArgValue],
        span: Span,
    ) -> Result<Env, Diagnostic> {
        let specs: Vec<ParamSpec> = params
            .iter()
            .map(|p| ParamSpec {
                name: p.name.name.clone(),
                ty: declared_ty(p),
                default: p.default.as_ref().map(|_| Value::Word("<default>".into())),
            })
            .collect();
        let bound = bind(what, &specs, args, span)?;
        let mut env = Env::new();
        for (p, (name, v, given)) in params.iter().zip(bound.values) {
            let v = if given {
                v
            } else {
                let default = p.default.as_ref().expect("defaulted params have defaults");
                let d = self.eval(&env, default, Naming::Auto)?;
                Spanned {
                    value: declared_ty(p).check(&d)?,
                    span: d.span,
                }
            };
            env.insert(name, v);
        }
        Ok(env)
    }

    /// Runs `let` and `return` statements; returns the returned tensors.
    pub(crate) fn run_stmts(
        &mut self,
        env: &mut Env,
        stmts: &[Stmt],
        owner: &(String, Span),
    ) -> Result<Vec<NodeIndex>, Diagnostic> {
        for s in stmts {
            match s {
                Stmt::Let { name, value } => {
                    builtins::check_bindable(&name.name, name.span)?;
                    let v = self.eval(env, value, Naming::Auto)?;
                    env.insert(name.name.clone(), v);
                }
                Stmt::Return { values, .. } => {
                    let mut outs = Vec::new();
                    for e in values {
                        let v = self.eval(env, e, Naming::Auto)?;
                        match v.value {
                            Value::Tensor(t) => outs.push(t),
                            other => {
                                return Err(Diagnostic::at(
                                    "E0308",
                                    e.span,
                                    format!("`return` needs tensors, got {}", other.type_name()),
                                    "not a tensor",
                                )
                                .hint("apply the layer to an input: `return x |> layer`"))
                            }
                        }
                    }
                    return Ok(outs);
                }
            }
        }
        Err(Diagnostic::at(
            "E0308",
            owner.1,
            format!("{} has no `return`", owner.0),
            "returns nothing",
        )
        .hint("end the body with `return EXPR`, e.g. `return relu(y + h)`"))
    }
}

pub(crate) fn with_name(l: &LayerValue, name: Ident) -> LayerValue {
    match l {
        LayerValue::Call {
            callee,
            args,
            trailing,
            span,
            ..
        } => LayerValue::Call {
            callee: callee.clone(),
            args: args.clone(),
            trailing: trailing.clone(),
            name: Some(name),
            span: *span,
        },
        LayerValue::Repeat {
            count, body, span, ..
        } => LayerValue::Repeat {
            count: *count,
            body: body.clone(),
            name: Some(name),
            span: *span,
        },
        LayerValue::Compose { parts, .. } => LayerValue::Compose {
            parts: parts.clone(),
            name: Some(name),
        },
    }
}

fn declared_ty(p: &Param) -> Ty {
    match p.ty.as_ref().map(|t| t.name.as_str()) {
        Some("int") => Ty::Int,
        Some("float") => Ty::Float,
        Some("bool") => Ty::Bool,
        Some("string") => Ty::Str,
        Some("layer") => Ty::LayerOrNone,
        Some("basis") => Ty::Basis,
        Some("slots") => Ty::Slots,
        Some("list") => Ty::List,
        _ => Ty::Any,
    }
}

/// Type names allowed in parameter annotations.
pub const PARAM_TYPES: &[&str] = &[
    "int", "float", "bool", "string", "list", "layer", "basis", "slots",
];

fn user_params(params: &[Param]) -> Vec<ParamSpec> {
    params
        .iter()
        .map(|p| ParamSpec {
            name: p.name.name.clone(),
            ty: declared_ty(p),
            default: None,
        })
        .collect()
}
