//! `fnetc run`: a model forward on the reference interpreter, from `.npy` or IDX
//! inputs to a `.npy` output, with the top-1 class per sample for classifiers.

use super::inputs::{load_input, load_labels};
use super::{check_output_dir, CliError};
use crate::driver::compile_file;
use crate::eval::Options;
use crate::io::npy::write_npy;
use crate::io::weights::read_weights;
use crate::runtime::{check_store, run, RunError, RunOptions};
use crate::tensor::{Scalar, Tensor};
use rustfft::FftNum;
use std::path::PathBuf;

pub struct RunArgs {
    pub model: PathBuf,
    pub weights: PathBuf,
    pub input: PathBuf,
    pub range: Option<(Option<usize>, Option<usize>)>,
    pub labels: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub options: Options,
    pub f64: bool,
}

/// What a run printed, for tests.
pub struct RunSummary {
    pub predictions: Vec<usize>,
    pub accuracy: Option<f64>,
    pub output_shape: Vec<usize>,
}

pub fn run_model(args: &RunArgs) -> Result<RunSummary, CliError> {
    if let Some(out) = &args.output {
        check_output_dir(out)?;
    }
    let (_, module) = compile_file(&args.model, &args.options)?;
    let input = load_input(&args.input, args.range)?;
    if args.f64 {
        forward::<f64>(args, &module.graph, input)
    } else {
        forward::<f32>(args, &module.graph, input.cast())
    }
}

fn forward<T: Scalar + FftNum>(
    args: &RunArgs,
    graph: &crate::ir::Graph,
    input: Tensor<T>,
) -> Result<RunSummary, CliError> {
    let file = read_weights::<f32>(&args.weights)?;
    let store = file
        .tensors
        .into_iter()
        .map(|(k, v)| (k, v.cast::<T>()))
        .collect();
    check_store(graph, &store, &args.weights.display().to_string())?;
    let result = run(graph, &store, &[input], &RunOptions::default())?;
    let out = &result.outputs[0];
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
