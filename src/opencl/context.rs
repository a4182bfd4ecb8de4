//! An OpenCL device ready to run fnet programs: context, in-order queue, and the
//! program cache. Programs are cached by the hash of their source in memory and, as
//! program binaries, on disk, keyed on the device, platform and driver version; a
//! binary reloads in milliseconds where a build from source takes a second or more.
//! A failed build reports the compiler's log.
//!
//! Kernels are cached one level finer too (`kernels`): each kernel's text, less its
//! name, maps to the program that holds it, so a plan that differs from an earlier one
//! in a few kernels (a FlexConv whose crop changed) builds a program of only those and
//! takes the rest from the programs built before. A first plan's batch is all of its
//! distinct kernels, so its program source, and hence its disk-cache file, is the
//! plan's whole source (less any repeated kernel).

use super::device::{select, DeviceInfoSummary, DeviceSel};
use crate::runtime::params::fnv1a;
use crate::runtime::RunError;
use ocl::enums::{ProgramInfo, ProgramInfoResult};
use ocl::{Context, Device, Program, Queue};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Options passed to the OpenCL C compiler.
const BUILD_OPTIONS: &str = "-cl-mad-enable";

/// How the programs a context handed out were obtained: whole programs (`program`)
/// from memory, disk or a build, and kernels (`kernels`) put into a new
/// program (built or loaded from disk) or reused from one built before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub memory_hits: u32,
    pub disk_hits: u32,
    pub builds: u32,
    pub kernels_built: u32,
    pub kernels_reused: u32,
}

pub struct ClContext {
    pub info: DeviceInfoSummary,
    pub device: Device,
    pub context: Context,
    pub queue: Queue,
    programs: Mutex<HashMap<u64, Program>>,
    /// The program holding each kernel built so far and its name there, by the
    /// kernel's text without its name (`render::anonymous`): the text itself, not a
    /// hash, so two different kernels never share an entry.
    kernels: Mutex<HashMap<String, (Program, String)>>,
    cache_dir: Option<PathBuf>,
    stats: Mutex<CacheStats>,
}

/// The default on-disk cache: `$FNET_CACHE_DIR`, else `$XDG_CACHE_HOME/fnet/opencl`,
/// else `~/.cache/fnet/opencl`, else none. A variable set to the empty string counts
/// as unset (as the XDG spec says), so `FNET_CACHE_DIR=` never means the current
/// directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_from(|name| std::env::var_os(name))
}

fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("FNET_CACHE_DIR") {
        return Some(d);
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("fnet").join("opencl"))
}

fn cl_err(what: &str, e: impl std::fmt::Display) -> RunError {
    RunError::new(format!("OpenCL: {what}: {e}"))
}

impl ClContext {
    /// Opens the device `sel` names; `cache_dir` keeps program binaries (none: memory
    /// only).
    pub fn new(sel: DeviceSel, cache_dir: Option<PathBuf>) -> Result<ClContext, RunError> {
        let (platform, device, info) = select(sel)?;
        let context = Context::builder()
            .platform(platform)
            .devices(device)
            .build()
            .map_err(|e| cl_err("creating a context", e))?;
        let queue =
            Queue::new(&context, device, None).map_err(|e| cl_err("creating a queue", e))?;
        Ok(ClContext {
            info,
            device,
            context,
            queue,
            programs: Mutex::new(HashMap::new()),
            kernels: Mutex::new(HashMap::new()),
            cache_dir,
            stats: Mutex::new(CacheStats::default()),
        })
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().expect("stats lock")
    }

    /// Everything besides the source that decides what a binary is valid for.
    fn device_key(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{BUILD_OPTIONS}",
            self.info.name,
            self.info.platform,
            self.info.platform_version,
            self.info.driver_version
        )
    }

    fn disk_path(&self, source: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let key = fnv1a(self.device_key().as_bytes());
        Some(dir.join(format!(
            "{:016x}-{key:016x}.clbin",
            fnv1a(source.as_bytes())
        )))
    }

    /// The built program for `source`, from memory, disk, or a fresh build.
    pub fn program(&self, source: &str) -> Result<Program, RunError> {
        let key = fnv1a(source.as_bytes()) ^ fnv1a(self.device_key().as_bytes()).rotate_left(1);
        if let Some(p) = self.programs.lock().expect("cache lock").get(&key) {
            self.stats.lock().expect("stats lock").memory_hits += 1;
            return Ok(p.clone());
        }
        let options = CString::new(BUILD_OPTIONS).expect("no NUL");
        let path = self.disk_path(source);
        let cached = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| self.load_cache_file(&bytes, source, &options));
        let program = match cached {
            Some(p) => {
                self.stats.lock().expect("stats lock").disk_hits += 1;
                p
            }
            None => {
                let src = CString::new(source)
                    .map_err(|_| RunError::new("OpenCL source contains a NUL byte"))?;
                let p = Program::with_source(&self.context, &[src], Some(&[self.device]), &options)
                    .map_err(|e| {
                        RunError::new(format!(
                            "OpenCL program build failed on {}:\n{e}",
                            self.info.name
                        ))
                        .hint("this is a code generator bug; please report it with the log")
                    })?;
                self.stats.lock().expect("stats lock").builds += 1;
                if let Some(path) = &path {
                    self.save(&p, path, source);
                }
                p
            }
        };
        self.programs
            .lock()
            .expect("cache lock")
            .insert(key, program.clone());
        Ok(program)
    }

    /// The kernels `named` lists (each kernel's name and its text as `render::kernel`
    /// writes it), index for index, each as a program and the name it has there. A
    /// kernel built before on this context, under any name, comes from the program
    /// that holds it; the others, one per distinct text, are built together as one
    /// program (through [`ClContext::program`], so from memory or disk where it can).
    /// Every kernel asked for counts as built or reused.
    pub fn kernels(&self, named: &[(&str, &str)]) -> Result<Vec<(Program, String)>, RunError> {
        let keys: Vec<String> = (named.iter())
            .map(|(name, text)| super::render::anonymous(text, name))
            .collect();
        // Held across the build, so that two threads never build the same kernel.
        let mut known = self.kernels.lock().expect("kernel cache lock");
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<usize> = (0..named.len())
            .filter(|&i| !known.contains_key(&keys[i]) && seen.insert(keys[i].as_str()))
            .collect();
        if !fresh.is_empty() {
            let texts: Vec<&str> = fresh.iter().map(|&i| named[i].1).collect();
            let program = self.program(&super::render::assemble(&texts))?;
            for &i in &fresh {
                let entry = (program.clone(), named[i].0.to_string());
                known.insert(keys[i].clone(), entry);
            }
        }
        {
            let mut stats = self.stats.lock().expect("stats lock");
            stats.kernels_built += fresh.len() as u32;
            stats.kernels_reused += (named.len() - fresh.len()) as u32;
        }
        Ok(keys.iter().map(|k| known[k].clone()).collect())
    }

    /// A cache file is the device key, the source, then the binary, each prefixed by
    /// its length; a file for another device or source (a hash collision) is ignored.
    fn load_cache_file(&self, bytes: &[u8], source: &str, options: &CString) -> Option<Program> {
        let mut rest = bytes;
        let mut field = || -> Option<&[u8]> {
            let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
            let f = rest.get(8..8 + len)?;
            rest = &rest[8 + len..];
            Some(f)
        };
        let (key, src, bin) = (field()?, field()?, field()?);
        if key != self.device_key().as_bytes() || src != source.as_bytes() {
            return None;
        }
        Program::with_binary(&self.context, &[self.device], &[bin], options).ok()
    }

    /// Best effort: a cache that cannot be written only costs time.
    fn save(&self, program: &Program, path: &Path, source: &str) {
        let Ok(ProgramInfoResult::Binaries(bins)) = program.info(ProgramInfo::Binaries) else {
            return;
        };
        let Some(bin) = bins.first().filter(|b| !b.is_empty()) else {
            return;
        };
        let mut bytes = Vec::with_capacity(bin.len() + source.len() + 64);
        for f in [self.device_key().as_bytes(), source.as_bytes(), bin] {
            bytes.extend_from_slice(&(f.len() as u64).to_le_bytes());
            bytes.extend_from_slice(f);
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Atomic, so a concurrent reader never sees half a file.
        let _ = crate::io::write_output(path, &[], |w| w.write_all(&bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_variables_count_as_unset() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let home = Some(PathBuf::from("/h/.cache/fnet/opencl"));
        assert_eq!(
            cache_dir_from(env(&[("FNET_CACHE_DIR", ""), ("HOME", "/h")])),
            home
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
            home
        );
        assert_eq!(
            cache_dir_from(env(&[("FNET_CACHE_DIR", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/fnet/opencl"))
        );
        assert_eq!(
            cache_dir_from(env(&[("FNET_CACHE_DIR", ""), ("HOME", "")])),
            None
        );
    }
}
