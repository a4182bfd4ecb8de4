//! Values of the elaborator. Constants, tensors (graph nodes) and layers waiting for
//! their input all live in one dynamically typed value space; builtins check types
//! when they bind their arguments.

use crate::diag::Span;
use crate::syntax::ast::Ident;
use petgraph::stable_graph::NodeIndex;
use std::rc::Rc;

#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A bare word accepted where a parameter takes one of a fixed set of names
    /// (`padding: same`, `algo: fft`).
    Word(String),
    List(Vec<Spanned>),
    Tensor(NodeIndex),
    Layer(Rc<LayerValue>),
    /// A configuration object such as `magnet(...)` or `gauss(...)`.
    Spec(Rc<SpecValue>),
    /// A declared shared filter basis (index into the elaborator's table).
    Basis(usize),
    /// A declared pooling-slot family (index into the elaborator's table).
    Slots(usize),
}

/// A value with the span of the expression that produced it.
#[derive(Clone, Debug)]
pub struct Spanned {
    pub value: Value,
    pub span: Span,
}

impl Value {
    /// The type name used in "expected X, got Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Word(_) => "name",
            Value::List(_) => "list",
            Value::Tensor(_) => "tensor",
            Value::Layer(_) => "layer",
            Value::Spec(s) => s.kind,
            Value::Basis(_) => "basis",
            Value::Slots(_) => "slots",
        }
    }
}

/// What a layer value calls when it is finally applied to tensors.
#[derive(Clone, Debug)]
pub enum Callee {
    Builtin(&'static str),
    Def(String),
    Block(String),
}

/// An argument after evaluation, before binding to a signature.
#[derive(Clone, Debug)]
pub struct ArgValue {
    pub name: Option<Ident>,
    pub value: Spanned,
}

/// A layer that still needs its first tensor input: a call without tensor operands, a
/// composition `a |> b`, or `repeat N layer`.
#[derive(Clone, Debug)]
pub enum LayerValue {
    Call {
        callee: Callee,
        args: Vec<ArgValue>,
        /// Tensor operands already supplied; the missing first one comes from `|>`.
        trailing: Vec<NodeIndex>,
        name: Option<Ident>,
        span: Span,
    },
    /// `a |> b` without an input yet; `name` is set by `(a |> b) as NAME`.
    Compose {
        parts: Vec<Rc<LayerValue>>,
        name: Option<Ident>,
    },
    Repeat {
        count: u64,
        body: Rc<LayerValue>,
        name: Option<Ident>,
        span: Span,
    },
}

impl LayerValue {
    pub fn span(&self) -> Span {
        match self {
            LayerValue::Call { span, .. } | LayerValue::Repeat { span, .. } => *span,
            LayerValue::Compose { parts, .. } => parts
                .iter()
                .map(|p| p.span())
                .reduce(Span::join)
                .unwrap_or_default(),
        }
    }
}

/// A configuration object: its constructor name and bound arguments.
#[derive(Clone, Debug)]
pub struct SpecValue {
    pub kind: &'static str,
    pub args: super::args::Bound,
    pub span: Span,
}
