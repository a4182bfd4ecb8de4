//! The OpenCL backend's work counts, from the geometry its lowering plans
//! (`kernel_ir::plan`): the register-tiled direct kernel, the scalar grouped kernel,
//! and the FFT convolution's pack / Stockham stages / spectral multiply-accumulate /
//! crop. The device kind matters twice: CPUs and GPUs get different register tiles
//! (`Target::cpu_wide` on the AVX-512 machine the CPU table is fitted on,
//! `Target::gpu`), and launch overheads differ by orders of magnitude, which is why
//! each kind has its own fitted table.
//!
//! | algorithm | f₁ | f₂ | f₃ | f₄ |
//! |---|---|---|---|---|
//! | direct | multiply-adds as the kernel runs them (output rows rounded up to whole vector tiles, channels to the register tile; grouped: exact) | floats moved (padded input, output, weights) | launches (the zero-padding copy, the conv) | multiply-adds of one work-item |
//! | fft | transform flops, `2.5·N·log₂N` per complex N-point transform of a sample pair | spectral complex multiply-adds | launches (pack, one per Stockham stage and axis, both ways, multiply-accumulate, crop) | |
//!
//! f₄ is the direct kernel's latency where its grid is too small to fill the device:
//! a GPU running one sample's long 1D conv has a few hundred work-items, each looping
//! over every input channel and tap, and takes time in proportion to that loop, not
//! to the total work (fitted on the H100 without it, the table picked direct for
//! 785-tap convs at batch 1 that the FFT runs 5× faster).
//!
//! There is no im2col kernel on OpenCL (such convs run direct), so the table has no
//! im2col entry. Kernel spectra are computed when the plan is made, so they cost
//! nothing per forward and are not counted.

use super::ConvShape;
use crate::ir::op::ConvAlgo;
use crate::kernel_ir::conv::ConvSpec;
use crate::kernel_ir::fft::radices;
use crate::kernel_ir::fft_conv::FftConv;
use crate::kernel_ir::plan::Target;

/// `shape` as the OpenCL lowering sees it (1D convs are 2D with a height of 1).
fn spec(shape: &ConvShape) -> Option<ConvSpec> {
    let lift = |v: &[u64], one: u64| -> Option<[usize; 2]> {
        match v {
            [w] => Some([one as usize, *w as usize]),
            [h, w] => Some([*h as usize, *w as usize]),
            _ => None,
        }
    };
    let pads = shape.pads();
    let pad = match pads.as_slice() {
        [w] => [(0, 0), (w.0 as usize, w.1 as usize)],
        [h, w] => [(h.0 as usize, h.1 as usize), (w.0 as usize, w.1 as usize)],
        _ => return None,
    };
    let [h, w] = lift(&shape.input, 1)?;
    Some(ConvSpec {
        n: shape.batch as usize,
        ci: shape.ci as usize,
        h,
        w,
        co: shape.co as usize,
        k: lift(&shape.kernel, 1)?,
        stride: lift(&shape.stride, 1)?,
        dilation: lift(&shape.dilation, 1)?,
        pad,
        residual: false,
        relu: false,
    })
}

/// The work counts of `algo` on an OpenCL device (a GPU when `gpu`), `None` where the
/// backend cannot run it.
pub fn features(shape: &ConvShape, algo: ConvAlgo, gpu: bool) -> Option<Vec<f64>> {
    shape.output()?;
    let s = spec(shape)?;
    // The CPU table is fitted on an AVX-512 machine, whose tile is 16 × 8.
    let target = if gpu {
        Target::gpu()
    } else {
        Target::cpu_wide()
    };
    let [oh, ow] = s.out();
    let taps = (s.k[0] * s.k[1]) as f64;
    let groups = shape.groups.max(1) as usize;
    match algo {
        ConvAlgo::Direct if groups > 1 => {
            let cig = (s.ci / groups) as f64;
            let macs = (s.n * s.co * oh * ow) as f64 * cig * taps;
            let floats =
                (s.n * (s.ci * s.h * s.w + s.co * oh * ow)) as f64 + s.co as f64 * cig * taps;
            Some(vec![macs, floats, 1.0, cig * taps])
        }
        ConvAlgo::Direct => {
            let tile = target.conv_tile(ow);
            let v = tile.vector as usize;
            let cot = s.co.div_ceil(tile.tile_co) * tile.tile_co;
            let macs = (s.n * cot * oh * ow.div_ceil(v) * v * s.ci) as f64 * taps;
            let [hp, wp] = s.padded(tile);
            let floats =
                (s.n * (s.ci * hp * wp + s.co * oh * ow)) as f64 + (cot * s.ci) as f64 * taps;
            let launches = 1.0 + f64::from(u8::from(s.needs_pad(tile)));
            let per_item = (v * tile.tile_co * s.ci) as f64 * taps;
            Some(vec![macs, floats, launches, per_item])
        }
        ConvAlgo::Fft if groups == 1 => {
            let g = FftConv::new(&s, target.vector)?;
            let [n1, n2] = g.len;
            let stages = |n: usize| radices(n).map_or(0, |r| r.len());
            let points = (n1 * n2) as f64;
            // Pairs of samples share a complex transform: rows_in input and rows_out
            // output rows, each transformed over the whole plane.
            let rows = (g.rows_in + g.rows_out) as f64;
            let transform_flops = rows * 2.5 * points * points.log2().max(1.0);
            let half = (n1 * (n2 / 2 + 1)) as f64;
            let spectral = half * (g.pairs * g.ci * g.cop) as f64;
            let launches = 3 + 2 * (stages(n1) + stages(n2));
            Some(vec![transform_flops, spectral, launches as f64])
        }
        ConvAlgo::Fft
        | ConvAlgo::Im2col
        | ConvAlgo::Winograd2
        | ConvAlgo::Winograd4
        | ConvAlgo::Auto => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::Padding;

    #[test]
    fn direct_counts_whole_register_tiles() {
        // 30 output positions in tiles of 16 (the AVX-512 CPU tile) run as 32; 5
        // channels as 8.
        let s = ConvShape::plain(1, 2, 5, &[30], &[3], Padding::Causal);
        let f = features(&s, ConvAlgo::Direct, false).unwrap();
        assert_eq!(f[0], (8 * 32 * 2 * 3) as f64);
        // The GPU tile is 4 pixels × 2 channels: 32 positions, 6 channels.
        let f = features(&s, ConvAlgo::Direct, true).unwrap();
        assert_eq!(f[0], (6 * 32 * 2 * 3) as f64);
        // Causal padding needs the zero-padding copy: two launches. A work-item does
        // 4 pixels × 2 channels × 2 input channels × 3 taps.
        assert_eq!(f[2], 2.0);
        assert_eq!(f[3], (4 * 2 * 2 * 3) as f64);
    }

    #[test]
    fn fft_counts_the_planned_transforms() {
        // L = 784, K = 784: 1568 = 8·4·7·7 points, four stages each way.
        let s = ConvShape::plain(2, 30, 30, &[784], &[784], Padding::Causal);
        let f = features(&s, ConvAlgo::Fft, false).unwrap();
        assert_eq!(f[2], (3 + 2 * 4) as f64);
        // One pair of samples; 30 channels padded to 32 on the output side.
        assert_eq!(f[1], (785 * 30 * 32) as f64);
        // Strided convs have no FFT; grouped ones neither.
        let mut strided = ConvShape::plain(1, 4, 4, &[16, 16], &[3, 3], Padding::Same);
        strided.stride = vec![2, 2];
        assert!(features(&strided, ConvAlgo::Fft, true).is_none());
        assert!(features(&s, ConvAlgo::Im2col, false).is_none());
    }
}
