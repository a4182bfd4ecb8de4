//! Elaboration: syntax tree to typed graph.

pub mod args;
pub mod builtins;
pub mod calls;
pub mod elab;
pub mod flexconv;
pub mod layers;
pub mod lc;
pub mod recipe;
mod recipe_rules;
pub mod scope;
pub mod shared;
pub mod slots;
pub mod value;

use crate::diag::{Diagnostic, Span};
use crate::ir::graph::Graph;
use crate::ir::op::Op;
use crate::ir::types::{DType, Dim, TensorType};
use crate::syntax::ast::{DimAst, Item, Program, Stmt};
use elab::{Elab, Env, LayerRecord};
use scope::Naming;
use value::{Spanned, Value};

/// Options that select which graph a program elaborates to.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// 1-based slot numbers that downsample (for models with pooling slots).
    pub slot_config: Option<Vec<u64>>,
    /// `--set NAME=VALUE`: replaces model-level constants such as `E = 1`.
    pub overrides: Vec<(String, String)>,
}

/// An elaborated model: its graph, the per-layer table, and the training recipe.
#[derive(Clone, Debug)]
pub struct Module {
    pub graph: Graph,
    pub layers: Vec<LayerRecord>,
    pub recipe: Option<recipe::Recipe>,
    /// Warnings: each a `Diagnostic` with `Severity::Warning`, against the source.
    pub warnings: Vec<Diagnostic>,
}

pub fn elaborate(program: &Program, options: &Options) -> Result<Module, Diagnostic> {
    let mut e = Elab::new(options.slot_config.clone());
    let model = &program.model;
    e.graph.name = model.name.name.clone();
    for item in &model.items {
        match item {
            Item::Def(d) => {
                check_new_name(&e, &d.name.name, d.name.span)?;
                check_params(&d.params)?;
                e.defs.insert(d.name.name.clone(), d);
            }
            Item::Block(b) => {
                check_new_name(&e, &b.name.name, b.name.span)?;
                check_params(&b.params)?;
                for input in &b.inputs {
                    builtins::check_bindable(&input.name, input.span)?;
                }
                e.blocks.insert(b.name.name.clone(), b);
            }
            _ => {}
        }
    }
    let mut env = Env::new();
    let mut returned = false;
    let mut seed_span: Option<Span> = None;
    for item in &model.items {
        match item {
            Item::Input(decl) => {
                builtins::check_bindable(&decl.name.name, decl.name.span)?;
                let Some(dtype) = DType::parse(&decl.dtype.name) else {
                    return Err(Diagnostic::at(
                        "E0103",
                        decl.dtype.span,
                        format!("unknown element type `{}`", decl.dtype.name),
                        "not a type",
                    )
                    .suggest(&decl.dtype.name, ["f32", "f64"])
                    .hint("inputs are `f32[...]` or `f64[...]`"));
                };
                if e.graph.inputs.is_empty() {
                    e.dtype = dtype;
                }
                let mut shape = Vec::new();
                for d in &decl.dims {
                    shape.push(match d {
                        DimAst::Known { value: 0, span } => {
                            return Err(Diagnostic::at(
                                "E0204",
                                *span,
                                "dimensions must be at least 1",
                                "zero-sized",
                            )
                            .hint("a tensor with a zero-sized dimension holds no data"))
                        }
                        DimAst::Known { value, .. } => Dim::Known(*value),
                        // A model-level int constant declared above the input gives
                        // its value (after `--set`), so `--set R=28` resizes the
                        // input; any other name is a symbol.
                        DimAst::Symbol(s) => match env.get(&s.name).map(|v| &v.value) {
                            Some(Value::Int(v)) if *v >= 1 => Dim::Known(*v as u64),
                            Some(Value::Int(_)) => {
                                return Err(Diagnostic::at(
                                    "E0204",
                                    s.span,
                                    format!("input dimension `{}` is a constant below 1", s.name),
                                    "must be at least 1",
                                )
                                .hint("dimensions must be at least 1"))
                            }
                            _ => Dim::sym(&s.name),
                        },
                    });
                }
                if !(2..=4).contains(&shape.len()) {
                    return Err(Diagnostic::at(
                        "E0401",
                        decl.span,
                        format!("inputs have rank 2 to 4, got rank {}", shape.len()),
                        "unsupported rank",
                    )
                    .hint("declare [B, F] features, [B, C, L] sequences or [B, C, H, W] images"));
                }
                if env.contains_key(&decl.name.name) {
                    return Err(Diagnostic::at(
                        "E0309",
                        decl.name.span,
                        format!("input `{}` is declared twice", decl.name.name),
                        "second declaration",
                    )
                    .hint("give each input its own name"));
                }
                let n = e.graph.add(
                    crate::ir::graph::Node {
                        op: Op::Input {
                            name: decl.name.name.clone(),
                        },
                        ty: TensorType::new(dtype, shape),
                        name: decl.name.name.clone(),
                        span: decl.span,
                    },
                    &[],
                );
                e.graph.inputs.push(n);
                env.insert(
                    decl.name.name.clone(),
                    Spanned {
                        value: Value::Tensor(n),
                        span: decl.name.span,
                    },
                );
            }
            Item::Seed { value, span } => {
                if let Some(prev) = seed_span {
                    return Err(Diagnostic::at(
                        "E0309",
                        *span,
                        "the model seed is set twice",
                        "second `seed`",
                    )
                    .label(prev, "first `seed`")
                    .hint("keep one `seed` line"));
                }
                seed_span = Some(*span);
                e.graph.seed = *value;
            }
            Item::Basis { name, value } => {
                check_new_name(&e, &name.name, name.span)?;
                let v = e.eval(&env, value, Naming::Auto)?;
                e.declare_basis(&name.name, &v, name.span.join(value.span))?;
                let ix = e.shared.bases.len() - 1;
                e.globals.insert(
                    name.name.clone(),
                    Spanned {
                        value: Value::Basis(ix),
                        span: name.span,
                    },
                );
            }
            Item::Slots { name, value } => {
                check_new_name(&e, &name.name, name.span)?;
                let v = e.eval(&env, value, Naming::Auto)?;
                let ix = e.declare_slots(&name.name, &v, name.span.join(value.span))?;
                e.globals.insert(
                    name.name.clone(),
                    Spanned {
                        value: Value::Slots(ix),
                        span: name.span,
                    },
                );
            }
            Item::Stmt(Stmt::Let { name, value }) => {
                builtins::check_bindable(&name.name, name.span)?;
                let mut v = e.eval(&env, value, Naming::Auto)?;
                if !matches!(v.value, Value::Tensor(_)) {
                    if let Some((_, text)) = options.overrides.iter().find(|(n, _)| *n == name.name)
                    {
                        v.value = override_value(&name.name, text, &v)?;
                    }
                    // Model-level constants are visible inside blocks and templates.
                    e.globals.insert(name.name.clone(), v.clone());
                }
                env.insert(name.name.clone(), v);
            }
            Item::Stmt(stmt @ Stmt::Return { span, .. }) => {
                if e.graph.inputs.is_empty() {
                    return Err(no_input(model));
                }
                if returned {
                    return Err(Diagnostic::at(
                        "E0308",
                        *span,
                        "a model returns once",
                        "second `return`",
                    )
                    .hint("return several outputs from one statement: `return a, b`"));
                }
                let owner = (format!("model `{}`", model.name.name), model.name.span);
                let outs = e.run_stmts(&mut env, std::slice::from_ref(stmt), &owner)?;
                e.graph.outputs = outs;
                returned = true;
            }
            Item::Def(_) | Item::Block(_) => {}
        }
    }
    if e.graph.inputs.is_empty() {
        return Err(no_input(model));
    }
    if !returned {
        return Err(Diagnostic::at(
            "E0308",
            model.name.span,
            format!("model `{}` has no `return`", model.name.name),
            "nothing is returned",
        )
        .hint("end the model with `return EXPR`"));
    }
    if let Some((name, _)) = options
        .overrides
        .iter()
        .find(|(n, _)| !e.globals.contains_key(n))
    {
        let consts: Vec<&str> = e
            .globals
            .iter()
            .filter(|(_, v)| {
                matches!(
                    v.value,
                    Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Str(_)
                )
            })
            .map(|(k, _)| k.as_str())
            .collect();
        let d = Diagnostic::at(
            "E0311",
            model.name.span,
            format!("`--set {name}=...`: the model has no constant `{name}`"),
            "in this model",
        )
        .note(format!(
            "settable constants: {}",
            if consts.is_empty() {
                "none".to_string()
            } else {
                let mut c = consts.clone();
                c.sort();
                c.join(", ")
            }
        ));
        return Err(d.suggest(name, consts.iter().copied()));
    }
    if options.slot_config.is_some() && e.graph.slots.is_empty() {
        return Err(Diagnostic::at(
            "E0501",
            model.name.span,
            format!(
                "`--config` picks pooling slots, but model `{}` declares none",
                model.name.name
            ),
            "no `slots` in this model",
        )
        .hint("drop `--config`, or declare slots with `slots NAME = pool_slots(...)`"));
    }
    e.check_slots_placed()?;
    let recipe = match &program.train {
        Some(t) => Some(recipe::validate(t, &e.graph)?),
        None => None,
    };
    let layers = std::mem::take(&mut e.layers);
    let mut graph = std::mem::take(&mut e.graph);
    graph
        .compact()
        .and_then(|_| graph.verify())
        .map_err(|err| {
            Diagnostic::at(
                "E9999",
                model.name.span,
                format!("internal compiler error: {err}"),
                "while compiling this model",
            )
            .hint("this is a bug in fnetc; please report it with the program")
        })?;
    Ok(Module {
        graph,
        layers,
        recipe,
        warnings: std::mem::take(&mut e.warnings),
    })
}

fn no_input(model: &crate::syntax::ast::Model) -> Diagnostic {
    Diagnostic::at(
        "E0310",
        model.name.span,
        format!("model `{}` declares no input", model.name.name),
        "no `input` here",
    )
    .hint("declare one before the `return`, e.g. `input x: f32[B, 3, 32, 32]`")
}

fn check_new_name(e: &Elab, name: &str, span: Span) -> Result<(), Diagnostic> {
    if builtins::lookup(name).is_some() {
        return Err(Diagnostic::at(
            "E0309",
            span,
            format!("`{name}` is a builtin layer and cannot be redefined"),
            "pick another name",
        )
        .hint(format!(
            "builtin names are reserved; call yours e.g. `my_{name}`"
        )));
    }
    if let Some(d) = builtins::reserved_word(name, span) {
        return Err(d);
    }
    let first = e
        .defs
        .get(name)
        .map(|d| d.name.span)
        .or_else(|| e.blocks.get(name).map(|b| b.name.span))
        .or_else(|| e.globals.get(name).map(|g| g.span));
    if let Some(first) = first {
        return Err(Diagnostic::at(
            "E0309",
            span,
            format!("`{name}` is defined twice"),
            "second definition",
        )
        .label(first, "first definition")
        .hint("rename one of them"));
    }
    Ok(())
}

fn check_params(params: &[crate::syntax::ast::Param]) -> Result<(), Diagnostic> {
    let mut seen: Vec<&str> = Vec::new();
    for p in params {
        builtins::check_bindable(&p.name.name, p.name.span)?;
        if seen.contains(&p.name.name.as_str()) {
            return Err(Diagnostic::at(
                "E0309",
                p.name.span,
                format!("parameter `{}` is declared twice", p.name.name),
                "second declaration",
            )
            .hint("give each parameter its own name"));
        }
        seen.push(&p.name.name);
        if let Some(t) = &p.ty {
            if !calls::PARAM_TYPES.contains(&t.name.as_str()) {
                return Err(Diagnostic::at(
                    "E0103",
                    t.span,
                    format!("unknown parameter type `{}`", t.name),
                    "not a type",
                )
                .suggest(&t.name, calls::PARAM_TYPES.iter().copied()));
            }
        }
    }
    Ok(())
}

/// Parses a `--set` value with the type of the constant it replaces.
fn override_value(name: &str, text: &str, original: &Spanned) -> Result<Value, Diagnostic> {
    let parsed = match &original.value {
        Value::Int(_) => text.parse::<i64>().ok().map(Value::Int),
        Value::Float(_) => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float),
        Value::Bool(_) => text.parse::<bool>().ok().map(Value::Bool),
        Value::Str(_) => Some(Value::Str(text.to_string())),
        _ => None,
    };
    parsed.ok_or_else(|| {
        Diagnostic::at(
            "E0311",
            original.span,
            format!(
                "`--set {name}={text}`: expected {} like the model's value",
                original.value.type_name()
            ),
            format!("`{name}` is {} here", original.value.type_name()),
        )
    })
}
