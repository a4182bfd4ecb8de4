//! Learning-rate schedules: the rate for each step from the optimiser's base rate.
//!
//! - `constant`: the base rate.
//! - `cosine(warmup: W, min_lr, per)`: counting `t` in steps (`per: iteration`) or
//!   epochs (`per: epoch`) from 0, over `T` of them in all: `lr·(t+1)/W` while `t < W`,
//!   then `min_lr + (lr − min_lr)·(1 + cos(π·(t−W)/(T−W)))/2`, PyTorch's
//!   `CosineAnnealingLR(T_max = T − W, eta_min = min_lr)` in closed form.
//! - `step(milestones, gamma)`: `lr·γ^k`, `k` the number of milestones ≤ the epoch
//!   (PyTorch's `MultiStepLR`, stepped once per epoch).
//! - `plateau(factor, patience)`: PyTorch's `ReduceLROnPlateau` (mode `min`, relative
//!   threshold 1e-4, no cooldown, `min_lr` 0) on the test loss (the training loss
//!   when there is no test split), once per epoch. Its state is checkpointed.

use crate::recipe::{Per, Schedule};
use serde::{Deserialize, Serialize};

/// A schedule over a run of `epochs` epochs of `steps_per_epoch` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub schedule: Schedule,
    pub base: f64,
    pub epochs: u64,
    pub steps_per_epoch: u64,
    /// `plateau`'s state: the factor applied so far, the best loss and the epochs
    /// since it improved.
    pub plateau: Plateau,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub scale: f64,
    /// `None` until the first epoch ends (PyTorch's `inf`).
    pub best: Option<f64>,
    pub bad_epochs: u64,
}

impl LrSchedule {
    pub fn new(schedule: Schedule, base: f64, epochs: u64, steps_per_epoch: u64) -> LrSchedule {
        LrSchedule {
            schedule,
            base,
            epochs,
            steps_per_epoch,
            plateau: Plateau {
                scale: 1.0,
                best: None,
                bad_epochs: 0,
            },
        }
    }

    /// The rate of global step `step` (0-based), which falls in epoch `epoch`.
    pub fn lr(&self, step: u64, epoch: u64) -> f64 {
        match &self.schedule {
            Schedule::Constant => self.base,
            Schedule::Cosine {
                warmup,
                min_lr,
                per,
            } => {
                let (t, total) = match per {
                    Per::Iteration => (step, self.epochs * self.steps_per_epoch),
                    Per::Epoch => (epoch, self.epochs),
                };
                cosine(self.base, *min_lr, *warmup, t, total)
            }
            Schedule::Step { milestones, gamma } => {
                let k = milestones.iter().filter(|&&m| m <= epoch).count();
                self.base * gamma.powi(k as i32)
            }
            Schedule::Plateau { .. } => self.base * self.plateau.scale,
        }
    }

    /// Tells the schedule an epoch ended with `loss`; only `plateau` listens.
    pub fn end_epoch(&mut self, loss: f64) {
        let Schedule::Plateau { factor, patience } = self.schedule else {
            return;
        };
        let p = &mut self.plateau;
        let better = p.best.is_none_or(|b| loss < b * (1.0 - 1e-4));
        if better {
            p.best = Some(loss);
            p.bad_epochs = 0;
        } else {
            p.bad_epochs += 1;
        }
        if p.bad_epochs > patience {
            let old = self.base * p.scale;
            // PyTorch skips reductions smaller than its eps of 1e-8.
            if old - old * factor > 1e-8 {
                p.scale *= factor;
            }
            p.bad_epochs = 0;
        }
    }
}

/// Linear warm-up over `warmup` units, then cosine decay to `min_lr` at `total`.
fn cosine(base: f64, min_lr: f64, warmup: u64, t: u64, total: u64) -> f64 {
    if t < warmup {
        return base * (t + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let x = ((t - warmup) as f64 / span).min(1.0);
    min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * x).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn cosine_warms_up_then_decays_per_iteration_or_epoch() {
        let s = LrSchedule::new(
            Schedule::Cosine {
                warmup: 2,
                min_lr: 0.0,
                per: Per::Iteration,
            },
            1.0,
            2,
            3,
        );
        // 6 steps: warm-up 0.5, 1; then cos over 4 steps: 1, (1+cos π/4)/2, 0.5, ….
        let lrs: Vec<f64> = (0..6).map(|t| s.lr(t, t / 3)).collect();
        for (a, b) in lrs.iter().zip([
            0.5,
            1.0,
            1.0,
            (1.0 + (std::f64::consts::FRAC_PI_4).cos()) / 2.0,
            0.5,
            (1.0 - (std::f64::consts::FRAC_PI_4).cos()) / 2.0,
        ]) {
            close(*a, b);
        }
        let e = LrSchedule::new(
            Schedule::Cosine {
                warmup: 0,
                min_lr: 0.1,
                per: Per::Epoch,
            },
            1.1,
            4,
            10,
        );
        // Constant within an epoch; 1.1, 0.1 + (1 + cos π/4)/2, 0.6, ….
        close(e.lr(0, 0), 1.1);
        close(e.lr(9, 0), 1.1);
        close(
            e.lr(10, 1),
            0.1 + (1.0 + (std::f64::consts::FRAC_PI_4).cos()) / 2.0,
        );
        close(e.lr(20, 2), 0.6);
    }

    #[test]
    fn multistep_drops_at_each_milestone() {
        let s = LrSchedule::new(
            Schedule::Step {
                milestones: vec![2, 4],
                gamma: 0.1,
            },
            1.0,
            6,
            5,
        );
        let lrs: Vec<f64> = (0..6).map(|e| s.lr(e * 5, e)).collect();
        for (a, b) in lrs.iter().zip([1.0, 1.0, 0.1, 0.1, 0.01, 0.01]) {
            close(*a, b);
        }
    }

    #[test]
    fn plateau_waits_patience_epochs_then_reduces() {
        let mut s = LrSchedule::new(
            Schedule::Plateau {
                factor: 0.5,
                patience: 1,
            },
            1.0,
            10,
            5,
        );
        let mut lrs = vec![];
        for loss in [1.0, 0.9, 0.9, 0.9, 0.89999, 0.5, 0.6, 0.6] {
            s.end_epoch(loss);
            lrs.push(s.lr(0, 0));
        }
        // Two epochs without improvement (> patience 1) halve the rate; 0.89999 is
        // within the 1e-4 threshold of 0.9, so it is no improvement.
        assert_eq!(lrs, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]);
    }
}
