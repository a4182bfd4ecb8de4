//! The `fnetc` commands that touch files: `init`, `run`, `train` and more. Each returns a `CliError`
//! that names the file and what went wrong. Every file a command writes goes through
//! [`crate::io::write_output`]: never over one of its inputs, atomically, and only
//! once the command has succeeded.

pub mod bench;
pub mod compile;
pub mod explain;
pub mod init;
pub mod inputs;
pub mod memory;
pub mod named_inputs;
pub mod peak_rss;
pub mod plot;
pub mod progress;
pub mod run;
pub mod run_flags;
pub mod search;
pub mod train;

use crate::diag::Report;
use crate::runtime::RunError;
use std::fmt;

#[derive(Debug)]
pub enum CliError {
    /// A problem in the .fnet program, rendered against its source.
    Program(Report),
    /// A problem with weights, inputs or outputs.
    Run(RunError),
}

impl From<Report> for CliError {
    fn from(r: Report) -> CliError {
        CliError::Program(r)
    }
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> CliError {
        CliError::Run(e)
    }
}

impl From<crate::io::IoError> for CliError {
    fn from(e: crate::io::IoError) -> CliError {
        CliError::Run(e.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Program(r) => write!(f, "{}", r.render()),
            CliError::Run(e) => write!(f, "error: {e}"),
        }
    }
}

/// Reads the `f32` weights at `path` to bind to `graph`: every parameter present with
/// its shape, and a warning on stderr for each non-finite value.
pub fn read_bound_weights(
    graph: &crate::ir::Graph,
    path: &std::path::Path,
) -> Result<crate::runtime::ParamStore<f32>, CliError> {
    let file = crate::io::weights::read_weights::<f32>(path)?;
    crate::runtime::check_store(graph, &file.tensors, &path.display().to_string())?;
    warn_non_finite(path, &file.tensors);
    Ok(file.tensors)
}

/// Prints warnings about the weights at `path` (NaN or infinite values) on stderr: the
/// run goes on, but its outputs would be NaN without a word otherwise.
pub fn warn_non_finite<T: crate::tensor::Scalar>(
    path: &std::path::Path,
    tensors: &std::collections::BTreeMap<String, crate::tensor::Tensor<T>>,
) {
    for line in crate::io::weights::non_finite_warnings(path, tensors) {
        eprintln!("{line}");
    }
}

/// `--set NAME=VALUE`, as every command that elaborates a model takes it.
pub fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

/// A training loss the recipe cannot give (`passes::pipeline::training_loss`) as a
/// report against the model's source. Such an error belongs to no layer: it is
/// pointed at the `regularizers` field of the `train` section where the source has
/// one.
pub fn loss_report(source: &crate::diag::Source, e: &crate::autodiff::AutodiffError) -> Report {
    let text = &source.text;
    let field = text
        .find("train")
        .and_then(|t| text[t..].find("regularizers").map(|r| t + r));
    let d = match field {
        Some(at) if e.span == crate::diag::Span::default() => {
            let span = crate::diag::Span::new(at, at + "regularizers".len());
            let d = crate::diag::Diagnostic::at("E0801", span, &e.message, "in this recipe");
            match &e.hint {
                Some(h) => d.hint(h.clone()),
                None => d,
            }
        }
        _ => e.to_diagnostic(),
    };
    Report {
        source: source.clone(),
        diagnostics: vec![d],
    }
}
