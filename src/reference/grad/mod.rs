//! Reference backward kernels: the vector-Jacobian products (VJPs) of the
//! forward reference kernels, naive and generic over f32/f64.
//!
//! These are the oracle the autodiff pass's VJP rules call on the reference
//! interpreter, and the ground truth the generated backward kernels are tested
//! against. Each one mirrors the loop nest of its forward kernel, scattering
//! where the forward gathers, so the two are transposes of one another by
//! construction; the f64 central-difference tests in each file check it.
//! Bad shapes are [`ShapeError`](crate::tensor::ShapeError)s, never panics.
//!
//! Every kernel takes the upstream gradient `dy` (shaped as the forward's
//! output) and returns gradients shaped as the forward's operands:
//!
//! - [`conv`]: [`conv::conv_backward_data`] (`dx`, `[B, Ci, …]`),
//!   [`conv::conv_backward_filter`] (`dw`, `[Co, Ci/groups, k…]`) and
//!   [`conv::conv_backward_bias`] (`db`, `[Co]`) for 1D and 2D convs with
//!   stride, explicit `(lo, hi)` padding, dilation and groups, in the
//!   conventions of [`reference::conv`](crate::reference::conv); and the
//!   same for [`conv::causal_conv1d_backward_data`] /
//!   [`conv::causal_conv1d_backward_filter`], whose even kernels' implicit
//!   leading zero tap gets no gradient.
//! - [`pool`]: max pooling (through the forward's argmax: the first maximum
//!   of a window in row-major order, or its last NaN), average pooling (with
//!   or without padding in the divisor) and global average pooling, each
//!   returning `dx` `[B, C, …]`.
//! - [`norm`]: training-mode batch norm (batch mean, biased variance, as
//!   PyTorch normalises), returning `dx` and, with affine parameters,
//!   `dgamma` and `dbeta`. Running statistics are buffers: updated by the
//!   forward, never differentiated.
//! - [`elementwise`]: linear (`dx` `[B, F]`, `dw` `[O, F]`, `db` `[O]`),
//!   ReLU, exact-erf GELU, and dropout with a given keep mask.
//! - [`lc`]: the LC fold's gradients to its basis (`[J, …]`) and to its
//!   coefficients (`[Co, J, 1…]`).
//! - [`magnet`]: FlexConv kernel synthesis: MAGNet's parameters (Gabor
//!   `Wg, bg, γ, μ`; hidden and output linears), the Gaussian mask's mean and
//!   sigma, and the mask product's gradient to the mask.
//! - [`loss`]: cross-entropy with label smoothing over a stable
//!   log-softmax, both the forward (mean over the batch) and its gradient
//!   to the logits.
//! - [`regularizers`]: the loss's regularisers (shared bases' orthogonality,
//!   FlexConv's anti-aliasing, the unsquared kernel norm), each a value and its
//!   gradient to every operand.

pub mod conv;
pub mod elementwise;
pub mod lc;
pub mod loss;
pub mod magnet;
pub mod norm;
pub mod pool;
pub mod regularizers;

/// Checks a backward kernel against central differences of its forward along
/// one random direction: `⟨v, J·u⟩ ≈ ⟨Jᵀ·v, u⟩` to a relative 1e-6.
///
/// `f` is the forward on the flattened operands `x`; `vjp` maps an upstream
/// gradient `v` (shaped as `f`'s output) to the flattened operand gradients.
#[cfg(test)]
pub(crate) fn check_vjp(
    what: &str,
    seed: u64,
    x: &[f64],
    f: impl Fn(&[f64]) -> Vec<f64>,
    vjp: impl Fn(&[f64]) -> Vec<f64>,
) {
    use rand::Rng;
    let mut rng = crate::init::seeded(seed);
    let u: Vec<f64> = (0..x.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let n_out = f(x).len();
    let v: Vec<f64> = (0..n_out).map(|_| rng.random_range(-1.0..1.0)).collect();
    let h = 1e-5;
    let shifted = |s: f64| -> Vec<f64> { x.iter().zip(&u).map(|(a, b)| a + s * b).collect() };
    let (fp, fm) = (f(&shifted(h)), f(&shifted(-h)));
    let lhs: f64 = v
        .iter()
        .zip(fp.iter().zip(&fm))
        .map(|(vi, (p, m))| vi * (p - m) / (2.0 * h))
        .sum();
    let g = vjp(&v);
    assert_eq!(g.len(), x.len(), "{what}: gradient length");
    let rhs: f64 = g.iter().zip(&u).map(|(a, b)| a * b).sum();
    let scale = lhs.abs().max(rhs.abs());
    // A vanishing product would make the check pass whatever the kernel does.
    assert!(scale > 1e-6, "{what}: degenerate check, ⟨Jᵀv, u⟩ = {rhs}");
    let rel = (lhs - rhs).abs() / scale;
    assert!(
        rel < 1e-6,
        "{what}: ⟨v, Ju⟩ = {lhs} by differences, ⟨Jᵀv, u⟩ = {rhs}, relative error {rel:e}"
    );
}

/// Uniform values in [-1, 1) as a flat vector.
#[cfg(test)]
pub(crate) fn rand_vec(rng: &mut rand_pcg::Pcg64, n: usize) -> Vec<f64> {
    use rand::Rng;
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}
