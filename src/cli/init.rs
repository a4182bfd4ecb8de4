//! `fnetc init`: a weights file with every parameter and buffer initialised as the
//! papers do (see docs/initialisation.md), deterministically from a seed.

use super::CliError;
use crate::driver::compile_file;
use crate::eval::Options;
use crate::io::weights::safetensors_bytes;
use crate::io::{check_output, write_output};
use crate::runtime::budget::Need;
use crate::runtime::initialise;
use std::path::Path;

/// Writes the initial weights of `model` to `out`; returns the number of tensors.
pub fn init(
    model: &Path,
    out: &Path,
    seed: Option<u64>,
    options: &Options,
) -> Result<usize, CliError> {
    check_output(out, &[model])?;
    let (source, module) = compile_file(model, options)?;
    super::memory::guard(&source, &module.graph, Need::Init)?;
    let seed = seed.unwrap_or(module.graph.seed);
    let store = initialise::<f32>(&module.graph, seed)?;
    let bytes = safetensors_bytes(out, &store, None)?;
    write_output(out, &[model], |w| w.write_all(&bytes))?;
    Ok(store.len())
}
