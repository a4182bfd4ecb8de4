//! conv2d by Winograd F(m×m, r×r) (m = 2 or 4, r = 3 or 5), for 3×3 and 5×5,
//! stride-1, dilation-1, single-group convs with any padding.
//!
//! The output is cut into `m × m` tiles (the last row and column of tiles may hang
//! over the edge and are cropped). Tiles go in chunks (`chunking`: sized so a chunk's
//! transformed inputs and products stay in L2); each chunk, on one thread:
//! 1. transforms its input tiles, [`LANES`] tiles per vector, into `V[ξ][ci][pb]`;
//! 2. runs α² GEMMs `M[ξ] = U[ξ] · V[ξ]` (`[co, ci] × [ci, pb]`) with the filter
//!    pre-packed ([`WinogradFilter`], built once per weight, so it folds at compile
//!    time when the weight is bound);
//! 3. transforms the products back and writes the cropped tiles with the epilogue.
//!
//! Chunks spread over rayon. The transforms are compiled once per ISA
//! (`#[target_feature]` wrappers around one inlined body) so they vectorise to zmm,
//! ymm or the portable target's vectors.

use rayon::prelude::*;

use super::conv_params::{Conv2d, ConvError, Epilogue};
use super::isa::{Isa, IsaKind};
use super::pack::MatRef;
use super::scratch::with_scratch;
use super::sgemm::{sgemm_packed, PackedA, Par};
use super::winograd_filter_transform::filter_transform;
use super::winograd_strip::{slots_per_band, strips_pay, StripGeometry};
use super::winograd_tiles::{transform_in, TileGrid};
use super::winograd_transform::{Lanes, Transforms, WinogradTile, F2, F2K5, F4, F4K5, LANES};

/// Filters (`co·ci`) from which [`WinogradFilter::refill`] splits the transform among
/// threads: ResNet-20's 32- and 64-channel convs (1024 and 4096), not its
/// 16-channel ones, whose transform takes a few microseconds.
const PARALLEL_FILTERS: usize = 1024;

/// A 3×3 or 5×5 filter in the Winograd domain, packed for one ISA's GEMM.
#[derive(Clone, Debug)]
pub struct WinogradFilter {
    tile: WinogradTile,
    isa: Isa,
    co: usize,
    ci: usize,
    u: Vec<PackedA>,
}

impl WinogradFilter {
    /// Transforms and packs a `[co, ci, r, r]` weight (`r` the tile's kernel).
    pub fn new(
        isa: Isa,
        tile: WinogradTile,
        weight: &[f32],
        co: usize,
        ci: usize,
    ) -> Result<Self, ConvError> {
        let a2 = tile.alpha().pow(2);
        let mut filter = WinogradFilter {
            tile,
            isa,
            co,
            ci,
            // Each point's `[co, ci]` matrix, written straight into its packed form.
            u: (0..a2).map(|_| PackedA::zeroed(isa, co, ci)).collect(),
        };
        filter.refill(weight)?;
        Ok(filter)
    }

    /// The filter of `weight` in `slot`: refilled where `slot` holds one of the same
    /// ISA, tile and shape, else built there.
    pub fn in_slot<'a>(
        slot: &'a mut Option<WinogradFilter>,
        isa: Isa,
        tile: WinogradTile,
        weight: &[f32],
        co: usize,
        ci: usize,
    ) -> Result<&'a WinogradFilter, ConvError> {
        match slot {
            Some(f) if (f.isa, f.tile, f.co, f.ci) == (isa, tile, co, ci) => f.refill(weight)?,
            _ => *slot = Some(WinogradFilter::new(isa, tile, weight, co, ci)?),
        }
        Ok(slot.as_ref().expect("filled above"))
    }

    /// Transforms and packs another weight of the same shape into this filter's own
    /// matrices: a training step's, whose weights change every step (fresh matrices
    /// cost page faults and zeroing about as long as the transform). Large filters
    /// are split among rayon's threads.
    pub fn refill(&mut self, weight: &[f32]) -> Result<(), ConvError> {
        let (co, ci) = (self.co, self.ci);
        let taps = self.tile.kernel().pow(2);
        if weight.len() != co * ci * taps {
            return Err(ConvError::Buffer {
                what: "Winograd weight",
                expected: co * ci * taps,
                got: weight.len(),
            });
        }
        let (isa, tile, filters) = (self.isa, self.tile, co * ci);
        let writers: Vec<_> = self.u.iter_mut().map(PackedA::column_writer).collect();
        let part = |range: std::ops::Range<usize>| {
            filter_transform(isa, tile, weight, co, range, |mut f, xi, mut vals| {
                // Filters in the order `c·co + o`: runs down a column.
                while !vals.is_empty() {
                    let (c, o) = (f / co, f % co);
                    let take = (co - o).min(vals.len());
                    // SAFETY: each filter (each element of each point's matrix) is in
                    // one part only.
                    unsafe { writers[xi].set_column(o, c, &vals[..take]) };
                    (f, vals) = (f + take, &vals[take..]);
                }
            })
        };
        let threads = rayon::current_num_threads();
        if filters < PARALLEL_FILTERS || threads < 2 {
            part(0..filters);
        } else {
            // Whole vector groups per part, a part per thread.
            let per = filters.div_ceil(threads).next_multiple_of(LANES);
            (0..filters.div_ceil(per))
                .into_par_iter()
                .for_each(|i| part(i * per..((i + 1) * per).min(filters)));
        }
        Ok(())
    }

    /// The variant.
    pub fn tile(&self) -> WinogradTile {
        self.tile
    }
}

/// Columns of an AVX-512 B panel: chunks of tiles are whole panels, so the GEMMs read
/// the transformed inputs in place.
pub const PANEL: usize = 32;

/// Tiles per chunk for `α²` transform points and `ci → co` channels: the transformed
/// inputs and products together about 512 KiB (half of L2), whole panels, 1 to 16 of
/// them.
pub fn chunk_tiles(a2: usize, ci: usize, co: usize) -> usize {
    let budget = (512 * 1024 / 4) / (a2 * (ci + co)).max(1);
    (budget / PANEL * PANEL).clamp(PANEL, 16 * PANEL)
}

/// How `tiles` tiles go in chunks on `threads` threads: (tiles per chunk, the chunk
/// buffers' column stride, chunks). About [`chunk_tiles`] per chunk, and as many
/// chunks as a multiple of the threads, so none idles while another runs a last
/// chunk: at batch 1, F(4×4)'s 72 slots of a 32×32 map went in chunks of 32, 32 and
/// 8, two on one thread; now two of 36 (F(2×2) on ResNet-20's 16-channel convs at
/// batch 1: 105 → 183 effective GFLOP/s, `cargo bench --bench jit_kernels`). The
/// stride rounds a chunk up to whole vector groups (the transforms store 16 lanes at a
/// time).
pub fn chunking(tiles: usize, a2: usize, ci: usize, co: usize, threads: usize) -> Chunking {
    chunking_by(tiles, chunk_tiles(a2, ci, co), threads)
}

/// [`chunking`] with about `cap` tiles a chunk.
pub fn chunking_by(tiles: usize, cap: usize, threads: usize) -> Chunking {
    let threads = threads.max(1);
    let chunks = match tiles.div_ceil(cap) {
        // Fewer than two chunks a thread: one each, somewhat over the budget.
        n if n < 2 * threads => threads,
        n => n.next_multiple_of(threads),
    };
    let chunks = chunks.min(tiles.div_ceil(LANES)).max(1);
    let mut per = tiles.div_ceil(chunks);
    if chunks > threads {
        // Several chunks a thread: whole vector groups matter more than the balance.
        per = per.next_multiple_of(LANES);
    }
    Chunking {
        per,
        stride: per.next_multiple_of(LANES),
        chunks: tiles.div_ceil(per),
    }
}

/// What [`chunking`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunking {
    /// Tiles per chunk (the last may have fewer).
    pub per: usize,
    /// Columns of a chunk's transformed inputs and products.
    pub stride: usize,
    pub chunks: usize,
}

/// Whether Winograd covers `p` (3×3 or 5×5, stride 1, dilation 1, one group), or why
/// not.
pub fn winograd_applies(p: &Conv2d) -> Result<(), ConvError> {
    let why = if p.kh != p.kw || WinogradTile::new(2, p.kh).is_none() {
        format!("the kernel is {}×{}", p.kh, p.kw)
    } else if p.stride != (1, 1) {
        format!("the stride is {:?}", p.stride)
    } else if p.dilation != (1, 1) {
        format!("the dilation is {:?}", p.dilation)
    } else if p.groups != 1 {
        format!("there are {} groups", p.groups)
    } else {
        return Ok(());
    };
    Err(ConvError::NotWinograd(why))
}

/// How a Winograd conv assigns tiles to vector lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradLayout {
    /// Lane by lane, any ISA: each lane's window gathered element by element.
    Tiles,
    /// Whole vectors from strips of bands (AVX-512 only; `winograd_strip`).
    Strips,
}

impl WinogradLayout {
    /// The layout `conv2d_winograd` uses: strips on AVX-512 where they pay
    /// ([`strips_pay`]).
    pub fn auto(isa: Isa, p: &Conv2d, tile: WinogradTile) -> WinogradLayout {
        let Ok((_, wo)) = p.out_hw() else {
            return WinogradLayout::Tiles;
        };
        let m = tile.m();
        let slots = slots_per_band(p.w, p.pad.1, wo, m, tile.alpha());
        if isa.kind() == IsaKind::Avx512 && strips_pay(slots, wo.div_ceil(m)) {
            WinogradLayout::Strips
        } else {
            WinogradLayout::Tiles
        }
    }
}

/// `out = epilogue(conv2d(input, weight))` where `filter` holds the weight.
pub fn conv2d_winograd(
    isa: Isa,
    filter: &WinogradFilter,
    p: &Conv2d,
    input: &[f32],
    epi: &Epilogue,
    out: &mut [f32],
) -> Result<(), ConvError> {
    let layout = WinogradLayout::auto(isa, p, filter.tile);
    conv2d_winograd_in(layout, isa, filter, p, input, epi, out)
}

/// [`conv2d_winograd`] in a given layout (strips need AVX-512).
pub fn conv2d_winograd_in(
    layout: WinogradLayout,
    isa: Isa,
    filter: &WinogradFilter,
    p: &Conv2d,
    input: &[f32],
    epi: &Epilogue,
    out: &mut [f32],
) -> Result<(), ConvError> {
    winograd_applies(p)?;
    let r = filter.tile.kernel();
    if (filter.co, filter.ci, r) != (p.co, p.ci, p.kh) || filter.isa != isa {
        return Err(ConvError::Geometry(format!(
            "the Winograd filter is [{}, {}, {r}, {r}] for {}, the conv is [{}, {}, {}, {}] \
             on {isa}",
            filter.co, filter.ci, filter.isa, p.co, p.ci, p.kh, p.kw
        )));
    }
    if layout == WinogradLayout::Strips && isa.kind() != IsaKind::Avx512 {
        return Err(ConvError::NotWinograd(format!(
            "the strip layout needs AVX-512, not {isa}"
        )));
    }
    let (ho, wo) = p.check(input.len(), p.co * p.ci * r * r, out.len(), epi)?;
    let m = filter.tile.m();
    let (th, tw) = (ho.div_ceil(m), wo.div_ceil(m));
    let strip = (layout == WinogradLayout::Strips).then(|| StripGeometry::new(p, (ho, wo), m));
    let tiles = strip.map_or(p.n * th * tw, |g| g.total_slots());
    if tiles == 0 || p.co == 0 {
        return Ok(());
    }
    let a2 = filter.tile.alpha().pow(2);
    let plan = chunking(tiles, a2, p.ci, p.co, rayon::current_num_threads());
    let pb = plan.stride;
    let ctx = Ctx {
        isa,
        grid: TileGrid {
            p,
            th,
            tw,
            pb,
            input,
        },
        ho,
        wo,
        tiles,
        per: plan.per,
        strip,
        filter,
        epi,
        out: SendPtr(out.as_mut_ptr()),
    };
    let strip_len = strip.map_or(0, |g| g.strips_len(pb));
    let (v_len, mm_len) = (a2 * p.ci * pb, a2 * p.co * pb);
    (0..plan.chunks).into_par_iter().for_each(|q| {
        with_scratch(v_len + mm_len + strip_len, |buf| {
            let (v, rest) = buf.split_at_mut(v_len);
            let (mm, s) = rest.split_at_mut(mm_len);
            ctx.chunk(q * plan.per, v, mm, s)
        })
    });
    Ok(())
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: chunks write disjoint output tiles (each output element belongs to one tile).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

struct Ctx<'a> {
    isa: Isa,
    grid: TileGrid<'a>,
    ho: usize,
    wo: usize,
    /// Tiles, or slots in the strip layout.
    tiles: usize,
    /// Tiles per chunk.
    per: usize,
    strip: Option<StripGeometry>,
    filter: &'a WinogradFilter,
    epi: &'a Epilogue<'a>,
    out: SendPtr,
}

impl Ctx<'_> {
    /// Tiles `t0 .. t0 + per` (fewer at the end): transform, GEMMs, transform back.
    fn chunk(&self, t0: usize, v: &mut [f32], mm: &mut [f32], strip: &mut [f32]) {
        let cnt = self.per.min(self.tiles - t0);
        if let Some(g) = &self.strip {
            return self.chunk_strips(g, t0, cnt, v, mm, strip);
        }
        let tile = self.filter.tile;
        macro_rules! stage {
            ($f:ident, $f512:ident, $f2:ident, $t:ty, $a:literal, $m:literal) => {
                match self.isa.kind() {
                    // SAFETY: the Isa proves the CPU has the features.
                    #[cfg(target_arch = "x86_64")]
                    IsaKind::Avx512 => unsafe { x86::$f512::<$t, $a, $m>(self, t0, cnt, v, mm) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    IsaKind::Avx2 => unsafe { x86::$f2::<$t, $a, $m>(self, t0, cnt, v, mm) },
                    _ => self.$f::<$t, $a, $m>(t0, cnt, v, mm),
                }
            };
        }
        let grid = &self.grid;
        match tile {
            WinogradTile::F2 => transform_in::<F2, 4, 2>(self.isa, grid, t0, cnt, v),
            WinogradTile::F4 => transform_in::<F4, 6, 4>(self.isa, grid, t0, cnt, v),
            WinogradTile::F2K5 => transform_in::<F2K5, 6, 2>(self.isa, grid, t0, cnt, v),
            WinogradTile::F4K5 => transform_in::<F4K5, 8, 4>(self.isa, grid, t0, cnt, v),
        }
        self.products(cnt, v, mm);
        match tile {
            WinogradTile::F2 => stage!(
                transform_out,
                transform_out_avx512,
                transform_out_avx2,
                F2,
                4,
                2
            ),
            WinogradTile::F4 => stage!(
                transform_out,
                transform_out_avx512,
                transform_out_avx2,
                F4,
                6,
                4
            ),
            WinogradTile::F2K5 => stage!(
                transform_out,
                transform_out_avx512,
                transform_out_avx2,
                F2K5,
                6,
                2
            ),
            WinogradTile::F4K5 => stage!(
                transform_out,
                transform_out_avx512,
                transform_out_avx2,
                F4K5,
                8,
                4
            ),
        }
    }

    /// Step 2: the α² GEMMs `M[ξ] = U[ξ] · V[ξ]` over the chunk's `cnt` columns.
    fn products(&self, cnt: usize, v: &[f32], mm: &mut [f32]) {
        let (ci, co, pb) = (self.grid.p.ci, self.grid.p.co, self.grid.pb);
        for (xi, u) in self.filter.u.iter().enumerate() {
            let b = MatRef::row_major(&v[xi * ci * pb..(xi + 1) * ci * pb], pb);
            let c = &mut mm[xi * co * pb..(xi + 1) * co * pb];
            sgemm_packed(self.isa, u, cnt, 1.0, b, 0.0, c, pb, Par::Serial);
        }
    }

    /// The chunk in the strip layout (AVX-512; `conv2d_winograd_in` checked).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn chunk_strips(
        &self,
        g: &StripGeometry,
        t0: usize,
        cnt: usize,
        v: &mut [f32],
        mm: &mut [f32],
        strip: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            use super::winograd_strip::avx512::StripChunk;
            let c = StripChunk::new(self.grid.p, g, (self.ho, self.wo), (t0, cnt), self.grid.pb);
            let out = self.out.0;
            // SAFETY: the layout was refused unless the Isa proves AVX-512F; the
            // chunk's slots are its own, so are the outputs it writes.
            unsafe {
                match self.filter.tile {
                    WinogradTile::F2 => {
                        c.transform_in::<F2, 4, 2>(self.grid.input, strip, v);
                        self.products(cnt, v, mm);
                        c.transform_out::<F2, 4, 2>(mm, strip, self.epi, out);
                    }
                    WinogradTile::F4 => {
                        c.transform_in::<F4, 6, 4>(self.grid.input, strip, v);
                        self.products(cnt, v, mm);
                        c.transform_out::<F4, 6, 4>(mm, strip, self.epi, out);
                    }
                    WinogradTile::F2K5 => {
                        c.transform_in::<F2K5, 6, 2>(self.grid.input, strip, v);
                        self.products(cnt, v, mm);
                        c.transform_out::<F2K5, 6, 2>(mm, strip, self.epi, out);
                    }
                    WinogradTile::F4K5 => {
                        c.transform_in::<F4K5, 8, 4>(self.grid.input, strip, v);
                        self.products(cnt, v, mm);
                        c.transform_out::<F4K5, 8, 4>(mm, strip, self.epi, out);
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the strip layout is refused off x86-64");
    }

    /// Step 3: `Y = Aᵀ M A`, cropped, with the epilogue, into the output.
    #[inline(always)]
    fn transform_out<T: Transforms<A, M>, const A: usize, const M: usize>(
        &self,
        t0: usize,
        cnt: usize,
        _v: &mut [f32],
        mm: &mut [f32],
    ) {
        let p = self.grid.p;
        let (ho, wo, pb) = (self.ho, self.wo, self.grid.pb);
        let epi = self.epi;
        for g in (0..cnt).step_by(LANES) {
            let lanes = LANES.min(cnt - g);
            // Per lane: the offset of its top-left output in channel 0, and how many
            // of its rows and columns are inside the output (the rest is cropped).
            let at = self
                .grid
                .outputs::<M>(t0, g, cnt, (ho, wo))
                .map(|(b, off, rows, cols)| (b * p.co * ho * wo + off, rows, cols));
            for o in 0..p.co {
                let bias = epi.bias.map_or(0.0, |b| b[o]);
                let mut mt = [[Lanes::ZERO; A]; A];
                for (x, row) in mt.iter_mut().enumerate() {
                    for (y, cell) in row.iter_mut().enumerate() {
                        let at = ((x * A + y) * p.co + o) * pb + g;
                        cell.0.copy_from_slice(&mm[at..at + LANES]);
                    }
                }
                let mut y = T::output(&mt);
                if bias != 0.0 {
                    y.iter_mut()
                        .flatten()
                        .for_each(|v| *v = *v + Lanes([bias; LANES]));
                }
                for (l, &(base, rows, cols)) in at.iter().enumerate().take(lanes) {
                    let base = base + o * ho * wo;
                    for (r, row) in y.iter().enumerate().take(rows) {
                        for (s, val) in row.iter().enumerate().take(cols) {
                            let idx = base + r * wo + s;
                            let mut out = val.0[l];
                            if let Some(res) = epi.residual {
                                out += res[idx];
                            }
                            if epi.relu {
                                out = out.max(0.0);
                            }
                            // SAFETY: idx < n·co·ho·wo (the length was checked); the
                            // tile is this chunk's alone.
                            unsafe { *self.out.0.add(idx) = out };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The transform stages compiled for AVX-512 and for AVX2 + FMA.
    use super::{Ctx, Transforms};

    macro_rules! isa_stage {
        ($name:ident, $method:ident, $features:literal) => {
            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<T: Transforms<A, M>, const A: usize, const M: usize>(
                ctx: &Ctx,
                t0: usize,
                cnt: usize,
                v: &mut [f32],
                mm: &mut [f32],
            ) {
                ctx.$method::<T, A, M>(t0, cnt, v, mm)
            }
        };
    }
    isa_stage!(transform_out_avx512, transform_out, "avx512f");
    isa_stage!(transform_out_avx2, transform_out, "avx2,fma");
}
