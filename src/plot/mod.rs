//! `fnetc plot RUN_DIR`: PNG plots of a training run (see docs/training.md, "Plots").
//!
//! From `metrics.jsonl`: `loss.png`, `accuracy.png`, `kernel_sizes.png`,
//! `regularizers.png`. From `final.safetensors` (or the newest checkpoint, or the one
//! `--checkpoint` names) and the FlexConv kernels folded into `model.fnc` (or, without
//! it, into the recorded model compiled with those weights): `kernels_<layer>.png`. A plot whose data the run does not have is skipped with a
//! note rather than failing the others; a run directory with nothing to plot, a
//! damaged metrics line or an unknown `--layer` is an error.

pub mod canvas;
pub mod chart;
pub mod curves;
pub mod folded;
pub mod kernels;
pub mod records;
pub mod search;

use crate::runtime::RunError;
use std::path::{Path, PathBuf};

/// What to plot and where.
#[derive(Clone, Debug)]
pub struct PlotArgs {
    pub run: PathBuf,
    /// Defaults to `RUN_DIR/plots`.
    pub out: Option<PathBuf>,
    /// The kernel to draw (`conv1`, `conv1.weight`, or a FlexConv layer); default the
    /// first FlexConv, else the first stored kernel.
    pub layer: Option<String>,
    /// Draw the kernels from the checkpoint of this step rather than the final weights
    /// (or the newest checkpoint) and `model.fnc`.
    pub checkpoint: Option<u64>,
}

/// The files written and the plots skipped (with why).
#[derive(Clone, Debug, Default)]
pub struct PlotReport {
    pub written: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// The weights of checkpoint `step`, or an error listing the steps there are.
fn checkpoint_path(run: &Path, step: u64) -> Result<PathBuf, RunError> {
    let all = crate::train::checkpoint::list(run);
    if let Some((_, p)) = all.iter().find(|(s, _)| *s == step) {
        return Ok(p.clone());
    }
    let steps: Vec<String> = all.iter().map(|(s, _)| s.to_string()).collect();
    let dir = crate::train::checkpoint::dir(run);
    Err(RunError::new(format!(
        "--checkpoint {step}: {} holds no checkpoint of step {step}; {}",
        dir.display(),
        if steps.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has steps {}", steps.join(", "))
        }
    ))
    .hint("give one of the steps listed (a run keeps its last --keep checkpoints)"))
}

/// The weights to draw kernels from: `final.safetensors`, else the newest checkpoint.
pub fn weights_path(run: &Path) -> Option<PathBuf> {
    let fin = run.join("final.safetensors");
    if fin.is_file() {
        return Some(fin);
    }
    crate::train::checkpoint::list(run)
        .pop()
        .map(|(_, path)| path)
}

/// The files kernels are read from, for messages: the weights and/or `model.fnc`.
fn sources(weights: Option<&Path>, model: &Path) -> String {
    let mut files: Vec<String> = weights.iter().map(|w| w.display().to_string()).collect();
    if model.is_file() {
        files.push(model.display().to_string());
    }
    files.join(" and ")
}

/// Whether `a` was modified before `b` (false when either time is unknown).
fn older(a: &Path, b: Option<&Path>) -> bool {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (time(a), b.and_then(time)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// A file name made from a tensor name: letters, digits, `.`, `-` and `_` kept, the
/// rest `_`, so any name gives a plain file in the output directory.
pub fn file_stem(name: &str) -> String {
    let name = name.strip_suffix(".weight").unwrap_or(name);
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes every plot the run has data for.
pub fn plot(args: &PlotArgs) -> Result<PlotReport, RunError> {
    let run = &args.run;
    let hint = "give the directory a `fnetc train` run wrote (its --out)";
    match std::fs::metadata(run) {
        Err(e) => {
            return Err(
                RunError::new(format!("cannot read run directory {}: {e}", run.display()))
                    .hint(hint),
            )
        }
        Ok(m) if !m.is_dir() => {
            return Err(RunError::new(format!("{} is not a directory", run.display())).hint(hint))
        }
        Ok(_) => {}
    }
    let metrics = crate::train::metrics::path(run);
    let weights = match args.checkpoint {
        Some(step) => Some(checkpoint_path(run, step)?),
        None => weights_path(run),
    };
    let model = folded::model_path(run);
    if !metrics.is_file() && weights.is_none() && !model.is_file() {
        return Err(RunError::new(format!(
            "{} holds no metrics.jsonl, final.safetensors, checkpoint or model.fnc: nothing to \
             plot",
            run.display()
        ))
        .hint(hint));
    }
    let out = args.out.clone().unwrap_or_else(|| run.join("plots"));
    std::fs::create_dir_all(&out).map_err(|e| {
        RunError::new(format!(
            "cannot create the output directory {}: {e}",
            out.display()
        ))
        .hint("choose another with --out")
    })?;

    let mut report = PlotReport::default();
    let mut inputs: Vec<&Path> = vec![&metrics, &model];
    if let Some(w) = &weights {
        inputs.push(w);
    }

    // The kernel grid first: an unknown --layer is an error before anything is written.
    let file = match &weights {
        Some(w) => Some(crate::io::weights::read_weights::<f32>(w)?),
        None => None,
    };
    // FlexConv kernels from model.fnc, or, with --checkpoint or without a model.fnc
    // (a killed run), from the recorded model compiled against the weights.
    let recorded = crate::train::source::ModelSource::read(run)?;
    let from_fnc = model.is_file() && args.checkpoint.is_none();
    let folded = match (&file, &weights, &recorded) {
        _ if from_fnc => folded::flex_kernels(&model)?,
        (Some(f), Some(w), Some(src)) => {
            let k = folded::flex_kernels_of(src, &f.tensors, w)?;
            if !k.is_empty() {
                report.notes.push(format!(
                    "FlexConv kernels from {} (the model in {} compiled with them bound)",
                    w.display(),
                    crate::train::source::path(run).display()
                ));
            }
            k
        }
        _ => Vec::new(),
    };
    let model_used = from_fnc || !folded.is_empty();
    // What messages name as the source of kernels: model.fnc only when it is read.
    let fnc = if from_fnc {
        model.clone()
    } else {
        PathBuf::new()
    };
    let mut known: Vec<kernels::Candidate> = file.as_ref().map(kernels::stored).unwrap_or_default();
    known.extend(folded.iter().map(|f| kernels::Candidate {
        name: &f.layer,
        tensor: &f.tensor,
        horizon: Some(&f.horizon),
    }));
    let mut kernel_plot = None;
    match (&weights, model_used || model.is_file()) {
        (None, false) if args.layer.is_some() => {
            return Err(RunError::new(format!(
                "--layer: {} has no final.safetensors, no checkpoint and no model.fnc to read \
                 kernels from",
                run.display()
            ))
            .hint("plot the kernels once the run has written a checkpoint"));
        }
        (None, false) => report
            .notes
            .push("kernels_*.png skipped: no final.safetensors, checkpoint or model.fnc".into()),
        _ if args.layer.is_none() && known.is_empty() => {
            // Pointwise convs only, and no folded FlexConv kernel: nothing to draw.
            report.notes.push(format!(
                "kernels_*.png skipped: {} holds no convolution kernel{}",
                sources(weights.as_deref(), &fnc),
                if from_fnc {
                    ""
                } else {
                    " (a FlexConv's is synthesised at run time; model.fnc, which holds it \
                     folded, is written when training finishes, and source.json, which \
                     lets a checkpoint's be drawn, when it starts)"
                }
            ));
        }
        _ => {
            let sources = sources(weights.as_deref(), &fnc);
            let chosen = kernels::choose(&known, args.layer.as_deref(), &sources)?;
            if from_fnc && chosen.horizon.is_some() && older(&model, weights.as_deref()) {
                // A resumed run checkpointed after its last finish: the folded kernel
                // is from the weights of that finish, not the newest ones.
                report.notes.push(format!(
                    "{} is older than {}: the FlexConv kernel drawn is from the run's last \
                     finish",
                    model.display(),
                    weights
                        .as_deref()
                        .map_or_else(String::new, |w| w.display().to_string())
                ));
            }
            let canvas = kernels::render(&chosen.title(), chosen.tensor)?;
            kernel_plot = Some((format!("kernels_{}.png", file_stem(chosen.name)), canvas));
        }
    }

    let records = if metrics.is_file() {
        records::read(&metrics)?
    } else {
        report.notes.push(
            "loss, accuracy, kernel size and regulariser plots skipped: no metrics.jsonl".into(),
        );
        records::RunRecords::default()
    };
    if metrics.is_file() && records.is_empty() {
        report.notes.push(format!(
            "{} has no step, epoch or eval records yet",
            metrics.display()
        ));
    }
    let mut plots: Vec<(String, Result<canvas::Canvas, String>)> = Vec::new();
    if !records.is_empty() {
        plots.push(("loss.png".into(), curves::loss(&records)?));
        plots.push(("accuracy.png".into(), curves::accuracy(&records)?));
        plots.push(("kernel_sizes.png".into(), curves::kernel_sizes(&records)?));
        plots.push(("regularizers.png".into(), curves::regularizers(&records)?));
    }
    if let Some((name, canvas)) = kernel_plot {
        plots.push((name, Ok(canvas)));
    }
    // An `fnetc search` run: p(m|a), W over time, accuracy per configuration.
    plots.extend(search::plots(run)?);
    for (name, plot) in plots {
        match plot {
            Ok(canvas) => {
                let path = out.join(&name);
                canvas.save(&path, &inputs)?;
                report.written.push(path);
            }
            Err(why) => report.notes.push(format!("{name} skipped: {why}")),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::file_stem;

    #[test]
    fn file_stems_are_plain() {
        assert_eq!(file_stem("conv1.weight"), "conv1");
        assert_eq!(file_stem("res1.conv/a b"), "res1.conv_a_b");
        assert_eq!(file_stem("x.bias"), "x.bias");
    }
}
