//! The pass registry and the default pipelines.

use super::choose_conv_algo::ChooseConvAlgo;
use super::fold_bases::FoldBases;
use super::fuse_epilogue::FuseEpilogue;
use super::fuse_mask::FuseMask;
use super::manager::{CompileMode, Pass, PassManager};
use super::materialize_frozen::MaterializeFrozen;
use super::memory_plan::MemoryPlanPass;
use super::{canonicalize::Canonicalize, cse::Cse, dce::Dce, specialize_slots::SpecializeSlots};

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

/// The passes a compilation for `mode` runs by default.
pub fn default_pipeline(mode: CompileMode) -> PassManager {
    let _ = mode;
    PassManager::new(registry())
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
