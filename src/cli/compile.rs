//! `fnetc compile`: elaborate, run the pass pipeline, print the IR (after chosen passes
//! or at the end), and report pass timings.

use super::CliError;
use crate::cost::CostTableId;
use crate::diag::Report;
use crate::driver::compile_file;
use crate::eval::Options;
use crate::io::artifact::{write_artifact, ArtifactHeader, Provenance};
use crate::ir::graph::Graph;
use crate::ir::print::print_graph;
use crate::ir::types::DType;
use crate::passes::pipeline::{from_names, pipeline_for};
use crate::passes::{CompileMode, PassContext, PassRecord};
use crate::runtime::budget::Need;
use crate::runtime::params::fnv1a;
use crate::runtime::RunError;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub struct CompileArgs {
    pub model: PathBuf,
    pub options: Options,
    pub mode: CompileMode,
    /// `None` runs the default pipeline; `Some(vec![])` runs nothing (`-O0`).
    pub passes: Option<Vec<String>>,
    /// Pass names after which to print the IR; `all` prints after each.
    pub print_after: Vec<String>,
    pub verbose: bool,
    /// Weights to bind at compile time (inference): they are checked against the model
    /// and the passes may fold them into constants.
    pub weights: Option<PathBuf>,
    /// Batch size for the memory plan and cost estimates.
    pub batch: u64,
    /// Whose fitted cost table picks each conv's algorithm.
    pub cost_backend: CostTableId,
    /// The precision the graph will run in, for constant folds.
    pub precision: DType,
}

pub struct Compiled {
    pub graph: Graph,
    pub ctx: PassContext,
    /// Everything `--print-after` asked for, in order.
    pub printed: String,
    /// `-v`: one line per pass with its time and rewrite count.
    pub timings: String,
    /// How it was made, for artifacts.
    pub provenance: Provenance,
}

pub fn compile(args: &CompileArgs) -> Result<Compiled, CliError> {
    let (source, module) = compile_file(&args.model, &args.options)?;
    crate::driver::eprint_warnings(&source, &module);
    let manager = match &args.passes {
        None => pipeline_for(args.mode, module.recipe.as_ref())
            .map_err(|e| super::loss_report(&source, &e))?,
        Some(names) => from_names(names).map_err(RunError::new)?,
    };
    let known = manager.names();
    for p in &args.print_after {
        if p != "all" && !known.contains(&p.as_str()) {
            let e = RunError::new(format!(
                "--print-after {p}: no such pass in this pipeline ({})",
                known.join(", ")
            ));
            let training_only = p == "autodiff" && args.mode == CompileMode::Inference;
            return Err(if training_only {
                e.hint("the autodiff pass runs in training compilations: add --training")
            } else {
                e
            }
            .into());
        }
    }
    // Bound weights make the passes fold kernels, as a run would at this batch.
    let need = match &args.weights {
        Some(_) => Need::Run { batch: args.batch },
        None => Need::Compile,
    };
    super::memory::guard(&source, &module.graph, need)?;
    let mut graph = module.graph;
    let mut ctx = PassContext::new(args.mode);
    ctx.batch = args.batch.max(1);
    ctx.cost_backend = args.cost_backend;
    ctx.precision = args.precision;
    if let Some(path) = &args.weights {
        ctx.weights = Some(super::read_bound_weights(&graph, path)?);
    }
    let (mut printed, mut timings) = (String::new(), String::new());
    let mut observe = |r: &PassRecord<'_>| {
        if args.print_after.iter().any(|p| p == "all" || p == r.name) {
            let _ = writeln!(
                printed,
                "// IR after pass `{}` ({} rewrites)",
                r.name, r.rewrites
            );
            printed.push_str(&print_graph(r.graph));
        }
        if args.verbose {
            let _ = writeln!(
                timings,
                "{:<20} {:>9.3} ms  {:>6} rewrites  {:>6} nodes",
                r.name,
                r.elapsed.as_secs_f64() * 1e3,
                r.rewrites,
                r.graph.g.node_count()
            );
        }
    };
    let ran = manager.run(&mut graph, &mut ctx, &mut observe);
    if let Err(e) = ran {
        // A pass that refuses the user's program (autodiff: no gradient through a
        // layer) says where; anything else is a bug in a pass.
        return Err(match ctx.diagnostic.take() {
            Some(d) => Report {
                source,
                diagnostics: vec![d],
            }
            .into(),
            None => RunError::new(format!("internal compiler error in {e}"))
                .hint("this is a bug in fnetc; please report it with the model")
                .into(),
        });
    }
    let provenance = Provenance {
        source: args.model.display().to_string(),
        source_hash: format!("{:016x}", fnv1a(source.text.as_bytes())),
        mode: args.mode,
        slot_config: args.options.slot_config.clone(),
        overrides: args.options.overrides.clone(),
        passes: known.iter().map(|p| p.to_string()).collect(),
    };
    Ok(Compiled {
        graph,
        ctx,
        printed,
        timings,
        provenance,
    })
}

/// The files a compilation reads, which its `-o` must not overwrite.
fn inputs(args: &CompileArgs) -> Vec<&Path> {
    let mut inputs = vec![args.model.as_path()];
    inputs.extend(args.weights.as_deref());
    inputs
}

/// Refuses an artifact path that is missing its directory or names an input, before
/// the compilation runs.
pub fn check_compiled_output(args: &CompileArgs, path: &Path) -> Result<(), CliError> {
    Ok(crate::io::check_output(path, &inputs(args))?)
}

/// Writes `compiled` as an artifact at `path`. Refuses to write over the model or the
/// weights it was compiled from (see [`crate::io::output`]).
pub fn write_compiled(
    compiled: &Compiled,
    args: &CompileArgs,
    path: &Path,
) -> Result<ArtifactHeader, CliError> {
    Ok(write_artifact(
        path,
        &inputs(args),
        &compiled.graph,
        compiled.provenance.clone(),
        compiled.ctx.weights.as_ref(),
    )?)
}
