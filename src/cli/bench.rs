//! `fnetc bench`: times a model's forward on one backend. The model is compiled with
//! the default inference pipeline and its weights bound at compile time (the given
//! weights, or the seeded initial weights `fnetc init` would write), then run on a
//! fixed pseudo-random batch: a few warm-up runs, then `iters` timed ones. Throughput
//! uses the nominal flops of `crate::cost::flops::graph_flops`, the same count for
//! every backend.

use super::progress::{with_spinner, SPINNER_DELAY};
use super::CliError;
use crate::backend::BackendKind;
use crate::cost::flops::graph_flops;
use crate::cost::CostTableId;
use crate::driver::compile_file;
use crate::eval::Options;
use crate::ir::types::Dim;
use crate::ir::Graph;
use crate::opencl::DeviceSel;
use crate::passes::pipeline::default_pipeline;
use crate::passes::{CompileMode, PassContext};
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
    /// Every timed run, in order.
    pub times: Vec<Duration>,
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
        writeln!(f, "model    {} (batch {})", self.model, self.batch)?;
        writeln!(f, "backend  {}", self.backend)?;
        writeln!(
            f,
            "flops    {:.2} MFLOP per sample (nominal: 2 per conv/linear multiply-add, 1 per elementwise op)",
            self.flops as f64 / self.batch.max(1) as f64 / 1e6
        )?;
        writeln!(
            f,
            "prepare  compile {:.1} ms, backend {:.1} ms",
            self.compile.as_secs_f64() * 1e3,
            self.prepare.as_secs_f64() * 1e3
        )?;
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

/// Compiles for inference with `store` bound, as `fnetc compile --weights` does, with
/// `cost`'s table choosing conv algorithms.
pub fn compile_bound(
    args: &BenchArgs,
    cost: CostTableId,
) -> Result<(Graph, ParamStore<f32>), CliError> {
    let (source, module) = compile_file(&args.model, &args.options)?;
    let batch = crate::runtime::budget::Need::Run {
        batch: args.batch as u64,
    };
    super::memory::guard(&source, &module.graph, batch)?;
    let mut graph = module.graph;
    let store = match &args.weights {
        Some(path) => super::read_bound_weights(&graph, path)?,
        None => initialise::<f32>(&graph, graph.seed)?,
    };
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

/// A deterministic input batch in [-1, 1): the model's one input with batch `b`.
pub fn bench_input(graph: &Graph, b: usize) -> Result<Tensor<f32>, RunError> {
    let [id] = graph.inputs[..] else {
        return Err(RunError::new(format!(
            "fnetc bench runs models with one input; `{}` has {}",
            graph.name,
            graph.inputs.len()
        )));
    };
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
    let t0 = Instant::now();
    let (graph, store) = compile_bound(args, cost)?;
    let compile = t0.elapsed();
    let input = bench_input(&graph, args.batch)?;
    let flops = graph_flops(&graph, std::slice::from_ref(&input.shape))?;
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
    let backend = format!("{}, cost table {}", backend.device(), cost.name());
    Ok(BenchReport {
        model: args.model.display().to_string(),
        backend,
        batch: args.batch,
        flops,
        compile,
        prepare,
        times,
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
            times: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
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
