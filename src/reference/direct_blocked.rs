//! The register-blocked direct convolution the interpreter runs for `algo = direct` on
//! f32 when the CPU has AVX2 and FMA: the same sum as [`conv`](super::conv::conv),
//! computed so that the FMA units, not memory, set the pace.
//!
//! - The input is zero-padded once, and the weights are repacked once per call into
//!   `[group][channel block][ci][tap][BLK]`: `BLK` output channels (8 or 16) of one
//!   input channel and tap are one or two contiguous vectors.
//! - The output plane of one batch item is walked as a flat list of positions
//!   (row-major, so a tile may wrap to the next row). A tile is `N` positions ×
//!   `BLK` channels: `N·BLK/8` = 12 `__m256` accumulators, each holding 8 output
//!   channels of one position. For every input channel and tap the kernel loads the
//!   `BLK` weights (1–2 vector loads), broadcasts the input value under each of the
//!   `N` positions (one scalar broadcast each: any stride or dilation is just an
//!   address) and issues 12 FMAs. The `ci·taps` input offsets are one precomputed
//!   table, so the inner loop is a single loop with no bounds checks.
//! - A task (rayon) is one batch item × group × channel block × run of whole tiles;
//!   the last tile of a plane repeats its last position instead of reading past it.
//!   Channels beyond the group's count are zero weights and are not stored.
//! - The padded input and packed weights live in per-thread scratch buffers reused
//!   across calls (small convs would otherwise pay for fresh pages every time), and
//!   small copies stay on the calling thread.
//!
//! Only the summation order differs from `conv` (input channels outer, taps inner,
//! per output, as there), so results agree to rounding; the tests check it on many
//! geometries. [`blocked_applies`] says where this path runs; elsewhere (other CPUs,
//! f64, groups with fewer than [`MIN_CHANNELS`] output channels) `conv_direct` runs the
//! tiled loop of [`direct_tiled`](super::direct_tiled).

use std::any::Any;
use std::cell::RefCell;

use rayon::prelude::*;

use super::conv::{conv_out_len, pad_planes, ConvParams};
use crate::tensor::{Scalar, Tensor};

/// Output positions per register tile.
pub const TILE: usize = 6;
/// Groups with fewer output channels than this run the tiled loop: with one channel
/// (depthwise) 7 of 8 lanes would idle, and the tiled loop was measured faster.
pub const MIN_CHANNELS: usize = 2;

/// Output channels per block for a group of `cog` output channels: two vectors when
/// there are at least 16, else one.
pub fn block_channels(cog: usize) -> usize {
    if cog >= 16 {
        16
    } else {
        8
    }
}

/// Whether the blocked kernel runs a conv with `cog` output channels per group on
/// this CPU (the geometry itself never excludes it).
pub fn blocked_applies(cog: usize) -> bool {
    cog >= MIN_CHANNELS && simd_available()
}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The blocked conv for `T = f32` on an AVX2+FMA CPU, `None` wherever it does not
/// apply (another scalar type, another CPU, malformed shapes: the caller's fallback
/// reports those). Shapes are `x` `[B, Ci, L]` / `[B, Ci, H, W]`, `w`
/// `[Co, Ci/groups, k…]`, as in `conv`.
pub fn conv_blocked<T: Scalar>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&[T]>,
    p: &ConvParams,
) -> Option<Tensor<T>> {
    let xf = (x as &dyn Any).downcast_ref::<Tensor<f32>>()?;
    let wf = (w as &dyn Any).downcast_ref::<Tensor<f32>>()?;
    // Exact for f32 (`to_f64` widens, the cast narrows back).
    let bf: Option<Vec<f32>> = bias.map(|b| b.iter().map(|v| v.to_f64() as f32).collect());
    let out = conv_f32(xf, wf, bf.as_deref(), p)?;
    let boxed: Box<dyn Any> = Box::new(out);
    boxed.downcast::<Tensor<T>>().ok().map(|t| *t)
}

/// Sizes shared by every task of one call.
struct Geom {
    /// Padded plane `Hp·Wp`, input channels in all.
    hpwp: usize,
    ci: usize,
    /// Output positions of one plane.
    plane: usize,
    /// Per output position, the offset of its receptive field's first tap in a
    /// padded input plane.
    bases: Vec<usize>,
}

fn conv_f32(
    x: &Tensor<f32>,
    w: &Tensor<f32>,
    bias: Option<&[f32]>,
    p: &ConvParams,
) -> Option<Tensor<f32>> {
    let nd = x.ndim().checked_sub(2)?;
    let ok = (1..=2).contains(&nd)
        && w.ndim() == nd + 2
        && p.stride.len() == nd
        && p.padding.len() == nd
        && p.dilation.len() == nd;
    if !ok {
        return None;
    }
    // 1D runs as 2D with a unit height.
    let lift4 = |s: &[usize]| -> [usize; 4] {
        if nd == 1 {
            [s[0], s[1], 1, s[2]]
        } else {
            [s[0], s[1], s[2], s[3]]
        }
    };
    let [b, ci, h, wd] = lift4(&x.shape);
    let [co, cig, kh, kw] = lift4(&w.shape);
    let lift = |v: &[usize]| if nd == 1 { [1, v[0]] } else { [v[0], v[1]] };
    let ([sy, sx], [dy, dx]) = (lift(&p.stride), lift(&p.dilation));
    let [py, px] = if nd == 1 {
        [(0, 0), p.padding[0]]
    } else {
        [p.padding[0], p.padding[1]]
    };
    let g = p.groups;
    if g == 0 || ci % g != 0 || co % g != 0 || cig != ci / g || bias.is_some_and(|v| v.len() != co)
    {
        return None;
    }
    let cog = co / g;
    if !blocked_applies(cog) {
        return None;
    }
    let ho = conv_out_len(h, kh, sy, py, dy)?;
    let wo = conv_out_len(wd, kw, sx, px, dx)?;
    let mut out_shape = vec![b, co];
    if nd == 2 {
        out_shape.push(ho);
    }
    out_shape.push(wo);
    let mut out = Tensor::zeros(out_shape);
    if out.numel() == 0 || cig == 0 {
        if let Some(bv) = bias {
            for (i, v) in out.data.iter_mut().enumerate() {
                *v = bv[(i / (ho * wo).max(1)) % co];
            }
        }
        return Some(out);
    }
    let (hp, wp) = (h + py.0 + py.1, wd + px.0 + px.1);
    with_scratch(|xbuf, wbuf| {
        let xp: &[f32] = if hp == h && wp == wd {
            &x.data
        } else {
            pad_planes(xbuf, &x.data, [b * ci, h, wd], [py.0, px.0], [hp, wp]);
            xbuf
        };
        let taps = kh * kw;
        let offsets: Vec<usize> = (0..cig)
            .flat_map(|c| {
                (0..kh).flat_map(move |ty| (0..kw).map(move |tx| (c * hp + ty * dy) * wp + tx * dx))
            })
            .collect();
        let geom = Geom {
            hpwp: hp * wp,
            ci,
            plane: ho * wo,
            bases: (0..ho)
                .flat_map(|oy| (0..wo).map(move |ox| oy * sy * wp + ox * sx))
                .collect(),
        };
        let blk = block_channels(cog);
        let ncob = cog.div_ceil(blk);
        pack_weights(wbuf, &w.data, g, cog, cig * taps, blk);
        let wpk: &[f32] = wbuf;
        // Enough tasks for every thread, each a run of whole tiles.
        let tiles = geom.plane.div_ceil(TILE);
        let base_tasks = b * g * ncob;
        let want = 4 * rayon::current_num_threads();
        let nchunks = want.div_ceil(base_tasks).clamp(1, tiles);
        let chunk = tiles.div_ceil(nchunks) * TILE;
        let nchunks = geom.plane.div_ceil(chunk);
        // Task (b, g, block, chunk) gets its channels' pieces of the output, in order.
        let mut tasks: Vec<Vec<&mut [f32]>> =
            (0..base_tasks * nchunks).map(|_| Vec::new()).collect();
        for (bc, chan) in out.data.chunks_mut(geom.plane).enumerate() {
            let (bi, o) = (bc / co, bc % co);
            let (gi, oc) = (o / cog, o % cog);
            let first = ((bi * g + gi) * ncob + oc / blk) * nchunks;
            for (k, piece) in chan.chunks_mut(chunk).enumerate() {
                tasks[first + k].push(piece);
            }
        }
        tasks.par_iter_mut().enumerate().for_each(|(t, pieces)| {
            let (rest, k) = (t / nchunks, t % nchunks);
            let (bg, cb) = (rest / ncob, rest % ncob);
            let (bi, gi) = (bg / g, bg % g);
            let x0 = (bi * geom.ci + gi * cig) * geom.hpwp;
            let xs = &xp[x0..x0 + cig * geom.hpwp];
            let ws = &wpk[(gi * ncob + cb) * cig * taps * blk..][..cig * taps * blk];
            let o0 = gi * cog + cb * blk;
            let bias_blk = bias.map(|v| &v[o0..o0 + pieces.len()]);
            let p0 = k * chunk;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `blocked_applies` checked that the CPU has AVX2 and FMA.
            unsafe {
                if blk == 16 {
                    avx::run_task::<2>(&geom, xs, ws, &offsets, bias_blk, pieces, p0);
                } else {
                    avx::run_task::<1>(&geom, xs, ws, &offsets, bias_blk, pieces, p0);
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (xs, ws, bias_blk, p0);
        });
        drop(tasks);
    });
    Some(out)
}

/// Scratch buffers larger than this many floats are freed after the call.
const KEEP: usize = 1 << 24;

thread_local! {
    /// The padded input and the packed weights of the last call on this thread, kept
    /// so that small convs do not pay for fresh pages every time.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` on this thread's scratch buffers (fresh ones when a nested call holds them).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut guard) => {
            let (xb, wb) = &mut *guard;
            let r = f(xb, wb);
            for v in [xb, wb] {
                if v.capacity() > KEEP {
                    *v = Vec::new();
                }
            }
            r
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

/// `w` `[G·cog, k]` into `dst` as `[G][block][k][blk]`, zeros past `cog`.
fn pack_weights(dst: &mut Vec<f32>, w: &[f32], g: usize, cog: usize, k: usize, blk: usize) {
    let ncob = cog.div_ceil(blk);
    dst.clear();
    dst.reserve(g * ncob * k * blk);
    for gi in 0..g {
        for cb in 0..ncob {
            for i in 0..k {
                dst.extend((cb * blk..(cb + 1) * blk).map(|oc| {
                    if oc < cog {
                        w[(gi * cog + oc) * k + i]
                    } else {
                        0.0
                    }
                }));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Geom, TILE};
    use std::arch::x86_64::*;

    /// One task: every tile of positions `p0 .. p0 + pieces[0].len()` for the `M·8`
    /// channels of one block (`pieces[m]` is channel `m`'s run of the output).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_task<const M: usize>(
        geom: &Geom,
        xs: &[f32],
        ws: &[f32],
        offsets: &[usize],
        bias: Option<&[f32]>,
        pieces: &mut [&mut [f32]],
        p0: usize,
    ) {
        let len = pieces.first().map_or(0, |p| p.len());
        let bases_of = &geom.bases[p0..p0 + len];
        // Every read is `base + offset` of valid positions: check the largest once.
        let reach = geom.bases.last().copied().unwrap_or(0) + offsets.last().copied().unwrap_or(0);
        assert!(reach < xs.len() && offsets.len() * M * 8 <= ws.len() && pieces.len() <= M * 8);
        let mut bias_blk = [0.0f32; 16];
        if let Some(b) = bias {
            bias_blk[..b.len()].copy_from_slice(b);
        }
        // One tile's sums, position-major: `buf[j·M·8 + c]` is channel `c` at position `j`.
        let mut buf = [0.0f32; TILE * 16];
        for t0 in (0..len).step_by(TILE) {
            let n = TILE.min(len - t0);
            let bases: [usize; TILE] = std::array::from_fn(|j| bases_of[t0 + j.min(n - 1)]);
            // SAFETY: every read is within `reach` (asserted above) or `ws`.
            let acc = unsafe { tile::<M>(xs.as_ptr(), ws.as_ptr(), offsets, bases) };
            for (j, pos) in acc.iter().enumerate() {
                for (m, v) in pos.iter().enumerate() {
                    // SAFETY: `buf` holds TILE·16 ≥ (j·M + m + 1)·8 floats.
                    unsafe { _mm256_storeu_ps(buf.as_mut_ptr().add((j * M + m) * 8), *v) };
                }
            }
            for (c, piece) in pieces.iter_mut().enumerate() {
                let bc = bias_blk[c];
                if n == TILE {
                    let dst: &mut [f32; TILE] = (&mut piece[t0..t0 + TILE]).try_into().unwrap();
                    for (j, y) in dst.iter_mut().enumerate() {
                        *y = buf[j * M * 8 + c] + bc;
                    }
                } else {
                    for (j, y) in piece[t0..t0 + n].iter_mut().enumerate() {
                        *y = buf[j * M * 8 + c] + bc;
                    }
                }
            }
        }
    }

    /// The accumulators of one tile: `M` vectors of 8 channels at each of `TILE`
    /// positions, summed over every (input channel, tap) in `offsets`.
    ///
    /// # Safety
    /// AVX2+FMA; `x + bases[j] + offsets[i]` readable for all `i, j`; `w` holds
    /// `offsets.len() · M · 8` floats.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const M: usize>(
        x: *const f32,
        w: *const f32,
        offsets: &[usize],
        bases: [usize; TILE],
    ) -> [[__m256; M]; TILE] {
        let mut acc = [[_mm256_setzero_ps(); M]; TILE];
        let px: [*const f32; TILE] = std::array::from_fn(|j| unsafe { x.add(bases[j]) });
        let mut wp = w;
        for &off in offsets {
            let wv: [__m256; M] =
                std::array::from_fn(|m| unsafe { _mm256_loadu_ps(wp.add(m * 8)) });
            for j in 0..TILE {
                let xv = unsafe { _mm256_broadcast_ss(&*px[j].add(off)) };
                for m in 0..M {
                    acc[j][m] = _mm256_fmadd_ps(wv[m], xv, acc[j][m]);
                }
            }
            wp = unsafe { wp.add(M * 8) };
        }
        acc
    }
}
