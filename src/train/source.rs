//! `RUN_DIR/source.json`: the model a run trains, as it was when the run started —
//! its file name, its source text, and the `--set`/`--config` options — so that what
//! the run leaves can be compiled again without the original file. `fnetc plot` uses
//! it to draw a FlexConv's kernel from a checkpoint: that kernel is synthesised from
//! the kernel network and mask, so it is in no weights file, and a run killed before
//! it finished has no `model.fnc` that holds it folded.
//!
//! Written atomically when a run starts (and when a run from before this file existed
//! is resumed); the text, not a path, so that editing the model file later does not
//! change what an old run's checkpoints compile to.

use crate::diag::Report;
use crate::eval::{Module, Options};
use crate::io::write_output;
use crate::runtime::RunError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE: &str = "source.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSource {
    /// The model file as given on the command line, for messages.
    pub file: String,
    /// Its text when the run started.
    pub text: String,
    /// `--set NAME=VALUE`, in order.
    pub overrides: Vec<(String, String)>,
    /// `--config`: the 1-based pooling slots that downsample.
    pub slot_config: Option<Vec<u64>>,
}

pub fn path(run: &Path) -> PathBuf {
    run.join(FILE)
}

impl ModelSource {
    pub fn new(file: &Path, text: &str, options: &Options) -> ModelSource {
        ModelSource {
            file: file.display().to_string(),
            text: text.to_string(),
            overrides: options.overrides.clone(),
            slot_config: options.slot_config.clone(),
        }
    }

    pub fn options(&self) -> Options {
        Options {
            slot_config: self.slot_config.clone(),
            overrides: self.overrides.clone(),
        }
    }

    pub fn write(&self, run: &Path) -> Result<(), RunError> {
        let text = serde_json::to_string_pretty(self).expect("plain data") + "\n";
        Ok(write_output(&path(run), &[], |w| {
            w.write_all(text.as_bytes())
        })?)
    }

    /// The run's `source.json`; `None` when the run has none (one from before it was
    /// written), an error when it cannot be read or parsed.
    pub fn read(run: &Path) -> Result<Option<ModelSource>, RunError> {
        let p = path(run);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RunError::new(format!("cannot read {}: {e}", p.display()))),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            RunError::new(format!(
                "{}:{}:{}: expected the model source `fnetc train` records ({e})",
                p.display(),
                e.line(),
                e.column()
            ))
            .hint(
                "the file is damaged; delete it to plot without FlexConv kernels from checkpoints",
            )
        })
    }

    /// Elaborates the recorded text with the recorded options.
    pub fn module(&self) -> Result<Module, Report> {
        crate::driver::compile_str(&self.file, &self.text, &self.options()).map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_a_damaged_file_is_named() {
        let run = tempfile::tempdir().unwrap();
        assert_eq!(ModelSource::read(run.path()).unwrap(), None);
        let options = Options {
            slot_config: Some(vec![2]),
            overrides: vec![("E".into(), "2".into())],
        };
        let s = ModelSource::new(Path::new("m.fnet"), "model m {}", &options);
        s.write(run.path()).unwrap();
        assert_eq!(ModelSource::read(run.path()).unwrap(), Some(s));
        std::fs::write(path(run.path()), "{\"file\": 3}").unwrap();
        let e = ModelSource::read(run.path()).unwrap_err();
        assert!(e.message.contains("source.json:1:"), "{e}");
    }
}
