//! The Winograd convs' filter transforms: `U = G g Gᵀ`, through which the forward
//! reads a filter, and its transpose `dW = Gᵀ M G`, the filter gradient's last step.
//!
//! In training both run in every step: the forward's weight and the data gradient's
//! flipped weight are transformed anew, and every Winograd filter gradient ends with
//! the transpose. Done filter by filter in f64, with a separate packing pass, they
//! took about 3 % of ResNet-20's training step at batch 64 (`perf`). Here 16
//! filters go at once, one per vector lane, in f32 (the precision the graph runs in),
//! as `L X Lᵀ` with the dense matrix `L` and its zero entries skipped, compiled per ISA
//! like the tile transforms.

use super::isa::{Isa, IsaKind};
use super::winograd_transform::{Lanes, WinogradTile, LANES};
use std::ops::Range;

/// The largest α (F(4×4, 5×5)'s 8) and r (5).
const MAX: usize = 8;

/// A `rows × cols` matrix of at most [`MAX`] × [`MAX`] coefficients.
struct Coefficients {
    rows: usize,
    cols: usize,
    c: [[f32; MAX]; MAX],
}

impl Coefficients {
    /// `G` (α × r) of `tile`, or its transpose.
    fn g(tile: WinogradTile, transposed: bool) -> Coefficients {
        let g = tile.g();
        let (a, r) = (tile.alpha(), tile.kernel());
        let mut c = [[0.0; MAX]; MAX];
        for (x, row) in g.iter().enumerate() {
            for (q, &v) in row.iter().enumerate() {
                if transposed {
                    c[q][x] = v as f32;
                } else {
                    c[x][q] = v as f32;
                }
            }
        }
        let (rows, cols) = if transposed { (r, a) } else { (a, r) };
        Coefficients { rows, cols, c }
    }
}

/// `U = G g Gᵀ` for the filters `filters` (a range of `0..co·ci`) of a `[co, ci, r,
/// r]` weight, in the order `c·co + o` (filter `(o, c)`), so a run of them is a run
/// down a column of each point's `[co, ci]` matrix, which its GEMM packing keeps
/// contiguous: `store(f, ξ·α + ν, values)` hands point `(ξ, ν)` of the filters from
/// `f` on, in that order, each filter of the range and point once. Threads that split
/// the filters among them call it with a range each.
pub fn filter_transform(
    isa: Isa,
    tile: WinogradTile,
    weight: &[f32],
    co: usize,
    filters: Range<usize>,
    store: impl FnMut(usize, usize, &[f32]),
) {
    let taps = tile.kernel().pow(2);
    let all = weight.len() / taps;
    assert!(
        weight.len() == all * taps && all.is_multiple_of(co.max(1)),
        "filter_transform: weight is not [co, ci, r, r]"
    );
    assert!(filters.end <= all, "filter_transform: past the filters");
    let ci = all / co.max(1);
    let load = |f: usize, e: usize, out: &mut [f32]| {
        let (mut c, mut o) = (f / co, f % co);
        for v in out {
            *v = weight[(o * ci + c) * taps + e];
            o += 1;
            if o == co {
                (c, o) = (c + 1, 0);
            }
        }
    };
    sandwich(isa, &Coefficients::g(tile, false), filters, load, store);
}

/// The filter gradient from its Winograd-domain sums: `dW = Gᵀ M G` for every
/// filter, `m` holding the α² matrices `[co, ci]` one after the other (`m[(ξ·α + ν)·
/// co·ci + o·ci + c]`), `dw` `[co, ci, r, r]`. The transpose of [`filter_transform`]
/// (the forward reads `U = G g Gᵀ`, so the gradient of `g` is `Gᵀ ∂U G`).
pub fn filter_gradient_transform(isa: Isa, tile: WinogradTile, m: &[f32], dw: &mut [f32]) {
    let (a, r) = (tile.alpha(), tile.kernel());
    let taps = r * r;
    let filters = dw.len() / taps;
    assert_eq!(dw.len(), filters * taps, "dW is not [co, ci, r, r]");
    assert_eq!(m.len(), filters * a * a, "M is not [α², co, ci]");
    let load = |f: usize, e: usize, out: &mut [f32]| {
        out.copy_from_slice(&m[e * filters + f..][..out.len()])
    };
    let store = |f0: usize, e: usize, vals: &[f32]| {
        for (k, &v) in vals.iter().enumerate() {
            dw[(f0 + k) * taps + e] = v;
        }
    };
    sandwich(isa, &Coefficients::g(tile, true), 0..filters, load, store);
}

/// `Y_f = L X_f Lᵀ` for the filters `f` in `filters` (`L` is `q × p`, `X_f` `p × p`,
/// `Y_f` `q × q`): `load(f0, i·p + j, out)` fills `out` with element `(i, j)` of the
/// filters `f0, f0 + 1, …`, and `store(f0, i·q + j, values)` takes element `(i, j)`
/// of theirs, compiled for the Isa.
fn sandwich(
    isa: Isa,
    l: &Coefficients,
    filters: Range<usize>,
    load: impl Fn(usize, usize, &mut [f32]),
    store: impl FnMut(usize, usize, &[f32]),
) {
    match isa.kind() {
        // SAFETY: the Isa proves the CPU has the features.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => unsafe { x86::sandwich_avx512(l, filters, load, store) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => unsafe { x86::sandwich_avx2(l, filters, load, store) },
        _ => sandwich_lanes(l, filters, load, store),
    }
}

/// The body of [`sandwich`]: [`LANES`] filters at a time, one per lane (a last
/// group of fewer leaves its other lanes zero and unstored).
#[inline(always)]
fn sandwich_lanes(
    l: &Coefficients,
    filters: Range<usize>,
    load: impl Fn(usize, usize, &mut [f32]),
    mut store: impl FnMut(usize, usize, &[f32]),
) {
    let (q, p) = (l.rows, l.cols);
    for f0 in filters.clone().step_by(LANES) {
        let n = LANES.min(filters.end - f0);
        let mut xin = [[Lanes::ZERO; MAX]; MAX];
        for (i, row) in xin.iter_mut().enumerate().take(p) {
            for (j, cell) in row.iter_mut().enumerate().take(p) {
                load(f0, i * p + j, &mut cell.0[..n]);
            }
        }
        // t = L X (q × p).
        let mut t = [[Lanes::ZERO; MAX]; MAX];
        for (i, row) in t.iter_mut().enumerate().take(q) {
            for (k, xrow) in xin.iter().enumerate().take(p) {
                let c = l.c[i][k];
                if c != 0.0 {
                    for (cell, &v) in row.iter_mut().zip(xrow).take(p) {
                        *cell = *cell + v * c;
                    }
                }
            }
        }
        // Y = t Lᵀ (q × q).
        for (i, row) in t.iter().enumerate().take(q) {
            for (j, lrow) in l.c.iter().enumerate().take(q) {
                let mut acc = Lanes::ZERO;
                for (&v, &c) in row.iter().zip(lrow).take(p) {
                    if c != 0.0 {
                        acc = acc + v * c;
                    }
                }
                store(f0, i * q + j, &acc.0[..n]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! [`sandwich_lanes`](super::sandwich_lanes) compiled for AVX-512 and for
    //! AVX2 + FMA.
    use super::Coefficients;

    macro_rules! isa_sandwich {
        ($name:ident, $features:literal) => {
            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                l: &Coefficients,
                filters: std::ops::Range<usize>,
                load: impl Fn(usize, usize, &mut [f32]),
                store: impl FnMut(usize, usize, &[f32]),
            ) {
                super::sandwich_lanes(l, filters, load, store)
            }
        };
    }
    isa_sandwich!(sandwich_avx512, "avx512f");
    isa_sandwich!(sandwich_avx2, "avx2,fma");
}

#[cfg(test)]
mod tests {
    use super::*;

    const TILES: [WinogradTile; 4] = [
        WinogradTile::F2,
        WinogradTile::F4,
        WinogradTile::F2K5,
        WinogradTile::F4K5,
    ];

    fn noise(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503);
                ((v >> 9) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `L X Lᵀ` of one `p × p` matrix in f64, by the definition.
    fn naive(l: &[Vec<f64>], x: &[f64], p: usize) -> Vec<f64> {
        let q = l.len();
        let mut y = vec![0.0; q * q];
        for i in 0..q {
            for j in 0..q {
                for k in 0..p {
                    for s in 0..p {
                        y[i * q + j] += l[i][k] * x[k * p + s] * l[j][s];
                    }
                }
            }
        }
        y
    }

    /// Both transforms, on every ISA, equal the f64 definition on weights `[co, ci]`
    /// whose filter counts sit around a vector group (1, 15, 16, 17, 40), with both
    /// sides above 1 where they can be, so the order `c·co + o` that
    /// `filter_transform` hands its values in differs from the weight's own, within a
    /// few f32 roundings of the largest value.
    #[test]
    fn equal_the_definition() {
        for tile in TILES {
            let (a, r) = (tile.alpha(), tile.kernel());
            let g: Vec<Vec<f64>> = tile.g().iter().map(|row| row.to_vec()).collect();
            let gt: Vec<Vec<f64>> = (0..r).map(|q| (0..a).map(|x| g[x][q]).collect()).collect();
            for (co, ci) in [(1, 1), (5, 3), (4, 4), (17, 1), (8, 5)] {
                let filters = co * ci;
                let w = noise(filters * r * r, 1);
                let m = noise(filters * a * a, 2);
                for isa in Isa::available() {
                    // u[e][o·ci + c], stored from the order c·co + o.
                    let mut u = vec![f32::NAN; filters * a * a];
                    filter_transform(isa, tile, &w, co, 0..filters, |f0, e, vals| {
                        for (k, &v) in vals.iter().enumerate() {
                            let (c, o) = ((f0 + k) / co, (f0 + k) % co);
                            u[e * filters + o * ci + c] = v;
                        }
                    });
                    let mut dw = vec![f32::NAN; filters * r * r];
                    filter_gradient_transform(isa, tile, &m, &mut dw);
                    for f in 0..filters {
                        let wf: Vec<f64> =
                            w[f * r * r..][..r * r].iter().map(|&v| v as f64).collect();
                        let want = naive(&g, &wf, r);
                        for (e, want) in want.iter().enumerate() {
                            let got = u[e * filters + f] as f64;
                            assert!(
                                (got - want).abs() < 4e-7 * (1.0 + want.abs()),
                                "{tile:?} {isa} U f{f} e{e}: {got} vs {want}"
                            );
                        }
                        let mf: Vec<f64> = (0..a * a).map(|e| m[e * filters + f] as f64).collect();
                        let want = naive(&gt, &mf, a);
                        let scale = want.iter().fold(1.0f64, |s, v| s.max(v.abs()));
                        for (e, want) in want.iter().enumerate() {
                            let got = dw[f * r * r + e] as f64;
                            assert!(
                                (got - want).abs() < 1e-6 * scale,
                                "{tile:?} {isa} dW f{f} e{e}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
