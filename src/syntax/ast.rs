//! The typed syntax tree of a `.fnet` file. Every node carries its source span so that
//! later stages (elaboration, shape inference) can point at the offending text.

use crate::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub model: Model,
    pub train: Option<TrainSection>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub items: Vec<Item>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Input(InputDecl),
    Seed {
        value: u64,
        span: Span,
    },
    Def(DefDecl),
    Block(BlockDecl),
    /// `basis NAME = basis(...)`: a filter basis shared by several convs.
    Basis {
        name: Ident,
        value: Expr,
    },
    /// `slots NAME = slots(...)`: a family of pooling slots.
    Slots {
        name: Ident,
        value: Expr,
    },
    Stmt(Stmt),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Let { name: Ident, value: Expr },
    Return { values: Vec<Expr>, span: Span },
}

#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub dtype: Ident,
    pub dims: Vec<DimAst>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DimAst {
    Known { value: u64, span: Span },
    Symbol(Ident),
}

/// A declared parameter of a `def` or `block`: `name`, `name: type`, `name = default`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<Ident>,
    pub default: Option<Expr>,
}

/// `def NAME(params) = expr`: a reusable layer template.
#[derive(Clone, Debug, PartialEq)]
pub struct DefDecl {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Expr,
    pub span: Span,
}

/// `block NAME(params) (inputs) { stmts }`: a named sub-network with its own scope.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockDecl {
    pub name: Ident,
    pub params: Vec<Param>,
    pub inputs: Vec<Ident>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ident(String),
    List(Vec<Expr>),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Neg(Box<Expr>),
    /// `lhs |> stage`, left-nested for chains.
    Pipe {
        lhs: Box<Expr>,
        stage: Box<Stage>,
    },
    /// `expr as name`: an explicit name for the layer or block the expression applies.
    Named {
        inner: Box<Expr>,
        name: Ident,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    Apply(Expr),
    /// `repeat COUNT body`: apply `body` COUNT times in sequence.
    Repeat {
        count: Expr,
        body: Expr,
        span: Span,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainSection {
    pub entries: Vec<(Ident, Expr)>,
    pub span: Span,
}
