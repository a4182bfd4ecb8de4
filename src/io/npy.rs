//! NumPy `.npy` files of f32 or f64, little-endian, C order (format
//! versions 1.0, 2.0 and 3.0).
//!
//! Layout: magic `\x93NUMPY`, major and minor version bytes, header length
//! (u16 LE in v1, u32 LE in v2/v3), an ASCII Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with
//! spaces and ended by `\n`, then the raw data.

use std::path::Path;

use super::{atomic_write, decode_le, encode_le, read_all, Dtype, IoError, IoErrorKind};
use crate::tensor::{numel, Scalar, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

/// An array whose element type is only known after reading the header.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyArray {
    F32(Tensor<f32>),
    F64(Tensor<f64>),
}

/// Reads an f32 or f64 array, whichever the file holds.
pub fn read_npy_any(path: &Path) -> Result<NpyArray, IoError> {
    let bytes = read_all(path)?;
    let (dtype, shape, data) = parse(path, &bytes)?;
    Ok(match dtype {
        Dtype::F32 => NpyArray::F32(Tensor {
            shape,
            data: decode_le(data, dtype),
        }),
        Dtype::F64 => NpyArray::F64(Tensor {
            shape,
            data: decode_le(data, dtype),
        }),
    })
}

/// Reads an array whose dtype must be exactly `T`'s.
pub fn read_npy<T: Scalar>(path: &Path) -> Result<Tensor<T>, IoError> {
    let bytes = read_all(path)?;
    let (dtype, shape, data) = parse(path, &bytes)?;
    if dtype != Dtype::of::<T>() {
        return Err(IoError::new(
            path,
            IoErrorKind::WrongDtype,
            T::NAME,
            dtype.name(),
            format!(
                "convert with numpy's astype, or read it as {}",
                dtype.name()
            ),
        ));
    }
    Ok(Tensor {
        shape,
        data: decode_le(data, dtype),
    })
}

/// Writes a C-order little-endian array (format 1.0, or 2.0 if the header
/// would not fit in 64 KiB), atomically.
pub fn write_npy<T: Scalar>(path: &Path, t: &Tensor<T>) -> Result<(), IoError> {
    let descr = match Dtype::of::<T>() {
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
    };
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts on a 64-byte boundary, as numpy does.
    let v1 = header.len() + 11 < 65536;
    let prefix = if v1 { 10 } else { 12 };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - prefix - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + t.numel() * Dtype::of::<T>().size());
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend([1u8, 0]);
        out.extend((header.len() as u16).to_le_bytes());
    } else {
        out.extend([2u8, 0]);
        out.extend((header.len() as u32).to_le_bytes());
    }
    out.extend(header.as_bytes());
    out.extend(encode_le(&t.data));
    atomic_write(path, &out)
}

fn bad(path: &Path, expected: impl Into<String>, found: impl Into<String>) -> IoError {
    IoError::new(
        path,
        IoErrorKind::BadFormat,
        expected,
        found,
        "write the file with numpy.save (not pickle, not savez)",
    )
}

fn truncated(path: &Path, expected: String, found: usize) -> IoError {
    IoError::new(
        path,
        IoErrorKind::Truncated,
        expected,
        format!("{found} bytes"),
        "the file was cut short; write it again",
    )
}

/// Splits a file into dtype, shape and data bytes, validating everything.
fn parse<'a>(path: &Path, b: &'a [u8]) -> Result<(Dtype, Vec<usize>, &'a [u8]), IoError> {
    if !b.starts_with(MAGIC) && !MAGIC.starts_with(b) {
        let head: Vec<u8> = b.iter().take(6).copied().collect();
        return Err(bad(path, "the .npy magic \\x93NUMPY", format!("{head:?}")));
    }
    if b.len() < 8 {
        return Err(truncated(path, "a 10-byte .npy preamble".into(), b.len()));
    }
    let (hlen, start) = match b[6] {
        1 if b.len() >= 10 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        1..=3 => return Err(truncated(path, "a complete .npy preamble".into(), b.len())),
        v => {
            return Err(bad(
                path,
                "format version 1, 2 or 3",
                format!("version {v}"),
            ))
        }
    };
    let Some(header) = b.get(start..start + hlen) else {
        return Err(truncated(
            path,
            format!("a {hlen}-byte header"),
            b.len() - start,
        ));
    };
    let header = std::str::from_utf8(header)
        .map_err(|_| bad(path, "an ASCII/UTF-8 header", "invalid bytes"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| bad(path, "a 'descr' entry", header))?;
    let dtype = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        other => {
            return Err(IoError::new(
                path,
                IoErrorKind::WrongDtype,
                "little-endian f32 ('<f4') or f64 ('<f8')",
                format!("'{other}'"),
                "convert with arr.astype('<f4') before saving",
            ))
        }
    };
    match dict_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => {
            return Err(bad(
                path,
                "C order (fortran_order False)",
                "Fortran order; save np.ascontiguousarray(arr) instead",
            ))
        }
        other => return Err(bad(path, "a fortran_order entry", format!("{other:?}"))),
    }
    let shape_s =
        dict_value(header, "shape").ok_or_else(|| bad(path, "a 'shape' entry", header))?;
    let inner = shape_s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(path, "a shape tuple", shape_s))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(path, "integer dimensions", shape_s))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let need = shape
        .iter()
        .try_fold(Dtype::size(dtype), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(path, "a shape whose size fits in memory", shape_s))?;
    let data = &b[start + hlen..];
    if data.len() < need {
        return Err(truncated(
            path,
            format!("{need} data bytes for shape {shape:?} ({})", dtype.name()),
            data.len(),
        ));
    }
    if data.len() > need {
        return Err(bad(
            path,
            format!("{need} data bytes for shape {shape:?}"),
            format!("{} bytes (trailing data)", data.len()),
        ));
    }
    debug_assert_eq!(numel(&shape) * dtype.size(), need);
    Ok((dtype, shape, data))
}

/// The raw text of `'key': value` in the header dict, up to the next top-level comma.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let pat = format!("'{key}':");
    let at = header.find(&pat)? + pat.len();
    let rest = header[at..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fnet-npy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trips_and_layout() {
        let p = tmp("a.npy");
        let t = Tensor::from_vec(vec![2, 3], vec![1.0f32, 2., 3., 4., 5., -6.]).unwrap();
        write_npy(&p, &t).unwrap();
        let bytes = fs::read(&p).unwrap();
        assert_eq!((bytes.len() - 24) % 64, 0, "data starts 64-aligned");
        assert_eq!(read_npy::<f32>(&p).unwrap(), t);
        let s = Tensor::from_vec(vec![3], vec![0.1f64, 0.2, 0.3]).unwrap();
        write_npy(&p, &s).unwrap();
        assert_eq!(read_npy_any(&p).unwrap(), NpyArray::F64(s.clone()));
        let z = Tensor::from_vec(vec![], vec![7.0f64]).unwrap();
        write_npy(&p, &z).unwrap();
        assert_eq!(read_npy::<f64>(&p).unwrap(), z);
    }

    /// Replaces the first occurrence of `from` by the same-length `to`.
    fn patch(b: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        let mut v = b.to_vec();
        v[at..at + to.len()].copy_from_slice(to);
        v
    }

    #[test]
    fn errors_are_values() {
        let p = tmp("b.npy");
        let t = Tensor::from_vec(vec![4], vec![1.0f32; 4]).unwrap();
        write_npy(&p, &t).unwrap();
        let good = fs::read(&p).unwrap();
        let kind = |bytes: &[u8]| {
            fs::write(&p, bytes).unwrap();
            read_npy::<f32>(&p).unwrap_err().kind
        };
        assert_eq!(kind(&good[..good.len() - 1]), IoErrorKind::Truncated);
        assert_eq!(kind(&good[..20]), IoErrorKind::Truncated);
        assert_eq!(kind(&good[..3]), IoErrorKind::Truncated);
        assert_eq!(kind(b"PK\x03\x04 not npy at all"), IoErrorKind::BadFormat);
        assert_eq!(
            kind(&[good.clone(), vec![0]].concat()),
            IoErrorKind::BadFormat
        );
        assert_eq!(kind(&patch(&good, b"<f4", b"<i4")), IoErrorKind::WrongDtype);
        assert_eq!(kind(&patch(&good, b"<f4", b">f4")), IoErrorKind::WrongDtype);
        assert_eq!(
            kind(&patch(&good, b"False", b"True ")),
            IoErrorKind::BadFormat
        );
        assert_eq!(
            kind(&patch(&good, b"(4,)", b"(5,)")),
            IoErrorKind::Truncated
        );
        assert_eq!(
            kind(&patch(&good, b"(4,)", b"(x,)")),
            IoErrorKind::BadFormat
        );
        assert_eq!(
            kind(&patch(&good, &[1, 0], &[9, 0])),
            IoErrorKind::BadFormat
        );
        fs::write(&p, &good).unwrap();
        let e = read_npy::<f64>(&p).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::WrongDtype);
        assert!(e.to_string().contains("b.npy"));
        let e = read_npy::<f32>(&tmp("missing.npy")).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::NotFound);
    }
}
