//! The regularisers' kernels on OpenCL (`kernel_ir::plan::lower_regularizers`) against
//! the interpreter (`reference::grad::regularizers`): one training step with each
//! penalty in the loss, on both backends with the same parameters, inputs and labels;
//! the loss, its parts (`loss.ce`, `reg.*`) and every gradient agree within f32
//! tolerance scaled to magnitude. Each penalty op is checked where it is active (a
//! non-zero value), and the orthogonality value by hand on a 2×2 basis.
//! Every example with its recipe's loss is in `tests/opencl_train.rs`.
//!
//! These tests need an OpenCL platform (PoCL); see `tests/opencl.rs`.
#![cfg(feature = "opencl")]

mod common;

use common::opencl::{backend, program};
include!("shared/regularizer_steps.rs");
