//! The CPU JIT. This branch holds only the hand-written hot loops it calls.

pub mod kernels;
