//! IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only one
//! MNIST uses), the number of dimensions, then each dimension as a
//! big-endian u32, then the data in row-major order. Images are IDX3
//! `[N, rows, cols]`, labels IDX1 `[N]`.
//!
//! Reading streams: only the header and the requested range are read (after
//! decompressing what precedes it), so a small slice of a big file is cheap.

use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::Range;
use std::path::Path;

use flate2::read::GzDecoder;

use super::{IoError, IoErrorKind};
use crate::tensor::Tensor;

const HINT: &str = "expected an MNIST-style IDX file (e.g. train-images-idx3-ubyte[.gz])";

/// Opens `path`, transparently un-gzipping if it starts with the gzip magic.
fn open(path: &Path) -> Result<Box<dyn Read>, IoError> {
    let mut f = BufReader::new(File::open(path).map_err(|e| IoError::os(path, &e, "read"))?);
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| IoError::os(path, &e, "read"))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(f);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(GzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads the header and checks it has `ndims` dimensions of unsigned bytes.
fn header(path: &Path, r: &mut dyn Read, ndims: u8) -> Result<Vec<usize>, IoError> {
    let mut m = [0u8; 4];
    r.read_exact(&mut m)
        .map_err(|e| IoError::os(path, &e, "read"))?;
    if m[0] != 0 || m[1] != 0 || m[2] != 0x08 || m[3] != ndims {
        let what = format!("magic 00 00 08 {ndims:02x} (unsigned bytes, {ndims} dims)");
        return Err(IoError::new(
            path,
            IoErrorKind::BadFormat,
            what,
            format!("{:02x} {:02x} {:02x} {:02x}", m[0], m[1], m[2], m[3]),
            HINT,
        ));
    }
    let mut dims = Vec::with_capacity(ndims as usize);
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        r.read_exact(&mut d)
            .map_err(|e| IoError::os(path, &e, "read"))?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    Ok(dims)
}

/// Skips `start·item` bytes and reads `count·item` bytes.
fn read_range(
    path: &Path,
    r: &mut dyn Read,
    n: usize,
    range: &Range<usize>,
    item: usize,
) -> Result<Vec<u8>, IoError> {
    if range.start > range.end || range.end > n {
        return Err(IoError::new(
            path,
            IoErrorKind::OutOfRange,
            format!("a range within 0..{n}"),
            format!("{range:?}"),
            "the file holds fewer items than requested",
        ));
    }
    let too_big = || {
        IoError::new(
            path,
            IoErrorKind::BadFormat,
            "dimensions whose product fits in memory",
            format!("item size {item} for range {range:?}"),
            HINT,
        )
    };
    let skip = range.start.checked_mul(item).ok_or_else(too_big)? as u64;
    let want = range.len().checked_mul(item).ok_or_else(too_big)? as u64;
    let copied = std::io::copy(&mut r.take(skip), &mut std::io::sink())
        .map_err(|e| IoError::os(path, &e, "read"))?;
    // Grow the buffer as data arrives rather than trusting the header's
    // sizes for one big allocation.
    let mut buf = Vec::new();
    r.take(want)
        .read_to_end(&mut buf)
        .map_err(|e| IoError::os(path, &e, "read"))?;
    if copied < skip || (buf.len() as u64) < want {
        return Err(IoError::os(
            path,
            &std::io::ErrorKind::UnexpectedEof.into(),
            "read",
        ));
    }
    Ok(buf)
}

/// Images `range` of an IDX3 file as f32 `[n, 1, rows, cols]`, scaled to
/// `[0, 1]` by dividing by 255 (what `torchvision.transforms.ToTensor` does).
pub fn read_idx_images(path: &Path, range: Range<usize>) -> Result<Tensor<f32>, IoError> {
    let mut r = open(path)?;
    let dims = header(path, r.as_mut(), 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    let item = rows * cols;
    let bytes = read_range(path, r.as_mut(), n, &range, item)?;
    let data = bytes.iter().map(|&b| b as f32 / 255.0).collect();
    Ok(Tensor {
        shape: vec![range.len(), 1, rows, cols],
        data,
    })
}

/// Labels `range` of an IDX1 file.
pub fn read_idx_labels(path: &Path, range: Range<usize>) -> Result<Vec<u8>, IoError> {
    let mut r = open(path)?;
    let dims = header(path, r.as_mut(), 1)?;
    read_range(path, r.as_mut(), dims[0], &range, 1)
}

/// Number of items an IDX file announces (images or labels), from its header.
pub fn idx_len(path: &Path) -> Result<usize, IoError> {
    let mut r = open(path)?;
    let mut m = [0u8; 4];
    r.read_exact(&mut m)
        .map_err(|e| IoError::os(path, &e, "read"))?;
    let mut d = [0u8; 4];
    if m[0] != 0 || m[1] != 0 || m[3] == 0 {
        return Err(IoError::new(
            path,
            IoErrorKind::BadFormat,
            "an IDX magic 00 00 tt nn",
            format!("{m:02x?}"),
            HINT,
        ));
    }
    r.read_exact(&mut d)
        .map_err(|e| IoError::os(path, &e, "read"))?;
    Ok(u32::from_be_bytes(d) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::fs;
    use std::io::Write;

    use crate::io::tmp;

    /// Three 2x2 images with pixel values 0..12, and labels 7, 8, 9.
    fn images() -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
        v.extend(0u8..12);
        v
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_plain_and_gzip_ranges() {
        for (name, bytes) in [("i.idx", images()), ("i.idx.gz", gz(&images()))] {
            let p = tmp(name);
            fs::write(&p, bytes).unwrap();
            let t = read_idx_images(&p, 1..3).unwrap();
            assert_eq!(t.shape, vec![2, 1, 2, 2]);
            assert_eq!(t.data[0], 4.0 / 255.0);
            assert_eq!(t.data[7], 11.0 / 255.0);
            assert_eq!(idx_len(&p).unwrap(), 3);
        }
        let p = tmp("l.idx.gz");
        fs::write(&p, gz(&[0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).unwrap();
        assert_eq!(read_idx_labels(&p, 0..3).unwrap(), vec![7, 8, 9]);
        assert_eq!(read_idx_labels(&p, 2..2).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn errors_are_values() {
        let p = tmp("bad.idx");
        let kind = |bytes: &[u8], labels: bool, range: Range<usize>| {
            fs::write(&p, bytes).unwrap();
            if labels {
                read_idx_labels(&p, range).unwrap_err().kind
            } else {
                read_idx_images(&p, range).unwrap_err().kind
            }
        };
        let img = images();
        assert_eq!(kind(&img[..20], false, 0..3), IoErrorKind::Truncated);
        assert_eq!(kind(&img[..6], false, 0..1), IoErrorKind::Truncated);
        assert_eq!(kind(&img, false, 0..4), IoErrorKind::OutOfRange);
        assert_eq!(kind(&img, true, 0..1), IoErrorKind::BadFormat);
        assert_eq!(
            kind(b"hello world, not idx", false, 0..1),
            IoErrorKind::BadFormat
        );
        let z = gz(&img);
        assert_eq!(kind(&z[..z.len() / 2], false, 0..3), IoErrorKind::Truncated);
        let mut corrupt = z.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
        let k = kind(&corrupt, false, 0..3);
        assert!(
            matches!(k, IoErrorKind::BadFormat | IoErrorKind::Truncated),
            "{k:?}"
        );
        let e = read_idx_images(&tmp("nope.idx"), 0..1).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::NotFound);
        assert!(e.to_string().contains("nope.idx"));
    }
}
