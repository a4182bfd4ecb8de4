//! `Prepared::run_streaming` on the JIT (`JitExecutable::launch_streaming`): a training
//! step hands out every output exactly once, bit-equal to what `run` + `read_outputs`
//! give for the same step, and the gradients of the last layers are handed out while
//! the backward of the first ones is still to run, so a data-parallel trainer can
//! overlap their all-reduce with it (`train::overlap`, docs/distributed.md).

mod common;

use common::jit::backend;
use common::models::{example, input, program};
use common::perturbed_weights;

type P = fnet::backend::JitPrepared;
include!("shared/streaming.rs");
