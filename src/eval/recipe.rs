//! The `train { ... }` section: the training recipe, parsed and validated against the
//! model (parameter-group patterns must match parameters, regularisers must have
//! something to act on) and kept as JSON for the trainer and for `fnetc check --json`.

use super::args::{bind, opt, req, ParamSpec, Ty};
use super::value::{ArgValue, Spanned, Value};
use crate::diag::{nearest, Diagnostic, Span};
use crate::ir::graph::Graph;
use crate::syntax::ast::{Expr, ExprKind, Ident, TrainSection};
use serde_json::{json, Map, Value as Json};

struct Ctor {
    name: &'static str,
    /// Which recipe key this constructor belongs to.
    key: &'static str,
    params: fn() -> Vec<ParamSpec>,
}

fn betas() -> Value {
    let b = |v| Spanned {
        value: Value::Float(v),
        span: Span::default(),
    };
    Value::List(vec![b(0.9), b(0.999)])
}

fn f(v: f64) -> Value {
    Value::Float(v)
}

fn words(ws: &'static [&'static str], d: &str) -> (Ty, Value) {
    (Ty::Word(ws), Value::Word(d.into()))
}

static CTORS: &[Ctor] = &[
    Ctor {
        name: "cross_entropy",
        key: "loss",
        params: || vec![opt("label_smoothing", Ty::Float, f(0.0))],
    },
    Ctor {
        name: "adam",
        key: "optimizer",
        params: || {
            vec![
                req("lr", Ty::Float),
                opt("betas", Ty::List, betas()),
                opt("eps", Ty::Float, f(1e-8)),
                opt("weight_decay", Ty::Float, f(0.0)),
                opt("groups", Ty::List, Value::List(vec![])),
            ]
        },
    },
    Ctor {
        name: "adamw",
        key: "optimizer",
        params: || {
            vec![
                req("lr", Ty::Float),
                opt("betas", Ty::List, betas()),
                opt("eps", Ty::Float, f(1e-8)),
                opt("weight_decay", Ty::Float, f(0.01)),
                opt("groups", Ty::List, Value::List(vec![])),
            ]
        },
    },
    Ctor {
        name: "sgd",
        key: "optimizer",
        params: || {
            vec![
                req("lr", Ty::Float),
                opt("momentum", Ty::Float, f(0.0)),
                opt("nesterov", Ty::Bool, Value::Bool(false)),
                opt("weight_decay", Ty::Float, f(0.0)),
                opt("groups", Ty::List, Value::List(vec![])),
            ]
        },
    },
    Ctor {
        name: "group",
        key: "group",
        params: || {
            vec![
                req("match", Ty::Str),
                opt("lr_factor", Ty::Float, f(1.0)),
                opt("weight_decay", Ty::Any, Value::Word("inherit".into())),
            ]
        },
    },
    Ctor {
        name: "constant",
        key: "schedule",
        params: Vec::new,
    },
    Ctor {
        name: "cosine",
        key: "schedule",
        params: || {
            let (t, d) = words(&["iteration", "epoch"], "iteration");
            vec![
                opt("warmup", Ty::Int, Value::Int(0)),
                opt("min_lr", Ty::Float, f(0.0)),
                opt("per", t, d),
            ]
        },
    },
    Ctor {
        name: "step",
        key: "schedule",
        params: || vec![req("milestones", Ty::List), opt("gamma", Ty::Float, f(0.1))],
    },
    Ctor {
        name: "plateau",
        key: "schedule",
        params: || {
            vec![
                opt("factor", Ty::Float, f(0.2)),
                opt("patience", Ty::Int, Value::Int(20)),
            ]
        },
    },
    Ctor {
        name: "orthogonality",
        key: "regularizer",
        params: || vec![req("weight", Ty::Float)],
    },
    Ctor {
        name: "antialias",
        key: "regularizer",
        params: || {
            let (t, d) = words(&["gabor", "gabor_mask"], "gabor");
            vec![
                req("weight", Ty::Float),
                opt("stddevs", Ty::Float, f(2.0)),
                opt("target", t, d),
            ]
        },
    },
    Ctor {
        name: "kernel_l2",
        key: "regularizer",
        params: || vec![req("weight", Ty::Float)],
    },
    Ctor {
        name: "idx",
        key: "data",
        params: || {
            vec![
                req("images", Ty::Str),
                req("labels", Ty::Str),
                opt("train", Ty::List, Value::List(vec![])),
                opt("test", Ty::List, Value::List(vec![])),
            ]
        },
    },
    Ctor {
        name: "cifar10",
        key: "data",
        params: || vec![req("dir", Ty::Str)],
    },
    Ctor {
        name: "npy",
        key: "data",
        params: || vec![req("inputs", Ty::Str), req("labels", Ty::Str)],
    },
    Ctor {
        name: "flip",
        key: "augment",
        params: Vec::new,
    },
    Ctor {
        name: "random_crop",
        key: "augment",
        params: || vec![req("size", Ty::Int), opt("padding", Ty::Int, Value::Int(0))],
    },
    Ctor {
        name: "mixture",
        key: "search",
        params: || {
            vec![
                opt("models", Ty::Int, Value::Int(4)),
                opt("t_max", Ty::Float, f(100.0)),
                opt("ema", Ty::Float, f(0.9)),
                opt("kl", Ty::Float, f(1e-4)),
                opt("split", Ty::Float, f(0.5)),
            ]
        },
    },
];

/// Recipe keys and whether their value is a list of constructor calls.
const KEYS: &[(&str, &str)] = &[
    ("loss", "loss"),
    ("optimizer", "optimizer"),
    ("schedule", "schedule"),
    ("epochs", "int"),
    ("batch", "int"),
    ("seed", "int"),
    ("regularizers", "regularizer"),
    ("data", "data"),
    ("augment", "augment"),
    ("search", "search"),
];

/// The validated recipe, as JSON: `{"optimizer": {"kind": "adam", "lr": 0.01, ...}}`.
pub type Recipe = Map<String, Json>;

pub fn validate(section: &TrainSection, graph: &Graph) -> Result<Recipe, Diagnostic> {
    let mut out = Map::new();
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for (key, expr) in &section.entries {
        let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key.name) else {
            return Err(Diagnostic::at(
                "E0601",
                key.span,
                format!("unknown training setting `{}`", key.name),
                "not a setting",
            )
            .suggest(&key.name, KEYS.iter().map(|(k, _)| *k)));
        };
        if let Some((_, prev)) = seen.iter().find(|(k, _)| *k == key.name) {
            return Err(Diagnostic::at(
                "E0208",
                key.span,
                format!("`{}` is set twice", key.name),
                "second here",
            )
            .label(*prev, "first here"));
        }
        seen.push((&key.name, key.span));
        let value = match *kind {
            "int" => {
                let v = constant(expr)?;
                match v {
                    Value::Int(i) if i >= 1 || (key.name == "seed" && i >= 0) => json!(i),
                    _ => {
                        return Err(Diagnostic::at(
                            "E0202",
                            expr.span,
                            format!("`{}` must be a positive int", key.name),
                            "expected a positive int",
                        ))
                    }
                }
            }
            "regularizer" | "augment" => {
                let ExprKind::List(items) = &expr.kind else {
                    return Err(Diagnostic::at(
                        "E0202",
                        expr.span,
                        format!("`{}` takes a list, e.g. [{}]", key.name, example(kind)),
                        "expected a list",
                    ));
                };
                Json::Array(
                    items
                        .iter()
                        .map(|i| call(i, kind, graph))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => call(expr, kind, graph)?,
        };
        out.insert(key.name.clone(), value);
    }
    Ok(out)
}

fn example(kind: &str) -> String {
    let names: Vec<String> = CTORS
        .iter()
        .filter(|c| c.key == kind)
        .map(|c| format!("{}(...)", c.name))
        .collect();
    names.join(", ")
}

/// Literals and lists of literals; recipe values never involve tensors.
fn constant(e: &Expr) -> Result<Value, Diagnostic> {
    Ok(match &e.kind {
        ExprKind::Int(i) => Value::Int(*i),
        ExprKind::Float(x) => Value::Float(*x),
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Str(s) => Value::Str(s.clone()),
        ExprKind::Ident(w) => Value::Word(w.clone()),
        ExprKind::List(items) => Value::List(
            items
                .iter()
                .map(|i| {
                    Ok(Spanned {
                        value: constant(i)?,
                        span: i.span,
                    })
                })
                .collect::<Result<_, Diagnostic>>()?,
        ),
        _ => {
            return Err(Diagnostic::at(
                "E0202",
                e.span,
                "expected a constant (number, string, bool or list)",
                "not a constant",
            ))
        }
    })
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Int(i) => json!(i),
        Value::Float(x) => json!(x),
        Value::Bool(b) => json!(b),
        Value::Str(s) | Value::Word(s) => json!(s),
        Value::List(items) => Json::Array(items.iter().map(|i| to_json(&i.value)).collect()),
        other => json!(other.type_name()),
    }
}

fn call(e: &Expr, kind: &str, graph: &Graph) -> Result<Json, Diagnostic> {
    // A bare name is a call without arguments: `schedule: constant`.
    let (callee, args) = match &e.kind {
        ExprKind::Call { callee, args } => (callee.clone(), args.as_slice()),
        ExprKind::Ident(name) => (
            Ident {
                name: name.clone(),
                span: e.span,
            },
            &[][..],
        ),
        _ => {
            return Err(Diagnostic::at(
                "E0202",
                e.span,
                format!("expected one of {}", example(kind)),
                "not a recipe setting",
            ))
        }
    };
    let Some(ctor) = CTORS
        .iter()
        .find(|c| c.name == callee.name && c.key == kind)
    else {
        let d = Diagnostic::at(
            "E0602",
            callee.span,
            format!("`{}` is not a valid {kind}", callee.name),
            format!("expected one of {}", example(kind)),
        );
        return Err(d.suggest(
            &callee.name,
            CTORS.iter().filter(|c| c.key == kind).map(|c| c.name),
        ));
    };
    // Optimiser `groups` hold constructor calls, not constants: validate them on their
    // own and bind an empty list in their place.
    let mut groups = None;
    let mut arg_values = Vec::with_capacity(args.len());
    for a in args {
        let is_groups =
            ctor.key == "optimizer" && a.name.as_ref().is_some_and(|n| n.name == "groups");
        let value = if is_groups {
            let ExprKind::List(items) = &a.value.kind else {
                return Err(Diagnostic::at(
                    "E0202",
                    a.value.span,
                    "`groups` takes a list of `group(...)`",
                    "expected a list",
                ));
            };
            groups = Some(
                items
                    .iter()
                    .map(|i| call(i, "group", graph))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            Value::List(vec![])
        } else {
            constant(&a.value)?
        };
        arg_values.push(ArgValue {
            name: a.name.clone(),
            value: Spanned {
                value,
                span: a.value.span,
            },
        });
    }
    let bound = bind(ctor.name, &(ctor.params)(), &arg_values, e.span)?;
    check_ranges(ctor.name, &bound, graph, e.span)?;
    let mut obj = Map::new();
    obj.insert("kind".into(), json!(ctor.name));
    for (name, v, _) in &bound.values {
        obj.insert(name.clone(), to_json(&v.value));
    }
    if let Some(g) = groups {
        obj.insert("groups".into(), Json::Array(g));
    }
    Ok(Json::Object(obj))
}

fn check_ranges(
    ctor: &str,
    b: &super::args::Bound,
    graph: &Graph,
    span: Span,
) -> Result<(), Diagnostic> {
    for (name, v, _) in &b.values {
        let bad = match (name.as_str(), &v.value) {
            ("lr" | "eps" | "factor" | "t_max", x) => as_f(x).is_some_and(|x| x <= 0.0),
            // A group's weight decay is a number or `inherit` (the optimiser's).
            ("weight_decay", Value::Word(w)) => w != "inherit",
            ("weight_decay", Value::Str(_) | Value::Bool(_) | Value::List(_)) => true,
            (
                "weight_decay" | "weight" | "min_lr" | "label_smoothing" | "momentum" | "lr_factor"
                | "stddevs",
                x,
            ) => as_f(x).is_some_and(|x| x < 0.0),
            ("ema" | "split" | "gamma", x) => as_f(x).is_some_and(|x| !(x > 0.0 && x < 1.0)),
            ("betas", Value::List(items)) => {
                items.len() != 2
                    || items
                        .iter()
                        .any(|i| as_f(&i.value).is_none_or(|x| !(0.0..1.0).contains(&x)))
            }
            ("milestones", Value::List(items)) => {
                let ms: Vec<Option<f64>> = items
                    .iter()
                    .map(|i| match i.value {
                        Value::Int(v) if v > 0 => Some(v as f64),
                        _ => None,
                    })
                    .collect();
                ms.is_empty()
                    || ms.iter().any(Option::is_none)
                    || ms.windows(2).any(|w| w[0] >= w[1])
            }
            _ => false,
        };
        if bad {
            return Err(Diagnostic::at(
                "E0204",
                v.span,
                format!("`{name}` of `{ctor}` is out of range"),
                "out of range",
            )
            .hint(match name.as_str() {
                "betas" => "two numbers in [0, 1), e.g. [0.9, 0.999]",
                "milestones" => "increasing positive epoch numbers, e.g. [150, 225]",
                "weight_decay" => "a non-negative number, or `inherit` for the optimiser's",
                "lr" | "eps" | "factor" | "t_max" => "must be positive",
                "ema" | "split" | "gamma" => "must be strictly between 0 and 1",
                _ => "must be non-negative",
            }));
        }
    }
    match ctor {
        "group" => {
            let pattern = b.str("match");
            if !graph.params().any(|(_, n, _)| glob(pattern, &n.name)) {
                let names: Vec<&str> = graph.params().map(|(_, n, _)| n.name.as_str()).collect();
                let d = Diagnostic::at(
                    "E0603",
                    b.span("match"),
                    format!("no parameter matches `{pattern}`"),
                    "matches nothing",
                );
                return Err(match nearest(pattern, names.iter().copied()) {
                    Some(best) => d.hint(format!(
                        "parameters are named like `{best}`; `*` matches any run of characters"
                    )),
                    None => d.hint("`*` matches any run of characters, e.g. `*.mask_params`"),
                });
            }
        }
        "orthogonality" if graph.bases.is_empty() => {
            return Err(Diagnostic::at(
                "E0604",
                span,
                "`orthogonality` needs shared bases, and this model declares none",
                "nothing to regularise",
            )
            .hint("declare one with `basis NAME = shared_basis(...)`"))
        }
        "antialias" if graph.flexconvs.is_empty() => {
            return Err(Diagnostic::at(
                "E0604",
                span,
                "`antialias` needs flexconv layers, and this model has none",
                "nothing to regularise",
            ))
        }
        "mixture" if graph.slots.is_empty() => {
            return Err(Diagnostic::at(
                "E0604",
                span,
                "`mixture` search needs pooling slots, and this model declares none",
                "nothing to search",
            )
            .hint("declare them with `slots NAME = pool_slots(...)`"))
        }
        _ => {}
    }
    Ok(())
}

fn as_f(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    }
}

/// Glob match where `*` matches any run of characters (dots included).
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_runs() {
        assert!(glob("*.mask_params", "res1.flex1.mask_params"));
        assert!(glob("stem.*", "stem.weight"));
        assert!(glob("*flex*bias", "a.flex1.bias"));
        assert!(!glob("*.mask_params", "res1.flex1.bias"));
        assert!(glob("exact", "exact"));
        assert!(!glob("a*a", "a"));
    }
}
