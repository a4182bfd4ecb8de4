//! `fnetc train FILE`: the command-line flags, and the progress display. The work is
//! in [`crate::train`].

use super::CliError;
use crate::backend::BackendKind;
use crate::eval::Options;
use crate::train::distributed::{join, rank_device, Group};
use crate::train::settings::Overrides;
use crate::train::{train_in, Event, Summary, TrainArgs};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Train a model from its `train {}` section (flags override the section).
#[derive(clap::Args, Debug)]
pub struct TrainCmd {
    /// The .fnet model file with a `train {}` section.
    pub file: PathBuf,
    /// Passes over the training split (overrides `epochs:`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Samples per step (overrides `batch:`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Base learning rate (overrides the optimiser's `lr`).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Training seed: shuffling and augmentation (overrides `seed:`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override a model-level constant, e.g. `--set E=8` (repeatable).
    #[arg(long = "set", value_parser = super::parse_set)]
    pub set: Vec<(String, String)>,
    /// Pooling-slot configuration to train (see `check --help`).
    #[arg(long, value_delimiter = ',')]
    pub config: Option<Vec<u64>>,
    /// Execution backend; it must run training graphs [default: jit; opencl with
    /// --device].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// OpenCL device (with `--backend opencl`; see `run --help`). Under mpirun each
    /// rank adds its index on its host: `--device 0` gives ranks 0, 1, … devices 0,
    /// 1, …; the default and `gpu` give each rank a GPU of its own.
    #[arg(long)]
    pub device: Option<crate::opencl::DeviceSel>,
    /// The run directory: metrics.jsonl, checkpoints/, final.safetensors, model.fnc,
    /// recipe.json.
    /// Defaults to runs/<model file name>.
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its newest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start over in an --out directory that already holds a run.
    #[arg(long)]
    pub force: bool,
    /// Evaluate on the test split every N steps too (always at each epoch's end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Write a checkpoint every N steps too (always at each epoch's end).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept in the run directory.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: u64,
    /// End after this many steps in all, with a checkpoint, to be continued with
    /// --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Under mpirun: end the job when a collective waits this many seconds for the
    /// other ranks (a rank that hangs without dying); 0 turns the check off.
    #[arg(long, default_value_t = 600)]
    pub collective_timeout: u64,
}

impl TrainCmd {
    pub fn args(&self) -> TrainArgs {
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let (out, resume) = match (&self.resume, &self.out) {
            (Some(r), _) => (r.clone(), true),
            (None, Some(o)) => (o.clone(), false),
            (None, None) => (PathBuf::from("runs").join(stem), false),
        };
        TrainArgs {
            model: self.file.clone(),
            options: Options {
                slot_config: self.config.clone(),
                overrides: self.set.clone(),
            },
            overrides: Overrides {
                epochs: self.epochs,
                batch: self.batch,
                lr: self.lr,
                seed: self.seed,
            },
            backend: self
                .backend
                .unwrap_or_else(|| crate::backend::default_kind(self.device, false)),
            device: self.device,
            out,
            resume,
            force: self.force,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            keep: self.keep as usize,
            stop_after: self.stop_after,
        }
    }
}

/// Runs the command: a progress bar on a terminal, one line per epoch otherwise.
/// Under `mpirun` (built with the `mpi` feature) this process is one data-parallel
/// rank: rank 0 shows the progress and writes the run; a rank that fails prints its
/// error and ends the whole job.
pub fn run(cmd: &TrainCmd) -> Result<Summary, CliError> {
    let timeout = (cmd.collective_timeout > 0)
        .then(|| std::time::Duration::from_secs(cmd.collective_timeout));
    let group = join(timeout)?;
    if group.size() == 1 {
        return run_rank(cmd, group.as_ref());
    }
    match run_rank(cmd, group.as_ref()) {
        Ok(s) => Ok(s),
        Err(e) => {
            eprintln!(
                "fnetc train: rank {} of {} failed; ending the job\n{e}",
                group.rank(),
                group.size()
            );
            group.abort(1)
        }
    }
}

fn run_rank(cmd: &TrainCmd, group: &dyn Group) -> Result<Summary, CliError> {
    let mut args = cmd.args();
    if group.size() > 1 && args.backend == BackendKind::Opencl {
        args.device = Some(rank_device(args.device, group.local_rank())?);
    }
    let root = group.rank() == 0;
    let terminal = root && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::hidden();
    if terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:25}] {pos}/{len} {msg} ({per_sec}, ETA {eta})",
        )
        .expect("a valid template")
        .progress_chars("#> "),
    );
    let mut observe = |e: Event| match e {
        _ if !root => {}
        Event::EpochStart {
            epoch,
            epochs,
            from,
            steps,
        } => {
            bar.reset();
            bar.set_length(steps);
            bar.set_position(from);
            bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
        }
        Event::Step {
            loss,
            terms,
            accuracy,
            ..
        } => {
            bar.set_message(format!(
                "loss {loss:.4}{} acc {:.1}%",
                crate::train::trainer::terms_words(&terms),
                100.0 * accuracy
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
    let summary = train_in(&args, group, &mut observe);
    bar.finish_and_clear();
    let summary = summary?;
    if !root {
        return Ok(summary);
    }
    let dir = summary.run_dir.display();
    if summary.stopped {
        println!(
            "stopped after step {}; continue with --resume {dir}",
            summary.steps
        );
    } else {
        println!(
            "trained {} steps, {:.0} samples/s; wrote {dir}/final.safetensors and {dir}/model.fnc",
            summary.steps, summary.samples_per_s
        );
    }
    if let Some(a) = summary.test_accuracy {
        println!("test accuracy {:.2}%", 100.0 * a);
    }
    Ok(summary)
}
