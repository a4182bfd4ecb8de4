//! The register tiles of the sliding-window direct conv (`conv_direct`), one per ISA.
//! A tile sums over segments of taps: one for a stride-1 conv, one per input phase
//! for a strided one.
//!
//! A tile computes `cb` output channels at `nv` vectors of consecutive positions of
//! the padded, flattened input plane: `out[o][j] = Σ_c Σ_t w[c][t][o] · x[c·ps +
//! offs[t] + j]`. On that plane every tap of a stride-1 conv is a shift, so one
//! unaligned vector load serves all `cb` channels of a tap, and each weight is one
//! broadcast used by `nv` FMAs. AVX-512 holds 24 accumulators of 16 lanes (8 channels ×
//! 3 vectors, 6 × 4 or 4 × 6; 24 of its 32 registers), AVX2 12 of 8 lanes (4 × 3 or
//! 3 × 4; 12 of 16): both leave room for the loaded inputs and the broadcast, so
//! nothing spills.

use super::isa::{Isa, IsaKind};

/// The tile shape of an ISA: lanes per vector, output channels, and at most how many
/// vectors of positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileShape {
    pub lanes: usize,
    pub cb: usize,
    pub max_nv: usize,
}

/// The shapes each ISA has kernels for, `(cb, max_nv)`, preferred first. Every shape
/// holds the same number of accumulators, so a narrower channel block takes more
/// positions: a conv with 6 output channels (LeNet's first) runs 6 × 4, not 8 × 3 with
/// a quarter of its multiplies on padding channels.
pub const AVX512_SHAPES: [(usize, usize); 3] = [(8, 3), (6, 4), (4, 6)];
const NARROW_SHAPES: [(usize, usize); 2] = [(4, 3), (3, 4)];

/// Of `shapes`, the one that pads the fewest of `channels` output channels up to a
/// whole number of blocks, the earlier on a tie (the cost model counts multiply-adds
/// with it too).
pub fn pick_shape(shapes: &[(usize, usize)], channels: usize) -> (usize, usize) {
    let padded = |cb: usize| channels.max(1).div_ceil(cb) * cb;
    let best = shapes.iter().map(|&(cb, _)| padded(cb)).min();
    *shapes
        .iter()
        .find(|&&(cb, _)| Some(padded(cb)) == best)
        .unwrap_or(&shapes[0])
}

impl TileShape {
    /// The shape for `channels` output channels per group ([`pick_shape`]).
    pub fn for_channels(isa: Isa, channels: usize) -> TileShape {
        let (lanes, shapes) = Self::of(isa);
        let (cb, max_nv) = pick_shape(shapes, channels);
        TileShape { lanes, cb, max_nv }
    }

    /// An ISA's lanes and shapes.
    fn of(isa: Isa) -> (usize, &'static [(usize, usize)]) {
        match isa.kind() {
            IsaKind::Avx512 => (16, &AVX512_SHAPES),
            IsaKind::Avx2 | IsaKind::Portable => (8, &NARROW_SHAPES),
        }
    }

    /// Whether `isa` has a kernel of this shape.
    fn is_of(&self, isa: Isa) -> bool {
        let (lanes, shapes) = Self::of(isa);
        lanes == self.lanes && shapes.contains(&(self.cb, self.max_nv))
    }
}

/// One run of taps of a tile: channels `0..cin` of `x` from `x0` on, planes `ps`
/// apart, read at every offset of `offs`; weights `[cin][offs.len()][cb]` from `w0` of
/// `w`. A stride-1 conv is one segment; a strided one has a segment per input phase
/// (`conv_direct`), each with the taps that fall on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileSegment {
    pub x0: usize,
    pub offs: Vec<usize>,
    pub w0: usize,
}

/// Reads of one tile: `x` from `cin` planes `ps` apart per segment, `nv` vectors at
/// each offset; `w` packed per segment; `out` is `[cb][nv·lanes]`, the sum over every
/// segment.
///
/// `masks` (AVX-512 only, where it is required) holds, per tap of the segments in
/// order (`mask_stride` apart), `nv` lane masks: the lanes of each vector the tap
/// reads, the others read as zero. Planes without columns of padding (`conv_direct`'s
/// AVX-512 layout) put the positions a tap would read in the padding on the
/// neighbouring row's data, and the mask drops them.
///
/// `at` and `base` shift every read: `x[i]` is read at index `i + at − base`. A tile
/// whose `x` starts at its first position has both 0; a conv that reads its unpadded
/// input in place passes the whole plane, its first position as `at`, and reads rows
/// above the first and below the last (`base`: AVX-512 only, through
/// [`tile_in_place`]) only under lanes its masks drop.
pub struct TileArgs<'a> {
    pub x: &'a [f32],
    pub ps: usize,
    pub cin: usize,
    pub segments: &'a [TileSegment],
    pub w: &'a [f32],
    pub nv: usize,
    pub masks: &'a [u16],
    pub mask_stride: usize,
    pub at: usize,
    pub base: usize,
}

/// Picks the monomorphised kernel `$f::<CB, NV>` for a runtime `(cb, nv)` among an
/// ISA's shapes.
macro_rules! dispatch {
    ($f:ident, $cb:expr, $nv:expr, $args:tt, [$(($c:literal, [$($n:literal),*])),*]) => {
        match ($cb, $nv) {
            $($(($c, $n) => $f::<$c, $n> $args,)*)*
            (cb, nv) => unreachable!("no {cb}×{nv} tile"),
        }
    };
}

/// Computes one tile of `shape` into `out`. Panics if a read would leave `x` or `w`
/// (the driver sizes the padded plane so that it never does), or if `base` is not 0.
pub fn tile(isa: Isa, shape: TileShape, a: &TileArgs, out: &mut [f32]) {
    assert_eq!(a.base, 0, "reads before `x` go through tile_in_place");
    let span = a.nv * shape.lanes;
    for seg in a.segments {
        let max_off = seg.offs.iter().copied().max().unwrap_or(0);
        let last = seg.x0 + a.at + (a.cin.max(1) - 1) * a.ps + max_off + span;
        assert!(a.cin == 0 || last <= a.x.len());
    }
    // SAFETY: every read is inside `x` (asserted).
    unsafe { tile_in_place(isa, shape, a, out) }
}

/// [`tile`] where reads may fall outside `x` under lanes the masks drop (with a
/// `base`, on AVX-512): the input of a conv read in place, unpadded.
///
/// # Safety
/// Every lane that a mask keeps (every lane, off AVX-512) reads inside `x`: channel
/// `c` of a segment at offset `off` reads `x[x0 + c·ps + off + at + j − base]` for the
/// vector's positions `j`.
pub unsafe fn tile_in_place(isa: Isa, shape: TileShape, a: &TileArgs, out: &mut [f32]) {
    let span = a.nv * shape.lanes;
    assert!(shape.is_of(isa), "{shape:?} is not a shape of {isa:?}");
    assert!(
        a.nv >= 1 && a.nv <= shape.max_nv,
        "1 to {} vectors",
        shape.max_nv
    );
    for seg in a.segments {
        assert!(a.w.len() >= seg.w0 + a.cin * seg.offs.len() * shape.cb);
    }
    assert!(out.len() >= shape.cb * span);
    let taps: usize = a.segments.iter().map(|s| s.offs.len()).sum();
    let masked = isa.kind() == IsaKind::Avx512;
    assert!(
        if masked {
            taps == 0 || a.masks.len() >= (taps - 1) * a.mask_stride + a.nv
        } else {
            a.masks.is_empty()
        },
        "lane masks on AVX-512 only, nv per tap"
    );
    assert!(
        masked || (a.base, a.at) == (0, 0),
        "a shift needs lane masks"
    );
    let (x, w, o, m) = (a.x.as_ptr(), a.w.as_ptr(), out.as_mut_ptr(), a.masks);
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` proves the CPU has AVX-512F; the asserts bound the weights and
        // the output, the caller every kept lane of `x`.
        IsaKind::Avx512 => unsafe {
            dispatch!(
                avx512,
                shape.cb,
                a.nv,
                (
                    x,
                    (a.at, a.base),
                    a.ps,
                    a.cin,
                    a.segments,
                    w,
                    (m, a.mask_stride),
                    o
                ),
                [(8, [1, 2, 3]), (6, [1, 2, 3, 4]), (4, [1, 2, 3, 4, 5, 6])]
            )
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` proves AVX2 and FMA; the asserts bound every access.
        IsaKind::Avx2 => unsafe {
            dispatch!(
                avx2,
                shape.cb,
                a.nv,
                (x, a.ps, a.cin, a.segments, w, o),
                [(4, [1, 2, 3]), (3, [1, 2, 3, 4])]
            )
        },
        _ => dispatch!(
            portable,
            shape.cb,
            a.nv,
            (a, out),
            [(4, [1, 2, 3]), (3, [1, 2, 3, 4])]
        ),
    }
}

/// The taps of a segment run outside its channels, so each tap's lane masks are
/// loaded once for all of them. Input addresses are formed by wrapping arithmetic:
/// those of lanes the masks drop may lie outside `x`, and are never read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512<const CB: usize, const NV: usize>(
    x: *const f32,
    (at, base): (usize, usize),
    ps: usize,
    cin: usize,
    segments: &[TileSegment],
    w: *const f32,
    (masks, mask_stride): (&[u16], usize),
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NV]; CB];
    let mut tap = 0;
    for seg in segments {
        let taps = seg.offs.len();
        for (t, &off) in seg.offs.iter().enumerate() {
            let k: [__mmask16; NV] = std::array::from_fn(|v| masks[tap * mask_stride + v]);
            tap += 1;
            let mut xt = x.wrapping_add(seg.x0 + off + at).wrapping_sub(base);
            let mut wt = w.add(seg.w0 + t * CB);
            for _ in 0..cin {
                let xv: [__m512; NV] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(k[v], xt.wrapping_add(16 * v)));
                for (o, row) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*wt.add(o));
                    for (a, xv) in row.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(b, *xv, *a);
                    }
                }
                xt = xt.wrapping_add(ps);
                wt = wt.add(taps * CB);
            }
        }
    }
    for (o, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add(o * NV * 16 + v * 16), *a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const CB: usize, const NV: usize>(
    x: *const f32,
    ps: usize,
    cin: usize,
    segments: &[TileSegment],
    w: *const f32,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); NV]; CB];
    for seg in segments {
        let taps = seg.offs.len();
        for c in 0..cin {
            let xc = x.add(seg.x0 + c * ps);
            let wc = w.add(seg.w0 + c * taps * CB);
            for (t, &off) in seg.offs.iter().enumerate() {
                let xt = xc.add(off);
                let xv: [__m256; NV] = std::array::from_fn(|v| _mm256_loadu_ps(xt.add(8 * v)));
                let wt = wc.add(t * CB);
                for (o, row) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*wt.add(o));
                    for (a, xv) in row.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(b, *xv, *a);
                    }
                }
            }
        }
    }
    for (o, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            _mm256_storeu_ps(out.add(o * NV * 8 + v * 8), *a);
        }
    }
}

/// Plain arrays the compiler vectorises for the build target (a separate multiply and
/// add: `mul_add` without FMA hardware is a libm call).
fn portable<const CB: usize, const NV: usize>(a: &TileArgs, out: &mut [f32]) {
    const L: usize = 8;
    let mut acc = [[[0f32; L]; NV]; CB];
    for seg in a.segments {
        let taps = seg.offs.len();
        for c in 0..a.cin {
            let xc = &a.x[seg.x0 + c * a.ps..];
            let wc = &a.w[seg.w0 + c * taps * CB..][..taps * CB];
            for (&off, wt) in seg.offs.iter().zip(wc.chunks_exact(CB)) {
                let xt = &xc[off..off + NV * L];
                for (row, &b) in acc.iter_mut().zip(wt) {
                    for (vec, xs) in row.iter_mut().zip(xt.chunks_exact(L)) {
                        for (s, &x) in vec.iter_mut().zip(xs) {
                            *s += b * x;
                        }
                    }
                }
            }
        }
    }
    for (dst, row) in out.chunks_exact_mut(NV * L).zip(&acc) {
        for (d, vec) in dst.chunks_exact_mut(L).zip(row) {
            d.copy_from_slice(vec);
        }
    }
}
