//! `fnetc plot RUN_DIR`: the flags, and printing what was written. The work is in
//! [`crate::plot`].

use super::CliError;
use crate::plot::{plot, PlotArgs, PlotReport};
use std::path::PathBuf;

/// Draw PNG plots of a training run: loss, accuracy, FlexConv kernel sizes,
/// regularisers, and one layer's learned kernels.
#[derive(clap::Args, Debug)]
pub struct PlotCmd {
    /// The run directory `fnetc train` wrote (metrics.jsonl, final.safetensors, checkpoints/).
    pub run: PathBuf,
    /// Where the PNGs go (created if missing). Defaults to RUN_DIR/plots.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The convolution whose kernels to draw, e.g. `conv1`, `conv1.weight`, or a
    /// FlexConv layer (`flexconv1`, drawn from RUN_DIR/model.fnc, else from the newest
    /// checkpoint with RUN_DIR/source.json). Defaults to the
    /// first FlexConv, else the first stored kernel in name order.
    #[arg(long)]
    pub layer: Option<String>,
    /// Draw the kernels from the checkpoint of step N (checkpoints/step-N), FlexConvs
    /// included, instead of final.safetensors and model.fnc. Without model.fnc (a run
    /// killed before it finished) the newest checkpoint is used anyway.
    #[arg(long, value_name = "N")]
    pub checkpoint: Option<u64>,
}

impl PlotCmd {
    pub fn args(&self) -> PlotArgs {
        PlotArgs {
            run: self.run.clone(),
            out: self.out.clone(),
            layer: self.layer.clone(),
            checkpoint: self.checkpoint,
        }
    }
}

/// Writes the plots, prints each path on stdout and each skipped plot as a note on
/// stderr.
pub fn run(cmd: &PlotCmd) -> Result<PlotReport, CliError> {
    let report = plot(&cmd.args())?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    for path in &report.written {
        println!("{}", path.display());
    }
    Ok(report)
}
