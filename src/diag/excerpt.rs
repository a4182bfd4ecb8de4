//! The text a diagnostic shows: long lines cut to a window around the labels, and
//! control characters (raw binary) shown as `�`, so that a 200 KB line or a binary
//! file gives a short, printable excerpt. Line numbers are unchanged (only characters
//! within lines are cut), and `location` reports the column in the original text.

use super::Source;
use codespan_reporting::files::{Error, Files, Location, SimpleFile};
use std::ops::Range;

/// Characters kept on each side of a label on a long line.
pub const HALF_WINDOW: usize = 80;
/// Lines longer than this many characters are cut (a generous line is shown whole).
const LONG_LINE: usize = 3 * HALF_WINDOW;
const CUT: &str = "…";
const REPLACEMENT: &str = "\u{fffd}";

/// A run of the original text and where it went in the excerpt.
#[derive(Clone, Debug)]
struct Piece {
    orig: Range<usize>,
    new_start: usize,
    /// Copied verbatim (byte offsets map one to one), or replaced by a marker.
    kept: bool,
}

/// The excerpt text with the map between its offsets and the original's.
#[derive(Debug)]
pub struct Excerpt<'a> {
    source: &'a Source,
    text: String,
    pieces: Vec<Piece>,
}

impl<'a> Excerpt<'a> {
    /// Cuts the lines of `source` longer than `LONG_LINE` to `HALF_WINDOW` characters
    /// either side of the first of `anchors` (byte offsets) on that line.
    pub fn new(source: &'a Source, anchors: &[usize]) -> Excerpt<'a> {
        let text = &source.text;
        let mut out = Excerpt {
            source,
            text: String::with_capacity(text.len().min(1 << 16)),
            pieces: Vec::new(),
        };
        let mut line_start = 0;
        for line in text.split_inclusive('\n') {
            let range = line_start..line_start + line.len();
            out.line(range.clone(), anchors);
            line_start = range.end;
        }
        out
    }

    /// Whether anything was cut or replaced.
    pub fn changed(&self) -> bool {
        self.pieces.iter().any(|p| !p.kept)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn line(&mut self, range: Range<usize>, anchors: &[usize]) {
        let line = &self.source.text[range.clone()];
        // The line break stays, so that line numbers stay right.
        let body = line.strip_suffix('\n').unwrap_or(line);
        let end = range.start + body.len();
        let chars = body.chars().count();
        if chars <= LONG_LINE {
            self.copy(range);
            return;
        }
        // Char offsets of the window, around the first anchor on this line.
        let anchor = anchors
            .iter()
            .copied()
            .find(|a| (range.start..=end).contains(a))
            .map_or(0, |a| body[..a - range.start].chars().count());
        let from = anchor.saturating_sub(HALF_WINDOW);
        let to = (anchor + HALF_WINDOW).min(chars);
        let byte =
            |c: usize| range.start + body.char_indices().nth(c).map_or(body.len(), |(i, _)| i);
        let (a, b) = (byte(from), byte(to));
        if a > range.start {
            self.mark(range.start..a, CUT);
        }
        self.copy(a..b);
        if b < end {
            self.mark(b..end, CUT);
        }
        self.copy(end..range.end);
    }

    /// Copies original text, replacing control characters other than tab and newline.
    fn copy(&mut self, range: Range<usize>) {
        let mut run = range.start;
        for (i, c) in self.source.text[range.clone()].char_indices() {
            let at = range.start + i;
            if c.is_control() && c != '\t' && c != '\n' && c != '\r' {
                self.verbatim(run..at);
                self.mark(at..at + c.len_utf8(), REPLACEMENT);
                run = at + c.len_utf8();
            }
        }
        self.verbatim(run..range.end);
    }

    fn verbatim(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.pieces.push(Piece {
            orig: range.clone(),
            new_start: self.text.len(),
            kept: true,
        });
        self.text.push_str(&self.source.text[range]);
    }

    fn mark(&mut self, range: Range<usize>, marker: &str) {
        self.pieces.push(Piece {
            orig: range,
            new_start: self.text.len(),
            kept: false,
        });
        self.text.push_str(marker);
    }

    /// The excerpt offset of an original offset (cut text maps to its marker).
    pub fn to_new(&self, orig: usize) -> usize {
        let i = self.pieces.partition_point(|p| p.orig.end <= orig);
        match self.pieces.get(i) {
            Some(p) if p.kept => p.new_start + orig.saturating_sub(p.orig.start),
            Some(p) => p.new_start,
            None => self.text.len(),
        }
    }

    /// The original offset of an excerpt offset.
    pub fn to_orig(&self, new: usize) -> usize {
        let i = self.pieces.partition_point(|p| p.new_start <= new);
        match i.checked_sub(1).map(|i| &self.pieces[i]) {
            Some(p) if p.kept => (p.orig.start + (new - p.new_start)).min(p.orig.end),
            Some(p) => p.orig.start,
            None => 0,
        }
    }
}

/// The excerpt as codespan sees it: its text, with locations in the original.
pub struct ExcerptFile<'a> {
    pub excerpt: &'a Excerpt<'a>,
    file: SimpleFile<&'a str, &'a str>,
}

impl<'a> ExcerptFile<'a> {
    pub fn new(excerpt: &'a Excerpt<'a>) -> ExcerptFile<'a> {
        ExcerptFile {
            excerpt,
            file: SimpleFile::new(excerpt.source.name.as_str(), excerpt.text.as_str()),
        }
    }
}

impl<'a> Files<'a> for ExcerptFile<'a> {
    type FileId = ();
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, _: ()) -> Result<&'a str, Error> {
        Ok(self.file.name())
    }

    fn source(&'a self, _: ()) -> Result<&'a str, Error> {
        Ok(self.file.source())
    }

    fn line_index(&'a self, id: (), byte_index: usize) -> Result<usize, Error> {
        self.file.line_index(id, byte_index)
    }

    fn line_range(&'a self, id: (), line_index: usize) -> Result<Range<usize>, Error> {
        self.file.line_range(id, line_index)
    }

    /// The `file:line:col` header: the column in the original line, not the cut one.
    fn location(&'a self, _: (), byte_index: usize) -> Result<Location, Error> {
        let (line_number, column_number) = self
            .excerpt
            .source
            .line_col(self.excerpt.to_orig(byte_index));
        Ok(Location {
            line_number,
            column_number,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_unchanged() {
        let s = Source::new("a", "ab\ncd\n");
        let e = Excerpt::new(&s, &[4]);
        assert!(!e.changed());
        assert_eq!(e.text(), "ab\ncd\n");
        assert_eq!(e.to_new(4), 4);
        assert_eq!(e.to_orig(4), 4);
    }

    #[test]
    fn long_lines_keep_a_window_around_the_anchor() {
        let line = format!("{}X{}", "a".repeat(100_000), "b".repeat(100_000));
        let s = Source::new("a", format!("first\n{line}\nlast\n"));
        let x = 6 + 100_000;
        let e = Excerpt::new(&s, &[x]);
        assert!(e.changed());
        let lines: Vec<&str> = e.text().lines().collect();
        assert_eq!(lines.len(), 3, "line numbers are kept");
        assert_eq!(lines[0], "first");
        assert_eq!(lines[2], "last");
        assert_eq!(lines[1], format!("…{}X{}…", "a".repeat(80), "b".repeat(79)));
        assert_eq!(&e.text()[e.to_new(x)..e.to_new(x) + 1], "X");
        assert_eq!(e.to_orig(e.to_new(x)), x);
        // Cut text maps to its marker; the end of the text to the end.
        assert_eq!(e.to_new(10), 6);
        assert_eq!(e.to_new(s.text.len()), e.text().len());
    }

    #[test]
    fn control_characters_are_replaced() {
        let s = Source::new("a", "a\u{0}\u{1b}[31mb\tc\n");
        let e = Excerpt::new(&s, &[]);
        assert_eq!(e.text(), "a\u{fffd}\u{fffd}[31mb\tc\n");
        assert_eq!(e.to_orig(e.to_new(3)), 3);
    }
}
