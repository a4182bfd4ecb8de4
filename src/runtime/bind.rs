//! Binding symbolic dimensions (`B`, `T`) to the sizes of the actual inputs, and
//! evaluating declared types under that binding.

use super::error::RunError;
use crate::ir::graph::Graph;
use crate::ir::types::{Dim, TensorType};
use std::collections::BTreeMap;

pub type DimEnv = BTreeMap<String, u64>;

/// Checks that `shapes` are one per input of `graph` and binds the symbols of their
/// declared types: what the interpreter, the OpenCL lowering and the flop count each
/// do before anything else.
pub fn bind_inputs(graph: &Graph, shapes: &[&[usize]]) -> Result<DimEnv, RunError> {
    if shapes.len() != graph.inputs.len() {
        return Err(RunError::new(format!(
            "model `{}` takes {} input(s), got {}",
            graph.name,
            graph.inputs.len(),
            shapes.len()
        )));
    }
    let mut env = DimEnv::new();
    for (&id, shape) in graph.inputs.iter().zip(shapes) {
        let node = graph.node(id);
        bind_shape(&format!("input `{}`", node.name), &node.ty, shape, &mut env)?;
    }
    Ok(env)
}

/// Checks `actual` against `declared`, binding symbols on first sight.
pub fn bind_shape(
    what: &str,
    declared: &TensorType,
    actual: &[usize],
    env: &mut DimEnv,
) -> Result<(), RunError> {
    let mismatch = || {
        RunError::new(format!(
            "{what}: expected shape {declared}, got {:?}",
            actual
        ))
        .hint("check the input file's shape and layout (NCL for sequences, NCHW for images)")
    };
    if declared.rank() != actual.len() {
        return Err(mismatch());
    }
    for (d, &a) in declared.shape.iter().zip(actual) {
        let a = a as u64;
        match d {
            Dim::Known(k) if *k != a => return Err(mismatch()),
            Dim::Known(_) | Dim::Dyn { .. } => {}
            Dim::Sym(s) if s.offset == 0 && s.div == 1 && s.add == 0 => {
                if a == 0 {
                    return Err(RunError::new(format!("{what}: dimension {} is 0", s.name)));
                }
                match env.get(&s.name) {
                    Some(&b) if b != a => {
                        return Err(RunError::new(format!(
                            "{what}: `{}` is {a} here but {b} in an earlier input",
                            s.name
                        )))
                    }
                    _ => {
                        env.insert(s.name.clone(), a);
                    }
                }
            }
            Dim::Sym(_) => {
                if eval_dim(d, env) != Some(a) {
                    return Err(mismatch());
                }
            }
        }
    }
    Ok(())
}

/// The concrete size of `d`, if every symbol it uses is bound.
pub fn eval_dim(d: &Dim, env: &DimEnv) -> Option<u64> {
    match d {
        Dim::Known(k) => Some(*k),
        Dim::Dyn { .. } => None,
        Dim::Sym(s) => s.eval(*env.get(&s.name)?),
    }
}

/// Whether a computed tensor agrees with its node's declared type (data-dependent
/// dimensions only need to stay within their bound).
pub fn conforms(declared: &TensorType, actual: &[usize], env: &DimEnv) -> bool {
    declared.rank() == actual.len()
        && declared.shape.iter().zip(actual).all(|(d, &a)| match d {
            Dim::Dyn { max } => (a as u64) <= *max,
            other => eval_dim(other, env) == Some(a as u64),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::types::DType;

    #[test]
    fn binds_and_checks_symbols() {
        let t = TensorType::new(
            DType::F32,
            vec![Dim::sym("B"), Dim::Known(3), Dim::sym("T")],
        );
        let mut env = DimEnv::new();
        bind_shape("x", &t, &[4, 3, 100], &mut env).unwrap();
        assert_eq!(env["B"], 4);
        assert!(bind_shape("y", &t, &[5, 3, 100], &mut env)
            .unwrap_err()
            .message
            .contains("`B` is 5 here but 4"));
        assert!(bind_shape("z", &t, &[4, 2, 100], &mut env).is_err());
        let strided = Dim::sym("T").windowed(2, 3, 2).unwrap();
        assert_eq!(eval_dim(&strided, &env), Some(50));
    }
}
