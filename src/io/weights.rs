//! Named tensors in safetensors files (weights, checkpoints, golden fixtures).
//!
//! Names are kept in a `BTreeMap`, so iteration order is sorted and stable:
//! `SafeTensors::names()` comes from a hash map and its order changes from
//! run to run. Files are written through [`super::write_output`]: atomically, and
//! never over an input of the command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype as StDtype, SafeTensorError, SafeTensors, TensorView};

use super::{decode_le, encode_le, read_all, write_output, Dtype, IoError, IoErrorKind};
use crate::tensor::{Scalar, Tensor};

/// The contents of one safetensors file, all of element type `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightFile<T> {
    /// Where it came from, for error messages.
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor<T>>,
}

impl<T: Scalar> WeightFile<T> {
    /// Sorted tensor names.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// A tensor by name, optionally checking its shape.
    pub fn get(&self, name: &str, shape: Option<&[usize]>) -> Result<&Tensor<T>, IoError> {
        let t = self.tensors.get(name).ok_or_else(|| {
            let have = self.names();
            let shown = have.iter().take(8).copied().collect::<Vec<_>>().join(", ");
            IoError::new(
                &self.path,
                IoErrorKind::MissingTensor,
                format!("a tensor named '{name}'"),
                format!(
                    "{} tensors: {shown}{}",
                    have.len(),
                    if have.len() > 8 { ", ..." } else { "" }
                ),
                "check the parameter name against the model definition",
            )
        })?;
        if let Some(s) = shape {
            if t.shape != s {
                return Err(IoError::new(
                    &self.path,
                    IoErrorKind::WrongShape,
                    format!("'{name}' with shape {s:?}"),
                    format!("shape {:?}", t.shape),
                    "the file was saved from a model with different layer sizes",
                ));
            }
        }
        Ok(t)
    }
}

/// Reads every tensor; each must be stored as `T`'s dtype (F32 or F64).
pub fn read_weights<T: Scalar>(path: &Path) -> Result<WeightFile<T>, IoError> {
    parse_weights(path, &read_all(path)?)
}

/// `read_weights` on bytes already read from `path` (named in errors).
pub fn parse_weights<T: Scalar>(path: &Path, bytes: &[u8]) -> Result<WeightFile<T>, IoError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        // A header or data section shorter than announced means the file was
        // cut short; anything else is a different format or corruption.
        let short_header =
            header_len(bytes).is_none_or(|n| n.saturating_add(8) > bytes.len() as u64);
        let truncated = short_header
            && bytes.len() < 8 + 100_000_000
            && !matches!(e, SafeTensorError::HeaderTooLarge)
            || matches!(e, SafeTensorError::MetadataIncompleteBuffer);
        IoError::new(
            path,
            if truncated {
                IoErrorKind::Truncated
            } else {
                IoErrorKind::BadFormat
            },
            "a safetensors file",
            format!("{} bytes that do not parse ({e})", bytes.len()),
            "the file is damaged or not safetensors; save it again with safetensors' save_file",
        )
    })?;
    let want = Dtype::of::<T>();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            StDtype::F32 => Dtype::F32,
            StDtype::F64 => Dtype::F64,
            other => {
                return Err(IoError::new(
                    path,
                    IoErrorKind::WrongDtype,
                    format!("'{name}' as {}", want.name()),
                    format!("{other:?}"),
                    "convert the tensor to float32/float64 before saving",
                ))
            }
        };
        if dtype != want {
            return Err(IoError::new(
                path,
                IoErrorKind::WrongDtype,
                format!("'{name}' as {}", want.name()),
                dtype.name(),
                format!("read the file as {} or convert it", dtype.name()),
            ));
        }
        let t = Tensor {
            shape: view.shape().to_vec(),
            data: decode_le(view.data(), dtype),
        };
        tensors.insert(name, t);
    }
    Ok(WeightFile {
        path: path.to_path_buf(),
        tensors,
    })
}

/// The header's string metadata of the safetensors `bytes` read from `path`, or
/// `None` when it has none. Errors as `read_weights`.
pub fn parse_metadata(
    path: &Path,
    bytes: &[u8],
) -> Result<Option<std::collections::HashMap<String, String>>, IoError> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        IoError::new(
            path,
            IoErrorKind::BadFormat,
            "a safetensors file",
            format!("{} bytes that do not parse ({e})", bytes.len()),
            "the file is damaged or not safetensors",
        )
    })?;
    Ok(meta.metadata().clone())
}

fn header_len(bytes: &[u8]) -> Option<u64> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// One line per tensor holding NaN or infinite values (name, count, first position),
/// for the commands to print as warnings: such weights run, but to NaN outputs.
pub fn non_finite_warnings<T: Scalar>(
    path: &Path,
    tensors: &BTreeMap<String, Tensor<T>>,
) -> Vec<String> {
    tensors
        .iter()
        .filter_map(|(name, t)| {
            let mut bad = t
                .data
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.to_f64().is_finite());
            let (first, value) = bad.next()?;
            let count = 1 + bad.count();
            Some(format!(
                "warning: `{}`: tensor `{name}` holds {count} NaN or infinite value{} \
                 (first at flat index {first}: {}); outputs that depend on it will be NaN",
                path.display(),
                if count == 1 { "" } else { "s" },
                value.to_f64()
            ))
        })
        .collect()
}

/// Writes named tensors atomically, in sorted name order.
pub fn write_weights<T: Scalar>(
    path: &Path,
    tensors: &BTreeMap<String, Tensor<T>>,
) -> Result<(), IoError> {
    write_weights_with_metadata(path, tensors, None)
}

/// `write_weights` plus safetensors' free-form string metadata (the header's
/// `__metadata__`), which compiled artifacts use for their graph.
pub fn write_weights_with_metadata<T: Scalar>(
    path: &Path,
    tensors: &BTreeMap<String, Tensor<T>>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<(), IoError> {
    let out = safetensors_bytes(path, tensors, metadata)?;
    write_output(path, &[], |w| w.write_all(&out))
}

/// The bytes of a safetensors file, for [`write_output`] with inputs to guard; `path`
/// only names the file in errors.
pub fn safetensors_bytes<T: Scalar>(
    path: &Path,
    tensors: &BTreeMap<String, Tensor<T>>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, IoError> {
    let dtype = match Dtype::of::<T>() {
        Dtype::F32 => StDtype::F32,
        Dtype::F64 => StDtype::F64,
    };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), encode_le(&t.data), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| TensorView::new(dtype, s.clone(), b).map(|v| (n.as_str(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            IoError::new(
                path,
                IoErrorKind::WrongShape,
                "tensors whose data matches their shapes",
                e.to_string(),
                "build tensors with Tensor::from_vec, which checks this",
            )
        })?;
    let out = safetensors::serialize(views, metadata).map_err(|e| {
        IoError::new(
            path,
            IoErrorKind::BadFormat,
            "serialisable tensors",
            e.to_string(),
            "tensor names must be unique and the header under 100 MB",
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::io::tmp;

    fn sample() -> BTreeMap<String, Tensor<f32>> {
        let mut m = BTreeMap::new();
        for (i, n) in ["zeta", "alpha", "mid.weight"].iter().enumerate() {
            let t = Tensor::from_vec(vec![2, i + 1], vec![i as f32 + 0.5; 2 * (i + 1)]).unwrap();
            m.insert(n.to_string(), t);
        }
        m
    }

    #[test]
    fn round_trip_sorted() {
        let p = tmp("w.safetensors");
        write_weights(&p, &sample()).unwrap();
        let w = read_weights::<f32>(&p).unwrap();
        assert_eq!(w.names(), vec!["alpha", "mid.weight", "zeta"]);
        assert_eq!(w.tensors, sample());
        assert_eq!(w.get("zeta", Some(&[2, 1])).unwrap().data[0], 0.5);
        // Written bytes are deterministic.
        let a = fs::read(&p).unwrap();
        write_weights(&p, &sample()).unwrap();
        assert_eq!(a, fs::read(&p).unwrap());
    }

    #[test]
    fn non_finite_tensors_are_named() {
        let mut m = sample();
        m.get_mut("mid.weight").unwrap().data[2] = f32::NAN;
        m.get_mut("mid.weight").unwrap().data[3] = f32::INFINITY;
        let w = non_finite_warnings(Path::new("w.safetensors"), &m);
        assert_eq!(w.len(), 1, "{w:?}");
        for part in [
            "w.safetensors",
            "`mid.weight`",
            "2 NaN or infinite values",
            "index 2: NaN",
        ] {
            assert!(w[0].contains(part), "{}", w[0]);
        }
        assert!(non_finite_warnings(Path::new("w"), &sample()).is_empty());
    }

    #[test]
    fn errors_are_values() {
        let p = tmp("e.safetensors");
        write_weights(&p, &sample()).unwrap();
        let w = read_weights::<f32>(&p).unwrap();
        let e = w.get("beta", None).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::MissingTensor);
        assert!(e.to_string().contains("alpha"), "{e}");
        assert_eq!(
            w.get("alpha", Some(&[3])).unwrap_err().kind,
            IoErrorKind::WrongShape
        );
        assert_eq!(
            read_weights::<f64>(&p).unwrap_err().kind,
            IoErrorKind::WrongDtype
        );

        let good = fs::read(&p).unwrap();
        let q = tmp("t.safetensors");
        for cut in [good.len() - 4, 30, 4] {
            fs::write(&q, &good[..cut]).unwrap();
            let e = read_weights::<f32>(&q).unwrap_err();
            assert!(
                matches!(e.kind, IoErrorKind::Truncated | IoErrorKind::BadFormat),
                "cut {cut}: {e}"
            );
            assert!(e.to_string().contains("t.safetensors"));
        }
        fs::write(&q, b"definitely not a safetensors file").unwrap();
        assert_eq!(
            read_weights::<f32>(&q).unwrap_err().kind,
            IoErrorKind::BadFormat
        );
        assert_eq!(
            read_weights::<f32>(&tmp("none")).unwrap_err().kind,
            IoErrorKind::NotFound
        );
    }
}
