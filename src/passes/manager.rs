//! The pass manager: runs a list of graph-to-graph passes, renumbers and verifies the
//! graph after every one (a failure names the pass), and lets the caller see the IR
//! and the time after each pass.

use crate::cost::CostTableId;
use crate::diag::Diagnostic;
use crate::ir::graph::{Graph, VerifyError};
use crate::ir::types::DType;
use crate::runtime::ParamStore;
use std::fmt;
use std::time::{Duration, Instant};

/// What the compiled graph is for: inference may fold weights into constants and use
/// running statistics; training must keep every parameter a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompileMode {
    Inference,
    Training,
}

/// One line of `fnetc compile --explain`: a layer and what a pass decided for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub layer: String,
    pub pass: &'static str,
    pub text: String,
}

/// State shared by the passes of one compilation.
pub struct PassContext {
    pub mode: CompileMode,
    /// Weights bound at compile time (inference): kernel networks and folds over them
    /// become constants.
    pub weights: Option<ParamStore<f32>>,
    /// The most rewrites one pass may make; a pass that keeps rewriting is a bug.
    pub rewrite_limit: usize,
    pub notes: Vec<Note>,
    /// Batch size for cost estimates and the memory plan (symbolic dims take it).
    pub batch: u64,
    /// Whose fitted cost table `choose-conv-algo` and `fold-bases` consult.
    pub cost_backend: CostTableId,
    /// The precision the graph will run in; constant folds compute in it (`fnetc run
    /// --f64` compiles with f64).
    pub precision: DType,
    /// An error in the user's program that a pass found (autodiff's E0801): the caller
    /// renders it against the source instead of reporting an internal error.
    pub diagnostic: Option<Diagnostic>,
}

impl PassContext {
    pub fn new(mode: CompileMode) -> PassContext {
        PassContext {
            mode,
            weights: None,
            rewrite_limit: 1_000_000,
            notes: Vec::new(),
            batch: 1,
            cost_backend: CostTableId::Reference,
            precision: DType::F32,
            diagnostic: None,
        }
    }

    pub fn note(&mut self, layer: impl Into<String>, pass: &'static str, text: impl Into<String>) {
        self.notes.push(Note {
            layer: layer.into(),
            pass,
            text: text.into(),
        });
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PassError {
    pub pass: String,
    pub message: String,
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pass `{}`: {}", self.pass, self.message)
    }
}

impl std::error::Error for PassError {}

/// A graph rewrite. `run` returns how many rewrites it made (0 = nothing changed).
pub trait Pass {
    fn name(&self) -> &'static str;
    /// One line for `fnetc compile --list-passes` and the docs.
    fn about(&self) -> &'static str;
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, String>;
}

/// What happened in one pass, for `-v` and `--print-after`.
pub struct PassRecord<'g> {
    pub name: &'static str,
    pub rewrites: usize,
    pub elapsed: Duration,
    pub graph: &'g Graph,
}

pub struct PassManager {
    pub passes: Vec<Box<dyn Pass>>,
    /// The mode a default pipeline was built for; it refuses a context of the other
    /// mode. `None` (a pipeline named pass by pass) runs in either.
    pub mode: Option<CompileMode>,
}

impl PassManager {
    pub fn new(passes: Vec<Box<dyn Pass>>) -> PassManager {
        PassManager { passes, mode: None }
    }

    /// A pipeline that runs only under a context of `mode`.
    pub fn for_mode(passes: Vec<Box<dyn Pass>>, mode: CompileMode) -> PassManager {
        PassManager {
            passes,
            mode: Some(mode),
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Puts `pass` right after the pass named `after` (the autodiff pass goes after
    /// `pipeline::AUTODIFF_AFTER` in the training pipeline).
    pub fn insert_after(&mut self, after: &str, pass: Box<dyn Pass>) -> Result<(), String> {
        let i = (self.passes.iter().position(|p| p.name() == after))
            .ok_or_else(|| format!("no pass `{after}` in {}", self.names().join(", ")))?;
        self.passes.insert(i + 1, pass);
        Ok(())
    }

    /// Runs every pass in order; `observe` sees the graph after each.
    pub fn run(
        &self,
        graph: &mut Graph,
        ctx: &mut PassContext,
        observe: &mut dyn FnMut(&PassRecord<'_>),
    ) -> Result<(), PassError> {
        if let Some(mode) = self.mode.filter(|&m| m != ctx.mode) {
            return Err(PassError {
                pass: "pipeline".into(),
                message: format!(
                    "built for {mode:?} but the context compiles for {:?}",
                    ctx.mode
                ),
            });
        }
        for pass in &self.passes {
            let start = Instant::now();
            let err = |message: String| PassError {
                pass: pass.name().to_string(),
                message,
            };
            let rewrites = pass.run(graph, ctx).map_err(err)?;
            if rewrites > ctx.rewrite_limit {
                return Err(err(format!(
                    "made {rewrites} rewrites, over the limit of {}",
                    ctx.rewrite_limit
                )));
            }
            graph
                .compact()
                .and_then(|_| graph.verify())
                .map_err(|e: VerifyError| err(format!("left an invalid graph: {e}")))?;
            observe(&PassRecord {
                name: pass.name(),
                rewrites,
                elapsed: start.elapsed(),
                graph,
            });
        }
        Ok(())
    }
}
