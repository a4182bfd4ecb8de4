//! `fnetc train FILE`: the command-line flags, and the progress display. The work is
//! in [`crate::train`].

use super::run_flags::RunFlags;
use super::CliError;
use crate::backend::BackendKind;
use crate::eval::Options;
use crate::train::distributed::{join, rank_device, Group};
use crate::train::{train_in, Event, Summary, TrainArgs};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Train a model from its `train {}` section (flags override the section).
#[derive(clap::Args, Debug)]
pub struct TrainCmd {
    /// The .fnet model file with a `train {}` section.
    pub file: PathBuf,
    #[command(flatten)]
    pub run: RunFlags,
    /// Pooling-slot configuration to train (see `check --help`).
    #[arg(long, value_delimiter = ',')]
    pub config: Option<Vec<u64>>,
    /// Evaluate on the test split every N steps too (always at each epoch's end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Under mpirun: end the job when a collective waits this many seconds for the
    /// other ranks (a rank that hangs without dying); 0 turns the check off.
    #[arg(long, default_value_t = 600)]
    pub collective_timeout: u64,
    /// Log the L2 norm of the gradient of every trainable parameter whose name matches
    /// this pattern (`*` any run of characters), each step, under `grad_norms` in
    /// metrics.jsonl (repeatable), e.g. `--log-grad-norm 'stage*.shared.*'`.
    #[arg(long = "log-grad-norm", value_name = "PATTERN")]
    pub log_grad_norms: Vec<String>,
}

impl TrainCmd {
    pub fn args(&self) -> TrainArgs {
        let (out, resume) = self.run.run_dir(&self.file, "");
        TrainArgs {
            model: self.file.clone(),
            options: Options {
                slot_config: self.config.clone(),
                overrides: self.run.set.clone(),
            },
            overrides: self.run.overrides(),
            backend: self.run.backend(),
            device: self.run.device,
            out,
            resume,
            force: self.run.force,
            eval_every: self.eval_every,
            checkpoint_every: self.run.checkpoint_every,
            keep: self.run.keep as usize,
            stop_after: self.run.stop_after,
            skip_passes: self.run.skip_passes.clone(),
            log_grad_norms: self.log_grad_norms.clone(),
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
