//! The pass registry and the default pipelines.

use super::choose_conv_algo::ChooseConvAlgo;
use super::fold_bases::FoldBases;
use super::fuse_epilogue::FuseEpilogue;
use super::fuse_mask::FuseMask;
use super::manager::{CompileMode, Pass, PassManager};
use super::materialize_frozen::MaterializeFrozen;
use super::memory_plan::MemoryPlanPass;
use super::{canonicalize::Canonicalize, cse::Cse, dce::Dce, specialize_slots::SpecializeSlots};
use crate::autodiff::{Autodiff, AutodiffError, Loss};
use crate::recipe::Recipe;

/// Every pass, by name, in default order.
pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(SpecializeSlots),
        Box::new(Canonicalize),
        Box::new(MaterializeFrozen),
        Box::new(Cse),
        Box::new(Dce),
        Box::new(FuseMask),
        Box::new(FoldBases),
        Box::new(ChooseConvAlgo),
        Box::new(FuseEpilogue),
        Box::new(MemoryPlanPass),
    ]
}

/// Where the autodiff pass goes in the training pipeline: after the forward graph is
/// in its differentiable form (frozen tensors are constants, FlexConv kernels are
/// `flex_kernel` ops over their parameters, bases fold into `lc_fold` over the trainable
/// coefficients) and before the passes that must see the backward graph too (each conv's
/// algorithm, the epilogue fusion, and the memory plan, whose lifetimes must keep
/// activations alive until the backward pass reads them).
pub const AUTODIFF_AFTER: &str = "fold-bases";

/// The passes a compilation for `mode` runs by default; the pipeline refuses a context
/// of the other mode. Both modes run the same passes in the same order; what training
/// changes is what the mode-aware passes may do (the "training graphs" column of
/// docs/compiler.md's pipeline table, checked by `tests/passes_mode.rs`): dropout stays,
/// no batchnorm folds, FlexConv kernels are never folded to constants, and nothing the
/// optimiser updates becomes a constant. Training also runs the autodiff pass after
/// [`AUTODIFF_AFTER`], with plain cross-entropy ([`training_pipeline`] takes another
/// loss), so the passes after it see the forward and the backward graph.
pub fn default_pipeline(mode: CompileMode) -> PassManager {
    match mode {
        CompileMode::Inference => PassManager::for_mode(registry(), mode),
        CompileMode::Training => training_pipeline(Loss::default()),
    }
}

/// The training pipeline with `loss`: the default passes, and the autodiff pass in its
/// slot after [`AUTODIFF_AFTER`].
pub fn training_pipeline(loss: Loss) -> PassManager {
    let mut pm = PassManager::for_mode(registry(), CompileMode::Training);
    pm.insert_after(AUTODIFF_AFTER, Box::new(Autodiff { loss }))
        .expect("the registry holds the autodiff slot");
    pm
}

/// The pipeline that compiles a model with `recipe` (its `train { ... }` section) in
/// `mode`: in training, the loss is the recipe's ([`training_loss`]), regularisers
/// included. A recipe whose loss autodiff cannot take (a regulariser listed twice) is
/// an error.
pub fn pipeline_for(
    mode: CompileMode,
    recipe: Option<&Recipe>,
) -> Result<PassManager, AutodiffError> {
    Ok(match mode {
        CompileMode::Inference => default_pipeline(mode),
        CompileMode::Training => training_pipeline(training_loss(recipe)?),
    })
}

/// The loss a training compilation differentiates: the recipe's `loss:` (its label
/// smoothing) and its `regularizers:` ([`Loss::from_recipe`]), else plain
/// cross-entropy. The one place where a compilation's recipe becomes an autodiff
/// [`Loss`]. Whether the model has what a regulariser reads (shared bases, flexconvs)
/// is checked when the autodiff pass runs.
pub fn training_loss(recipe: Option<&Recipe>) -> Result<Loss, AutodiffError> {
    match recipe {
        Some(r) => Loss::from_recipe(r, 0),
        None => Ok(Loss::default()),
    }
}

/// A pipeline from `--passes a,b,c`; unknown names are an error listing the known ones.
pub fn from_names(names: &[String]) -> Result<PassManager, String> {
    let mut passes = Vec::new();
    for name in names {
        let pass = registry()
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = registry().iter().map(|p| p.name()).collect();
                let hint = crate::diag::nearest(name, known.iter().copied())
                    .map(|b| format!(" (did you mean `{b}`?)"))
                    .unwrap_or_default();
                format!(
                    "unknown pass `{name}`{hint}; passes are: {}",
                    known.join(", ")
                )
            })?;
        passes.push(pass);
    }
    Ok(PassManager::new(passes))
}
