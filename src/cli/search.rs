//! `fnetc search FILE`: the flags and the progress display of the architecture search
//! over pooling slots. The work is in [`crate::search`]; see docs/search.md.

use super::CliError;
use crate::backend::BackendKind;
use crate::search::{search, Event, SearchArgs, Summary};
use crate::train::settings::Overrides;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Search a model's pooling-slot configurations with a balanced mixture of supernets.
#[derive(clap::Args, Debug)]
pub struct SearchCmd {
    /// The .fnet model file with pooling slots and a `train {}` section.
    pub file: PathBuf,
    /// Supernets in the mixture (overrides `search: mixture(models: …)`).
    #[arg(long)]
    pub models: Option<u64>,
    /// Passes over the search's training part (overrides `epochs:`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Samples per step (overrides `batch:`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Base learning rate (overrides the optimiser's `lr`).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of the data order and the sampling (overrides `seed:`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override a model-level constant, e.g. `--set E=8` (repeatable).
    #[arg(long = "set", value_parser = super::parse_set)]
    pub set: Vec<(String, String)>,
    /// Execution backend; it must run training graphs. OpenCL is the default, the
    /// fastest measured (docs/search.md); `jit` needs no OpenCL driver.
    #[arg(long, value_enum, default_value_t = BackendKind::Opencl)]
    pub backend: BackendKind,
    /// OpenCL device (with `--backend opencl`).
    #[arg(long)]
    pub device: Option<crate::opencl::DeviceSel>,
    /// The run directory (default runs/<model file name>-search).
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the search in this directory from its newest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start over in an --out directory that already holds a run.
    #[arg(long)]
    pub force: bool,
    /// Write a checkpoint every N steps too (always at each epoch's end).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: u64,
    /// End after this many steps in all, with a checkpoint, to be continued with
    /// --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
}

impl SearchCmd {
    pub fn args(&self) -> SearchArgs {
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let (out, resume) = match (&self.resume, &self.out) {
            (Some(r), _) => (r.clone(), true),
            (None, Some(o)) => (o.clone(), false),
            (None, None) => (PathBuf::from("runs").join(format!("{stem}-search")), false),
        };
        SearchArgs {
            model: self.file.clone(),
            set: self.set.clone(),
            overrides: Overrides {
                epochs: self.epochs,
                batch: self.batch,
                lr: self.lr,
                seed: self.seed,
            },
            models: self.models,
            backend: self.backend,
            device: self.device,
            out,
            resume,
            force: self.force,
            checkpoint_every: self.checkpoint_every,
            keep: self.keep as usize,
            stop_after: self.stop_after,
        }
    }
}

/// Runs the command: a progress bar (epoch, temperature, KL) on a terminal, lines
/// otherwise.
pub fn run(cmd: &SearchCmd) -> Result<Summary, CliError> {
    let args = cmd.args();
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::hidden();
    if terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:25}] {pos}/{len} {msg} (ETA {eta})",
        )
        .expect("a valid template")
        .progress_chars("#> "),
    );
    let mut head = String::new();
    let mut observe = |e: Event| match e {
        Event::EpochStart {
            epoch,
            epochs,
            from,
            steps,
            temperature,
            kl,
        } => {
            bar.reset();
            bar.set_length(steps);
            bar.set_position(from);
            bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
            head = format!("T {temperature:.1} KL {kl:.1e}");
        }
        Event::Step { loss, val_accuracy } => {
            bar.set_message(format!(
                "{head} loss {loss:.4} val acc {:.1}%",
                100.0 * val_accuracy
            ));
            bar.inc(1);
        }
        Event::Line(l) => {
            if terminal {
                bar.println(&l);
            } else {
                println!("{l}");
            }
        }
    };
    let summary = search(&args, &mut observe);
    bar.finish_and_clear();
    let summary = summary?;
    let dir = summary.run_dir.display();
    if summary.stopped {
        println!(
            "stopped after step {}; continue with --resume {dir}",
            summary.steps
        );
    } else {
        println!(
            "searched {} steps, {:.0} samples/s, {} plans compiled; wrote {dir}/ranking.txt, ranking.json, w.npy, p.npy, chosen.fnet",
            summary.steps, summary.samples_per_s, summary.plans_built
        );
    }
    Ok(summary)
}
