//! The CPU JIT's work counts (`--backend jit`): its generated direct kernel (the
//! kernel IR's register-tiled conv, 16 lanes × 4 output channels), and the native
//! steps it runs on `jit::kernels` (im2col + sgemm, Winograd F(2×2) and F(4×4) for
//! 3×3 and 5×5 kernels, `kernel_ir::native`). The FFT is the kernel IR's, as on OpenCL, so it
//! takes OpenCL's CPU work counts.
//!
//! | algorithm | f₁ | f₂ | f₃ | f₄ | f₅ | f₆ |
//! |---|---|---|---|---|---|---|
//! | direct, symmetric padding (native) | multiply-adds as the sliding-window tiles run them (each group's channels padded to the tile's block of 8, 6 or 4, positions `ho·R`, `R` the row of its AVX-512 planes, which hold no columns of padding (`conv_direct::masked_row`: `wo`, or a phase's input columns if more), to its 48, 64 or 96) | floats moved (the padded input copy, output, weights; the input itself where a stride-1 conv's rows are the input's, which it reads in place) | 0 | 0 | the padded input copy again where one image is split by tiles (none in place) (fewer images than threads, 2¹⁸ multiply-adds or more): every thread pads the input rows of its share of the positions (a share of the rows, and the kernel's reach) before its tiles | |
//! | direct, asymmetric padding (generated) | 0 | 0 | multiply-adds as the tiled kernel runs them (output rows rounded up to 16-lane tiles, channels to 4; 0 when grouped) | floats moved (input, output, weights) | multiply-adds of the scalar grouped kernel (0 with one group) | |
//! | im2col | GEMM multiply-adds | column-matrix elements written at stride 1 (none for a 1×1 unpadded conv, read in place) | output elements (the epilogue pass) | GEMM multiply-adds again at batch 1, where the one image is split inside its GEMM | GEMM multiply-adds again when an image's output has under 128 positions (a narrow GEMM) | column-matrix elements gathered at a stride |
//! | winograd2/4 | GEMM multiply-adds in the Winograd domain (`tiles·α²·ci·co`, each chunk's tiles (`winograd::chunking` on 2 threads) rounded up to a 32-column panel; in the strip layout, tiles are the strips' slots) | transform work of the tiled layout (`tiles·α²·(ci + co)·α`: input and output transforms, gathered lane by lane, each element about α operations; 0 in strips) | f₁ again when the tiles make one chunk (at most 16), which runs on one thread | transform work of the strip layout (whole vectors; 0 in tiles) | | |
//!
//! A direct conv with symmetric padding runs the native sliding-window routine
//! (`jit::kernels::conv_direct`, on the input's phases when strided), any other the
//! generated kernel: separate features, so each gets its own constants. The native
//! steps take symmetric padding only (`kernel_ir::native::choose`), and Winograd 3×3 or
//! 5×5, stride-1, dilation-1, single-group 2-D convs: elsewhere `None`. The
//! Winograd filter transform is left out: with weights bound it is done once, when the
//! plan is loaded.

use super::ConvShape;
use crate::ir::op::ConvAlgo;
use crate::jit::kernels::conv_direct;
use crate::jit::kernels::direct_tile::{pick_shape, AVX512_SHAPES};
use crate::jit::kernels::winograd;
use crate::jit::kernels::winograd_strip::{slots_per_band, strips_pay};

/// The JIT target's register tile (`backend::JitBackend::default_target`).
const LANES: u64 = 16;
const TILE_CO: u64 = 4;
/// Output positions per image under which an im2col GEMM counts as narrow.
pub(super) const NARROW_GEMM: u64 = 128;
/// Threads the table is fitted with (its `machine` line), which Winograd's chunks are
/// spread over.
pub(super) const FIT_THREADS: usize = 2;
/// Lanes of the sliding-window routine's AVX-512 tiles (`direct_tile::AVX512_SHAPES`).
const DIRECT_LANES: u64 = 16;

pub fn features(shape: &ConvShape, algo: ConvAlgo) -> Option<Vec<f64>> {
    let out = shape.output()?;
    let plane: u64 = out.iter().product();
    let taps: u64 = shape.kernel.iter().product();
    let groups = shape.groups.max(1);
    let cig = shape.ci / groups;
    let b = shape.batch as f64;
    let pads = shape.pads();
    let symmetric = pads.iter().all(|(lo, hi)| lo == hi);
    match algo {
        ConvAlgo::Direct => {
            let wo = *out.last()?;
            let rows = plane / wo.max(1);
            let padded: u64 = shape
                .input
                .iter()
                .zip(&pads)
                .map(|(&n, (lo, hi))| n + lo + hi)
                .product();
            let moved =
                b * (shape.ci * padded + shape.co * plane) as f64 + (shape.co * cig * taps) as f64;
            if symmetric {
                // Positions on the padded plane (on its phases when strided): output
                // rows of the padded width over the stride.
                let wq = conv_direct::masked_row(
                    *shape.input.last()? as usize,
                    pads.last()?.0 as usize,
                    *shape.stride.last()? as usize,
                    wo as usize,
                ) as u64;
                let (cog, positions) = direct_tiles(shape.co / groups, rows * wq);
                // A stride-1 conv whose rows are the input's reads it in place: no
                // padded copy.
                let in_place = shape.stride.iter().all(|&s| s == 1) && wq == *shape.input.last()?;
                let input: u64 = shape.input.iter().product();
                let moved = if in_place {
                    b * (shape.ci * input + shape.co * plane) as f64
                        + (shape.co * cig * taps) as f64
                } else {
                    moved
                };
                let macs = b * (groups * cog * positions * cig * taps) as f64;
                // Fewer images than threads, and enough work to split: every thread
                // pads the input rows of its share of the positions (a share of the
                // rows and the kernel's reach beyond them) before its tiles.
                let true_macs = shape.batch * shape.co * plane * cig * taps;
                let split = shape.batch < FIT_THREADS as u64
                    && true_macs >= conv_direct::SERIAL_MACS as u64;
                let waited = if split && !in_place {
                    let row = *shape.input.last()?;
                    let reach = match (shape.kernel.len(), shape.dilation.first()) {
                        (2, Some(&d)) => (shape.kernel[0] - 1) * d,
                        _ => 0,
                    };
                    b * (shape.ci * (padded / FIT_THREADS as u64 + reach * row)) as f64
                } else {
                    0.0
                };
                return Some(vec![macs, moved, 0.0, 0.0, waited]);
            }
            // A grouped conv runs the scalar grouped kernel (`kernel_ir::grouped`),
            // several times slower per multiply-add than the tiled one.
            if groups > 1 {
                return Some(vec![
                    0.0,
                    0.0,
                    0.0,
                    moved,
                    b * (shape.co * plane * cig * taps) as f64,
                ]);
            }
            let co = shape.co.div_ceil(TILE_CO) * TILE_CO;
            Some(vec![
                0.0,
                0.0,
                b * (co * rows * wo.div_ceil(LANES) * LANES * cig * taps) as f64,
                moved,
                0.0,
            ])
        }
        ConvAlgo::Im2col if symmetric => {
            let pointwise = taps == 1
                && shape.stride.iter().all(|&s| s == 1)
                && pads.iter().all(|&(lo, _)| lo == 0);
            let cols = if pointwise {
                0
            } else {
                shape.ci * taps * plane
            };
            let macs = b * (shape.co * plane * cig * taps) as f64;
            // One image is split inside its GEMM, by column blocks and per depth block,
            // at a fraction of the rate of images spread whole over the threads.
            let split = if shape.batch == 1 { macs } else { 0.0 };
            // A GEMM of fewer than 128 columns (an 8×8 output plane: ResNet-20's last
            // stage and its second downsampling conv) runs at a fraction of the rate.
            let narrow = if plane < NARROW_GEMM { macs } else { 0.0 };
            // A strided unfolding gathers element by element; a stride-1 one copies
            // runs of a row.
            let cols = b * cols as f64;
            let strided = shape.stride.iter().any(|&s| s > 1);
            let (runs, gathered) = if strided { (0.0, cols) } else { (cols, 0.0) };
            Some(vec![
                macs,
                runs,
                b * (shape.co * plane) as f64,
                split,
                narrow,
                gathered,
            ])
        }
        ConvAlgo::Winograd2 | ConvAlgo::Winograd4 if symmetric && winograd_applies(shape) => {
            let m = if algo == ConvAlgo::Winograd2 { 2 } else { 4 };
            let WinogradTiles {
                alpha,
                tiles,
                strips,
            } = winograd_tiles(shape, m)?;
            let alpha2 = alpha * alpha;
            // GEMMs run on whole panels of a chunk's tiles: fewer tiles than that (a
            // small map at batch 1) still cost a panel; a conv of one chunk (at most 16
            // tiles) runs on one thread.
            let plan = winograd::chunking(
                tiles as usize,
                alpha2 as usize,
                shape.ci as usize,
                shape.co as usize,
                FIT_THREADS,
            );
            let panel = winograd::PANEL;
            let columns = (plan.chunks * plan.per.next_multiple_of(panel)) as u64;
            let macs = (columns * alpha2 * shape.ci * shape.co) as f64;
            let serial = if plan.chunks < FIT_THREADS { macs } else { 0.0 };
            // Each transformed element costs about α operations (a 1-D transform of α
            // values is O(α) per value, twice): F(4×4, 5×5)'s 8-point transforms cost
            // more per element than the 6-point ones.
            let transformed = (tiles * alpha2 * alpha * (shape.ci + shape.co)) as f64;
            let (strip, tiled) = if strips {
                (transformed, 0.0)
            } else {
                (0.0, transformed)
            };
            Some(vec![macs, tiled, serial, strip])
        }
        ConvAlgo::Fft => super::opencl::features(shape, ConvAlgo::Fft, false),
        _ => None,
    }
}

/// The Winograd tiles of a conv for outputs of `m × m`: `α = m + r − 1`, and the
/// tiles (the strips' slots where the strip layout pays) with whether it does.
pub(super) struct WinogradTiles {
    pub alpha: u64,
    pub tiles: u64,
    pub strips: bool,
}

/// On AVX-512 the strip layout computes `slots` columns per band of `m` output rows
/// where that pays (`winograd_strip::strips_pay`), with cheap whole-vector
/// transforms; elsewhere the tiled layout gathers lane by lane.
pub(super) fn winograd_tiles(shape: &ConvShape, m: u64) -> Option<WinogradTiles> {
    let out = shape.output()?;
    let alpha = m + shape.kernel.first()? - 1;
    let (wi, pad, wo) = (*shape.input.last()?, shape.pads().last()?.0, *out.last()?);
    let row_tiles = wo.div_ceil(m);
    let slots = slots_per_band(
        wi as usize,
        pad as usize,
        wo as usize,
        m as usize,
        alpha as usize,
    ) as u64;
    let strips = strips_pay(slots as usize, row_tiles as usize);
    let bands = shape.batch * out.first()?.div_ceil(m);
    let tiles = bands * if strips { slots } else { row_tiles };
    Some(WinogradTiles {
        alpha,
        tiles,
        strips,
    })
}

/// Output channels and positions per group as the direct tiles run them: channels
/// padded to a whole number of blocks, positions to whole tiles, with the shape the
/// routine picks on AVX-512.
fn direct_tiles(channels: u64, positions: u64) -> (u64, u64) {
    let (cb, nv) = pick_shape(&AVX512_SHAPES, channels as usize);
    let (cb, span) = (cb as u64, nv as u64 * DIRECT_LANES);
    (
        channels.max(1).div_ceil(cb) * cb,
        positions.div_ceil(span) * span,
    )
}

/// 3×3 or 5×5, stride 1, dilation 1, one group, 2-D.
pub(super) fn winograd_applies(shape: &ConvShape) -> bool {
    (shape.kernel == [3, 3] || shape.kernel == [5, 5])
        && shape.stride.iter().all(|&s| s == 1)
        && shape.dilation.iter().all(|&d| d == 1)
        && shape.groups == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::Padding;

    #[test]
    fn work_counts_by_hand() {
        // 2 × 8 → 16, 10×10, 3×3 same: output 10×10.
        let s = ConvShape::plain(2, 8, 16, &[10, 10], &[3, 3], Padding::Same);
        let im2col = features(&s, ConvAlgo::Im2col).unwrap();
        // 100 positions per image: a narrow GEMM.
        let macs = 2.0 * 16.0 * 100.0 * 72.0;
        assert_eq!(
            im2col,
            vec![macs, 2.0 * 72.0 * 100.0, 3200.0, 0.0, macs, 0.0]
        );
        let broad = ConvShape::plain(2, 8, 16, &[16, 16], &[3, 3], Padding::Same);
        assert_eq!(features(&broad, ConvAlgo::Im2col).unwrap()[4], 0.0);
        let one = ConvShape::plain(1, 8, 16, &[10, 10], &[3, 3], Padding::Same);
        let split = features(&one, ConvAlgo::Im2col).unwrap();
        assert_eq!(
            (split[0], split[3]),
            (16.0 * 100.0 * 72.0, 16.0 * 100.0 * 72.0)
        );
        // F2 in strips: bands of 2 rows, 5 per image; a 10-wide row padded by 1 needs
        // 11 columns, 12 in whole tiles: 6 slots for 5 tiles, so strips pay. 2·5·6 = 60
        // slots, one chunk's worth, so two chunks of 30 (one per thread), each a GEMM
        // panel of 32 (64 columns).
        // F4: 3 bands per image; the third tile's window spans padded columns 8–13, and
        // its last may spill into the next segment's left padding, so a segment needs
        // 13 columns, 16 in whole tiles: 4 slots for 3 tiles, 24 slots, two chunks of
        // 12, a panel each. Neither runs on one thread, so f₃ is 0. Transform work is
        // α per element.
        let w2 = features(&s, ConvAlgo::Winograd2).unwrap();
        let macs = 64.0 * 16.0 * 128.0;
        assert_eq!(w2, vec![macs, 0.0, 0.0, 60.0 * 16.0 * 24.0 * 4.0]);
        let w4 = features(&s, ConvAlgo::Winograd4).unwrap();
        let macs = 64.0 * 36.0 * 128.0;
        assert_eq!(w4, vec![macs, 0.0, 0.0, 24.0 * 36.0 * 24.0 * 6.0]);
        // A 2×2 map, F4: one tile in a row of 2 slots, the tiled layout; one chunk, on
        // one thread.
        let small = ConvShape::plain(1, 8, 16, &[2, 2], &[3, 3], Padding::Same);
        let w4 = features(&small, ConvAlgo::Winograd4).unwrap();
        assert_eq!(w4[1..], [36.0 * 24.0 * 6.0, 32.0 * 36.0 * 128.0, 0.0]);
        // 5×5, F(4×4, 5×5): α = 8. The third tile's window spans padded columns 8–15
        // (pad 2), so a segment needs 14 columns, 16 in whole tiles: 4 slots for 3
        // tiles, strips; 2·3·4 = 24 slots, two chunks of 12, a panel each.
        let five = ConvShape::plain(2, 8, 16, &[10, 10], &[5, 5], Padding::Same);
        let w4 = features(&five, ConvAlgo::Winograd4).unwrap();
        let macs = 64.0 * 64.0 * 128.0;
        assert_eq!(w4, vec![macs, 0.0, 0.0, 24.0 * 64.0 * 24.0 * 8.0]);
        let seven = ConvShape::plain(2, 8, 16, &[10, 10], &[7, 7], Padding::Same);
        assert!(features(&seven, ConvAlgo::Winograd4).is_none());
        // ResNet-20's last stage at batch 64: 1536 F4 slots in chunks of 32.
        let wide = ConvShape::plain(64, 64, 64, &[8, 8], &[3, 3], Padding::Same);
        assert_eq!(features(&wide, ConvAlgo::Winograd4).unwrap()[2], 0.0);
        // Direct at stride 1, the sliding windows on rows without padding columns: 10
        // rows of 10 are 100 positions, 144 in tiles of 48; 16 channels are whole
        // tiles of 8. Read in place: only the input itself is moved.
        let d = features(&s, ConvAlgo::Direct).unwrap();
        assert_eq!(d[0], 2.0 * (16 * 144 * 8 * 9) as f64);
        assert_eq!((d[2], d[4]), (0.0, 0.0));
        assert_eq!(d[1], 2.0 * (8.0 * 100.0 + 16.0 * 100.0) + 16.0 * 8.0 * 9.0);
        // One image of 2.4M multiply-adds is split by tiles, but read in place: no
        // padded copy to wait for. The strided 16 → 32 one (1.2M) pads its phases:
        // each thread half of the 16 × 34 × 34 padded image and the kernel's reach of
        // 2 rows of 32. At 115k multiply-adds it runs on one thread.
        let big = ConvShape::plain(1, 16, 16, &[32, 32], &[3, 3], Padding::Same);
        assert_eq!(features(&big, ConvAlgo::Direct).unwrap()[4], 0.0);
        let mut down = ConvShape::plain(1, 16, 32, &[32, 32], &[3, 3], Padding::Same);
        down.stride = vec![2, 2];
        assert_eq!(
            features(&down, ConvAlgo::Direct).unwrap()[4],
            16.0 * (34.0 * 34.0 / 2.0 + 2.0 * 32.0)
        );
        assert_eq!(features(&one, ConvAlgo::Direct).unwrap()[4], 0.0);
        // 6 channels take the 6 × 64 tile: 100 positions are 128.
        let six = ConvShape::plain(2, 8, 6, &[10, 10], &[3, 3], Padding::Same);
        let d = features(&six, ConvAlgo::Direct).unwrap();
        assert_eq!(d[0], 2.0 * (6 * 128 * 8 * 9) as f64);
        let mut strided = s.clone();
        strided.stride = vec![2, 2];
        // Strided, the sliding windows on the phases: 5 rows of the phase width 5 (5
        // input columns a phase, no padding columns) are 25 positions, one tile of 48.
        let d = features(&strided, ConvAlgo::Direct).unwrap();
        assert_eq!((d[0], d[2]), (2.0 * (16 * 48 * 8 * 9) as f64, 0.0));
        // Asymmetric padding, the generated kernel: rows of 5 rounded to 16 lanes.
        let mut asymmetric = strided.clone();
        asymmetric.padding = Padding::Explicit(vec![(0, 1), (0, 1)]);
        let d = features(&asymmetric, ConvAlgo::Direct).unwrap();
        assert_eq!((d[0], d[2]), (0.0, 2.0 * (16 * 5 * 16 * 8 * 9) as f64));
        assert!(features(&strided, ConvAlgo::Winograd2).is_none());
        // Strided, im2col gathers its 72 × 25 column elements per image.
        let im2col = features(&strided, ConvAlgo::Im2col).unwrap();
        assert_eq!((im2col[1], im2col[5]), (0.0, 2.0 * 72.0 * 25.0));
        let causal = ConvShape::plain(1, 4, 4, &[50], &[3], Padding::Causal);
        assert!(features(&causal, ConvAlgo::Im2col).is_none());
        assert!(features(&causal, ConvAlgo::Direct).is_some());
    }
}
