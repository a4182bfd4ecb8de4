//! Stable, PyTorch-style names. Each block application opens a scope; inside it a layer
//! is named explicitly (`as conv1`) or after its kind with a per-scope counter
//! (`conv1`, `conv2`, `bn1`), so the same source always yields the same names.

use crate::diag::{Diagnostic, Span};
use crate::syntax::ast::Ident;
use std::collections::HashMap;

/// How the layer being applied gets its name.
#[derive(Clone, Debug)]
pub enum Naming {
    /// Kind plus the next free counter in the current scope.
    Auto,
    /// Written by the user with `as NAME`; must be unique in its scope.
    Explicit(Ident),
    /// Decided by the elaborator (a `repeat ... as NAME` child index, or a one-layer
    /// template passing its own name down).
    Given(String),
}

#[derive(Default, Debug)]
struct Scope {
    prefix: String,
    counters: HashMap<String, u64>,
    used: HashMap<String, Span>,
}

#[derive(Debug)]
pub struct Scopes {
    stack: Vec<Scope>,
}

impl Default for Scopes {
    fn default() -> Scopes {
        Scopes {
            stack: vec![Scope::default()],
        }
    }
}

impl Scopes {
    fn top(&mut self) -> &mut Scope {
        self.stack
            .last_mut()
            .expect("the model scope is never popped")
    }

    fn full(&self, component: &str) -> String {
        let prefix = &self.stack.last().expect("model scope").prefix;
        if prefix.is_empty() {
            component.to_string()
        } else {
            format!("{prefix}.{component}")
        }
    }

    /// Reserves a name in the current scope and returns its full dotted path.
    pub fn alloc(&mut self, kind: &str, naming: &Naming) -> Result<String, Diagnostic> {
        let component = match naming {
            Naming::Auto => {
                let scope = self.top();
                loop {
                    let n = scope.counters.entry(kind.to_string()).or_insert(0);
                    *n += 1;
                    // `conv3` + 1 would read as `conv31`; separate digits.
                    let sep = if kind.ends_with(|c: char| c.is_ascii_digit()) {
                        "_"
                    } else {
                        ""
                    };
                    let candidate = format!("{kind}{sep}{n}");
                    if !scope.used.contains_key(&candidate) {
                        scope.used.insert(candidate.clone(), Span::default());
                        break candidate;
                    }
                }
            }
            Naming::Explicit(id) => {
                let scope = self.top();
                if let Some(prev) = scope.used.get(&id.name) {
                    let d = Diagnostic::at(
                        "E0309",
                        id.span,
                        format!("the name `{}` is already used in this scope", id.name),
                        "second use",
                    );
                    let d = if *prev != Span::default() {
                        d.label(*prev, "first use")
                    } else {
                        d.note(format!(
                            "`{}` was given automatically to an earlier layer",
                            id.name
                        ))
                    };
                    return Err(d.hint("names must be unique within a block; pick another"));
                }
                scope.used.insert(id.name.clone(), id.span);
                id.name.clone()
            }
            Naming::Given(s) => {
                self.top().used.entry(s.clone()).or_default();
                s.clone()
            }
        };
        Ok(self.full(&component))
    }

    pub fn push(&mut self, path: String) {
        self.stack.push(Scope {
            prefix: path,
            ..Scope::default()
        });
    }

    pub fn pop(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
        }
    }
}
