//! The Winograd transforms F(2×2, 3×3), F(4×4, 3×3), F(2×2, 5×5) and F(4×4, 5×5)
//! (Lavin & Gray 2016; interpolation points 0, ±1 for F(2×2, 3×3), 0, ±1, ±2 for the
//! two with 6×6 tiles, and 0, ±1, ±2, ±½ for F(4×4, 5×5), each with the point at
//! infinity; the matrices are the Toom-Cook ones that `wincnn` derives for those
//! points). Tiles of the same size share their input transform.
//!
//! A tile of `α × α` inputs (α = m + r − 1 for an `r × r` filter) becomes
//! `V = Bᵀ d B`; the filter becomes `U = G g Gᵀ`; the `m × m` outputs are
//! `Y = Aᵀ (U ⊙ V) A`, summed over channels in the
//! transformed domain (which is where the GEMMs are). The input and output transforms
//! work on [`LANES`] tiles at once, one tile per vector lane, written as elementwise
//! operations on `[f32; LANES]` that the compiler vectorises for whichever ISA the
//! calling function enables. They are written out by hand (not as products with the
//! dense matrices) so no multiply by 0 or 1 is spent. The filter transforms are in
//! `winograd_filter_transform`.

use std::ops::{Add, Mul, Sub};

/// Tiles per vector group (one zmm of f32, two ymm).
pub const LANES: usize = 16;

/// Which Winograd variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WinogradTile {
    /// F(2×2, 3×3): 4×4 input tiles, 2.25× fewer multiplies than direct.
    F2,
    /// F(4×4, 3×3): 6×6 input tiles, 4× fewer multiplies, less accurate.
    F4,
    /// F(2×2, 5×5): 6×6 input tiles, 2.8× fewer multiplies.
    F2K5,
    /// F(4×4, 5×5): 8×8 input tiles, 6.25× fewer multiplies (FlexNet's cropped
    /// kernels); F(6×6, 3×3)'s points, and the least accurate of the four.
    F4K5,
}

impl WinogradTile {
    /// The variant with `m × m` output tiles for a `k × k` filter, if there is one.
    pub fn new(m: usize, k: usize) -> Option<WinogradTile> {
        match (m, k) {
            (2, 3) => Some(WinogradTile::F2),
            (4, 3) => Some(WinogradTile::F4),
            (2, 5) => Some(WinogradTile::F2K5),
            (4, 5) => Some(WinogradTile::F4K5),
            _ => None,
        }
    }

    /// Outputs per tile side (m).
    pub fn m(self) -> usize {
        match self {
            WinogradTile::F2 | WinogradTile::F2K5 => 2,
            WinogradTile::F4 | WinogradTile::F4K5 => 4,
        }
    }

    /// Filter side (r).
    pub fn kernel(self) -> usize {
        match self {
            WinogradTile::F2 | WinogradTile::F4 => 3,
            WinogradTile::F2K5 | WinogradTile::F4K5 => 5,
        }
    }

    /// Inputs per tile side (α = m + r − 1).
    pub fn alpha(self) -> usize {
        self.m() + self.kernel() - 1
    }

    /// The filter transform matrix G (α × r), row by row.
    pub fn g(self) -> &'static [&'static [f64]] {
        match self {
            WinogradTile::F2 => &[
                &[1.0, 0.0, 0.0],
                &[0.5, 0.5, 0.5],
                &[0.5, -0.5, 0.5],
                &[0.0, 0.0, 1.0],
            ],
            WinogradTile::F4 => &[
                &[1.0 / 4.0, 0.0, 0.0],
                &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                &[0.0, 0.0, 1.0],
            ],
            WinogradTile::F2K5 => &[
                &[1.0 / 4.0, 0.0, 0.0, 0.0, 0.0],
                &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
                &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
                &[0.0, 0.0, 0.0, 0.0, 1.0],
            ],
            WinogradTile::F4K5 => &[
                &[1.0, 0.0, 0.0, 0.0, 0.0],
                &[-2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0],
                &[-2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0],
                &[1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0, 4.0 / 45.0, 8.0 / 45.0],
                &[1.0 / 90.0, -1.0 / 45.0, 2.0 / 45.0, -4.0 / 45.0, 8.0 / 45.0],
                &[32.0 / 45.0, 16.0 / 45.0, 8.0 / 45.0, 4.0 / 45.0, 2.0 / 45.0],
                &[
                    32.0 / 45.0,
                    -16.0 / 45.0,
                    8.0 / 45.0,
                    -4.0 / 45.0,
                    2.0 / 45.0,
                ],
                &[0.0, 0.0, 0.0, 0.0, 1.0],
            ],
        }
    }
}

/// A group of [`LANES`] values, one per tile.
#[derive(Clone, Copy)]
pub struct Lanes(pub [f32; LANES]);

impl Lanes {
    pub const ZERO: Lanes = Lanes([0.0; LANES]);
}

impl Add for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(mut self, o: Lanes) -> Lanes {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
        self
    }
}

impl Sub for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn sub(mut self, o: Lanes) -> Lanes {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a -= b;
        }
        self
    }
}

impl Mul<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(mut self, s: f32) -> Lanes {
        for a in self.0.iter_mut() {
            *a *= s;
        }
        self
    }
}

/// `Bᵀ d` for one column of an F2 tile.
#[inline(always)]
fn input_1d_f2(d: [Lanes; 4]) -> [Lanes; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `Bᵀ d` for one column of an F4 tile.
#[inline(always)]
fn input_1d_f4(d: [Lanes; 6]) -> [Lanes; 6] {
    let (p, q) = (d[4] - d[2], d[3] - d[1]);
    [
        d[0] * 4.0 - d[2] * 5.0 + d[4],
        (d[3] + d[4]) - (d[1] + d[2]) * 4.0,
        (d[4] - d[3]) + (d[1] - d[2]) * 4.0,
        p + q * 2.0,
        p - q * 2.0,
        d[1] * 4.0 - d[3] * 5.0 + d[5],
    ]
}

/// `Aᵀ m` for one column of an F2 tile.
#[inline(always)]
fn output_1d_f2(m: [Lanes; 4]) -> [Lanes; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// `Aᵀ m` for one column of an F4 tile.
#[inline(always)]
fn output_1d_f4(m: [Lanes; 6]) -> [Lanes; 4] {
    let (s1, d1) = (m[1] + m[2], m[1] - m[2]);
    let (s2, d2) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + s1 + s2,
        d1 + d2 * 2.0,
        s1 + s2 * 4.0,
        d1 + d2 * 8.0 + m[5],
    ]
}

/// `Aᵀ m` for one column of an F(2×2, 5×5) tile.
#[inline(always)]
fn output_1d_f2k5(m: [Lanes; 6]) -> [Lanes; 2] {
    [
        m[0] + (m[1] + m[2]) + (m[3] + m[4]),
        (m[1] - m[2]) + (m[3] - m[4]) * 2.0 + m[5],
    ]
}

/// `Bᵀ d` for one column of an F(4×4, 5×5) tile: the rows for the points ±a share
/// their even and odd parts.
#[inline(always)]
fn input_1d_f4k5(d: [Lanes; 8]) -> [Lanes; 8] {
    let (e1, o1) = (d[2] + d[6] - d[4] * 4.25, d[1] + d[5] - d[3] * 4.25);
    let (e2, o2) = (
        d[2] * 0.25 - d[4] * 1.25 + d[6],
        d[1] * 0.5 - d[3] * 2.5 + d[5] * 2.0,
    );
    let (e3, o3) = (
        d[2] * 4.0 - d[4] * 5.0 + d[6],
        d[1] * 2.0 - d[3] * 2.5 + d[5] * 0.5,
    );
    [
        d[0] - d[6] + (d[4] - d[2]) * 5.25,
        e1 + o1,
        e1 - o1,
        e2 + o2,
        e2 - o2,
        e3 + o3,
        e3 - o3,
        d[7] - d[1] + (d[3] - d[5]) * 5.25,
    ]
}

/// `Aᵀ m` for one column of an F(4×4, 5×5) tile.
#[inline(always)]
fn output_1d_f4k5(m: [Lanes; 8]) -> [Lanes; 4] {
    let (s1, d1) = (m[1] + m[2], m[1] - m[2]);
    let (s2, d2) = (m[3] + m[4], m[3] - m[4]);
    let (s3, d3) = (m[5] + m[6], m[5] - m[6]);
    [
        m[0] + s1 + s2 + s3,
        d1 + d2 * 2.0 + d3 * 0.5,
        s1 + s2 * 4.0 + s3 * 0.25,
        d1 + d2 * 8.0 + d3 * 0.125 + m[7],
    ]
}

/// `A m` for one column of an F2 tile's output gradient (the transpose of
/// [`output_1d_f2`]).
#[inline(always)]
fn output_t_1d_f2(m: [Lanes; 2]) -> [Lanes; 4] {
    [m[0], m[0] + m[1], m[0] - m[1], Lanes::ZERO - m[1]]
}

/// `A m` for one column of an F4 tile's output gradient.
#[inline(always)]
fn output_t_1d_f4(m: [Lanes; 4]) -> [Lanes; 6] {
    let (e, o) = (m[0] + m[2], m[1] + m[3]);
    let (e2, o2) = (m[0] + m[2] * 4.0, m[1] * 2.0 + m[3] * 8.0);
    [m[0], e + o, e - o, e2 + o2, e2 - o2, m[3]]
}

/// `A m` for one column of an F(2×2, 5×5) tile's output gradient.
#[inline(always)]
fn output_t_1d_f2k5(m: [Lanes; 2]) -> [Lanes; 6] {
    let o2 = m[1] * 2.0;
    [m[0], m[0] + m[1], m[0] - m[1], m[0] + o2, m[0] - o2, m[1]]
}

/// `A m` for one column of an F(4×4, 5×5) tile's output gradient.
#[inline(always)]
fn output_t_1d_f4k5(m: [Lanes; 4]) -> [Lanes; 8] {
    let (e1, o1) = (m[0] + m[2], m[1] + m[3]);
    let (e2, o2) = (m[0] + m[2] * 4.0, m[1] * 2.0 + m[3] * 8.0);
    let (e3, o3) = (m[0] + m[2] * 0.25, m[1] * 0.5 + m[3] * 0.125);
    [
        m[0],
        e1 + o1,
        e1 - o1,
        e2 + o2,
        e2 - o2,
        e3 + o3,
        e3 - o3,
        m[3],
    ]
}

/// Applies a 1-D transform to every column, then to every row, of an `A × A` grid:
/// `T d Tᵀ` for the transform `T` that `f` computes.
#[inline(always)]
fn two_d<const A: usize, const O: usize>(
    d: &[[Lanes; A]; A],
    f: impl Fn([Lanes; A]) -> [Lanes; O],
) -> [[Lanes; O]; O] {
    let mut cols = [[Lanes::ZERO; A]; O]; // cols[x][j] = (T d)[x][j]
    for j in 0..A {
        let t = f(std::array::from_fn(|i| d[i][j]));
        for x in 0..O {
            cols[x][j] = t[x];
        }
    }
    std::array::from_fn(|x| f(cols[x]))
}

/// `Bᵀ d B` of an F2 tile group.
#[inline(always)]
pub fn input_f2(d: &[[Lanes; 4]; 4]) -> [[Lanes; 4]; 4] {
    two_d(d, input_1d_f2)
}

/// `Bᵀ d B` of an F4 tile group.
#[inline(always)]
pub fn input_f4(d: &[[Lanes; 6]; 6]) -> [[Lanes; 6]; 6] {
    two_d(d, input_1d_f4)
}

/// `Aᵀ m A` of an F2 tile group.
#[inline(always)]
pub fn output_f2(m: &[[Lanes; 4]; 4]) -> [[Lanes; 2]; 2] {
    two_d(m, output_1d_f2)
}

/// `Aᵀ m A` of an F4 tile group.
#[inline(always)]
pub fn output_f4(m: &[[Lanes; 6]; 6]) -> [[Lanes; 4]; 4] {
    two_d(m, output_1d_f4)
}

/// The transforms of one variant, for static dispatch (always inlined, so they
/// vectorise for the ISA of the function that calls them).
pub trait Transforms<const A: usize, const M: usize> {
    /// `Bᵀ d B` of a tile group.
    fn input(d: &[[Lanes; A]; A]) -> [[Lanes; A]; A];
    /// `Aᵀ m A` of a tile group.
    fn output(m: &[[Lanes; A]; A]) -> [[Lanes; M]; M];
    /// `Bᵀ d` of one column.
    fn input_1d(d: [Lanes; A]) -> [Lanes; A];
    /// `Aᵀ m` of one column.
    fn output_1d(m: [Lanes; A]) -> [Lanes; M];
    /// `A m` of one column of an output gradient (the transpose of `output_1d`).
    fn output_t_1d(m: [Lanes; M]) -> [Lanes; A];
    /// `A m Aᵀ` of an output-gradient tile group: the transpose of [`Self::output`],
    /// which the filter gradient multiplies with [`Self::input`].
    #[inline(always)]
    fn output_t(m: &[[Lanes; M]; M]) -> [[Lanes; A]; A] {
        two_d(m, Self::output_t_1d)
    }
}

/// F(2×2, 3×3).
pub struct F2;
impl Transforms<4, 2> for F2 {
    #[inline(always)]
    fn input(d: &[[Lanes; 4]; 4]) -> [[Lanes; 4]; 4] {
        input_f2(d)
    }
    #[inline(always)]
    fn output(m: &[[Lanes; 4]; 4]) -> [[Lanes; 2]; 2] {
        output_f2(m)
    }
    #[inline(always)]
    fn input_1d(d: [Lanes; 4]) -> [Lanes; 4] {
        input_1d_f2(d)
    }
    #[inline(always)]
    fn output_1d(m: [Lanes; 4]) -> [Lanes; 2] {
        output_1d_f2(m)
    }
    #[inline(always)]
    fn output_t_1d(m: [Lanes; 2]) -> [Lanes; 4] {
        output_t_1d_f2(m)
    }
}

/// F(4×4, 3×3).
pub struct F4;
impl Transforms<6, 4> for F4 {
    #[inline(always)]
    fn input(d: &[[Lanes; 6]; 6]) -> [[Lanes; 6]; 6] {
        input_f4(d)
    }
    #[inline(always)]
    fn output(m: &[[Lanes; 6]; 6]) -> [[Lanes; 4]; 4] {
        output_f4(m)
    }
    #[inline(always)]
    fn input_1d(d: [Lanes; 6]) -> [Lanes; 6] {
        input_1d_f4(d)
    }
    #[inline(always)]
    fn output_1d(m: [Lanes; 6]) -> [Lanes; 4] {
        output_1d_f4(m)
    }
    #[inline(always)]
    fn output_t_1d(m: [Lanes; 4]) -> [Lanes; 6] {
        output_t_1d_f4(m)
    }
}

/// F(2×2, 5×5): F4's tiles and input transform.
pub struct F2K5;
impl Transforms<6, 2> for F2K5 {
    #[inline(always)]
    fn input(d: &[[Lanes; 6]; 6]) -> [[Lanes; 6]; 6] {
        input_f4(d)
    }
    #[inline(always)]
    fn output(m: &[[Lanes; 6]; 6]) -> [[Lanes; 2]; 2] {
        two_d(m, output_1d_f2k5)
    }
    #[inline(always)]
    fn input_1d(d: [Lanes; 6]) -> [Lanes; 6] {
        input_1d_f4(d)
    }
    #[inline(always)]
    fn output_1d(m: [Lanes; 6]) -> [Lanes; 2] {
        output_1d_f2k5(m)
    }
    #[inline(always)]
    fn output_t_1d(m: [Lanes; 2]) -> [Lanes; 6] {
        output_t_1d_f2k5(m)
    }
}

/// F(4×4, 5×5).
pub struct F4K5;
impl Transforms<8, 4> for F4K5 {
    #[inline(always)]
    fn input(d: &[[Lanes; 8]; 8]) -> [[Lanes; 8]; 8] {
        two_d(d, input_1d_f4k5)
    }
    #[inline(always)]
    fn output(m: &[[Lanes; 8]; 8]) -> [[Lanes; 4]; 4] {
        two_d(m, output_1d_f4k5)
    }
    #[inline(always)]
    fn input_1d(d: [Lanes; 8]) -> [Lanes; 8] {
        input_1d_f4k5(d)
    }
    #[inline(always)]
    fn output_1d(m: [Lanes; 8]) -> [Lanes; 4] {
        output_1d_f4k5(m)
    }
    #[inline(always)]
    fn output_t_1d(m: [Lanes; 4]) -> [Lanes; 8] {
        output_t_1d_f4k5(m)
    }
}
