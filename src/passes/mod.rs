//! Graph-to-graph passes, one per file, run by the pass manager. The default pipeline
//! and the pass registry are in `pipeline`.

pub mod canonicalize;
pub mod choose_conv_algo;
pub mod cse;
pub mod dce;
pub mod fold_bases;
pub mod fuse_epilogue;
pub mod fuse_mask;
pub mod manager;
pub mod materialize_frozen;
pub mod memory_plan;
pub mod pipeline;
pub mod specialize_slots;

pub use manager::{CompileMode, Note, Pass, PassContext, PassError, PassManager, PassRecord};
