//! `fnetc compile`: elaborate, run the pass pipeline, print the IR (after chosen passes
//! or at the end), and report pass timings.

use super::CliError;
use crate::driver::compile_file;
use crate::eval::Options;
use crate::ir::graph::Graph;
use crate::ir::print::print_graph;
use crate::passes::pipeline::{default_pipeline, from_names};
use crate::passes::{CompileMode, PassContext, PassRecord};
use crate::runtime::RunError;
use std::fmt::Write;
use std::path::PathBuf;

pub struct CompileArgs {
    pub model: PathBuf,
    pub options: Options,
    pub mode: CompileMode,
    /// `None` runs the default pipeline; `Some(vec![])` runs nothing (`-O0`).
    pub passes: Option<Vec<String>>,
    /// Pass names after which to print the IR; `all` prints after each.
    pub print_after: Vec<String>,
    pub verbose: bool,
    /// `--weights`: bind these weights at compile time (checked against the model).
    pub weights: Option<PathBuf>,
}

pub struct Compiled {
    pub graph: Graph,
    pub ctx: PassContext,
    /// Everything `--print-after` asked for, in order.
    pub printed: String,
    /// `-v`: one line per pass with its time and rewrite count.
    pub timings: String,
}

pub fn compile(args: &CompileArgs) -> Result<Compiled, CliError> {
    let (_, module) = compile_file(&args.model, &args.options)?;
    let manager = match &args.passes {
        None => default_pipeline(args.mode),
        Some(names) => from_names(names).map_err(RunError::new)?,
    };
    let known = manager.names();
    for p in &args.print_after {
        if p != "all" && !known.contains(&p.as_str()) {
            return Err(RunError::new(format!(
                "--print-after {p}: no such pass in this pipeline ({})",
                known.join(", ")
            ))
            .into());
        }
    }
    let mut graph = module.graph;
    let mut ctx = PassContext::new(args.mode);
    if let Some(path) = &args.weights {
        let file = crate::io::weights::read_weights::<f32>(path)?;
        crate::runtime::check_store(&graph, &file.tensors, &path.display().to_string())?;
        ctx.weights = Some(file.tensors);
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
    manager
        .run(&mut graph, &mut ctx, &mut observe)
        .map_err(|e| {
            RunError::new(format!("internal compiler error in {e}"))
                .hint("this is a bug in fnetc; please report it with the model")
        })?;
    Ok(Compiled {
        graph,
        ctx,
        printed,
        timings,
    })
}
