//! Mixed-radix FFT kernels (radices 8, 4, 2, 3, 5, 7) in the kernel IR: the Stockham
//! autosort algorithm, one launch per stage, out of place, natural order in and out.
//!
//! Data layout: a batch of `rows` complex transforms, rows fastest. Element `i` of the
//! transform axis at position `o` of the other axis lives at float offset
//! `o·ostride + i·istride`, its real parts for all rows at `+0..rows` and its imaginary
//! parts at `+rows..2·rows`. A work-item computes one radix-`R` butterfly for `V`
//! consecutive rows with `V`-lane vectors, so every load and store is a full vector and
//! the twiddles (scalars, from a precomputed table of the `n`-th roots of unity) are
//! shared by the lanes. A 2D transform is two axes over the layout `[n1][n2][2][rows]`.
//!
//! Stage `s` with radix `R` after stages whose radices multiply to `Ns`: butterfly `j`
//! reads `x[j + r·n/R]`, twiddled by `W^(r·(j mod Ns)·n/(Ns·R))`, and writes output `q`
//! to `y[(j div Ns)·Ns·R + (j mod Ns) + q·Ns]`. Forward transforms use `W = e^(−2πi/n)`
//! and inverse ones `e^(+2πi/n)`, unnormalised (rustfft's conventions).

use super::build::*;
use super::{Expr, Kernel, Stmt, Ty};

/// The radices of a length-`n` transform, in stage order: 8s first, then 4, 2, 3, 5,
/// 7 (so 1568 = 8·4·7·7 and 2048 = 8·8·8·4 take four stages each). `None` when `n` has
/// another prime factor.
pub fn radices(n: usize) -> Option<Vec<usize>> {
    let mut m = n.max(1);
    let mut out = Vec::new();
    for p in [8, 4, 2, 3, 5, 7] {
        while m.is_multiple_of(p) {
            out.push(p);
            m /= p;
        }
    }
    (m == 1).then_some(out)
}

/// The `n`-th roots of unity `W^m`, `m < n`, as `[re, im]` pairs: `e^(∓2πi·m/n)`.
pub fn twiddles(n: usize, inverse: bool) -> Vec<f32> {
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut t = Vec::with_capacity(2 * n);
    for m in 0..n {
        let a = sign * 2.0 * std::f64::consts::PI * m as f64 / n as f64;
        t.push(a.cos() as f32);
        t.push(a.sin() as f32);
    }
    t
}

/// One transform axis of a batched, row-interleaved complex array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FftAxis {
    /// Transform length.
    pub n: usize,
    /// Transforms side by side (a multiple of the vector width).
    pub rows: usize,
    /// Floats between consecutive elements of a transform.
    pub istride: usize,
    /// Positions along the other axis, and the floats between them.
    pub others: usize,
    pub ostride: usize,
    pub inverse: bool,
}

impl FftAxis {
    /// A 1D transform of `n` points over `rows` rows (layout `[n][2][rows]`).
    pub fn line(n: usize, rows: usize, inverse: bool) -> FftAxis {
        FftAxis {
            n,
            rows,
            istride: 2 * rows,
            others: 1,
            ostride: 0,
            inverse,
        }
    }

    /// Axis 0 (`n1`, the rows of the plane) or 1 (`n2`) of `[n1][n2][2][rows]`.
    pub fn plane(axis: usize, n1: usize, n2: usize, rows: usize, inverse: bool) -> FftAxis {
        let (n, istride, others, ostride) = if axis == 0 {
            (n1, n2 * 2 * rows, n2, 2 * rows)
        } else {
            (n2, 2 * rows, n1, n2 * 2 * rows)
        };
        FftAxis {
            n,
            rows,
            istride,
            others,
            ostride,
            inverse,
        }
    }
}

/// A complex vector value: the names of its real and imaginary parts.
#[derive(Clone)]
struct C {
    re: Expr,
    im: Expr,
}

/// Emits `let` bindings for intermediate complex values with unique names.
/// Outputs are stored as soon as the butterfly computes them (output `q` at
/// `d + q·step` and its imaginary part `im` floats further), so few stay live.
struct Emitter {
    body: Vec<Stmt>,
    ty: Ty,
    next: usize,
    step: usize,
    im: usize,
}

impl Emitter {
    fn bind(&mut self, re: Expr, im: Expr) -> C {
        let (r, i) = (format!("r{}", self.next), format!("i{}", self.next));
        self.next += 1;
        self.body.push(let_(&r, self.ty, re));
        self.body.push(let_(&i, self.ty, im));
        C {
            re: var(&r),
            im: var(&i),
        }
    }
    fn add(&mut self, a: &C, b: &C) -> C {
        self.bind(a.re.clone() + b.re.clone(), a.im.clone() + b.im.clone())
    }
    fn sub(&mut self, a: &C, b: &C) -> C {
        self.bind(a.re.clone() - b.re.clone(), a.im.clone() - b.im.clone())
    }
    /// Stores output `q`.
    fn out(&mut self, q: usize, c: &C) {
        let w = self.ty.width;
        let at = var("d") + q * self.step;
        self.body.push(store("y", at.clone(), c.re.clone(), w));
        self.body.push(store("y", at + self.im, c.im.clone(), w));
    }
    /// `a·(c + i·s)` for a constant `c + i·s`.
    fn rotate(&mut self, a: &C, c: f64, s: f64) -> C {
        let w = self.ty.width;
        self.bind(
            scaled(a.re.clone(), c, w) - scaled(a.im.clone(), s, w),
            scaled(a.re.clone(), s, w) + scaled(a.im.clone(), c, w),
        )
    }
    /// `a + σ·i·b` for σ = ±1.
    fn add_i(&mut self, a: &C, b: &C, sigma: f64) -> C {
        if sigma > 0.0 {
            self.bind(a.re.clone() - b.im.clone(), a.im.clone() + b.re.clone())
        } else {
            self.bind(a.re.clone() + b.im.clone(), a.im.clone() - b.re.clone())
        }
    }
}

fn scaled(e: Expr, c: f64, w: u8) -> Expr {
    e * splat(float(c as f32), w)
}

/// The 4-point DFT of `x`.
fn dft4(e: &mut Emitter, x: [&C; 4], sigma: f64) -> [C; 4] {
    let a = e.add(x[0], x[2]);
    let b = e.sub(x[0], x[2]);
    let c = e.add(x[1], x[3]);
    let d = e.sub(x[1], x[3]);
    [
        e.add(&a, &c),
        e.add_i(&b, &d, sigma),
        e.sub(&a, &c),
        e.add_i(&b, &d, -sigma),
    ]
}

/// The DFT of `x` (`R` values), each output stored as soon as it is known: radix 2
/// and 4 by sums and differences, 8 as two radix-4 DFTs (even and odd inputs) joined
/// by the eighth roots of unity, odd radices by the symmetric pairs `x_r ± x_(R−r)`
/// (half the multiplications, and 2·(R−1) live vectors rather than R²).
fn butterfly(e: &mut Emitter, x: &[C], inverse: bool) {
    let sigma = if inverse { 1.0 } else { -1.0 };
    let w = e.ty.width;
    match x.len() {
        1 => e.out(0, &x[0]),
        2 => {
            let s = e.add(&x[0], &x[1]);
            e.out(0, &s);
            let d = e.sub(&x[0], &x[1]);
            e.out(1, &d);
        }
        4 => {
            let y = dft4(e, [&x[0], &x[1], &x[2], &x[3]], sigma);
            for (q, c) in y.iter().enumerate() {
                e.out(q, c);
            }
        }
        8 => {
            let ev = dft4(e, [&x[0], &x[2], &x[4], &x[6]], sigma);
            let od = dft4(e, [&x[1], &x[3], &x[5], &x[7]], sigma);
            for q in 0..4 {
                let (lo, hi) = if q == 2 {
                    (
                        e.add_i(&ev[q], &od[q], sigma),
                        e.add_i(&ev[q], &od[q], -sigma),
                    )
                } else {
                    let t = if q == 0 {
                        od[q].clone()
                    } else {
                        let th = sigma * std::f64::consts::PI * q as f64 / 4.0;
                        e.rotate(&od[q], th.cos(), th.sin())
                    };
                    (e.add(&ev[q], &t), e.sub(&ev[q], &t))
                };
                e.out(q, &lo);
                e.out(q + 4, &hi);
            }
        }
        r => {
            let h = (r - 1) / 2;
            let a: Vec<C> = (1..=h).map(|k| e.add(&x[k], &x[r - k])).collect();
            let b: Vec<C> = (1..=h).map(|k| e.sub(&x[k], &x[r - k])).collect();
            let (mut s_re, mut s_im) = (x[0].re.clone(), x[0].im.clone());
            for ak in &a {
                s_re = s_re + ak.re.clone();
                s_im = s_im + ak.im.clone();
            }
            let s = e.bind(s_re, s_im);
            e.out(0, &s);
            for q in 1..=h {
                let (mut c_re, mut c_im) = (x[0].re.clone(), x[0].im.clone());
                let mut terms: Vec<(Expr, Expr)> = Vec::new();
                for k in 1..=h {
                    let t = 2.0 * std::f64::consts::PI * (q * k % r) as f64 / r as f64;
                    c_re = c_re + scaled(a[k - 1].re.clone(), t.cos(), w);
                    c_im = c_im + scaled(a[k - 1].im.clone(), t.cos(), w);
                    terms.push((
                        scaled(b[k - 1].re.clone(), t.sin(), w),
                        scaled(b[k - 1].im.clone(), t.sin(), w),
                    ));
                }
                let (mut d_re, mut d_im) = terms[0].clone();
                for (tr, ti) in terms.into_iter().skip(1) {
                    d_re = d_re + tr;
                    d_im = d_im + ti;
                }
                let c = e.bind(c_re, c_im);
                let d = e.bind(d_re, d_im);
                let lo = e.add_i(&c, &d, sigma);
                e.out(q, &lo);
                let hi = e.add_i(&c, &d, -sigma);
                e.out(r - q, &hi);
            }
        }
    }
}

/// One Stockham stage: reads `x`, the axis' twiddle table `tw`, writes `y`. Grid:
/// (row blocks of `vector`, butterflies `n/R`, other-axis positions).
pub fn stage_kernel(name: &str, a: &FftAxis, radix: usize, ns: usize, vector: u8) -> Kernel {
    let v = vector as usize;
    let ty = Ty::f32x(vector);
    let m = a.rows;
    let stride = a.n / radix;
    let mut e = Emitter {
        body: vec![
            let_("j", Ty::I32, gid(1)),
            let_("base", Ty::I32, gid(2) * a.ostride + gid(0) * v),
            let_("k", Ty::I32, var("j") % ns),
        ],
        ty,
        next: 0,
        step: ns * a.istride,
        im: m,
    };
    let mut x = Vec::with_capacity(radix);
    for r in 0..radix {
        let at = var("base") + (var("j") + r * stride) * a.istride;
        let c = e.bind(load("x", at.clone(), vector), load("x", at + m, vector));
        if ns == 1 || r == 0 {
            x.push(c);
            continue;
        }
        let mi = format!("m{r}");
        e.body.push(let_(
            &mi,
            Ty::I32,
            var("k") * (r * (a.n / (ns * radix)) * 2),
        ));
        let wr = splat(load("tw", var(&mi), 1), vector);
        let wi = splat(load("tw", var(&mi) + 1usize, 1), vector);
        let t = e.bind(
            c.re.clone() * wr.clone() - c.im.clone() * wi.clone(),
            c.re * wi + c.im * wr,
        );
        x.push(t);
    }
    e.body.push(let_(
        "d",
        Ty::I32,
        var("base") + ((var("j") / ns) * (ns * radix) + var("k")) * a.istride,
    ));
    butterfly(&mut e, &x, a.inverse);
    // ≈ 5·log2(R) flops per point and row, plus 6 per twiddle.
    let points = (a.n * a.rows * a.others) as f64;
    let flops = points * (5.0 * (radix as f64).log2() + if ns > 1 { 6.0 } else { 0.0 });
    Kernel {
        name: name.to_string(),
        params: vec![param("x", true), param("tw", true), param("y", false)],
        body: e.body,
        grid: vec![a.rows / v, stride, a.others],
        local: None,
        flops: flops as u64,
    }
}

/// The stage kernels of one axis, in launch order (`None` for a length with a prime
/// factor above 7). Each reads the previous stage's output and the axis' twiddles.
///
/// Radix-7 stages take 16 rows per work-item on CPUs (`vector` 8 or 16) when the rows
/// allow: their cost is dominated by per-work-item overhead, so 16 lanes halved their
/// time on PoCL (AVX-512), where 4 lanes doubled it. 16 lanes is the IR's widest
/// vector (`typecheck`), so a 16-lane target keeps 16.
pub fn axis_kernels(a: &FftAxis, vector: u8) -> Option<Vec<Kernel>> {
    let mut ns = 1;
    let mut out = Vec::new();
    for r in radices(a.n)? {
        let wide = r == 7 && vector == 8 && a.rows.is_multiple_of(16);
        let v = if wide { 16 } else { vector };
        out.push(stage_kernel("fft", a, r, ns, v));
        ns *= r;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radices_factor_smooth_lengths() {
        assert_eq!(radices(1568), Some(vec![8, 4, 7, 7]));
        assert_eq!(radices(2048), Some(vec![8, 8, 8, 4]));
        assert_eq!(radices(16), Some(vec![8, 2]));
        assert_eq!(radices(12), Some(vec![4, 3]));
        assert_eq!(radices(1), Some(vec![]));
        assert_eq!(radices(22), None);
    }

    #[test]
    fn stage_grid_covers_every_butterfly() {
        let a = FftAxis::line(49, 16, false);
        let k = stage_kernel("s", &a, 7, 7, 8);
        assert_eq!(k.grid, vec![2, 7, 1]);
        // Radix 7 takes 16 rows per work-item where the rows allow, radix 8 keeps 8.
        let ks = axis_kernels(&FftAxis::line(56, 32, false), 8).expect("7-smooth");
        assert_eq!(ks[0].grid, vec![4, 7, 1]);
        assert_eq!(ks[1].grid, vec![2, 8, 1]);
        let ks = axis_kernels(&FftAxis::line(56, 24, false), 8).expect("7-smooth");
        assert_eq!(ks[1].grid, vec![3, 8, 1]);
    }
}
