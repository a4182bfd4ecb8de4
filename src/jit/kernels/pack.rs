//! Packing GEMM operands into the panel layouts the micro-kernels read.
//!
//! A block of A (rows `i..i+mr`, columns `p0..p0+kc`) becomes `kc` groups of `mr`
//! floats (one column of the panel after another); a block of B (rows `p0..p0+kc`,
//! columns `j..j+nr`) becomes `kc` groups of `nr` floats. Rows or columns past the
//! matrix edge are zero, so the micro-kernel never needs a bounds check. Packing makes
//! any stride (a transposed operand, an im2col view) cost the same as a contiguous one.

/// A strided read-only view of a row-major-or-not f32 matrix: element `(i, j)` is
/// `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix (`cols` is the row stride).
    pub fn row_major(data: &'a [f32], cols: usize) -> MatRef<'a> {
        MatRef {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a contiguous row-major matrix with `cols` columns: element
    /// `(i, j)` of the view is element `(j, i)` of the matrix.
    pub fn transposed(data: &'a [f32], cols: usize) -> MatRef<'a> {
        MatRef {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// Whether every element of a `rows × cols` view lies inside `data`.
    pub fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Packs rows `i0..i0+rows` (`rows ≤ mr`), columns `p0..p0+kc` of `a` into `dst`
/// (`kc·mr` floats), zero-filling rows past `rows`.
pub fn pack_a_panel(
    a: MatRef,
    i0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    dst: &mut [f32],
) {
    debug_assert!(dst.len() >= kc * mr && rows <= mr);
    if rows < mr {
        dst[..kc * mr].fill(0.0);
    }
    for r in 0..rows {
        let base = (i0 + r) * a.rs + p0 * a.cs;
        if a.cs == 1 {
            let src = &a.data[base..base + kc];
            for (p, &v) in src.iter().enumerate() {
                dst[p * mr + r] = v;
            }
        } else {
            for p in 0..kc {
                dst[p * mr + r] = a.data[base + p * a.cs];
            }
        }
    }
}

/// Packs rows `p0..p0+kc`, columns `j0..j0+cols` (`cols ≤ nr`) of `b` into `dst`
/// (`kc·nr` floats), zero-filling columns past `cols`.
pub fn pack_b_panel(
    b: MatRef,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
    dst: &mut [f32],
) {
    debug_assert!(dst.len() >= kc * nr && cols <= nr);
    for p in 0..kc {
        let row = &mut dst[p * nr..(p + 1) * nr];
        let base = (p0 + p) * b.rs + j0 * b.cs;
        if b.cs == 1 {
            row[..cols].copy_from_slice(&b.data[base..base + cols]);
        } else {
            for (j, v) in row[..cols].iter_mut().enumerate() {
                *v = b.data[base + j * b.cs];
            }
        }
        row[cols..].fill(0.0);
    }
}
