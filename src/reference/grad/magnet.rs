//! Backward of FlexConv kernel synthesis: MAGNet (its Gabor filters' linear
//! layers, centres μ and scales γ; the hidden and output linears), the
//! separable Gaussian mask (to each axis's mean and sigma) and the mask
//! product's gradient to the mask. The crop is a constant within one step:
//! nothing here differentiates the grid.

use crate::reference::magnet::{gabor_envelope, GaborFilter, MagnetParams};
use crate::reference::mask::gaussian_mask;
use crate::tensor::{Scalar, ShapeError, Tensor};

/// One Gabor filter's forward at `coords` `[D, N]`, kept for its backward:
/// the envelope and the sine's argument, each `[H·N]`.
struct GaborCache<T> {
    env: Vec<T>,
    arg: Vec<T>,
}

fn gabor_cache<T: Scalar>(
    f: &GaborFilter<T>,
    coords: &Tensor<T>,
) -> Result<GaborCache<T>, ShapeError> {
    let (h, _) = f.linear.dims("MAGNet Gabor filter")?;
    let n = coords.shape[1];
    let arg = f.linear.apply_columns(coords, "MAGNet Gabor filter")?.data;
    let mut env = vec![T::zero(); h * n];
    for j in 0..h {
        for p in 0..n {
            env[j * n + p] = gabor_envelope(f, coords, j, p);
        }
    }
    Ok(GaborCache { env, arg })
}

impl<T: Scalar> GaborCache<T> {
    fn value(&self) -> Vec<T> {
        self.env
            .iter()
            .zip(&self.arg)
            .map(|(&e, &a)| e * a.sin())
            .collect()
    }
}

/// `[dWg, dbg, dγ, dμ]` of one filter from the gradient `dg` `[H·N]` of its output.
fn gabor_backward<T: Scalar>(
    f: &GaborFilter<T>,
    c: &GaborCache<T>,
    coords: &Tensor<T>,
    dg: &[T],
) -> [Tensor<T>; 4] {
    let (h, d) = (f.gamma.shape[0], f.gamma.shape[1]);
    let n = coords.shape[1];
    let mut dw = Tensor::zeros(vec![h, d]);
    let mut db = Tensor::zeros(vec![h]);
    let mut dgamma = Tensor::zeros(vec![h, d]);
    let mut dmu = Tensor::zeros(vec![h, d]);
    for j in 0..h {
        for p in 0..n {
            let i = j * n + p;
            let (e, a) = (c.env[i], c.arg[i]);
            let da = dg[i] * e * a.cos();
            // d env / d(γ·(x − μ)) = −env·γ(x − μ); `de` carries −env·dg·sin.
            let de = -(dg[i] * a.sin() * e);
            db.data[j] += da;
            for ax in 0..d {
                let x = coords.data[ax * n + p];
                let (g, m) = (f.gamma.data[j * d + ax], f.mu.data[j * d + ax]);
                let off = x - m;
                dw.data[j * d + ax] += da * x;
                dgamma.data[j * d + ax] += de * g * off * off;
                dmu.data[j * d + ax] -= de * g * g * off;
            }
        }
    }
    [dw, db, dgamma, dmu]
}

/// `Σ_n` of each row of `[R, N]`.
fn row_sums<T: Scalar>(x: &[T], rows: usize, n: usize) -> Tensor<T> {
    let data = (0..rows)
        .map(|r| x[r * n..(r + 1) * n].iter().copied().sum())
        .collect();
    Tensor {
        shape: vec![rows],
        data,
    }
}

/// `a` `[R, N]` times `bᵀ` (`b` `[C, N]`) → `[R, C]`.
fn outer_sum<T: Scalar>(a: &[T], b: &[T], rows: usize, cols: usize, n: usize) -> Tensor<T> {
    let mut out = Tensor::zeros(vec![rows, cols]);
    for r in 0..rows {
        for c in 0..cols {
            out.data[r * cols + c] = a[r * n..(r + 1) * n]
                .iter()
                .zip(&b[c * n..(c + 1) * n])
                .map(|(&x, &y)| x * y)
                .sum();
        }
    }
    out
}

/// `wᵀ·d` for `w` `[O, I]`, `d` `[O, N]` → `[I, N]`.
fn transpose_apply<T: Scalar>(w: &Tensor<T>, d: &[T], n: usize) -> Vec<T> {
    let (o, i) = (w.shape[0], w.shape[1]);
    let mut out = vec![T::zero(); i * n];
    for r in 0..o {
        for k in 0..i {
            let wv = w.data[r * i + k];
            for (ov, &dv) in out[k * n..(k + 1) * n]
                .iter_mut()
                .zip(&d[r * n..(r + 1) * n])
            {
                *ov += wv * dv;
            }
        }
    }
    out
}

/// Gradients of [`magnet_forward`](crate::reference::magnet::magnet_forward) at
/// `coords` `[D, N]` for the upstream gradient `dy` `[Cout·Cin, N]` (a kernel
/// `[Cout, Cin, k…]` has that layout), in the `magnet` op's operand order without
/// the grid: per filter `Wg, bg, γ, μ`; per hidden linear `U, c`; then `V, v`.
pub fn magnet_backward<T: Scalar>(
    p: &MagnetParams<T>,
    coords: &Tensor<T>,
    dy: &[T],
) -> Result<Vec<Tensor<T>>, ShapeError> {
    let (d, h, o) = p.dims()?;
    let n = coords.shape.get(1).copied().unwrap_or(0);
    if coords.ndim() != 2 || coords.shape[0] != d || dy.len() != o * n {
        return Err(ShapeError::new(
            "MAGNet backward",
            format!("coordinates [{d}, N] and an upstream gradient of {o}·N values"),
            format!("coordinates {:?}, {} values", coords.shape, dy.len()),
        ));
    }
    let caches = p
        .filters
        .iter()
        .map(|f| gabor_cache(f, coords))
        .collect::<Result<Vec<_>, _>>()?;
    let gs: Vec<Vec<T>> = caches.iter().map(GaborCache::value).collect();
    // hs[l] is h_l, zs[l − 1] the hidden linear's output that g_l multiplies.
    let mut hs = vec![gs[0].clone()];
    let mut zs = Vec::new();
    for (l, u) in p.hidden.iter().enumerate() {
        let prev = Tensor {
            shape: vec![h, n],
            data: hs[l].clone(),
        };
        let z = u.apply_columns(&prev, "MAGNet hidden linear")?.data;
        hs.push(z.iter().zip(&gs[l + 1]).map(|(&a, &b)| a * b).collect());
        zs.push(z);
    }
    let last = hs.last().expect("at least one filter");
    let dv_w = outer_sum(dy, last, o, h, n);
    let dv_b = row_sums(dy, o, n);
    let mut dh = transpose_apply(&p.output.weight, dy, n);
    let mut filter_grads: Vec<[Tensor<T>; 4]> = Vec::with_capacity(p.filters.len());
    let mut hidden_grads = Vec::with_capacity(p.hidden.len());
    for l in (1..p.filters.len()).rev() {
        let z = &zs[l - 1];
        let dg: Vec<T> = dh.iter().zip(z).map(|(&a, &b)| a * b).collect();
        let dz: Vec<T> = dh.iter().zip(&gs[l]).map(|(&a, &b)| a * b).collect();
        filter_grads.push(gabor_backward(&p.filters[l], &caches[l], coords, &dg));
        hidden_grads.push([outer_sum(&dz, &hs[l - 1], h, h, n), row_sums(&dz, h, n)]);
        dh = transpose_apply(&p.hidden[l - 1].weight, &dz, n);
    }
    filter_grads.push(gabor_backward(&p.filters[0], &caches[0], coords, &dh));
    filter_grads.reverse();
    hidden_grads.reverse();
    let mut out: Vec<Tensor<T>> = filter_grads.into_iter().flatten().collect();
    out.extend(hidden_grads.into_iter().flatten());
    out.push(dv_w);
    out.push(dv_b);
    Ok(out)
}

/// Gradient of [`gaussian_mask`] to its parameters `[D, 2]` (mean, sigma per axis)
/// for the upstream gradient `dm` `[k…]`: with `z = (x − mean)/sigma`,
/// `∂mask/∂mean = mask·z/sigma` and `∂mask/∂sigma = mask·z²/sigma`.
pub fn gauss_mask_backward<T: Scalar>(
    grid: &Tensor<T>,
    params: &Tensor<T>,
    dm: &Tensor<T>,
) -> Result<Tensor<T>, ShapeError> {
    let mask = gaussian_mask(grid, params)?;
    if dm.shape != mask.shape {
        return Err(ShapeError::new(
            "gauss_mask backward",
            format!("an upstream gradient {:?}", mask.shape),
            format!("{:?}", dm.shape),
        ));
    }
    let d = grid.shape[0];
    let n = mask.numel();
    let mut out = Tensor::zeros(vec![d, 2]);
    for axis in 0..d {
        let (mean, sigma) = (params.data[axis * 2], params.data[axis * 2 + 1]);
        for p in 0..n {
            let z = (grid.data[axis * n + p] - mean) / sigma;
            let g = dm.data[p] * mask.data[p] / sigma;
            out.data[axis * 2] += g * z;
            out.data[axis * 2 + 1] += g * z * z;
        }
    }
    Ok(out)
}

/// Gradient of `mask_mul(k, m)` to the mask: `Σ_{o,i} dy[o, i, …]·k[o, i, …]`.
pub fn mask_mul_backward_mask<T: Scalar>(
    dy: &Tensor<T>,
    k: &Tensor<T>,
) -> Result<Tensor<T>, ShapeError> {
    if dy.shape != k.shape || k.ndim() < 2 {
        return Err(ShapeError::new(
            "mask_mul backward",
            format!("an upstream gradient shaped as the kernel {:?}", k.shape),
            format!("{:?}", dy.shape),
        ));
    }
    let shape = k.shape[2..].to_vec();
    let n: usize = shape.iter().product();
    let mut out = Tensor::zeros(shape);
    for (g, w) in dy.data.chunks(n.max(1)).zip(k.data.chunks(n.max(1))) {
        for ((o, &a), &b) in out.data.iter_mut().zip(g).zip(w) {
            *o += a * b;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{check_vjp, rand_vec};
    use super::*;
    use crate::reference::linear::Linear;
    use crate::reference::magnet::magnet_forward;

    /// Rebuilds MAGNet parameters (D, H, L, O) from a flat vector in operand order.
    fn params(x: &[f64], d: usize, h: usize, layers: usize, o: usize) -> MagnetParams<f64> {
        let mut at = 0;
        let mut take = |shape: Vec<usize>| {
            let len: usize = shape.iter().product();
            let t = Tensor::from_vec(shape, x[at..at + len].to_vec()).unwrap();
            at += len;
            t
        };
        let mut filters = Vec::new();
        for _ in 0..=layers {
            let w = take(vec![h, d]);
            let b = take(vec![h]).data;
            let gamma = take(vec![h, d]);
            let mu = take(vec![h, d]);
            filters.push(GaborFilter {
                linear: Linear {
                    weight: w,
                    bias: Some(b),
                },
                gamma,
                mu,
            });
        }
        let hidden = (0..layers)
            .map(|_| {
                let w = take(vec![h, h]);
                Linear {
                    weight: w,
                    bias: Some(take(vec![h]).data),
                }
            })
            .collect();
        let w = take(vec![o, h]);
        let output = Linear {
            weight: w,
            bias: Some(take(vec![o]).data),
        };
        MagnetParams {
            filters,
            hidden,
            output,
        }
    }

    #[test]
    fn magnet_backward_matches_differences() {
        // 2D (D = 2) with two hidden layers, and 1D with none.
        for (d, h, layers, o, n, seed) in [(2, 3, 2, 4, 5, 1), (1, 4, 0, 2, 7, 2)] {
            let count = (layers + 1) * (3 * h * d + h) + layers * (h * h + h) + o * h + o;
            let mut rng = crate::init::seeded(seed);
            let x = rand_vec(&mut rng, count);
            let coords = Tensor::from_vec(vec![d, n], rand_vec(&mut rng, d * n)).unwrap();
            let f = |x: &[f64]| {
                magnet_forward(&params(x, d, h, layers, o), &coords)
                    .unwrap()
                    .data
            };
            let vjp = |v: &[f64]| {
                let g = magnet_backward(&params(&x, d, h, layers, o), &coords, v).unwrap();
                g.into_iter().flat_map(|t| t.data).collect()
            };
            check_vjp("magnet", seed + 10, &x, f, vjp);
        }
    }

    #[test]
    fn gauss_mask_and_mask_mul_backward_match_differences() {
        let mut rng = crate::init::seeded(3);
        let grid = Tensor::from_vec(vec![2, 3, 4], rand_vec(&mut rng, 24)).unwrap();
        let x = vec![0.1, 0.7, -0.2, 0.5];
        let f = |x: &[f64]| {
            let p = Tensor::from_vec(vec![2, 2], x.to_vec()).unwrap();
            gaussian_mask(&grid, &p).unwrap().data
        };
        let vjp = |v: &[f64]| {
            let p = Tensor::from_vec(vec![2, 2], x.clone()).unwrap();
            let dm = Tensor::from_vec(vec![3, 4], v.to_vec()).unwrap();
            gauss_mask_backward(&grid, &p, &dm).unwrap().data
        };
        check_vjp("gauss_mask", 4, &x, f, vjp);

        let k = Tensor::from_vec(vec![2, 3, 4], rand_vec(&mut rng, 24)).unwrap();
        let m = rand_vec(&mut rng, 4);
        let f = |m: &[f64]| {
            k.data
                .chunks(4)
                .flat_map(|row| row.iter().zip(m).map(|(a, b)| a * b).collect::<Vec<_>>())
                .collect()
        };
        let vjp = |v: &[f64]| {
            let dy = Tensor::from_vec(vec![2, 3, 4], v.to_vec()).unwrap();
            mask_mul_backward_mask(&dy, &k).unwrap().data
        };
        check_vjp("mask_mul", 5, &m, f, vjp);
        assert!(mask_mul_backward_mask(&Tensor::zeros(vec![2, 3]), &k).is_err());
    }
}
