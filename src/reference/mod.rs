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
pub mod grad;
pub mod im2col;
pub mod layout;
pub mod lc;
pub mod linear;
pub mod magnet;
pub mod mask;
pub mod norm;
pub mod pool;
pub mod shortcut;

/// Uniform values in [-1, 1) for the unit tests of the kernels.
#[cfg(test)]
pub(crate) fn rand_t(rng: &mut rand_pcg::Pcg64, shape: &[usize]) -> crate::tensor::Tensor<f64> {
    use rand::Rng;
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    crate::tensor::Tensor::from_vec(shape.to_vec(), data).expect("shape")
}
