//! fnet: a compiler and runtime for convolutional networks with flexible kernels.

pub mod autodiff;
pub mod backend;
pub mod cli;
pub mod cost;
pub mod diag;
pub mod driver;
pub mod eval;
pub mod init;
pub mod io;
pub mod ir;
pub mod jit;
pub mod kernel_ir;
pub mod opencl;
pub mod passes;
pub mod plot;
pub mod recipe;
pub mod reference;
pub mod runtime;
pub mod search;
pub mod summary;
pub mod syntax;
pub mod tensor;
pub mod train;
