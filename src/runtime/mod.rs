//! Running models: parameters, input binding and the reference interpreter.

pub mod bind;
pub mod budget;
pub mod dropout;
pub mod error;
pub mod flex_kernel;
pub mod fused;
pub mod interp;
pub mod params;
pub mod sync_stats;
pub mod train_ops;

pub use error::RunError;
pub use interp::{run, Mode, RunOptions, RunResult};
pub use params::{check_store, initialise, ParamStore};
