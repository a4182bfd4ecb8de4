//! The filter gradient of a stride-1 conv by sliding windows, with no column matrix:
//! `dW[o][c][ky][kx] = Σ_n Σ_q dY[n][o][q] · x̃[n][c][q + ky·dh·wp + kx]`, where `x̃`
//! is the image zero-padded and flattened with the padded row length `wp`, and `q`
//! runs over the positions `y·wp + x` of the output rows (as in `conv_direct`; the
//! positions `x ≥ wo` carry a zero gradient, so they add nothing).
//!
//! Per image, the output gradient is transposed to position-major blocks of
//! `lanes·cv` channels (`dyt[q][o]`), and every tile (`filter_tile`) sums one block of
//! channels against a few kernel rows over all positions. Unlike the im2col route
//! (`conv_backward::conv2d_backward_filter`), nothing nine times the input's size is
//! written, and the GEMM's packing of that matrix disappears with it: on ResNet-20's
//! 16-channel stage the im2col route ran at half the machine's FMA rate.
//!
//! Covers 3-wide kernels at stride 1 and width dilation 1 (any height, height
//! dilation, padding and groups); the im2col route covers the rest. Images are spread
//! over rayon, each thread summing into a private `dW`; with fewer images than threads
//! the tiles of each image are.

use rayon::prelude::*;

use super::conv_backward::sum_images;
use super::conv_direct::pad_planes;
use super::conv_params::{Conv2d, ConvError, Epilogue};
use super::filter_tile::{filter_tile, FilterShape, FilterTileArgs, KW};
use super::isa::Isa;

/// Whether the sliding-window filter gradient covers `p`.
pub fn filter_direct_applies(p: &Conv2d) -> Result<(), ConvError> {
    if p.stride != (1, 1) || p.kw != KW || p.dilation.1 != 1 {
        return Err(ConvError::NotDirect(format!(
            "the filter gradient by sliding windows takes 3-wide kernels at stride 1 and \
             width dilation 1, not a {}×{} kernel at stride {:?}, dilation {:?}",
            p.kh, p.kw, p.stride, p.dilation
        )));
    }
    Ok(())
}

/// The padded planes, the transposed gradient and the tiling of one conv.
struct Layout {
    shape: FilterShape,
    ho: usize,
    wo: usize,
    wp: usize,
    /// Floats per padded plane: the padded image and the last tap's overhang.
    ps: usize,
    /// Positions summed per image (`ho · wp`).
    q: usize,
    cig: usize,
    cog: usize,
    co_blocks: usize,
    /// Kernel rows `(c, ky)` of a group, as offsets on the padded planes.
    row_offs: Vec<usize>,
}

impl Layout {
    fn new(isa: Isa, p: &Conv2d, (ho, wo): (usize, usize)) -> Layout {
        let (cig, cog) = (p.ci / p.groups, p.co / p.groups);
        let shape = FilterShape::for_channels(isa, cog);
        let (hp, wp) = (p.h + 2 * p.pad.0, p.w + 2 * p.pad.1);
        let ps = hp * wp + KW - 1;
        let row_offs = (0..cig)
            .flat_map(|c| (0..p.kh).map(move |ky| c * ps + ky * p.dilation.0 * wp))
            .collect();
        Layout {
            shape,
            ho,
            wo,
            wp,
            ps,
            q: ho * wp,
            cig,
            cog,
            co_blocks: cog.div_ceil(shape.channels()),
            row_offs,
        }
    }

    fn row_blocks(&self) -> usize {
        self.row_offs.len().div_ceil(self.shape.rows)
    }

    fn tiles(&self, groups: usize) -> usize {
        groups * self.co_blocks * self.row_blocks()
    }

    /// Floats of one image's transposed gradient: `[g][co block][q][channels]`.
    fn dyt_len(&self, groups: usize) -> usize {
        groups * self.co_blocks * self.q * self.shape.channels()
    }
}

/// One thread's buffers: the padded image and the transposed gradient (its padding
/// channels and positions stay zero). Its sums of every tile over its images, tile by
/// tile (`[tile][rows·3][channels]`), are kept beside it.
struct Scratch {
    padded: Vec<f32>,
    dyt: Vec<f32>,
}

impl Scratch {
    fn new(p: &Conv2d, l: &Layout) -> Scratch {
        Scratch {
            padded: vec![0.0; p.ci * l.ps],
            dyt: vec![0.0; l.dyt_len(p.groups)],
        }
    }
}

/// Writes image `dy`'s gradient (`[co, ho, wo]`) position-major into `dyt`.
fn transpose_gradient(p: &Conv2d, l: &Layout, dy: &[f32], dyt: &mut [f32]) {
    let ch = l.shape.channels();
    let plane = l.ho * l.wo;
    for (co, src) in dy.chunks_exact(plane).enumerate() {
        let (g, o) = (co / l.cog, co % l.cog);
        let block = (g * l.co_blocks + o / ch) * l.q * ch;
        let lane = o % ch;
        for (y, row) in src.chunks_exact(l.wo).enumerate() {
            let dst = &mut dyt[block + y * l.wp * ch + lane..];
            for (x, &v) in row.iter().enumerate() {
                dst[x * ch] = v;
            }
        }
    }
    debug_assert_eq!(dy.len(), p.co * plane);
}

/// Adds tile `t` of one image (its padded planes and transposed gradient) to `sums`.
fn run_tile(isa: Isa, l: &Layout, padded: &[f32], dyt: &[f32], sums: &mut [f32], t: usize) {
    let ch = l.shape.channels();
    let rb = t % l.row_blocks();
    let gb = t / l.row_blocks();
    let g = gb / l.co_blocks;
    let rows = &l.row_offs[rb * l.shape.rows..((rb + 1) * l.shape.rows).min(l.row_offs.len())];
    let args = FilterTileArgs {
        x: &padded[g * l.cig * l.ps..(g + 1) * l.cig * l.ps],
        offs: rows,
        dyt: &dyt[gb * l.q * ch..(gb + 1) * l.q * ch],
        len: l.q,
    };
    filter_tile(isa, l.shape, &args, sums);
}

/// Writes the tile-major `sums` into `dw` (`[co][ci/g][kh][kw]`).
fn scatter_tiles(p: &Conv2d, l: &Layout, sums: &[f32], dw: &mut [f32]) {
    let ch = l.shape.channels();
    for (t, tile) in sums.chunks_exact(l.shape.out_len()).enumerate() {
        let rb = t % l.row_blocks();
        let gb = t / l.row_blocks();
        let (g, cob) = (gb / l.co_blocks, gb % l.co_blocks);
        let channels = (l.cog - cob * ch).min(ch);
        let first_row = rb * l.shape.rows;
        let rows = l.shape.rows.min(l.row_offs.len() - first_row);
        for (r, row) in tile.chunks_exact(KW * ch).take(rows).enumerate() {
            let (c, ky) = ((first_row + r) / p.kh, (first_row + r) % p.kh);
            for (kx, taps) in row.chunks_exact(ch).enumerate() {
                for (o, &v) in taps[..channels].iter().enumerate() {
                    let co = g * l.cog + cob * ch + o;
                    dw[((co * l.cig + c) * p.kh + ky) * KW + kx] = v;
                }
            }
        }
    }
}

/// `dw = ∂L/∂W` from the input `x` and the output gradient `dy` of the stride-1 conv
/// `p` (3-wide kernel), by sliding windows.
pub fn conv2d_backward_filter_direct(
    isa: Isa,
    p: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), ConvError> {
    let (ho, wo) = p.check(x.len(), dw.len(), dy.len(), &Epilogue::default())?;
    filter_direct_applies(p)?;
    dw.fill(0.0);
    if p.n == 0 || p.co == 0 || ho * wo == 0 {
        return Ok(());
    }
    let l = Layout::new(isa, p, (ho, wo));
    let (in_img, out_img) = (p.ci * p.h * p.w, p.co * ho * wo);
    let image = |s: &mut Scratch, x: &[f32], dy: &[f32]| {
        pad_planes(isa, p, (l.wp, l.ps), x, &mut s.padded);
        transpose_gradient(p, &l, dy, &mut s.dyt);
    };
    let threads = rayon::current_num_threads();
    let tile_len = l.shape.out_len();
    let sums_len = l.tiles(p.groups) * tile_len;
    let sums = if p.n >= threads && threads > 1 {
        sum_images(
            (x, in_img),
            (dy, out_img),
            || (Scratch::new(p, &l), vec![0.0; sums_len]),
            |s, sums, x, dy| {
                image(s, x, dy);
                for (t, sums) in sums.chunks_exact_mut(tile_len).enumerate() {
                    run_tile(isa, &l, &s.padded, &s.dyt, sums, t);
                }
            },
        )
    } else {
        let mut s = Scratch::new(p, &l);
        let mut sums = vec![0.0; sums_len];
        for (x, dy) in x.chunks(in_img).zip(dy.chunks(out_img)) {
            image(&mut s, x, dy);
            let (padded, dyt) = (&s.padded, &s.dyt);
            sums.par_chunks_mut(tile_len)
                .enumerate()
                .for_each(|(t, sums)| run_tile(isa, &l, padded, dyt, sums, t));
        }
        Some(sums)
    };
    if let Some(sums) = sums {
        scatter_tiles(p, &l, &sums, dw);
    }
    Ok(())
}
