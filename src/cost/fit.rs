//! Fitting the cost model: time a backend's conv kernels over a grid of conv shapes
//! and fit each algorithm's `overhead + Σ cᵢ·fᵢ` by non-negative least squares on the
//! *relative* error (times span five orders of magnitude, and an absolute fit would
//! only see the slowest shapes). `examples/fit_cost.rs` drives it; the reference
//! kernels are timed here, the OpenCL ones by `opencl::conv_timing`.

use super::{AlgoCost, BackwardCosts, ConvShape, CostTable, CostTableId, CostedAlgo, ALGOS};
use crate::ir::op::{ConvAlgo, Padding};
use crate::kernel_ir::native::{JitConvData, JitConvFilter};
use crate::reference::conv::ConvParams;
use crate::reference::direct_tiled::conv_direct;
use crate::reference::fft_conv::{fft_causal_conv1d, fft_conv2d_same};
use crate::reference::im2col::conv_im2col;
use crate::tensor::{ShapeError, Tensor};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use std::time::Instant;

/// One timed run: the best of several repetitions.
#[derive(Clone, Debug)]
pub struct Sample {
    pub algo: CostedAlgo,
    pub shape: ConvShape,
    pub seconds: f64,
}

/// The measurement grid: 1D causal and 2D "same" convs, small to long kernels, plus
/// strided, dilated and grouped convs for direct and im2col. Each entry is timed with
/// every algorithm that can run it and whose work stays under a cap.
pub fn grid() -> Vec<ConvShape> {
    let mut g = Vec::new();
    for &(b, c) in &[(1, 1), (1, 8), (4, 30), (8, 16)] {
        for &l in &[128u64, 784] {
            for &k in &[3u64, 9, 17, 33, 65, 129, 257, 513, 785] {
                if k <= l + 1 {
                    g.push(ConvShape::plain(b, c, c, &[l], &[k], Padding::Causal));
                }
            }
        }
    }
    for &(b, ci, co) in &[(1, 3, 16), (4, 16, 16), (4, 32, 32), (1, 64, 64)] {
        for &hw in &[8u64, 16, 32] {
            for &k in &[1u64, 3, 5, 7, 9, 15] {
                g.push(ConvShape::plain(
                    b,
                    ci,
                    co,
                    &[hw, hw],
                    &[k, k],
                    Padding::Same,
                ));
            }
        }
    }
    // ResNet-20's 3x3 stages at a training-size batch.
    for &(c, hw) in &[(16u64, 32u64), (32, 16), (64, 8)] {
        g.push(ConvShape::plain(
            64,
            c,
            c,
            &[hw, hw],
            &[3, 3],
            Padding::Same,
        ));
    }
    // Geometry the FFT cannot run.
    // ResNet-like 3×3 convs (explicit padding 1), where the JIT weighs Winograd
    // against im2col and its direct kernel.
    for &(b, ci, co, hw) in &[
        (1u64, 16u64, 16u64, 32u64),
        (8, 16, 32, 16),
        (8, 32, 64, 8),
        (2, 8, 8, 32),
        (16, 3, 16, 32),
        (64, 64, 64, 8),
    ] {
        g.push(ConvShape::plain(
            b,
            ci,
            co,
            &[hw, hw],
            &[3, 3],
            Padding::Explicit(vec![(1, 1); 2]),
        ));
    }
    let mut strided = ConvShape::plain(
        4,
        16,
        32,
        &[32, 32],
        &[3, 3],
        Padding::Explicit(vec![(1, 1); 2]),
    );
    strided.stride = vec![2, 2];
    g.push(strided);
    // ResNet-20's downsampling convs at batch 1 and 64, where the JIT weighs its
    // direct routine on the input's phases against im2col, and its first conv (3
    // input channels: Winograd's GEMMs are shallow) at 64.
    for &(b, ci, co, hw) in &[
        (1u64, 16u64, 32u64, 32u64),
        (64, 16, 32, 32),
        (1, 32, 64, 16),
        (64, 32, 64, 16),
    ] {
        let mut down = ConvShape::plain(
            b,
            ci,
            co,
            &[hw, hw],
            &[3, 3],
            Padding::Explicit(vec![(1, 1); 2]),
        );
        down.stride = vec![2, 2];
        g.push(down);
    }
    g.push(ConvShape::plain(
        64,
        3,
        16,
        &[32, 32],
        &[3, 3],
        Padding::Explicit(vec![(1, 1); 2]),
    ));
    // ResNet-20's later stages at batch 1, where the JIT weighs Winograd's chunks on
    // two threads against the direct routine's tiles.
    for &(c, hw) in &[(32u64, 16u64), (64, 8)] {
        g.push(ConvShape::plain(
            1,
            c,
            c,
            &[hw, hw],
            &[3, 3],
            Padding::Explicit(vec![(1, 1); 2]),
        ));
    }
    // FlexNet-7's cropped 5×5 FlexConvs at its benchmark batch, where the JIT weighs
    // Winograd F(4×4, 5×5) against its direct routine.
    for &c in &[24u64, 48] {
        g.push(ConvShape::plain(
            8,
            c,
            c,
            &[32, 32],
            &[5, 5],
            Padding::Explicit(vec![(2, 2); 2]),
        ));
    }
    let mut dilated = ConvShape::plain(4, 16, 16, &[784], &[9], Padding::Same);
    dilated.dilation = vec![4];
    g.push(dilated);
    for &hw in &[16u64, 32] {
        let mut dw = ConvShape::plain(4, 32, 32, &[hw, hw], &[3, 3], Padding::Same);
        dw.groups = 32;
        g.push(dw);
    }
    g.push(ConvShape::plain(
        8,
        30,
        30,
        &[784],
        &[1],
        Padding::Explicit(vec![(0, 0)]),
    ));
    g
}

/// The shapes whose backward convs the JIT's table is fitted on: the forward grid's
/// convs with symmetric padding (the native routines take no other; the rest run as
/// generated kernels), and ResNet-20's and LeNet's convs at training batches.
pub fn backward_grid() -> Vec<ConvShape> {
    let same = |b, ci, co, hw, k, pad| {
        ConvShape::plain(
            b,
            ci,
            co,
            &[hw, hw],
            &[k, k],
            Padding::Explicit(vec![(pad, pad); 2]),
        )
    };
    let mut g: Vec<ConvShape> = grid()
        .into_iter()
        .filter(|s| s.pads().iter().all(|(lo, hi)| lo == hi))
        .collect();
    for &b in &[8u64, 32, 128] {
        for &(c, hw) in &[(16u64, 32u64), (32, 16), (64, 8)] {
            g.push(same(b, c, c, hw, 3, 1));
            if c < 64 {
                let mut down = same(b, c, 2 * c, hw, 3, 1);
                down.stride = vec![2, 2];
                g.push(down);
            }
        }
    }
    for &b in &[32u64, 64] {
        g.push(same(b, 1, 6, 28, 5, 2));
        g.push(same(b, 6, 16, 14, 5, 0));
    }
    g
}

/// Whether the backward routine `row` is timed on the forward conv `shape` (the JIT's
/// table only). Not the data gradient of a conv on 3 channels or fewer: that is an
/// image's, which training never asks for (autodiff prunes it), and its routines'
/// times (a forward of 3 output channels) are unlike any other's.
pub fn backward_measurable(shape: &ConvShape, row: CostedAlgo) -> bool {
    let image = matches!(row, CostedAlgo::Data(_)) && shape.ci <= 3;
    matches!(row, CostedAlgo::Filter(_) | CostedAlgo::Data(_))
        && !image
        && shape
            .features_of(CostTableId::Jit, row)
            .is_some_and(|f| f[0] <= 3.0 * MAX_DIRECT_TAPS)
}

/// Work above which a point is skipped (it would take seconds on this backend).
const MAX_DIRECT_TAPS: f64 = 6e8;
const MAX_IM2COL_COLS: f64 = 4e7;

/// Whether `algo` is timed on `shape` on `backend`.
pub fn measurable(shape: &ConvShape, backend: CostTableId, algo: ConvAlgo) -> bool {
    match (backend, algo, shape.features_on(backend, algo)) {
        (_, _, None) => false,
        (CostTableId::Reference, ConvAlgo::Direct, Some(f)) => {
            f[0] <= 4.0 * MAX_DIRECT_TAPS && f[3] <= MAX_DIRECT_TAPS
        }
        (CostTableId::Reference, ConvAlgo::Im2col, Some(f)) => {
            f[1] <= MAX_IM2COL_COLS && f[0] <= 4.0 * MAX_DIRECT_TAPS
        }
        // PoCL runs a direct conv at tens of GFLOP/s: the largest long-kernel points
        // would take seconds each.
        (CostTableId::OpenclCpu, ConvAlgo::Direct, Some(f)) => f[0] <= 8.0 * MAX_DIRECT_TAPS,
        (CostTableId::Jit, ConvAlgo::Direct, Some(f)) => f[0] <= 3.0 * MAX_DIRECT_TAPS,
        (_, _, Some(_)) => true,
    }
}

/// Runs `algo` once on f32 data, as the interpreter would.
pub fn run_once(
    shape: &ConvShape,
    algo: ConvAlgo,
    x: &Tensor<f32>,
    w: &Tensor<f32>,
) -> Result<Tensor<f32>, ShapeError> {
    let us = |v: &[u64]| v.iter().map(|&s| s as usize).collect::<Vec<_>>();
    let p = ConvParams {
        stride: us(&shape.stride),
        padding: shape
            .pads()
            .iter()
            .map(|&(a, b)| (a as usize, b as usize))
            .collect(),
        dilation: us(&shape.dilation),
        groups: shape.groups as usize,
    };
    match algo {
        ConvAlgo::Fft if shape.input.len() == 1 => fft_causal_conv1d(x, w, None),
        ConvAlgo::Fft => fft_conv2d_same(x, w, None),
        ConvAlgo::Im2col => conv_im2col(x, w, None, &p),
        _ => conv_direct(x, w, None, &p),
    }
}

/// Best-of-N seconds of `algo` on `shape`: at least 2 runs, more while the total stays
/// under 0.15 s (at most 7).
pub fn measure(shape: &ConvShape, algo: ConvAlgo, seed: u64) -> Result<f64, ShapeError> {
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut rand_t = |dims: Vec<u64>| {
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let n = dims.iter().product();
        Tensor::from_vec(
            dims,
            (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        )
    };
    let mut xs = vec![shape.batch, shape.ci];
    xs.extend(&shape.input);
    let mut ws = vec![shape.co, shape.ci / shape.groups];
    ws.extend(&shape.kernel);
    let (x, w) = (rand_t(xs)?, rand_t(ws)?);
    best_seconds(2, 7, 0.15, || {
        std::hint::black_box(run_once(shape, algo, &x, &w)?);
        Ok(())
    })
}

/// The best of `min_runs` to `max_runs` timed calls of `f`: more runs while their total
/// stays under `budget_s`.
pub fn best_seconds<E>(
    min_runs: usize,
    max_runs: usize,
    budget_s: f64,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    let (mut best, mut total) = (f64::INFINITY, 0.0);
    for rep in 0..max_runs {
        let t = Instant::now();
        f()?;
        let s = t.elapsed().as_secs_f64();
        best = best.min(s);
        total += s;
        if rep + 1 >= min_runs && total > budget_s {
            break;
        }
    }
    Ok(best)
}

/// Fits one algorithm: minimises Σ((pred − t)/t)² over `overhead, c₁, … ≥ 0` by trying
/// every subset of free coefficients (an exact NNLS for a handful of unknowns).
pub fn fit_algo(points: &[(Vec<f64>, f64)]) -> AlgoCost {
    let nu = 1 + points.first().map_or(0, |(f, _)| f.len());
    let rows: Vec<Vec<f64>> = points
        .iter()
        .map(|(f, t)| {
            std::iter::once(1.0 / t)
                .chain(f.iter().map(|x| x / t))
                .collect()
        })
        .collect();
    // Column scaling keeps the normal equations well conditioned.
    let scale: Vec<f64> = (0..nu)
        .map(|j| {
            rows.iter()
                .map(|r| r[j].abs())
                .fold(0.0, f64::max)
                .max(1e-300)
        })
        .collect();
    let mut best: Option<(Vec<f64>, f64)> = None;
    for mask in 1u32..(1 << nu) {
        let free: Vec<usize> = (0..nu).filter(|j| mask & (1 << j) != 0).collect();
        let Some(sol) = solve_ls(&rows, &scale, &free) else {
            continue;
        };
        if sol.iter().any(|&c| c < 0.0) {
            continue;
        }
        let mut c = vec![0.0; nu];
        for (&j, &v) in free.iter().zip(&sol) {
            c[j] = v;
        }
        let res: f64 = rows
            .iter()
            .map(|r| (r.iter().zip(&c).map(|(x, c)| x * c).sum::<f64>() - 1.0).powi(2))
            .sum();
        if best.as_ref().is_none_or(|(_, b)| res < *b) {
            best = Some((c, res));
        }
    }
    let c = best.map_or(vec![0.0; nu], |(c, _)| c);
    let cost = AlgoCost {
        overhead_s: c[0],
        coef: c[1..].to_vec(),
        median_rel_err: 0.0,
    };
    let mut errs: Vec<f64> = points
        .iter()
        .map(|(f, t)| (cost.seconds(f) - t).abs() / t)
        .collect();
    errs.sort_by(f64::total_cmp);
    AlgoCost {
        median_rel_err: errs.get(errs.len() / 2).copied().unwrap_or(0.0),
        ..cost
    }
}

/// Least squares `rows·c ≈ 1` over the columns in `free`, by the normal equations.
fn solve_ls(rows: &[Vec<f64>], scale: &[f64], free: &[usize]) -> Option<Vec<f64>> {
    let n = free.len();
    let mut a = vec![vec![0.0; n + 1]; n];
    for r in rows {
        for (i, &ji) in free.iter().enumerate() {
            let xi = r[ji] / scale[ji];
            for (j, &jj) in free.iter().enumerate() {
                a[i][j] += xi * r[jj] / scale[jj];
            }
            a[i][n] += xi;
        }
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..n {
        let piv = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        let pivot = a[col].clone();
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot[col];
                for (v, p) in r[col..].iter_mut().zip(&pivot[col..]) {
                    *v -= f * p;
                }
            }
        }
    }
    Some((0..n).map(|i| a[i][n] / a[i][i] / scale[free[i]]).collect())
}

/// Fits every algorithm `backend` ran in `samples` (im2col stays absent when none did;
/// direct and FFT points are required).
pub fn fit(
    samples: &[Sample],
    backend: CostTableId,
    machine: &str,
    command: &str,
) -> Result<CostTable, String> {
    let per = |row: CostedAlgo| {
        let pts: Vec<(Vec<f64>, f64)> = samples
            .iter()
            .filter(|s| s.algo == row)
            .filter_map(|s| Some((s.shape.features_of(backend, row)?, s.seconds)))
            .collect();
        (!pts.is_empty()).then(|| fit_algo(&pts))
    };
    let [direct, im2col, fft, winograd2, winograd4] = ALGOS.map(|a| per(CostedAlgo::Forward(a)));
    let mut backward = BackwardCosts::default();
    for a in JitConvFilter::ALL {
        if let Some(c) = per(CostedAlgo::Filter(a)) {
            backward.filter.insert(a.name().to_string(), c);
        }
    }
    for a in JitConvData::ALL {
        if let Some(c) = per(CostedAlgo::Data(a)) {
            backward.data.insert(a.name().to_string(), c);
        }
    }
    let need = |c: Option<AlgoCost>, a: ConvAlgo| {
        c.ok_or_else(|| format!("no {} points measured on {}", a.name(), backend.name()))
    };
    Ok(CostTable {
        backend,
        command: command.into(),
        machine: machine.into(),
        points: samples.len(),
        direct: need(direct, ConvAlgo::Direct)?,
        im2col,
        fft: need(fft, ConvAlgo::Fft)?,
        winograd2,
        winograd4,
        backward: (!backward.filter.is_empty() || !backward.data.is_empty()).then_some(backward),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_recovers_an_exact_model() {
        let truth = AlgoCost {
            overhead_s: 2e-5,
            coef: vec![1e-9, 3e-10],
            median_rel_err: 0.0,
        };
        let pts: Vec<(Vec<f64>, f64)> = (1..30)
            .map(|i| {
                let f = vec![(i * i) as f64 * 1e5, ((i * 7) % 11) as f64 * 1e6];
                let t = truth.seconds(&f);
                (f, t)
            })
            .collect();
        let c = fit_algo(&pts);
        assert!((c.overhead_s - 2e-5).abs() < 1e-9, "{c:?}");
        assert!((c.coef[0] - 1e-9).abs() < 1e-13 && (c.coef[1] - 3e-10).abs() < 1e-13);
        assert!(c.median_rel_err < 1e-6);
    }

    #[test]
    fn nnls_never_goes_negative() {
        // Time falls with f2: the unconstrained fit would make c2 negative.
        let pts: Vec<(Vec<f64>, f64)> = (1..10)
            .map(|i| (vec![i as f64 * 1e6, (10 - i) as f64 * 1e6], 1e-3 * i as f64))
            .collect();
        let c = fit_algo(&pts);
        assert!(
            c.overhead_s >= 0.0 && c.coef.iter().all(|&v| v >= 0.0),
            "{c:?}"
        );
    }

    #[test]
    fn backward_grid_covers_every_routine() {
        let g = backward_grid();
        let rows = JitConvFilter::ALL
            .map(CostedAlgo::Filter)
            .into_iter()
            .chain(JitConvData::ALL.map(CostedAlgo::Data));
        for row in rows {
            let n = g.iter().filter(|s| backward_measurable(s, row)).count();
            assert!(n >= 25, "{}: {n} shapes", row.name());
        }
        let forward = CostedAlgo::Forward(ConvAlgo::Direct);
        assert!(!g.iter().any(|s| backward_measurable(s, forward)));
    }

    #[test]
    fn grid_covers_every_algorithm() {
        let g = grid();
        for a in ALGOS {
            let n = |b| g.iter().filter(|s| measurable(s, b, a)).count();
            assert!(n(CostTableId::Jit) >= 20, "{a:?}");
            if matches!(a, ConvAlgo::Winograd2 | ConvAlgo::Winograd4) {
                continue;
            }
            assert!(n(CostTableId::Reference) >= 20, "{a:?}");
            if a != ConvAlgo::Im2col {
                assert!(n(CostTableId::OpenclCpu) >= 20, "{a:?}");
                assert!(n(CostTableId::OpenclGpu) >= 20, "{a:?}");
            }
        }
    }
}
