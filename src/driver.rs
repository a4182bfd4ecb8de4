//! Front-end entry points shared by the CLI and tests: bytes to a checked module, with
//! every failure rendered against its source.

use crate::diag::{Diagnostic, Report, Source, Span};
use crate::eval::{elaborate, Module, Options};
use crate::syntax::parse_program;
use crate::syntax::parser::MAX_SOURCE_BYTES;
use std::path::Path;

/// Compiles source bytes. Non-UTF-8 input is an error pointing at the first bad byte.
pub fn compile_bytes(
    name: &str,
    bytes: &[u8],
    options: &Options,
) -> Result<(Source, Module), Report> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(err) => {
            let valid = err.valid_up_to();
            let source = Source::new(name, String::from_utf8_lossy(bytes).into_owned());
            let d = Diagnostic::at(
                "E0005",
                Span::new(valid, valid + 1),
                "the file is not valid UTF-8",
                format!("invalid byte at offset {valid}"),
            )
            .hint("save the file as UTF-8");
            return Err(Report {
                source,
                diagnostics: vec![d],
            });
        }
    };
    compile_str(name, &text, options)
}

pub fn compile_str(name: &str, text: &str, options: &Options) -> Result<(Source, Module), Report> {
    // Editors on Windows may start UTF-8 files with a byte-order mark; it is no token.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let source = Source::new(name, text);
    let result = parse_program(text).and_then(|program| elaborate(&program, options));
    match result {
        Ok(module) => Ok((source, module)),
        Err(d) => Err(Report {
            source,
            diagnostics: vec![d],
        }),
    }
}

/// Reads and compiles a `.fnet` file; a missing or unreadable file is a report too.
pub fn compile_file(path: &Path, options: &Options) -> Result<(Source, Module), Report> {
    let name = path.display().to_string();
    match read_bounded(path) {
        // Detected first: a weights file or artifact is often larger than a source.
        Ok(bytes) => match detect_non_source(path, &bytes) {
            Some(d) => Err(Report {
                source: Source::new(name, ""),
                diagnostics: vec![d],
            }),
            None if bytes.len() > MAX_SOURCE_BYTES => Err(Report {
                source: Source::new(name.clone(), ""),
                diagnostics: vec![Diagnostic::new(
                    "E0002",
                    format!("`{name}` is larger than {MAX_SOURCE_BYTES} bytes, the limit for a model source"),
                )
                .hint("check that this is a .fnet file; split a larger model")],
            }),
            None => compile_bytes(&name, &bytes, options),
        },
        Err(err) => Err(Report {
            source: Source::new(name.clone(), ""),
            diagnostics: vec![
                Diagnostic::new("E0006", format!("cannot read `{name}`: {err}"))
                    .hint("check the path; model files end in .fnet"),
            ],
        }),
    }
}

/// A file fnetc itself writes or reads as data, given where a `.fnet` model belongs:
/// recognised by its magic bytes, and named, instead of "not valid UTF-8" and a dump
/// of its binary header.
pub fn detect_non_source(path: &Path, bytes: &[u8]) -> Option<Diagnostic> {
    let name = path.display();
    let (what, hint) = if let Some(header) = safetensors_header(bytes) {
        let artifact = header.windows(15).any(|w| w == b"\"fnet.artifact\"");
        if artifact {
            (
                "a compiled artifact (.fnc)",
                format!("run it with fnetc run {name} -i INPUT; check, compile and bench take the .fnet model it was compiled from"),
            )
        } else {
            (
                "a safetensors weights file",
                "give the .fnet model first and the weights with --weights, e.g. fnetc compile MODEL.fnet --weights W.safetensors".to_string(),
            )
        }
    } else if bytes.starts_with(b"\x93NUMPY") {
        (
            "a NumPy array (.npy)",
            "arrays are inputs or labels: fnetc run MODEL.fnet -w W.safetensors -i X.npy"
                .to_string(),
        )
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        (
            "gzip-compressed data",
            "IDX data sets are inputs: fnetc run MODEL.fnet -w W.safetensors -i FILE.gz; \
             a compressed model must be unpacked first"
                .to_string(),
        )
    } else {
        return None;
    };
    Some(
        Diagnostic::new(
            "E0006",
            format!("`{name}` is {what}, not a .fnet model source file"),
        )
        .hint(hint),
    )
}

/// The JSON header of a safetensors file: an 8-byte little-endian length, then that
/// many bytes starting with `{`.
fn safetensors_header(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)?;
    header.starts_with(b"{").then_some(header)
}

/// Reads at most one byte more than a source may hold, so that `/dev/zero` or a huge
/// file is refused after 4 MiB instead of being read until memory runs out.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Prints a module's warnings on stderr, in colour on a terminal (as errors are).
pub fn eprint_warnings(source: &Source, module: &Module) {
    use std::io::IsTerminal;
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for w in &module.warnings {
        eprint!("{}", w.render_styled(source, color));
    }
}
