//! File formats: `.npy` arrays, IDX (MNIST) images and labels, and
//! safetensors weight files; every write goes through [`output::write_output`].
//!
//! Every failure is an [`IoError`] value that names the file, says what was
//! expected and what was found, and gives a hint. Nothing here panics on a
//! missing, truncated or corrupt file.

pub mod artifact;
pub mod idx;
pub mod npy;
pub mod output;
pub mod weights;

pub use output::{check_output, clear_outputs, write_output};

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::tensor::Scalar;

/// What went wrong, coarsely, for callers that want to branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoErrorKind {
    /// The file does not exist.
    NotFound,
    /// The operating system refused (permissions, disk full, …).
    Os,
    /// The file ends before the data it announces.
    Truncated,
    /// Wrong magic number, malformed header, or corrupt compression.
    BadFormat,
    /// The element type is not the one asked for.
    WrongDtype,
    /// A tensor has a different shape than required.
    WrongShape,
    /// A named tensor is absent.
    MissingTensor,
    /// A requested index range is outside the file's contents.
    OutOfRange,
    /// An output path names one of the command's inputs.
    OutputIsInput,
}

impl IoErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::NotFound => "file not found",
            Self::Os => "cannot access file",
            Self::Truncated => "file is truncated",
            Self::BadFormat => "not a valid file of this format",
            Self::WrongDtype => "wrong element type",
            Self::WrongShape => "wrong shape",
            Self::MissingTensor => "missing tensor",
            Self::OutOfRange => "range out of bounds",
            Self::OutputIsInput => "would overwrite an input",
        }
    }
}

/// A file error: which file, what was expected, what was found, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    pub path: PathBuf,
    pub kind: IoErrorKind,
    pub expected: String,
    pub found: String,
    pub hint: String,
}

impl IoError {
    pub fn new(
        path: &Path,
        kind: IoErrorKind,
        expected: impl Into<String>,
        found: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
            expected: expected.into(),
            found: found.into(),
            hint: hint.into(),
        }
    }

    /// Wraps an OS error from opening, reading or writing `path`.
    pub fn os(path: &Path, err: &std::io::Error, doing: &str) -> Self {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::NotFound => Self::new(
                path,
                IoErrorKind::NotFound,
                format!("a file to {doing}"),
                "nothing at this path",
                "check the path and the working directory",
            ),
            K::UnexpectedEof => Self::new(
                path,
                IoErrorKind::Truncated,
                "more bytes",
                "end of file",
                "the file was probably cut short while downloading or writing; fetch it again",
            ),
            K::InvalidData | K::InvalidInput => Self::new(
                path,
                IoErrorKind::BadFormat,
                "a readable stream",
                format!("corrupt data ({err})"),
                "if the file is gzip-compressed it is damaged; fetch it again",
            ),
            _ => Self::new(
                path,
                IoErrorKind::Os,
                format!("to {doing} the file"),
                err.to_string(),
                "check permissions and free disk space",
            ),
        }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: expected {}, found {} (hint: {})",
            self.path.display(),
            self.kind.describe(),
            self.expected,
            self.found,
            self.hint
        )
    }
}

impl std::error::Error for IoError {}

/// Reads a whole file, mapping OS errors to [`IoError`].
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>, IoError> {
    fs::read(path).map_err(|e| IoError::os(path, &e, "read"))
}

/// The two element types files may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    pub fn of<T: Scalar>() -> Self {
        if T::NAME == "f32" {
            Self::F32
        } else {
            Self::F64
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }
}

/// Little-endian bytes of `dtype` to values of `T`; the caller has checked
/// that `bytes.len()` is a multiple of the element size. Exact when the
/// dtype matches `T` (and f32 → f64 is always exact).
pub(crate) fn decode_le<T: Scalar>(bytes: &[u8], dtype: Dtype) -> Vec<T> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| T::from_f64(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                T::from_f64(f64::from_le_bytes(a))
            })
            .collect(),
    }
}

/// Values of `T` to little-endian bytes of `T`'s own dtype.
pub(crate) fn encode_le<T: Scalar>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * Dtype::of::<T>().size());
    for &v in values {
        match Dtype::of::<T>() {
            Dtype::F32 => out.extend((v.to_f64() as f32).to_le_bytes()),
            Dtype::F64 => out.extend(v.to_f64().to_le_bytes()),
        }
    }
    out
}

/// A path in a fresh temporary directory that is removed when the value drops, so
/// unit tests leave nothing behind in /tmp.
#[cfg(test)]
pub(crate) struct TmpPath {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

#[cfg(test)]
impl std::ops::Deref for TmpPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
impl AsRef<Path> for TmpPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
pub(crate) fn tmp(name: &str) -> TmpPath {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    TmpPath { _dir: dir, path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_names_everything() {
        let e = IoError::new(
            Path::new("/x/y.npy"),
            IoErrorKind::WrongDtype,
            "f32",
            "<i8",
            "convert with astype",
        );
        let s = e.to_string();
        for part in ["/x/y.npy", "wrong element type", "f32", "<i8", "astype"] {
            assert!(s.contains(part), "{s}");
        }
    }

    #[test]
    fn le_round_trip() {
        let v = [1.5f32, -0.0, f32::MAX];
        assert_eq!(decode_le::<f32>(&encode_le(&v), Dtype::F32), v);
        let w = [0.1f64, -3.0];
        assert_eq!(decode_le::<f64>(&encode_le(&w), Dtype::F64), w);
    }
}
