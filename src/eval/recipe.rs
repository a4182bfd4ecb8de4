//! The `train { ... }` section: the training recipe, parsed and validated against the
//! model (parameter-group patterns must match parameters, regularisers must have
//! something to act on) into the typed [`Recipe`] the trainer and `fnetc check --json`
//! read. The constructors' signatures and range rules are in `recipe_rules.rs`.

use super::args::{bind, Bound};
use super::recipe_rules::{check_ranges, CTORS};
use super::value::{ArgValue, Spanned, Value};
use crate::diag::{Diagnostic, Span};
use crate::ir::graph::Graph;
pub use crate::recipe::Recipe;
use crate::recipe::{
    Adam, AntialiasTarget, Augment, Data, GroupDecay, Loss, Optimizer, ParamGroup, Per,
    Regularizer, Schedule, Search, Sgd, Split,
};
use crate::syntax::ast::{Expr, ExprKind, Ident, TrainSection};

/// Recipe keys and the kind of value each takes: a constructor of that kind, a list
/// of them, or a count.
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
    ("sync_bn", "bool"),
    ("resize", "int"),
    ("bucket_kb", "int"),
];

/// A constructor call bound to its signature and range-checked.
struct Call {
    name: &'static str,
    bound: Bound,
    /// An optimiser's `groups`, validated on their own.
    groups: Vec<ParamGroup>,
}

pub fn validate(section: &TrainSection, graph: &Graph) -> Result<Recipe, Diagnostic> {
    let mut out = Recipe::default();
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
        match key.name.as_str() {
            "epochs" => out.epochs = Some(count(&key.name, expr, 1)?),
            "batch" => out.batch = Some(count(&key.name, expr, 1)?),
            "seed" => out.seed = Some(count(&key.name, expr, 0)?),
            "sync_bn" => out.sync_bn = Some(flag(&key.name, expr)?),
            "resize" => out.resize = Some(count(&key.name, expr, 1)?),
            "bucket_kb" => out.bucket_kb = Some(bucket_kb(expr)?),
            "loss" => out.loss = Some(loss(&call(expr, kind, graph)?)),
            "optimizer" => out.optimizer = Some(optimizer(call(expr, kind, graph)?)),
            "schedule" => out.schedule = Some(schedule(&call(expr, kind, graph)?)),
            "data" => out.data = Some(data(&call(expr, kind, graph)?)),
            "search" => out.search = Some(search(&call(expr, kind, graph)?)),
            "regularizers" => {
                let calls = list(&key.name, expr, kind, graph)?;
                out.regularizers = Some(calls.iter().map(regularizer).collect());
            }
            "augment" => {
                let calls = list(&key.name, expr, kind, graph)?;
                out.augment = Some(calls.iter().map(augment).collect());
            }
            other => unreachable!("KEYS lists `{other}` but validate does not read it"),
        }
    }
    Ok(out)
}

/// `epochs`, `batch` and `seed`: an int of at least `min`.
fn count(key: &str, expr: &Expr, min: i64) -> Result<u64, Diagnostic> {
    match constant(expr)? {
        Value::Int(i) if i >= min => Ok(i as u64),
        _ => Err(Diagnostic::at(
            "E0202",
            expr.span,
            format!("`{key}` must be a positive int"),
            "expected a positive int",
        )),
    }
}

/// `bucket_kb`: the gradient bucket size in KiB of the overlapped all-reduce, from 0
/// (no overlap) to [`crate::recipe::MAX_BUCKET_KB`].
fn bucket_kb(expr: &Expr) -> Result<u64, Diagnostic> {
    let max = crate::recipe::MAX_BUCKET_KB;
    match constant(expr)? {
        Value::Int(i) if (0..=max as i64).contains(&i) => Ok(i as u64),
        _ => Err(Diagnostic::at(
            "E0202",
            expr.span,
            format!("`bucket_kb` must be an int from 0 (no overlap) to {max} (KiB)"),
            "expected an int from 0 to 1048576",
        )),
    }
}

/// `sync_bn`: `true` or `false`.
fn flag(key: &str, expr: &Expr) -> Result<bool, Diagnostic> {
    match constant(expr)? {
        Value::Bool(b) => Ok(b),
        _ => Err(Diagnostic::at(
            "E0202",
            expr.span,
            format!("`{key}` must be `true` or `false`"),
            "expected a bool",
        )),
    }
}

/// `regularizers` and `augment`: a list of constructor calls.
fn list(key: &str, expr: &Expr, kind: &str, graph: &Graph) -> Result<Vec<Call>, Diagnostic> {
    let ExprKind::List(items) = &expr.kind else {
        return Err(Diagnostic::at(
            "E0202",
            expr.span,
            format!("`{key}` takes a list, e.g. [{}]", example(kind)),
            "expected a list",
        ));
    };
    items.iter().map(|i| call(i, kind, graph)).collect()
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

fn call(e: &Expr, kind: &str, graph: &Graph) -> Result<Call, Diagnostic> {
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
    let mut groups = Vec::new();
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
            groups = items
                .iter()
                .map(|i| call(i, "group", graph).map(|c| group(&c.bound)))
                .collect::<Result<Vec<_>, _>>()?;
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
    Ok(Call {
        name: ctor.name,
        bound,
        groups,
    })
}

// The builders below read arguments that `bind` typed and `check_ranges` range-checked,
// so the int-to-unsigned casts cannot wrap. Each matches the constructors that
// `recipe_rules::CTORS` lists under its key.

fn loss(c: &Call) -> Loss {
    match c.name {
        "cross_entropy" => Loss::CrossEntropy {
            label_smoothing: c.bound.float("label_smoothing"),
        },
        other => unreachable!("`{other}` is not a loss"),
    }
}

fn optimizer(c: Call) -> Optimizer {
    let b = &c.bound;
    let adam = |groups| Adam {
        lr: b.float("lr"),
        betas: match b.value("betas") {
            Value::List(items) => [number(&items[0].value), number(&items[1].value)],
            other => unreachable!("betas bound as {other:?}"),
        },
        eps: b.float("eps"),
        weight_decay: b.float("weight_decay"),
        groups,
    };
    match c.name {
        "sgd" => Optimizer::Sgd(Sgd {
            lr: b.float("lr"),
            momentum: b.float("momentum"),
            nesterov: b.bool("nesterov"),
            weight_decay: b.float("weight_decay"),
            groups: c.groups,
        }),
        "adam" => Optimizer::Adam(adam(c.groups)),
        "adamw" => Optimizer::AdamW(adam(c.groups)),
        other => unreachable!("`{other}` is not an optimizer"),
    }
}

fn group(b: &Bound) -> ParamGroup {
    ParamGroup {
        pattern: b.str("match").to_string(),
        lr_factor: b.float("lr_factor"),
        weight_decay: match b.value("weight_decay") {
            Value::Word(_) => GroupDecay::Inherit,
            v => GroupDecay::Value(number(v)),
        },
    }
}

fn schedule(c: &Call) -> Schedule {
    let b = &c.bound;
    match c.name {
        "constant" => Schedule::Constant,
        "cosine" => Schedule::Cosine {
            warmup: b.int("warmup") as u64,
            min_lr: b.float("min_lr"),
            per: match b.word("per") {
                Some("epoch") => Per::Epoch,
                _ => Per::Iteration,
            },
        },
        "step" => Schedule::Step {
            milestones: ints(b.value("milestones")),
            gamma: b.float("gamma"),
        },
        "plateau" => Schedule::Plateau {
            factor: b.float("factor"),
            patience: b.int("patience") as u64,
        },
        other => unreachable!("`{other}` is not a schedule"),
    }
}

fn regularizer(c: &Call) -> Regularizer {
    let b = &c.bound;
    let weight = b.float("weight");
    match c.name {
        "orthogonality" => Regularizer::Orthogonality { weight },
        "antialias" => Regularizer::Antialias {
            weight,
            stddevs: b.float("stddevs"),
            target: match b.word("target") {
                Some("gabor_mask") => AntialiasTarget::GaborMask,
                _ => AntialiasTarget::Gabor,
            },
        },
        "kernel_l2" => Regularizer::KernelL2 { weight },
        other => unreachable!("`{other}` is not a regularizer"),
    }
}

fn data(c: &Call) -> Data {
    let b = &c.bound;
    let split = |name| match ints(b.value(name)).as_slice() {
        &[start, end] => Some(Split { start, end }),
        _ => None,
    };
    match c.name {
        "idx" => Data::Idx {
            images: b.str("images").to_string(),
            labels: b.str("labels").to_string(),
            train: split("train"),
            test: split("test"),
        },
        "cifar10" => Data::Cifar10 {
            dir: b.str("dir").to_string(),
        },
        "npy" => Data::Npy {
            inputs: b.str("inputs").to_string(),
            labels: b.str("labels").to_string(),
        },
        other => unreachable!("`{other}` is not a data set"),
    }
}

fn augment(c: &Call) -> Augment {
    match c.name {
        "flip" => Augment::Flip,
        "random_crop" => Augment::RandomCrop {
            size: c.bound.int("size") as u64,
            padding: c.bound.int("padding") as u64,
        },
        other => unreachable!("`{other}` is not an augmentation"),
    }
}

fn search(c: &Call) -> Search {
    let b = &c.bound;
    match c.name {
        "mixture" => Search::Mixture {
            models: b.int("models") as u64,
            t_max: b.float("t_max"),
            ema: b.float("ema"),
            kl: b.float("kl"),
            split: b.float("split"),
        },
        other => unreachable!("`{other}` is not a search"),
    }
}

/// A number inside a list or an untyped argument (ints are taken as floats).
fn number(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        other => unreachable!("range checks let {other:?} through as a number"),
    }
}

/// A range-checked list of non-negative ints.
fn ints(v: &Value) -> Vec<u64> {
    match v {
        Value::List(items) => items
            .iter()
            .map(|i| match i.value {
                Value::Int(x) => x as u64,
                ref other => unreachable!("range checks let {other:?} through as an int"),
            })
            .collect(),
        other => unreachable!("{other:?} bound as a list"),
    }
}
