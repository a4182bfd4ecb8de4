//! The weights the PyTorch golden fixtures of `tools/golden_nets.py` and
//! `tools/golden_grads.py` were computed on.

use fnet::ir::graph::Graph;
use fnet::runtime::{initialise, ParamStore};

/// The seed of `fnetc init --seed 7` in the scripts.
pub const SEED: u64 = 7;

/// The formulas of `perturb` in tools/golden_nets.py, in f64 then rounded to f32.
pub fn perturb(store: &mut ParamStore<f32>) {
    for (name, t) in store.iter_mut() {
        let parts: Vec<&str> = name.split('.').collect();
        let last = parts[parts.len() - 1];
        let parent = if parts.len() > 1 {
            parts[parts.len() - 2]
        } else {
            ""
        };
        let f: fn(f64) -> f64 = if parent.starts_with("bn") && last == "weight" {
            |c| 1.0 + 0.2 * (2.0 * c + 1.0).sin()
        } else if parent.starts_with("bn") && last == "bias" {
            |c| 0.1 * (2.0 * c + 1.0).cos()
        } else if last == "bias" && t.ndim() == 1 && t.data.iter().all(|&v| v == 0.0) {
            |c| 0.05 * (3.0 * c + 1.0).sin()
        } else {
            continue;
        };
        assert_eq!(t.ndim(), 1, "{name}");
        for (c, v) in t.data.iter_mut().enumerate() {
            *v = f(c as f64) as f32;
        }
    }
}

/// `initialise::<f32>(graph, SEED)`, then `perturb`.
pub fn perturbed(graph: &Graph) -> ParamStore<f32> {
    let mut store = initialise::<f32>(graph, SEED).unwrap();
    perturb(&mut store);
    store
}
