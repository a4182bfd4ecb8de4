//! Hand-written CPU hot loops for the JIT: GEMM micro-kernels per ISA, im2col
//! convolution and Winograd convolution. See `docs/jit_kernels.md`.

pub mod isa;
pub mod microkernel;
pub mod pack;
pub mod sgemm;
