//! Model inputs from files: `.npy` arrays (f32 or f64, NCL or NCHW) or IDX image files
//! (MNIST format, optionally gzipped, pixels divided by 255), with an optional index
//! range; and the labels to score them against.

use crate::io::idx::{idx_len, read_idx_images, read_idx_labels};
use crate::io::npy::{read_npy_any, read_npy_numbers, NpyArray, NpyNumber};
use crate::runtime::RunError;
use crate::tensor::Tensor;
use std::ops::Range;
use std::path::Path;

/// Parses `A..B`, `A..` or `..B` (items A to B-1); a reversed or empty range is refused
/// here, one past the end of the file when the file is read.
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
    let (a, b) = (num(a)?, num(b)?);
    match (a, b) {
        (Some(a), Some(b)) if a > b => Err(format!(
            "`{s}` is reversed: it starts after it ends (write {b}..{a})"
        )),
        (Some(a), Some(b)) if a == b => Err(format!(
            "`{s}` is empty: A..B runs items A to B-1 (for item {a} alone write {a}..{})",
            a + 1
        )),
        _ => Ok((a, b)),
    }
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
    let shown = format!(
        "{}..{}",
        range.0.map(|v| v.to_string()).unwrap_or_default(),
        range.1.map(|v| v.to_string()).unwrap_or_default()
    );
    let file = path.display();
    let what = if a > b {
        format!("range {shown} is reversed: it starts at item {a}, after its end {b} (`{file}` has {len} items)")
    } else if a == b {
        format!("range {shown} is empty: it selects no item of `{file}` ({len} items)")
    } else if b > len {
        format!("range {shown} is not within the {len} items of `{file}`")
    } else {
        return Ok(a..b);
    };
    Err(RunError::new(what).hint(format!(
        "use a non-empty range inside 0..{len} (A..B runs items A to B-1)"
    )))
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

/// Labels for accuracy, one per input: an IDX1 file or a `.npy` array of shape `[N]`
/// holding integers (any width) or integral floats, each in `0..classes`. The range
/// selects from either kind as it does from the inputs. A bad value is an error that
/// names the file, its index and the value.
pub fn load_labels(
    path: &Path,
    range: Option<(Option<usize>, Option<usize>)>,
    classes: usize,
) -> Result<Vec<usize>, RunError> {
    if is_idx(path) {
        let len = idx_len(path)?;
        let r = resolve(range.unwrap_or((None, None)), len, path)?;
        let start = r.start;
        let labels = read_idx_labels(path, r)?;
        return labels
            .iter()
            .enumerate()
            .map(|(i, &v)| label(path, start + i, NpyNumber::Int(v.into()), classes))
            .collect();
    }
    let (shape, values) = read_npy_numbers(path)?;
    if shape.len() != 1 {
        return Err(RunError::new(format!(
            "`{}` holds labels of shape {shape:?}; expected one dimension [N]",
            path.display()
        ))
        .hint("save a flat array: np.save(path, labels.reshape(-1))"));
    }
    let r = resolve(range.unwrap_or((None, None)), values.len(), path)?;
    let start = r.start;
    values[r]
        .iter()
        .enumerate()
        .map(|(i, &v)| label(path, start + i, v, classes))
        .collect()
}

/// One label checked: an integer, or an integral float, in `0..classes`.
fn label(path: &Path, index: usize, v: NpyNumber, classes: usize) -> Result<usize, RunError> {
    let (ok, what) = match v {
        NpyNumber::Int(i) => (usize::try_from(i).ok().filter(|&c| c < classes), ""),
        NpyNumber::Float(f) if f.fract() != 0.0 || !f.is_finite() => {
            (None, " (labels must be whole numbers)")
        }
        NpyNumber::Float(f) => ((f >= 0.0 && f < classes as f64).then_some(f as usize), ""),
    };
    ok.ok_or_else(|| {
        let why = if what.is_empty() {
            format!(" (the model has {classes} classes: 0..{classes})")
        } else {
            what.to_string()
        };
        RunError::new(format!("`{}`: label {index} is {v}{why}", path.display())).hint(format!(
            "labels are class numbers 0 to {}; integer or integral float .npy, or IDX1",
            classes.saturating_sub(1)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_say_what_is_wrong() {
        assert_eq!(parse_range("3..7"), Ok((Some(3), Some(7))));
        assert_eq!(parse_range("..7"), Ok((None, Some(7))));
        assert_eq!(parse_range("3.."), Ok((Some(3), None)));
        assert!(parse_range("100..50").unwrap_err().contains("reversed"));
        assert!(parse_range("5..5").unwrap_err().contains("empty"));
        let p = Path::new("x.npy");
        let msg = |r, len| resolve(r, len, p).unwrap_err().to_string();
        assert!(msg((Some(10), None), 10).contains("is empty"));
        assert!(msg((Some(12), None), 10).contains("is reversed"));
        assert!(msg((None, Some(0)), 10).contains("is empty"));
        assert!(msg((Some(5), Some(11)), 10).contains("not within the 10 items"));
        assert_eq!(resolve((None, Some(4)), 10, p).unwrap(), 0..4);
    }

    #[test]
    fn labels_are_whole_class_numbers() {
        let p = Path::new("l.npy");
        assert_eq!(label(p, 0, NpyNumber::Int(9), 10).unwrap(), 9);
        assert_eq!(label(p, 0, NpyNumber::Float(3.0), 10).unwrap(), 3);
        for (v, part) in [
            (NpyNumber::Int(10), "is 10 (the model has 10 classes"),
            (NpyNumber::Int(-1), "is -1"),
            (NpyNumber::Int(300), "is 300"),
            (NpyNumber::Float(1.5), "is 1.5 (labels must be whole"),
            (NpyNumber::Float(-1.0), "is -1.0 (the model"),
            (NpyNumber::Float(f64::NAN), "is NaN (labels must be whole"),
            (NpyNumber::Float(f64::INFINITY), "is inf"),
        ] {
            let e = label(p, 7, v, 10).unwrap_err().to_string();
            assert!(e.contains("`l.npy`: label 7 ") && e.contains(part), "{e}");
        }
    }
}
