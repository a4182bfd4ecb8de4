//! Single-precision GEMM: `C = α·A·B + β·C` with strided A and B and a row-major C.
//!
//! GotoBLAS-style blocking around the per-ISA micro-kernels of
//! [`microkernel`](super::microkernel): for each block of `KC` columns of A (rows of B),
//! all of B's block is packed into `NR`-wide panels and all of A's into `MR`-tall
//! panels (or A comes pre-packed, [`PackedA`], when it is a bound weight). The tile
//! grid is then cut into blocks of at most `MC` rows; each block walks B's panels in
//! the outer loop and A's in the inner one, so one B panel (`KC·NR` floats, 32 KiB for
//! AVX-512) stays in L1 while the block of A (`MC·KC`) stays in L2. With
//! [`Par::Rayon`] the blocks (and the packing) are spread over rayon's pool; small
//! products stay serial, where a fork costs more than it saves.

use rayon::prelude::*;

use super::isa::{Isa, IsaKind};
use super::microkernel::{MicroKernel, Tile};
use super::pack::{pack_a_panel, pack_b_panel, MatRef};

/// Depth of one packed block: a `KC × 32` B panel is 32 KiB, the L1 of the machine
/// this was tuned on (AMD EPYC, Zen 4).
pub const KC: usize = 256;
/// Rows of A per block of tiles (an `MC × KC` block of A is 128 KiB, inside L2).
const MC: usize = 128;
/// Below this many multiply-adds the product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// Whether a GEMM may use rayon's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// On the calling thread only (for callers that already split work over rayon).
    Serial,
    /// Spread the tiles over rayon's current pool when the product is large enough.
    Rayon,
}

/// A, packed once for a given ISA, for products that reuse it (a bound conv weight,
/// a Winograd-transformed filter).
#[derive(Clone, Debug)]
pub struct PackedA {
    kind: IsaKind,
    m: usize,
    k: usize,
    mr: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs the `m × k` matrix `a` for `isa`'s micro-kernel.
    pub fn new(isa: Isa, m: usize, k: usize, a: MatRef) -> PackedA {
        assert!(
            a.fits(m, k),
            "PackedA::new: the view is shorter than {m}×{k}"
        );
        let mr = MicroKernel::for_isa(isa).mr;
        let mp = m.div_ceil(mr);
        let mut data = vec![0.0; mp * k * mr];
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let block = &mut data[p0 * mp * mr..(p0 + kc) * mp * mr];
            for (ip, panel) in block.chunks_exact_mut(kc * mr).enumerate() {
                let rows = mr.min(m - ip * mr);
                pack_a_panel(a, ip * mr, rows, p0, kc, mr, panel);
            }
        }
        PackedA {
            kind: isa.kind(),
            m,
            k,
            mr,
            data,
        }
    }

    /// Rows of A.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Columns of A.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// The packed panels of columns `p0..p0+kc` (a `KC` block).
    fn block(&self, p0: usize, kc: usize) -> &[f32] {
        let mp = self.m.div_ceil(self.mr);
        &self.data[p0 * mp * self.mr..(p0 + kc) * mp * self.mr]
    }
}

/// Where A comes from.
enum ASource<'a> {
    Raw(MatRef<'a>),
    Packed(&'a PackedA),
}

/// `C = α·A·B + β·C` for `A: m×k`, `B: k×n`, `C: m×n` row-major with row stride
/// `ldc`. β = 0 overwrites C without reading it.
///
/// # Panics
/// If a view is too short for its shape or `ldc < n` (a caller bug, not user input).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    par: Par,
) {
    assert!(a.fits(m, k), "sgemm: A is shorter than {m}×{k}");
    gemm(isa, m, n, k, alpha, ASource::Raw(a), b, beta, c, ldc, par);
}

/// [`sgemm`] with a pre-packed A (packed for the same ISA).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_packed(
    isa: Isa,
    a: &PackedA,
    n: usize,
    alpha: f32,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    par: Par,
) {
    assert_eq!(
        a.kind,
        isa.kind(),
        "sgemm_packed: A was packed for another ISA"
    );
    let (m, k) = (a.m, a.k);
    gemm(
        isa,
        m,
        n,
        k,
        alpha,
        ASource::Packed(a),
        b,
        beta,
        c,
        ldc,
        par,
    );
}

/// A raw pointer that tasks writing disjoint tiles of C may share.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: every task writes a disjoint set of C's elements (its own tiles).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[allow(clippy::too_many_arguments)]
fn gemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: ASource,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    par: Par,
) {
    assert!(b.fits(k, n), "sgemm: B is shorter than {k}×{n}");
    assert!(
        m == 0 || n == 0 || (ldc >= n && (m - 1) * ldc + n <= c.len()),
        "sgemm: C is shorter than {m}×{n} at row stride {ldc}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    let uk = MicroKernel::for_isa(isa);
    let (mr, nr) = (uk.mr, uk.nr);
    let threads = rayon::current_num_threads();
    let parallel = par == Par::Rayon && threads > 1 && m * n * k >= PAR_MIN_MACS;
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(nr));
    let kc_max = KC.min(k);
    let mut b_pack = vec![0.0f32; np * kc_max * nr];
    let mut a_pack = match a {
        ASource::Raw(_) => vec![0.0f32; mp * kc_max * mr],
        ASource::Packed(_) => Vec::new(),
    };

    // The tile grid in blocks: at most MC rows each, and enough column blocks that
    // every thread gets a few (a row of blocks alone is too few when m is small).
    let mc_panels = (MC / mr).max(1);
    let m_blocks = mp.div_ceil(mc_panels);
    let n_blocks = if parallel {
        (4 * threads).div_ceil(m_blocks).clamp(1, np)
    } else {
        1
    };
    let nc_panels = np.div_ceil(n_blocks);
    let n_blocks = np.div_ceil(nc_panels);
    let c_ptr = SendPtr(c.as_mut_ptr());

    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        let beta_p = if p0 == 0 { beta } else { 1.0 };
        let b_block = &mut b_pack[..np * kc * nr];
        let pack_b = |(jp, panel): (usize, &mut [f32])| {
            pack_b_panel(b, p0, kc, jp * nr, nr.min(n - jp * nr), nr, panel);
        };
        if parallel {
            b_block.par_chunks_mut(kc * nr).enumerate().for_each(pack_b);
        } else {
            b_block.chunks_mut(kc * nr).enumerate().for_each(pack_b);
        }
        let a_block: &[f32] = match a {
            ASource::Raw(a) => {
                let block = &mut a_pack[..mp * kc * mr];
                let pack_a = |(ip, panel): (usize, &mut [f32])| {
                    pack_a_panel(a, ip * mr, mr.min(m - ip * mr), p0, kc, mr, panel);
                };
                if parallel {
                    block.par_chunks_mut(kc * mr).enumerate().for_each(pack_a);
                } else {
                    block.chunks_mut(kc * mr).enumerate().for_each(pack_a);
                }
                block
            }
            ASource::Packed(pa) => pa.block(p0, kc),
        };
        let b_block: &[f32] = b_block;
        let run_block = |task: usize| {
            let (mb, nb) = (task / n_blocks, task % n_blocks);
            let ips = mb * mc_panels..((mb + 1) * mc_panels).min(mp);
            let jps = nb * nc_panels..((nb + 1) * nc_panels).min(np);
            let c_ptr = c_ptr;
            for jp in jps {
                for ip in ips.clone() {
                    let (i0, j0) = (ip * mr, jp * nr);
                    let tile = Tile {
                        kc,
                        a: a_block[ip * kc * mr..].as_ptr(),
                        b: b_block[jp * kc * nr..].as_ptr(),
                        // SAFETY: i0 < m and j0 < n, so the offset is inside C
                        // (checked against its length above).
                        c: unsafe { c_ptr.0.add(i0 * ldc + j0) },
                        rsc: ldc,
                        rows: mr.min(m - i0),
                        cols: nr.min(n - j0),
                        alpha,
                        beta: beta_p,
                    };
                    // SAFETY: the panels hold kc·mr and kc·nr floats; the tile's
                    // corner lies inside C; tasks own disjoint tiles; the kernel
                    // matches the checked `isa`.
                    unsafe { uk.run(&tile) };
                }
            }
        };
        if parallel {
            (0..m_blocks * n_blocks).into_par_iter().for_each(run_block);
        } else {
            (0..m_blocks * n_blocks).for_each(run_block);
        }
    }
}
