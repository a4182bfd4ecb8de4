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
        let mut packed = PackedA {
            kind: isa.kind(),
            m,
            k,
            mr: MicroKernel::for_isa(isa).mr,
            data: Vec::new(),
        };
        packed.pack(a);
        packed
    }

    /// An `m × k` matrix of zeros in `isa`'s packed layout, to be written run by run
    /// ([`PackedA::set_column`]) by a producer that can write it there directly (the
    /// Winograd filter transform: a separate packing pass took twice its time).
    pub fn zeroed(isa: Isa, m: usize, k: usize) -> PackedA {
        let mr = MicroKernel::for_isa(isa).mr;
        PackedA {
            kind: isa.kind(),
            m,
            k,
            mr,
            data: vec![0.0; m.div_ceil(mr) * mr * k],
        }
    }

    /// Sets the elements `(i..i + vals.len(), p)` of column `p < k` (the run within
    /// the `m` rows): contiguous within each `mr`-row panel.
    pub fn set_column(&mut self, i: usize, p: usize, vals: &[f32]) {
        // SAFETY: the writer is this call's alone.
        unsafe { self.column_writer().set_column(i, p, vals) }
    }

    /// A writer of this matrix's columns that several threads may share, each
    /// writing elements no other one writes ([`ColumnWriter::set_column`]).
    pub fn column_writer(&mut self) -> ColumnWriter<'_> {
        ColumnWriter {
            data: self.data.as_mut_ptr(),
            m: self.m,
            k: self.k,
            mr: self.mr,
            _matrix: std::marker::PhantomData,
        }
    }

    /// Packs the `m × k` matrix `a` into this one's memory.
    fn pack(&mut self, a: MatRef) {
        let (m, k, mr) = (self.m, self.k, self.mr);
        assert!(a.fits(m, k), "PackedA: the view is shorter than {m}×{k}");
        let mp = m.div_ceil(mr);
        self.data.resize(mp * k * mr, 0.0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let block = &mut self.data[p0 * mp * mr..(p0 + kc) * mp * mr];
            for (ip, panel) in block.chunks_exact_mut(kc * mr).enumerate() {
                let rows = mr.min(m - ip * mr);
                pack_a_panel(a, ip * mr, rows, p0, kc, mr, panel);
            }
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

/// [`PackedA::set_column`] through a pointer, for threads that fill one matrix
/// together (the Winograd filter transform splits the filters among them).
pub struct ColumnWriter<'a> {
    data: *mut f32,
    m: usize,
    k: usize,
    mr: usize,
    _matrix: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a writer only writes through its pointer, into a matrix it borrows
// exclusively; `set_column`'s contract keeps the threads' elements apart.
unsafe impl Send for ColumnWriter<'_> {}
unsafe impl Sync for ColumnWriter<'_> {}

impl ColumnWriter<'_> {
    /// [`PackedA::set_column`].
    ///
    /// # Safety
    /// No other thread writes any of these elements meanwhile.
    pub unsafe fn set_column(&self, mut i: usize, p: usize, mut vals: &[f32]) {
        assert!(
            p < self.k && i + vals.len() <= self.m,
            "PackedA::set_column past the matrix"
        );
        let (mr, mp) = (self.mr, self.m.div_ceil(self.mr));
        let p0 = p / KC * KC;
        let kc = KC.min(self.k - p0);
        let block = p0 * mp * mr + (p - p0) * mr;
        while !vals.is_empty() {
            let (panel, r) = (i / mr, i % mr);
            let take = (mr - r).min(vals.len());
            let at = block + panel * kc * mr + r;
            // In bounds: `at + take ≤ mp·mr·k`, the matrix's length, as `i + take ≤ m`
            // and `p < k` (asserted). A fixed-size copy for whole panels: `perf`
            // showed a `copy_from_slice` of a run this short as a libc memmove call.
            let dst = std::slice::from_raw_parts_mut(self.data.add(at), take);
            match take {
                8 => dst.copy_from_slice(&<[f32; 8]>::try_from(&vals[..8]).unwrap()),
                _ => dst.iter_mut().zip(vals).for_each(|(d, v)| *d = *v),
            }
            i += take;
            vals = &vals[take..];
        }
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
    if uses_faer(isa, m, n, k) || (column_major_b(&b, n) && isa == Isa::best() && m * k > 0) {
        assert!(b.fits(k, n), "sgemm: B is shorter than {k}×{n}");
        assert!(
            ldc >= n && (m - 1) * ldc + n <= c.len(),
            "sgemm: C is shorter than {m}×{n} at row stride {ldc}"
        );
        return faer_gemm(m, n, k, alpha, a, b, beta, c, ldc, par);
    }
    gemm(isa, m, n, k, alpha, ASource::Raw(a), b, beta, c, ldc, par);
}

/// [`sgemm`] on fnet's own kernels only, never faer: what `tools/gemm_compare`
/// measures against the crates.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_own(
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

/// Whether [`sgemm`] hands the product to faer's matmul: only on the best ISA (faer
/// picks its own SIMD path, so a forced `FNET_JIT_ISA` always runs fnet's kernels),
/// and only for the shapes faer measured faster on in `tools/gemm_compare` (see
/// docs/jit_kernels.md): a long k against a small output (filter gradients: k runs
/// over batch × pixels) and large products with every side past 64 (2048³).
pub fn uses_faer(isa: Isa, m: usize, n: usize, k: usize) -> bool {
    if isa != Isa::best() || m == 0 || n == 0 || k == 0 {
        return false;
    }
    let deep = m <= 64 && k >= 1024 && k >= 2 * n;
    let large = m > 64 && n > 64 && k > 64 && m * n * k >= 1 << 24;
    deep || large
}

/// Whether B is stored by columns (a transposed row-major matrix: a linear layer's
/// weight, a filter gradient's unfolded input). fnet's kernels pack all of such a B
/// in every call, which dominates small products (LeNet's linear layers at batch 1,
/// `jit_profile`: 35 µs against faer's 3 µs); faer reads it in place, and was as fast or faster on every
/// filter-gradient shape `tools/gemm_compare` measured. So [`sgemm`] hands these to
/// faer on the best ISA.
fn column_major_b(b: &MatRef, n: usize) -> bool {
    b.rs == 1 && b.cs != 1 && n > 0
}

/// `C = α·A·B + β·C` by faer (views already checked against their slices).
#[allow(clippy::too_many_arguments)]
fn faer_gemm(
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
    if beta != 0.0 && beta != 1.0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].iter_mut().for_each(|v| *v *= beta);
        }
    }
    // SAFETY: A fits m×k and B fits k×n at their strides (asserted by the caller), C's
    // m×n corner at row stride ldc lies inside `c`, which is borrowed mutably and so
    // aliases neither.
    let (av, bv, cv) = unsafe {
        (
            faer::MatRef::from_raw_parts(a.data.as_ptr(), m, k, a.rs as isize, a.cs as isize),
            faer::MatRef::from_raw_parts(b.data.as_ptr(), k, n, b.rs as isize, b.cs as isize),
            faer::MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, n, ldc as isize, 1),
        )
    };
    let accum = if beta == 0.0 {
        faer::Accum::Replace
    } else {
        faer::Accum::Add
    };
    let par = match par {
        Par::Serial => faer::Par::Seq,
        Par::Rayon => faer::Par::rayon(0),
    };
    faer::linalg::matmul::matmul(cv, accum, av, bv, alpha, par);
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

impl SendPtr {
    /// The pointer; a method so closures capture the whole (Send) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

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
    let threads = rayon::current_num_threads();
    let parallel = par == Par::Rayon && threads > 1 && m * n * k >= PAR_MIN_MACS;
    let c_ptr = SendPtr(c.as_mut_ptr());
    let nr = MicroKernel::for_isa(isa).nr;
    if parallel && n >= 2 * threads * NC_SPLIT {
        // Wide products (an im2col over a batch): each thread takes whole column
        // chunks, so its packed data stays in its own cache and nothing is shared.
        let chunk = n.div_ceil(4 * threads).next_multiple_of(nr).max(NC_SPLIT);
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|q| {
            let j0 = q * chunk;
            let cols = chunk.min(n - j0);
            let b = MatRef {
                data: &b.data[j0 * b.cs..],
                ..b
            };
            // SAFETY: chunk q owns columns j0..j0+cols of C, disjoint from the
            // others; the bounds were checked above.
            unsafe {
                gemm_raw(
                    isa,
                    m,
                    cols,
                    k,
                    alpha,
                    &a,
                    b,
                    beta,
                    c_ptr.get().add(j0),
                    ldc,
                    false,
                )
            };
        });
    } else if parallel
        && matches!(a, ASource::Raw(_))
        && m.div_ceil(MC) * n.div_ceil(nr) < 2 * threads
        && k >= 2 * threads * KC
    {
        // Few tiles but a long k (a filter gradient: k runs over batch × pixels):
        // each thread sums a slice of k into its own buffer, then the buffers add up.
        let slice = k.div_ceil(threads).next_multiple_of(KC);
        let partials: Vec<Vec<f32>> = (0..k.div_ceil(slice))
            .into_par_iter()
            .map(|q| {
                let (p0, len) = (q * slice, slice.min(k - q * slice));
                let a = match a {
                    ASource::Raw(v) => ASource::Raw(MatRef {
                        data: &v.data[p0 * v.cs..],
                        ..v
                    }),
                    // A packed whole cannot be sliced by k cheaply: repack the slice.
                    ASource::Packed(_) => unreachable!("checked below"),
                };
                let b = MatRef {
                    data: &b.data[p0 * b.rs..],
                    ..b
                };
                let mut part = vec![0.0f32; m * n];
                // SAFETY: `part` is this task's own m×n buffer.
                unsafe {
                    gemm_raw(
                        isa,
                        m,
                        n,
                        len,
                        alpha,
                        &a,
                        b,
                        0.0,
                        part.as_mut_ptr(),
                        n,
                        false,
                    )
                };
                part
            })
            .collect();
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            for (j, v) in row.iter_mut().enumerate() {
                let sum: f32 = partials.iter().map(|p| p[i * n + j]).sum();
                *v = if beta == 0.0 { sum } else { sum + beta * *v };
            }
        }
    } else {
        // SAFETY: C's m×n corner at stride ldc lies inside `c` (checked above).
        unsafe { gemm_raw(isa, m, n, k, alpha, &a, b, beta, c_ptr.0, ldc, parallel) };
    }
}

/// Columns per chunk below which a wide product is not split by columns.
const NC_SPLIT: usize = 512;

/// Columns of B packed at once when B must be packed (`KC × NC_PACK` is 1 MiB at most).
const NC_PACK: usize = 1024;

/// Whether B is read in place: it must be row-major, with rows close enough that a
/// panel's rows do not each sit on their own page (the prefetcher stops at pages),
/// and few rows of A (a packed copy of B is reused once per `MR` rows of A: with more
/// than 64 rows, as at 2048³, packing pays).
fn reads_b_in_place(b: &MatRef, m: usize) -> bool {
    b.cs == 1 && b.rs <= 4096 && m <= 64
}

/// The product on raw C, in blocks of columns when B is packed.
///
/// # Safety
/// `c` must be valid for reads and writes of an `m × n` matrix at row stride `ldc`
/// that no one else touches during the call; `b` must fit `k × n`; `m, n, k > 0`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &ASource,
    b: MatRef,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    parallel: bool,
) {
    if reads_b_in_place(&b, m) || n <= NC_PACK {
        // SAFETY: forwarded.
        return unsafe { gemm_block(isa, m, n, k, alpha, a, b, beta, c, ldc, parallel) };
    }
    // Several column blocks share A: pack it once.
    let packed;
    let a = match a {
        ASource::Raw(view) => {
            packed = PackedA::new(isa, m, k, *view);
            &ASource::Packed(&packed)
        }
        ASource::Packed(_) => a,
    };
    for j0 in (0..n).step_by(NC_PACK) {
        let cols = NC_PACK.min(n - j0);
        let b = MatRef {
            data: &b.data[j0 * b.cs..],
            ..b
        };
        // SAFETY: columns j0..j0+cols of the caller's C.
        unsafe { gemm_block(isa, m, cols, k, alpha, a, b, beta, c.add(j0), ldc, parallel) };
    }
}

/// The blocked product on raw C.
///
/// # Safety
/// As [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &ASource,
    b: MatRef,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    parallel: bool,
) {
    let uk = MicroKernel::for_isa(isa);
    let (mr, nr) = (uk.mr, uk.nr);
    let threads = rayon::current_num_threads();
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(nr));
    let kc_max = KC.min(k);
    // A row-major B is read in place: with few rows of A per call (conv weights) a
    // packed copy of B would be used too few times to pay for itself. Only the last,
    // partial panel is copied, zero-padded, so the kernel never reads past B.
    let direct_b = reads_b_in_place(&b, m);
    let packed_panels = if direct_b {
        usize::from(!n.is_multiple_of(nr))
    } else {
        np
    };
    let mut b_pack = vec![0.0f32; packed_panels * kc_max * nr];
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
    let c_ptr = SendPtr(c);

    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        let beta_p = if p0 == 0 { beta } else { 1.0 };
        let first_packed = np - packed_panels;
        let b_block = &mut b_pack[..packed_panels * kc * nr];
        let pack_b = |(q, panel): (usize, &mut [f32])| {
            let jp = first_packed + q;
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
                    pack_a_panel(*a, ip * mr, mr.min(m - ip * mr), p0, kc, mr, panel);
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
            for jp in jps {
                let (b_ptr, rsb) = if jp < first_packed {
                    (b.data[p0 * b.rs + jp * nr..].as_ptr(), b.rs)
                } else {
                    (b_block[(jp - first_packed) * kc * nr..].as_ptr(), nr)
                };
                for ip in ips.clone() {
                    let (i0, j0) = (ip * mr, jp * nr);
                    let tile = Tile {
                        kc,
                        a: a_block[ip * kc * mr..].as_ptr(),
                        b: b_ptr,
                        rsb,
                        // SAFETY: i0 < m and j0 < n, inside the caller's C.
                        c: unsafe { c_ptr.get().add(i0 * ldc + j0) },
                        rsc: ldc,
                        rows: mr.min(m - i0),
                        cols: nr.min(n - j0),
                        alpha,
                        beta: beta_p,
                    };
                    // SAFETY: the A panel holds kc·mr floats; the B panel kc rows of
                    // nr at stride rsb (a full in-place panel of a B that fits k×n,
                    // or a packed one); the tile's corner lies inside C; tasks own
                    // disjoint tiles; the kernel matches the checked `isa`.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writing every element through `set_column` gives the packing `new` makes, on
    /// every ISA: rows no multiple of the micro-kernel's, columns past one `KC` block.
    #[test]
    fn set_packs_as_new_does() {
        for isa in Isa::available() {
            for (m, k) in [(1, 1), (7, 5), (16, 16), (17, 300), (64, 576)] {
                let a: Vec<f32> = (0..m * k).map(|i| i as f32 + 0.5).collect();
                let want = PackedA::new(isa, m, k, MatRef::row_major(&a, k));
                let mut got = PackedA::zeroed(isa, m, k);
                for p in 0..k {
                    let column: Vec<f32> = (0..m).map(|i| a[i * k + p]).collect();
                    // Runs of 1, 2, 3, ... rows, some across a panel's edge.
                    let (mut i, mut len) = (0, 1);
                    while i < m {
                        let end = (i + len).min(m);
                        got.set_column(i, p, &column[i..end]);
                        (i, len) = (end, len + 1);
                    }
                }
                assert_eq!(got.data, want.data, "{isa} {m}×{k}");
            }
        }
    }
}
