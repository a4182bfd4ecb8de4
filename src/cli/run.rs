//! `fnetc run`: a model forward on a backend (`crate::backend`), from `.npy` or IDX
//! inputs to a `.npy` output, with the top-1 class per sample for classifiers.

use super::compile::{compile, CompileArgs};
use super::inputs::load_labels;
use super::named_inputs::{load_inputs, order_inputs, InputArg};
use super::progress::{with_spinner, SPINNER_DELAY};
use super::CliError;
use crate::backend::BackendKind;
use crate::cost::CostTableId;
use crate::eval::Options;
use crate::io::artifact::read_artifact;
use crate::io::npy::npy_bytes;
use crate::io::weights::read_weights;
use crate::io::{check_output, write_output};
use crate::ir::op::Op;
use crate::ir::{DType, Graph};
use crate::opencl::DeviceSel;
use crate::passes::CompileMode;
use crate::runtime::{check_store, ParamStore, RunError};
use crate::tensor::{Scalar, Tensor};
use std::path::{Path, PathBuf};

pub struct RunArgs {
    /// A `.fnet` model, or a compiled `.fnc` artifact.
    pub model: PathBuf,
    /// Required unless `model` is an artifact with bound weights.
    pub weights: Option<PathBuf>,
    /// One file per model input (`-i FILE`, or `-i NAME=FILE` each).
    pub inputs: Vec<InputArg>,
    pub range: Option<(Option<usize>, Option<usize>)>,
    pub labels: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub options: Options,
    pub f64: bool,
    /// Run the elaborated graph without the optimising passes (`-O0`).
    pub unoptimised: bool,
    /// Where the forward runs: the backend, and the device (`None`: its default).
    pub backend: BackendKind,
    pub device: Option<DeviceSel>,
}

impl RunArgs {
    /// Every file the run reads, which `-o` must not overwrite.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.model.as_path()];
        files.extend(self.inputs.iter().map(|i| i.path.as_path()));
        files.extend(self.weights.as_deref());
        files.extend(self.labels.as_deref());
        files
    }
}

/// What a run printed, for tests.
pub struct RunSummary {
    pub predictions: Vec<usize>,
    pub accuracy: Option<f64>,
    pub output_shape: Vec<usize>,
}

/// Runs the model. The backend is opened first: a `.fnet` model is compiled for it,
/// with its cost table and the input's batch. The device goes to stderr, and a
/// spinner while preparing takes long (a cold OpenCL program build).
pub fn run_model(args: &RunArgs) -> Result<RunSummary, CliError> {
    if let Some(out) = &args.output {
        check_output(out, &args.files())?;
    }
    let backend = crate::backend::open(args.backend, args.device, &args.model)?;
    if args.f64 && !backend.capabilities().f64 {
        return Err(crate::backend::f32_only(backend.kind()).into());
    }
    eprintln!("running on {}", backend.device());
    let (graph, store, inputs) = model_and_inputs(args, backend.cost_table())?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let preparing = format!("preparing `{}` for {}", graph.name, backend.kind().name());
    if args.f64 {
        let store = store.into_iter().map(|(k, v)| (k, v.cast())).collect();
        let mut prepared = with_spinner(SPINNER_DELAY, &preparing, || {
            backend.prepare_f64(graph, store, &shapes)
        })?;
        summarise(args, &prepared.forward(&inputs)?[0])
    } else {
        let inputs: Vec<Tensor<f32>> = inputs.iter().map(Tensor::cast).collect();
        let mut prepared = with_spinner(SPINNER_DELAY, &preparing, || {
            backend.prepare(graph, store, &shapes)
        })?;
        summarise(args, &prepared.forward(&inputs)?[0])
    }
}

/// A model ready for a backend: graph, weights, and inputs in the graph's order.
type Loaded = (Graph, ParamStore<f32>, Vec<Tensor<f64>>);

/// The model (compiled, or the artifact as it is), its weights and the inputs.
fn model_and_inputs(args: &RunArgs, cost: CostTableId) -> Result<Loaded, CliError> {
    let model = args.model.display().to_string();
    if is_artifact(&args.model) {
        let (graph, store) = load_artifact(args)?;
        let inputs = order_inputs(load_inputs(&args.inputs, args.range)?, &graph, &model)?;
        let batch = inputs[0].shape.first().copied().unwrap_or(1) as u64;
        super::memory::guard_artifact(&graph, crate::runtime::budget::Need::Run { batch })?;
        return Ok((graph, store, inputs));
    }
    // The weights file is checked before the (possibly large) inputs are read.
    let weights = weights_for_source(args)?;
    let given = load_inputs(&args.inputs, args.range)?;
    let batch = given[0].1.shape.first().copied().unwrap_or(1) as u64;
    let (graph, store) = compile_for_run(args, weights, batch, cost)?;
    let inputs = order_inputs(given, &graph, &model)?;
    Ok((graph, store, inputs))
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
    super::warn_non_finite(file, &store);
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
    cost: CostTableId,
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
        precision: if args.f64 { DType::F64 } else { DType::F32 },
    })?;
    let store = compiled.ctx.weights.unwrap_or_default();
    Ok((compiled.graph, store))
}

/// Scores the output against the labels, then writes it: a failed check writes nothing.
fn summarise<T: Scalar>(args: &RunArgs, out: &Tensor<T>) -> Result<RunSummary, CliError> {
    let predictions = if out.ndim() == 2 {
        argmax_rows(out)
    } else {
        Vec::new()
    };
    let accuracy = match &args.labels {
        Some(path) if !predictions.is_empty() => {
            let labels = load_labels(path, args.range, out.shape[1])?;
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
    if let Some(path) = &args.output {
        let bytes = npy_bytes(out);
        write_output(path, &args.files(), |w| w.write_all(&bytes))?;
    }
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
