//! The controller of a Balanced Mixture of SuperNets (`../shared/SEEDS.md` §4.3; the
//! authors' `utils/search_space_design.py` and `train_valid`): the score matrix W,
//! the temperature schedule, the balanced assignment p(m|a), sampling and the moving
//! average of validation accuracy. Pure host arithmetic in f64, no weights.
//!
//! W is `[configurations × M]`, initialised to ones. p(m|a) = softmax(T·W[a, ·]).
//! Once per epoch the marginal p(m) = mean over a of p(m|a) is pushed towards
//! uniform by dividing every row by it and renormalising, repeated until
//! KL(p(m) ‖ uniform) ≤ `kl`; the marginals used are kept and **replayed** on the
//! current W for every batch of the epoch, as the reference code does, so the
//! assignment follows W as it moves within the epoch without re-balancing.

use rand::Rng;
use rand::SeedableRng;
use rand_pcg::Pcg64;

/// Most divisions one balancing may take. The loop converges geometrically for any
/// positive p(m|a) (it is Sinkhorn's iteration with uniform column targets); the cap
/// only bounds a pathological `kl` such as 1e-300.
pub const MAX_DIVISIONS: usize = 10_000;

/// Row-wise softmax of `t·w` (`w` is `rows × m`, row-major), max-shifted for range.
pub fn softmax_rows(w: &[f64], m: usize, t: f64) -> Vec<f64> {
    let mut p = Vec::with_capacity(w.len());
    for row in w.chunks(m) {
        let top = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(t * b));
        let e: Vec<f64> = row.iter().map(|&x| (t * x - top).exp()).collect();
        let s: f64 = e.iter().sum();
        p.extend(e.iter().map(|x| x / s));
    }
    p
}

/// The marginal p(m): the mean of the rows.
pub fn marginal(p: &[f64], m: usize) -> Vec<f64> {
    let rows = p.len() / m;
    let mut out = vec![0.0; m];
    for row in p.chunks(m) {
        for (o, x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
    out.iter().map(|x| x / rows as f64).collect()
}

/// KL(q ‖ uniform) = Σ q log(q·M), with 0·log 0 = 0.
pub fn kl_to_uniform(q: &[f64]) -> f64 {
    let m = q.len() as f64;
    q.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| x * (x * m).ln())
        .sum()
}

/// Divides every row by `marg` and renormalises each row to sum to 1.
fn divide(p: &mut [f64], m: usize, marg: &[f64]) {
    for row in p.chunks_mut(m) {
        for (x, d) in row.iter_mut().zip(marg) {
            *x /= d;
        }
        let s: f64 = row.iter().sum();
        for x in row.iter_mut() {
            *x /= s;
        }
    }
}

/// The temperature of epoch `epoch` (0-based) of `epochs`: linear from 1 at the first
/// epoch to `t_max` at the last (a one-epoch search stays at 1).
pub fn temperature(epoch: u64, epochs: u64, t_max: f64) -> f64 {
    if epochs <= 1 {
        return 1.0;
    }
    1.0 + (t_max - 1.0) * epoch.min(epochs - 1) as f64 / (epochs - 1) as f64
}

/// The controller's state: W, the epoch's temperature and its balancing divisions.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    /// Configurations (rows of W).
    pub configs: usize,
    /// Supernets (columns of W).
    pub models: usize,
    /// Row-major `configs × models`.
    pub w: Vec<f64>,
    /// The epoch's temperature.
    pub t: f64,
    /// The marginals divided by, in order, for this epoch.
    pub divisions: Vec<Vec<f64>>,
    /// EMA decay of W's update.
    pub ema: f64,
}

impl Mixture {
    /// W of ones, temperature 1, no divisions.
    pub fn new(configs: usize, models: usize, ema: f64) -> Self {
        Mixture {
            configs,
            models,
            w: vec![1.0; configs * models],
            t: 1.0,
            divisions: Vec::new(),
            ema,
        }
    }

    /// Starts an epoch at temperature `t`: balances softmax(t·W) by repeated division
    /// until KL(p(m) ‖ uniform) ≤ `kl` (or [`MAX_DIVISIONS`]) and keeps the
    /// divisions. Returns the KL reached.
    pub fn balance(&mut self, t: f64, kl: f64) -> f64 {
        self.t = t;
        self.divisions.clear();
        let mut p = softmax_rows(&self.w, self.models, t);
        loop {
            let marg = marginal(&p, self.models);
            let d = kl_to_uniform(&marg);
            if d <= kl || self.divisions.len() >= MAX_DIVISIONS {
                return d;
            }
            divide(&mut p, self.models, &marg);
            self.divisions.push(marg);
        }
    }

    /// The balanced p(m|a) for every configuration: softmax(T·W) on the current W with
    /// the epoch's divisions replayed.
    pub fn probabilities(&self) -> Vec<f64> {
        let mut p = softmax_rows(&self.w, self.models, self.t);
        for marg in &self.divisions {
            divide(&mut p, self.models, marg);
        }
        p
    }

    /// The balanced p(·|a) of one configuration (the divisions act row by row, so
    /// this is that row of [`Self::probabilities`]).
    pub fn row(&self, a: usize) -> Vec<f64> {
        let w = &self.w[a * self.models..(a + 1) * self.models];
        let mut p = softmax_rows(w, self.models, self.t);
        for marg in &self.divisions {
            divide(&mut p, self.models, marg);
        }
        p
    }

    /// KL(p(m) ‖ uniform) of the balanced assignment on the current W.
    pub fn balance_kl(&self) -> f64 {
        kl_to_uniform(&marginal(&self.probabilities(), self.models))
    }

    /// W[a, m] ← ema·W[a, m] + (1 − ema)·accuracy.
    pub fn update(&mut self, a: usize, m: usize, accuracy: f64) {
        let w = &mut self.w[a * self.models + m];
        *w = self.ema * *w + (1.0 - self.ema) * accuracy;
    }

    /// Step `step`'s draw: a configuration uniformly, then a model from its balanced
    /// p(·|a). The generator is derived from (seed, step) alone, so a resumed search
    /// draws what an uninterrupted one does.
    pub fn sample(&self, seed: u64, step: u64) -> (usize, usize) {
        let mut r = step_rng(seed, step);
        let a = r.random_range(0..self.configs);
        let m = categorical(&self.row(a), r.random::<f64>());
        (a, m)
    }

    /// argmax_m p(m|a) for each configuration (the first on ties).
    pub fn most_likely(&self) -> Vec<usize> {
        self.probabilities()
            .chunks(self.models)
            .map(argmax)
            .collect()
    }
}

/// The index of the largest value, the first on ties.
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

/// Inverse-CDF draw from probabilities `p` with `u` in [0, 1).
pub fn categorical(p: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, x) in p.iter().enumerate() {
        acc += x;
        if u < acc {
            return i;
        }
    }
    // Rounding left the sum just under u: the last model with any mass.
    p.iter().rposition(|x| *x > 0.0).unwrap_or(0)
}

/// The generator of one search step.
fn step_rng(seed: u64, step: u64) -> Pcg64 {
    // A stream apart from the data order's (src/train/data.rs derives from seed,
    // epoch and position); SplitMix-style mixing so neighbouring steps differ.
    let mut z = seed ^ 0x5EA2_C4B1_A1A2_CE00 ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Pcg64::seed_from_u64(z ^ (z >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn softmax_by_hand() {
        // Row [0, ln 3] at t = 1: e^0 = 1, e^ln3 = 3 → [1/4, 3/4]. At t = 2: [1/10, 9/10].
        let w = [0.0, 3f64.ln()];
        let p = softmax_rows(&w, 2, 1.0);
        close(p[0], 0.25);
        close(p[1], 0.75);
        let p = softmax_rows(&w, 2, 2.0);
        close(p[0], 0.1);
        close(p[1], 0.9);
        // Ones at any temperature: uniform.
        let p = softmax_rows(&[1.0; 6], 3, 100.0);
        p.iter().for_each(|x| close(*x, 1.0 / 3.0));
    }

    #[test]
    fn kl_by_hand() {
        close(kl_to_uniform(&[0.5, 0.5]), 0.0);
        // [0.75, 0.25]: 0.75 ln 1.5 + 0.25 ln 0.5.
        close(
            kl_to_uniform(&[0.75, 0.25]),
            0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln(),
        );
        close(kl_to_uniform(&[1.0, 0.0]), 2f64.ln());
    }

    #[test]
    fn temperature_runs_from_one_to_t_max() {
        close(temperature(0, 5, 100.0), 1.0);
        close(temperature(2, 5, 100.0), 50.5);
        close(temperature(4, 5, 100.0), 100.0);
        close(temperature(0, 1, 100.0), 1.0);
    }

    #[test]
    fn one_division_by_hand() {
        // W = [[ln 3, 0], [0, 0]] at t = 1: rows [3/4, 1/4] and [1/2, 1/2];
        // p(m) = [5/8, 3/8], KL = 5/8 ln(5/4) + 3/8 ln(3/4) ≈ 0.0316.
        let mut x = Mixture::new(2, 2, 0.9);
        x.w = vec![3f64.ln(), 0.0, 0.0, 0.0];
        let kl0 = 0.625 * 1.25f64.ln() + 0.375 * 0.75f64.ln();
        close(
            kl_to_uniform(&marginal(&softmax_rows(&x.w, 2, 1.0), 2)),
            kl0,
        );
        // With kl = 0.01 one division is enough: row 1 → [3/4 ÷ 5/8, 1/4 ÷ 3/8] =
        // [6/5, 2/3] → [9/14, 5/14]; row 2 → [4/5, 4/3] → [3/8, 5/8].
        // p(m) = [(9/14 + 3/8)/2, (5/14 + 5/8)/2] = [57/112, 55/112].
        let kl = x.balance(1.0, 0.01);
        assert_eq!(x.divisions.len(), 1);
        close(x.divisions[0][0], 0.625);
        let p = x.probabilities();
        close(p[0], 9.0 / 14.0);
        close(p[1], 5.0 / 14.0);
        close(p[2], 3.0 / 8.0);
        close(p[3], 5.0 / 8.0);
        close(kl, kl_to_uniform(&[57.0 / 112.0, 55.0 / 112.0]));
        // A tighter bound takes more divisions, each lowering the KL.
        let kl_tight = x.balance(1.0, 1e-10);
        assert!(kl_tight <= 1e-10 && x.divisions.len() > 1, "{kl_tight}");
        let p = x.probabilities();
        // KL ≤ 1e-10 bounds |p(m) − 1/2| by √(2·1e-10)/… ≈ 1e-5 (Pinsker).
        let marg = marginal(&p, 2);
        assert!((marg[0] - 0.5).abs() < 2e-5, "{marg:?}");
        // Rows stay distributions, and the preference of each row survives.
        close(p[0] + p[1], 1.0);
        assert!(p[0] > p[1] && p[2] < p[3]);
    }

    #[test]
    fn divisions_replay_on_the_moving_w() {
        let mut x = Mixture::new(3, 2, 0.9);
        x.w = vec![0.9, 0.1, 0.8, 0.2, 0.3, 0.7];
        x.balance(5.0, 1e-6);
        let before = x.probabilities();
        x.update(2, 1, 1.0);
        // W[2,1] = 0.9·0.7 + 0.1·1 = 0.73.
        close(x.w[5], 0.73);
        let after = x.probabilities();
        // Only row 2 changes (the divisions are fixed per epoch), towards model 1.
        assert_eq!(&before[..4], &after[..4]);
        assert!(after[5] > before[5]);
        // And by hand: softmax(5·[0.3, 0.73]) divided by the stored marginals.
        let mut row = softmax_rows(&[0.3, 0.73], 2, 5.0);
        for d in &x.divisions {
            row = vec![row[0] / d[0], row[1] / d[1]];
            let s = row[0] + row[1];
            row = vec![row[0] / s, row[1] / s];
        }
        close(after[4], row[0]);
        assert_eq!(x.row(2), after[4..].to_vec());
    }

    #[test]
    fn sampling_follows_the_rows() {
        assert_eq!(categorical(&[0.25, 0.75], 0.2), 0);
        assert_eq!(categorical(&[0.25, 0.75], 0.25), 1);
        assert_eq!(categorical(&[0.5, 0.5, 0.0], 1.0), 1);
        let mut x = Mixture::new(4, 2, 0.9);
        x.w = vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        x.balance(50.0, 1e-4);
        // At t = 50 the assignment is hard: configurations 0, 1 → model 0; 2, 3 → 1.
        let mut seen = [0usize; 4];
        for step in 0..400 {
            let (a, m) = x.sample(7, step);
            assert_eq!(m, usize::from(a >= 2), "step {step}");
            seen[a] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        // Reproducible from (seed, step).
        assert_eq!(x.sample(7, 11), x.sample(7, 11));
        // With W of ones the draws are uniform over models too: 4,000 draws, each
        // model within 5 standard deviations (27) of 1,000.
        let uniform = Mixture::new(10, 4, 0.9);
        let mut per_model = [0i64; 4];
        for step in 0..4000 {
            per_model[uniform.sample(3, step).1] += 1;
        }
        assert!(
            per_model.iter().all(|&n| (n - 1000).abs() < 140),
            "{per_model:?}"
        );
        assert_eq!(x.most_likely(), vec![0, 0, 1, 1]);
    }
}
