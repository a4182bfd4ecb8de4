//! The CPU JIT: kernel-IR plans compiled with Cranelift and run on host memory.
//!
//! - [`render`]: one typed kernel as one Cranelift function over a range of grid
//!   points; [`render_expr`]: its expressions, vectors as `f32x4` parts.
//! - [`funcs`]: the elementwise functions kernels call, as the interpreter computes
//!   them.
//! - [`compile`]: the JIT module and the in-memory cache of compiled kernels.
//! - [`exec`]: a plan's buffers and launches, rayon over each launch's grid.
//! - [`kernels`]: hand-written hot loops (sgemm, im2col and Winograd convs) per ISA
//!   (docs/jit_kernels.md); [`native`]: a plan's native steps mapped onto them.
//!
//! `backend::jit` puts it behind the `Backend` seam; docs/jit.md says what is
//! measured and what is not done.

pub mod compile;
pub mod exec;
pub mod funcs;
pub mod kernels;
pub mod native;
pub mod render;
pub mod render_expr;

pub use compile::{CompileStats, Compiler, KernelFn};
pub use exec::{run_kernel, JitExecutable};
