//! conv2d by sliding windows: the direct algorithm on register tiles, for stride-1
//! convs of any kernel size, padding, dilation and group count.
//!
//! Each image is copied once into a zero-padded buffer whose planes are flattened with
//! the padded row length `wp`. Output `(y, x)` is computed at position `q = y·wp + x`
//! of that plane, and its tap `(ky, kx)` reads position `q + ky·dh·wp + kx·dw`: every
//! tap is a constant shift, so a run of consecutive positions is one vector load per
//! tap, shared by a block of output channels (`direct_tile`). The positions `x ≥ wo`
//! of each row are computed and dropped (2 of 34 on a 32-wide 3×3 conv). No column
//! matrix and no transform: the multiplies are the direct conv's, at the tile's FMA
//! rate, which is why it beats im2col and Winograd on few channels and small batches.
//!
//! Work is split over rayon as im2col does: with at least as many images as threads,
//! by image (one padded buffer per thread); otherwise by tiles of one image; under
//! 2¹⁸ multiply-adds, on the calling thread. The epilogue is applied as each tile is
//! stored, so the output is written once.

use rayon::prelude::*;

use super::conv_params::{Conv2d, ConvError, Epilogue};
use super::direct_tile::{tile, TileArgs, TileShape};
use super::isa::Isa;

/// Floats of the largest tile (AVX-512: 24 vectors of 16 lanes).
const MAX_TILE: usize = 8 * 3 * 16;

/// Products below this many multiply-adds run on the calling thread.
const SERIAL_MACS: usize = 1 << 18;

/// Whether the sliding-window conv covers `p`: stride 1 on both axes.
pub fn direct_applies(p: &Conv2d) -> Result<(), ConvError> {
    if p.stride != (1, 1) {
        return Err(ConvError::NotDirect(format!(
            "the stride is {:?}",
            p.stride
        )));
    }
    Ok(())
}

/// The padded plane and the tiling of one conv.
struct Layout {
    shape: TileShape,
    ho: usize,
    wo: usize,
    wp: usize,
    /// Floats per padded plane: every position any tile reads.
    ps: usize,
    /// Positions computed per plane (`ho · wp`).
    q: usize,
    /// Tap offsets on the padded plane, `ky·dh·wp + kx·dw`.
    offs: Vec<usize>,
    /// Per group: input and output channels, and blocks of `cb` output channels.
    cig: usize,
    cog: usize,
    co_blocks: usize,
    /// Blocks of up to `max_nv` vectors of positions.
    pos_blocks: usize,
}

impl Layout {
    fn new(isa: Isa, p: &Conv2d, (ho, wo): (usize, usize)) -> Layout {
        let shape = TileShape::for_channels(isa, p.co / p.groups.max(1));
        let (hp, wp) = (p.h + 2 * p.pad.0, p.w + 2 * p.pad.1);
        let q = ho * wp;
        let vectors = q.div_ceil(shape.lanes);
        let mut offs = Vec::with_capacity(p.kh * p.kw);
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                offs.push(ky * p.dilation.0 * wp + kx * p.dilation.1);
            }
        }
        let max_off = offs.iter().copied().max().unwrap_or(0);
        let cog = p.co / p.groups;
        Layout {
            shape,
            ho,
            wo,

            wp,
            ps: (vectors * shape.lanes + max_off).max(hp * wp),
            q,
            offs,
            cig: p.ci / p.groups,
            cog,
            co_blocks: cog.div_ceil(shape.cb),
            pos_blocks: vectors.div_ceil(shape.max_nv),
        }
    }

    fn tiles(&self, groups: usize) -> usize {
        groups * self.co_blocks * self.pos_blocks
    }
}

/// A weight packed for the tiles: `[g][co block][ci/g][tap][cb]`, zero past each
/// group's last channel. Built once for a constant weight (an evaluation plan's bound
/// weight), or in every run for one computed at run time.
pub struct DirectFilter {
    isa: Isa,
    conv: Conv2d,
    layout: Layout,
    packed: Vec<f32>,
}

impl DirectFilter {
    /// Packs `weight` (`[co, ci/g, kh, kw]`) for the conv `p` on `isa`.
    pub fn new(isa: Isa, p: &Conv2d, weight: &[f32]) -> Result<DirectFilter, ConvError> {
        let g = p.groups;
        if g == 0 || !p.ci.is_multiple_of(g) || !p.co.is_multiple_of(g) {
            return Err(ConvError::Geometry(format!(
                "{g} groups must divide both {} input and {} output channels",
                p.ci, p.co
            )));
        }
        let hw = p.out_hw()?;
        direct_applies(p)?;
        let l = Layout::new(isa, p, hw);
        let taps = l.offs.len();
        let expected = p.co * l.cig * taps;
        if weight.len() != expected {
            return Err(ConvError::Buffer {
                what: "weight",
                expected,
                got: weight.len(),
            });
        }
        let cb = l.shape.cb;
        let block = l.cig * taps * cb;
        let mut packed = vec![0.0; p.groups * l.co_blocks * block];
        for g in 0..p.groups {
            for o in 0..l.cog {
                let src = &weight[(g * l.cog + o) * l.cig * taps..][..l.cig * taps];
                let dst = &mut packed[(g * l.co_blocks + o / cb) * block..][..block];
                for (i, &v) in src.iter().enumerate() {
                    dst[i * cb + o % cb] = v;
                }
            }
        }
        Ok(DirectFilter {
            isa,
            conv: *p,
            layout: l,
            packed,
        })
    }
}

/// Copies image `x` (`[ci, h, w]`) into `buf` (`[ci][ps]`), zero-padded, each plane
/// flattened with row length `wp`.
pub(super) fn pad_planes(p: &Conv2d, (wp, ps): (usize, usize), x: &[f32], buf: &mut [f32]) {
    buf.fill(0.0);
    for (plane, dst) in x.chunks_exact(p.h * p.w).zip(buf.chunks_exact_mut(ps)) {
        for (row, src) in plane.chunks_exact(p.w).enumerate() {
            let at = (row + p.pad.0) * wp + p.pad.1;
            dst[at..at + p.w].copy_from_slice(src);
        }
    }
}

/// The output, written by disjoint tiles from several threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32, usize);
// SAFETY: tiles write disjoint elements (see `store`), and the slice outlives the
// parallel section that uses the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// One tile of image `n`: accumulate, then store the positions that are outputs with
/// the epilogue.
#[allow(clippy::too_many_arguments)]
fn run_tile(
    isa: Isa,
    p: &Conv2d,
    l: &Layout,
    padded: &[f32],
    packed: &[f32],
    epi: &Epilogue,
    out: OutPtr,
    n: usize,
    t: usize,
) {
    let s = l.shape;
    let pb = t % l.pos_blocks;
    let cob = (t / l.pos_blocks) % l.co_blocks;
    let g = t / (l.pos_blocks * l.co_blocks);
    let first_vector = pb * s.max_nv;
    let nv = (l.q.div_ceil(s.lanes) - first_vector).min(s.max_nv);
    let q0 = first_vector * s.lanes;
    let block = l.cig * l.offs.len() * s.cb;
    let mut acc = [0f32; MAX_TILE];
    let args = TileArgs {
        x: &padded[g * l.cig * l.ps + q0..],
        ps: l.ps,
        cin: l.cig,
        offs: &l.offs,
        w: &packed[(g * l.co_blocks + cob) * block..][..block],
        nv,
    };
    tile(isa, s, &args, &mut acc);
    let co0 = g * l.cog + cob * s.cb;
    let channels = (l.cog - cob * s.cb).min(s.cb);
    let positions = (l.q - q0).min(nv * s.lanes);
    let ld = nv * s.lanes;
    // Each run of positions inside one output row, for every channel: the row of the
    // first position is found by one division per tile, then stepped.
    let end = q0 + positions;
    let (mut q, mut y, mut x) = (q0, q0 / l.wp, q0 % l.wp);
    while q < end {
        let row_end = (q + l.wp - x).min(end);
        if x < l.wo {
            let len = (l.wo - x).min(row_end - q);
            for o in 0..channels {
                let at = (n * p.co + co0 + o) * l.ho * l.wo + y * l.wo + x;
                assert!(at + len <= out.1);
                // SAFETY: in bounds (asserted); tiles cover disjoint (channel,
                // position) pairs, so no other thread writes these elements.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), len) };
                let sums = &acc[o * ld + q - q0..][..len];
                epi.store_channel(dst, sums, co0 + o, at);
            }
        }
        (q, y, x) = (row_end, y + 1, 0);
    }
}

/// `out = epilogue(conv2d(input, weight))` with `p`'s geometry (stride 1).
pub fn conv2d_direct(
    isa: Isa,
    p: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue,
    out: &mut [f32],
) -> Result<(), ConvError> {
    let filter = DirectFilter::new(isa, p, weight)?;
    conv2d_direct_packed(&filter, p, input, epi, out)
}

/// [`conv2d_direct`] with the weight packed beforehand (for the same conv and ISA).
pub fn conv2d_direct_packed(
    filter: &DirectFilter,
    p: &Conv2d,
    input: &[f32],
    epi: &Epilogue,
    out: &mut [f32],
) -> Result<(), ConvError> {
    if filter.conv != *p {
        return Err(ConvError::Geometry(format!(
            "the filter was packed for {:?}, not {p:?}",
            filter.conv
        )));
    }
    let (isa, l, packed) = (filter.isa, &filter.layout, &filter.packed);
    p.check(input.len(), p.co * l.cig * l.offs.len(), out.len(), epi)?;
    if p.n == 0 || out.is_empty() {
        return Ok(());
    }
    let tiles = l.tiles(p.groups);
    let in_img = p.ci * p.h * p.w;
    let buf_len = p.ci * l.ps;
    let out = OutPtr(out.as_mut_ptr(), out.len());
    let threads = rayon::current_num_threads();
    let serial = threads == 1 || p.macs() < SERIAL_MACS;
    let tile_at = |padded: &[f32], n: usize, t: usize| {
        run_tile(isa, p, l, padded, packed, epi, out, n, t);
    };
    if !serial && p.n >= threads {
        input.par_chunks(in_img).enumerate().for_each_init(
            || vec![0.0; buf_len],
            |buf, (n, x)| {
                pad_planes(p, (l.wp, l.ps), x, buf);
                (0..tiles).for_each(|t| tile_at(buf, n, t));
            },
        );
    } else {
        let mut buf = vec![0.0; buf_len];
        for (n, x) in input.chunks(in_img).enumerate() {
            pad_planes(p, (l.wp, l.ps), x, &mut buf);
            if serial {
                (0..tiles).for_each(|t| tile_at(&buf, n, t));
            } else {
                (0..tiles).into_par_iter().for_each(|t| tile_at(&buf, n, t));
            }
        }
    }
    Ok(())
}
