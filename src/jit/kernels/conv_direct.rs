//! conv2d by sliding windows: the direct algorithm on register tiles, for convs of
//! any kernel size, stride, padding, dilation and group count (a strided conv runs on
//! the input's phases, see `Layout`; below, the stride-1 case).
//!
//! Each image is copied once into a buffer whose planes are flattened with a row
//! length `wp`, with rows of zeros above and below. Output `(y, x)` is computed at
//! position `q = y·wp + x` of that plane, and its tap `(ky, kx)` reads position `q +
//! ky·dh·wp + kx·dw − pad`: every tap is a constant shift, so a run of consecutive
//! positions is one vector load per tap, shared by a block of output channels
//! (`direct_tile`). On AVX-512 the rows hold no columns of padding (`wp` is the
//! output's width, or the input's if wider): a tap's lanes that would read the
//! padding read the neighbouring row instead, and a lane mask zeroes them, so every
//! position computed is an output. Where those rows are the input's own (a stride-1
//! conv whose output is no wider than its input: ResNet's and LeNet's), the conv reads
//! the input where it lies, its rows above and below masked off too: no copy at all.
//! Elsewhere (no lane masks) the columns of padding are stored, `wp = w + 2·pad`, and
//! the positions `x ≥ wo` of each row are computed and dropped (2 of 34 on a 32-wide
//! 3×3 conv, 2 of 10 on an 8-wide one). No column
//! matrix and no transform: the multiplies are the direct conv's, at the tile's FMA
//! rate, which is why it beats im2col and Winograd on few channels and small batches.
//!
//! Work is split over rayon: with at least as many images as threads, by image (one
//! padded buffer per thread); otherwise each thread takes an even run of the vectors
//! of positions of one image and pads the input rows they read into a buffer of its
//! own, kept between runs (see `conv2d_direct_packed`); under 2¹⁸ multiply-adds, on
//! the calling thread. The epilogue is applied as each tile is stored, so the output
//! is written once.

use std::ops::Range;
use std::sync::Mutex;

use rayon::prelude::*;

use super::conv_params::{Conv2d, ConvError, Epilogue};
use super::direct_tile::{tile, tile_in_place, TileArgs, TileSegment, TileShape};
use super::isa::{Isa, IsaKind};

/// Floats of the largest tile (AVX-512: 24 vectors of 16 lanes).
const MAX_TILE: usize = 8 * 3 * 16;

/// Products below this many multiply-adds run on the calling thread.
pub const SERIAL_MACS: usize = 1 << 18;

/// The padded planes and the tiling of one conv.
///
/// At stride `(sy, sx)` the padded input is split into `sy·sx` phase planes, phase
/// `(py, px)` holding the padded positions `(py + sy·i, px + sx·j)` at `(i, j)` of a
/// grid `wp` wide. Output `(y, x)` is position `y·wp + x`, and its tap `(ky, kx)`
/// reads phase `(ky·dh mod sy, kx·dw mod sx)` at the shift `⌊ky·dh/sy⌋·wp +
/// ⌊kx·dw/sx⌋`: a strided conv is a stride-1 one over the phases, each with the taps
/// that fall on it (one tile segment per phase), so no multiply is spent on a tap that
/// is not there. At stride 1 there is one phase, the padded image itself.
struct Layout {
    shape: TileShape,
    stride: (usize, usize),
    ho: usize,
    wo: usize,
    /// Row length of every phase plane's grid.
    wp: usize,
    /// Per column phase: where its first input column lands in each of its rows.
    first_col: Vec<usize>,
    /// Floats per phase plane: every position any tile reads.
    ps: usize,
    /// Floats per channel: its phase planes one after another.
    cs: usize,
    /// Positions computed per plane (`ho · wp`).
    q: usize,
    /// Taps per phase with their offsets, in packing order (`x0`: the phase's plane,
    /// `phase · ps` floats into each channel).
    segments: Vec<TileSegment>,
    /// Each segment's taps as indices `ky·kw + kx` of the weight, for packing.
    seg_taps: Vec<Vec<usize>>,
    /// Per group: input and output channels, and blocks of `cb` output channels.
    cig: usize,
    cog: usize,
    co_blocks: usize,
    /// Vectors of positions per plane.
    vectors: usize,
    /// Per tap (segments' order) and vector of positions, the lanes the tap reads
    /// (`TileArgs::masks`); empty off AVX-512.
    masks: Vec<u16>,
    /// The input is read where it lies, unpadded (`TileArgs::base`): a stride-1 conv
    /// on AVX-512 whose rows are the input's.
    in_place: bool,
    /// How far before a plane's first element the lowest tap reads.
    base: usize,
}

impl Layout {
    /// On AVX-512 the planes have no columns of padding: a row is `max(wo, input
    /// columns of a phase)` long (16 for a 16-wide same-padded 3×3 conv, not 18), and
    /// a tap's reads that would fall in the padding are masked off (`TileArgs::masks`).
    /// Every position computed is then an output where the output is at least as wide
    /// as the input: ResNet-20's 8-wide maps spent 20 % of their multiplies on the two
    /// columns of padding, its 16-wide ones 11 %. Elsewhere (AVX2 and portable: no
    /// lane masks) the padding is stored and read.
    fn new(isa: Isa, p: &Conv2d, (ho, wo): (usize, usize)) -> Layout {
        let shape = TileShape::for_channels(isa, p.co / p.groups.max(1));
        let masked = isa.kind() == IsaKind::Avx512;
        let (sy, sx) = p.stride;
        let hq = (p.h + 2 * p.pad.0).div_ceil(sy);
        // The first input column of column phase px: (ix + pad) ≡ px (mod sx).
        let ix0 = |px: usize| (px + sx - p.pad.1 % sx) % sx;
        let wq = if masked {
            masked_row(p.w, p.pad.1, sx, wo)
        } else {
            (p.w + 2 * p.pad.1).div_ceil(sx)
        };
        // Tap (ky, kx) reads its phase's row `⌊ky·dh/sy⌋` below the output's, and
        // input column `x·sx + kx·dw − pad`, which lies `shift` columns right of x.
        let shift = |kx: usize| {
            let c = kx * p.dilation.1;
            if masked {
                (c as isize - p.pad.1 as isize - ix0(c % sx) as isize) / sx as isize
            } else {
                (c / sx) as isize
            }
        };
        // In place, the input has no rows of padding above it either.
        let in_place = masked && (sy, sx) == (1, 1) && wq == p.w;
        let top = if in_place { (p.pad.0 * wq) as isize } else { 0 };
        let raw = |ky: usize, kx: usize| ((ky * p.dilation.0 / sy) * wq) as isize + shift(kx) - top;
        let taps = (0..p.kh).flat_map(|ky| (0..p.kw).map(move |kx| (ky, kx)));
        // Leading zeros so that a read left of the first position stays in the buffer
        // (in place: how far before the plane the reads start, all masked off).
        let guard = taps
            .clone()
            .map(|(ky, kx)| -raw(ky, kx))
            .max()
            .unwrap_or(0)
            .max(0);
        let first_col = (0..sx)
            .map(|px| {
                if masked {
                    guard as usize
                } else {
                    (ix0(px) + p.pad.1) / sx
                }
            })
            .collect();
        let q = ho * wq;
        let vectors = q.div_ceil(shape.lanes);
        let mut phases: Vec<(usize, Vec<usize>, Vec<usize>)> = Vec::new();
        for (ky, kx) in taps {
            let (r, c) = (ky * p.dilation.0, kx * p.dilation.1);
            let phase = (r % sy) * sx + c % sx;
            let off = (raw(ky, kx) + guard) as usize;
            match phases.iter_mut().find(|(ph, _, _)| *ph == phase) {
                Some((_, offs, taps)) => {
                    offs.push(off);
                    taps.push(ky * p.kw + kx);
                }
                None => phases.push((phase, vec![off], vec![ky * p.kw + kx])),
            }
        }
        let max_off = phases
            .iter()
            .flat_map(|(_, offs, _)| offs.iter().copied())
            .max()
            .unwrap_or(0);
        let ps = if in_place {
            p.h * p.w
        } else {
            (vectors * shape.lanes + max_off).max(guard as usize + hq * wq)
        };
        let cig = p.ci / p.groups;
        let cog = p.co / p.groups;
        let mut segments = Vec::with_capacity(phases.len());
        let mut seg_taps = Vec::with_capacity(phases.len());
        let mut w0 = 0;
        for (phase, offs, taps) in phases {
            segments.push(TileSegment {
                x0: phase * ps,
                offs,
                w0,
            });
            w0 += cig * taps.len() * shape.cb;
            seg_taps.push(taps);
        }
        // A lane is read where its tap falls inside the input: columns (the planes
        // hold none of padding) and, in place, rows.
        let masks = if !masked {
            Vec::new()
        } else {
            let lanes = |first: usize, tap: usize| {
                let (ky, kx) = (tap / p.kw, tap % p.kw);
                (0..shape.lanes).fold(0u16, |m, l| {
                    let (y, x) = ((first + l) / wq, (first + l) % wq);
                    let iy = (y * sy + ky * p.dilation.0) as isize - p.pad.0 as isize;
                    let ix = (x * sx + kx * p.dilation.1) as isize - p.pad.1 as isize;
                    let inside = (0..p.w as isize).contains(&ix)
                        && (!in_place || (0..p.h as isize).contains(&iy));
                    m | (u16::from(inside) << l)
                })
            };
            let taps = seg_taps.iter().flatten().copied();
            taps.flat_map(|tap| (0..vectors).map(move |v| lanes(v * shape.lanes, tap)))
                .collect()
        };
        Layout {
            shape,
            stride: (sy, sx),
            ho,
            wo,
            wp: wq,
            first_col,
            ps,
            cs: sy * sx * ps,
            q,
            segments,
            seg_taps,
            cig,
            cog,
            co_blocks: cog.div_ceil(shape.cb),
            vectors,
            masks,
            in_place,
            base: if in_place { guard as usize } else { 0 },
        }
    }

    /// Runs `tile(block, v0, nv)` on every tile of the vectors `vectors`: each block
    /// of output channels (all groups'), at most `max_nv` vectors a tile.
    fn for_tiles(
        &self,
        groups: usize,
        vectors: Range<usize>,
        mut tile: impl FnMut(usize, usize, usize),
    ) {
        for block in 0..groups * self.co_blocks {
            for v0 in vectors.clone().step_by(self.shape.max_nv) {
                tile(block, v0, (vectors.end - v0).min(self.shape.max_nv));
            }
        }
    }

    /// Floats of one image's phase planes.
    fn buffer_len(&self, ci: usize) -> usize {
        ci * self.cs
    }

    /// The input rows that the outputs among the vectors `vectors` read (tiles read
    /// other rows too, at positions that are not outputs or lanes masked off).
    fn rows_read(&self, p: &Conv2d, vectors: Range<usize>) -> Range<usize> {
        let lanes = self.shape.lanes;
        let (lo, hi) = (vectors.start * lanes, (vectors.end * lanes).min(self.q));
        if lo >= hi {
            return 0..0;
        }
        let (first, last) = (lo / self.wp, (hi - 1) / self.wp);
        let clamp = |r: usize| r.saturating_sub(p.pad.0).min(p.h);
        let reach = (p.kh - 1) * p.dilation.0;
        clamp(first * self.stride.0)..clamp(last * self.stride.0 + reach + 1)
    }

    /// Input row `src`, padded row `r`, into the two column phases of a stride-2 conv
    /// (`buf`: one channel's planes): pairs of columns split in one pass (which
    /// vectorises; a `step_by` loop per phase took as long as the conv's multiplies).
    fn fill_row_stride2(&self, p: &Conv2d, r: usize, src: &[f32], buf: &mut [f32]) {
        let sy = self.stride.0;
        // The plane of column phase px, in the row phase of padded row r.
        let plane = |px: usize| ((r % sy) * 2 + px) * self.ps;
        let row = (r / sy) * self.wp;
        // Input column ix is in phase (ix + pad) mod 2. Column e is the first in phase
        // 0, column 1 − e the first in phase 1; the next of a phase are one place on.
        let e = p.pad.1 % 2;
        let (lo, hi) = buf.split_at_mut(plane(1));
        let even = &mut lo[plane(0) + row + self.first_col[0]..];
        let mut odd = &mut hi[row + self.first_col[1]..];
        if e == 1 {
            odd[0] = src[0];
            odd = &mut odd[1..];
        }
        let pairs = src[e..].chunks_exact(2);
        if let [last] = pairs.remainder() {
            even[pairs.len()] = *last;
        }
        for ((d0, d1), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
            *d0 = pair[0];
            *d1 = pair[1];
        }
    }

    /// Copies channels of an image (`x`: `[c, h, w]`) into their zero-padded phase
    /// planes (`buf`: those channels' `c · cs` floats). Every image lands on the same
    /// positions, so `buf` must be zero wherever this writes nothing: zeroed when
    /// allocated and written by this layout's `fill` alone since. Zeroing it per image
    /// doubled the writes on the one thread that pads at batch 1.
    ///
    /// Only input rows `rows` are copied: the rows a range of tiles reads
    /// ([`Self::rows_read`]).
    fn fill(&self, isa: Isa, p: &Conv2d, x: &[f32], buf: &mut [f32], rows: Range<usize>) {
        if self.stride == (1, 1) {
            let dims = (self.wp, self.ps, self.first_col[0]);
            return copy_into_padding(isa, p, dims, x, buf, rows);
        }
        let (sy, sx) = self.stride;
        for (plane, buf) in x.chunks_exact(p.h * p.w).zip(buf.chunks_exact_mut(self.cs)) {
            let plane = &plane[rows.start * p.w..rows.end * p.w];
            for (iy, src) in (rows.start..).zip(plane.chunks_exact(p.w)) {
                let r = iy + p.pad.0;
                if sx == 2 {
                    self.fill_row_stride2(p, r, src, buf);
                    continue;
                }
                for px in 0..sx {
                    // Padded columns ≡ px (mod sx): the input columns from the first
                    // such one on, sx apart, to consecutive places of the phase row.
                    let first = (px + sx - p.pad.1 % sx) % sx;
                    if first >= p.w {
                        continue;
                    }
                    let base = ((r % sy) * sx + px) * self.ps + (r / sy) * self.wp;
                    let dst = &mut buf[base + self.first_col[px]..];
                    for (d, &v) in dst.iter_mut().zip(src[first..].iter().step_by(sx)) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// The row length of the AVX-512 layout's phase planes (no columns of padding) for an
/// input `w` wide, padded by `pad` each side, at column stride `sx`, with `wo` output
/// columns: the most input columns a column phase holds, or the outputs if more.
pub fn masked_row(w: usize, pad: usize, sx: usize, wo: usize) -> usize {
    let sx = sx.max(1);
    let widest = (0..sx).map(|px| w.saturating_sub((px + sx - pad % sx) % sx).div_ceil(sx));
    widest.max().unwrap_or(0).max(wo).max(1)
}

/// A weight packed for the tiles: `[g][co block][ci/g][tap][cb]`, zero past each
/// group's last channel. Built once for a constant weight (an evaluation plan's bound
/// weight), or in every run for one computed at run time.
pub struct DirectFilter {
    isa: Isa,
    conv: Conv2d,
    layout: Layout,
    packed: Vec<f32>,
    /// Padded images, one per thread of the pool (by index): kept between images and
    /// runs, so their padding stays zero and only the interior is copied in, into
    /// lines the thread's own cache holds. A run that finds its thread's taken
    /// allocates its own.
    padded: Vec<Mutex<Vec<f32>>>,
}

impl std::fmt::Debug for DirectFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFilter")
            .field("isa", &self.isa)
            .field("conv", &self.conv)
            .finish_non_exhaustive()
    }
}

impl DirectFilter {
    /// Runs `f` on this thread's kept padded image, `len` floats (zeros at first).
    fn with_padded(&self, len: usize, f: impl FnOnce(&mut [f32])) {
        let kept = &self.padded[rayon::current_thread_index().unwrap_or(0) % self.padded.len()];
        let mut buf = kept
            .try_lock()
            .map(|mut kept| std::mem::take(&mut *kept))
            .unwrap_or_default();
        if buf.len() != len {
            buf = vec![0.0; len];
        }
        f(&mut buf);
        if let Ok(mut kept) = kept.try_lock() {
            *kept = buf;
        }
    }

    /// Packs `weight` (`[co, ci/g, kh, kw]`) for the conv `p` on `isa`.
    pub fn new(isa: Isa, p: &Conv2d, weight: &[f32]) -> Result<DirectFilter, ConvError> {
        let g = p.groups;
        if g == 0 || !p.ci.is_multiple_of(g) || !p.co.is_multiple_of(g) {
            return Err(ConvError::Geometry(format!(
                "{g} groups must divide both {} input and {} output channels",
                p.ci, p.co
            )));
        }
        // Every geometry `out_hw` accepts (strides of at least 1) is covered.
        let hw = p.out_hw()?;
        let l = Layout::new(isa, p, hw);
        let block = l.cig * p.kh * p.kw * l.shape.cb;
        let mut filter = DirectFilter {
            isa,
            conv: *p,
            packed: vec![0.0; p.groups * l.co_blocks * block],
            layout: l,
            padded: (0..rayon::current_num_threads().max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        };
        filter.pack(weight)?;
        Ok(filter)
    }

    /// The filter of `weight` in `slot`: repacked where `slot` holds one of the same
    /// ISA and conv, else built there. A training step's weight changes every run,
    /// and a fresh filter costs its layout, its zeroed packing and its padded images
    /// again: a data gradient of 8 channels on 32×32 maps at batch 2 took 74 µs
    /// where the forward, packed once, took 13.
    pub fn in_slot<'a>(
        slot: &'a mut Option<DirectFilter>,
        isa: Isa,
        p: &Conv2d,
        weight: &[f32],
    ) -> Result<&'a DirectFilter, ConvError> {
        match slot {
            Some(f) if f.isa == isa && f.conv == *p => f.pack(weight)?,
            _ => *slot = Some(DirectFilter::new(isa, p, weight)?),
        }
        Ok(slot.as_ref().expect("filled above"))
    }

    /// Packs `weight` into this filter's blocks (the entries past each group's last
    /// channel stay zero).
    fn pack(&mut self, weight: &[f32]) -> Result<(), ConvError> {
        let (p, l) = (&self.conv, &self.layout);
        let taps = p.kh * p.kw;
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
        // Per segment `[ci/g][its taps][cb]`, the segments one after another.
        for g in 0..p.groups {
            for o in 0..l.cog {
                let src = &weight[(g * l.cog + o) * l.cig * taps..][..l.cig * taps];
                let dst = &mut self.packed[(g * l.co_blocks + o / cb) * block..][..block];
                for (seg, seg_taps) in l.segments.iter().zip(&l.seg_taps) {
                    for c in 0..l.cig {
                        for (t, &tap) in seg_taps.iter().enumerate() {
                            let at = seg.w0 + (c * seg_taps.len() + t) * cb + o % cb;
                            dst[at] = src[c * taps + tap];
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Copies image `x` (`[ci, h, w]`) into `buf` (`[ci][ps]`), zero-padded, each plane
/// flattened with row length `wp`.
pub(super) fn pad_planes(
    isa: Isa,
    p: &Conv2d,
    (wp, ps): (usize, usize),
    x: &[f32],
    buf: &mut [f32],
) {
    buf.fill(0.0);
    copy_into_padding(isa, p, (wp, ps, p.pad.1), x, buf, 0..p.h);
}

/// [`pad_planes`] on a buffer whose padding is zero already, with column 0 of each
/// row at `col0` (`dims`: row length, plane length, `col0`), input rows `rows` only.
fn copy_into_padding(
    isa: Isa,
    p: &Conv2d,
    dims: (usize, usize, usize),
    x: &[f32],
    buf: &mut [f32],
    rows: Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa.kind() == super::isa::IsaKind::Avx512 {
        // SAFETY: the Isa proves AVX-512F.
        return unsafe { copy_into_padding_avx512(p, dims, x, buf, rows) };
    }
    let _ = isa;
    copy_rows(p, dims, x, buf, rows, |dst, src| dst.copy_from_slice(src));
}

/// The rows of `x`'s planes to their places in `buf`, each by `copy`.
#[inline(always)]
fn copy_rows(
    p: &Conv2d,
    (wp, ps, col0): (usize, usize, usize),
    x: &[f32],
    buf: &mut [f32],
    rows: Range<usize>,
    copy: impl Fn(&mut [f32], &[f32]),
) {
    for (plane, dst) in x.chunks_exact(p.h * p.w).zip(buf.chunks_exact_mut(ps)) {
        let plane = &plane[rows.start * p.w..rows.end * p.w];
        for (row, src) in (rows.start..).zip(plane.chunks_exact(p.w)) {
            let at = (row + p.pad.0) * wp + col0;
            copy(&mut dst[at..at + p.w], src);
        }
    }
}

/// [`copy_rows`] by 16-lane loads and stores, the last masked: rows are a few dozen
/// floats, and `copy_from_slice` (or a copy loop, which compiles to the same) calls
/// `memcpy` per row. ResNet-20's direct convs at batch 1: 0.342 → 0.334 ms.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_into_padding_avx512(
    p: &Conv2d,
    dims: (usize, usize, usize),
    x: &[f32],
    buf: &mut [f32],
    rows: Range<usize>,
) {
    use std::arch::x86_64::*;
    copy_rows(p, dims, x, buf, rows, |dst, src| {
        let n = dst.len().min(src.len());
        let mut i = 0;
        while i < n {
            let left = n - i;
            let mask: __mmask16 = if left >= 16 { !0 } else { (1 << left) - 1 };
            // SAFETY: lanes i..i + popcount(mask) are in bounds of both slices, and
            // masked-off lanes are neither read nor written.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i));
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), mask, v);
            }
            i += 16;
        }
    });
}

/// The output, written by disjoint tiles from several threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32, usize);
// SAFETY: tiles write disjoint elements (see `run_tile`), and the slice outlives the
// parallel section that uses the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// [`run_tile`] compiled for AVX-512, so its epilogue stores are whole zmm vectors
/// (compiled for baseline x86-64 they went 4 lanes at a time with a scalar tail:
/// LeNet's forward at batch 64 0.499 → 0.487 ms, three interleaved pairs of `fnetc
/// bench`; an AVX-512 store function called per row, not inlined into the tile, made
/// it slower).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_tile_avx512(
    isa: Isa,
    p: &Conv2d,
    l: &Layout,
    input: &[f32],
    packed: &[f32],
    epi: &Epilogue,
    out: OutPtr,
    acc: &mut [f32; MAX_TILE],
    n: usize,
    (block, v0, nv): (usize, usize, usize),
) {
    run_tile(isa, p, l, input, packed, epi, out, acc, n, (block, v0, nv))
}

/// One tile of image `n`: channel block `block` (of all groups'), `nv` vectors of
/// positions from vector `v0`. Accumulate, then store the positions that are outputs
/// with the epilogue. `acc` is the caller's, so that it is not zeroed per tile (3 %
/// of ResNet-20's forward at batch 1 went to that `memset`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run_tile(
    isa: Isa,
    p: &Conv2d,
    l: &Layout,
    input: &[f32],
    packed: &[f32],
    epi: &Epilogue,
    out: OutPtr,
    acc: &mut [f32; MAX_TILE],
    n: usize,
    (block, v0, nv): (usize, usize, usize),
) {
    let s = l.shape;
    let (g, cob) = (block / l.co_blocks, block % l.co_blocks);
    let q0 = v0 * s.lanes;
    let block = l.cig * p.kh * p.kw * s.cb;
    // In place the tile reads rows above its first position: `x` is the group's
    // whole planes, the tile's place `at` in them.
    let (from, at) = if l.in_place { (0, q0) } else { (q0, 0) };
    let args = TileArgs {
        x: &input[g * l.cig * l.cs + from..],
        ps: l.cs,
        cin: l.cig,
        segments: &l.segments,
        w: &packed[(g * l.co_blocks + cob) * block..][..block],
        nv,
        masks: l.masks.get(v0..).unwrap_or(&[]),
        mask_stride: l.vectors,
        at,
        base: l.base,
    };
    if l.in_place {
        // SAFETY: the masks keep a lane only where its tap falls inside the image
        // (`Layout::new`), whose planes `x` holds from the group's first.
        unsafe { tile_in_place(isa, s, &args, acc) };
    } else {
        tile(isa, s, &args, acc);
    }
    let co0 = g * l.cog + cob * s.cb;
    let channels = (l.cog - cob * s.cb).min(s.cb);
    let positions = (l.q - q0).min(nv * s.lanes);
    let ld = nv * s.lanes;
    // Positions `q .. q + len` of the tile, output offset `offset` in each channel's
    // plane, with the epilogue.
    let store = |q: usize, offset: usize, len: usize| {
        for o in 0..channels {
            let at = (n * p.co + co0 + o) * l.ho * l.wo + offset;
            assert!(at + len <= out.1);
            // SAFETY: in bounds (asserted); tiles cover disjoint (channel, position)
            // pairs, so no other thread writes these elements.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), len) };
            epi.store_channel(dst, &acc[o * ld + q - q0..][..len], co0 + o, at);
        }
    };
    if l.wp == l.wo {
        // The rows are the outputs' (AVX-512): positions are output offsets, and the
        // tile is one run.
        return store(q0, q0, positions);
    }
    // One run per output row: the row of the first position is found by one division
    // per tile, then stepped.
    let end = q0 + positions;
    let (mut q, mut y, mut x) = (q0, q0 / l.wp, q0 % l.wp);
    while q < end {
        let row_end = (q + l.wp - x).min(end);
        if x < l.wo {
            store(q, y * l.wo + x, (l.wo - x).min(row_end - q));
        }
        (q, y, x) = (row_end, y + 1, 0);
    }
}

/// `out = epilogue(conv2d(input, weight))` with `p`'s geometry.
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
    p.check(input.len(), p.co * l.cig * p.kh * p.kw, out.len(), epi)?;
    if p.n == 0 || out.is_empty() {
        return Ok(());
    }
    let in_img = p.ci * p.h * p.w;
    let buf_len = l.buffer_len(p.ci);
    let out = OutPtr(out.as_mut_ptr(), out.len());
    let threads = rayon::current_num_threads();
    let serial = threads == 1 || p.macs() < SERIAL_MACS;
    let tile_at = |input: &[f32], acc: &mut [f32; MAX_TILE], n, tile| {
        #[cfg(target_arch = "x86_64")]
        if isa.kind() == super::isa::IsaKind::Avx512 {
            // SAFETY: the Isa proves AVX-512F.
            return unsafe { run_tile_avx512(isa, p, l, input, packed, epi, out, acc, n, tile) };
        }
        run_tile(isa, p, l, input, packed, epi, out, acc, n, tile);
    };
    // The tiles of image `n` among `vectors`, reading `input` (the image in place, or
    // its padded planes).
    let tiles = |input: &[f32], n: usize, vectors: Range<usize>| {
        let mut acc = [0f32; MAX_TILE];
        l.for_tiles(p.groups, vectors, |b, v0, nv| {
            tile_at(input, &mut acc, n, (b, v0, nv))
        });
    };
    let image = |n: usize, x: &[f32], vectors: Range<usize>| {
        if l.in_place {
            return tiles(x, n, vectors);
        }
        filter.with_padded(buf_len, |buf| {
            l.fill(isa, p, x, buf, l.rows_read(p, vectors.clone()));
            tiles(buf, n, vectors)
        })
    };
    if !serial && p.n >= threads {
        let chunks = input.par_chunks(in_img).enumerate();
        chunks.for_each(|(n, x)| image(n, x, 0..l.vectors));
    } else if serial {
        for (n, x) in input.chunks(in_img).enumerate() {
            image(n, x, 0..l.vectors);
        }
    } else {
        // Fewer images than threads: each thread takes an even run of the vectors of
        // positions (in every channel block) and pads, into a buffer of its own, only
        // the input rows they read. One shared padded image, written by one thread and
        // read by all, cost a transfer of each of its lines between caches in every
        // run (a 32-channel 16×16 conv at batch 1 on 2 threads 32.5 → 28.0 µs, one
        // thread: 50 µs); each thread padding the whole image and claiming tiles as
        // they came left ResNet-20's 16-channel 32×32 convs at 29.5 µs on two threads
        // against 46 on one.
        let parts = threads.min(l.vectors);
        for (n, x) in input.chunks(in_img).enumerate() {
            (0..parts)
                .into_par_iter()
                .for_each(|i| image(n, x, i * l.vectors / parts..(i + 1) * l.vectors / parts));
        }
    }
    Ok(())
}
