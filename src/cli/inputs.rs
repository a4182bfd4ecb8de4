//! Model inputs from files: `.npy` arrays (f32 or f64, NCL or NCHW) or IDX image files
//! (MNIST format, optionally gzipped), with an optional index range.

use crate::io::idx::{idx_len, read_idx_images, read_idx_labels};
use crate::io::npy::{read_npy_any, NpyArray};
use crate::runtime::RunError;
use crate::tensor::Tensor;
use std::ops::Range;
use std::path::Path;

/// Parses `A..B` (either end may be left out).
pub fn parse_range(s: &str) -> Result<(Option<usize>, Option<usize>), String> {
    let Some((a, b)) = s.split_once("..") else {
        return Err(format!("expected START..END, got `{s}`"));
    };
    let num = |t: &str| -> Result<Option<usize>, String> {
        if t.is_empty() {
            Ok(None)
        } else {
            t.parse()
                .map(Some)
                .map_err(|_| format!("`{t}` is not an index"))
        }
    };
    Ok((num(a)?, num(b)?))
}

fn is_idx(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.contains("idx") || name.ends_with("-ubyte") || name.ends_with("-ubyte.gz")
}

fn resolve(
    range: (Option<usize>, Option<usize>),
    len: usize,
    path: &Path,
) -> Result<Range<usize>, RunError> {
    let (a, b) = (range.0.unwrap_or(0), range.1.unwrap_or(len));
    if a >= b || b > len {
        return Err(RunError::new(format!(
            "range {a}..{b} is not within the {len} items of `{}`",
            path.display()
        ))
        .hint(format!("use a range inside 0..{len}")));
    }
    Ok(a..b)
}

/// Reads the input tensor (as f64; callers narrow to f32) and the slice it came from.
pub fn load_input(
    path: &Path,
    range: Option<(Option<usize>, Option<usize>)>,
) -> Result<Tensor<f64>, RunError> {
    if !path.exists() {
        return Err(RunError::new(format!(
            "input file `{}` does not exist",
            path.display()
        )));
    }
    if is_idx(path) {
        let len = idx_len(path)?;
        let r = resolve(range.unwrap_or((None, None)), len, path)?;
        return Ok(read_idx_images(path, r)?.to_f64());
    }
    let t = match read_npy_any(path)? {
        NpyArray::F32(t) => t.to_f64(),
        NpyArray::F64(t) => t,
    };
    match range {
        None => Ok(t),
        Some(r) => {
            let n = t.shape.first().copied().unwrap_or(0);
            let r = resolve(r, n, path)?;
            let per = t.numel() / n.max(1);
            let mut shape = t.shape.clone();
            shape[0] = r.len();
            Ok(Tensor::from_vec(
                shape,
                t.data[r.start * per..r.end * per].to_vec(),
            )?)
        }
    }
}

/// Labels for accuracy: an IDX1 file (same range as the images) or a `.npy` of ints
/// stored as floats.
pub fn load_labels(
    path: &Path,
    range: Option<(Option<usize>, Option<usize>)>,
) -> Result<Vec<usize>, RunError> {
    if is_idx(path) {
        let len = idx_len(path)?;
        let r = resolve(range.unwrap_or((None, None)), len, path)?;
        return Ok(read_idx_labels(path, r)?
            .into_iter()
            .map(usize::from)
            .collect());
    }
    let t = match read_npy_any(path)? {
        NpyArray::F32(t) => t.to_f64(),
        NpyArray::F64(t) => t,
    };
    Ok(t.data.iter().map(|&v| v.max(0.0) as usize).collect())
}
