//! The configurations of a slot family and their compiled plans: each configuration
//! is elaborated, differentiated and prepared once, when first needed for a batch
//! size, and kept for the whole search (a step never re-elaborates). A configuration
//! that cannot be built (a map shrunk below a kernel, parameters of another shape) is
//! recorded with the reason and left out of the search.

use crate::autodiff::{Loss, TrainingGraph};
use crate::backend::{Backend, Prepared};
use crate::cost::CostTableId;
use crate::driver::compile_file;
use crate::eval::Options;
use crate::ir::graph::Graph;
use crate::recipe::Recipe;
use crate::runtime::{initialise, Mode, ParamStore, RunError};
use crate::train::graphs::{inference_graph, training_graph, Compilation};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Every way to choose `active` of slots 1..=`count`, in lexicographic order (the
/// order `--config` and `default:` number them in).
pub fn combinations(count: u64, active: u64) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn go(start: u64, count: u64, left: u64, cur: &mut Vec<u64>, out: &mut Vec<Vec<u64>>) {
        if left == 0 {
            out.push(cur.clone());
            return;
        }
        for s in start..=count + 1 - left {
            cur.push(s);
            go(s + 1, count, left - 1, cur, out);
            cur.pop();
        }
    }
    if active <= count {
        go(1, count, active, &mut cur, &mut out);
    }
    out
}

/// The `count` and `active` of the model's first `pool_slots(...)` family when both
/// are written as numbers: what the search needs to try other configurations when
/// the default one does not build (its elaboration then fails before the family is
/// recorded).
pub fn literal_family(text: &str) -> Option<(u64, u64)> {
    use crate::syntax::ast::{ExprKind, Item};
    let program = crate::syntax::parser::parse_program(text).ok()?;
    let value = program.model.items.iter().find_map(|i| match i {
        Item::Slots { value, .. } => Some(value.clone()),
        _ => None,
    })?;
    let ExprKind::Call { callee, args } = value.kind else {
        return None;
    };
    if callee.name != "pool_slots" {
        return None;
    }
    let arg = |name: &str, pos: usize| {
        let named = args
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.name == name));
        let a = named.or_else(|| args.get(pos).filter(|a| a.name.is_none()))?;
        match a.value.kind {
            ExprKind::Int(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    };
    Some((arg("count", 0)?, arg("active", 1)?))
}

/// The byte range of the `train { … }` section, to tell an error of the section
/// (the same for every configuration) from one of a configuration.
pub fn train_span(text: &str) -> Option<(usize, usize)> {
    let program = crate::syntax::parser::parse_program(text).ok()?;
    program.train.map(|t| (t.span.start, t.span.end))
}

/// `[2, 4]` as `--config` takes it: `2,4`.
pub fn config_words(c: &[u64]) -> String {
    c.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// One buildable configuration: its graphs and the plans prepared so far.
pub struct Built {
    pub slots: Vec<u64>,
    pub graph: Graph,
    pub tg: TrainingGraph,
    pub inference: Graph,
    /// The model graph's parameter and buffer names (what a validation writes).
    pub eval_params: Vec<String>,
    train: HashMap<usize, Box<dyn Prepared<f32>>>,
    val: HashMap<usize, Box<dyn Prepared<f32>>>,
}

/// A configuration left out, and why.
#[derive(Clone, Debug)]
pub struct Excluded {
    pub slots: Vec<u64>,
    pub reason: String,
}

/// Elaborates configuration `slots` of the model and compiles its training graph
/// (`train::graphs::training_graph`, at `batch` for `cost`'s table, without the
/// passes `skip` names); the error is the first diagnostic's message, for the
/// exclusion report.
pub fn build(
    model: &Path,
    set: &[(String, String)],
    slots: &[u64],
    recipe: &Recipe,
    (batch, cost, skip): (u64, CostTableId, &[String]),
) -> Result<Built, String> {
    let options = Options {
        slot_config: Some(slots.to_vec()),
        overrides: set.to_vec(),
    };
    let (_, module) = compile_file(model, &options).map_err(|r| {
        r.diagnostics
            .first()
            .map_or_else(|| "it does not compile".to_string(), |d| d.message.clone())
    })?;
    let graph = module.graph;
    let loss = Loss::from_recipe(recipe, 0).map_err(|e| e.to_diagnostic().message)?;
    let initial = initialise::<f32>(&graph, graph.seed).map_err(|e| e.to_string())?;
    let how = Compilation {
        batch,
        cost,
        skip,
        params: Some(&initial),
    };
    let tg = training_graph(&graph, &loss, &how).map_err(|e| e.to_string())?;
    let inference = inference_graph(&graph, &how).map_err(|e| e.to_string())?;
    let eval_params = graph.params().map(|(_, n, _)| n.name.clone()).collect();
    Ok(Built {
        slots: slots.to_vec(),
        graph,
        tg,
        inference,
        eval_params,
        train: HashMap::new(),
        val: HashMap::new(),
    })
}

impl Built {
    /// Plans prepared so far (training and evaluation, all batch sizes).
    pub fn plans(&self) -> usize {
        self.train.len() + self.val.len()
    }

    /// The training plan for batches of `n` samples of `sample` shape, prepared on
    /// first use with `params` (any model's: every step writes its own in).
    pub fn train_plan(
        &mut self,
        backend: &dyn Backend,
        n: usize,
        sample: &[usize],
        params: &ParamStore<f32>,
    ) -> Result<&mut Box<dyn Prepared<f32>>, RunError> {
        if !self.train.contains_key(&n) {
            let mut shape = vec![n];
            shape.extend(sample);
            let mut p =
                backend.prepare(self.tg.graph.clone(), params.clone(), &[shape, vec![n]])?;
            p.set_mode(Mode::Train)?;
            self.train.insert(n, p);
        }
        Ok(self.train.get_mut(&n).expect("inserted"))
    }

    /// Runs the training plan for batch `b` on `params` (written in first: every
    /// model shares the plan) and returns its outputs.
    pub fn train_run(
        &mut self,
        backend: &dyn Backend,
        sample: &[usize],
        params: &ParamStore<f32>,
        b: &crate::train::data::Batch,
    ) -> Result<Vec<crate::tensor::Tensor<f32>>, RunError> {
        let n = b.labels.data.len();
        self.train_plan(backend, n, sample, params)?;
        let plan = self.train.get_mut(&n).expect("prepared");
        for name in self.tg.grads.iter().chain(&self.tg.buffers) {
            plan.write_param(name, &params[name])?;
        }
        plan.write_inputs(&[b.x.clone(), b.labels.clone()])?;
        plan.run()?;
        plan.read_outputs()
    }

    /// The model's logits for batch `b` on `params`, as the per-step validation scores
    /// them: the model graph planned once per batch size in training mode, because a
    /// backend keeps parameters as writable buffers only there (an evaluation plan
    /// folds them into its constants). Batch statistics, as the paper's supernets use
    /// in evaluation too (BatchNorm without running statistics); dropout would be on.
    pub fn val_run(
        &mut self,
        backend: &dyn Backend,
        sample: &[usize],
        params: &ParamStore<f32>,
        b: &crate::train::data::Batch,
    ) -> Result<crate::tensor::Tensor<f32>, RunError> {
        let n = b.labels.data.len();
        if !self.val.contains_key(&n) {
            let mut shape = vec![n];
            shape.extend(sample);
            let store: ParamStore<f32> = (self.eval_params.iter())
                .filter_map(|k| params.get(k).map(|t| (k.clone(), t.clone())))
                .collect();
            let mut p = backend.prepare(self.graph.clone(), store, &[shape])?;
            p.set_mode(Mode::Train)?;
            self.val.insert(n, p);
        }
        let plan = self.val.get_mut(&n).expect("prepared");
        for name in &self.eval_params {
            if let Some(t) = params.get(name) {
                plan.write_param(name, t)?;
            }
        }
        let mut out = plan.forward(std::slice::from_ref(&b.x))?;
        Ok(out.swap_remove(0))
    }

    /// An evaluation plan of the inference-compiled model with `params` bound, for
    /// batches of `n` (the final evaluation: each (configuration, model) once).
    pub fn eval_plan(
        &self,
        backend: &dyn Backend,
        n: usize,
        sample: &[usize],
        params: &ParamStore<f32>,
    ) -> Result<Box<dyn Prepared<f32>>, RunError> {
        let mut shape = vec![n];
        shape.extend(sample);
        let names: Vec<String> = self
            .inference
            .params()
            .map(|(_, p, _)| p.name.clone())
            .collect();
        let store: ParamStore<f32> = (names.iter())
            .filter_map(|k| params.get(k).map(|t| (k.clone(), t.clone())))
            .collect();
        let mut p = backend.prepare(self.inference.clone(), store, &[shape])?;
        p.set_mode(Mode::Eval)?;
        Ok(p)
    }
}

/// The parameter shapes of a graph (for checking that configurations share weights).
pub fn shapes(params: &ParamStore<f32>) -> BTreeMap<String, Vec<usize>> {
    params
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_in_lexicographic_order() {
        let c = combinations(5, 2);
        assert_eq!(c.len(), 10);
        assert_eq!(c[0], vec![1, 2]);
        assert_eq!(c[3], vec![1, 5]);
        assert_eq!(c[4], vec![2, 3]);
        assert_eq!(c[9], vec![4, 5]);
        assert_eq!(combinations(9, 2).len(), 36);
        assert_eq!(combinations(3, 0), vec![Vec::<u64>::new()]);
        assert!(combinations(2, 3).is_empty());
        assert_eq!(config_words(&[2, 4]), "2,4");
        let text = "model m {\n input x: f32[B, 1, 8, 8]\n slots p = pool_slots(count: 5, active: 2)\n return x\n}\n";
        assert_eq!(literal_family(text), Some((5, 2)));
        assert_eq!(
            literal_family("model m {\n input x: f32[B, 1]\n return x\n}\n"),
            None
        );
    }
}
