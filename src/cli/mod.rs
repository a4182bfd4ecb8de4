//! The `fnetc` commands that touch files: `init` and `run`. Each returns a `CliError`
//! that names the file and what went wrong; nothing the user had is overwritten unless
//! the command completed.

pub mod bench;
pub mod compile;
pub mod explain;
pub mod init;
pub mod inputs;
pub mod memory;
pub mod run;

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

/// Fails early when an output file's directory does not exist, before any work.
pub fn check_output_dir(path: &std::path::Path) -> Result<(), RunError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if !dir.is_dir() => Err(RunError::new(format!(
            "cannot write `{}`: directory `{}` does not exist",
            path.display(),
            dir.display()
        ))
        .hint(format!("create it first: mkdir -p {}", dir.display()))),
        _ => Ok(()),
    }
}
