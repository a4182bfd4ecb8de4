//! `Prepared::run_streaming` on OpenCL (`Executable::launch_streaming`: non-blocking
//! reads enqueued after each output's last writer, waited on in that order): a
//! training step hands out every output exactly once, bit-equal to what `run` +
//! `read_outputs` give for the same step, and the last layers' gradients come while
//! the first ones' backward is still to run (`train::overlap`, docs/distributed.md).
//!
//! These tests need an OpenCL platform (PoCL); see `tests/opencl.rs`.
#![cfg(feature = "opencl")]

mod common;

use common::opencl::{backend, example, input, program};
use common::perturbed_weights;

type P = fnet::backend::OpenClPrepared;
include!("shared/streaming.rs");
