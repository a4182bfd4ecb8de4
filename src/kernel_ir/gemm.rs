//! A strided matrix product `C[i, j] = Σ_k A[i, k]·B[k, j]` for the small products
//! of training: the linear layer's backward (`dx = dy·W`, `dW = dyᵀ·x`), the LC fold
//! (`W_c = C·W`) and its backward (`dW = Cᵀ·dY`, `dC = dY·Wᵀ`). Each operand is read
//! through (row, column) element strides, so a transpose is a stride swap, not a copy.
//! Where `B`'s rows are contiguous and `n` allows, a work-item computes `V`
//! consecutive columns with vector loads of `B`.

use super::build::*;
use super::{Kernel, Param, Ty};

/// `(row stride, column stride)` of a matrix operand, in elements.
pub type Strides = (usize, usize);

/// `c [m, n]` (row-major) from `a` and `b` read through their strides; `k` is the
/// contracted length.
pub fn matmul(
    name: &str,
    m: usize,
    n: usize,
    k: usize,
    a: Strides,
    b: Strides,
    vector: u8,
) -> Kernel {
    let v = [8u8, 4, 1]
        .into_iter()
        .find(|&w| w <= vector && b.1 == 1 && n.is_multiple_of(w as usize))
        .unwrap_or(1);
    let vw = v as usize;
    let b_at = var("kk") * b.0 + var("j0") * b.1;
    let body = vec![
        let_("j0", Ty::I32, gid(0) * vw),
        let_("i", Ty::I32, gid(1)),
        let_("acc", Ty::f32x(v), splat(float(0.0), v)),
        for_(
            "kk",
            int(0),
            int(k),
            false,
            vec![assign(
                "acc",
                fma(
                    splat(load("a", var("i") * a.0 + var("kk") * a.1, 1), v),
                    load("b", b_at, v),
                    var("acc"),
                ),
            )],
        ),
        store("c", var("i") * n + var("j0"), var("acc"), v),
    ];
    Kernel {
        name: name.to_string(),
        params: vec![
            Param {
                name: "a".into(),
                read_only: true,
            },
            Param {
                name: "b".into(),
                read_only: true,
            },
            Param {
                name: "c".into(),
                read_only: false,
            },
        ],
        body,
        grid: vec![n / vw, m],
        local: None,
        flops: 2 * (m * n * k) as u64,
    }
}
