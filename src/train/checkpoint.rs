//! Checkpoints: everything a run needs to continue bit-identically, in one safetensors
//! file `RUN_DIR/checkpoints/step-NNNNNNNN.safetensors`, written atomically (temporary
//! file, fsync, rename: [`crate::io::write_output`]), the last K kept.
//!
//! - Tensors: every parameter and buffer under its stable name (the file is a weights
//!   file `fnetc compile -w` takes), and the optimiser state as
//!   `optimizer.<state>:<parameter>` (`:` never occurs in a stable name).
//! - Metadata `fnet.checkpoint`: JSON with the step, epoch and batch within it, the
//!   optimiser's step count, the schedule's state, the RNG state (the shuffle and
//!   augmentation generators are derived from the seed, epoch and batch position,
//!   so those three are the whole state), the resolved recipe, the model's parameter
//!   names and shapes, and the epoch's running sums. Floats that must survive exactly
//!   are stored as their bits.

use crate::io::weights::{parse_metadata, parse_weights, safetensors_bytes};
use crate::io::write_output;
use crate::recipe::Recipe;
use crate::runtime::RunError;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The metadata key that marks a safetensors file as a checkpoint.
pub const KEY: &str = "fnet.checkpoint";
const FORMAT: &str = "fnet.checkpoint/1";
const STATE: &str = "optimizer.";

/// Where a run is, besides its tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub format: String,
    /// Optimiser steps taken.
    pub step: u64,
    /// The epoch in progress (0-based) and how many of its batches are done.
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// The training seed the shuffle and augmentation generators derive from.
    pub rng_seed: u64,
    /// `plateau`'s state: scale and best loss as f64 bits, epochs without improvement.
    pub plateau_scale_bits: u64,
    pub plateau_best_bits: Option<u64>,
    pub plateau_bad_epochs: u64,
    /// The epoch's running sums so far: loss (f64 bits), correct predictions, samples.
    pub epoch_loss_bits: u64,
    pub epoch_correct: u64,
    pub epoch_seen: u64,
    /// The epoch's running sums of the loss's terms (each step's value times its
    /// samples, f64 bits), in the training graph's order; absent in checkpoints
    /// written before epoch records carried term means (an epoch resumed from one
    /// then averages its terms over the steps since).
    #[serde(default)]
    pub epoch_term_bits: Vec<(String, u64)>,
    /// Lines of `metrics.jsonl` that this checkpoint has seen; later ones are dropped
    /// on resume.
    pub metrics_lines: u64,
    /// The resolved recipe as JSON text: compared as text on resume, since parsing
    /// JSON floats back may move them by an ulp.
    pub recipe: String,
    /// Every parameter and buffer: name → shape.
    pub params: BTreeMap<String, Vec<usize>>,
}

/// A checkpoint in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub progress: Progress,
    pub params: BTreeMap<String, Tensor<f32>>,
    /// State name → parameter name → tensor.
    pub optimizer: BTreeMap<String, BTreeMap<String, Tensor<f32>>>,
}

/// The checkpoints directory of a run.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

fn file_name(step: u64) -> String {
    format!("step-{step:08}.safetensors")
}

/// The checkpoints in `run`, oldest first, with their steps.
pub fn list(run: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir(run))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes the temporary files a killed run left in `run` and its checkpoints folder
/// (`.<name>.tmp-<pid>-<n>`, from `io::write_output`: a write cut short before its
/// rename). Only a resume calls it: the run that wrote them is over. Returns how many.
pub fn remove_temporaries(run: &Path) -> usize {
    let mut removed = 0;
    for d in [run.to_path_buf(), dir(run)] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                && name.contains(".tmp-")
                && std::fs::remove_file(e.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// Writes `c` into `run` and removes all but the newest `keep` checkpoints.
pub fn save(run: &Path, c: &Checkpoint, keep: usize) -> Result<PathBuf, RunError> {
    let d = dir(run);
    std::fs::create_dir_all(&d).map_err(|e| crate::io::IoError::os(&d, &e, "create"))?;
    let path = d.join(file_name(c.progress.step));
    let mut tensors = c.params.clone();
    for (state, per) in &c.optimizer {
        for (name, t) in per {
            tensors.insert(format!("{STATE}{state}:{name}"), t.clone());
        }
    }
    let meta = serde_json::to_string(&c.progress).expect("plain data serialises");
    let bytes = safetensors_bytes(&path, &tensors, Some(HashMap::from([(KEY.into(), meta)])))?;
    write_output(&path, &[], |w| w.write_all(&bytes))?;
    let all = list(run);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        // A checkpoint that cannot be removed only costs disk space.
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// Reads the checkpoint at `path`; a damaged file or one that is not a checkpoint is an
/// error naming it.
pub fn load(path: &Path) -> Result<Checkpoint, RunError> {
    let bytes = std::fs::read(path).map_err(|e| crate::io::IoError::os(path, &e, "read"))?;
    let bad = |why: String| {
        RunError::new(format!(
            "`{}` is not a usable checkpoint: {why}",
            path.display()
        ))
        .hint("delete it to resume from the previous checkpoint, or start a new run")
    };
    let meta = parse_metadata(path, &bytes).map_err(|e| bad(e.to_string()))?;
    let Some(text) = meta.as_ref().and_then(|m| m.get(KEY)) else {
        return Err(bad(format!("its header has no `{KEY}` entry")));
    };
    let progress: Progress =
        serde_json::from_str(text).map_err(|e| bad(format!("its `{KEY}` entry: {e}")))?;
    if progress.format != FORMAT {
        return Err(bad(format!(
            "format `{}`, this fnetc reads `{FORMAT}`",
            progress.format
        )));
    }
    let file = parse_weights::<f32>(path, &bytes).map_err(|e| bad(e.to_string()))?;
    let (mut params, mut optimizer) = (BTreeMap::new(), BTreeMap::<String, BTreeMap<_, _>>::new());
    for (name, t) in file.tensors {
        match name.strip_prefix(STATE).and_then(|r| r.split_once(':')) {
            Some((state, p)) => {
                optimizer
                    .entry(state.to_string())
                    .or_default()
                    .insert(p.to_string(), t);
            }
            None => {
                params.insert(name, t);
            }
        }
    }
    for (name, shape) in &progress.params {
        match params.get(name) {
            Some(t) if &t.shape == shape => {}
            Some(t) => {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, its header says {shape:?}",
                    t.shape
                )))
            }
            None => return Err(bad(format!("tensor `{name}` is missing"))),
        }
    }
    Ok(Checkpoint {
        progress,
        params,
        optimizer,
    })
}

/// The first difference between the parameters a checkpoint holds and a model's, or
/// `None` when they agree: names and shapes.
pub fn first_param_mismatch(
    saved: &BTreeMap<String, Vec<usize>>,
    model: &BTreeMap<String, Vec<usize>>,
) -> Option<String> {
    for (name, shape) in model {
        match saved.get(name) {
            None => {
                return Some(format!(
                    "the model has `{name}` {shape:?}, the checkpoint does not"
                ))
            }
            Some(s) if s != shape => {
                return Some(format!(
                    "`{name}` is {shape:?} in the model but {s:?} in the checkpoint"
                ))
            }
            Some(_) => {}
        }
    }
    saved
        .keys()
        .find(|n| !model.contains_key(*n))
        .map(|n| format!("the checkpoint has `{n}`, the model does not"))
}

/// The recipe as a checkpoint stores it.
pub fn recipe_text(r: &Recipe) -> String {
    serde_json::to_string(r).expect("plain data serialises")
}

/// The first recipe key whose value differs between the checkpoint's recipe text and
/// `now`, as `key: checkpoint vs now`.
pub fn first_recipe_mismatch(saved: &str, now: &Recipe) -> Option<String> {
    let now_text = recipe_text(now);
    if saved == now_text {
        return None;
    }
    let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap_or_default();
    let (a, b) = (parse(saved), parse(&now_text));
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .find_map(|k| {
            let (x, y) = (a.get(k), b.get(k));
            (x != y).then(|| {
                let show = |v: Option<&serde_json::Value>| {
                    v.map_or("unset".to_string(), |v| v.to_string())
                };
                format!("`{k}`: {} in the checkpoint, {} now", show(x), show(y))
            })
        })
        .or_else(|| Some("the recipe differs".to_string()))
}

/// Progress's format tag, for building one.
pub fn format_tag() -> String {
    FORMAT.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: u64) -> Checkpoint {
        let w = Tensor {
            shape: vec![2],
            data: vec![1.5, -0.0],
        };
        Checkpoint {
            progress: Progress {
                format: format_tag(),
                step,
                epoch: 1,
                batch_in_epoch: 3,
                rng_seed: 9,
                plateau_scale_bits: 1f64.to_bits(),
                plateau_best_bits: Some(0.1f64.to_bits()),
                plateau_bad_epochs: 0,
                epoch_loss_bits: 0.3f64.to_bits(),
                epoch_correct: 5,
                epoch_seen: 8,
                epoch_term_bits: vec![("loss.ce".to_string(), 0.25f64.to_bits())],
                metrics_lines: 4,
                recipe: recipe_text(&Recipe::default()),
                params: BTreeMap::from([("fc.weight".to_string(), vec![2])]),
            },
            params: BTreeMap::from([("fc.weight".to_string(), w.clone())]),
            optimizer: BTreeMap::from([(
                "exp_avg".to_string(),
                BTreeMap::from([("fc.weight".to_string(), w)]),
            )]),
        }
    }

    #[test]
    fn round_trips_and_keeps_the_last_k() {
        let run = tempfile::tempdir().unwrap();
        for step in [10, 20, 30] {
            save(run.path(), &sample(step), 2).unwrap();
        }
        let steps: Vec<u64> = list(run.path()).iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [20, 30]);
        let back = load(&list(run.path())[1].1).unwrap();
        assert_eq!(back, sample(30));
    }

    #[test]
    fn damaged_and_foreign_files_are_named_errors() {
        let run = tempfile::tempdir().unwrap();
        let p = save(run.path(), &sample(1), 3).unwrap();
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("step-00000001.safetensors") && e.contains("not a usable checkpoint"),
            "{e}"
        );
        let plain = run.path().join("w.safetensors");
        crate::io::weights::write_weights(&plain, &sample(1).params).unwrap();
        let e = load(&plain).unwrap_err().to_string();
        assert!(e.contains("no `fnet.checkpoint` entry"), "{e}");
    }

    #[test]
    fn mismatches_name_the_first_difference() {
        let a = BTreeMap::from([("a".to_string(), vec![2]), ("b".to_string(), vec![3])]);
        let mut b = a.clone();
        assert_eq!(first_param_mismatch(&a, &b), None);
        b.insert("b".into(), vec![4]);
        assert!(first_param_mismatch(&a, &b).unwrap().contains("`b` is [4]"));
        b.remove("b");
        assert!(first_param_mismatch(&a, &b)
            .unwrap()
            .contains("checkpoint has `b`"));
        let r = Recipe {
            epochs: Some(3),
            ..Recipe::default()
        };
        let s = Recipe {
            epochs: Some(4),
            ..r.clone()
        };
        assert_eq!(first_recipe_mismatch(&recipe_text(&r), &r), None);
        assert_eq!(
            first_recipe_mismatch(&recipe_text(&r), &s).unwrap(),
            "`epochs`: 3 in the checkpoint, 4 now"
        );
    }
}
