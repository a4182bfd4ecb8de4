//! Whole training graphs with convs, linear layers and LC folds on the JIT backend:
//! the tests of `tests/opencl_train_conv.rs` (their body is
//! `tests/shared/train_conv_steps.rs`) with the JIT in OpenCL's place.

mod common;

use common::jit::backend;
use common::models::{example, input, program};
include!("shared/train_conv_steps.rs");
