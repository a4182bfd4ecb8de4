//! The one way fnet writes a file the user named: [`write_output`].
//!
//! Every command that writes (`init`, `run -o`, `compile -o`, the OpenCL program
//! cache, and the training, search and plot commands still to come) goes through it,
//! so each of them gets the same three guarantees:
//!
//! - an output path that resolves to one of the command's inputs is refused: the same
//!   path, a symlink to it, or a hard link to it (same device and inode);
//! - the bytes go to a temporary file in the output's directory, are flushed to disk,
//!   and only then renamed over the output, so a failure leaves the old file intact;
//! - nothing is written until the command has succeeded: commands compute and validate
//!   everything first and call [`write_output`] last. [`check_output`] runs the path
//!   checks alone, so a command can refuse a bad `-o` before doing any work.
//!
//! The `write_*` functions of the format modules are [`write_output`] with no inputs.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{IoError, IoErrorKind};

/// Refuses `path` as an output when its directory is missing or it is the same file as
/// one of `inputs`; the error names both and suggests another name.
pub fn check_output(path: &Path, inputs: &[&Path]) -> Result<(), IoError> {
    let Some(name) = path.file_name() else {
        return Err(IoError::new(
            path,
            IoErrorKind::Os,
            "an output file path",
            "a path without a file name",
            "give a path that ends in a file name",
        ));
    };
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(IoError::new(
            path,
            IoErrorKind::NotFound,
            "an output path in an existing directory",
            format!("that directory `{}` does not exist", dir.display()),
            format!("create it first: mkdir -p {}", dir.display()),
        ));
    }
    if path.is_dir() {
        return Err(IoError::new(
            path,
            IoErrorKind::Os,
            "an output file path",
            "a directory",
            format!("name a file inside it, e.g. {}", path.join("out").display()),
        ));
    }
    if let Some(input) = inputs.iter().find(|i| same_file(path, i)) {
        let also = if *input == path {
            String::new()
        } else {
            format!(" (`{}`)", input.display())
        };
        return Err(IoError::new(
            path,
            IoErrorKind::OutputIsInput,
            "an output file that is not an input of this command",
            format!("the same file as an input{also}"),
            format!(
                "nothing was written; write to a new file, e.g. {}",
                path.with_file_name(suggestion(name)).display()
            ),
        ));
    }
    Ok(())
}

/// Starts a run directory over (`--force`): removes the files `names` inside `dir`
/// that an earlier run wrote, and the `subdirs` (checkpoints). Each name is first
/// checked against `inputs` as [`check_output`] does, so a model or data file that a
/// user keeps in the run directory under one of those names is refused, never
/// deleted. `dir` must exist.
pub fn clear_outputs(
    dir: &Path,
    names: &[&str],
    subdirs: &[&Path],
    inputs: &[&Path],
) -> Result<(), IoError> {
    for name in names {
        check_output(&dir.join(name), inputs)?;
    }
    for sub in subdirs {
        let _ = fs::remove_dir_all(sub);
    }
    for name in names {
        let _ = fs::remove_file(dir.join(name));
    }
    Ok(())
}

/// Checks `path` against `inputs` as [`check_output`] does, then writes what `write`
/// produces to it atomically: into a temporary file beside it, synced, then renamed.
/// On any error the temporary file is removed and the old `path` is left as it was.
pub fn write_output(
    path: &Path,
    inputs: &[&Path],
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), IoError> {
    check_output(path, inputs)?;
    // Replace what a symlink points at, not the link itself.
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => path.canonicalize().unwrap_or(path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    let tmp = temp_path(&target);
    let result = (|| {
        // A fresh file only: never follow a link or reuse a file planted at that name.
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Ok(old) = fs::metadata(&target) {
            // Keep the permissions the user gave the file it replaces.
            let _ = file.set_permissions(old.permissions());
        }
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        // Best effort: make the rename itself durable.
        if let Ok(d) = fs::File::open(parent_dir(&target)) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        // Best effort: the write error matters more than a leftover temporary file.
        let _ = fs::remove_file(&tmp);
        IoError::os(path, &e, "write")
    })
}

/// The directory `path` is written in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A hidden name beside `path`, unique to this process and to this call, so two
/// threads writing the same output (program caches) never share a temporary file.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// `out.npy` → `out.new.npy`, for the hint.
fn suggestion(name: &std::ffi::OsStr) -> String {
    let p = Path::new(name);
    match (p.file_stem(), p.extension()) {
        (Some(stem), Some(ext)) => {
            format!("{}.new.{}", stem.to_string_lossy(), ext.to_string_lossy())
        }
        _ => format!("{}.new", name.to_string_lossy()),
    }
}

/// Whether `a` and `b` name the same file: equal paths, equal canonical paths
/// (symlinks), or on Unix the same device and inode (hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else {
        // An output that does not exist yet cannot be an existing input.
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
            return true;
        }
    }
    let _ = (ma, mb);
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bytes(path: &Path, inputs: &[&Path], bytes: &[u8]) -> Result<(), IoError> {
        write_output(path, inputs, |w| w.write_all(bytes))
    }

    #[test]
    fn replaces_atomically_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_bytes(&p, &[], b"one").unwrap();
        write_bytes(&p, &[], b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let bad = dir.path().join("no-such-dir").join("b.bin");
        let err = write_bytes(&bad, &[], b"x").unwrap_err();
        assert!(err.to_string().contains("mkdir -p"), "{err}");
        // A failing writer leaves the old file and no temporary file behind.
        let err = write_output(&p, &[], |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_inputs_through_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("x.npy");
        fs::write(&input, b"precious").unwrap();
        let link = dir.path().join("link.npy");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.path().join("hard.npy");
        fs::hard_link(&input, &hard).unwrap();
        let dotted = dir.path().join(".").join("x.npy");
        for out in [&input, &link, &hard, &dotted] {
            let err = write_bytes(out, &[&input], b"oops").unwrap_err();
            let s = err.to_string();
            assert!(s.contains("same file as an input"), "{s}");
            assert!(s.contains("x.new.npy") || s.contains(".new.npy"), "{s}");
        }
        // The input is named as the user gave it, the link the other way round too.
        assert!(write_bytes(&input, &[&link], b"oops").is_err());
        assert_eq!(fs::read(&input).unwrap(), b"precious");
        // A symlink to another file is followed: the link stays, its target changes.
        let other = dir.path().join("other.npy");
        fs::write(&other, b"old").unwrap();
        let to_other = dir.path().join("to_other.npy");
        std::os::unix::fs::symlink(&other, &to_other).unwrap();
        write_bytes(&to_other, &[&input], b"new").unwrap();
        assert!(fs::symlink_metadata(&to_other)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&other).unwrap(), b"new");
        let err = write_bytes(dir.path(), &[], b"x").unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }
}
