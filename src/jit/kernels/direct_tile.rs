//! The register tiles of the sliding-window direct conv (`conv_direct`), one per ISA.
//!
//! A tile computes `cb` output channels at `nv` vectors of consecutive positions of
//! the padded, flattened input plane: `out[o][j] = Σ_c Σ_t w[c][t][o] · x[c·ps +
//! offs[t] + j]`. On that plane every tap of a stride-1 conv is a shift, so one
//! unaligned vector load serves all `cb` channels of a tap, and each weight is one
//! broadcast used by `nv` FMAs. AVX-512 holds 8 × 3 accumulators of 16 lanes (24 of its
//! 32 registers), AVX2 4 × 3 of 8 lanes (12 of 16): both leave room for the loaded
//! inputs and the broadcast, so nothing spills.

use super::isa::{Isa, IsaKind};

/// The tile shape of an ISA: lanes per vector, output channels, and at most how many
/// vectors of positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileShape {
    pub lanes: usize,
    pub cb: usize,
    pub max_nv: usize,
}

impl TileShape {
    pub fn of(isa: Isa) -> TileShape {
        match isa.kind() {
            IsaKind::Avx512 => TileShape {
                lanes: 16,
                cb: 8,
                max_nv: 3,
            },
            IsaKind::Avx2 | IsaKind::Portable => TileShape {
                lanes: 8,
                cb: 4,
                max_nv: 3,
            },
        }
    }
}

/// Reads of one tile: `x` from `cin` planes `ps` apart, at every offset of `offs`, `nv`
/// vectors each; `w` packed `[cin][taps][cb]`; `out` is `[cb][nv·lanes]`.
pub struct TileArgs<'a> {
    pub x: &'a [f32],
    pub ps: usize,
    pub cin: usize,
    pub offs: &'a [usize],
    pub w: &'a [f32],
    pub nv: usize,
}

/// Computes one tile into `out`. Panics if a read would leave `x` or `w`: the driver
/// sizes the padded plane so that it never does.
pub fn tile(isa: Isa, a: &TileArgs, out: &mut [f32]) {
    let s = TileShape::of(isa);
    let span = a.nv * s.lanes;
    let max_off = a.offs.iter().copied().max().unwrap_or(0);
    assert!(a.nv >= 1 && a.nv <= s.max_nv, "1 to {} vectors", s.max_nv);
    assert!(a.cin == 0 || (a.cin - 1) * a.ps + max_off + span <= a.x.len());
    assert!(a.w.len() >= a.cin * a.offs.len() * s.cb);
    assert!(out.len() >= s.cb * span);
    let (x, w, o) = (a.x.as_ptr(), a.w.as_ptr(), out.as_mut_ptr());
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` proves the CPU has AVX-512F; the asserts bound every access.
        IsaKind::Avx512 => unsafe {
            match a.nv {
                1 => avx512::<1>(x, a.ps, a.cin, a.offs, w, o),
                2 => avx512::<2>(x, a.ps, a.cin, a.offs, w, o),
                _ => avx512::<3>(x, a.ps, a.cin, a.offs, w, o),
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` proves AVX2 and FMA; the asserts bound every access.
        IsaKind::Avx2 => unsafe {
            match a.nv {
                1 => avx2::<1>(x, a.ps, a.cin, a.offs, w, o),
                2 => avx2::<2>(x, a.ps, a.cin, a.offs, w, o),
                _ => avx2::<3>(x, a.ps, a.cin, a.offs, w, o),
            }
        },
        _ => match a.nv {
            1 => portable::<1>(a, out),
            2 => portable::<2>(a, out),
            _ => portable::<3>(a, out),
        },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<const NV: usize>(
    x: *const f32,
    ps: usize,
    cin: usize,
    offs: &[usize],
    w: *const f32,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    const CB: usize = 8;
    let taps = offs.len();
    let mut acc = [[_mm512_setzero_ps(); NV]; CB];
    for c in 0..cin {
        let xc = x.add(c * ps);
        let wc = w.add(c * taps * CB);
        for (t, &off) in offs.iter().enumerate() {
            let xt = xc.add(off);
            let xv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(xt.add(16 * v)));
            let wt = wc.add(t * CB);
            for (o, row) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*wt.add(o));
                for (a, xv) in row.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(b, *xv, *a);
                }
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
unsafe fn avx2<const NV: usize>(
    x: *const f32,
    ps: usize,
    cin: usize,
    offs: &[usize],
    w: *const f32,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    const CB: usize = 4;
    let taps = offs.len();
    let mut acc = [[_mm256_setzero_ps(); NV]; CB];
    for c in 0..cin {
        let xc = x.add(c * ps);
        let wc = w.add(c * taps * CB);
        for (t, &off) in offs.iter().enumerate() {
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
    for (o, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            _mm256_storeu_ps(out.add(o * NV * 8 + v * 8), *a);
        }
    }
}

/// Plain arrays the compiler vectorises for the build target (a separate multiply and
/// add: `mul_add` without FMA hardware is a libm call).
fn portable<const NV: usize>(a: &TileArgs, out: &mut [f32]) {
    const CB: usize = 4;
    const L: usize = 8;
    let taps = a.offs.len();
    let mut acc = [[[0f32; L]; NV]; CB];
    for c in 0..a.cin {
        let xc = &a.x[c * a.ps..];
        let wc = &a.w[c * taps * CB..(c + 1) * taps * CB];
        for (&off, wt) in a.offs.iter().zip(wc.chunks_exact(CB)) {
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
    for (dst, row) in out.chunks_exact_mut(NV * L).zip(&acc) {
        for (d, vec) in dst.chunks_exact_mut(L).zip(row) {
            d.copy_from_slice(vec);
        }
    }
}
