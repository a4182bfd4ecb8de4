//! A search checkpoint: one safetensors file holding every model's parameters and
//! optimiser state (`model<m>.<name>`, `model<m>.optimizer.<state>:<name>`) and, in
//! the header entry `fnet.search`, the controller (W and the epoch's divisions as f64
//! bits, so a resume continues bit for bit), where the loop is and what it searches.
//! Written atomically under `RUN_DIR/checkpoints/step-NNNNNNNN.safetensors`, the names
//! `fnetc train`'s checkpoints use, so the same listing and clean-up apply.

use crate::io::weights::{parse_metadata, parse_weights, safetensors_bytes};
use crate::io::write_output;
use crate::runtime::{ParamStore, RunError};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const KEY: &str = "fnet.search";
const FORMAT: &str = "fnet.search/1";

/// Everything but the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchProgress {
    pub format: String,
    pub step: u64,
    pub epoch: u64,
    pub batch_in_epoch: u64,
    pub models: u64,
    /// The configurations searched (excluded ones left out), W's rows in order.
    pub configs: Vec<Vec<u64>>,
    pub w_bits: Vec<u64>,
    pub t_bits: u64,
    pub divisions_bits: Vec<Vec<u64>>,
    /// Each model's optimiser step count.
    pub optim_steps: Vec<u64>,
    pub plateau_scale_bits: u64,
    pub plateau_best_bits: Option<u64>,
    pub plateau_bad_epochs: u64,
    /// The epoch's running loss sum (f64 bits), correct predictions, samples.
    pub epoch_loss_bits: u64,
    pub epoch_correct: u64,
    pub epoch_seen: u64,
    pub metrics_lines: u64,
    /// The resolved recipe and search settings as JSON text, compared on resume.
    pub recipe: String,
    pub search: String,
    /// One model's parameters and buffers: name → shape.
    pub params: BTreeMap<String, Vec<usize>>,
}

/// A checkpoint in memory.
pub struct SearchCheckpoint {
    pub progress: SearchProgress,
    /// Per model: its parameters and buffers.
    pub params: Vec<ParamStore<f32>>,
    /// Per model: state name → parameter name → tensor.
    pub optimizer: Vec<BTreeMap<String, BTreeMap<String, Tensor<f32>>>>,
}

pub fn format_tag() -> String {
    FORMAT.to_string()
}

/// Writes `c` into `run` and keeps the newest `keep` checkpoints.
pub fn save(run: &Path, c: &SearchCheckpoint, keep: usize) -> Result<PathBuf, RunError> {
    let d = crate::train::checkpoint::dir(run);
    std::fs::create_dir_all(&d).map_err(|e| crate::io::IoError::os(&d, &e, "create"))?;
    let path = d.join(format!("step-{:08}.safetensors", c.progress.step));
    let mut tensors = BTreeMap::new();
    for (m, (params, optim)) in c.params.iter().zip(&c.optimizer).enumerate() {
        for (name, t) in params {
            tensors.insert(format!("model{m}.{name}"), t.clone());
        }
        for (state, per) in optim {
            for (name, t) in per {
                tensors.insert(format!("model{m}.optimizer.{state}:{name}"), t.clone());
            }
        }
    }
    let meta = serde_json::to_string(&c.progress).expect("plain data serialises");
    let bytes = safetensors_bytes(&path, &tensors, Some(HashMap::from([(KEY.into(), meta)])))?;
    write_output(&path, &[], |w| w.write_all(&bytes))?;
    let all = crate::train::checkpoint::list(run);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// Reads a search checkpoint; a damaged file, a `fnetc train` checkpoint or one with
/// a tensor missing is an error naming it.
pub fn load(path: &Path) -> Result<SearchCheckpoint, RunError> {
    let bytes = std::fs::read(path).map_err(|e| crate::io::IoError::os(path, &e, "read"))?;
    let bad = |why: String| {
        RunError::new(format!(
            "`{}` is not a usable search checkpoint: {why}",
            path.display()
        ))
        .hint("delete it to resume from the previous checkpoint, or start a new search")
    };
    let meta = parse_metadata(path, &bytes).map_err(|e| bad(e.to_string()))?;
    let Some(text) = meta.as_ref().and_then(|m| m.get(KEY)) else {
        return Err(bad(format!(
            "its header has no `{KEY}` entry (a `fnetc train` checkpoint?)"
        )));
    };
    let progress: SearchProgress =
        serde_json::from_str(text).map_err(|e| bad(format!("its `{KEY}` entry: {e}")))?;
    if progress.format != FORMAT {
        return Err(bad(format!(
            "format `{}`, this fnetc reads `{FORMAT}`",
            progress.format
        )));
    }
    let file = parse_weights::<f32>(path, &bytes).map_err(|e| bad(e.to_string()))?;
    let m = progress.models as usize;
    let mut params = vec![ParamStore::new(); m];
    let mut optimizer = vec![BTreeMap::<String, BTreeMap<String, Tensor<f32>>>::new(); m];
    for (name, t) in file.tensors {
        let parsed = name.strip_prefix("model").and_then(|r| r.split_once('.'));
        let Some((ix, rest)) = parsed.and_then(|(i, r)| Some((i.parse::<usize>().ok()?, r))) else {
            return Err(bad(format!("unexpected tensor `{name}`")));
        };
        if ix >= m {
            return Err(bad(format!("tensor `{name}` of a model past {m}")));
        }
        match rest
            .strip_prefix("optimizer.")
            .and_then(|r| r.split_once(':'))
        {
            Some((state, p)) => {
                optimizer[ix]
                    .entry(state.to_string())
                    .or_default()
                    .insert(p.to_string(), t);
            }
            None => {
                params[ix].insert(rest.to_string(), t);
            }
        }
    }
    for (ix, store) in params.iter().enumerate() {
        for (name, shape) in &progress.params {
            match store.get(name) {
                Some(t) if &t.shape == shape => {}
                _ => {
                    return Err(bad(format!(
                        "tensor `model{ix}.{name}` is missing or not of shape {shape:?}"
                    )))
                }
            }
        }
    }
    Ok(SearchCheckpoint {
        progress,
        params,
        optimizer,
    })
}

/// f64s as their bits (checkpoints keep floats exactly).
pub fn bits(xs: &[f64]) -> Vec<u64> {
    xs.iter().map(|x| x.to_bits()).collect()
}

pub fn from_bits(xs: &[u64]) -> Vec<f64> {
    xs.iter().map(|&x| f64::from_bits(x)).collect()
}
