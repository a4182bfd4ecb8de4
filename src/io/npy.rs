//! NumPy `.npy` files of f32 or f64, little-endian, C order (format
//! versions 1.0, 2.0 and 3.0).
//!
//! Layout: magic `\x93NUMPY`, major and minor version bytes, header length
//! (u16 LE in v1, u32 LE in v2/v3), an ASCII Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with
//! spaces and ended by `\n`, then the raw data.

use std::path::Path;

use super::{decode_le, encode_le, read_all, write_output, Dtype, IoError, IoErrorKind};
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
    write_output(path, &[], |w| w.write_all(&npy_bytes(t)))
}

/// The bytes of a `.npy` file holding `t`, for [`write_output`] with inputs to guard.
pub fn npy_bytes<T: Scalar>(t: &Tensor<T>) -> Vec<u8> {
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
    out
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

/// Splits a file holding f32 or f64 into dtype, shape and data bytes, validating
/// everything.
fn parse<'a>(path: &Path, b: &'a [u8]) -> Result<(Dtype, Vec<usize>, &'a [u8]), IoError> {
    let (elem, shape, data) = parse_raw(path, b)?;
    let dtype = match elem {
        Elem::Float {
            size: 4,
            big: false,
        } => Dtype::F32,
        Elem::Float {
            size: 8,
            big: false,
        } => Dtype::F64,
        _ => {
            return Err(IoError::new(
                path,
                IoErrorKind::WrongDtype,
                "little-endian f32 ('<f4') or f64 ('<f8')",
                format!("'{}'", elem.descr()),
                "convert with arr.astype('<f4') before saving",
            ))
        }
    };
    Ok((dtype, shape, data))
}

/// The element types a `.npy` header may name that fnet reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    Float {
        size: usize,
        big: bool,
    },
    Int {
        signed: bool,
        size: usize,
        big: bool,
    },
}

impl Elem {
    fn parse(descr: &str) -> Option<Elem> {
        let mut chars = descr.chars();
        let order = chars.next()?;
        let kind = chars.next()?;
        let size: usize = chars.as_str().parse().ok()?;
        let big = match order {
            '<' | '|' | '=' => false,
            '>' => true,
            _ => return None,
        };
        match (kind, size) {
            ('f', 4 | 8) => Some(Elem::Float { size, big }),
            ('i', 1 | 2 | 4 | 8) => Some(Elem::Int {
                signed: true,
                size,
                big,
            }),
            ('u', 1 | 2 | 4 | 8) => Some(Elem::Int {
                signed: false,
                size,
                big,
            }),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Elem::Float { size, .. } | Elem::Int { size, .. } => size,
        }
    }

    fn descr(self) -> String {
        let (big, kind, size) = match self {
            Elem::Float { size, big } => (big, 'f', size),
            Elem::Int { signed, size, big } => (big, if signed { 'i' } else { 'u' }, size),
        };
        format!("{}{kind}{size}", if big { '>' } else { '<' })
    }

    /// One element from its bytes.
    fn decode(self, c: &[u8]) -> NpyNumber {
        let mut a = [0u8; 8];
        let n = c.len();
        match self {
            Elem::Float { big, .. } | Elem::Int { big, .. } if big => {
                a[..n].copy_from_slice(c);
                a[..n].reverse();
            }
            _ => a[..n].copy_from_slice(c),
        }
        let raw = u64::from_le_bytes(a);
        match self {
            Elem::Float { size: 4, .. } => NpyNumber::Float(f32::from_bits(raw as u32) as f64),
            Elem::Float { .. } => NpyNumber::Float(f64::from_bits(raw)),
            Elem::Int { signed: false, .. } => NpyNumber::Int(raw as i128),
            Elem::Int { size, .. } => {
                // Sign-extend from the element's width.
                let shift = 64 - 8 * size as u32;
                NpyNumber::Int((((raw << shift) as i64) >> shift) as i128)
            }
        }
    }
}

/// One element of a label array, exactly as stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NpyNumber {
    Int(i128),
    Float(f64),
}

impl std::fmt::Display for NpyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NpyNumber::Int(v) => write!(f, "{v}"),
            NpyNumber::Float(v) => write!(f, "{v:?}"),
        }
    }
}

/// Reads an array of integers (signed or unsigned, 1 to 8 bytes, either byte order)
/// or floats, each element as stored: the shape and the values. Label files use it;
/// the caller decides which values are acceptable.
pub fn read_npy_numbers(path: &Path) -> Result<(Vec<usize>, Vec<NpyNumber>), IoError> {
    let bytes = read_all(path)?;
    let (elem, shape, data) = parse_raw(path, &bytes)?;
    let values = data
        .chunks_exact(elem.size())
        .map(|c| elem.decode(c))
        .collect();
    Ok((shape, values))
}

/// Splits a file into element type, shape and data bytes, validating everything but
/// which element types the caller accepts.
fn parse_raw<'a>(path: &Path, b: &'a [u8]) -> Result<(Elem, Vec<usize>, &'a [u8]), IoError> {
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
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let elem = Elem::parse(descr).ok_or_else(|| {
        IoError::new(
            path,
            IoErrorKind::WrongDtype,
            "float or integer elements ('<f4', '<f8', '<i8', '|u1', ...)",
            format!("'{descr}'"),
            "convert with arr.astype('<f4') before saving",
        )
    })?;
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
        .try_fold(elem.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(path, "a shape whose size fits in memory", shape_s))?;
    let data = &b[start + hlen..];
    if data.len() < need {
        return Err(truncated(
            path,
            format!("{need} data bytes for shape {shape:?} ({})", elem.descr()),
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
    debug_assert_eq!(numel(&shape) * elem.size(), need);
    Ok((elem, shape, data))
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

    use crate::io::tmp;

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

    /// `.npy` bytes with the given descr and raw data, as numpy writes them.
    fn raw(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        h.push_str(&" ".repeat(63 - (10 + h.len()) % 64));
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend([1u8, 0]);
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn numbers_of_every_integer_width() {
        use NpyNumber::{Float, Int};
        let p = tmp("n.npy");
        let cases: Vec<(&str, Vec<u8>, Vec<NpyNumber>)> = vec![
            ("|u1", vec![0, 9, 255], vec![Int(0), Int(9), Int(255)]),
            ("|i1", vec![1, 0xff, 0x80], vec![Int(1), Int(-1), Int(-128)]),
            (
                "<i2",
                [3i16, -300, 7]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![Int(3), Int(-300), Int(7)],
            ),
            (
                ">i4",
                [5i32, -2, 1 << 20]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![Int(5), Int(-2), Int(1 << 20)],
            ),
            (
                "<u4",
                [4u32, u32::MAX, 0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![Int(4), Int(u32::MAX as i128), Int(0)],
            ),
            (
                "<i8",
                [i64::MIN, 2, -7]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![Int(i64::MIN as i128), Int(2), Int(-7)],
            ),
            (
                "<u8",
                [u64::MAX, 1, 0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![Int(u64::MAX as i128), Int(1), Int(0)],
            ),
            (
                "<f4",
                [1.5f32, -1.0, 3.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![Float(1.5), Float(-1.0), Float(3.0)],
            ),
            (
                ">f8",
                [0.25f64, 2.0, -0.0]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![Float(0.25), Float(2.0), Float(-0.0)],
            ),
        ];
        for (descr, data, want) in cases {
            fs::write(&p, raw(descr, "(3,)", &data)).unwrap();
            assert_eq!(read_npy_numbers(&p).unwrap(), (vec![3], want), "{descr}");
        }
        fs::write(&p, raw("|b1", "(1,)", &[1])).unwrap();
        assert_eq!(
            read_npy_numbers(&p).unwrap_err().kind,
            IoErrorKind::WrongDtype
        );
        fs::write(&p, raw("<i8", "(3,)", &[0; 16])).unwrap();
        assert_eq!(
            read_npy_numbers(&p).unwrap_err().kind,
            IoErrorKind::Truncated
        );
        // The float readers still refuse integers, naming the element type.
        fs::write(&p, raw("<i8", "(1,)", &[0; 8])).unwrap();
        let e = read_npy_any(&p).unwrap_err();
        assert!(e.to_string().contains("'<i8'"), "{e}");
    }
}
