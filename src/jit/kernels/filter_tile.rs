//! The register tiles of the sliding-window filter gradient (`conv_filter_direct`),
//! one per ISA.
//!
//! A tile sums, over `len` positions `q` of the padded, flattened input plane, a block
//! of output channels' gradients against `R` kernel rows of three taps each:
//! `out[r·3 + kx][o] = Σ_q dyt[q][o] · x[offs[r] + q + kx]`. The output channels run
//! along the vector lanes (`dyt` holds the gradient transposed, position-major), so
//! each position is one vector load of `dyt` per lane block and one broadcast per tap,
//! feeding `3·R` FMAs per lane block into accumulators that need no reduction across
//! lanes. A kernel row's three taps are one pointer at displacements 0, 1 and 2, so a
//! tile keeps only `R` pointers in registers. AVX-512 holds 18 accumulators (16 lanes
//! × 6 rows, or 32 lanes × 3 rows), AVX2 and the portable path 12 (8 lanes × 4 rows).

use super::isa::{Isa, IsaKind};

/// Taps per kernel row: the routine covers 3-wide kernels.
pub const KW: usize = 3;

/// A tile shape: vector lanes, lane blocks (output channels `lanes·cv`), kernel rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterShape {
    pub lanes: usize,
    pub cv: usize,
    pub rows: usize,
}

impl FilterShape {
    /// The shape for `channels` output channels per group: two lane blocks when there
    /// are enough channels to fill them (AVX-512 only).
    pub fn for_channels(isa: Isa, channels: usize) -> FilterShape {
        match isa.kind() {
            IsaKind::Avx512 if channels > 16 => FilterShape {
                lanes: 16,
                cv: 2,
                rows: 3,
            },
            IsaKind::Avx512 => FilterShape {
                lanes: 16,
                cv: 1,
                rows: 6,
            },
            IsaKind::Avx2 | IsaKind::Portable => FilterShape {
                lanes: 8,
                cv: 1,
                rows: 4,
            },
        }
    }

    /// Output channels per tile.
    pub fn channels(&self) -> usize {
        self.lanes * self.cv
    }

    /// Floats of a tile's output: `[rows·3][channels]`.
    pub fn out_len(&self) -> usize {
        self.rows * KW * self.channels()
    }
}

/// One tile's reads: `dyt` is `[len][channels]`; kernel row `r` reads `x` at
/// `offs[r] + q + kx` (`offs` holds at most `rows` entries; missing rows read
/// nothing and sum to zero).
pub struct FilterTileArgs<'a> {
    pub x: &'a [f32],
    pub offs: &'a [usize],
    pub dyt: &'a [f32],
    pub len: usize,
}

/// Adds one tile of `shape` to `out` (`[rows·3][channels]`; the rows past
/// `offs.len()` are left alone). Panics if a read would leave `x` or `dyt`: the driver
/// sizes its buffers so that it never does.
pub fn filter_tile(isa: Isa, shape: FilterShape, a: &FilterTileArgs, out: &mut [f32]) {
    let ch = shape.channels();
    assert_eq!(
        shape,
        FilterShape::for_channels(isa, ch),
        "not a shape of {isa:?}"
    );
    assert!(a.offs.len() <= shape.rows, "at most {} rows", shape.rows);
    let max_off = a.offs.iter().copied().max().unwrap_or(0);
    assert!(a.len == 0 || max_off + a.len + KW - 1 <= a.x.len());
    assert!(a.len * ch <= a.dyt.len());
    assert!(out.len() >= shape.out_len());
    if a.len == 0 || a.offs.is_empty() {
        return;
    }
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` proves AVX-512F; the asserts bound every access.
        IsaKind::Avx512 => unsafe {
            match (shape.cv, a.offs.len()) {
                (2, 1) => avx512::<2, 1>(a, out),
                (2, 2) => avx512::<2, 2>(a, out),
                (2, _) => avx512::<2, 3>(a, out),
                (_, 1) => avx512::<1, 1>(a, out),
                (_, 2) => avx512::<1, 2>(a, out),
                (_, 3) => avx512::<1, 3>(a, out),
                (_, 4) => avx512::<1, 4>(a, out),
                (_, 5) => avx512::<1, 5>(a, out),
                _ => avx512::<1, 6>(a, out),
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` proves AVX2 and FMA; the asserts bound every access.
        IsaKind::Avx2 => unsafe {
            match a.offs.len() {
                1 => avx2::<1>(a, out),
                2 => avx2::<2>(a, out),
                3 => avx2::<3>(a, out),
                _ => avx2::<4>(a, out),
            }
        },
        _ => match a.offs.len() {
            1 => portable::<1>(a, out),
            2 => portable::<2>(a, out),
            3 => portable::<3>(a, out),
            _ => portable::<4>(a, out),
        },
    }
}

// Index loops throughout, not iterators: a version that iterated the accumulator
// arrays by reference, even only to store them, made LLVM keep them in memory and ran
// at less than half the rate (a one-off comparison during development).
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<const CV: usize, const R: usize>(a: &FilterTileArgs, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let x = a.x.as_ptr();
    let mut ptrs = [x; R];
    for r in 0..R {
        ptrs[r] = x.add(a.offs[r]);
    }
    let dyt = a.dyt.as_ptr();
    let mut acc = [[[_mm512_setzero_ps(); CV]; KW]; R];
    for q in 0..a.len {
        let mut d = [_mm512_setzero_ps(); CV];
        for v in 0..CV {
            d[v] = _mm512_loadu_ps(dyt.add((q * CV + v) * 16));
        }
        for r in 0..R {
            let p = ptrs[r].add(q);
            for kx in 0..KW {
                let b = _mm512_set1_ps(*p.add(kx));
                for v in 0..CV {
                    acc[r][kx][v] = _mm512_fmadd_ps(d[v], b, acc[r][kx][v]);
                }
            }
        }
    }
    let o = out.as_mut_ptr();
    for r in 0..R {
        for kx in 0..KW {
            for v in 0..CV {
                let at = o.add(((r * KW + kx) * CV + v) * 16);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), acc[r][kx][v]));
            }
        }
    }
}

// Index loops, as in `avx512`.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(a: &FilterTileArgs, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let x = a.x.as_ptr();
    let mut ptrs = [x; R];
    for r in 0..R {
        ptrs[r] = x.add(a.offs[r]);
    }
    let dyt = a.dyt.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); KW]; R];
    for q in 0..a.len {
        let d = _mm256_loadu_ps(dyt.add(q * 8));
        for r in 0..R {
            let p = ptrs[r].add(q);
            for kx in 0..KW {
                acc[r][kx] = _mm256_fmadd_ps(d, _mm256_broadcast_ss(&*p.add(kx)), acc[r][kx]);
            }
        }
    }
    let o = out.as_mut_ptr();
    for r in 0..R {
        for kx in 0..KW {
            let at = o.add((r * KW + kx) * 8);
            _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), acc[r][kx]));
        }
    }
}

/// Plain arrays the compiler vectorises for the build target (a separate multiply and
/// add: `mul_add` without FMA hardware is a libm call).
fn portable<const R: usize>(a: &FilterTileArgs, out: &mut [f32]) {
    const L: usize = 8;
    let mut acc = [[[0f32; L]; KW]; R];
    for (q, d) in a.dyt.chunks_exact(L).take(a.len).enumerate() {
        for (row, &off) in acc.iter_mut().zip(a.offs) {
            let xs = &a.x[off + q..off + q + KW];
            for (s, &b) in row.iter_mut().zip(xs) {
                for (s, &d) in s.iter_mut().zip(d) {
                    *s += d * b;
                }
            }
        }
    }
    for (dst, v) in out.chunks_exact_mut(L).zip(acc.iter().flatten()) {
        dst.iter_mut().zip(v).for_each(|(d, v)| *d += v);
    }
}
