//! The filter gradient of a 3×3 or 5×5 stride-1 conv by Winograd F(m×m, r×r).
//!
//! The forward reads the filter only through `U = G g Gᵀ`, and a tile's outputs are
//! `Y = Aᵀ (U ⊙ V) A` with `V = Bᵀ d B`; the loss is linear in each, so the gradient
//! of one filter is `dg = Gᵀ [Σ_tiles (A dY Aᵀ) ⊙ V] G`. Per transform point `ξ` the
//! sum over tiles is one GEMM, `M[ξ] = Ŷ[ξ] · V[ξ]ᵀ` (`[co, tiles] × [tiles, ci]`),
//! and the `Gᵀ · G` at the end runs once per filter. Against sliding windows that is
//! α²/(m²r²) of the multiplies: a quarter for F(4×4, 3×3), 0.44 for F(2×2, 3×3).
//!
//! Tiles go in chunks (`winograd::chunking_by`: the forward's, but at least
//! [`MIN_CHUNK`] tiles), in the forward's layout: each chunk transforms its input
//! windows (the forward's code, `winograd_tiles` or `winograd_strip`) and its
//! output-gradient tiles (in strips: each band of `dY` rows split into lanes as the
//! inputs are) into buffers of its thread, then adds
//! its α² products into its thread's sums. Chunks are dealt to a fixed number of
//! groups, one sum each, added in group order: the result does not depend on how
//! rayon schedules them.

use rayon::prelude::*;

use super::conv_params::{Conv2d, ConvError, Epilogue};
use super::isa::{Isa, IsaKind};
use super::scratch::with_scratch;
use super::winograd::{chunk_tiles, chunking_by, winograd_applies, WinogradLayout};
use super::winograd_filter_transform::filter_gradient_transform;
use super::winograd_strip::StripGeometry;
use super::winograd_tiles::{transform_in, TileGrid};
use super::winograd_transform::{Lanes, Transforms, WinogradTile, F2, F2K5, F4, F4K5, LANES};

/// `dw = Σ_n dY ⋆ x` (the weight gradient `[co, ci, r, r]` of the conv `p`, its input
/// `x` and its output gradient `dy`) by the Winograd variant `tile`, in the layout the
/// forward would take ([`WinogradLayout::auto`]).
pub fn conv2d_backward_filter_winograd(
    isa: Isa,
    tile: WinogradTile,
    p: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), ConvError> {
    let layout = WinogradLayout::auto(isa, p, tile);
    conv2d_backward_filter_winograd_in(layout, isa, tile, p, x, dy, dw)
}

/// [`conv2d_backward_filter_winograd`] in a given layout (strips need AVX-512).
pub fn conv2d_backward_filter_winograd_in(
    layout: WinogradLayout,
    isa: Isa,
    tile: WinogradTile,
    p: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), ConvError> {
    winograd_applies(p)?;
    if layout == WinogradLayout::Strips && isa.kind() != IsaKind::Avx512 {
        return Err(ConvError::NotWinograd(format!(
            "the strip layout needs AVX-512, not {isa}"
        )));
    }
    if tile.kernel() != p.kh {
        return Err(ConvError::NotWinograd(format!(
            "F({m}×{m}, {r}×{r}) for a {k}×{k} kernel",
            m = tile.m(),
            r = tile.kernel(),
            k = p.kh
        )));
    }
    let (ho, wo) = p.check(x.len(), dw.len(), dy.len(), &Epilogue::default())?;
    let m = tile.m();
    let (th, tw) = (ho.div_ceil(m), wo.div_ceil(m));
    let strip = (layout == WinogradLayout::Strips).then(|| StripGeometry::new(p, (ho, wo), m));
    let tiles = strip.map_or(p.n * th * tw, |g| g.total_slots());
    let (a2, ci, co) = (tile.alpha().pow(2), p.ci, p.co);
    if tiles == 0 || ci == 0 || co == 0 {
        dw.fill(0.0);
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let plan = chunking_by(tiles, chunk_tiles(a2, ci, co).max(MIN_CHUNK), threads);
    let pb = plan.stride;
    let grid = TileGrid {
        p,
        th,
        tw,
        pb,
        input: x,
    };
    let ctx = Ctx {
        isa,
        tile,
        grid,
        dy,
        ho,
        wo,
        tiles,
        per: plan.per,
        strip,
    };
    let groups = threads.min(plan.chunks).max(1);
    let one = a2 * co * ci;
    let mut sums = vec![0.0f32; groups * one];
    let (v_len, y_len) = (a2 * ci * pb, a2 * co * pb);
    let strip_len = strip.map_or(0, |g| g.strips_len(pb));
    sums.par_chunks_mut(one).enumerate().for_each(|(g, acc)| {
        with_scratch(v_len + y_len + strip_len, |buf| {
            let (v, rest) = buf.split_at_mut(v_len);
            let (yt, s) = rest.split_at_mut(y_len);
            for q in (g..plan.chunks).step_by(groups) {
                ctx.chunk(q * plan.per, v, yt, s, acc);
            }
        })
    });
    let (total, rest) = sums.split_at_mut(one);
    for part in rest.chunks_exact(one) {
        total.iter_mut().zip(part).for_each(|(t, v)| *t += v);
    }
    filter_gradient_transform(isa, tile, total, dw);
    Ok(())
}

/// Tiles a chunk at least. [`products`] sums each block of its dot products across
/// the lanes once a chunk, about as many instructions as 64 tiles' multiply-adds, so
/// with the forward's chunks (64 tiles on ResNet-20's 64-channel stage, where the
/// transformed operands fill half of L2) those sums were, by instruction count, about
/// a third of the products. At 256 tiles the operands spill to L3, which costs less:
/// `cargo bench --bench jit_kernels -- dw 64 C H W 100` at batch 64, effective GFLOP/s
/// over three interleaved runs, 64 channels 8×8 F(2×2) 225–232 → 250–255 and F(4×4)
/// 229–240 → 309–324, 32 channels 16×16 F(4×4) 258–266 → 343–347, the 16-channel
/// stage unchanged.
pub const MIN_CHUNK: usize = 256;

struct Ctx<'a> {
    isa: Isa,
    tile: WinogradTile,
    grid: TileGrid<'a>,
    dy: &'a [f32],
    ho: usize,
    wo: usize,
    /// Tiles, or slots in the strip layout.
    tiles: usize,
    per: usize,
    strip: Option<StripGeometry>,
}

impl Ctx<'_> {
    /// Tiles `t0 .. t0 + per` (fewer at the end): both transforms, then `acc[ξ] +=
    /// Ŷ[ξ] · V[ξ]ᵀ`.
    fn chunk(&self, t0: usize, v: &mut [f32], yt: &mut [f32], strip: &mut [f32], acc: &mut [f32]) {
        let cnt = self.per.min(self.tiles - t0);
        let (isa, grid) = (self.isa, &self.grid);
        macro_rules! both {
            ($t:ty, $a:literal, $m:literal) => {{
                match &self.strip {
                    Some(g) => self.strips::<$t, $a, $m>(g, t0, cnt, v, yt, strip),
                    None => {
                        transform_in::<$t, $a, $m>(isa, grid, t0, cnt, v);
                        self.transform_dy::<$t, $a, $m>(t0, cnt, yt);
                    }
                }
            }};
        }
        match self.tile {
            WinogradTile::F2 => both!(F2, 4, 2),
            WinogradTile::F4 => both!(F4, 6, 4),
            WinogradTile::F2K5 => both!(F2K5, 6, 2),
            WinogradTile::F4K5 => both!(F4K5, 8, 4),
        }
        let (ci, co, pb) = (grid.p.ci, grid.p.co, grid.pb);
        let n = cnt.next_multiple_of(LANES);
        for (xi, c) in acc.chunks_exact_mut(co * ci).enumerate() {
            let y = &yt[xi * co * pb..(xi + 1) * co * pb];
            let v = &v[xi * ci * pb..(xi + 1) * ci * pb];
            products(isa, y, v, pb, n, c);
        }
    }

    /// Both transforms of the chunk's slots in the strip layout (AVX-512; checked
    /// by `conv2d_backward_filter_winograd_in`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn strips<T: Transforms<A, M>, const A: usize, const M: usize>(
        &self,
        g: &StripGeometry,
        t0: usize,
        cnt: usize,
        v: &mut [f32],
        yt: &mut [f32],
        strip: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            use super::winograd_strip::avx512::StripChunk;
            let c = StripChunk::new(self.grid.p, g, (self.ho, self.wo), (t0, cnt), self.grid.pb);
            // SAFETY: the layout was refused unless the Isa proves AVX-512F.
            unsafe {
                c.transform_in::<T, A, M>(self.grid.input, strip, v);
                c.transform_dy::<T, A, M>(self.dy, strip, yt);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the strip layout is refused off x86-64");
    }

    /// `Ŷ[ξ][o][t] = (A dY Aᵀ)[ξ]` for the chunk's tiles, compiled for the Isa.
    fn transform_dy<T: Transforms<A, M>, const A: usize, const M: usize>(
        &self,
        t0: usize,
        cnt: usize,
        yt: &mut [f32],
    ) {
        match self.isa.kind() {
            // SAFETY: the Isa proves the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => unsafe { x86::dy_avx512::<T, A, M>(self, t0, cnt, yt) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => unsafe { x86::dy_avx2::<T, A, M>(self, t0, cnt, yt) },
            _ => self.dy_tiles::<T, A, M>(t0, cnt, yt),
        }
    }

    /// The body of [`Self::transform_dy`]: each lane's `m × m` block of `dY` (zero
    /// where the tile hangs over the output's edge), transformed.
    #[inline(always)]
    fn dy_tiles<T: Transforms<A, M>, const A: usize, const M: usize>(
        &self,
        t0: usize,
        cnt: usize,
        yt: &mut [f32],
    ) {
        let p = self.grid.p;
        let (ho, wo, pb) = (self.ho, self.wo, self.grid.pb);
        let plane = ho * wo;
        for g in (0..cnt).step_by(LANES) {
            let lanes = LANES.min(cnt - g);
            // Per lane: its image, its top-left output, and the rows and columns of
            // its block inside the output.
            let at = self.grid.outputs::<M>(t0, g, cnt, (ho, wo));
            for o in 0..p.co {
                let mut d = [[Lanes::ZERO; M]; M];
                for (l, &(b, base, rows, cols)) in at.iter().enumerate().take(lanes) {
                    let src = &self.dy[(b * p.co + o) * plane + base..];
                    for (r, row) in d.iter_mut().enumerate().take(rows) {
                        for (s, cell) in row.iter_mut().enumerate().take(cols) {
                            cell.0[l] = src[r * wo + s];
                        }
                    }
                }
                let t = T::output_t(&d);
                for (x, row) in t.iter().enumerate() {
                    for (y, val) in row.iter().enumerate() {
                        let at = ((x * A + y) * p.co + o) * pb + g;
                        yt[at..at + LANES].copy_from_slice(&val.0);
                    }
                }
            }
        }
    }
}

/// `c[o][k] += Σ_t y[o][t]·v[k][t]` over the first `n` columns (whole vector groups)
/// of the row-major `y` `[co, pb]` and `v` `[ci, pb]`, into `c` `[co, ci]`, compiled
/// for the Isa. Both operands run along the tiles, so this is dot products: 4 × 4
/// of them at a time in 16 vector accumulators, summed across lanes once per chunk.
/// (sgemm on each point's small GEMM, 16 × 16 × 96 on ResNet-20's first stage, spent
/// more in its calls than in its multiplies: a development build, measured once while
/// other builds ran, gave 47 against the sliding windows' 149 effective GFLOP/s.)
fn products(isa: Isa, y: &[f32], v: &[f32], pb: usize, n: usize, c: &mut [f32]) {
    match isa.kind() {
        // SAFETY: the Isa proves the CPU has the features.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => unsafe { x86::products_avx512(y, v, pb, n, c) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => unsafe { x86::products_avx2(y, v, pb, n, c) },
        _ => blocks(y, v, pb, n, c, block_portable),
    }
}

/// Four rows of an operand (the last repeated where fewer are left) and how many are
/// real.
type Rows4<'a> = ([&'a [f32]; 4], usize);

/// Walks `[co, ci]` in 4 × 4 blocks (fewer at the edges), calling `block` with the
/// block's rows of `y` and `v` (each `n` long), its corner and `c`.
#[inline(always)]
fn blocks(
    y: &[f32],
    v: &[f32],
    pb: usize,
    n: usize,
    c: &mut [f32],
    block: impl Fn(Rows4, Rows4, usize, usize, &mut [f32], usize),
) {
    let (co, ci) = (y.len() / pb, v.len() / pb);
    fn rows(m: &[f32], pb: usize, n: usize, at: usize, left: usize) -> Rows4<'_> {
        let count = left.min(4);
        (
            std::array::from_fn(|i| &m[(at + i.min(count - 1)) * pb..][..n]),
            count,
        )
    }
    for o in (0..co).step_by(4) {
        for k in (0..ci).step_by(4) {
            block(
                rows(y, pb, n, o, co - o),
                rows(v, pb, n, k, ci - k),
                o,
                k,
                c,
                ci,
            );
        }
    }
}

/// One 4 × 4 block of [`products`] in plain Rust (multiplies and adds: `mul_add` is a
/// library call where FMA is not enabled).
fn block_portable((ys, bo): Rows4, (vs, bk): Rows4, o: usize, k: usize, c: &mut [f32], ci: usize) {
    let mut acc = [[[0.0f32; LANES]; 4]; 4];
    for t in (0..ys[0].len()).step_by(LANES) {
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, lanes) in row.iter_mut().enumerate() {
                for (l, a) in lanes.iter_mut().enumerate() {
                    *a += ys[i][t + l] * vs[j][t + l];
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(bo) {
        for (j, lanes) in row.iter().enumerate().take(bk) {
            c[(o + i) * ci + k + j] += lanes.iter().sum::<f32>();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The output-gradient transform and the products compiled for AVX-512 and for
    //! AVX2 + FMA.
    use super::{Ctx, Rows4, Transforms};
    use std::arch::x86_64::*;

    macro_rules! isa_stage {
        ($name:ident, $features:literal) => {
            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<T: Transforms<A, M>, const A: usize, const M: usize>(
                ctx: &Ctx,
                t0: usize,
                cnt: usize,
                yt: &mut [f32],
            ) {
                ctx.dy_tiles::<T, A, M>(t0, cnt, yt)
            }
        };
    }
    isa_stage!(dy_avx512, "avx512f");
    isa_stage!(dy_avx2, "avx2,fma");

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn products_avx512(y: &[f32], v: &[f32], pb: usize, n: usize, c: &mut [f32]) {
        // SAFETY (each block): the caller's contract; rows hold `n` floats, `n` whole
        // vectors.
        super::blocks(y, v, pb, n, c, |ys, vs, o, k, c, ci| unsafe {
            block_avx512(ys, vs, o, k, c, ci)
        })
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn products_avx2(y: &[f32], v: &[f32], pb: usize, n: usize, c: &mut [f32]) {
        // SAFETY (each block): as above.
        super::blocks(y, v, pb, n, c, |ys, vs, o, k, c, ci| unsafe {
            block_avx2(ys, vs, o, k, c, ci)
        })
    }

    macro_rules! block_isa {
        ($name:ident, $features:literal, $vec:ty, $w:literal, $zero:ident, $load:ident,
         $fma:ident, $rows:ident) => {
            /// One 4 × 4 block of dot products in vector accumulators.
            ///
            /// # Safety
            /// The CPU must support the enabled features; every row's length is a
            /// multiple of the vector width.
            #[target_feature(enable = $features)]
            unsafe fn $name(
                (ys, bo): Rows4,
                (vs, bk): Rows4,
                o: usize,
                k: usize,
                c: &mut [f32],
                ci: usize,
            ) {
                let mut acc: [[$vec; 4]; 4] = [[$zero(); 4]; 4];
                for t in (0..ys[0].len()).step_by($w) {
                    // SAFETY: t + width ≤ each row's length.
                    let yl: [$vec; 4] =
                        std::array::from_fn(|i| unsafe { $load(ys[i].as_ptr().add(t)) });
                    for j in 0..4 {
                        // SAFETY: as above.
                        let vl = unsafe { $load(vs[j].as_ptr().add(t)) };
                        for i in 0..4 {
                            acc[i][j] = $fma(yl[i], vl, acc[i][j]);
                        }
                    }
                }
                let sums = $rows(acc);
                for (i, &row) in sums.iter().enumerate().take(bo) {
                    let at = (o + i) * ci + k;
                    if bk == 4 {
                        let dst = c[at..at + 4].as_mut_ptr();
                        // SAFETY: the four floats from `at` are inside `c`.
                        unsafe { _mm_storeu_ps(dst, _mm_add_ps(_mm_loadu_ps(dst), row)) };
                    } else {
                        let mut lanes = [0.0f32; 4];
                        // SAFETY: `lanes` holds four floats.
                        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), row) };
                        for (cell, s) in c[at..at + bk].iter_mut().zip(lanes) {
                            *cell += s;
                        }
                    }
                }
            }
        };
    }
    block_isa!(
        block_avx512,
        "avx512f",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        row_sums_avx512
    );
    block_isa!(
        block_avx2,
        "avx2,fma",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        row_sums_avx2
    );

    /// The first two levels of a transposing sum of a row of four accumulators: per
    /// 128-bit lane, `(Σ a[0], Σ a[1], Σ a[2], Σ a[3])` over that lane's floats.
    macro_rules! quad_sums {
        ($a:expr, $unpacklo:ident, $unpackhi:ident, $add:ident, $lo_pd:ident, $hi_pd:ident,
         $cast_pd:ident, $cast_ps:ident) => {{
            let a = $a;
            let pair = |x, y| $add($unpacklo(x, y), $unpackhi(x, y));
            let (s01, s23) = (pair(a[0], a[1]), pair(a[2], a[3]));
            let (d01, d23) = ($cast_pd(s01), $cast_pd(s23));
            $add($cast_ps($lo_pd(d01, d23)), $cast_ps($hi_pd(d01, d23)))
        }};
    }

    /// Row `i` of a 4 × 4 block of accumulators summed across lanes: `[Σ acc[i][0],
    /// …, Σ acc[i][3]]`. A tree of shuffles that sums all sixteen at once: 45
    /// instructions where sixteen `_mm512_reduce_add_ps` take about 130, which with
    /// 64-tile chunks (ResNet-20's last stage, F(2×2)) cost more than the 64 FMAs
    /// they close.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn row_sums_avx512(acc: [[__m512; 4]; 4]) -> [__m128; 4] {
        let q: [__m512; 4] = std::array::from_fn(|i| {
            quad_sums!(
                acc[i],
                _mm512_unpacklo_ps,
                _mm512_unpackhi_ps,
                _mm512_add_ps,
                _mm512_unpacklo_pd,
                _mm512_unpackhi_pd,
                _mm512_castps_pd,
                _mm512_castpd_ps
            )
        });
        // 128-bit lanes: fold 2 and 3 onto 0 and 1 for two rows at once, then 1 onto 0.
        let half = |x, y| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
            )
        };
        let (h01, h23) = (half(q[0], q[1]), half(q[2], q[3]));
        let r = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(h01, h23),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(h01, h23),
        );
        [
            _mm512_extractf32x4_ps::<0>(r),
            _mm512_extractf32x4_ps::<1>(r),
            _mm512_extractf32x4_ps::<2>(r),
            _mm512_extractf32x4_ps::<3>(r),
        ]
    }

    /// [`row_sums_avx512`] for ymm accumulators.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn row_sums_avx2(acc: [[__m256; 4]; 4]) -> [__m128; 4] {
        std::array::from_fn(|i| {
            let q = quad_sums!(
                acc[i],
                _mm256_unpacklo_ps,
                _mm256_unpackhi_ps,
                _mm256_add_ps,
                _mm256_unpacklo_pd,
                _mm256_unpackhi_pd,
                _mm256_castps_pd,
                _mm256_castpd_ps
            );
            _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps::<1>(q))
        })
    }
}

#[cfg(test)]
use super::conv_backward::conv2d_backward_filter;

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed * 97)
                    >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `dW` by the definition, in f64.
    fn naive(p: &Conv2d, x: &[f32], dy: &[f32]) -> Vec<f64> {
        let (ho, wo) = p.out_hw().unwrap();
        let r = p.kh;
        let mut dw = vec![0.0f64; p.co * p.ci * r * r];
        for n in 0..p.n {
            for o in 0..p.co {
                for c in 0..p.ci {
                    for ky in 0..r {
                        for kx in 0..r {
                            let mut s = 0.0;
                            for y in 0..ho {
                                for xx in 0..wo {
                                    let iy = (y + ky) as isize - p.pad.0 as isize;
                                    let ix = (xx + kx) as isize - p.pad.1 as isize;
                                    if iy < 0 || ix < 0 || iy >= p.h as isize || ix >= p.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x
                                        [((n * p.ci + c) * p.h + iy as usize) * p.w + ix as usize]
                                        as f64;
                                    s += dy[((n * p.co + o) * ho + y) * wo + xx] as f64 * xv;
                                }
                            }
                            dw[((o * p.ci + c) * r + ky) * r + kx] += s;
                        }
                    }
                }
            }
        }
        dw
    }

    fn conv(n: usize, ci: usize, hw: (usize, usize), co: usize, k: usize, pad: usize) -> Conv2d {
        Conv2d::simple(n, ci, hw.0, hw.1, co, k, pad)
    }

    /// Every variant on every ISA this CPU has equals the definition on awkward
    /// shapes (odd sizes, 1×1 maps, channels no multiple of a vector, tiles hanging
    /// over the edge), within a bound scaled to the gradient's magnitude.
    #[test]
    fn equals_the_definition() {
        let cases = [
            conv(2, 3, (7, 9), 5, 3, 1),
            conv(1, 17, (6, 5), 9, 3, 2),
            conv(3, 4, (1, 1), 6, 3, 1),
            conv(2, 5, (11, 10), 7, 3, 0),
            conv(1, 16, (8, 8), 16, 3, 1),
            conv(2, 3, (9, 10), 4, 5, 2),
            conv(1, 6, (7, 5), 3, 5, 1),
            // Padding wider than the kernel: the last tiles' windows are all padding.
            conv(2, 3, (3, 4), 4, 3, 5),
            // Rows of 8 and 16 tiles, several bands a chunk.
            conv(3, 5, (16, 32), 6, 3, 1),
        ];
        for p in cases {
            let (ho, wo) = p.out_hw().unwrap();
            let x = noise(p.n * p.ci * p.h * p.w, 1);
            let dy = noise(p.n * p.co * ho * wo, 2);
            let want = naive(&p, &x, &dy);
            let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            let runs = Isa::available().into_iter().flat_map(|isa| {
                let strips = isa.kind() == IsaKind::Avx512;
                [(isa, WinogradLayout::Tiles)]
                    .into_iter()
                    .chain(strips.then_some((isa, WinogradLayout::Strips)))
            });
            for (isa, layout) in runs {
                for m in [2, 4] {
                    let tile = WinogradTile::new(m, p.kh).unwrap();
                    let mut got = vec![f32::NAN; want.len()];
                    conv2d_backward_filter_winograd_in(layout, isa, tile, &p, &x, &dy, &mut got)
                        .unwrap();
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (*g as f64 - w).abs() / scale)
                        .fold(0.0, f64::max);
                    // Measured worst: F(2×2, 5×5) 4.3e-6, the others under 2.4e-6;
                    // the bounds leave room for the 8×8 tiles' points ±2 and ±½.
                    let bound = match tile {
                        WinogradTile::F2 => 5e-6,
                        WinogradTile::F2K5 => 1e-5,
                        WinogradTile::F4 => 2e-5,
                        WinogradTile::F4K5 => 5e-5,
                    };
                    assert!(worst < bound, "{p:?} {tile:?} {isa} {layout:?}: {worst:e}");
                }
            }
        }
    }

    /// Many chunks on several groups: ResNet-20's 16-channel stage at batch 4 agrees
    /// with the im2col route, and two runs give the same bits.
    #[test]
    fn many_chunks_agree_and_repeat() {
        let p = conv(4, 16, (32, 32), 16, 3, 1);
        let x = noise(p.n * p.ci * p.h * p.w, 3);
        let dy = noise(p.n * p.co * 32 * 32, 4);
        let isa = Isa::best();
        let mut want = vec![0.0; p.co * p.ci * 9];
        conv2d_backward_filter(isa, &p, &x, &dy, &mut want).unwrap();
        let scale = want.iter().fold(1.0f32, |a, v| a.max(v.abs()));
        for tile in [WinogradTile::F2, WinogradTile::F4] {
            let mut got = vec![0.0; want.len()];
            conv2d_backward_filter_winograd(isa, tile, &p, &x, &dy, &mut got).unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() / scale)
                .fold(0.0, f32::max);
            assert!(worst < 2e-5, "{tile:?}: {worst:e}");
            let mut again = vec![0.0; want.len()];
            conv2d_backward_filter_winograd(isa, tile, &p, &x, &dy, &mut again).unwrap();
            assert_eq!(got, again, "{tile:?}: not reproducible");
        }
    }

    /// A conv Winograd does not cover is an error, not a wrong answer.
    #[test]
    fn refuses_what_it_does_not_cover() {
        let mut p = conv(1, 2, (6, 6), 2, 3, 1);
        p.stride = (2, 2);
        let (x, dy, mut dw) = (vec![0.0; 72], vec![0.0; 18], vec![0.0; 36]);
        let e =
            conv2d_backward_filter_winograd(Isa::best(), WinogradTile::F2, &p, &x, &dy, &mut dw);
        assert!(matches!(e, Err(ConvError::NotWinograd(_))), "{e:?}");
        let p = conv(1, 2, (6, 6), 2, 3, 1);
        let e =
            conv2d_backward_filter_winograd(Isa::best(), WinogradTile::F2K5, &p, &x, &dy, &mut dw);
        assert!(matches!(e, Err(ConvError::NotWinograd(_))), "{e:?}");
    }
}
