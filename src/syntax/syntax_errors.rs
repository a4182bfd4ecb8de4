//! Syntax errors: the nesting guard that runs before pest, and the translation of pest's
//! "expected one of these rules" into messages a user can act on (unclosed brackets,
//! stray characters, missing commas), each with a span and a hint.

use super::parser::{Rule, MAX_NESTING};
use crate::diag::{Diagnostic, Span};

/// Rejects nesting deeper than `MAX_NESTING` before pest recurses into it. Brackets in
/// comments and strings are skipped so they do not count.
pub(crate) fn check_nesting(text: &str) -> Result<(), Diagnostic> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            // A closed block comment is skipped like the grammar skips it; an unclosed
            // one is a syntax error, so its brackets may as well count.
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                if let Some(end) = text[i + 2..].find("*/") {
                    i += 2 + end + 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::at(
                        "E0003",
                        Span::new(i, i + 1),
                        format!("brackets nest deeper than {MAX_NESTING} levels"),
                        "too deep here",
                    )
                    .hint("flatten the expression with `let` bindings or a pipeline `|>`"));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn rule_name(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::ident | Rule::word => "a name",
        Rule::int => "an integer",
        Rule::float => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::string => "a string",
        Rule::model => "`model NAME { ... }`",
        Rule::model_item => "a declaration",
        Rule::input_decl => "`input`",
        Rule::seed_decl | Rule::kw_seed => "`seed`",
        Rule::kw_basis => "`basis`",
        Rule::kw_slots => "`slots`",
        Rule::def_decl => "`def`",
        Rule::block_decl => "`block`",
        Rule::basis_decl => "`basis`",
        Rule::slots_decl => "`slots`",
        Rule::let_stmt => "`NAME = expr`",
        Rule::return_stmt => "`return`",
        Rule::tensor_type => "a tensor type like `f32[B, 3, 32, 32]`",
        Rule::dim => "a dimension (integer or symbol)",
        Rule::expr | Rule::sum | Rule::product | Rule::unary | Rule::postfix | Rule::stage => {
            "an expression"
        }
        Rule::pipe_op => "`|>`",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*` or `/`",
        Rule::as_name => "`as NAME`",
        Rule::call => "a call",
        Rule::arg => "an argument",
        Rule::list => "a list",
        Rule::paren => "`(`",
        Rule::param_list | Rule::param => "a parameter",
        Rule::input_list => "an input name",
        Rule::train_section => "`train { ... }`",
        Rule::train_entry => "`key: value`",
        Rule::repeat_stage => "`repeat N layer`",
        Rule::neg => "`-`",
        _ => "something else",
    }
}

/// Brackets still open at `end` (innermost last), and the opening braces whose `}`
/// starts a line indented differently from the opening line: when a brace is missing,
/// the misaligned pair usually shows where. Strings and comments are skipped.
fn scan_brackets(text: &str, end: usize) -> (Vec<(u8, usize)>, Vec<usize>) {
    let b = text.as_bytes();
    let end = end.min(b.len());
    let (mut open, mut misaligned) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < end {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => i = text[i..].find('\n').map_or(b.len(), |n| i + n),
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(b.len(), |n| i + n)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if let Some(n) = text[i + 2..].find("*/") {
                    i += 2 + n + 1;
                }
            }
            b'(' | b'[' | b'{' => open.push((b[i], i)),
            b')' | b']' | b'}' => {
                if let Some((_, at)) = open.pop() {
                    let starts_line = text[line_start(text, i)..i].trim().is_empty();
                    if b[i] == b'}' && starts_line && indent(text, at) != indent(text, i) {
                        misaligned.push(at);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    (open, misaligned)
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |n| n + 1)
}

fn indent(text: &str, at: usize) -> usize {
    let start = line_start(text, at);
    text[start..].len() - text[start..].trim_start_matches([' ', '\t']).len()
}

/// The token at `pos`, for "found ..." in messages.
fn found_at(text: &str, pos: usize) -> String {
    let rest = &text[pos.min(text.len())..];
    let Some(c) = rest.chars().next() else {
        return "end of file".into();
    };
    if c.is_ascii_alphanumeric() || c == '_' {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(40)
            .collect();
        return format!("`{word}`");
    }
    if rest.starts_with("|>") {
        return "`|>`".into();
    }
    if c == '\n' {
        return "end of line".into();
    }
    format!("`{}`", c.escape_debug())
}

/// Syntax errors that a specific message explains better than a list of expected
/// rules: an unclosed bracket at the end of the file, a stray character, an
/// unterminated string, a missing comma between arguments.
fn special_syntax_error(text: &str, pos: usize) -> Option<Diagnostic> {
    let rest = &text[pos.min(text.len())..];
    let (open, misaligned) = scan_brackets(text, pos);
    if rest.trim().is_empty() {
        let &(bracket, at) = open.last()?;
        let (b, close) = match bracket {
            b'(' => ('(', ')'),
            b'[' => ('[', ']'),
            _ => ('{', '}'),
        };
        let end = text.trim_end().len();
        let mut d = Diagnostic::at(
            "E0001",
            Span::new(end, end),
            format!("syntax error: unexpected end of file; a `{b}` is never closed"),
            "the file ends here",
        )
        .label(Span::new(at, at + 1), format!("this `{b}` is never closed"));
        if let Some(&m) = misaligned.iter().rev().find(|&&m| m != at) {
            d = d.label(
                Span::new(m, m + 1),
                "this `{` may be the one missing its `}`: its `}` is indented differently",
            );
        }
        return Some(d.hint(format!("add the missing `{close}`")));
    }
    let before = text[..pos].trim_end();
    if before.ends_with("|>") {
        let at = before.len() - 2;
        return Some(
            Diagnostic::at(
                "E0001",
                Span::new(at, at + 2),
                format!(
                    "syntax error: `|>` needs a layer after it, found {}",
                    found_at(text, pos)
                ),
                "nothing follows this `|>`",
            )
            .hint("write the next layer after `|>`, or remove the `|>`"),
        );
    }
    if let Some(d) = non_ascii_name(text, pos) {
        return Some(d);
    }
    let c = rest.chars().next()?;
    let allowed =
        c.is_ascii_alphanumeric() || c.is_whitespace() || "_(){}[],:=|>+-*/.\"#".contains(c);
    if !allowed {
        return Some(
            Diagnostic::at(
                "E0001",
                Span::new(pos, pos + c.len_utf8()),
                format!("syntax error: unexpected character `{}`", c.escape_debug()),
                "not part of the language",
            )
            .hint("remove it; layers are chained with `|>`, arithmetic uses `+ - * /`"),
        );
    }
    if c == '"' {
        let line = rest.split('\n').next().unwrap_or("");
        let mut chars = line[1..].chars();
        let mut closed = false;
        while let Some(ch) = chars.next() {
            match ch {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        if !closed {
            return Some(
                Diagnostic::at(
                    "E0001",
                    Span::new(pos, pos + line.len()),
                    "syntax error: unterminated string",
                    "this string is never closed",
                )
                .hint("close it with `\"` on the same line; strings cannot span lines"),
            );
        }
    }
    let &(bracket, _) = open.last()?;
    let before = text[..pos].trim_end().chars().last();
    let starts_operand = c.is_ascii_alphanumeric() || "_\"([".contains(c);
    let after_operand = before.is_some_and(|b| !",([:=|+-*/".contains(b));
    if bracket != b'{' && starts_operand && after_operand {
        let close = if bracket == b'(' { ')' } else { ']' };
        let what = if bracket == b'(' {
            "arguments"
        } else {
            "list items"
        };
        return Some(
            Diagnostic::at(
                "E0001",
                Span::new(pos, pos + 1),
                format!(
                    "syntax error: expected `,` or `{close}`, found {}",
                    found_at(text, pos)
                ),
                format!("expected `,` or `{close}` before this"),
            )
            .hint(format!("separate {what} with commas, e.g. `conv2d(16, 3)`")),
        );
    }
    None
}

/// A name with a letter outside ASCII (`höhe`): pest stops at the start of the name,
/// but the error belongs on the letter.
fn non_ascii_name(text: &str, pos: usize) -> Option<Diagnostic> {
    let rest = &text[pos.min(text.len())..];
    let ascii = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let c = rest[ascii..].chars().next()?;
    if c.is_ascii() || !c.is_alphanumeric() {
        return None;
    }
    let at = pos + ascii;
    let start = text[..at]
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
        .last()
        .map_or(at, |(i, _)| i);
    let word: String = text[start..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .take(40)
        .collect();
    Some(
        Diagnostic::at(
            "E0001",
            Span::new(at, at + c.len_utf8()),
            format!("syntax error: `{c}` cannot be part of a name"),
            "not an ASCII letter, digit or `_`",
        )
        .hint(format!(
            "names use ASCII letters, digits and `_`; rename `{word}`"
        )),
    )
}

pub(crate) fn pest_error(text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let span = match e.location {
        InputLocation::Pos(p) => Span::new(p, p + 1),
        InputLocation::Span((a, b)) => Span::new(a, b),
    };
    if let Some(d) = special_syntax_error(text, span.start) {
        return d;
    }
    let found = found_at(text, span.start);
    let (message, label) = match &e.variant {
        ErrorVariant::ParsingError {
            positives,
            negatives,
        } => {
            let mut names: Vec<&str> = positives.iter().map(rule_name).collect();
            names.sort();
            names.dedup();
            let expected = match names.len() {
                0 => String::new(),
                1 => names[0].to_string(),
                n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
            };
            if !expected.is_empty() {
                (
                    format!("syntax error: expected {expected}, found {found}"),
                    format!("expected {expected}"),
                )
            } else if !negatives.is_empty() {
                let names: Vec<&str> = negatives.iter().map(rule_name).collect();
                (
                    format!("syntax error: unexpected {}", names.join(", ")),
                    "unexpected here".to_string(),
                )
            } else {
                ("syntax error".to_string(), "here".to_string())
            }
        }
        ErrorVariant::CustomError { message } => (message.clone(), "here".to_string()),
    };
    Diagnostic::at("E0001", span, message, label)
        .hint("see docs/language.md for the syntax; a missing `,`, `)` or `}` often causes this")
}
