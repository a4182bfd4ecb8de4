//! The regularisers' kernels on the JIT backend (`--backend jit`): the tests of
//! `tests/opencl_regularizers.rs` (their body is `tests/shared/regularizer_steps.rs`)
//! with the JIT in OpenCL's place.

mod common;

use common::jit::backend;
use common::models::program;
include!("shared/regularizer_steps.rs");
