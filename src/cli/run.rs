//! `fnetc run`: a model forward on the reference interpreter, from `.npy` or IDX
//! inputs to a `.npy` output, with the top-1 class per sample for classifiers.

use super::compile::{compile, CompileArgs};
use super::inputs::{load_input, load_labels};
use super::{check_output_dir, CliError};
use crate::cost::CostBackend;
use crate::eval::Options;
use crate::io::artifact::read_artifact;
use crate::io::npy::write_npy;
use crate::io::weights::read_weights;
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::passes::CompileMode;
use crate::runtime::{check_store, run, ParamStore, RunError, RunOptions};
use crate::tensor::{Scalar, Tensor};
use rustfft::FftNum;
use std::path::{Path, PathBuf};

pub struct RunArgs {
    /// A `.fnet` model, or a compiled `.fnc` artifact.
    pub model: PathBuf,
    /// Required unless `model` is an artifact with bound weights.
    pub weights: Option<PathBuf>,
    pub input: PathBuf,
    pub range: Option<(Option<usize>, Option<usize>)>,
    pub labels: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub options: Options,
    pub f64: bool,
    /// Run the elaborated graph without the optimising passes (`-O0`).
    pub unoptimised: bool,
    /// Where the forward runs.
    pub backend: RunBackend,
}

/// The execution backend of `fnetc run`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunBackend {
    /// The reference interpreter.
    #[default]
    Reference,
    /// Generated OpenCL kernels on the chosen device.
    OpenCl(crate::opencl::DeviceSel),
}

/// What a run printed, for tests.
pub struct RunSummary {
    pub predictions: Vec<usize>,
    pub accuracy: Option<f64>,
    pub output_shape: Vec<usize>,
}

/// Runs the model. A `.fnet` model is compiled for the backend it runs on: with the
/// input's batch, and with the OpenCL cost table of the device's kind when on OpenCL
/// (so the device is opened first).
pub fn run_model(args: &RunArgs) -> Result<RunSummary, CliError> {
    if let Some(out) = &args.output {
        check_output_dir(out)?;
    }
    if let RunBackend::OpenCl(device) = args.backend {
        if args.f64 {
            return Err(RunError::new("the OpenCL backend computes in f32 only")
                .hint("drop --f64, or use --backend reference")
                .into());
        }
        let ctx = open_device(args, device)?;
        let (graph, store, input) = model_and_input(args, CostBackend::opencl(ctx.info.is_gpu))?;
        let outputs = crate::opencl::run_graph(&ctx, &graph, &store, &[input.cast()])?;
        return summarise(args, &outputs[0]);
    }
    let (graph, store, input) = model_and_input(args, CostBackend::Reference)?;
    if args.f64 {
        let store = store.into_iter().map(|(k, v)| (k, v.cast())).collect();
        forward::<f64>(args, &graph, &store, input)
    } else {
        forward::<f32>(args, &graph, &store, input.cast())
    }
}

/// The model (compiled, or the artifact as it is), its weights and the input.
fn model_and_input(
    args: &RunArgs,
    cost: CostBackend,
) -> Result<(Graph, ParamStore<f32>, Tensor<f64>), CliError> {
    if is_artifact(&args.model) {
        let (graph, store) = load_artifact(args)?;
        let input = load_input(&args.input, args.range)?;
        let batch = input.shape.first().copied().unwrap_or(1) as u64;
        super::memory::guard_artifact(&graph, crate::runtime::budget::Need::Run { batch })?;
        return Ok((graph, store, input));
    }
    // The weights file is checked before the (possibly large) input is read.
    let weights = weights_for_source(args)?;
    let input = load_input(&args.input, args.range)?;
    let batch = input.shape.first().copied().unwrap_or(1) as u64;
    let (graph, store) = compile_for_run(args, weights, batch, cost)?;
    Ok((graph, store, input))
}

/// `.fnc` files are compiled artifacts; anything else is read as `.fnet` source.
pub fn is_artifact(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "fnc")
}

fn load_artifact(args: &RunArgs) -> Result<(Graph, ParamStore<f32>), CliError> {
    let artifact = read_artifact(&args.model)?;
    let model = args.model.display();
    if args.options.slot_config.is_some() || !args.options.overrides.is_empty() {
        return Err(RunError::new(format!(
            "`{model}` is compiled: --config and --set cannot change it"
        ))
        .hint("pass them to fnetc compile, or run the .fnet model")
        .into());
    }
    let store = match (artifact.weights, &args.weights) {
        (Some(bound), None) => bound,
        (Some(_), Some(w)) => return Err(RunError::new(format!(
            "`{model}` has weights bound at compile time; it cannot run with `{}`",
            w.display()
        ))
        .hint(
            "passes may have folded the bound weights into constants; compile again with --weights",
        )
        .into()),
        (None, Some(w)) => {
            without_compiled_constants(&artifact.graph, read_weights(w)?.tensors, w)?
        }
        (None, None) => {
            return Err(
                RunError::new(format!("`{model}` was compiled without weights"))
                    .hint("pass --weights W.safetensors, or compile with --weights")
                    .into(),
            )
        }
    };
    let file = args.weights.as_ref().unwrap_or(&args.model);
    check_store(&artifact.graph, &store, &file.display().to_string())?;
    Ok((artifact.graph, store))
}

/// Frozen tensors an artifact compiled without weights holds as seeded constants
/// (`materialize-frozen`): a weights file from `fnetc init` still carries them. They
/// are dropped when they equal the constant, and refused when they differ, since the
/// artifact would silently ignore them.
fn without_compiled_constants(
    graph: &Graph,
    mut store: ParamStore<f32>,
    file: &Path,
) -> Result<ParamStore<f32>, CliError> {
    for node in graph.g.node_weights() {
        let Op::Const { value, .. } = &node.op else {
            continue;
        };
        let Some(given) = store.remove(&node.name) else {
            continue;
        };
        if given.shape != value.shape || given.data != value.data {
            return Err(RunError::new(format!(
                "`{}` in `{}` differs from the frozen value compiled into the artifact",
                node.name,
                file.display()
            ))
            .hint("compile the artifact with these weights: fnetc compile MODEL -w W -o model.fnc")
            .into());
        }
    }
    Ok(store)
}

/// The weights a `.fnet` model needs.
fn weights_for_source(args: &RunArgs) -> Result<&PathBuf, CliError> {
    if args.model.extension().is_some_and(|e| e == "safetensors") {
        return Err(RunError::new(format!(
            "`{}` is a weights file, not a model",
            args.model.display()
        ))
        .hint("the model comes first: fnetc run MODEL.fnet --weights W.safetensors -i INPUT")
        .into());
    }
    args.weights.as_ref().ok_or_else(|| {
        RunError::new(format!("`{}` needs weights", args.model.display()))
            .hint("pass --weights W.safetensors (make one with fnetc init)")
            .into()
    })
}

/// Compiles the `.fnet` model for inference with its weights bound, as `fnetc compile
/// --weights` would (or not at all with `-O0`), costed at the input's batch on `cost`.
fn compile_for_run(
    args: &RunArgs,
    weights: &Path,
    batch: u64,
    cost: CostBackend,
) -> Result<(Graph, ParamStore<f32>), CliError> {
    let compiled = compile(&CompileArgs {
        model: args.model.clone(),
        options: args.options.clone(),
        mode: CompileMode::Inference,
        passes: args.unoptimised.then(Vec::new),
        print_after: Vec::new(),
        verbose: false,
        weights: Some(weights.to_path_buf()),
        batch: batch.max(1),
        cost_backend: cost,
    })?;
    let store = compiled.ctx.weights.unwrap_or_default();
    Ok((compiled.graph, store))
}

fn forward<T: Scalar + FftNum>(
    args: &RunArgs,
    graph: &Graph,
    store: &ParamStore<T>,
    input: Tensor<T>,
) -> Result<RunSummary, CliError> {
    let result = run(graph, store, &[input], &RunOptions::default())?;
    summarise(args, &result.outputs[0])
}

/// Opens the device, probing for a platform first.
fn open_device(
    args: &RunArgs,
    device: crate::opencl::DeviceSel,
) -> Result<crate::opencl::ClContext, CliError> {
    // Compiled artifacts keep their programs beside them; source models use the cache.
    let cache = if is_artifact(&args.model) {
        Some(args.model.with_extension("fnc.clcache"))
    } else {
        crate::opencl::default_cache_dir()
    };
    Ok(crate::opencl::ClContext::new(device, cache)?)
}

fn summarise<T: Scalar>(args: &RunArgs, out: &Tensor<T>) -> Result<RunSummary, CliError> {
    if let Some(path) = &args.output {
        write_npy(path, out)?;
    }
    let predictions = if out.ndim() == 2 {
        argmax_rows(out)
    } else {
        Vec::new()
    };
    let accuracy = match &args.labels {
        Some(path) if !predictions.is_empty() => {
            let labels = load_labels(path, args.range)?;
            if labels.len() != predictions.len() {
                return Err(RunError::new(format!(
                    "`{}` has {} labels for {} inputs",
                    path.display(),
                    labels.len(),
                    predictions.len()
                ))
                .into());
            }
            let right = labels
                .iter()
                .zip(&predictions)
                .filter(|(l, p)| l == p)
                .count();
            Some(right as f64 / labels.len().max(1) as f64)
        }
        _ => None,
    };
    Ok(RunSummary {
        predictions,
        accuracy,
        output_shape: out.shape.clone(),
    })
}

/// Index of the largest value in each row of `[N, K]`.
pub fn argmax_rows<T: Scalar>(t: &Tensor<T>) -> Vec<usize> {
    let k = t.shape[1].max(1);
    t.data
        .chunks(k)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0, row[0]),
                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                )
                .0
        })
        .collect()
}
