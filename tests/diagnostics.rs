//! Bad programs and the errors they produce. Every `tests/diagnostics/*.fnet` file holds
//! one mistake and starts with `// expect: ...`; its rendered report is snapshotted in
//! `tests/snapshots/diagnostics__NAME.snap`. Run `INSTA_UPDATE=always cargo test --test
//! diagnostics` after changing a message, then read the new snapshots.

use fnet::driver::compile_bytes;
use fnet::eval::Options;
use std::path::{Path, PathBuf};
use std::process::Command;

const DIR: &str = "tests/diagnostics";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bad programs, sorted by name, as (stem, relative path, bytes).
fn cases() -> Vec<(String, String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(DIR))
        .expect("tests/diagnostics exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "fnet"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let rel = format!("{DIR}/{stem}.fnet");
            let bytes = std::fs::read(&p).expect("readable case");
            (stem, rel, bytes)
        })
        .collect()
}

/// Compiles one case, turning a panic into a test failure that names the case.
fn render(rel: &str, bytes: &[u8]) -> String {
    let result = std::panic::catch_unwind(|| compile_bytes(rel, bytes, &Options::default()));
    match result {
        Err(_) => panic!("{rel}: the compiler panicked"),
        Ok(Ok(_)) => panic!("{rel}: compiled without errors, but it holds a mistake"),
        Ok(Err(report)) => {
            assert!(!report.diagnostics.is_empty(), "{rel}: empty report");
            report.render()
        }
    }
}

/// Whether `text` contains `NAME:LINE:COL` for this file.
fn has_location(text: &str, rel: &str) -> bool {
    text.match_indices(&format!("{rel}:")).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let line: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[line.len()..];
        let col: String = after
            .strip_prefix(':')
            .map(|a| a.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default();
        !line.is_empty() && !col.is_empty()
    })
}

#[test]
fn bad_programs_render_snapshotted_errors() {
    let cases = cases();
    assert!(
        cases.len() >= 36,
        "expected at least 36 bad programs, found {}",
        cases.len()
    );
    for (stem, rel, bytes) in &cases {
        assert!(
            bytes.starts_with(b"// expect: "),
            "{rel} must start with `// expect: ...` saying what is wrong"
        );
        let rendered = render(rel, bytes);
        assert!(
            has_location(&rendered, rel),
            "{rel}: no `{rel}:LINE:COL` in\n{rendered}"
        );
        assert!(
            rendered.contains("= help: "),
            "{rel}: no `= help:` line in\n{rendered}"
        );
        assert!(
            rendered.starts_with("error["),
            "{rel}: not an error\n{rendered}"
        );
        insta::assert_snapshot!(stem.as_str(), rendered);
    }
}

#[test]
fn every_expected_mistake_kind_is_covered() {
    // Errors the suite promises to cover, by code: syntax, names, types, shapes,
    // arguments, slots, bases and the training recipe.
    let codes: Vec<String> = cases()
        .iter()
        .filter_map(|(_, rel, bytes)| compile_bytes(rel, bytes, &Options::default()).err())
        .map(|r| r.diagnostics[0].code.to_string())
        .collect();
    for code in [
        "E0001", "E0003", "E0004", "E0005", "E0101", "E0102", "E0103", "E0202", "E0203", "E0204",
        "E0205", "E0206", "E0207", "E0208", "E0209", "E0307", "E0308", "E0309", "E0310", "E0401",
        "E0501", "E0502", "E0601", "E0602", "E0603", "E0604",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "no bad program produces {code}"
        );
    }
}

#[test]
fn fnetc_check_prints_the_rendered_error_and_exits_1() {
    let rel = format!("{DIR}/unknown_layer_typo.fnet");
    let bytes = std::fs::read(root().join(&rel)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args(["check", &rel])
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("fnetc runs");
    assert_eq!(out.status.code(), Some(1), "exit status");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a failed check"
    );
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 stderr");
    assert_eq!(stderr, render(&rel, &bytes));
    assert!(stderr.contains("did you mean `conv2d`?"));
}

#[test]
fn fnetc_check_on_a_missing_file_exits_1_with_a_clear_message() {
    let missing = Path::new(DIR).join("no_such_model.fnet");
    let out = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .arg("check")
        .arg(&missing)
        .current_dir(root())
        .output()
        .expect("fnetc runs");
    assert_eq!(out.status.code(), Some(1), "exit status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot read `{}`", missing.display())),
        "{stderr}"
    );
    assert!(stderr.contains("= help: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
