//! fnet: a compiler and runtime for convolutional networks with flexible kernels.

pub mod diag;
pub mod driver;
pub mod eval;
pub mod ir;
pub mod summary;
pub mod syntax;
