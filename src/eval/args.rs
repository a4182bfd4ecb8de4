//! Signatures and argument binding: positional and keyword arguments matched to
//! declared parameters, with typo suggestions and "expected X, got Y" errors.

use super::value::{ArgValue, Spanned, Value};
use crate::diag::{nearest, Diagnostic, Span};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    Any,
    Int,
    Float,
    Bool,
    Str,
    /// One of a fixed set of words.
    Word(&'static [&'static str]),
    /// An int, or one of a fixed set of words (`padding: 1` or `padding: same`).
    IntOrWord(&'static [&'static str]),
    /// An int or a list of ints (one per spatial dimension).
    Ints,
    /// Ints, or one of a fixed set of words.
    IntsOrWord(&'static [&'static str]),
    /// A layer value (`batchnorm(affine: false)`), or `none`.
    LayerOrNone,
    /// A specific configuration object (`magnet(...)`), or `none` when allowed.
    Spec(&'static str),
    SpecOrNone(&'static str),
    Basis,
    Slots,
    List,
}

impl Ty {
    pub fn words(self) -> Option<&'static [&'static str]> {
        match self {
            Ty::Word(w) | Ty::IntOrWord(w) | Ty::IntsOrWord(w) => Some(w),
            Ty::LayerOrNone | Ty::SpecOrNone(_) => Some(&["none"]),
            _ => None,
        }
    }

    fn describe(self) -> String {
        let words = |w: &[&str]| {
            w.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Ty::Any => "a value".into(),
            Ty::Int => "an int".into(),
            Ty::Float => "a number".into(),
            Ty::Bool => "`true` or `false`".into(),
            Ty::Str => "a string".into(),
            Ty::Word(w) => format!("one of {}", words(w)),
            Ty::IntOrWord(w) => format!("an int or one of {}", words(w)),
            Ty::Ints => "an int or a list of ints".into(),
            Ty::IntsOrWord(w) => format!("an int, a list of ints, or one of {}", words(w)),
            Ty::LayerOrNone => "a layer or `none`".into(),
            Ty::Spec(k) => format!("`{k}(...)`"),
            Ty::SpecOrNone(k) => format!("`{k}(...)` or `none`"),
            Ty::Basis => "a basis declared with `basis NAME = shared_basis(...)`".into(),
            Ty::Slots => "a slot family declared with `slots NAME = pool_slots(...)`".into(),
            Ty::List => "a list".into(),
        }
    }

    /// Checks (and where lossless, converts) a value against this type.
    pub fn check(self, v: &Spanned) -> Result<Value, Diagnostic> {
        let ok = match (self, &v.value) {
            (Ty::Any, _) => true,
            (Ty::Int, Value::Int(_)) => true,
            (Ty::Float, Value::Float(_)) => true,
            (Ty::Float, Value::Int(i)) => return Ok(Value::Float(*i as f64)),
            (Ty::Bool, Value::Bool(_)) => true,
            (Ty::Str, Value::Str(_)) => true,
            (Ty::Ints | Ty::IntsOrWord(_), Value::Int(_)) => true,
            (Ty::Ints | Ty::IntsOrWord(_), Value::List(items)) => {
                items.iter().all(|i| matches!(i.value, Value::Int(_)))
            }
            (Ty::IntOrWord(_), Value::Int(_)) => true,
            (Ty::LayerOrNone, Value::Layer(_)) => true,
            (Ty::Spec(k) | Ty::SpecOrNone(k), Value::Spec(s)) => s.kind == k,
            (Ty::Basis, Value::Basis(_)) => true,
            (Ty::Slots, Value::Slots(_)) => true,
            (Ty::List, Value::List(_)) => true,
            (ty, Value::Word(w)) if ty.words().is_some() => {
                let words = ty.words().unwrap_or(&[]);
                if words.contains(&w.as_str()) {
                    true
                } else {
                    return Err(Diagnostic::at(
                        "E0203",
                        v.span,
                        format!("`{w}` is not a valid choice here"),
                        format!("expected {}", ty.describe()),
                    )
                    .suggest(w, words.iter().copied()));
                }
            }
            (ty, Value::Str(s)) if ty.words().is_some_and(|w| w.contains(&s.as_str())) => {
                return Ok(Value::Word(s.clone()))
            }
            _ => false,
        };
        if ok {
            Ok(v.value.clone())
        } else {
            Err(Diagnostic::at(
                "E0202",
                v.span,
                format!("expected {}, got {}", self.describe(), v.value.type_name()),
                format!("this is {}", article(v.value.type_name())),
            ))
        }
    }
}

fn article(t: &str) -> String {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {t}")
    } else {
        format!("a {t}")
    }
}

/// A declared parameter: name, type and default (`None` = required).
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub ty: Ty,
    pub default: Option<Value>,
}

pub fn req(name: &str, ty: Ty) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        ty,
        default: None,
    }
}

pub fn opt(name: &str, ty: Ty, default: Value) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        ty,
        default: Some(default),
    }
}

/// Arguments bound to a signature: every parameter has a value and a span (the
/// argument's, or the call's for defaults).
#[derive(Clone, Debug, Default)]
pub struct Bound {
    pub values: Vec<(String, Spanned, bool)>,
}

impl Bound {
    fn get(&self, name: &str) -> &Spanned {
        &self
            .values
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("builtin reads undeclared parameter `{name}`"))
            .1
    }

    pub fn span(&self, name: &str) -> Span {
        self.get(name).span
    }

    /// Whether the user wrote this argument (as opposed to taking the default).
    pub fn given(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _, given)| n == name && *given)
    }

    pub fn value(&self, name: &str) -> &Value {
        &self.get(name).value
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            Value::Int(i) => *i,
            other => panic!("`{name}` bound as {other:?}, not int"),
        }
    }

    pub fn float(&self, name: &str) -> f64 {
        match self.value(name) {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            other => panic!("`{name}` bound as {other:?}, not float"),
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.value(name), Value::Bool(true))
    }

    pub fn str(&self, name: &str) -> &str {
        match self.value(name) {
            Value::Str(s) => s,
            other => panic!("`{name}` bound as {other:?}, not string"),
        }
    }

    /// The word, if the argument is one.
    pub fn word(&self, name: &str) -> Option<&str> {
        match self.value(name) {
            Value::Word(w) => Some(w),
            _ => None,
        }
    }

    /// A positive int, or a diagnostic at the argument.
    pub fn positive(&self, name: &str) -> Result<u64, Diagnostic> {
        let v = self.int(name);
        if v <= 0 {
            return Err(Diagnostic::at(
                "E0204",
                self.span(name),
                format!("`{name}` must be positive, got {v}"),
                "must be at least 1",
            )
            .hint(format!("`{name}` is a size or count, so it is 1 or more")));
        }
        Ok(v as u64)
    }

    /// An int or list of ints broadcast to `dims` entries, each at least `min`.
    pub fn ints(&self, name: &str, dims: usize, min: i64) -> Result<Vec<u64>, Diagnostic> {
        let span = self.span(name);
        let raw: Vec<i64> = match self.value(name) {
            Value::Int(i) => vec![*i; dims],
            Value::List(items) => items
                .iter()
                .map(|i| match i.value {
                    Value::Int(v) => v,
                    _ => 0,
                })
                .collect(),
            _ => vec![],
        };
        if raw.len() != dims {
            return Err(Diagnostic::at(
                "E0204",
                span,
                format!(
                    "`{name}` needs {dims} values (one per spatial dimension), got {}",
                    raw.len()
                ),
                format!("expected an int or a list of {dims}"),
            ));
        }
        if let Some(bad) = raw.iter().find(|v| **v < min) {
            return Err(Diagnostic::at(
                "E0204",
                span,
                format!("`{name}` must be at least {min}, got {bad}"),
                "out of range",
            )
            .hint(match (name, min) {
                ("kernel", _) => "use `1` for a pointwise (1x1) kernel".to_string(),
                ("padding", _) => "`0` adds no padding; `same` keeps the size".to_string(),
                _ => format!("every value of `{name}` is {min} or more"),
            }));
        }
        Ok(raw.into_iter().map(|v| v as u64).collect())
    }
}

/// Binds evaluated arguments to `params`. `what` names the callee in messages.
pub fn bind(
    what: &str,
    params: &[ParamSpec],
    args: &[ArgValue],
    call_span: Span,
) -> Result<Bound, Diagnostic> {
    let mut slots: Vec<Option<(Spanned, bool)>> = vec![None; params.len()];
    let mut next_positional = 0;
    let mut seen_keyword = false;
    for arg in args {
        match &arg.name {
            None => {
                if seen_keyword {
                    return Err(Diagnostic::at(
                        "E0205",
                        arg.value.span,
                        "positional argument after a keyword argument",
                        "move this before the keyword arguments",
                    )
                    .hint("positional arguments come first, then `name: value` pairs"));
                }
                if next_positional >= params.len() {
                    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                    return Err(Diagnostic::at(
                        "E0206",
                        arg.value.span,
                        format!("too many arguments to `{what}`"),
                        "unexpected argument",
                    )
                    .hint(format!(
                        "`{what}` takes {}: {}",
                        params.len(),
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    )));
                }
                slots[next_positional] = Some((arg.value.clone(), true));
                next_positional += 1;
            }
            Some(name) => {
                seen_keyword = true;
                let Some(i) = params.iter().position(|p| p.name == name.name) else {
                    let d = Diagnostic::at(
                        "E0207",
                        name.span,
                        format!("`{what}` has no parameter `{}`", name.name),
                        "unknown parameter",
                    );
                    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                    return Err(match nearest(&name.name, names.iter().copied()) {
                        Some(best) => d.hint(format!("did you mean `{best}`?")),
                        None => d.hint(format!("`{what}` takes: {}", names.join(", "))),
                    });
                };
                if let Some((first, _)) = &slots[i] {
                    return Err(Diagnostic::at(
                        "E0208",
                        name.span,
                        format!("`{}` is given twice", name.name),
                        "second value here",
                    )
                    .label(first.span, "first value here")
                    .hint(format!("keep one of the two values of `{}`", name.name)));
                }
                slots[i] = Some((arg.value.clone(), true));
            }
        }
    }
    let mut values = Vec::with_capacity(params.len());
    for (p, slot) in params.iter().zip(slots) {
        let (v, given) = match slot {
            Some(v) => v,
            None => match &p.default {
                Some(d) => (
                    Spanned {
                        value: d.clone(),
                        span: call_span,
                    },
                    false,
                ),
                None => {
                    return Err(Diagnostic::at(
                        "E0209",
                        call_span,
                        format!("`{what}` is missing its argument `{}`", p.name),
                        format!("`{}` is required", p.name),
                    )
                    .hint(format!("pass it as `{}: ...` or positionally", p.name)))
                }
            },
        };
        let checked = if given {
            p.ty.check(&v).map_err(|d| {
                if d.hint.is_some() {
                    return d;
                }
                let h = format!("`{}` of `{what}` takes {}", p.name, p.ty.describe());
                d.hint(match (&p.ty, &v.value) {
                    // Only where the int literal exists: 1e30 written out is E0004.
                    (Ty::Int | Ty::Ints, Value::Float(f))
                        if f.fract() == 0.0 && f.abs() < i64::MAX as f64 =>
                    {
                        format!("{h}; write `{f:.0}` without a decimal point")
                    }
                    (Ty::Int | Ty::Ints, Value::Float(f)) if f.fract() == 0.0 => {
                        format!("{h}; {f:e} is beyond the largest int, {}", i64::MAX)
                    }
                    (Ty::Bool, Value::Str(_)) => format!("{h}, without quotes"),
                    _ => h,
                })
            })?
        } else {
            v.value.clone()
        };
        values.push((
            p.name.clone(),
            Spanned {
                value: checked,
                span: v.span,
            },
            given,
        ));
    }
    Ok(Bound { values })
}
