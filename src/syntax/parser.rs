//! Text to syntax tree: the pest grammar in `grammar/fnet.pest`, then a typed walk.
//!
//! pest is a recursive-descent parser, so pathological nesting would overflow the
//! stack; `check_nesting` rejects it up front with a diagnostic instead.

use super::ast::*;
use super::syntax_errors::{check_nesting, pest_error};
use crate::diag::{Diagnostic, Span};
use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "grammar/fnet.pest"]
pub(crate) struct FnetParser;

/// Deepest bracket nesting accepted. Real models nest a handful of levels.
pub const MAX_NESTING: usize = 64;
/// Deepest syntax tree accepted for one expression (a pipeline of N stages is N deep).
pub const MAX_EXPR_DEPTH: usize = 256;
/// Largest source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4 << 20;

pub fn parse_program(text: &str) -> Result<Program, Diagnostic> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostic::at(
            "E0002",
            Span::new(0, 0),
            format!(
                "source is {} bytes; the limit is {MAX_SOURCE_BYTES}",
                text.len()
            ),
            "file starts here",
        )
        .hint("split the model or check that this is a .fnet file"));
    }
    check_nesting(text)?;
    let mut pairs = FnetParser::parse(Rule::file, text).map_err(|e| pest_error(text, e))?;
    let file = pairs.next().expect("pest yields the file rule on success");
    let mut model = None;
    let mut train = None;
    for p in file.into_inner() {
        match p.as_rule() {
            Rule::model => model = Some(model_ast(p)?),
            Rule::train_section => train = Some(train_ast(p)?),
            _ => {}
        }
    }
    Ok(Program {
        model: model.expect("grammar requires a model"),
        train,
    })
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: p.as_span().into(),
    }
}

fn model_ast(p: Pair<Rule>) -> Result<Model, Diagnostic> {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let name = ident(inner.next().expect("model name"));
    let items = inner.map(item_ast).collect::<Result<_, _>>()?;
    Ok(Model { name, items, span })
}

fn item_ast(p: Pair<Rule>) -> Result<Item, Diagnostic> {
    let span: Span = p.as_span().into();
    Ok(match p.as_rule() {
        Rule::input_decl => {
            let mut it = p.into_inner();
            let name = ident(it.next().expect("input name"));
            let ty = it.next().expect("tensor type");
            let mut tt = ty.into_inner();
            let dtype = ident(tt.next().expect("dtype"));
            let dims = tt.map(dim_ast).collect::<Result<_, _>>()?;
            Item::Input(InputDecl {
                name,
                dtype,
                dims,
                span,
            })
        }
        Rule::seed_decl => {
            let v = p.into_inner().last().expect("seed value");
            let value = parse_u64(&v)?;
            Item::Seed { value, span }
        }
        Rule::def_decl => {
            let mut it = p.into_inner().peekable();
            let name = ident(it.next().expect("def name"));
            let params = match it.peek().map(|q| q.as_rule()) {
                Some(Rule::param_list) => params_ast(it.next().expect("params"))?,
                _ => Vec::new(),
            };
            let body = expr_ast(it.next().expect("def body"))?;
            Item::Def(DefDecl {
                name,
                params,
                body,
                span,
            })
        }
        Rule::block_decl => {
            let mut it = p.into_inner().peekable();
            let name = ident(it.next().expect("block name"));
            let params = match it.peek().map(|q| q.as_rule()) {
                Some(Rule::param_list) => params_ast(it.next().expect("params"))?,
                _ => Vec::new(),
            };
            let inputs = it
                .next()
                .expect("block inputs")
                .into_inner()
                .map(ident)
                .collect();
            let body = it.map(stmt_ast).collect::<Result<_, _>>()?;
            Item::Block(BlockDecl {
                name,
                params,
                inputs,
                body,
                span,
            })
        }
        Rule::basis_decl | Rule::slots_decl => {
            let is_basis = p.as_rule() == Rule::basis_decl;
            let mut it = p.into_inner().skip(1);
            let name = ident(it.next().expect("name"));
            let value = expr_ast(it.next().expect("value"))?;
            if is_basis {
                Item::Basis { name, value }
            } else {
                Item::Slots { name, value }
            }
        }
        Rule::let_stmt | Rule::return_stmt => Item::Stmt(stmt_ast(p)?),
        r => unreachable!("model item {r:?}"),
    })
}

fn stmt_ast(p: Pair<Rule>) -> Result<Stmt, Diagnostic> {
    let span: Span = p.as_span().into();
    match p.as_rule() {
        Rule::let_stmt => {
            let mut it = p.into_inner();
            let name = ident(it.next().expect("let name"));
            let value = expr_ast(it.next().expect("let value"))?;
            Ok(Stmt::Let { name, value })
        }
        Rule::return_stmt => Ok(Stmt::Return {
            values: p.into_inner().map(expr_ast).collect::<Result<_, _>>()?,
            span,
        }),
        r => unreachable!("statement {r:?}"),
    }
}

fn params_ast(p: Pair<Rule>) -> Result<Vec<Param>, Diagnostic> {
    p.into_inner()
        .map(|param| {
            let mut name = None;
            let mut ty = None;
            let mut default = None;
            for q in param.into_inner() {
                match q.as_rule() {
                    Rule::ident if name.is_none() => name = Some(ident(q)),
                    Rule::ident => ty = Some(ident(q)),
                    Rule::expr => default = Some(expr_ast(q)?),
                    r => unreachable!("param part {r:?}"),
                }
            }
            Ok(Param {
                name: name.expect("param name"),
                ty,
                default,
            })
        })
        .collect()
}

fn dim_ast(p: Pair<Rule>) -> Result<DimAst, Diagnostic> {
    let q = p.into_inner().next().expect("dim");
    Ok(match q.as_rule() {
        Rule::int => DimAst::Known {
            value: parse_u64(&q)?,
            span: q.as_span().into(),
        },
        _ => DimAst::Symbol(ident(q)),
    })
}

fn parse_u64(p: &Pair<Rule>) -> Result<u64, Diagnostic> {
    p.as_str().replace('_', "").parse::<u64>().map_err(|_| {
        Diagnostic::at(
            "E0004",
            p.as_span().into(),
            format!("integer `{}` is too large", p.as_str()),
            "does not fit in 64 bits",
        )
        .hint("sizes and seeds must be below 2^64")
    })
}

fn parse_i64(p: &Pair<Rule>) -> Result<i64, Diagnostic> {
    p.as_str().replace('_', "").parse::<i64>().map_err(|_| {
        Diagnostic::at(
            "E0004",
            p.as_span().into(),
            format!("integer `{}` is too large", p.as_str()),
            "does not fit in a 64-bit signed integer",
        )
        .hint("integers in expressions must be below 2^63 = 9223372036854775808")
    })
}

fn expr_ast(p: Pair<Rule>) -> Result<Expr, Diagnostic> {
    expr_d(p).map(|(e, _)| e)
}

/// Rejects syntax trees deeper than `MAX_EXPR_DEPTH`: a chain such as `x |> relu |> ...`
/// is flat for pest but nests in the tree, and later passes recurse over it.
fn check_depth(depth: usize, span: Span) -> Result<usize, Diagnostic> {
    if depth <= MAX_EXPR_DEPTH {
        return Ok(depth);
    }
    Err(Diagnostic::at(
        "E0003",
        span,
        format!("expression nests deeper than {MAX_EXPR_DEPTH} levels"),
        "too deep here",
    )
    .hint("split long chains with `let` bindings: `h = x |> ...` then `h = h |> ...`"))
}

fn max_depth<'a>(depths: impl IntoIterator<Item = &'a usize>) -> usize {
    depths.into_iter().copied().max().unwrap_or(0)
}

/// An expression and the depth of its tree.
fn expr_d(p: Pair<Rule>) -> Result<(Expr, usize), Diagnostic> {
    let span: Span = p.as_span().into();
    match p.as_rule() {
        Rule::expr => {
            let mut it = p.into_inner();
            let (mut acc, mut depth) = expr_d(it.next().expect("pipe head"))?;
            while let Some(op) = it.next() {
                debug_assert_eq!(op.as_rule(), Rule::pipe_op);
                let stage_pair = it.next().expect("pipe stage");
                let (stage, d) = stage_ast(stage_pair)?;
                let end = match &stage {
                    Stage::Apply(e) => e.span,
                    Stage::Repeat { span, .. } => *span,
                };
                depth = check_depth(depth.max(d) + 1, end)?;
                acc = Expr {
                    span: acc.span.join(end),
                    kind: ExprKind::Pipe {
                        lhs: Box::new(acc),
                        stage: Box::new(stage),
                    },
                };
            }
            Ok((acc, depth))
        }
        Rule::sum | Rule::product => {
            let mut it = p.into_inner();
            let (mut acc, mut depth) = expr_d(it.next().expect("operand"))?;
            while let Some(op) = it.next() {
                let (rhs, d) = expr_d(it.next().expect("operand"))?;
                depth = check_depth(depth.max(d) + 1, rhs.span)?;
                let op = match op.as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                acc = Expr {
                    span: acc.span.join(rhs.span),
                    kind: ExprKind::Binary {
                        op,
                        lhs: Box::new(acc),
                        rhs: Box::new(rhs),
                    },
                };
            }
            Ok((acc, depth))
        }
        Rule::unary => {
            let mut it = p.into_inner().peekable();
            let negated = it.peek().map(|q| q.as_rule()) == Some(Rule::neg);
            if negated {
                it.next();
            }
            let (inner, depth) = expr_d(it.next().expect("operand"))?;
            if !negated {
                return Ok((inner, depth));
            }
            let depth = check_depth(depth + 1, span)?;
            let e = match inner.kind {
                ExprKind::Int(v) => Expr {
                    kind: ExprKind::Int(-v),
                    span,
                },
                ExprKind::Float(v) => Expr {
                    kind: ExprKind::Float(-v),
                    span,
                },
                _ => Expr {
                    kind: ExprKind::Neg(Box::new(inner)),
                    span,
                },
            };
            Ok((e, depth))
        }
        Rule::postfix => {
            let mut it = p.into_inner();
            let (inner, depth) = expr_d(it.next().expect("primary"))?;
            match it.next() {
                Some(n) => Ok((
                    Expr {
                        kind: ExprKind::Named {
                            inner: Box::new(inner),
                            name: ident(n.into_inner().next().expect("as name")),
                        },
                        span,
                    },
                    check_depth(depth + 1, span)?,
                )),
                None => Ok((inner, depth)),
            }
        }
        Rule::paren => expr_d(p.into_inner().next().expect("parenthesised")),
        Rule::list => {
            let (items, depths): (Vec<Expr>, Vec<usize>) = p
                .into_inner()
                .map(expr_d)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .unzip();
            let depth = check_depth(max_depth(&depths) + 1, span)?;
            Ok((
                Expr {
                    kind: ExprKind::List(items),
                    span,
                },
                depth,
            ))
        }
        Rule::call => {
            let mut it = p.into_inner();
            let callee = ident(it.next().expect("callee"));
            let mut depth = 0;
            let args = it
                .map(|a| {
                    let mut parts: Vec<Pair<Rule>> = a.into_inner().collect();
                    let (value, d) = expr_d(parts.pop().expect("arg value"))?;
                    depth = depth.max(d);
                    let name = parts.pop().map(ident);
                    Ok(Arg { name, value })
                })
                .collect::<Result<_, Diagnostic>>()?;
            Ok((
                Expr {
                    kind: ExprKind::Call { callee, args },
                    span,
                },
                check_depth(depth + 1, span)?,
            ))
        }
        _ => leaf_ast(p).map(|e| (e, 1)),
    }
}

/// Literals and names.
fn leaf_ast(p: Pair<Rule>) -> Result<Expr, Diagnostic> {
    let span: Span = p.as_span().into();
    match p.as_rule() {
        Rule::int => Ok(Expr {
            kind: ExprKind::Int(parse_i64(&p)?),
            span,
        }),
        Rule::float => {
            let v: f64 = p.as_str().replace('_', "").parse().map_err(|_| {
                Diagnostic::at("E0004", span, "malformed number", "here")
                    .hint("write numbers like `0.1`, `1e-3` or `25.6`")
            })?;
            if !v.is_finite() {
                return Err(Diagnostic::at(
                    "E0004",
                    span,
                    format!("number `{}` is out of range", p.as_str()),
                    "not a finite f64",
                )
                .hint("numbers must be finite"));
            }
            Ok(Expr {
                kind: ExprKind::Float(v),
                span,
            })
        }
        Rule::boolean => Ok(Expr {
            kind: ExprKind::Bool(p.as_str() == "true"),
            span,
        }),
        Rule::string => Ok(Expr {
            kind: ExprKind::Str(unescape(p.into_inner().next().map_or("", |q| q.as_str()))),
            span,
        }),
        Rule::ident => Ok(Expr {
            kind: ExprKind::Ident(p.as_str().to_string()),
            span,
        }),
        r => unreachable!("expression rule {r:?}"),
    }
}

fn stage_ast(p: Pair<Rule>) -> Result<(Stage, usize), Diagnostic> {
    let inner = p.into_inner().next().expect("stage body");
    match inner.as_rule() {
        Rule::repeat_stage => {
            let span = inner.as_span().into();
            let mut it = inner.into_inner();
            let (count, a) = expr_d(it.next().expect("repeat count"))?;
            let (body, b) = expr_d(it.next().expect("repeat body"))?;
            let depth = check_depth(a.max(b) + 1, span)?;
            Ok((Stage::Repeat { count, body, span }, depth))
        }
        _ => expr_d(inner).map(|(e, d)| (Stage::Apply(e), d)),
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn train_ast(p: Pair<Rule>) -> Result<TrainSection, Diagnostic> {
    let span = p.as_span().into();
    let entries = p
        .into_inner()
        .map(|e| {
            let mut it = e.into_inner();
            let key = ident(it.next().expect("key"));
            let value = expr_ast(it.next().expect("value"))?;
            Ok((key, value))
        })
        .collect::<Result<_, Diagnostic>>()?;
    Ok(TrainSection { entries, span })
}
