//! `fnetc run -i`: one file per model input. A model with one input takes a plain
//! `-i FILE`; a model with several takes `-i NAME=FILE` once per input, by the names
//! its `input` declarations give. The files are read before the model is compiled
//! (the first one's batch sizes the compile), then put in the graph's input order.

use super::inputs::load_input;
use crate::ir::Graph;
use crate::runtime::RunError;
use crate::tensor::Tensor;
use std::path::PathBuf;

/// One `-i` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputArg {
    /// The model input it is for; `None` for a plain `-i FILE`.
    pub name: Option<String>,
    pub path: PathBuf,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `NAME=FILE` or `FILE`. A file whose name itself looks like `NAME=…` can be
/// given as `./NAME=…`.
pub fn parse_input_arg(s: &str) -> Result<InputArg, String> {
    match s.split_once('=') {
        Some((name, path)) if is_identifier(name) => {
            if path.is_empty() {
                return Err(format!("`{s}` names input `{name}` but no file"));
            }
            Ok(InputArg {
                name: Some(name.to_string()),
                path: PathBuf::from(path),
            })
        }
        _ if s.is_empty() => Err("expected FILE or NAME=FILE, got an empty value".into()),
        _ => Ok(InputArg {
            name: None,
            path: PathBuf::from(s),
        }),
    }
}

/// Input tensors as given, with the names they were given for.
pub type GivenInputs = Vec<(Option<String>, Tensor<f64>)>;

/// Reads every `-i` file (as f64; callers narrow), in the order given.
pub fn load_inputs(
    args: &[InputArg],
    range: Option<(Option<usize>, Option<usize>)>,
) -> Result<GivenInputs, RunError> {
    if args.is_empty() {
        return Err(RunError::new("no input given").hint("pass -i FILE, or -i NAME=FILE per input"));
    }
    if args.len() > 1 {
        if let Some(plain) = args.iter().find(|a| a.name.is_none()) {
            return Err(RunError::new(format!(
                "-i `{}` has no input name, but {} inputs are given",
                plain.path.display(),
                args.len()
            ))
            .hint("name each: -i NAME=FILE (the names are the model's `input` declarations)"));
        }
    }
    args.iter()
        .map(|a| Ok((a.name.clone(), load_input(&a.path, range)?)))
        .collect()
}

/// Puts `given` in `graph`'s input order, or says which names are missing, unknown
/// or given twice.
pub fn order_inputs<T>(
    given: Vec<(Option<String>, T)>,
    graph: &Graph,
    model: &str,
) -> Result<Vec<T>, RunError> {
    let names: Vec<String> = graph
        .inputs
        .iter()
        .map(|&id| graph.node(id).name.clone())
        .collect();
    let list = names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let example = names
        .iter()
        .map(|n| format!("-i {n}=FILE"))
        .collect::<Vec<_>>()
        .join(" ");
    if let [(None, _)] = given[..] {
        if names.len() == 1 {
            return Ok(given.into_iter().map(|(_, t)| t).collect());
        }
        return Err(RunError::new(format!(
            "`{model}` has {} inputs ({list}) but one unnamed -i file was given",
            names.len()
        ))
        .hint(format!("give each input by name: {example}")));
    }
    let mut slots: Vec<Option<T>> = names.iter().map(|_| None).collect();
    for (name, t) in given {
        let name = name.unwrap_or_default();
        let Some(i) = names.iter().position(|n| *n == name) else {
            return Err(RunError::new(format!(
                "`{model}` has no input `{name}`; its inputs are {list}"
            ))
            .hint(format!("give each input by name: {example}")));
        };
        if slots[i].replace(t).is_some() {
            return Err(RunError::new(format!("input `{name}` is given twice"))
                .hint("give each input once"));
        }
    }
    let missing: Vec<String> = names
        .iter()
        .zip(&slots)
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    if !missing.is_empty() {
        return Err(RunError::new(format!(
            "`{model}` needs input(s) {} too; its inputs are {list}",
            missing.join(", ")
        ))
        .hint(format!("give each input by name: {example}")));
    }
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_plain_inputs() {
        let named = parse_input_arg("a=x/a.npy").expect("named");
        assert_eq!(named.name.as_deref(), Some("a"));
        assert_eq!(named.path, PathBuf::from("x/a.npy"));
        for plain in ["x.npy", "./a=b.npy", "dir/k=v.npy", "1a=b.npy"] {
            let p = parse_input_arg(plain).expect(plain);
            assert_eq!((p.name, p.path), (None, PathBuf::from(plain)));
        }
        assert!(parse_input_arg("a=")
            .expect_err("no file")
            .contains("no file"));
        assert!(parse_input_arg("").is_err());
    }

    #[test]
    fn orders_inputs_by_name_and_names_what_is_wrong() {
        let (_, m) = crate::driver::compile_str(
            "two.fnet",
            "model two {\n  input p: f32[B, 4]\n  input q: f32[B, 4]\n  return p + q\n}",
            &crate::eval::Options::default(),
        )
        .unwrap_or_else(|r| panic!("{}", r.render()));
        let g = &m.graph;
        let named = |pairs: &[(&str, u8)]| {
            pairs
                .iter()
                .map(|&(n, v)| (Some(n.to_string()), v))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            order_inputs(named(&[("q", 2), ("p", 1)]), g, "two.fnet"),
            Ok(vec![1, 2])
        );
        let err = |given| {
            order_inputs(given, g, "two.fnet")
                .expect_err("refused")
                .to_string()
        };
        let e = err(vec![(None, 1)]);
        assert!(
            e.contains("2 inputs (`p`, `q`)") && e.contains("-i p=FILE -i q=FILE"),
            "{e}"
        );
        let e = err(named(&[("p", 1), ("c", 2)]));
        assert!(e.contains("no input `c`") && e.contains("`p`, `q`"), "{e}");
        let e = err(named(&[("p", 1)]));
        assert!(e.contains("needs input(s) `q`"), "{e}");
        let e = err(named(&[("p", 1), ("p", 2)]));
        assert!(e.contains("`p` is given twice"), "{e}");
    }
}
