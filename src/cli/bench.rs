//! `fnetc bench`: times a model's forward on one backend. The model is compiled with
//! the default inference pipeline and its weights bound at compile time (the given
//! weights, or the seeded initial weights `fnetc init` would write), then run on a
//! fixed pseudo-random batch: a few warm-up runs, then `iters` timed ones. Throughput
//! uses the nominal flops of `crate::cost::flops::graph_flops`, the same count for
//! every backend.
//!
//! With `--training` a timed run is one training step instead: the model compiled by
//! the training pipeline (forward, the recipe's loss, backward), its parameters kept
//! as parameters, run in training mode on a fixed batch and fixed labels through the
//! same `Backend` interface; the outputs read back are the loss, every gradient and
//! the updated running statistics. The report adds the step's planned peak memory
//! (the memory plan of the training graph, `passes::memory_plan::planned_peak_bytes`)
//! and its measured peak: on the host the growth of the peak RSS over the first step
//! (`super::peak_rss`), on a device the bytes the prepared plan allocated.

use super::progress::{with_spinner, SPINNER_DELAY};
use super::CliError;
use crate::autodiff::{Autodiff, LABELS};
use crate::backend::BackendKind;
use crate::cost::flops::graph_flops;
use crate::cost::CostTableId;
use crate::diag::Report;
use crate::driver::compile_file;
use crate::eval::Options;
use crate::ir::types::Dim;
use crate::ir::Graph;
use crate::opencl::DeviceSel;
use crate::passes::memory_plan::plan;
use crate::passes::pipeline::{default_pipeline, pipeline_for, training_loss};
use crate::passes::{CompileMode, PassContext, PassManager};
use crate::runtime::budget::human;
use crate::runtime::Mode;
use crate::runtime::{initialise, ParamStore, RunError};
use crate::tensor::Tensor;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct BenchArgs {
    pub model: PathBuf,
    /// Weights to bind; the model's seeded initial weights when `None`.
    pub weights: Option<PathBuf>,
    pub options: Options,
    /// Where the forward runs: the backend, and the device (`None`: its default).
    pub backend: BackendKind,
    pub device: Option<DeviceSel>,
    pub batch: usize,
    /// Timed runs.
    pub iters: usize,
    /// Untimed runs first (program builds, first launches, caches).
    pub warmup: usize,
    /// Skip the optimising passes (`-O0`).
    pub unoptimised: bool,
    /// Time a training step (forward, loss, backward) instead of a forward.
    pub training: bool,
}

/// A training step's peak memory: planned and measured.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMemory {
    /// The memory plan's activation arena for the step, backward included.
    pub arena: u64,
    /// Weights and what is computed from them alone.
    pub weights: u64,
    /// What the step took: bytes, and how they were measured.
    pub measured: Option<(u64, &'static str)>,
}

impl StepMemory {
    /// The planned peak: the arena plus the weights.
    pub fn planned(&self) -> u64 {
        self.arena.saturating_add(self.weights)
    }
}

/// What a bench measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    pub batch: usize,
    /// Nominal flops of one forward of the whole batch.
    pub flops: u64,
    /// Compiling the model (passes).
    pub compile: Duration,
    /// Preparing the backend: lowering, program build (or cache load), uploads.
    pub prepare: Duration,
    /// Of `prepare`, the time a compiling backend (the JIT) spent compiling code.
    pub jit_compile: Option<Duration>,
    /// Every timed run, in order.
    pub times: Vec<Duration>,
    /// `Some` for a training step (`--training`): its peak memory.
    pub memory: Option<StepMemory>,
    /// A forward bench's measured peak: bytes, and how they were measured.
    pub forward_peak: Option<(u64, &'static str)>,
}

impl BenchReport {
    pub fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        match t.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => t[n / 2],
            n => (t[n / 2 - 1] + t[n / 2]) / 2,
        }
    }

    pub fn best(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }

    /// Samples per second and GFLOP/s at a run time of `t`.
    pub fn rates(&self, t: Duration) -> (f64, f64) {
        let s = t.as_secs_f64().max(1e-12);
        (self.batch as f64 / s, self.flops as f64 / s / 1e9)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = if self.memory.is_some() {
            ", training step: forward + loss + backward"
        } else {
            ""
        };
        writeln!(f, "model    {} (batch {}{step})", self.model, self.batch)?;
        writeln!(f, "backend  {}", self.backend)?;
        writeln!(
            f,
            "flops    {:.2} MFLOP per sample (nominal: 2 per conv/linear multiply-add, 1 per elementwise op)",
            self.flops as f64 / self.batch.max(1) as f64 / 1e6
        )?;
        if let Some(m) = &self.memory {
            writeln!(
                f,
                "memory   planned peak {} (activations {} + weights {}; {} bytes)",
                human(m.planned()),
                human(m.arena),
                human(m.weights),
                m.planned()
            )?;
            match m.measured {
                Some((bytes, how)) => writeln!(
                    f,
                    "memory   measured peak {} ({how}; {bytes} bytes)",
                    human(bytes)
                )?,
                None => writeln!(f, "memory   measured peak unknown (no /proc/self/status)")?,
            }
        }
        if let Some((bytes, how)) = self.forward_peak {
            writeln!(
                f,
                "memory   measured peak {} ({how}; {bytes} bytes)",
                human(bytes)
            )?;
        }
        write!(
            f,
            "prepare  compile {:.1} ms, backend {:.1} ms",
            self.compile.as_secs_f64() * 1e3,
            self.prepare.as_secs_f64() * 1e3
        )?;
        match self.jit_compile {
            Some(t) => writeln!(f, " (JIT compile {:.1} ms)", t.as_secs_f64() * 1e3)?,
            None => writeln!(f)?,
        }
        for (what, t) in [("median", self.median()), ("best", self.best())] {
            let (sps, gflops) = self.rates(t);
            writeln!(
                f,
                "{what:<8} {:>10.3} ms  {:>10.1} samples/s  {:>8.2} GFLOP/s  ({} runs)",
                t.as_secs_f64() * 1e3,
                sps,
                gflops,
                self.times.len()
            )?;
        }
        Ok(())
    }
}

/// The model checked against the memory budget at the bench batch, and its weights:
/// the given file's or the seeded initial ones.
fn load(
    args: &BenchArgs,
) -> Result<(crate::diag::Source, crate::eval::Module, ParamStore<f32>), CliError> {
    let (source, module) = compile_file(&args.model, &args.options)?;
    let batch = crate::runtime::budget::Need::Run {
        batch: args.batch as u64,
    };
    super::memory::guard(&source, &module.graph, batch)?;
    let store = match &args.weights {
        Some(path) => super::read_bound_weights(&module.graph, path)?,
        None => initialise::<f32>(&module.graph, module.graph.seed)?,
    };
    Ok((source, module, store))
}

/// Compiles for inference with `store` bound, as `fnetc compile --weights` does, with
/// `cost`'s table choosing conv algorithms.
pub fn compile_bound(
    args: &BenchArgs,
    cost: CostTableId,
) -> Result<(Graph, ParamStore<f32>), CliError> {
    let (_, module, store) = load(args)?;
    let mut graph = module.graph;
    let mut ctx = PassContext::new(CompileMode::Inference);
    ctx.batch = args.batch as u64;
    ctx.cost_backend = cost;
    ctx.weights = Some(store);
    if !args.unoptimised {
        default_pipeline(CompileMode::Inference)
            .run(&mut graph, &mut ctx, &mut |_| {})
            .map_err(|e| RunError::new(format!("internal compiler error in {e}")))?;
    }
    Ok((graph, ctx.weights.unwrap_or_default()))
}

/// Compiles for a training step by the training pipeline (the recipe's loss), with
/// `cost`'s table; returns the training graph, its parameters (the given weights or
/// the seeded initial ones) and the number of classes the labels index.
pub fn compile_training(
    args: &BenchArgs,
    cost: CostTableId,
) -> Result<(Graph, ParamStore<f32>, usize), CliError> {
    let (source, module, store) = load(args)?;
    let mut graph = module.graph;
    let classes = (graph.outputs.first())
        .and_then(|&o| graph.node(o).ty.shape.get(1).and_then(|d| d.known()))
        .unwrap_or(1) as usize;
    let mut ctx = PassContext::new(CompileMode::Training);
    ctx.batch = args.batch as u64;
    ctx.cost_backend = cost;
    let recipe = module.recipe.as_ref();
    let recipe_error = |e: crate::autodiff::AutodiffError| super::loss_report(&source, &e);
    let pipeline = if args.unoptimised {
        let loss = training_loss(recipe).map_err(recipe_error)?;
        PassManager::new(vec![Box::new(Autodiff { loss })])
    } else {
        pipeline_for(CompileMode::Training, recipe).map_err(recipe_error)?
    };
    if let Err(e) = pipeline.run(&mut graph, &mut ctx, &mut |_| {}) {
        return Err(match ctx.diagnostic.take() {
            Some(d) => Report {
                source,
                diagnostics: vec![d],
            }
            .into(),
            None => RunError::new(format!("internal compiler error in {e}")).into(),
        });
    }
    Ok((graph, store, classes))
}

/// The inputs of one training step: the model's input as [`bench_input`] makes it,
/// then the `labels` input autodiff adds, fixed classes in `0..classes`.
pub fn training_inputs(
    graph: &Graph,
    b: usize,
    classes: usize,
) -> Result<Vec<Tensor<f32>>, RunError> {
    let is_labels = |i: &petgraph::stable_graph::NodeIndex| matches!(&graph.node(*i).op, crate::ir::op::Op::Input { name } if name == LABELS);
    let [x, l] = graph.inputs[..] else {
        return Err(RunError::new(format!(
            "fnetc bench --training runs models with one input; `{}` has {}",
            graph.name,
            graph.inputs.len().saturating_sub(1)
        )));
    };
    if !is_labels(&l) {
        return Err(RunError::new(format!(
            "`{}` is not a training graph: its last input is not `{LABELS}`",
            graph.name
        )));
    }
    let data = (0..b)
        .map(|i| ((i * 7 + 3) % classes.max(1)) as f32)
        .collect();
    Ok(vec![
        input_for(graph, x, b)?,
        Tensor::from_vec(vec![b], data)?,
    ])
}

/// A deterministic input batch in [-1, 1): the model's one input with batch `b`.
pub fn bench_input(graph: &Graph, b: usize) -> Result<Tensor<f32>, RunError> {
    let [id] = graph.inputs[..] else {
        return Err(RunError::new(format!(
            "fnetc bench runs models with one input; `{}` has {}",
            graph.name,
            graph.inputs.len()
        )));
    };
    input_for(graph, id, b)
}

/// Input `id` of `graph` at batch `b`, filled with a fixed pattern in [-1, 1).
fn input_for(
    graph: &Graph,
    id: petgraph::stable_graph::NodeIndex,
    b: usize,
) -> Result<Tensor<f32>, RunError> {
    let node = graph.node(id);
    let shape = node
        .ty
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(n) => Some(*n as usize),
            Dim::Sym(_) if i == 0 => Some(b),
            Dim::Sym(_) | Dim::Dyn { .. } => None,
        })
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            RunError::new(format!(
                "input `{}` is {}: fnetc bench needs every size but the batch known",
                node.name, node.ty
            ))
        })?;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    Ok(Tensor::from_vec(shape, data)?)
}

/// A progress bar on stderr (indicatif draws it only on a terminal): long benches on
/// the reference backend take minutes.
pub fn progress_bar() -> impl FnMut(usize, usize) {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} runs, {elapsed}")
            .expect("a valid template")
            .progress_chars("#> "),
    );
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done == total {
            bar.finish();
        }
    }
}

/// Compiles, prepares and times `args.model`; `progress(done, total)` is called after
/// every run (warm-up included).
pub fn bench(
    args: &BenchArgs,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchReport, CliError> {
    if args.batch == 0 || args.iters == 0 {
        return Err(RunError::new("--batch and --iters must be at least 1").into());
    }
    // The backend is opened first: it (and its device's kind) picks the cost table.
    let backend = crate::backend::open(args.backend, args.device, &args.model)?;
    let cost = backend.cost_table();
    if args.training {
        return bench_training(args, backend.as_ref(), cost, progress);
    }
    let t0 = Instant::now();
    let (graph, store) = compile_bound(args, cost)?;
    let compile = t0.elapsed();
    let input = bench_input(&graph, args.batch)?;
    let flops = graph_flops(&graph, std::slice::from_ref(&input.shape))?;
    // The peak covers preparing and every run: what holding and running the model
    // takes, as tools/infer_peers.py measures ONNX Runtime's session and runs.
    let (timed, peak) = super::peak_rss::peak_growth(|| {
        let t1 = Instant::now();
        let preparing = format!("preparing `{}` for {}", graph.name, backend.kind().name());
        let mut prepared = with_spinner(SPINNER_DELAY, &preparing, || {
            backend.prepare(graph, store, std::slice::from_ref(&input.shape))
        })?;
        let prepare = t1.elapsed();
        let total = args.warmup + args.iters;
        let mut times = Vec::with_capacity(args.iters);
        for i in 0..total {
            let t = Instant::now();
            prepared.forward(std::slice::from_ref(&input))?;
            if i >= args.warmup {
                times.push(t.elapsed());
            }
            progress(i + 1, total);
        }
        Ok::<_, CliError>((
            prepare,
            prepared.compile_time(),
            times,
            prepared.device_bytes(),
        ))
    });
    let (prepare, jit_compile, times, device_bytes) = timed?;
    let forward_peak = match device_bytes {
        Some(bytes) => Some((bytes, "device buffers the prepared model holds")),
        None => peak.map(|(bytes, how)| {
            let how = match how {
                super::peak_rss::PeakMethod::ResetHighWaterMark => {
                    "growth of the peak RSS over preparing and the runs"
                }
                super::peak_rss::PeakMethod::HighWaterMarkGrowth => {
                    "growth of the unreset peak RSS over preparing and the runs"
                }
            };
            (bytes, how)
        }),
    };
    let backend = format!("{}, cost table {}", backend.device(), cost.name());
    Ok(BenchReport {
        model: args.model.display().to_string(),
        backend,
        batch: args.batch,
        flops,
        compile,
        prepare,
        jit_compile,
        times,
        memory: None,
        forward_peak,
    })
}

/// `bench` of a training step on `backend`, which must run training mode.
fn bench_training(
    args: &BenchArgs,
    backend: &dyn crate::backend::Backend,
    cost: CostTableId,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchReport, CliError> {
    if !backend.capabilities().training {
        return Err(RunError::new(format!(
            "the {} backend does not run training steps yet ({})",
            backend.kind().name(),
            backend.device()
        ))
        .hint("time the step on the reference interpreter: --backend reference")
        .into());
    }
    let t0 = Instant::now();
    let (graph, store, classes) = compile_training(args, cost)?;
    let compile = t0.elapsed();
    let inputs = training_inputs(&graph, args.batch, classes)?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let flops = graph_flops(&graph, &shapes)?;
    let summary = plan(&graph, args.batch as u64).summary;
    let t1 = Instant::now();
    let preparing = format!("preparing `{}` for {}", graph.name, backend.kind().name());
    let mut prepared = with_spinner(SPINNER_DELAY, &preparing, || {
        backend.prepare(graph, store, &shapes)
    })?;
    prepared.set_mode(Mode::Train)?;
    let prepare = t1.elapsed();
    let jit_compile = prepared.compile_time();
    let total = args.warmup + args.iters;
    let mut times = Vec::with_capacity(args.iters);
    let mut measured = None;
    for i in 0..total {
        let t = Instant::now();
        if i == 0 {
            // The first step's peak: what a step needs, before caches warm up.
            let (out, growth) = super::peak_rss::peak_growth(|| prepared.forward(&inputs));
            out?;
            measured = growth.map(|(bytes, how)| {
                let how = match how {
                    super::peak_rss::PeakMethod::ResetHighWaterMark => {
                        "growth of the peak RSS over the first step"
                    }
                    super::peak_rss::PeakMethod::HighWaterMarkGrowth => {
                        "growth of the unreset peak RSS over the first step"
                    }
                };
                (bytes, how)
            });
        } else {
            prepared.forward(&inputs)?;
        }
        if i >= args.warmup {
            times.push(t.elapsed());
        }
        progress(i + 1, total);
    }
    if let Some(bytes) = prepared.device_bytes() {
        measured = Some((bytes, "device buffers the prepared plan allocated"));
    }
    let backend = format!("{}, cost table {}", backend.device(), cost.name());
    Ok(BenchReport {
        model: args.model.display().to_string(),
        backend,
        batch: args.batch,
        flops,
        compile,
        prepare,
        jit_compile,
        times,
        forward_peak: None,
        memory: Some(StepMemory {
            arena: summary.arena_bytes,
            weights: summary.weight_bytes,
            measured,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ms: &[u64]) -> BenchReport {
        BenchReport {
            model: "m".into(),
            backend: "b".into(),
            batch: 4,
            flops: 8_000_000,
            compile: Duration::ZERO,
            prepare: Duration::ZERO,
            jit_compile: None,
            times: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            memory: None,
            forward_peak: None,
        }
    }

    #[test]
    fn median_best_and_rates() {
        let r = report(&[5, 1, 3]);
        assert_eq!(r.median(), Duration::from_millis(3));
        assert_eq!(r.best(), Duration::from_millis(1));
        let (sps, gflops) = r.rates(Duration::from_millis(2));
        assert!((sps - 2000.0).abs() < 1e-6);
        assert!((gflops - 4.0).abs() < 1e-9);
        assert_eq!(report(&[4, 1, 3, 2]).median(), Duration::from_micros(2500));
    }
}
