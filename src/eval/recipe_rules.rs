//! The recipe's constructors (`adam(...)`, `cosine(...)`, ...): their signatures, the
//! key each belongs to, and the range rules checked when they are bound. `recipe.rs`
//! turns the bound arguments into the typed [`crate::recipe::Recipe`].

use super::args::{opt, req, Bound, ParamSpec, Ty};
use super::value::{Spanned, Value};
use crate::diag::{nearest, Diagnostic, Span};
use crate::ir::graph::Graph;
use crate::recipe::glob;

pub(super) struct Ctor {
    pub name: &'static str,
    /// Which recipe key this constructor belongs to.
    pub key: &'static str,
    pub params: fn() -> Vec<ParamSpec>,
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

/// Adam's and AdamW's signature: they differ only in the default weight decay.
fn adam(weight_decay: f64) -> Vec<ParamSpec> {
    vec![
        req("lr", Ty::Float),
        opt("betas", Ty::List, betas()),
        opt("eps", Ty::Float, f(1e-8)),
        opt("weight_decay", Ty::Float, f(weight_decay)),
        opt("groups", Ty::List, Value::List(vec![])),
    ]
}

pub(super) static CTORS: &[Ctor] = &[
    Ctor {
        name: "cross_entropy",
        key: "loss",
        params: || vec![opt("label_smoothing", Ty::Float, f(0.0))],
    },
    Ctor {
        name: "adam",
        key: "optimizer",
        params: || adam(0.0),
    },
    Ctor {
        name: "adamw",
        key: "optimizer",
        params: || adam(0.01),
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

pub(super) fn check_ranges(
    ctor: &str,
    b: &Bound,
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
            ("size" | "models", Value::Int(i)) => *i < 1,
            ("padding" | "warmup" | "patience", Value::Int(i)) => *i < 0,
            // A data split is `[]` (the loader's default) or `[start, end)`.
            ("train" | "test", Value::List(items)) => match items.as_slice() {
                [] => false,
                [a, b] => {
                    !matches!((&a.value, &b.value), (Value::Int(a), Value::Int(b)) if 0 <= *a && a < b)
                }
                _ => true,
            },
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
                "lr" | "eps" | "factor" | "t_max" | "size" | "models" => "must be positive",
                "train" | "test" => "a range [start, end) of sample indices with start < end, e.g. [0, 8000], or [] to leave it unset",
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
