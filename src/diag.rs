//! Diagnostics: every error a user can cause is a `Diagnostic` with a source span, a
//! message, labels and a hint, rendered rustc-style by codespan-reporting.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::{Files, SimpleFile};
use codespan_reporting::term::{self, Config};
use std::fmt;

mod excerpt;
use excerpt::{Excerpt, ExcerptFile};

/// A byte range in one source file.
#[derive(
    serde::Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl From<pest::Span<'_>> for Span {
    fn from(s: pest::Span<'_>) -> Span {
        Span::new(s.start(), s.end())
    }
}

/// A source file: its display name and its text.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 1-based (line, column) of a byte offset; columns count characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, before[line_start..].chars().count() + 1)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One labelled span in a diagnostic. The first label is the primary one.
#[derive(Clone, Debug)]
pub struct DiagLabel {
    pub span: Span,
    pub message: String,
}

/// Whether a diagnostic stops the command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Severity {
    #[default]
    Error,
    /// Printed, and the command goes on: legal but almost certainly not meant.
    Warning,
}

/// A user-facing error (or warning): code, message, labelled spans, notes and a hint.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<DiagLabel>,
    pub notes: Vec<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            hint: None,
        }
    }

    /// Shorthand for the common case: one primary span and a label.
    pub fn at(
        code: &'static str,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(code, message).label(span, label)
    }

    /// The same diagnostic as a warning.
    pub fn warning(mut self) -> Diagnostic {
        self.severity = Severity::Warning;
        self
    }

    pub fn label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(DiagLabel {
            span,
            message: message.into(),
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint naming the nearest candidate, if any is close enough.
    pub fn suggest<'a>(
        self,
        got: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Diagnostic {
        match nearest(got, candidates) {
            Some(best) => self.hint(format!("did you mean `{best}`?")),
            None => self,
        }
    }

    pub fn primary_span(&self) -> Option<Span> {
        self.labels.first().map(|l| l.span)
    }

    /// Renders without colour, as the CLI prints it when stderr is not a terminal and as
    /// snapshot tests store it.
    pub fn render(&self, source: &Source) -> String {
        self.render_styled(source, false)
    }

    /// Renders with ANSI colours when `color` is set. Long lines are cut around the
    /// labels and control characters replaced (see `excerpt`).
    pub fn render_styled(&self, source: &Source, color: bool) -> String {
        let anchors: Vec<usize> = self
            .labels
            .iter()
            .flat_map(|l| [l.span.start, l.span.end])
            .collect();
        let excerpt = Excerpt::new(source, &anchors);
        // Spans are clamped to the text in `to_codespan`, so rendering cannot fail on
        // them; an error here would only lose the excerpt, so fall back to the message.
        let emitted = if excerpt.changed() {
            let file = ExcerptFile::new(&excerpt);
            self.emit(
                &file,
                &self.to_codespan(excerpt.text(), |o| excerpt.to_new(o)),
                color,
            )
        } else {
            let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
            self.emit(&file, &self.to_codespan(&source.text, |o| o), color)
        };
        emitted.unwrap_or_else(|| format!("{self}\n"))
    }

    fn emit<'f, F: Files<'f, FileId = ()>>(
        &self,
        file: &'f F,
        diagnostic: &CsDiagnostic<()>,
        color: bool,
    ) -> Option<String> {
        let config = Config::default();
        if !color {
            return term::emit_into_string(&config, file, diagnostic).ok();
        }
        let mut out = term::termcolor::Buffer::ansi();
        term::emit_to_write_style(&mut out, &config, file, diagnostic).ok()?;
        Some(String::from_utf8_lossy(out.as_slice()).into_owned())
    }

    /// The codespan form, with spans mapped by `map` into `text` and clamped to it.
    fn to_codespan(&self, text: &str, map: impl Fn(usize) -> usize) -> CsDiagnostic<()> {
        let len = text.len();
        let labels = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let start = floor_char_boundary(text, map(l.span.start).min(len));
                let end = floor_char_boundary(text, map(l.span.end).min(len)).max(start);
                let label = if i == 0 {
                    Label::primary((), start..end)
                } else {
                    Label::secondary((), start..end)
                };
                label.with_message(&l.message)
            })
            .collect();
        let mut notes = self.notes.clone();
        if let Some(h) = &self.hint {
            notes.push(format!("help: {h}"));
        }
        match self.severity {
            Severity::Error => CsDiagnostic::error(),
            Severity::Warning => CsDiagnostic::warning(),
        }
        .with_code(self.code)
        .with_message(&self.message)
        .with_labels(labels)
        .with_notes(notes)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{kind}[{}]: {}", self.code, self.message)
    }
}

/// A list of diagnostics tied to the source they point into.
#[derive(Clone, Debug)]
pub struct Report {
    pub source: Source,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn render(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(&self.source))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Report {}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a distance that still reads as a typo.
pub fn nearest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (got.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .filter(|c| *c != got)
        .map(|c| (edit_distance(&got.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let s = Source::new("a.fnet", "ab\ncd");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(4), (2, 2));
    }

    #[test]
    fn nearest_finds_typos_only() {
        let c = ["conv2d", "conv1d", "linear", "relu"];
        assert_eq!(nearest("covn2d", c), Some("conv2d"));
        assert_eq!(nearest("relux", c), Some("relu"));
        assert_eq!(nearest("transformer", c), None);
    }
}
