//! The recipe's `resize: N`: every image of both splits resampled to N×N before
//! training, so a model can train at one resolution and be deployed at another (the
//! FlexConv cross-resolution experiment, docs/experiments.md).
//!
//! Bilinear, with PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`
//! geometry and no antialiasing: output pixel `i` samples the input at
//! `(i + 0.5) · in/out − 0.5`, clamped at 0, between its two neighbours. For an exact
//! 2× downsampling that point falls half-way between pixels `2i` and `2i+1`, so the
//! result is the 2×2 average, which the PyTorch controls reproduce exactly.

use super::data::Samples;
use crate::runtime::RunError;
use crate::tensor::Tensor;

/// The two source indices and the weight of the second, for each of `out` samples of
/// an axis of length `inp`.
fn taps(inp: usize, out: usize) -> Vec<(usize, usize, f32)> {
    let scale = inp as f64 / out as f64;
    (0..out)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(inp - 1);
            let hi = (lo + 1).min(inp - 1);
            (lo, hi, (src - lo as f64) as f32)
        })
        .collect()
}

/// One `h`×`w` plane resampled to `n`×`n`.
pub fn resize_plane(x: &[f32], h: usize, w: usize, n: usize) -> Vec<f32> {
    let (ty, tx) = (taps(h, n), taps(w, n));
    let mut out = Vec::with_capacity(n * n);
    for &(y0, y1, fy) in &ty {
        for &(x0, x1, fx) in &tx {
            let top = x[y0 * w + x0] * (1.0 - fx) + x[y0 * w + x1] * fx;
            let bottom = x[y1 * w + x0] * (1.0 - fx) + x[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// Every image of `s` (samples `[…, H, W]`; leading axes are channels) resampled to
/// `n`×`n`.
pub fn resize_samples(s: &Samples, n: usize) -> Result<Samples, RunError> {
    let shape = s.sample_shape();
    let [.., h, w] = shape else {
        return Err(RunError::new(format!(
            "resize: {n}: the samples have shape {shape:?}, but resizing needs images (at least two axes, [.., H, W])"
        ))
        .hint("remove `resize:` from the train section for data that are not images"));
    };
    let (h, w) = (*h, *w);
    if h == 0 || w == 0 {
        return Err(RunError::new(format!(
            "resize: {n}: the samples have an empty image shape {shape:?}"
        )));
    }
    let planes = s.images.data.len() / (h * w);
    let mut data = Vec::with_capacity(planes * n * n);
    for p in s.images.data.chunks(h * w) {
        data.extend(resize_plane(p, h, w, n));
    }
    let mut out_shape = s.images.shape.clone();
    let k = out_shape.len();
    out_shape[k - 2] = n;
    out_shape[k - 1] = n;
    Ok(Samples {
        images: Tensor {
            shape: out_shape,
            data,
        },
        labels: s.labels.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_is_the_two_by_two_average() {
        // A 4×4 image by hand: each output pixel is the mean of its 2×2 block.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let y = resize_plane(&x, 4, 4, 2);
        assert_eq!(y, vec![2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn a_non_integer_ratio_matches_hand_values() {
        // 3 → 2: scale 1.5, source points 0.25 and 1.75 on each axis.
        // Row of [0, 1, 2]: 0.25 → 0.25, 1.75 → 1.75.
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let y = resize_plane(&x, 3, 3, 2);
        // Rows are 3 apart: value = 3·ry + rx, i.e. [1, 2.5, 5.5, 7], which is what
        // F.interpolate(arange(9.).view(1, 1, 3, 3), size=(2, 2), mode="bilinear",
        // align_corners=False) gives.
        let want = [
            3.0 * 0.25 + 0.25,
            3.0 * 0.25 + 1.75,
            3.0 * 1.75 + 0.25,
            3.0 * 1.75 + 1.75,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }

    #[test]
    fn upsampling_clamps_at_the_border() {
        // 2 → 4 on a row [0, 1]: source points -0.25→0 (clamped), 0.25, 0.75, 1.25→1.
        let x = [0.0, 1.0, 0.0, 1.0];
        let y = resize_plane(&x, 2, 2, 4);
        assert_eq!(&y[..4], &[0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn samples_keep_labels_and_channels() {
        let s = Samples {
            images: Tensor {
                shape: vec![2, 1, 4, 4],
                data: (0..32).map(|v| v as f32).collect(),
            },
            labels: vec![3, 7],
        };
        let r = resize_samples(&s, 2).unwrap();
        assert_eq!(r.images.shape, vec![2, 1, 2, 2]);
        assert_eq!(r.labels, vec![3, 7]);
        assert_eq!(&r.images.data[4..], &[18.5, 20.5, 26.5, 28.5]);
    }

    #[test]
    fn flat_samples_are_refused_with_a_hint() {
        let s = Samples {
            images: Tensor {
                shape: vec![1, 4],
                data: vec![0.0; 4],
            },
            labels: vec![0],
        };
        let e = resize_samples(&s, 2).unwrap_err().to_string();
        assert!(e.contains("resize: 2") && e.contains("[4]"), "{e}");
    }
}
