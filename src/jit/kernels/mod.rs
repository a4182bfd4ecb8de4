//! Hand-written CPU hot loops for the JIT: GEMM micro-kernels per ISA, im2col
//! convolution and Winograd convolution. See `docs/jit_kernels.md`.

pub mod batch_norm;
pub mod conv_backward;
pub mod conv_direct;
pub mod conv_filter_direct;
pub mod conv_im2col;
pub mod conv_params;
pub mod direct_tile;
pub mod elementwise;
pub mod filter_tile;
pub mod isa;
pub mod microkernel;
pub mod pack;
pub mod pool;
pub mod scratch;
pub mod sgemm;
pub mod shortcut;
pub mod winograd;
pub mod winograd_filter;
pub mod winograd_filter_transform;
pub mod winograd_strip;
pub mod winograd_tiles;
pub mod winograd_transform;
