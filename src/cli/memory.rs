//! The memory check every command makes before it allocates (see
//! `crate::runtime::budget`): errors point into the model's source when there is one.

use super::CliError;
use crate::diag::{Report, Source};
use crate::ir::Graph;
use crate::runtime::budget::{check, Limit, Need};
use crate::runtime::RunError;

/// Refuses `need` when it would take more than `FNET_MAX_MEMORY` (or the default limit).
pub fn guard(source: &Source, graph: &Graph, need: Need) -> Result<(), CliError> {
    guard_within(source, graph, need, &Limit::from_env()?)
}

/// `guard` with an explicit limit.
pub fn guard_within(
    source: &Source,
    graph: &Graph,
    need: Need,
    limit: &Limit,
) -> Result<(), CliError> {
    check(graph, need, limit).map(|_| ()).map_err(|d| {
        CliError::Program(Report {
            source: source.clone(),
            diagnostics: vec![*d],
        })
    })
}

/// `guard` for a compiled artifact, which keeps no source text: the error names the
/// layer by its path.
pub fn guard_artifact(graph: &Graph, need: Need) -> Result<(), CliError> {
    check(graph, need, &Limit::from_env()?)
        .map(|_| ())
        .map_err(|d| {
            let mut message = d.message.clone();
            if let Some(l) = d.labels.first() {
                message += &format!("\n  {}", l.message);
            }
            for n in &d.notes {
                message += &format!("\n  = {n}");
            }
            let e = RunError::new(message);
            match d.hint {
                Some(h) => e.hint(h),
                None => e,
            }
            .into()
        })
}
