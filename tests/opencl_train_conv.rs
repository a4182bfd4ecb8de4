//! Whole training graphs with convs, linear layers and LC folds on OpenCL against the
//! reference interpreter: one training step (`autodiff::differentiate`, `Mode::Train`)
//! on both backends with the same parameters, inputs, labels and seed; the loss and
//! every gradient agree within f32 tolerance scaled to magnitude. The conv paths in
//! training (direct, grouped, FFT, strided, dilated, causal) read their weights and
//! biases from parameter buffers; the backward kernels are `kernel_ir::conv_backward`
//! and `kernel_ir::fft_backward` (`tests/opencl_conv_backward.rs` checks them alone).
//!
//! Needs an OpenCL platform (PoCL: `scripts/setup.sh`); `FNET_TEST_DEVICE` picks one.
#![cfg(feature = "opencl")]

mod common;

use common::opencl::{backend, example, input, program};
include!("shared/train_conv_steps.rs");
