//! The end of a search: every (configuration, model) pair evaluated on the whole
//! validation split, the ranking (each configuration under its most likely model, and
//! under its best model), and the run directory's result files:
//!
//! - `ranking.txt` and `ranking.json`: the table, the chosen configuration and the
//!   configurations left out with their reasons;
//! - `w.npy`, `p.npy`, `val_accuracy.npy`: W, the balanced p(m|a) and the final
//!   accuracies, `[configurations × M]` f64, rows in `ranking.json`'s `configs` order;
//! - `chosen.fnet`: the model file with the chosen configuration as the slot family's
//!   `default:` and the `search:` entry removed, so that `fnetc train chosen.fnet`
//!   retrains it from scratch (as does `fnetc train FILE --config …`).

use super::configs::config_words;
use super::mixture::argmax;
use super::run::{Event, Search};
use crate::cli::CliError;
use crate::io::write_output;
use crate::tensor::Tensor;
use serde_json::json;
use std::path::Path;

pub const RANKING_TXT: &str = "ranking.txt";
pub const RANKING_JSON: &str = "ranking.json";
pub const W_NPY: &str = "w.npy";
pub const P_NPY: &str = "p.npy";
pub const ACC_NPY: &str = "val_accuracy.npy";
pub const CHOSEN: &str = "chosen.fnet";
/// What a search writes besides metrics.jsonl and checkpoints (`--force` removes them).
pub const FILES: [&str; 6] = [RANKING_TXT, RANKING_JSON, W_NPY, P_NPY, ACC_NPY, CHOSEN];

/// One configuration's line of the ranking.
#[derive(Clone, Debug)]
pub struct Ranked {
    pub index: usize,
    pub slots: Vec<u64>,
    /// argmax_m p(m|a), its probability and its validation accuracy.
    pub model: usize,
    pub p: f64,
    pub accuracy: f64,
    /// The model that scores it best, and that score.
    pub best_model: usize,
    pub best_accuracy: f64,
}

/// Ranks configurations: by the accuracy under the most likely model (descending; ties
/// by the best model's accuracy, then configuration order).
pub fn rank(slots: &[Vec<u64>], p: &[f64], acc: &[f64], models: usize) -> Vec<Ranked> {
    let mut out: Vec<Ranked> = (0..slots.len())
        .map(|a| {
            let row_p = &p[a * models..(a + 1) * models];
            let row_acc = &acc[a * models..(a + 1) * models];
            let m = argmax(row_p);
            let best = argmax(row_acc);
            Ranked {
                index: a,
                slots: slots[a].clone(),
                model: m,
                p: row_p[m],
                accuracy: row_acc[m],
                best_model: best,
                best_accuracy: row_acc[best],
            }
        })
        .collect();
    out.sort_by(|x, y| {
        (y.accuracy, y.best_accuracy)
            .partial_cmp(&(x.accuracy, x.best_accuracy))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(x.index.cmp(&y.index))
    });
    out
}

/// Evaluates every pair, ranks, and writes the result files; returns the chosen
/// configuration and its validation accuracy.
pub(crate) fn finish(
    s: &mut Search<'_>,
    observe: &mut dyn FnMut(Event),
) -> Result<(Vec<u64>, f64), CliError> {
    let (a_n, m_n) = (s.built.len(), s.mixture.models);
    let mut acc = vec![0.0; a_n * m_n];
    for a in 0..a_n {
        for m in 0..m_n {
            acc[a * m_n + m] = s.evaluate_all(a, m)?;
        }
    }
    let p = s.mixture.probabilities();
    let slots: Vec<Vec<u64>> = s.built.iter().map(|b| b.slots.clone()).collect();
    let ranked = rank(&slots, &p, &acc, m_n);
    let mut by_best = ranked.clone();
    by_best.sort_by(|x, y| {
        y.best_accuracy
            .partial_cmp(&x.best_accuracy)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(x.index.cmp(&y.index))
    });
    let out = s.args.out.clone();
    let npy = |name: &str, data: &[f64]| -> Result<(), CliError> {
        let t = Tensor {
            shape: vec![a_n, m_n],
            data: data.to_vec(),
        };
        crate::io::npy::write_npy::<f64>(&out.join(name), &t)?;
        Ok(())
    };
    npy(W_NPY, &s.mixture.w)?;
    npy(P_NPY, &p)?;
    npy(ACC_NPY, &acc)?;
    let chosen = ranked[0].clone();
    let line = |r: &Ranked| {
        json!({"config": r.slots, "model": r.model, "p": r.p, "accuracy": r.accuracy,
            "best_model": r.best_model, "best_accuracy": r.best_accuracy})
    };
    let doc = json!({
        "models": m_n,
        "configs": slots,
        "ranking": ranked.iter().map(line).collect::<Vec<_>>(),
        "ranking_by_best_model": by_best.iter().map(|r| json!(r.slots)).collect::<Vec<_>>(),
        "chosen": chosen.slots,
        "chosen_accuracy": chosen.accuracy,
        "excluded": s.excluded.iter().map(|e| json!({"config": e.slots, "reason": e.reason})).collect::<Vec<_>>(),
        "steps": s.step,
    });
    let text = serde_json::to_string_pretty(&doc).expect("plain data") + "\n";
    // The model file may sit in the run directory under one of these names.
    let inputs = [s.args.model.as_path()];
    write_output(&out.join(RANKING_JSON), &inputs, |w| {
        w.write_all(text.as_bytes())
    })?;
    let table = table(&ranked, &s.excluded);
    write_output(&out.join(RANKING_TXT), &inputs, |w| {
        w.write_all(table.as_bytes())
    })?;
    let model_name = s
        .args
        .model
        .file_name()
        .map_or("model.fnet".into(), |n| n.to_string_lossy().into_owned());
    let model_dir = s.args.model.parent().unwrap_or(Path::new("."));
    let text = absolute_data_paths(&s.source_text, model_dir);
    let fnet = chosen_source(&text, &chosen.slots, &model_name, chosen.accuracy)
        .map_err(|e| crate::runtime::RunError::new(format!("writing {CHOSEN}: {e}")))?;
    write_output(&out.join(CHOSEN), &inputs, |w| w.write_all(fnet.as_bytes()))?;
    s.metrics.push(
        json!({"kind": "search", "configs": slots, "val_accuracy": acc
        .chunks(m_n).map(<[f64]>::to_vec).collect::<Vec<_>>(), "chosen": chosen.slots}),
    );
    for l in table.lines() {
        observe(Event::Line(l.to_string()));
    }
    observe(Event::Line(format!(
        "chosen configuration [{}] ({:.2}% validation accuracy with model {}); retrain it with `fnetc train {} --config {}` or `fnetc train {}`",
        config_words(&chosen.slots),
        100.0 * chosen.accuracy,
        chosen.model,
        s.args.model.display(),
        config_words(&chosen.slots),
        out.join(CHOSEN).display()
    )));
    Ok((chosen.slots, chosen.accuracy))
}

/// The ranking as a text table.
pub fn table(ranked: &[Ranked], excluded: &[super::configs::Excluded]) -> String {
    let mut t = String::from("rank  config      model  p(m|a)  val acc  best model  best acc\n");
    for (i, r) in ranked.iter().enumerate() {
        t += &format!(
            "{:>4}  {:<10}  {:>5}  {:>6.3}  {:>6.2}%  {:>10}  {:>7.2}%\n",
            i + 1,
            format!("[{}]", config_words(&r.slots)),
            r.model,
            r.p,
            100.0 * r.accuracy,
            r.best_model,
            100.0 * r.best_accuracy
        );
    }
    for e in excluded {
        t += &format!(
            "   -  [{}]  excluded: {}\n",
            config_words(&e.slots),
            e.reason
        );
    }
    t
}

/// The source with each string in its `train {}` section that names a file relative
/// to the model's directory (and not to the working directory) made absolute: the
/// chosen `.fnet` lives in the run directory, where the data paths written relative to
/// the model file would not resolve.
pub fn absolute_data_paths(text: &str, model_dir: &Path) -> String {
    let Some(start) = text.find("train") else {
        return text.to_string();
    };
    let (head, tail) = text.split_at(start);
    let mut out = String::from(head);
    let mut rest = tail;
    while let Some(open) = rest.find('"') {
        let Some(len) = rest[open + 1..].find('"') else {
            break;
        };
        let lit = &rest[open + 1..open + 1 + len];
        out.push_str(&rest[..=open]);
        let p = Path::new(lit);
        let beside = model_dir.join(p);
        match (p.is_absolute() || p.exists(), beside.canonicalize()) {
            (false, Ok(abs)) => out.push_str(&abs.to_string_lossy()),
            _ => out.push_str(lit),
        }
        out.push('"');
        rest = &rest[open + 1 + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The end of the parenthesised text that opens at byte `open` (a `(`), skipping
/// strings and `//` comments: the byte index of its `)`.
fn matching_paren(text: &str, open: usize) -> Option<usize> {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0i32, open);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += usize::from(b[i] == b'\\') + 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The model source with `slots` as the family's `default:` and the `search:` entry
/// removed, headed by a comment saying where it came from.
pub fn chosen_source(
    text: &str,
    slots: &[u64],
    model_name: &str,
    accuracy: f64,
) -> Result<String, String> {
    let list = format!(
        "[{}]",
        slots
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut t = text.to_string();
    // The search entry: `search: mixture(...)` up to its `)` and the rest of the line.
    if let Some(at) = t.find("search:") {
        let open = t[at..]
            .find('(')
            .map(|o| at + o)
            .ok_or("no `(` after `search:`")?;
        let close = matching_paren(&t, open).ok_or("unbalanced `search:` entry")?;
        let mut end = close + 1;
        let rest = &t[end..];
        let trimmed = rest.trim_start_matches([' ', '\t']);
        end += rest.len() - trimmed.len();
        if trimmed.starts_with(',') {
            end += 1;
        }
        let line_start = t[..at].rfind('\n').map_or(0, |i| i + 1);
        let only = t[line_start..at].trim().is_empty();
        let line_end = t[end..].find('\n').map_or(t.len(), |i| end + i + 1);
        if only && t[end..line_end].trim().is_empty() {
            t.replace_range(line_start..line_end, "");
        } else {
            t.replace_range(at..end, "");
        }
    }
    let at = t
        .find("pool_slots(")
        .ok_or("no `pool_slots(` in the model")?;
    let open = at + "pool_slots".len();
    let close = matching_paren(&t, open).ok_or("unbalanced `pool_slots(...)`")?;
    let args = &t[open + 1..close];
    let new_args = match args.find("default") {
        Some(d) => {
            let lb = args[d..]
                .find('[')
                .map(|i| d + i)
                .ok_or("`default` without a list")?;
            let rb = args[lb..]
                .find(']')
                .map(|i| lb + i)
                .ok_or("unclosed `default` list")?;
            format!("{}{list}{}", &args[..lb], &args[rb + 1..])
        }
        None => format!("{}, default: {list}", args.trim_end()),
    };
    t.replace_range(open + 1..close, &new_args);
    Ok(format!(
        "// Chosen by `fnetc search {model_name}`: configuration {list} ({:.2}% validation\n// accuracy in the search). Retrain it with `fnetc train` on this file.\n{t}",
        100.0 * accuracy
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fnet-chosen-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn ranking_by_most_likely_and_best_model() {
        // Three configurations, two models.
        let slots = vec![vec![1, 2], vec![1, 3], vec![2, 3]];
        let p = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4];
        let acc = [0.5, 0.9, 0.7, 0.6, 0.8, 0.1];
        let r = rank(&slots, &p, &acc, 2);
        // Most likely models: 0, 1, 0 → accuracies 0.5, 0.6, 0.8.
        let order: Vec<usize> = r.iter().map(|x| x.index).collect();
        assert_eq!(order, vec![2, 1, 0]);
        assert_eq!(
            (r[2].model, r[2].best_model, r[2].best_accuracy),
            (0, 1, 0.9)
        );
    }

    #[test]
    fn chosen_source_sets_the_default_and_drops_the_search() {
        let src = "model m {\n  slots s = pool_slots(count: 5, active: 2, pool: maxpool(2))\n}\ntrain {\n  optimizer: sgd(lr: 0.1)\n  search: mixture(models: 2, t_max: 10)\n  epochs: 1\n}\n";
        let out = chosen_source(src, &[2, 4], "m.fnet", 0.5).unwrap();
        assert!(
            out.contains("pool_slots(count: 5, active: 2, pool: maxpool(2), default: [2, 4])"),
            "{out}"
        );
        assert!(!out.contains("mixture"), "{out}");
        assert!(
            out.contains("  optimizer: sgd(lr: 0.1)\n  epochs: 1\n"),
            "{out}"
        );
        // Data paths relative to the model's directory become absolute.
        let dir = tempfile_dir();
        std::fs::write(dir.join("d.idx"), b"x").unwrap();
        let text =
            "model m {}\ntrain {\n  data: idx(images: \"d.idx\", labels: \"/abs/l.idx\")\n}\n";
        let abs = dir.canonicalize().unwrap().join("d.idx");
        let out = absolute_data_paths(text, &dir);
        assert!(
            out.contains(&format!("images: \"{}\"", abs.display())),
            "{out}"
        );
        assert!(out.contains("labels: \"/abs/l.idx\""), "{out}");
        let _ = std::fs::remove_dir_all(&dir);
        let src2 = "slots s = pool_slots(count: 5, active: 2, default: [1, 2])\ntrain { search: mixture(), epochs: 1 }";
        let out = chosen_source(src2, &[3, 5], "m.fnet", 0.5).unwrap();
        assert!(out.contains("default: [3, 5])"), "{out}");
        assert!(
            out.contains("train {  epochs: 1 }") || out.contains("train { epochs: 1 }"),
            "{out}"
        );
    }
}
