//! `fnetc train`: trains a model from its `train {}` section over the backend seam.
//!
//! One concept per file: [`settings`] (the section with flags applied, unsupported
//! keys refused), [`data`] (loading, shuffling, augmentation, prefetch),
//! [`optimizer`] (SGD, Adam, AdamW with groups), [`schedule`] (learning-rate
//! schedules), [`checkpoint`] (atomic, resumable bit for bit), [`distributed`] (data-parallel
//! training over MPI, with `mpi_group` behind the `mpi` feature, and [`watchdog`], a
//! timeout around its collectives), [`metrics`]
//! (`metrics.jsonl`, loss and accuracy), [`flex_sizes`] (FlexConv kernel sizes), [`source`] (the model as trained, for
//! `fnetc plot`), [`graphs`] (the training and evaluation
//! graphs) and [`trainer`] (the loop). See
//! `docs/training.md`.

pub mod checkpoint;
pub mod data;
pub mod distributed;
pub mod flex_sizes;
pub mod graphs;
pub mod metrics;
#[cfg(feature = "mpi")]
pub mod mpi_group;
pub mod optimizer;
pub mod overlap;
pub mod resize;
pub mod schedule;
pub mod settings;
pub mod source;
pub mod trainer;
pub mod watchdog;

pub use trainer::{train, train_in, Event, Summary, TrainArgs};
