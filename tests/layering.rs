//! Which folder of `src/` may name which: the IR is the bottom layer and names nothing
//! above it; kernel IR names no backend. Each rule is a row of `RULES`; a new layer
//! (`jit`, `autodiff`, `train`, `search`) adds a row, or is already covered by an
//! allow-list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a folder may name through `crate::`.
enum Policy {
    /// Only these top-level modules (besides itself).
    Only(&'static [&'static str]),
    /// Anything but these.
    Not(&'static [&'static str]),
}

struct Rule {
    dir: &'static str,
    policy: Policy,
    /// Whether `super::super::` (an escape from the folder by relative path) is refused.
    no_escape: bool,
}

const RULES: &[Rule] = &[
    Rule {
        dir: "src/ir",
        policy: Policy::Only(&["ir", "diag", "tensor"]),
        no_escape: true,
    },
    // Autodiff rewrites the IR; it names no runtime or backend, so every backend runs
    // the graph it makes. It reads the typed recipe (serde only) for the loss.
    Rule {
        dir: "src/autodiff",
        policy: Policy::Only(&["ir", "diag", "passes", "recipe"]),
        no_escape: true,
    },
    // The JIT's micro-kernels are a leaf (std, std::arch and rayon only), so that
    // tools/gemm_compare can compile them by path outside the crate.
    Rule {
        dir: "src/jit/kernels",
        policy: Policy::Only(&[]),
        no_escape: true,
    },
    Rule {
        dir: "src/kernel_ir",
        policy: Policy::Not(&["opencl", "backend", "cli", "driver"]),
        no_escape: false,
    },
    // The JIT renders kernel IR and runs plans; it names no OpenCL (so that fnetc can
    // run it on a machine without the OpenCL loader) and no backend above it.
    Rule {
        dir: "src/jit",
        policy: Policy::Only(&["jit", "kernel_ir", "runtime", "tensor", "reference"]),
        no_escape: true,
    },
    // The search runs every configuration through the backend seam only: no kernel IR,
    // no JIT or interpreter internals.
    Rule {
        dir: "src/search",
        policy: Policy::Not(&["jit", "kernel_ir", "reference"]),
        no_escape: false,
    },
];

/// The top-level modules named after each `crate::` in `text`, with their line, so
/// that `crate::{cost::X, runtime}` counts both.
fn crate_modules(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let line = text[..at].matches('\n').count() + 1;
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        item_start = false;
                        found.push((line, ident(&group[i..])));
                    }
                    _ => {}
                }
            }
        } else {
            found.push((line, ident(rest)));
        }
    }
    found
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files_under(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no Rust files under {dir}");
    files
}

/// Every breach of `rule`, as `path:line: …`.
fn breaches(rule: &Rule) -> Vec<String> {
    let own = rule.dir.rsplit('/').next().unwrap_or(rule.dir);
    let mut out = Vec::new();
    for path in files_under(rule.dir) {
        let text = std::fs::read_to_string(&path).expect("readable source");
        let shown = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&path)
            .display()
            .to_string();
        for (line, module) in crate_modules(&text) {
            let refused = match rule.policy {
                Policy::Only(allowed) => module != own && !allowed.contains(&module.as_str()),
                Policy::Not(forbidden) => forbidden.contains(&module.as_str()),
            };
            if refused {
                out.push(format!("{shown}:{line}: names crate::{module}"));
            }
        }
        if rule.no_escape {
            for (i, l) in text.lines().enumerate() {
                if l.contains("super::super::") {
                    out.push(format!("{shown}:{}: escapes with super::super::", i + 1));
                }
            }
        }
    }
    out
}

#[test]
fn every_layer_names_only_what_it_may() {
    let all: Vec<String> = RULES.iter().flat_map(breaches).collect();
    assert!(
        all.is_empty(),
        "a layer names one above it (src/ir is the bottom layer):\n{}",
        all.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_paths() {
    let text = "use crate::ir::op::Op;\n// see crate::cost\nuse crate::{runtime::X, \
                passes::{a, b}, tensor};\nlet x = crate::opencl::run();";
    let names: Vec<(usize, String)> = crate_modules(text);
    let set: BTreeSet<&str> = names.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        set,
        BTreeSet::from(["ir", "cost", "runtime", "passes", "tensor", "opencl"])
    );
    assert!(names.contains(&(2, "cost".to_string())));
    assert!(names.contains(&(4, "opencl".to_string())));
    // `a` and `b` are inside `passes::{…}`, not top-level modules.
    assert!(!set.contains("a"));
}

#[test]
fn an_ir_file_naming_the_runtime_would_be_refused() {
    let rule = &RULES[0];
    let Policy::Only(allowed) = rule.policy else {
        panic!("the IR rule is an allow-list")
    };
    for m in [
        "cost",
        "runtime",
        "passes",
        "opencl",
        "backend",
        "kernel_ir",
        "reference",
        "cli",
        "driver",
        "jit",
        "autodiff",
        "train",
        "search",
    ] {
        assert!(!allowed.contains(&m), "{m} allowed in src/ir");
    }
}

/// Passes edit graphs through the `ir::rewrite` methods and read them through `Graph`'s accessors,
/// never through the petgraph field.
#[test]
fn passes_do_not_touch_the_petgraph_field() {
    let mut hits = Vec::new();
    for path in files_under("src/passes") {
        let text = std::fs::read_to_string(&path).expect("readable source");
        for (i, l) in text.lines().enumerate() {
            let t = l.trim();
            if t.contains(".g.") || t.contains(".g[") || t.contains("&graph.g") || t == ".g" {
                let shown = path
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(&path);
                hits.push(format!("{}:{}: {t}", shown.display(), i + 1));
            }
        }
    }
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}
