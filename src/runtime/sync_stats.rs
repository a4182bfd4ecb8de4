//! Cross-rank batch statistics for SyncBatchNorm (`sync_bn: true` under `mpirun`,
//! docs/distributed.md): the host side of a training plan's `SyncStats` steps
//! (`kernel_ir::native`), which an executor runs between a batch norm's per-channel
//! reduction and its first use, handing the combination to a [`StatsCollective`] the
//! trainer passes to `Prepared::run_synced`. Without a collective (one process) the
//! steps combine this rank's statistics alone, which leaves them as they were.
//!
//! # Forward: global mean and variance
//!
//! Rank r holds, per channel, the mean `m_r` and biased variance `v_r` of its `n_r`
//! values (`n_r` = its shard's samples × the values per sample and channel). Each
//! rank contributes `[n_r, n_r·m_r, n_r·(v_r + m_r²)]` in f64; one all-reduce (sum)
//! gives `N = Σ n_r`, `M = Σ n_r m_r / N` and `V = Σ n_r (v_r + m_r²) / N − M²`. This
//! is the parallel-variance formula `V = Σ n_r (v_r + (m_r − M)²) / N` rearranged so
//! that a single sum-reduction carries it (the exact form needs `M` first, a second
//! collective). The rearranged form cancels `M²`, which in f32 could lose the
//! variance; in f64 it costs `log10(M²/V)` of 16 digits, so it stays far below the
//! f32 rounding of the moments themselves unless `|M|/√V` exceeds about 10⁴, and a
//! negative result of cancellation is clamped to 0. The moments buffer then holds the
//! global `M`, `V`, and after them this rank's weight `w_r = n_r / N` and the
//! unbiasing factor `N / (N − 1)` of the running variance (PyTorch's, from the global
//! count, where the single process uses its batch's).
//!
//! # Backward: global sums, and why they are written back unscaled
//!
//! Rank r's loss is the mean over its shard, `L_r = (1/n_r) Σ_{i∈r} ℓ_i` (here `n_r`
//! counts samples), and the trainer sums the gradients as `Σ_r (n_r/B) g_r`
//! (`train::distributed::reduce_step`). The global loss is `L = (1/B) Σ_i ℓ_i`, so at
//! the logits rank r's upstream gradient is `dy^r_i = (B/n_r)·∂L/∂y_i`. Suppose that
//! holds at a batch norm's output for every sample of every rank. Its data gradient
//! is `dx_i = γ·inv·(dy_i − S_dy/N − x̂_i·S_dyx̂/N)` with the **global** sums
//! `S_dy = Σ_j dy_j`, `S_dyx̂ = Σ_j dy_j x̂_j` over all ranks' values (with `dy` the
//! true `∂L/∂y`). Rank r knows only its own `Σ_{j∈r} dy^r_j = (B/n_r)·Σ_{j∈r} dy_j`, so
//! it contributes `w_r · (its sums)` with `w_r = n_r/B`, and the all-reduce gives
//! exactly `S_dy` and `S_dyx̂`. The backward kernel (`bn_backward_data`) computes
//! `γ·inv·(dy^r_i − st_dy/n − x̂_i·st_dyx̂/n)` with its local count `n = n_r·inner`;
//! with `st = S` written into it and `n/N = n_r/B`, `S/n = (B/n_r)·S/N`, so it gives
//! `(B/n_r)·γ·inv·(dy_i − S_dy/N − x̂_i·S_dyx̂/N) = (B/n_r)·dx_i`: the hypothesis
//! again, at the batch norm's input. By induction through the network every parameter
//! gradient a rank computes is `(B/n_r)` times its shard's share of the true one, and
//! the weighted sum is the batch-B gradient. The γ gradient reads `S_dyx̂` itself (the
//! same on every rank); `Σ_r (n_r/B)·S_dyx̂ = S_dyx̂` because the weights sum to 1.
//! The β gradient is a plain sum of `dy^r` and is right by the same weighting. A rank
//! with no sample of the global batch runs its plan on a stand-in sample with weight
//! 0 ([`StatsCollective::contributes`] false) so that it takes part in every
//! collective without adding to any.

/// The cross-rank reduction a synchronised training plan's `SyncStats` steps call.
/// Called from the thread that runs the plan, once per step of the plan, in plan
/// order, so every rank must run a plan with the same steps.
pub trait StatsCollective {
    /// Element-wise sum over the ranks, in place; every rank gets the result.
    fn sum_f64(&self, buf: &mut [f64]);
    /// Whether this rank's samples count in this run: false for a rank that runs a
    /// stand-in sample only to take part in the collectives.
    fn contributes(&self) -> bool {
        true
    }
}

/// The moments buffer's length for `c` channels in a synchronised plan: mean and
/// variance per channel, then the rank's weight and the unbiasing factor.
pub fn synced_moments_len(c: usize) -> usize {
    2 * c + 2
}

/// Replaces this rank's moments `m` (`[mean, var]` per channel of `count` values,
/// [`synced_moments_len`] long) by the global batch's, and stores the weight and the
/// running variance's unbiasing factor after them (module doc). `None`: this rank
/// alone.
pub fn combine_moments(
    m: &mut [f32],
    c: usize,
    count: usize,
    collective: Option<&dyn StatsCollective>,
) {
    let n = match collective {
        Some(k) if !k.contributes() => 0.0,
        _ => count as f64,
    };
    let mut sums = Vec::with_capacity(1 + 2 * c);
    sums.push(n);
    for k in 0..c {
        let (mean, var) = (f64::from(m[2 * k]), f64::from(m[2 * k + 1]));
        sums.extend([n * mean, n * (var + mean * mean)]);
    }
    if let Some(k) = collective {
        k.sum_f64(&mut sums);
    }
    let total = sums[0];
    for k in 0..c {
        let (mean, sq) = if total > 0.0 {
            (sums[1 + 2 * k] / total, sums[2 + 2 * k] / total)
        } else {
            (0.0, 0.0)
        };
        m[2 * k] = mean as f32;
        m[2 * k + 1] = (sq - mean * mean).max(0.0) as f32;
    }
    m[2 * c] = if total > 0.0 { (n / total) as f32 } else { 0.0 };
    // As `kernel_ir::batch_norm::running_stat`: one value per channel keeps the biased
    // variance rather than divide by zero.
    m[2 * c + 1] = if total > 1.0 {
        (total / (total - 1.0)) as f32
    } else {
        1.0
    };
}

/// Replaces this rank's backward sums `st` (`[mean, inv, Σdy, Σdy·x̂]` per channel,
/// `bn_sums`) by the global ones `Σ_r w_r·(Σdy, Σdy·x̂)_r`, `w_r` from the moments `m`
/// that [`combine_moments`] wrote (module doc).
pub fn combine_backward_sums(
    m: &[f32],
    st: &mut [f32],
    c: usize,
    collective: Option<&dyn StatsCollective>,
) {
    let w = f64::from(m[2 * c]);
    let mut sums: Vec<f64> = (0..c)
        .flat_map(|k| [w * f64::from(st[4 * k + 2]), w * f64::from(st[4 * k + 3])])
        .collect();
    if let Some(k) = collective {
        k.sum_f64(&mut sums);
    }
    for k in 0..c {
        st[4 * k + 2] = sums[2 * k] as f32;
        st[4 * k + 3] = sums[2 * k + 1] as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// One rank of a simulated group: its contribution is recorded, and the sum is the
    /// other ranks' recorded contributions plus its own.
    struct Sim<'a> {
        others: &'a [Vec<f64>],
        seen: RefCell<Vec<f64>>,
        contributes: bool,
    }

    impl StatsCollective for Sim<'_> {
        fn sum_f64(&self, buf: &mut [f64]) {
            *self.seen.borrow_mut() = buf.to_vec();
            for o in self.others {
                for (b, v) in buf.iter_mut().zip(o) {
                    *b += v;
                }
            }
        }
        fn contributes(&self) -> bool {
            self.contributes
        }
    }

    /// Per-channel two-pass mean and biased variance of `x` `[n, c, inner]`, f64.
    fn naive(x: &[f64], c: usize, inner: usize) -> Vec<(f64, f64)> {
        let n = x.len() / (c * inner);
        (0..c)
            .map(|k| {
                let v: Vec<f64> = (0..n)
                    .flat_map(|s| (0..inner).map(move |i| (s, i)))
                    .map(|(s, i)| x[(s * c + k) * inner + i])
                    .collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / v.len() as f64;
                (mean, var)
            })
            .collect()
    }

    fn moments(x: &[f64], c: usize, inner: usize) -> Vec<f32> {
        let mut m: Vec<f32> = naive(x, c, inner)
            .into_iter()
            .flat_map(|(a, b)| [a as f32, b as f32])
            .collect();
        m.resize(synced_moments_len(c), 0.0);
        m
    }

    #[test]
    fn combined_moments_are_the_concatenated_batchs() {
        let (c, inner) = (3, 4);
        // Three shards of 3, 2 and 1 samples, with an offset mean per channel.
        let sizes = [3usize, 2, 1];
        let mut state = 12345u64;
        let mut draw = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 33) as f64 / (1u64 << 31) as f64) * 4.0 - 1.0
        };
        let shards: Vec<Vec<f64>> = sizes
            .iter()
            .map(|&n| {
                (0..n * c * inner)
                    .map(|i| draw() + 10.0 * ((i / inner) % c) as f64)
                    .collect()
            })
            .collect();
        let all: Vec<f64> = shards.concat();
        let want = naive(&all, c, inner);
        let total = (all.len() / c) as f64;
        // Each rank's contribution, as combine_moments computes it.
        let contributions: Vec<Vec<f64>> = shards
            .iter()
            .map(|s| {
                let sim = Sim {
                    others: &[],
                    seen: RefCell::new(Vec::new()),
                    contributes: true,
                };
                combine_moments(&mut moments(s, c, inner), c, s.len() / c, Some(&sim));
                sim.seen.into_inner()
            })
            .collect();
        for r in 0..sizes.len() {
            let others: Vec<Vec<f64>> = (0..sizes.len())
                .filter(|&o| o != r)
                .map(|o| contributions[o].clone())
                .collect();
            let sim = Sim {
                others: &others,
                seen: RefCell::new(Vec::new()),
                contributes: true,
            };
            let mut m = moments(&shards[r], c, inner);
            combine_moments(&mut m, c, shards[r].len() / c, Some(&sim));
            for (k, (mean, var)) in want.iter().enumerate() {
                assert!(
                    (f64::from(m[2 * k]) - mean).abs() < 1e-5,
                    "rank {r} mean {k}"
                );
                assert!(
                    (f64::from(m[2 * k + 1]) - var).abs() < 1e-5 * var.max(1.0),
                    "rank {r} var {k}: {} vs {var}",
                    m[2 * k + 1]
                );
            }
            let w = (sizes[r] * inner) as f64 / total;
            assert!((f64::from(m[2 * c]) - w).abs() < 1e-7, "weight");
            assert!((f64::from(m[2 * c + 1]) - total / (total - 1.0)).abs() < 1e-6);
        }
    }

    #[test]
    fn alone_the_combination_leaves_the_statistics() {
        let mut m = vec![0.5, 2.0, -1.0, 0.25, 0.0, 0.0];
        combine_moments(&mut m, 2, 8, None);
        assert_eq!(&m[..4], &[0.5, 2.0, -1.0, 0.25]);
        assert_eq!(m[4], 1.0);
        assert_eq!(m[5], 8.0 / 7.0);
        let mut st = vec![0.5, 1.0, 3.0, -2.0, 0.1, 2.0, 0.75, 4.5];
        combine_backward_sums(&m, &mut st, 2, None);
        assert_eq!(st, [0.5, 1.0, 3.0, -2.0, 0.1, 2.0, 0.75, 4.5]);
    }

    #[test]
    fn backward_sums_are_weighted_by_shard_and_a_stand_in_adds_nothing() {
        // Rank 0: 3 of 4 values per channel (w 0.75), sums (2, 4); rank 1 the other
        // (w 0.25), sums (8, -4): global 0.75·(2, 4) + 0.25·(8, −4) = (3.5, 2).
        let m0 = [0.0, 1.0, 0.75, 1.0];
        let rank1 = vec![0.25 * 8.0, 0.25 * -4.0];
        let sim = Sim {
            others: std::slice::from_ref(&rank1),
            seen: RefCell::new(Vec::new()),
            contributes: true,
        };
        let mut st = [0.0, 1.0, 2.0, 4.0];
        combine_backward_sums(&m0, &mut st, 1, Some(&sim));
        assert_eq!(st, [0.0, 1.0, 3.5, 2.0]);
        // A stand-in rank's moments give it weight 0: it contributes zeros.
        let stand_in = Sim {
            others: &[],
            seen: RefCell::new(Vec::new()),
            contributes: false,
        };
        let mut m = vec![5.0, 1.0, 0.0, 0.0];
        combine_moments(&mut m, 1, 1, Some(&stand_in));
        assert_eq!(stand_in.seen.borrow()[..], [0.0, 0.0, 0.0]);
    }
}
