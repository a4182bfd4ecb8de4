//! The JIT's CPU micro-kernels against naive loops, on every ISA path this CPU runs.

#[path = "jit_kernels/common.rs"]
mod common;
#[path = "jit_kernels/conv.rs"]
mod conv;
#[path = "jit_kernels/direct.rs"]
mod direct;
#[path = "jit_kernels/filter.rs"]
mod filter;
#[path = "jit_kernels/isa.rs"]
mod isa;
#[path = "jit_kernels/pool.rs"]
mod pool;
#[path = "jit_kernels/sgemm.rs"]
mod sgemm;
#[path = "jit_kernels/shortcut.rs"]
mod shortcut;
#[path = "jit_kernels/winograd.rs"]
mod winograd;
