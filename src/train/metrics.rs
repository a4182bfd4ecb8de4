//! `RUN_DIR/metrics.jsonl`: one JSON object per line, `"kind": "step"` (loss, lr,
//! samples/s) or `"kind": "epoch"` (train and test loss and accuracy, wall time).
//!
//! The lines are kept in memory and the file is rewritten whole, atomically, next to
//! each checkpoint: a killed run leaves a file that agrees with its last checkpoint,
//! and a resumed one drops the lines its checkpoint had not seen.

use crate::io::write_output;
use crate::runtime::RunError;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const FILE: &str = "metrics.jsonl";

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub lines: Vec<String>,
}

impl Metrics {
    /// The first `keep` lines of `run`'s metrics file (none when there is no file).
    pub fn resume(run: &Path, keep: usize) -> Metrics {
        let text = std::fs::read_to_string(path(run)).unwrap_or_default();
        Metrics {
            lines: text.lines().take(keep).map(str::to_string).collect(),
        }
    }

    pub fn push(&mut self, v: Value) {
        self.lines.push(v.to_string());
    }

    /// Rewrites the file.
    pub fn write(&self, run: &Path) -> Result<(), RunError> {
        let mut text = self.lines.join("\n");
        text.push('\n');
        Ok(write_output(&path(run), &[], |w| {
            w.write_all(text.as_bytes())
        })?)
    }
}

pub fn path(run: &Path) -> PathBuf {
    run.join(FILE)
}

/// Mean cross-entropy with label smoothing `eps` and the number of correct top-1
/// predictions, of `logits` `[B, K]` against `labels`, as the training loss computes
/// it (`(1−ε)·CE + ε·mean over classes of −log p`).
pub fn loss_and_correct(logits: &[f32], labels: &[f32], eps: f64) -> (f64, u64) {
    let b = labels.len();
    if b == 0 {
        return (0.0, 0);
    }
    let k = logits.len() / b;
    let (mut total, mut correct) = (0.0, 0);
    for (row, &label) in logits.chunks_exact(k).zip(labels) {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let lse = m + row
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln();
        let label = label as usize;
        let nll = lse - f64::from(row[label]);
        let mean_nll = lse - row.iter().map(|&v| f64::from(v)).sum::<f64>() / k as f64;
        total += (1.0 - eps) * nll + eps * mean_nll;
        let best = row
            .iter()
            .enumerate()
            .fold(0, |bi, (i, &v)| if v > row[bi] { i } else { bi });
        correct += u64::from(best == label);
    }
    (total / b as f64, correct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_and_accuracy_by_hand() {
        // Row 0: logits (0, ln 3): p = (1/4, 3/4); label 1 → −ln 0.75, correct.
        // Row 1: equal logits, label 0: ln 2, argmax is the first: correct.
        let (l, c) = loss_and_correct(&[0.0, 3f32.ln(), 1.0, 1.0], &[1.0, 0.0], 0.0);
        let want = (-(0.75f64).ln() + 2f64.ln()) / 2.0;
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
        assert_eq!(c, 2);
        // Smoothing 0.2 on row 1 alone changes nothing (both classes equal).
        let (l, _) = loss_and_correct(&[1.0, 1.0], &[0.0], 0.2);
        assert!((l - 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn resume_keeps_the_checkpointed_lines() {
        let run = tempfile::tempdir().unwrap();
        let mut m = Metrics::default();
        for i in 0..4 {
            m.push(serde_json::json!({ "step": i }));
        }
        m.write(run.path()).unwrap();
        let back = Metrics::resume(run.path(), 2);
        assert_eq!(back.lines, [r#"{"step":0}"#, r#"{"step":1}"#]);
    }
}
