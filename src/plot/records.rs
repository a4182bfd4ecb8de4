//! Reading `RUN_DIR/metrics.jsonl` for plotting, tolerantly.
//!
//! The trainer's records grow over time (regulariser `terms`, FlexConv
//! `kernel_sizes`), and runs made by older versions lack them, so a field that is
//! absent or `null` is simply not there: the plot that needs it is skipped with a note.
//! What is refused, with the file and line named, is a line that is not a JSON object,
//! a record without a `"kind"`, and a known field of the wrong type: those mean the
//! file is damaged or not a metrics file, and a plot of it would mislead.
//! Records of kinds this reader does not know are skipped (a newer trainer's).

use crate::runtime::RunError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// One `"kind": "step"` record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub loss: Option<f64>,
    /// The loss terms by name (`loss.ce`, `reg.orthogonality`, ...), when logged.
    pub terms: BTreeMap<String, f64>,
}

/// One `"kind": "epoch"` record. `epoch` counts from 0, as the trainer writes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochRecord {
    pub epoch: u64,
    /// Steps taken by the end of this epoch.
    pub step: Option<u64>,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// The learned kernel size of each FlexConv layer: `[k]` or `[kh, kw]`.
    pub kernel_sizes: BTreeMap<String, Vec<u64>>,
}

/// One `"kind": "eval"` record (an evaluation every `--eval-every` steps).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalRecord {
    pub step: u64,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
}

/// Everything plottable in a metrics file, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunRecords {
    pub steps: Vec<StepRecord>,
    pub epochs: Vec<EpochRecord>,
    pub evals: Vec<EvalRecord>,
}

impl RunRecords {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.epochs.is_empty() && self.evals.is_empty()
    }
}

/// Parses the text of a metrics file; `path` names it in errors, with the line.
pub fn parse(path: &Path, text: &str) -> Result<RunRecords, RunError> {
    let mut out = RunRecords::default();
    for (i, line) in text.lines().enumerate() {
        let at = Place { path, line: i + 1 };
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            at.error(format!("expected one JSON object per line, but {e}"))
                .hint("metrics.jsonl is written by `fnetc train`; a damaged line can be deleted")
        })?;
        let Value::Object(obj) = value else {
            return Err(at.error(format!("expected a JSON object, found {}", kind_of(&value))));
        };
        let kind = match obj.get("kind") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(at.error(format!(
                    "expected \"kind\" to be a string, found {}",
                    kind_of(other)
                )))
            }
            None => {
                return Err(at
                    .error("expected a \"kind\" field (\"step\", \"epoch\" or \"eval\")")
                    .hint("every record `fnetc train` writes has one"))
            }
        };
        let r = Fields { at: &at, obj: &obj };
        match kind {
            "step" => out.steps.push(StepRecord {
                step: r.required_u64("step")?,
                loss: r.f64("loss")?,
                terms: r.number_map("terms")?,
            }),
            "epoch" => out.epochs.push(EpochRecord {
                epoch: r.required_u64("epoch")?,
                step: r.u64("step")?,
                train_loss: r.f64("train_loss")?,
                train_accuracy: r.f64("train_accuracy")?,
                test_loss: r.f64("test_loss")?,
                test_accuracy: r.f64("test_accuracy")?,
                kernel_sizes: r.sizes_map("kernel_sizes")?,
            }),
            "eval" => out.evals.push(EvalRecord {
                step: r.required_u64("step")?,
                test_loss: r.f64("test_loss")?,
                test_accuracy: r.f64("test_accuracy")?,
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// Reads and parses `path`.
pub fn read(path: &Path) -> Result<RunRecords, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RunError::new(format!("cannot read {}: {e}", path.display()))
            .hint("give the directory of a `fnetc train` run")
    })?;
    parse(path, &text)
}

struct Place<'a> {
    path: &'a Path,
    line: usize,
}

impl Place<'_> {
    fn error(&self, what: impl AsRef<str>) -> RunError {
        RunError::new(format!(
            "{}:{}: {}",
            self.path.display(),
            self.line,
            what.as_ref()
        ))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to one record's fields; absent and `null` read as `None`.
struct Fields<'a> {
    at: &'a Place<'a>,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, want: &str, found: &Value) -> RunError {
        self.at.error(format!(
            "expected \"{key}\" to be {want}, found {}",
            kind_of(found)
        ))
    }

    fn f64(&self, key: &str) -> Result<Option<f64>, RunError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, RunError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a whole number ≥ 0", v)),
        }
    }

    fn required_u64(&self, key: &str) -> Result<u64, RunError> {
        self.u64(key)?.ok_or_else(|| {
            self.at
                .error(format!("expected a \"{key}\" field in this record"))
        })
    }

    fn object(&self, key: &str) -> Result<Option<&Map<String, Value>>, RunError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }

    /// `{"name": number, ...}`.
    fn number_map(&self, key: &str) -> Result<BTreeMap<String, f64>, RunError> {
        let mut out = BTreeMap::new();
        for (name, v) in self.object(key)?.into_iter().flatten() {
            let x = v
                .as_f64()
                .ok_or_else(|| self.wrong(&format!("{key}.{name}"), "a number", v))?;
            out.insert(name.clone(), x);
        }
        Ok(out)
    }

    /// `{"layer": [k] or [kh, kw] or k, ...}`.
    fn sizes_map(&self, key: &str) -> Result<BTreeMap<String, Vec<u64>>, RunError> {
        let mut out = BTreeMap::new();
        for (name, v) in self.object(key)?.into_iter().flatten() {
            let want = "a size or a list of sizes";
            let sizes = match v {
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(Value::as_u64)
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(|| self.wrong(&format!("{key}.{name}"), want, v))?,
                _ => vec![v
                    .as_u64()
                    .ok_or_else(|| self.wrong(&format!("{key}.{name}"), want, v))?],
            };
            out.insert(name.clone(), sizes);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<RunRecords, String> {
        parse(Path::new("run/metrics.jsonl"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_trainers_records_and_skips_what_is_absent() {
        let r = p(concat!(
            r#"{"kind":"step","step":1,"epoch":0,"loss":2.5,"terms":{"loss.ce":2.4,"reg.orthogonality":0.1}}"#,
            "\n\n",
            r#"{"kind":"eval","step":1,"test_loss":2.0,"test_accuracy":null}"#,
            "\n",
            r#"{"kind":"epoch","epoch":0,"step":1,"train_loss":2.5,"test_loss":null,"kernel_sizes":{"f1":[5,7],"f2":9}}"#,
            "\n",
            r#"{"kind":"search","whatever":true}"#,
        ))
        .unwrap();
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].loss, Some(2.5));
        assert_eq!(r.steps[0].terms["reg.orthogonality"], 0.1);
        assert_eq!(r.evals[0].test_accuracy, None);
        assert_eq!(r.epochs[0].test_loss, None);
        assert_eq!(r.epochs[0].train_accuracy, None);
        assert_eq!(r.epochs[0].kernel_sizes["f1"], [5, 7]);
        assert_eq!(r.epochs[0].kernel_sizes["f2"], [9]);
    }

    #[test]
    fn malformed_lines_name_the_file_and_line() {
        let ok = r#"{"kind":"step","step":1,"loss":1.0}"#;
        for (bad, says) in [
            ("{not json", "expected one JSON object per line"),
            ("[1, 2]", "expected a JSON object, found an array"),
            (r#"{"step":1}"#, "expected a \"kind\" field"),
            (r#"{"kind":3}"#, "\"kind\" to be a string"),
            (r#"{"kind":"step","loss":1}"#, "expected a \"step\" field"),
            (
                r#"{"kind":"step","step":1,"loss":"x"}"#,
                "\"loss\" to be a number",
            ),
            (
                r#"{"kind":"step","step":-1}"#,
                "\"step\" to be a whole number",
            ),
            (
                r#"{"kind":"step","step":1,"terms":[1]}"#,
                "\"terms\" to be an object",
            ),
            (
                r#"{"kind":"epoch","epoch":0,"kernel_sizes":{"f":[3,"a"]}}"#,
                "\"kernel_sizes.f\"",
            ),
        ] {
            let e = p(&format!("{ok}\n{ok}\n{bad}\n")).unwrap_err();
            assert!(e.starts_with("run/metrics.jsonl:3: "), "{bad}: {e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
