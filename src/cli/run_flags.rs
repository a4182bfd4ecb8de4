//! The flags `fnetc train` and `fnetc search` share: overrides of the `train {}`
//! section, where the run executes, and the run directory with its checkpoints.

use crate::backend::BackendKind;
use crate::train::settings::Overrides;
use std::path::{Path, PathBuf};

/// Recipe overrides, backend and run directory (flattened into each command).
#[derive(clap::Args, Debug)]
pub struct RunFlags {
    /// Passes over the training data (overrides `epochs:`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Samples per step (overrides `batch:`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Base learning rate (overrides the optimiser's `lr`).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of the data order, the augmentation and the search's draws (overrides
    /// `seed:`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override a model-level constant, e.g. `--set E=8` (repeatable).
    #[arg(long = "set", value_parser = super::parse_set)]
    pub set: Vec<(String, String)>,
    /// Execution backend; it must run training graphs [default: jit; opencl with
    /// --device].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// OpenCL device (with `--backend opencl`; see `run --help`). Under mpirun each
    /// rank adds its index on its host: `--device 0` gives ranks 0, 1, … devices 0,
    /// 1, …; the default and `gpu` give each rank a GPU of its own.
    #[arg(long)]
    pub device: Option<crate::opencl::DeviceSel>,
    /// The run directory (default runs/<model file name>, `-search` added for a
    /// search): metrics.jsonl, checkpoints/ and the command's outputs.
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its newest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start over in an --out directory that already holds a run.
    #[arg(long)]
    pub force: bool,
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
    /// Leave this compiler pass out of the training and evaluation graphs (repeatable;
    /// `fnetc compile --list-passes` names them), e.g. `--skip-pass fold-bases` to
    /// train LC layers unfolded.
    #[arg(long = "skip-pass", value_name = "PASS")]
    pub skip_passes: Vec<String>,
}

impl RunFlags {
    /// The recipe values the flags override.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
        }
    }

    /// `--backend`, or the default for `--device` ([`crate::backend::default_kind`]).
    pub fn backend(&self) -> BackendKind {
        self.backend
            .unwrap_or_else(|| crate::backend::default_kind(self.device, false))
    }

    /// The run directory and whether it is resumed: `--resume`'s, else `--out`'s, else
    /// `runs/<stem of model><suffix>`.
    pub fn run_dir(&self, model: &Path, suffix: &str) -> (PathBuf, bool) {
        let stem = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        match (&self.resume, &self.out) {
            (Some(r), _) => (r.clone(), true),
            (None, Some(o)) => (o.clone(), false),
            (None, None) => (PathBuf::from("runs").join(format!("{stem}{suffix}")), false),
        }
    }
}
