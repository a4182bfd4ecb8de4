//! The strip layout of the Winograd conv (AVX-512): every tile's lanes are read and
//! written as whole vectors, with no per-lane copies.
//!
//! The tiled layout (`winograd.rs`) gives each of a vector's 16 lanes a tile and
//! gathers the lane's α×α window element by element, because on CIFAR-sized maps 16
//! tiles span several tile rows or images. That gather and the matching scatter of
//! the outputs took three quarters of a 16-channel F(4×4) conv, which then ran at
//! half the direct conv's speed.
//!
//! Here each band of `m` output rows (one tile row of one image) is laid out in a
//! *strip*: for each of the α input rows the band reads, the padded input row, in
//! segments of `seg` columns (a multiple of `m`, wide enough for the row, its
//! padding and the last tile's window), band after band. Tile slots then sit every
//! `m` columns along the whole strip, so 16 consecutive slots are one contiguous run
//! per row, and the α values of each slot are split into lanes by a few permutes
//! (a stride-`m` deinterleave) instead of 16·α scalar moves. Slots whose window starts
//! past the row's last tile are computed and dropped: `seg / m` slots per band for
//! `⌈wo / m⌉` tiles (9 for 8 on a 32-wide map, 5 for 4 on a 16-wide one). The outputs
//! come back the same way: interleaved into an output strip, then each band's rows
//! are stored with the epilogue as contiguous runs.

use super::conv_params::Conv2d;
#[cfg(target_arch = "x86_64")]
use super::conv_params::Epilogue;
#[cfg(target_arch = "x86_64")]
use super::winograd_transform::{Lanes, Transforms};

/// Slots in a vector group (one zmm of f32).
const LANES: usize = 16;

/// The strip geometry of one conv and tile size `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripGeometry {
    /// Outputs per tile side.
    pub m: usize,
    /// Inputs per tile side (m + r − 1 for an r × r filter).
    pub alpha: usize,
    /// Columns per band segment: a multiple of `m`.
    pub seg: usize,
    /// Tile slots per band (`seg / m`).
    pub slots: usize,
    /// Bands: images × tile rows.
    pub bands: usize,
    /// Tile rows per image.
    pub th: usize,
}

/// Tile slots per band of a strip: `seg / m` for the narrowest segment (a multiple of
/// `m`) that holds a padded input row of `w` columns (`pad` each side) and the
/// `alpha`-wide window of the last of the `⌈wo / m⌉` tiles. That window may run past
/// the segment only into the next segment's left padding, or into the zeroed tail
/// after the last band.
pub fn slots_per_band(w: usize, pad: usize, wo: usize, m: usize, alpha: usize) -> usize {
    let tw = wo.div_ceil(m).max(1);
    let need = (pad + w).max(((tw - 1) * m + alpha).saturating_sub(pad));
    // Every tile a slot, even where padding wider than the kernel makes the last
    // tiles' windows all padding.
    need.div_ceil(m).max(tw)
}

/// Whether strips beat the tiled layout for a row of `tiles` tiles in `slots` slots:
/// up to half as many slots again (ResNet-20's 8×8 maps, 3 slots for 2 tiles: F(4×4)
/// at batch 64 ran at 350 against 297 GFLOP/s, `cargo bench --bench jit_kernels`, its
/// `F(4x4)` and `F4 tiled` columns); a 1×1 or 4×4 map, 2 slots for 1 tile, keeps the
/// tiled layout.
pub fn strips_pay(slots: usize, tiles: usize) -> bool {
    2 * slots <= 3 * tiles
}

impl StripGeometry {
    /// The strip layout of `p` (stride 1, a square kernel) for tiles of `m` outputs.
    pub fn new(p: &Conv2d, (ho, wo): (usize, usize), m: usize) -> StripGeometry {
        let alpha = m + p.kw - 1;
        let slots = slots_per_band(p.w, p.pad.1, wo, m, alpha);
        let th = ho.div_ceil(m);
        StripGeometry {
            m,
            alpha,
            seg: slots * m,
            slots,
            bands: p.n * th,
            th,
        }
    }

    /// Every slot of the conv: what the chunks and GEMMs count.
    pub fn total_slots(&self) -> usize {
        self.bands * self.slots
    }

    /// The bands a chunk of `cnt` slots from slot `t0` touches: (first band, slots of
    /// it before `t0`, how many bands).
    pub fn chunk_bands(&self, t0: usize, cnt: usize) -> (usize, usize, usize) {
        let lead = t0 % self.slots;
        (t0 / self.slots, lead, (lead + cnt).div_ceil(self.slots))
    }

    /// Band `band`'s image and tile row.
    pub fn band_origin(&self, band: usize) -> (usize, usize) {
        (band / self.th, band % self.th)
    }

    /// Floats per strip row for a chunk of at most `pb` slots: its bands, and room for
    /// the last vector group's reads past the last slot.
    pub fn row_len(&self, pb: usize) -> usize {
        let bands = (self.slots - 1 + pb).div_ceil(self.slots);
        bands * self.seg + LANES * self.m + self.alpha
    }

    /// Floats of a chunk's strips: two of α rows, which alternate (the output's two
    /// strips of `m` rows fit in them too).
    pub fn strips_len(&self, pb: usize) -> usize {
        2 * self.alpha * self.row_len(pb)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    //! The AVX-512 kernels: input strips to transformed inputs, products to outputs.
    use std::arch::x86_64::*;

    use super::{Conv2d, Epilogue, Lanes, StripGeometry, Transforms, LANES};

    /// What the strip stages read and write for one chunk of slots.
    pub struct StripChunk<'a> {
        pub p: &'a Conv2d,
        pub g: &'a StripGeometry,
        pub ho: usize,
        pub wo: usize,
        /// First slot and slot count.
        pub t0: usize,
        pub cnt: usize,
        /// Columns of the chunk's transformed inputs and products (a multiple of 16).
        pub pb: usize,
    }

    /// `e[j][l] = run[m·l + j]` for `j < α`: the α values of 16 slots `m` apart,
    /// one vector each (`run` holds at least `16·m + α − m` floats). Values past the
    /// first `m` are those `m` before them in the slot after, one lane along.
    ///
    /// # Safety
    /// AVX-512F, and `run` readable for `16·m + α − m` floats.
    #[inline(always)]
    unsafe fn deinterleave<const A: usize, const M: usize>(run: *const f32) -> [__m512; A] {
        let mut e = [_mm512_setzero_ps(); A];
        if M == 4 {
            let l: [__m512; 4] = std::array::from_fn(|k| _mm512_loadu_ps(run.add(16 * k)));
            for (j, ej) in e.iter_mut().enumerate().take(4) {
                // Lanes 0..8 from the first 32 floats, 8..16 from the next 32.
                let idx = _mm512_setr_epi32(
                    j as i32,
                    4 + j as i32,
                    8 + j as i32,
                    12 + j as i32,
                    16 + j as i32,
                    20 + j as i32,
                    24 + j as i32,
                    28 + j as i32,
                    j as i32,
                    4 + j as i32,
                    8 + j as i32,
                    12 + j as i32,
                    16 + j as i32,
                    20 + j as i32,
                    24 + j as i32,
                    28 + j as i32,
                );
                let lo = _mm512_permutex2var_ps(l[0], idx, l[1]);
                let hi = _mm512_permutex2var_ps(l[2], idx, l[3]);
                *ej = _mm512_shuffle_f32x4::<0x44>(lo, hi);
            }
        } else {
            let l: [__m512; 2] = std::array::from_fn(|k| _mm512_loadu_ps(run.add(16 * k)));
            for (j, ej) in e.iter_mut().enumerate().take(2) {
                let idx = _mm512_setr_epi32(
                    j as i32,
                    2 + j as i32,
                    4 + j as i32,
                    6 + j as i32,
                    8 + j as i32,
                    10 + j as i32,
                    12 + j as i32,
                    14 + j as i32,
                    16 + j as i32,
                    18 + j as i32,
                    20 + j as i32,
                    22 + j as i32,
                    24 + j as i32,
                    26 + j as i32,
                    28 + j as i32,
                    30 + j as i32,
                );
                *ej = _mm512_permutex2var_ps(l[0], idx, l[1]);
            }
        }
        // The last α − m values of slot l are the first of slot l + 1; slot 15's come
        // from the float after the run.
        for j in M..A {
            let next = _mm512_set1_ps(*run.add(16 * M + j - M));
            e[j] = _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(next),
                _mm512_castps_si512(e[j - M]),
            ));
        }
        e
    }

    /// The inverse for `m` outputs per slot: `out[m·l + s] = y[s][l]`, 16·m floats.
    ///
    /// # Safety
    /// AVX-512F, and `out` writable for `16·m` floats.
    #[inline(always)]
    unsafe fn interleave<const M: usize>(y: &[__m512; M], out: *mut f32) {
        for k in 0..M {
            let idx: [i32; 16] = std::array::from_fn(|i| {
                // Lane i of output vector k is slot (16k + i) / m, value (16k + i) % m;
                // its value index picks the source below.
                let (slot, s) = ((16 * k + i) / M, (16 * k + i) % M);
                (slot as i32) + 16 * (s % 2) as i32
            });
            let idx = _mm512_loadu_si512(idx.as_ptr().cast());
            let v = if M == 4 {
                let lo = _mm512_permutex2var_ps(y[0], idx, y[1]);
                let hi = _mm512_permutex2var_ps(y[2], idx, y[3]);
                // Values 2 and 3 of each slot (lanes i with i % 4 ≥ 2) from `hi`.
                _mm512_mask_blend_ps(0xCCCC, lo, hi)
            } else {
                _mm512_permutex2var_ps(y[0], idx, y[1])
            };
            _mm512_storeu_ps(out.add(16 * k), v);
        }
    }

    /// `e[j][l] = run[4l + j]` for `j < 4`: the first level gathers slots 0–7 and
    /// 8–15 of values (0, 1) and (2, 3) into one vector each, the second joins their
    /// halves (8 permutes where [`deinterleave`] takes 12).
    ///
    /// # Safety
    /// AVX-512F, and `run` readable for 64 floats.
    #[inline(always)]
    unsafe fn split_f4(run: *const f32) -> [__m512; 4] {
        let l: [__m512; 4] = std::array::from_fn(|k| _mm512_loadu_ps(run.add(16 * k)));
        // Lanes 0..8: value j of slots 0..8; lanes 8..16: value j + 1.
        let pair = |j: i32| {
            _mm512_setr_epi32(
                j,
                4 + j,
                8 + j,
                12 + j,
                16 + j,
                20 + j,
                24 + j,
                28 + j,
                j + 1,
                5 + j,
                9 + j,
                13 + j,
                17 + j,
                21 + j,
                25 + j,
                29 + j,
            )
        };
        let (i01, i23) = (pair(0), pair(2));
        let (a, b) = (
            _mm512_permutex2var_ps(l[0], i01, l[1]),
            _mm512_permutex2var_ps(l[0], i23, l[1]),
        );
        let (c, d) = (
            _mm512_permutex2var_ps(l[2], i01, l[3]),
            _mm512_permutex2var_ps(l[2], i23, l[3]),
        );
        [
            _mm512_shuffle_f32x4::<0x44>(a, c),
            _mm512_shuffle_f32x4::<0xEE>(a, c),
            _mm512_shuffle_f32x4::<0x44>(b, d),
            _mm512_shuffle_f32x4::<0xEE>(b, d),
        ]
    }

    /// [`deinterleave`] for `m = 4`, `α = 6`: [`split_f4`], then the last two values
    /// of slot l, which are the first two of slot l + 1.
    ///
    /// # Safety
    /// AVX-512F, and `run` readable for 66 floats.
    #[inline(always)]
    unsafe fn deinterleave_f4(run: *const f32) -> [__m512; 6] {
        let [e0, e1, e2, e3] = split_f4(run);
        let shift = |e: __m512, next: f32| {
            _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(_mm512_set1_ps(next)),
                _mm512_castps_si512(e),
            ))
        };
        [
            e0,
            e1,
            e2,
            e3,
            shift(e0, *run.add(64)),
            shift(e1, *run.add(65)),
        ]
    }

    /// F(4×4, 3×3)'s output-gradient transform `A dY Aᵀ` of one group of 16 slots on
    /// zmm registers: the four rows from `run` (`len` apart) split by [`split_f4`],
    /// lanes outside `keep` zeroed, each row then each column transformed, `Ŷ[ξ]`
    /// stored at `dst + ξ·plane`.
    ///
    /// # Safety
    /// AVX-512F; each row of `run` readable for 64 floats; `dst` writable at the 36
    /// planes.
    #[inline(always)]
    unsafe fn dy_group_f4(
        run: *const f32,
        len: usize,
        keep: __mmask16,
        mut dst: *mut f32,
        plane: usize,
    ) {
        let rows: [[__m512; 6]; 4] = std::array::from_fn(|r| {
            let e = split_f4(run.add(r * len));
            output_t_1d_f4(e.map(|v| _mm512_maskz_mov_ps(keep, v)))
        });
        let columns: [[__m512; 4]; 6] =
            std::array::from_fn(|y| std::array::from_fn(|r| rows[r][y]));
        for column in columns {
            for (x, val) in output_t_1d_f4(column).into_iter().enumerate() {
                _mm512_storeu_ps(dst.add(x * 6 * plane), val);
            }
            dst = dst.add(plane);
        }
    }

    /// `winograd_transform::output_t_1d_f4` on zmm registers, with fused
    /// multiply-adds.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn output_t_1d_f4(m: [__m512; 4]) -> [__m512; 6] {
        let (two, four, eight) = (
            _mm512_set1_ps(2.0),
            _mm512_set1_ps(4.0),
            _mm512_set1_ps(8.0),
        );
        let (e, o) = (_mm512_add_ps(m[0], m[2]), _mm512_add_ps(m[1], m[3]));
        let e2 = _mm512_fmadd_ps(m[2], four, m[0]);
        let o2 = _mm512_fmadd_ps(m[3], eight, _mm512_mul_ps(m[1], two));
        [
            m[0],
            _mm512_add_ps(e, o),
            _mm512_sub_ps(e, o),
            _mm512_add_ps(e2, o2),
            _mm512_sub_ps(e2, o2),
            m[3],
        ]
    }

    /// F(4×4, 3×3)'s input transform of one group of 16 slots, on zmm registers: the
    /// six rows from `run` (`len` apart) split by [`deinterleave_f4`] and transformed,
    /// then each column, `V[ξ]` stored at `dst + ξ·plane`. Each 1-D transform uses
    /// fused multiply-adds and each address is a step of one plane; the generic code
    /// on `[f32; 16]` kept its 36 addresses on the stack. ResNet-20's first-stage conv
    /// at batch 64 went from 1.30–1.62 to 1.05–1.11 ms (`cargo bench --bench
    /// jit_kernels -- conv 64 16 32 32 20`, three runs of each, minutes apart).
    ///
    /// # Safety
    /// AVX-512F; each row of `run` readable for 66 floats; `dst` writable at the 36
    /// planes.
    #[inline(always)]
    unsafe fn in_group_f4(run: *const f32, len: usize, mut dst: *mut f32, plane: usize) {
        let mut rows = [[_mm512_setzero_ps(); 6]; 6];
        for (i, row) in rows.iter_mut().enumerate() {
            *row = input_1d_f4(deinterleave_f4(run.add(i * len)));
        }
        let columns: [[__m512; 6]; 6] =
            std::array::from_fn(|y| std::array::from_fn(|i| rows[i][y]));
        for column in columns {
            for (x, val) in input_1d_f4(column).into_iter().enumerate() {
                _mm512_storeu_ps(dst.add(x * 6 * plane), val);
            }
            dst = dst.add(plane);
        }
    }

    /// F(4×4, 3×3)'s output transform of one group of 16 slots on zmm registers: the
    /// products `M[ξ]` from `src + ξ·plane`, each row then each column transformed,
    /// and the four output rows interleaved into `out` (`len` apart) by
    /// [`interleave_f4`].
    ///
    /// # Safety
    /// AVX-512F; `src` readable at the 36 planes; each row of `out` writable for 64
    /// floats.
    #[inline(always)]
    unsafe fn out_group_f4(src: *const f32, plane: usize, out: *mut f32, len: usize) {
        let mut rows = [[_mm512_setzero_ps(); 4]; 6];
        let mut at = src;
        for row in rows.iter_mut() {
            *row = output_1d_f4(std::array::from_fn(|y| _mm512_loadu_ps(at.add(y * plane))));
            at = at.add(6 * plane);
        }
        // y[q][r]: output row r, column q of each slot.
        let y: [[__m512; 4]; 4] =
            std::array::from_fn(|q| output_1d_f4(std::array::from_fn(|x| rows[x][q])));
        let out_rows: [[__m512; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|q| y[q][r]));
        for (r, vals) in out_rows.into_iter().enumerate() {
            interleave_f4(vals, out.add(r * len));
        }
    }

    /// [`interleave`] for `m = 4`: `out[4l + s] = y[s][l]`, the inverse of
    /// [`deinterleave_f4`]'s first four values.
    ///
    /// # Safety
    /// AVX-512F; `out` writable for 64 floats.
    #[inline(always)]
    unsafe fn interleave_f4(y: [__m512; 4], out: *mut f32) {
        // Slots 0..8 of values (0, 1) and (2, 3), then slots 8..16.
        let (a, b) = (
            _mm512_shuffle_f32x4::<0x44>(y[0], y[1]),
            _mm512_shuffle_f32x4::<0x44>(y[2], y[3]),
        );
        let (c, d) = (
            _mm512_shuffle_f32x4::<0xEE>(y[0], y[1]),
            _mm512_shuffle_f32x4::<0xEE>(y[2], y[3]),
        );
        for (k, (lo, hi)) in [(a, b), (a, b), (c, d), (c, d)].into_iter().enumerate() {
            // Lane 4i + s of output vector k: slot 4(k % 2) + i of value s, at lane
            // (s % 2)·8 + slot of `lo` (s < 2) or of `hi` (index + 16).
            let idx: [i32; 16] = std::array::from_fn(|lane| {
                let (i, s) = (lane / 4, lane % 4);
                let slot = 4 * (k % 2) + i;
                ((s % 2) * 8 + slot + 16 * (s / 2)) as i32
            });
            let idx = _mm512_loadu_si512(idx.as_ptr().cast());
            _mm512_storeu_ps(out.add(16 * k), _mm512_permutex2var_ps(lo, idx, hi));
        }
    }

    /// `winograd_transform::output_1d_f4` on zmm registers, with fused
    /// multiply-adds.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn output_1d_f4(m: [__m512; 6]) -> [__m512; 4] {
        let (two, four, eight) = (
            _mm512_set1_ps(2.0),
            _mm512_set1_ps(4.0),
            _mm512_set1_ps(8.0),
        );
        let (s1, d1) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        let (s2, d2) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], s1), s2),
            _mm512_fmadd_ps(d2, two, d1),
            _mm512_fmadd_ps(s2, four, s1),
            _mm512_add_ps(_mm512_fmadd_ps(d2, eight, d1), m[5]),
        ]
    }

    /// `winograd_transform::input_1d_f4` on zmm registers, with fused multiply-adds.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn input_1d_f4(d: [__m512; 6]) -> [__m512; 6] {
        let (two, four, five) = (
            _mm512_set1_ps(2.0),
            _mm512_set1_ps(4.0),
            _mm512_set1_ps(5.0),
        );
        let (p, q) = (_mm512_sub_ps(d[4], d[2]), _mm512_sub_ps(d[3], d[1]));
        [
            _mm512_fmadd_ps(d[0], four, _mm512_fnmadd_ps(d[2], five, d[4])),
            _mm512_fnmadd_ps(_mm512_add_ps(d[1], d[2]), four, _mm512_add_ps(d[3], d[4])),
            _mm512_fmadd_ps(_mm512_sub_ps(d[1], d[2]), four, _mm512_sub_ps(d[4], d[3])),
            _mm512_fmadd_ps(q, two, p),
            _mm512_fnmadd_ps(q, two, p),
            _mm512_fmadd_ps(d[1], four, _mm512_fnmadd_ps(d[3], five, d[5])),
        ]
    }

    #[inline(always)]
    fn to_lanes(v: __m512) -> Lanes {
        // SAFETY: both are 64 bytes of f32.
        Lanes(unsafe { std::mem::transmute::<__m512, [f32; 16]>(v) })
    }

    #[inline(always)]
    fn from_lanes(v: Lanes) -> __m512 {
        // SAFETY: as above.
        unsafe { std::mem::transmute::<[f32; 16], __m512>(v.0) }
    }

    /// `dst = src` then zeros up to `dst.len()`, by vectors (rows are 8–70 floats:
    /// a libc call each cost a tenth of the conv).
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn copy_then_zero(dst: &mut [f32], src: &[f32]) {
        assert!(src.len() <= dst.len());
        let (d, n, total) = (dst.as_mut_ptr(), src.len(), dst.len());
        let mut i = 0;
        while i + LANES <= n {
            _mm512_storeu_ps(d.add(i), _mm512_loadu_ps(src.as_ptr().add(i)));
            i += LANES;
        }
        if i < n {
            let k: __mmask16 = (1 << (n - i)) - 1;
            _mm512_mask_storeu_ps(d.add(i), k, _mm512_maskz_loadu_ps(k, src.as_ptr().add(i)));
            i = n;
        }
        while i < total {
            let k: __mmask16 = if total - i >= LANES {
                0xFFFF
            } else {
                (1 << (total - i)) - 1
            };
            _mm512_mask_storeu_ps(d.add(i), k, _mm512_setzero_ps());
            i += LANES;
        }
    }

    /// `strip[at..at + w] = src[from..from + w]` for each `(at, from)` of `rows`
    /// ([`StripChunk::input_rows`], [`StripChunk::dy_rows`]; `src` starts at the
    /// channel's plane).
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn copy_rows(strip: &mut [f32], rows: &[(usize, usize)], src: &[f32], w: usize) {
        for &(at, from) in rows {
            copy_then_zero(&mut strip[at..at + w], &src[from..from + w]);
        }
    }

    impl<'a> StripChunk<'a> {
        /// The chunk of `cnt` slots from slot `t0` of the conv `p` (output `ho × wo`)
        /// in the strips `g`, its buffers `pb` columns apart.
        pub fn new(
            p: &'a Conv2d,
            g: &'a StripGeometry,
            (ho, wo): (usize, usize),
            (t0, cnt): (usize, usize),
            pb: usize,
        ) -> StripChunk<'a> {
            StripChunk {
                p,
                g,
                ho,
                wo,
                t0,
                cnt,
                pb,
            }
        }

        /// Where the chunk's input strip takes its rows from: `(offset in the strip,
        /// offset in the input's channel 0)` for each row of each band that lies
        /// inside the input, a row of `w` floats. The strip's other floats (padding
        /// columns and rows, the tail) are the same zeros for every channel, so
        /// [`Self::transform_in`] writes them once per chunk and each channel copies
        /// only these rows. Refilling the whole strip per channel, with two divisions
        /// per band and row, was the transforms' hottest code under `perf`; without it
        /// ResNet-20's training step at batch 64 went from 75.7 to 70.8 ms and its
        /// forward from 18.4 to 16.8 ms (`jit_profile`, interleaved, best of 8).
        fn input_rows(&self) -> Vec<(usize, usize)> {
            let (p, g) = (self.p, self.g);
            let len = g.row_len(self.pb);
            let (band0, _, nb) = g.chunk_bands(self.t0, self.cnt);
            let mut rows = Vec::with_capacity(g.alpha * nb);
            for i in 0..g.alpha {
                for k in 0..nb {
                    let (b, ty) = g.band_origin(band0 + k);
                    let y = (ty * g.m + i) as isize - p.pad.0 as isize;
                    if (0..p.h as isize).contains(&y) {
                        let at = i * len + k * g.seg + p.pad.1;
                        rows.push((at, (b * p.ci * p.h + y as usize) * p.w));
                    }
                }
            }
            rows
        }

        /// Asks for the input rows that `copy_rows` reads for channel `c` in the
        /// chunk's bands `ks`: each band's first `m` rows, the chunk's last band's all
        /// `α` (the rows a band shares with the next are asked for once).
        ///
        /// # Safety
        /// AVX-512F.
        #[inline(always)]
        unsafe fn prefetch_rows(&self, input: &[f32], c: usize, ks: std::ops::Range<usize>) {
            let (p, g) = (self.p, self.g);
            let (band0, _, nb) = g.chunk_bands(self.t0, self.cnt);
            for k in ks {
                let band = band0 + k;
                let (b, ty) = g.band_origin(band);
                let own = if k + 1 == nb { g.alpha } else { g.m };
                let y0 = (ty * g.m).saturating_sub(p.pad.0);
                let y1 = (ty * g.m + own).saturating_sub(p.pad.0).min(p.h);
                if y0 >= y1 {
                    continue;
                }
                let rows = &input[((b * p.ci + c) * p.h + y0) * p.w..][..(y1 - y0) * p.w];
                let mut line = rows.as_ptr();
                while line < rows.as_ptr_range().end {
                    _mm_prefetch::<_MM_HINT_T0>(line.cast());
                    line = line.wrapping_add(16);
                }
            }
        }

        /// Step 1: `V[ξ][c][slot]` for the chunk's slots, from `input` (`[n, ci, h, w]`),
        /// by rows first as each is split into lanes,
        /// then columns, so only one α × α group is live.
        ///
        /// # Safety
        /// AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn transform_in<T: Transforms<A, M>, const A: usize, const M: usize>(
            &self,
            input: &[f32],
            strip: &mut [f32],
            v: &mut [f32],
        ) {
            let (p, g, pb) = (self.p, self.g, self.pb);
            let len = g.row_len(pb);
            let (_, lead, nb) = g.chunk_bands(self.t0, self.cnt);
            assert!(strip.len() >= 2 * A * len && v.len() >= A * A * p.ci * pb);
            let plane = p.ci * pb;
            // Two strips: channel c + 1's is filled before channel c's is read, so the
            // reads, which straddle the fill's stores, never wait on them in the store
            // buffer (a failed store-to-load forward on every read cost a third).
            let (even, odd) = strip.split_at_mut(A * len);
            copy_then_zero(even, &[]);
            copy_then_zero(&mut odd[..A * len], &[]);
            let rows = self.input_rows();
            let chan = p.h * p.w;
            if p.ci > 0 {
                copy_rows(even, &rows, input, p.w);
            }
            for c in 0..p.ci {
                let (cur, next) = if c % 2 == 0 {
                    (&*even, &mut *odd)
                } else {
                    (&*odd, &mut *even)
                };
                if c + 1 < p.ci {
                    copy_rows(next, &rows, &input[(c + 1) * chan..], p.w);
                }
                // Channel c + 2's rows, a share of the bands per lane group. A training
                // step reads the forward's activations back from memory, and each
                // channel's plane is a page the hardware prefetcher starts on anew;
                // all of a channel's lines asked for at once filled the miss buffers
                // and stalled. Cold input, stage-1 conv at batch 64 (`cargo bench
                // --bench jit_kernels -- cold 64 16 32 32 24`): 1.40 → 1.27 ms.
                let groups = self.cnt.div_ceil(LANES);
                for (j, s) in (0..self.cnt).step_by(LANES).enumerate() {
                    if c + 2 < p.ci {
                        let ks = j * nb / groups..(j + 1) * nb / groups;
                        self.prefetch_rows(input, c + 2, ks);
                    }
                    let col = (lead + s) * M;
                    if A == 6 && M == 4 {
                        // F(4×4, 3×3), the only variant with α = 6 and m = 4, has its
                        // own code. In bounds: as below.
                        in_group_f4(
                            cur.as_ptr().add(col),
                            len,
                            v.as_mut_ptr().add(c * pb + s),
                            plane,
                        );
                        continue;
                    }
                    // rows[i] = (d B)[i]: each input row transformed as it is split.
                    let rows: [[Lanes; A]; A] = std::array::from_fn(|i| {
                        // In bounds: col + 16·m + α − m ≤ row_len (see `row_len`).
                        let e = deinterleave::<A, M>(cur.as_ptr().add(i * len + col));
                        T::input_1d(std::array::from_fn(|j| to_lanes(e[j])))
                    });
                    let base = v.as_mut_ptr().add(c * pb + s);
                    let columns: [[Lanes; A]; A] =
                        std::array::from_fn(|y| std::array::from_fn(|i| rows[i][y]));
                    // Column y's point x at base + (x·α + y)·plane: one pointer stepped
                    // a plane per column.
                    let mut dst = base;
                    for column in columns {
                        for (x, val) in T::input_1d(column).into_iter().enumerate() {
                            // In bounds: asserted above.
                            _mm512_storeu_ps(dst.add(x * A * plane), from_lanes(val));
                        }
                        dst = dst.add(plane);
                    }
                }
            }
        }

        /// [`Self::input_rows`] for the output-gradient strip: `(offset in the strip,
        /// offset in `dY`'s channel 0)` for each of a band's `m` rows inside the
        /// output, a row of `wo` floats from the segment's column 0. The rest (columns
        /// past `wo`, rows below the last output row, the tail) stays zero, so a
        /// slot's `m × m` block is `dY`'s tile, zero where it hangs over the edge.
        fn dy_rows(&self) -> Vec<(usize, usize)> {
            let (p, g, ho, wo) = (self.p, self.g, self.ho, self.wo);
            let len = g.row_len(self.pb);
            let (band0, _, nb) = g.chunk_bands(self.t0, self.cnt);
            let mut rows = Vec::with_capacity(g.m * nb);
            for r in 0..g.m {
                for k in 0..nb {
                    let (b, ty) = g.band_origin(band0 + k);
                    let y = ty * g.m + r;
                    if y < ho {
                        rows.push((r * len + k * g.seg, (b * p.co * ho + y) * wo));
                    }
                }
            }
            rows
        }

        /// The filter gradient's other operand: `Ŷ[ξ][o][slot] = (A dY Aᵀ)[ξ]` for the
        /// chunk's slots, from `dy` (`[n, co, ho, wo]`), each `m`-row band split into
        /// lanes by the same deinterleave as the inputs. Lanes past the chunk's last
        /// slot are zero: they hold the next chunk's tiles, which it sums itself.
        ///
        /// # Safety
        /// AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn transform_dy<T: Transforms<A, M>, const A: usize, const M: usize>(
            &self,
            dy: &[f32],
            strip: &mut [f32],
            yt: &mut [f32],
        ) {
            let (p, g, pb) = (self.p, self.g, self.pb);
            let len = g.row_len(pb);
            let (_, lead, _) = g.chunk_bands(self.t0, self.cnt);
            assert!(strip.len() >= 2 * M * len && yt.len() >= A * A * p.co * pb);
            assert!(g.seg >= self.wo);
            let plane = p.co * pb;
            // Two strips, for the reason `transform_in` gives.
            let (even, odd) = strip.split_at_mut(M * len);
            copy_then_zero(even, &[]);
            copy_then_zero(&mut odd[..M * len], &[]);
            let rows = self.dy_rows();
            if p.co > 0 {
                copy_rows(even, &rows, dy, self.wo);
            }
            for o in 0..p.co {
                let (cur, next) = if o % 2 == 0 {
                    (&*even, &mut *odd)
                } else {
                    (&*odd, &mut *even)
                };
                if o + 1 < p.co {
                    copy_rows(next, &rows, &dy[(o + 1) * self.ho * self.wo..], self.wo);
                }
                for s in (0..self.cnt).step_by(LANES) {
                    let col = (lead + s) * M;
                    let left = self.cnt - s;
                    let keep: __mmask16 = if left >= LANES {
                        0xFFFF
                    } else {
                        (1 << left) - 1
                    };
                    if A == 6 && M == 4 {
                        // F(4×4, 3×3), the only variant with α = 6 and m = 4, has its
                        // own code. In bounds: as below.
                        let (run, dst) = (cur.as_ptr().add(col), yt.as_mut_ptr().add(o * pb + s));
                        dy_group_f4(run, len, keep, dst, plane);
                        continue;
                    }
                    // rows[r] = (dY Aᵀ)[r]: each row of the blocks transformed as it is
                    // split.
                    let rows: [[Lanes; A]; M] = std::array::from_fn(|r| {
                        // In bounds: col + 16·m ≤ row_len (see `row_len`).
                        let e = deinterleave::<M, M>(cur.as_ptr().add(r * len + col));
                        T::output_t_1d(std::array::from_fn(|j| {
                            to_lanes(_mm512_maskz_mov_ps(keep, e[j]))
                        }))
                    });
                    let base = yt.as_mut_ptr().add(o * pb + s);
                    let columns: [[Lanes; M]; A] =
                        std::array::from_fn(|y| std::array::from_fn(|r| rows[r][y]));
                    // Column y's point x at base + (x·α + y)·plane: one pointer stepped
                    // a plane per column.
                    let mut dst = base;
                    for column in columns {
                        for (x, val) in T::output_t_1d(column).into_iter().enumerate() {
                            // In bounds: asserted above.
                            _mm512_storeu_ps(dst.add(x * A * plane), from_lanes(val));
                        }
                        dst = dst.add(plane);
                    }
                }
            }
        }

        /// Step 3: `Y = Aᵀ M A` from the products `mm` (`[ξ][co][pb]`), stored with the
        /// epilogue through `out` (the whole output, `[n, co, ho, wo]`).
        ///
        /// # Safety
        /// AVX-512F; `out` points at `n·co·ho·wo` floats of which this chunk's tiles
        /// are written by no one else.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn transform_out<T: Transforms<A, M>, const A: usize, const M: usize>(
            &self,
            mm: &[f32],
            strip: &mut [f32],
            epi: &Epilogue,
            out: *mut f32,
        ) {
            let (p, g, pb) = (self.p, self.g, self.pb);
            let len = g.row_len(pb);
            let (_, lead, _) = g.chunk_bands(self.t0, self.cnt);
            assert!(strip.len() >= 2 * M * len && mm.len() >= A * A * p.co * pb);
            let plane = p.co * pb;
            // Two strips, for the reason `transform_in` gives: channel o's is stored
            // out after channel o + 1's is written.
            let (even, odd) = strip.split_at_mut(M * len);
            let rows = self.output_rows();
            for o in 0..=p.co {
                let (cur, prev) = if o % 2 == 0 {
                    (&mut *even, &*odd)
                } else {
                    (&mut *odd, &*even)
                };
                if o > 0 {
                    self.store_out(o - 1, prev, &rows, epi, out);
                }
                if o == p.co {
                    break;
                }
                for s in (0..self.cnt).step_by(LANES) {
                    let col = (lead + s) * M;
                    let base = mm.as_ptr().add(o * pb + s);
                    if A == 6 && M == 4 {
                        // F(4×4, 3×3), the only variant with α = 6 and m = 4, has its
                        // own code. In bounds: as below.
                        out_group_f4(base, plane, cur.as_mut_ptr().add(col), len);
                        continue;
                    }
                    // rows[x] = (M A)[x]: row x of the products, transformed.
                    let rows: [[Lanes; M]; A] = std::array::from_fn(|x| {
                        let at = base.add(x * A * plane);
                        T::output_1d(std::array::from_fn(|y| {
                            // In bounds: asserted above.
                            to_lanes(_mm512_loadu_ps(at.add(y * plane)))
                        }))
                    });
                    let y: [[Lanes; M]; M] =
                        std::array::from_fn(|q| T::output_1d(std::array::from_fn(|x| rows[x][q])));
                    // y[q][r] is output row r, column q of each slot.
                    let out_rows: [[__m512; M]; M] =
                        std::array::from_fn(|r| std::array::from_fn(|q| from_lanes(y[q][r])));
                    for (r, vals) in out_rows.iter().enumerate() {
                        // In bounds: col + 16·m ≤ row_len.
                        interleave::<M>(vals, cur.as_mut_ptr().add(r * len + col));
                    }
                }
            }
        }

        /// Where the chunk's output rows go, cropped: `(offset in the output strip,
        /// offset in the output's channel 0, floats)` for each of a band's `m` rows
        /// inside the output, worked out once a chunk as [`Self::input_rows`] is.
        fn output_rows(&self) -> Vec<(usize, usize, usize)> {
            let (p, g, ho, wo) = (self.p, self.g, self.ho, self.wo);
            let (m, len) = (g.m, g.row_len(self.pb));
            let (band0, _, nb) = g.chunk_bands(self.t0, self.cnt);
            let mut rows = Vec::with_capacity(m * nb);
            for k in 0..nb {
                let band = band0 + k;
                let (b, ty) = g.band_origin(band);
                let first = (band * g.slots).max(self.t0);
                let last = ((band + 1) * g.slots).min(self.t0 + self.cnt);
                let x0 = (first - band * g.slots) * m;
                let x1 = ((last - band * g.slots) * m).min(wo);
                if x0 >= x1 {
                    continue;
                }
                for r in 0..m.min(ho - ty * m) {
                    let at = ((b * p.co * ho) + ty * m + r) * wo + x0;
                    rows.push((r * len + k * g.seg + x0, at, x1 - x0));
                }
            }
            rows
        }

        /// Channel `o`'s rows ([`Self::output_rows`]) from its output `strip`, as
        /// contiguous runs with the epilogue.
        ///
        /// # Safety
        /// As `transform_out`.
        #[inline(always)]
        unsafe fn store_out(
            &self,
            o: usize,
            strip: &[f32],
            rows: &[(usize, usize, usize)],
            epi: &Epilogue,
            out: *mut f32,
        ) {
            let channel = o * self.ho * self.wo;
            for &(from, at, n) in rows {
                let at = channel + at;
                // SAFETY: inside the output (the caller's promise covers every tile of
                // the chunk), and these outputs are this chunk's alone.
                let dst = std::slice::from_raw_parts_mut(out.add(at), n);
                epi.store_channel(dst, &strip[from..from + n], o, at);
            }
        }
    }
}
