//! Option-A (parameter-free) residual shortcut of the CIFAR ResNets.
//!
//! The Deeply-Shared-Bases code (ssregibility/Net_RL2,
//! `models/cifar10/resnet.py`, `BasicBlock` and `BasicBlock_Basis`) uses,
//! whenever `stride != 1 or in_planes != planes`:
//!
//! ```text
//! F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
//! ```
//!
//! i.e. the subsampling stride is hard-coded to 2 (not the block's stride)
//! and `planes // 4` zero channels go on *each* side, so the original
//! channels sit in the middle. That only gives `planes` channels when
//! `in_planes = planes / 2`, which is the only way the CIFAR ResNets use it
//! (16→32, 32→64). [`option_a`] follows that code exactly;
//! [`shortcut_a`] is the general form.

use super::layout::{pad_channels, subsample2d};
use crate::tensor::{Scalar, ShapeError, Tensor};

/// `pad_channels(x[:, :, ::stride, ::stride], pad_lo, pad_hi)`.
pub fn shortcut_a<T: Scalar>(
    x: &Tensor<T>,
    stride: usize,
    pad_lo: usize,
    pad_hi: usize,
) -> Result<Tensor<T>, ShapeError> {
    pad_channels(&subsample2d(x, [stride, stride])?, pad_lo, pad_hi)
}

/// The official CIFAR option-A shortcut into a block of width `planes`:
/// subsample by 2 and pad `planes / 4` zero channels on each side. Errors if
/// the result would not have `planes` channels (the official code would fail
/// later, at the residual add).
pub fn option_a<T: Scalar>(x: &Tensor<T>, planes: usize) -> Result<Tensor<T>, ShapeError> {
    let y = shortcut_a(x, 2, planes / 4, planes / 4)?;
    if y.shape[1] != planes {
        return Err(ShapeError::new(
            "option-A shortcut",
            format!(
                "{} input channels (planes/2) for planes = {planes}",
                planes / 2
            ),
            format!("{} input channels", x.shape[1]),
        ));
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_channels_centred() {
        // 2 channels of 2x2 → planes 4: one zero channel each side, 1x1 spatial.
        let x = Tensor::from_vec(vec![1, 2, 2, 2], (1..=8).map(f64::from).collect()).unwrap();
        let y = option_a(&x, 4).unwrap();
        assert_eq!(y.shape, vec![1, 4, 1, 1]);
        assert_eq!(y.data, vec![0., 1., 5., 0.]);
        assert!(option_a(&x, 8).is_err());
    }
}
