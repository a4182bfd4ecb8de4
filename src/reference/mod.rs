//! Reference kernels: naive, obviously-correct implementations of every
//! numeric operation fnet needs, generic over f32/f64.
//!
//! These are the oracle for faster backends and the engine of the reference
//! interpreter. They favour clarity over speed (rayon over the batch at most)
//! and return [`ShapeError`](crate::tensor::ShapeError) on bad shapes instead
//! of panicking.

pub mod activation;
pub mod basis;
pub mod conv;
pub mod direct_blocked;
pub mod direct_tiled;
pub mod fft_conv;
pub mod im2col;
pub mod layout;
pub mod lc;
pub mod linear;
pub mod magnet;
pub mod mask;
pub mod norm;
pub mod pool;
pub mod shortcut;
