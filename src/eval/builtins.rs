//! The table of builtin layers and configuration objects, and the standard layers
//! (conv, linear, batchnorm, activations, pools, shortcuts). The paper constructs live
//! in their own files: `flexconv`, `lc`, `shared`, `slots`.

use super::args::{bind, opt, req, Bound, ParamSpec, Ty};
use super::elab::Elab;
use super::layers::{
    batchnorm, binary, concat, conv1d, conv2d, dropout, linear, pool, shortcut, unary,
};
use super::value::{ArgValue, SpecValue, Value};
use crate::diag::{Diagnostic, Span};
use crate::ir::op::{Op, PoolKind};
use petgraph::stable_graph::NodeIndex;
use std::rc::Rc;

/// How many tensor operands a builtin takes. `Exactly(0)` marks configuration objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

/// One application of a builtin: operands, bound arguments, the layer's full name.
pub struct BuiltinCall {
    pub inputs: Vec<NodeIndex>,
    pub args: Bound,
    pub path: String,
    pub span: Span,
}

pub type ApplyFn = fn(&mut Elab, &BuiltinCall) -> Result<NodeIndex, Diagnostic>;

pub struct Builtin {
    pub name: &'static str,
    /// Prefix of automatic names (`conv` → `conv1`).
    pub kind: &'static str,
    pub arity: Arity,
    pub params: fn() -> Vec<ParamSpec>,
    pub apply: ApplyFn,
}

const PADDING_WORDS: &[&str] = &["same", "valid", "causal"];
const ALGO_WORDS: &[&str] = &["auto", "direct", "im2col", "fft", "winograd2", "winograd4"];

fn w(s: &str) -> Value {
    Value::Word(s.into())
}

fn conv_params() -> Vec<ParamSpec> {
    vec![
        req("out_channels", Ty::Int),
        req("kernel", Ty::Ints),
        opt("stride", Ty::Ints, Value::Int(1)),
        opt("padding", Ty::IntsOrWord(PADDING_WORDS), Value::Int(0)),
        opt("dilation", Ty::Ints, Value::Int(1)),
        opt("groups", Ty::Int, Value::Int(1)),
        opt("bias", Ty::Bool, Value::Bool(true)),
        opt("algo", Ty::Word(ALGO_WORDS), w("auto")),
        opt(
            "init",
            Ty::Word(&["default", "kaiming_normal_in", "kaiming_normal_out"]),
            w("default"),
        ),
    ]
}

fn no_params() -> Vec<ParamSpec> {
    Vec::new()
}

fn pool_params() -> Vec<ParamSpec> {
    vec![
        req("kernel", Ty::Ints),
        opt("stride", Ty::IntsOrWord(&["none"]), w("none")),
        opt("padding", Ty::Ints, Value::Int(0)),
    ]
}

static BUILTINS: &[Builtin] = &[
    Builtin {
        name: "conv1d",
        kind: "conv",
        arity: Arity::Exactly(1),
        params: conv_params,
        apply: conv1d,
    },
    Builtin {
        name: "conv2d",
        kind: "conv",
        arity: Arity::Exactly(1),
        params: conv_params,
        apply: conv2d,
    },
    Builtin {
        name: "linear",
        kind: "linear",
        arity: Arity::Exactly(1),
        params: || {
            vec![
                req("out_features", Ty::Int),
                opt("bias", Ty::Bool, Value::Bool(true)),
                opt(
                    "init",
                    Ty::Word(&["default", "kaiming_normal", "normal"]),
                    w("default"),
                ),
                opt("std", Ty::Float, Value::Float(0.01)),
            ]
        },
        apply: linear,
    },
    Builtin {
        name: "batchnorm",
        kind: "bn",
        arity: Arity::Exactly(1),
        params: || {
            vec![
                opt("affine", Ty::Bool, Value::Bool(true)),
                opt("running_stats", Ty::Bool, Value::Bool(true)),
                opt("eps", Ty::Float, Value::Float(1e-5)),
                opt("momentum", Ty::Float, Value::Float(0.1)),
            ]
        },
        apply: batchnorm,
    },
    Builtin {
        name: "relu",
        kind: "relu",
        arity: Arity::Exactly(1),
        params: no_params,
        apply: |e, c| unary(e, c, Op::Relu),
    },
    Builtin {
        name: "gelu",
        kind: "gelu",
        arity: Arity::Exactly(1),
        params: no_params,
        apply: |e, c| unary(e, c, Op::Gelu),
    },
    Builtin {
        name: "dropout",
        kind: "dropout",
        arity: Arity::Exactly(1),
        params: || vec![opt("p", Ty::Float, Value::Float(0.5))],
        apply: dropout,
    },
    Builtin {
        name: "maxpool",
        kind: "maxpool",
        arity: Arity::Exactly(1),
        params: pool_params,
        apply: |e, c| pool(e, c, PoolKind::Max),
    },
    Builtin {
        name: "avgpool",
        kind: "avgpool",
        arity: Arity::Exactly(1),
        params: pool_params,
        apply: |e, c| pool(e, c, PoolKind::Avg),
    },
    Builtin {
        name: "global_avg_pool",
        kind: "gap",
        arity: Arity::Exactly(1),
        params: no_params,
        apply: |e, c| unary(e, c, Op::GlobalAvgPool),
    },
    Builtin {
        name: "flatten",
        kind: "flatten",
        arity: Arity::Exactly(1),
        params: no_params,
        apply: |e, c| unary(e, c, Op::Flatten),
    },
    Builtin {
        name: "last",
        kind: "last",
        arity: Arity::Exactly(1),
        params: no_params,
        apply: |e, c| unary(e, c, Op::LastStep),
    },
    Builtin {
        name: "add",
        kind: "add",
        arity: Arity::Exactly(2),
        params: no_params,
        apply: |e, c| binary(e, c, Op::Add),
    },
    Builtin {
        name: "mul",
        kind: "mul",
        arity: Arity::Exactly(2),
        params: no_params,
        apply: |e, c| binary(e, c, Op::Mul),
    },
    Builtin {
        name: "concat",
        kind: "concat",
        arity: Arity::AtLeast(2),
        params: || vec![opt("dim", Ty::Int, Value::Int(1))],
        apply: concat,
    },
    Builtin {
        name: "shortcut",
        kind: "shortcut",
        arity: Arity::Exactly(1),
        params: || {
            vec![
                req("out_channels", Ty::Int),
                opt("stride", Ty::Int, Value::Int(1)),
                opt("kind", Ty::Word(&["a", "projection"]), w("a")),
                opt("bias", Ty::Bool, Value::Bool(false)),
                opt("norm", Ty::LayerOrNone, w("none")),
            ]
        },
        apply: shortcut,
    },
    Builtin {
        name: "flexconv",
        kind: "flexconv",
        arity: Arity::Exactly(1),
        params: super::flexconv::params,
        apply: super::flexconv::apply,
    },
    Builtin {
        name: "lc",
        kind: "lc",
        arity: Arity::Exactly(1),
        params: super::lc::params,
        apply: super::lc::apply,
    },
    Builtin {
        name: "basis_conv",
        kind: "bconv",
        arity: Arity::Exactly(1),
        params: super::shared::conv_params,
        apply: super::shared::apply_conv,
    },
    Builtin {
        name: "slot",
        kind: "slot",
        arity: Arity::Exactly(1),
        params: || vec![req("family", Ty::Slots)],
        apply: super::slots::apply,
    },
    // Configuration objects: bound and checked, then consumed by the layers above.
    Builtin {
        name: "magnet",
        kind: "magnet",
        arity: Arity::Exactly(0),
        params: super::flexconv::magnet_params,
        apply: no_apply,
    },
    Builtin {
        name: "gauss",
        kind: "gauss",
        arity: Arity::Exactly(0),
        params: super::flexconv::gauss_params,
        apply: no_apply,
    },
    Builtin {
        name: "shared_basis",
        kind: "shared_basis",
        arity: Arity::Exactly(0),
        params: super::shared::basis_params,
        apply: no_apply,
    },
    Builtin {
        name: "pool_slots",
        kind: "pool_slots",
        arity: Arity::Exactly(0),
        params: super::slots::params,
        apply: no_apply,
    },
];

fn no_apply(_: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    Err(Diagnostic::at(
        "E0306",
        c.span,
        "a configuration object is not a layer",
        "cannot apply",
    ))
}

pub fn lookup(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// Every bare word some builtin parameter accepts (`same`, `causal`, `fft`, ...): the
/// reserved words. They pass through template and block parameters unquoted.
pub fn all_words() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = BUILTINS
        .iter()
        .flat_map(|b| (b.params)())
        .filter_map(|p| p.ty.words())
        .flatten()
        .copied()
        .chain(["auto", "none"])
        .collect();
    words.sort();
    words.dedup();
    words
}

/// Rejects binding a name that would hide a builtin layer or a bare word.
pub fn check_bindable(name: &str, span: Span) -> Result<(), Diagnostic> {
    if lookup(name).is_some() {
        return Err(Diagnostic::at(
            "E0309",
            span,
            format!("`{name}` is a builtin layer and cannot be rebound"),
            "pick another name",
        )
        .hint(format!("use a name such as `{name}_out` or `my_{name}`")));
    }
    match reserved_word(name, span) {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

/// The error for declaring `name` when it is a word some argument takes (`same`,
/// `none`, `a`, ...): words are reserved, so a bare word in an argument always means
/// the word. The message names an argument that takes it.
pub fn reserved_word(name: &str, span: Span) -> Option<Diagnostic> {
    if !all_words().contains(&name) {
        return None;
    }
    let example = BUILTINS.iter().find_map(|b| {
        (b.params)()
            .into_iter()
            .find(|p| p.ty.words().is_some_and(|w| w.contains(&name)))
            .map(|p| format!("`{}({}: {name})`", b.name, p.name))
    });
    let what = match example {
        Some(e) => format!("`{name}` is a reserved word: arguments take it as a value, as in {e}"),
        None => format!("`{name}` is a reserved word: arguments take it as a value"),
    };
    Some(
        Diagnostic::at("E0309", span, what, "reserved word")
            .hint(format!(
                "words that arguments take cannot name anything; call it e.g. `my_{name}` (docs/language.md §2.1 lists them)"
            )),
    )
}

/// Binds a configuration object's arguments into a `Spec` value.
pub fn make_spec(
    _e: &mut Elab,
    name: &'static str,
    args: &[ArgValue],
    span: Span,
) -> Result<Value, Diagnostic> {
    let b = lookup(name).expect("spec builtin exists");
    let bound = bind(name, &(b.params)(), args, span)?;
    Ok(Value::Spec(Rc::new(SpecValue {
        kind: b.name,
        args: bound,
        span,
    })))
}

/// Binds a spec's defaults, for a layer whose spec argument was left out.
pub fn default_spec(name: &'static str, span: Span) -> Bound {
    let b = lookup(name).expect("spec builtin exists");
    bind(name, &(b.params)(), &[], span).expect("spec defaults bind")
}

impl Elab<'_> {
    /// The number of spatial dimensions of `x`, which must be rank 3 (1D) or 4 (2D).
    pub fn spatial_dims(
        &self,
        x: NodeIndex,
        what: &str,
        ranks: &[usize],
        span: Span,
    ) -> Result<usize, Diagnostic> {
        let ty = self.ty(x);
        if !ranks.contains(&ty.rank()) {
            let want: Vec<String> = ranks
                .iter()
                .map(|r| match r {
                    2 => "[B, F]".to_string(),
                    3 => "[B, C, L]".to_string(),
                    4 => "[B, C, H, W]".to_string(),
                    n => format!("rank {n}"),
                })
                .collect();
            return Err(Diagnostic::at(
                "E0401",
                span,
                format!("`{what}` expects input {}, got {ty}", want.join(" or ")),
                format!("input here is {ty}"),
            )
            .hint(if ranks == [2] {
                "insert `flatten` or `global_avg_pool` before it to get [B, F]"
            } else {
                "check the layers before this one (conv1d works on sequences, conv2d on images)"
            }));
        }
        Ok(ty.rank() - 2)
    }
}
