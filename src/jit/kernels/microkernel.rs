//! Register-blocked GEMM micro-kernels, one per ISA.
//!
//! Each computes one `MR × NR` tile of `C = α·A·B + β·C` from a packed A panel
//! (`kc × MR`, column of the tile's rows per step) and a packed B panel (`kc × NR`),
//! keeping the whole tile in vector registers across the `kc` loop:
//! - AVX-512: 8 × 32 (16 zmm accumulators, two B loads and eight broadcasts per step);
//!   8 and 32 divide the channel counts (16, 32, 64) and spatial sizes ResNet convs
//!   produce, so few tiles are partial;
//! - AVX2 + FMA: 6 × 16 (12 ymm accumulators; 16 registers leave no room for more);
//! - portable: 4 × 16 over plain arrays the compiler vectorises for the build target.
//!
//! Partial tiles (at the right and bottom edges) run the same register loop on the
//! zero-padded panels and store through a small buffer.

use super::isa::{Isa, IsaKind};

/// The tile shape and entry point of one ISA's micro-kernel.
#[derive(Clone, Copy)]
pub struct MicroKernel {
    /// Rows of C per tile (the A panel width).
    pub mr: usize,
    /// Columns of C per tile (the B panel width).
    pub nr: usize,
    run: unsafe fn(&Tile),
}

/// One tile's operands. `a` holds `kc·mr` floats; `b` holds `kc` rows of `nr` floats
/// each `rsb` apart (`rsb = nr` for a packed panel, the matrix's row stride when B is
/// read in place); `c` points at the tile's top-left element of a row-major matrix
/// with row stride `rsc`; only the `rows × cols` corner is written.
pub struct Tile {
    pub kc: usize,
    pub a: *const f32,
    pub b: *const f32,
    pub rsb: usize,
    pub c: *mut f32,
    pub rsc: usize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: f32,
    pub beta: f32,
}

impl MicroKernel {
    /// The kernel for `isa`.
    pub fn for_isa(isa: Isa) -> MicroKernel {
        match isa.kind() {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => MicroKernel {
                mr: 8,
                nr: 32,
                run: x86::tile_avx512,
            },
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => MicroKernel {
                mr: 6,
                nr: 16,
                run: x86::tile_avx2,
            },
            _ => MicroKernel {
                mr: 4,
                nr: 16,
                run: tile_portable,
            },
        }
    }

    /// Runs the kernel on one tile.
    ///
    /// # Safety
    /// `t.a` must hold `kc·mr` readable floats and `t.b` `kc` rows of `nr` at stride
    /// `rsb`, `t.c` must be valid for
    /// writes of the `rows × cols` corner at row stride `rsc` (and reads if `β ≠ 0`),
    /// `rows ≤ mr`, `cols ≤ nr`, and the kernel must come from [`MicroKernel::for_isa`]
    /// (the [`Isa`] proves the CPU runs it).
    pub unsafe fn run(&self, t: &Tile) {
        debug_assert!(t.rows <= self.mr && t.cols <= self.nr);
        // SAFETY: forwarded from the caller.
        unsafe { (self.run)(t) }
    }
}

/// Writes `α·acc + β·C` into C; `acc` is a row-major `mr × nr` buffer. β = 0 ignores C
/// (so uninitialised or NaN output does not leak through, as BLAS does).
///
/// # Safety
/// As [`MicroKernel::run`] for `t.c`.
#[inline(always)]
unsafe fn store_partial(t: &Tile, acc: &[f32], nr: usize) {
    for r in 0..t.rows {
        for j in 0..t.cols {
            // SAFETY: r < rows and j < cols, inside the caller's promise.
            let dst = unsafe { &mut *t.c.add(r * t.rsc + j) };
            let v = t.alpha * acc[r * nr + j];
            *dst = if t.beta == 0.0 { v } else { v + t.beta * *dst };
        }
    }
}

/// Portable 4 × 16 kernel.
///
/// # Safety
/// As [`MicroKernel::run`].
unsafe fn tile_portable(t: &Tile) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0f32; NR]; MR];
    // SAFETY: the A panel holds kc·MR floats.
    let a = unsafe { std::slice::from_raw_parts(t.a, t.kc * MR) };
    for (p, ap) in a.chunks_exact(MR).enumerate() {
        // SAFETY: row p of the B panel holds NR floats.
        let bp = unsafe { std::slice::from_raw_parts(t.b.add(p * t.rsb), NR) };
        for r in 0..MR {
            let av = ap[r];
            for j in 0..NR {
                acc[r][j] += av * bp[j];
            }
        }
    }
    let flat: Vec<f32> = acc.iter().flatten().copied().collect();
    // SAFETY: forwarded.
    unsafe { store_partial(t, &flat, NR) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{store_partial, Tile};
    use std::arch::x86_64::*;

    /// AVX-512 8 × 32 kernel.
    ///
    /// # Safety
    /// As [`super::MicroKernel::run`], on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(t: &Tile) {
        const MR: usize = 8;
        const NR: usize = 32;
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (t.a, t.b);
        // SAFETY (whole block): each step reads MR floats of A and NR of B, kc steps,
        // inside the panels the caller promised; C accesses stay in the rows × cols
        // corner (full tiles) or go through `store_partial`.
        unsafe {
            for _ in 0..t.kc {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
                a = a.add(MR);
                b = b.add(t.rsb);
            }
            let alpha = _mm512_set1_ps(t.alpha);
            if t.rows == MR && t.cols == NR {
                let beta = _mm512_set1_ps(t.beta);
                for (r, row) in acc.iter().enumerate() {
                    let c = t.c.add(r * t.rsc);
                    for (h, v) in row.iter().enumerate() {
                        let mut out = _mm512_mul_ps(alpha, *v);
                        if t.beta != 0.0 {
                            out = _mm512_fmadd_ps(beta, _mm512_loadu_ps(c.add(16 * h)), out);
                        }
                        _mm512_storeu_ps(c.add(16 * h), out);
                    }
                }
            } else {
                let mut buf = [0f32; MR * NR];
                for (r, row) in acc.iter().enumerate() {
                    _mm512_storeu_ps(buf.as_mut_ptr().add(r * NR), row[0]);
                    _mm512_storeu_ps(buf.as_mut_ptr().add(r * NR + 16), row[1]);
                }
                store_partial(t, &buf, NR);
            }
        }
    }

    /// AVX2 + FMA 6 × 16 kernel.
    ///
    /// # Safety
    /// As [`super::MicroKernel::run`], on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(t: &Tile) {
        const MR: usize = 6;
        const NR: usize = 16;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (t.a, t.b);
        // SAFETY: as in `tile_avx512`.
        unsafe {
            for _ in 0..t.kc {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
                a = a.add(MR);
                b = b.add(t.rsb);
            }
            let alpha = _mm256_set1_ps(t.alpha);
            if t.rows == MR && t.cols == NR {
                let beta = _mm256_set1_ps(t.beta);
                for (r, row) in acc.iter().enumerate() {
                    let c = t.c.add(r * t.rsc);
                    for (h, v) in row.iter().enumerate() {
                        let mut out = _mm256_mul_ps(alpha, *v);
                        if t.beta != 0.0 {
                            out = _mm256_fmadd_ps(beta, _mm256_loadu_ps(c.add(8 * h)), out);
                        }
                        _mm256_storeu_ps(c.add(8 * h), out);
                    }
                }
            } else {
                let mut buf = [0f32; MR * NR];
                for (r, row) in acc.iter().enumerate() {
                    _mm256_storeu_ps(buf.as_mut_ptr().add(r * NR), row[0]);
                    _mm256_storeu_ps(buf.as_mut_ptr().add(r * NR + 8), row[1]);
                }
                store_partial(t, &buf, NR);
            }
        }
    }
}
