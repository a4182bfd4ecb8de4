//! Running the `fnetc` binary from an integration test.

use std::path::Path;
use std::process::{Command, Output};

/// `fnetc args` in `dir` with `env` added to the environment.
pub fn fnetc_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fnetc"));
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("fnetc runs")
}

/// `fnetc args` from the crate root, so relative paths name the repository's files.
pub fn fnetc(args: &[&str]) -> Output {
    fnetc_in(Path::new(env!("CARGO_MANIFEST_DIR")), args, &[])
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
