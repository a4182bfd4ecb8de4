//! The CPU JIT's work counts for the two backward convs of a training step, the
//! filter gradient `dW` and the data gradient `dX`, by the routines of `jit::kernels`
//! that `kernel_ir::native` names ([`JitConvFilter`], [`JitConvData`]). Each takes the
//! *forward* conv's shape. The committed JIT table fits one row per routine
//! (`backward.filter.<name>`, `backward.data.<name>`), and the lowering runs the
//! cheapest that covers the conv (`kernel_ir::native::choose_filter`,
//! `choose_data`).
//!
//! Filter gradient, `dW = Σ_n dY ⋆ x`:
//!
//! | routine | f₁ | f₂ | f₃ | f₄ | f₅ |
//! |---|---|---|---|---|---|
//! | im2col | GEMM multiply-adds | column-matrix elements written | f₁ again at batch 1 (the image's GEMM split, not the images) | per-thread sums (threads × weight floats) | |
//! | direct | multiply-adds as the sliding-window tiles run them (channels in blocks of 16 or 32, positions over the padded row) | floats moved (the padded input copy, the transposed gradient) | per-thread sums of the tiles | f₁ again at batch 1 | 1 at batch 1 (the tiles of one image split: a fixed cost) |
//! | winograd2/4 | products in the Winograd domain (chunks' tiles rounded to 16 lanes × α² · ci · co) | transform work in the tiled layout (`tiles·α²·α·(ci + co)`) | the same in strips | per-chunk lane sums and their reduction (`(chunks + threads)·α²·ci·co`) | f₁ again when the tiles make one chunk |
//!
//! Data gradient: col2im (`col = Wᵀ·dY` by sgemm, every column entry added back) has
//! [GEMM multiply-adds, entries added back at stride 1, f₁ again at batch 1, entries
//! added back one by one (strided), f₁ again where the map has fewer than 128
//! positions (a narrow GEMM)]. The others run the forward conv whose output is
//! `dX` ([`data_shape`]: the channels swapped, the padding `d·(k−1) − p`) with the
//! forward routine of the same name, so their counts are the forward's
//! (`cost::jit::features` of that shape) and one more: the weight prepared every run
//! (flipped and transposed; for Winograd also transformed, `α·r·(α + r)` a filter),
//! where the forward's weight is prepared once, when the plan is loaded.
//!
//! Counts assume what the table was fitted on: AVX-512 (the strips, the 16- and
//! 32-channel blocks) and two threads.

use super::jit::{
    features as forward_features, winograd_applies, winograd_tiles, FIT_THREADS, NARROW_GEMM,
};
use super::{AlgoCost, ConvShape};
use crate::ir::op::{ConvAlgo, Padding};
use crate::jit::kernels::winograd::{chunk_tiles, chunking_by};
use crate::jit::kernels::winograd_filter::MIN_CHUNK;
use crate::jit::kernels::winograd_transform::LANES;
use crate::kernel_ir::native::{JitConvData, JitConvFilter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The backward rows of a table, by routine name (`JitConvFilter::name`,
/// `JitConvData::name`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackwardCosts {
    pub filter: BTreeMap<String, AlgoCost>,
    pub data: BTreeMap<String, AlgoCost>,
}

/// Estimated seconds of every backward routine of one conv, `f64::INFINITY` where
/// one does not cover it, in the order of `JitConvFilter::ALL` and
/// `JitConvData::ALL`.
#[derive(Clone, Debug, PartialEq)]
pub struct BackwardEstimate {
    pub filter: Vec<(JitConvFilter, f64)>,
    pub data: Vec<(JitConvData, f64)>,
}

impl BackwardCosts {
    /// The estimates for the forward conv `shape`.
    pub fn estimate(&self, shape: &ConvShape) -> BackwardEstimate {
        BackwardEstimate {
            filter: self.filter_estimate(shape),
            data: self.data_estimate(shape),
        }
    }

    /// The filter-gradient routines' estimates for the forward conv `shape`.
    pub fn filter_estimate(&self, shape: &ConvShape) -> Vec<(JitConvFilter, f64)> {
        let countable = shape.countable();
        JitConvFilter::ALL
            .map(|a| {
                let f = countable.then(|| filter_features(shape, a)).flatten();
                (a, seconds(self.filter.get(a.name()), f))
            })
            .to_vec()
    }

    /// The data-gradient routines' estimates for the forward conv `shape`.
    pub fn data_estimate(&self, shape: &ConvShape) -> Vec<(JitConvData, f64)> {
        let countable = shape.countable();
        JitConvData::ALL
            .map(|a| {
                let f = countable.then(|| data_features(shape, a)).flatten();
                (a, seconds(self.data.get(a.name()), f))
            })
            .to_vec()
    }
}

/// A row's estimate on work counts `f`; infinite without the row or the counts (a
/// routine that does not cover the conv, or a conv too large to count).
fn seconds(row: Option<&AlgoCost>, f: Option<Vec<f64>>) -> f64 {
    match (row, f) {
        (Some(c), Some(f)) => c.seconds(&f),
        _ => f64::INFINITY,
    }
}

/// Symmetric padding: the native backward routines take no other (the generated
/// kernels run the rest).
fn symmetric(shape: &ConvShape) -> bool {
    shape.pads().iter().all(|(lo, hi)| lo == hi)
}

/// The work counts of the filter gradient of the forward conv `shape` by `algo` (see
/// the module table); `None` where `algo` does not cover it.
pub fn filter_features(shape: &ConvShape, algo: JitConvFilter) -> Option<Vec<f64>> {
    if !symmetric(shape) {
        return None;
    }
    let out = shape.output()?;
    let plane: u64 = out.iter().product();
    let taps: u64 = shape.kernel.iter().product();
    let groups = shape.groups.max(1);
    let (cig, cog) = (shape.ci / groups, shape.co / groups);
    let b = shape.batch as f64;
    let threads = FIT_THREADS as u64;
    let weights = (shape.co * cig * taps) as f64;
    let one_image = shape.batch < threads;
    match algo {
        JitConvFilter::Im2col => {
            let macs = b * (shape.co * cig * taps * plane) as f64;
            let cols = b * (shape.ci * taps * plane) as f64;
            let split = if one_image { macs } else { 0.0 };
            let sums = if one_image {
                0.0
            } else {
                threads as f64 * weights
            };
            Some(vec![macs, cols, split, sums])
        }
        JitConvFilter::Direct => {
            let stride1 = shape.stride.iter().all(|&s| s == 1);
            let width_dilation = *shape.dilation.last()?;
            if !stride1 || *shape.kernel.last()? != 3 || width_dilation != 1 {
                return None;
            }
            // Positions over the padded row (`ho · wp`), channels in whole blocks of
            // the AVX-512 tile (`filter_tile::FilterShape`).
            let padded: Vec<u64> = shape
                .input
                .iter()
                .zip(shape.pads())
                .map(|(&n, (lo, hi))| n + lo + hi)
                .collect();
            let wp = *padded.last()?;
            let rows = plane / out.last()?.max(&1);
            let block = if cog > 16 { 32 } else { 16 };
            let channels = groups * cog.div_ceil(block) * block;
            let macs = b * (channels * cig * taps * rows * wp) as f64;
            let moved = b * (shape.ci * padded.iter().product::<u64>() + shape.co * plane) as f64;
            let sums = threads as f64 * (channels * cig * taps) as f64;
            let split = if one_image { macs } else { 0.0 };
            Some(vec![
                macs,
                moved,
                sums,
                split,
                f64::from(u8::from(one_image)),
            ])
        }
        JitConvFilter::Winograd2 | JitConvFilter::Winograd4 => {
            if !winograd_applies(shape) {
                return None;
            }
            let m = if algo == JitConvFilter::Winograd2 {
                2
            } else {
                4
            };
            let t = winograd_tiles(shape, m)?;
            let a2 = t.alpha * t.alpha;
            let (ci, co) = (shape.ci, shape.co);
            let cap = chunk_tiles(a2 as usize, ci as usize, co as usize).max(MIN_CHUNK);
            let plan = chunking_by(t.tiles as usize, cap, FIT_THREADS);
            let columns = (plan.chunks * plan.per.next_multiple_of(LANES)) as u64;
            let macs = (columns * a2 * ci * co) as f64;
            let transformed = (t.tiles * a2 * t.alpha * (ci + co)) as f64;
            let (tiled, strip) = if t.strips {
                (0.0, transformed)
            } else {
                (transformed, 0.0)
            };
            let sums = ((plan.chunks as u64 + threads) * a2 * ci * co) as f64;
            let serial = if plan.chunks < FIT_THREADS { macs } else { 0.0 };
            Some(vec![macs, tiled, strip, sums, serial])
        }
    }
}

/// The forward conv whose output is the data gradient of the forward conv `shape`:
/// stride 1 and padding at most `d·(k−1)` (`jit::kernels::conv_backward::
/// data_as_forward`); `None` elsewhere.
pub fn data_shape(shape: &ConvShape) -> Option<ConvShape> {
    if !symmetric(shape) || shape.stride.iter().any(|&s| s != 1) {
        return None;
    }
    let pads = shape
        .pads()
        .iter()
        .zip(&shape.kernel)
        .zip(&shape.dilation)
        .map(|((&(lo, _), &k), &d)| {
            let q = d * k.checked_sub(1)?;
            let p = q.checked_sub(lo)?;
            Some((p, p))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ConvShape {
        ci: shape.co,
        co: shape.ci,
        input: shape.output()?,
        padding: Padding::Explicit(pads),
        ..shape.clone()
    })
}

/// The work counts of the data gradient of the forward conv `shape` by `algo` (see
/// the module docs); `None` where `algo` does not cover it.
pub fn data_features(shape: &ConvShape, algo: JitConvData) -> Option<Vec<f64>> {
    if !symmetric(shape) {
        return None;
    }
    let taps: u64 = shape.kernel.iter().product();
    let groups = shape.groups.max(1);
    let cig = shape.ci / groups;
    let weights = (shape.co * cig * taps) as f64;
    let forward = match algo {
        JitConvData::Col2im => {
            let plane: u64 = shape.output()?.iter().product();
            let b = shape.batch as f64;
            let macs = b * (shape.co * cig * taps * plane) as f64;
            let added = b * (shape.ci * taps * plane) as f64;
            let split = if shape.batch < FIT_THREADS as u64 {
                macs
            } else {
                0.0
            };
            let strided = shape.stride.iter().any(|&s| s > 1);
            let (runs, one_by_one) = if strided { (0.0, added) } else { (added, 0.0) };
            // A GEMM of fewer than 128 columns (an 8×8 map) runs at a fraction of the
            // rate, as the forward's im2col does.
            let narrow = if plane < NARROW_GEMM { macs } else { 0.0 };
            return Some(vec![macs, runs, split, one_by_one, narrow]);
        }
        JitConvData::Direct => ConvAlgo::Direct,
        JitConvData::Im2col => ConvAlgo::Im2col,
        JitConvData::Winograd2 => ConvAlgo::Winograd2,
        JitConvData::Winograd4 => ConvAlgo::Winograd4,
    };
    let f = data_shape(shape)?;
    let mut counts = forward_features(&f, forward)?;
    let prepared = match forward {
        ConvAlgo::Winograd2 | ConvAlgo::Winograd4 => {
            let r = *shape.kernel.first()?;
            let alpha = r + if forward == ConvAlgo::Winograd2 { 1 } else { 3 };
            weights + (shape.co * shape.ci * alpha * r * (alpha + r)) as f64
        }
        _ => weights,
    };
    counts.push(prepared);
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_shape_swaps_channels_and_pads_by_the_kernels_reach() {
        let s = ConvShape::plain(2, 8, 16, &[10, 12], &[3, 5], Padding::Same);
        let f = data_shape(&s).unwrap();
        assert_eq!((f.ci, f.co, f.input.clone()), (16, 8, vec![10, 12]));
        assert_eq!(f.padding, Padding::Explicit(vec![(1, 1), (2, 2)]));
        assert_eq!(f.output().unwrap(), s.input);
        let mut strided = s.clone();
        strided.stride = vec![2, 2];
        assert!(data_shape(&strided).is_none());
        // Padding beyond the kernel's reach: no forward conv has this output.
        let wide = ConvShape::plain(
            2,
            8,
            16,
            &[10, 10],
            &[3, 3],
            Padding::Explicit(vec![(3, 3); 2]),
        );
        assert!(data_shape(&wide).is_none());
        assert!(data_features(&wide, JitConvData::Direct).is_none());
        assert!(data_features(&wide, JitConvData::Col2im).is_some());
    }

    #[test]
    fn work_counts_by_hand() {
        // 2 × 8 → 16, 10×10, 3×3 same: 100 positions per image, 72 columns.
        let s = ConvShape::plain(2, 8, 16, &[10, 10], &[3, 3], Padding::Same);
        let macs = 2.0 * 16.0 * 72.0 * 100.0;
        assert_eq!(
            filter_features(&s, JitConvFilter::Im2col).unwrap(),
            vec![macs, 2.0 * 72.0 * 100.0, 0.0, 2.0 * 16.0 * 72.0]
        );
        // Sliding windows: 10 rows of the padded width 12, 16 channels one block.
        assert_eq!(
            filter_features(&s, JitConvFilter::Direct).unwrap(),
            vec![
                2.0 * (16 * 72 * 120) as f64,
                2.0 * (8.0 * 144.0 + 16.0 * 100.0),
                2.0 * 16.0 * 72.0,
                0.0,
                0.0
            ]
        );
        // F(2×2): 60 slots in strips (as the forward's), one chunk of at least 256
        // tiles a thread: two chunks of 30, 32 columns each.
        let w2 = filter_features(&s, JitConvFilter::Winograd2).unwrap();
        assert_eq!(
            w2,
            vec![
                64.0 * 16.0 * 8.0 * 16.0,
                0.0,
                60.0 * 16.0 * 4.0 * 24.0,
                4.0 * 16.0 * 8.0 * 16.0,
                0.0
            ]
        );
        // One image: split inside, no per-thread sums for im2col.
        let one = ConvShape {
            batch: 1,
            ..s.clone()
        };
        let f = filter_features(&one, JitConvFilter::Im2col).unwrap();
        assert_eq!((f[2], f[3]), (f[0], 0.0));
        let f = filter_features(&one, JitConvFilter::Direct).unwrap();
        assert_eq!((f[3], f[4]), (f[0], 1.0));
        // 5-wide kernels have no sliding windows; strided convs no Winograd.
        let five = ConvShape::plain(2, 8, 16, &[10, 10], &[5, 5], Padding::Same);
        assert!(filter_features(&five, JitConvFilter::Direct).is_none());
        let mut strided = s.clone();
        strided.stride = vec![2, 2];
        assert!(filter_features(&strided, JitConvFilter::Winograd4).is_none());
        assert!(filter_features(&strided, JitConvFilter::Direct).is_none());
        // Data gradients: col2im counts the same GEMM; the forward-conv routines count
        // the forward of 16 → 8 channels and the 1152 weights flipped (F(4×4): and
        // 1152 filters' 6·3·9 transform operations).
        let d = data_features(&s, JitConvData::Col2im).unwrap();
        assert_eq!(d, vec![macs, 2.0 * 72.0 * 100.0, 0.0, 0.0, macs]);
        let f = data_shape(&s).unwrap();
        let mut want = forward_features(&f, ConvAlgo::Winograd4).unwrap();
        want.push(1152.0 + 128.0 * 6.0 * 3.0 * 9.0);
        assert_eq!(data_features(&s, JitConvData::Winograd4).unwrap(), want);
        let mut want = forward_features(&f, ConvAlgo::Direct).unwrap();
        want.push(1152.0);
        assert_eq!(data_features(&s, JitConvData::Direct).unwrap(), want);
        let d = data_features(&strided, JitConvData::Col2im).unwrap();
        assert_eq!((d[1], d[3]), (0.0, 2.0 * 72.0 * 25.0));
        // Asymmetric padding: generated kernels, no routine.
        let causal = ConvShape::plain(1, 4, 4, &[50], &[3], Padding::Causal);
        assert!(JitConvFilter::ALL
            .iter()
            .all(|&a| filter_features(&causal, a).is_none()));
        assert!(JitConvData::ALL
            .iter()
            .all(|&a| data_features(&causal, a).is_none()));
    }
}
