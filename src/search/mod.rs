//! `fnetc search`: the Balanced Mixture of SuperNets over a model's pooling slots
//! (`../shared/SEEDS.md` §4, docs/search.md).
//!
//! One concept per file: [`mixture`] (W, temperature, balancing, sampling, the EMA),
//! [`kendall`] (τ-b, to judge a ranking), [`configs`] (the configurations, each
//! compiled once), [`state`] (the checkpoint file), [`resume`] (starting, resuming
//! and checkpointing a run), [`run`] (the loop) and
//! [`outputs`] (final evaluation, ranking, result files).

pub mod configs;
pub mod kendall;
pub mod mixture;
pub mod outputs;
pub mod resume;
pub mod run;
pub mod state;

pub use run::{search, Event, SearchArgs, Summary};
