//! Winograd's tile grid in the tile layout: which input window each vector lane
//! reads, and the input transform `V = Bᵀ d B` of a chunk of tiles. Shared by the
//! forward conv (`winograd`) and the filter gradient (`winograd_filter`), which read
//! the same windows of the same input.

use super::conv_params::Conv2d;
use super::isa::{Isa, IsaKind};
use super::winograd_transform::{Lanes, Transforms, LANES};

/// The `th × tw` tiles of `m × m` outputs per image of a conv, chunk buffers of `pb`
/// columns, over `input` (`[n, ci, h, w]`).
pub struct TileGrid<'a> {
    pub p: &'a Conv2d,
    pub th: usize,
    pub tw: usize,
    /// Columns of a chunk's transformed buffers (tiles in whole vector groups).
    pub pb: usize,
    pub input: &'a [f32],
}

impl TileGrid<'_> {
    /// Where each of the lanes `g..g+LANES` of the chunk starting at tile `t0` sits:
    /// (image, top row, left column) of its input tile, which may start in the
    /// padding (negative). Computed once per group, not per channel.
    #[inline(always)]
    pub fn origins<const M: usize>(
        &self,
        t0: usize,
        g: usize,
        cnt: usize,
    ) -> [(usize, isize, isize); LANES] {
        let per_image = self.th * self.tw;
        std::array::from_fn(|l| {
            let t = (t0 + g + l).min(t0 + cnt - 1);
            let (b, r) = (t / per_image, t % per_image);
            let (ty, tx) = (r / self.tw, r % self.tw);
            (
                b,
                (ty * M) as isize - self.p.pad.0 as isize,
                (tx * M) as isize - self.p.pad.1 as isize,
            )
        })
    }

    /// The output side of [`Self::origins`] for outputs of `ho × wo`: per lane, its
    /// image, the offset of its top-left output in a plane, and how many of its `M`
    /// rows and columns are inside the output (the rest hangs over the edge).
    #[inline(always)]
    pub fn outputs<const M: usize>(
        &self,
        t0: usize,
        g: usize,
        cnt: usize,
        (ho, wo): (usize, usize),
    ) -> [(usize, usize, usize, usize); LANES] {
        let pad = self.p.pad;
        self.origins::<M>(t0, g, cnt).map(|(b, y0, x0)| {
            let (oy, ox) = (
                (y0 + pad.0 as isize) as usize,
                (x0 + pad.1 as isize) as usize,
            );
            (b, oy * wo + ox, M.min(ho - oy), M.min(wo - ox))
        })
    }

    /// Step 1: `V[ξ][c][lane] = (Bᵀ d B)[ξ]` for the chunk's tiles.
    #[inline(always)]
    pub fn transform_in<T: Transforms<A, M>, const A: usize, const M: usize>(
        &self,
        t0: usize,
        cnt: usize,
        v: &mut [f32],
    ) {
        let p = self.p;
        let (h, w, pb) = (p.h as isize, p.w as isize, self.pb);
        let plane = p.h * p.w;
        for g in (0..cnt).step_by(LANES) {
            let lanes = LANES.min(cnt - g);
            let at = self.origins::<M>(t0, g, cnt);
            // Tiles wholly inside the image read without per-element checks.
            let inside: [bool; LANES] = std::array::from_fn(|l| {
                let (_, y0, x0) = at[l];
                y0 >= 0 && x0 >= 0 && y0 + A as isize <= h && x0 + A as isize <= w
            });
            // All lanes on one tile row, side by side: each input row of the group is
            // one contiguous run, copied once into a buffer and split into lanes by
            // constant-stride reads (which vectorise), instead of lane-by-lane scalar
            // stores that stall the vector loads after them.
            let (b0, y0, x0) = at[0];
            let one_run =
                lanes == LANES && (1..LANES).all(|l| at[l] == (b0, y0, x0 + (l * M) as isize));
            if one_run {
                // The widest span: 16 F(4×4, 5×5) tiles, 15·4 + 8 columns.
                const RUN: usize = LANES * 4 + 4;
                let span = (LANES - 1) * M + A;
                for c in 0..p.ci {
                    let img = &self.input[(b0 * p.ci + c) * plane..][..plane];
                    let mut d = [[Lanes::ZERO; A]; A];
                    for (i, row) in d.iter_mut().enumerate() {
                        let y = y0 + i as isize;
                        if y < 0 || y >= h {
                            continue;
                        }
                        let src = &img[y as usize * p.w..][..p.w];
                        let mut buf = [0.0f32; RUN];
                        let lo = (-x0).clamp(0, span as isize) as usize;
                        let hi = (w - x0).clamp(0, span as isize) as usize;
                        if lo < hi {
                            let s0 = (x0 + lo as isize) as usize;
                            buf[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                        }
                        for (j, cell) in row.iter_mut().enumerate() {
                            *cell = Lanes(std::array::from_fn(|l| buf[l * M + j]));
                        }
                    }
                    let t = T::input(&d);
                    for (x, row) in t.iter().enumerate() {
                        for (y, val) in row.iter().enumerate() {
                            let at = ((x * A + y) * p.ci + c) * pb + g;
                            v[at..at + LANES].copy_from_slice(&val.0);
                        }
                    }
                }
                continue;
            }
            for c in 0..p.ci {
                let mut d = [[Lanes::ZERO; A]; A];
                for l in 0..lanes {
                    let (b, y0, x0) = at[l];
                    let img = &self.input[(b * p.ci + c) * plane..][..plane];
                    if inside[l] {
                        let start = y0 as usize * p.w + x0 as usize;
                        let src = &img[start..start + (A - 1) * p.w + A];
                        for (i, row) in d.iter_mut().enumerate() {
                            for (j, cell) in row.iter_mut().enumerate() {
                                cell.0[l] = src[i * p.w + j];
                            }
                        }
                        continue;
                    }
                    for (i, row) in d.iter_mut().enumerate() {
                        let y = y0 + i as isize;
                        if y < 0 || y >= h {
                            continue;
                        }
                        let src = &img[y as usize * p.w..][..p.w];
                        for (j, cell) in row.iter_mut().enumerate() {
                            let x = x0 + j as isize;
                            if x >= 0 && x < w {
                                cell.0[l] = src[x as usize];
                            }
                        }
                    }
                }
                let t = T::input(&d);
                for (x, row) in t.iter().enumerate() {
                    for (y, val) in row.iter().enumerate() {
                        let at = ((x * A + y) * p.ci + c) * pb + g;
                        v[at..at + LANES].copy_from_slice(&val.0);
                    }
                }
            }
        }
    }
}

/// [`TileGrid::transform_in`] compiled for `isa`: `V[ξ][c][t]` for tiles `t0 ..
/// t0 + cnt` into `v` (`α²·ci·pb`).
pub fn transform_in<T: Transforms<A, M>, const A: usize, const M: usize>(
    isa: Isa,
    grid: &TileGrid,
    t0: usize,
    cnt: usize,
    v: &mut [f32],
) {
    match isa.kind() {
        // SAFETY: the Isa proves the CPU has the features.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => unsafe { x86::transform_in_avx512::<T, A, M>(grid, t0, cnt, v) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => unsafe { x86::transform_in_avx2::<T, A, M>(grid, t0, cnt, v) },
        _ => grid.transform_in::<T, A, M>(t0, cnt, v),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The input transform compiled for AVX-512 and for AVX2 + FMA.
    use super::{TileGrid, Transforms};

    macro_rules! isa_stage {
        ($name:ident, $features:literal) => {
            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<T: Transforms<A, M>, const A: usize, const M: usize>(
                grid: &TileGrid,
                t0: usize,
                cnt: usize,
                v: &mut [f32],
            ) {
                grid.transform_in::<T, A, M>(t0, cnt, v)
            }
        };
    }
    isa_stage!(transform_in_avx512, "avx512f");
    isa_stage!(transform_in_avx2, "avx2,fma");
}
