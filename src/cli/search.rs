//! `fnetc search FILE`: the flags and the progress display of the architecture search
//! over pooling slots. The work is in [`crate::search`]; see docs/search.md.

use super::run_flags::RunFlags;
use super::CliError;
use crate::search::{search, Event, SearchArgs, Summary};
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
    #[command(flatten)]
    pub run: RunFlags,
}

impl SearchCmd {
    pub fn args(&self) -> SearchArgs {
        let (out, resume) = self.run.run_dir(&self.file, "-search");
        SearchArgs {
            model: self.file.clone(),
            set: self.run.set.clone(),
            overrides: self.run.overrides(),
            models: self.models,
            backend: self.run.backend(),
            device: self.run.device,
            out,
            resume,
            force: self.run.force,
            checkpoint_every: self.run.checkpoint_every,
            keep: self.run.keep as usize,
            stop_after: self.run.stop_after,
            skip_passes: self.run.skip_passes.clone(),
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
