//! The optimisers, on the host over the parameter tensors, with PyTorch's exact update
//! rules (`torch.optim.SGD`, `Adam`, `AdamW`, default `foreach`-free semantics):
//!
//! - **SGD:** `g ← g + λ·p`; with momentum μ, `b ← g` on the first step and
//!   `b ← μ·b + g` after; `g ← g + μ·b` (Nesterov) or `g ← b`; `p ← p − lr·g`.
//! - **Adam:** `g ← g + λ·p`; `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`;
//!   `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
//! - **AdamW:** as Adam, with the decay decoupled: `p ← p·(1 − lr·λ)` first.
//!
//! Only parameters the training graph has a gradient for are stepped: trainable and
//! shared ones. Frozen bases and buffers get no gradient, so they are never decayed.
//! A parameter's group (the first `group` whose pattern matches its name) scales the
//! learning rate by its `lr_factor` and sets its weight decay.
//!
//! The state (momentum buffers, moments) is kept per parameter under PyTorch's names
//! (`momentum_buffer`, `exp_avg`, `exp_avg_sq`) so checkpoints can store and restore
//! it bit for bit.

use crate::recipe::Optimizer;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// An optimiser and its state.
#[derive(Clone, Debug, PartialEq)]
pub struct Optim {
    pub config: Optimizer,
    /// Steps taken so far (PyTorch's `state['step']`).
    pub steps: u64,
    /// Per state name, per parameter name: the state tensor.
    pub state: BTreeMap<String, BTreeMap<String, Tensor<f32>>>,
}

/// The learning-rate factor and weight decay that apply to one parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub lr_factor: f64,
    pub weight_decay: f64,
}

impl Optim {
    pub fn new(config: Optimizer) -> Optim {
        Optim {
            config,
            steps: 0,
            state: BTreeMap::new(),
        }
    }

    /// The names of the state tensors this optimiser keeps per parameter.
    pub fn state_names(&self) -> &'static [&'static str] {
        match &self.config {
            Optimizer::Sgd(s) if s.momentum == 0.0 => &[],
            Optimizer::Sgd(_) => &["momentum_buffer"],
            Optimizer::Adam(_) | Optimizer::AdamW(_) => &["exp_avg", "exp_avg_sq"],
        }
    }

    /// The group settings for parameter `name`.
    pub fn hyper(&self, name: &str) -> Hyper {
        let decay = self.config.weight_decay();
        match self.config.groups().iter().find(|g| g.matches(name)) {
            Some(g) => Hyper {
                lr_factor: g.lr_factor,
                weight_decay: g.weight_decay.resolve(decay),
            },
            None => Hyper {
                lr_factor: 1.0,
                weight_decay: decay,
            },
        }
    }

    /// One step at learning rate `lr` over every `(name, gradient)` in `grads`,
    /// updating `params` in place.
    pub fn step(
        &mut self,
        params: &mut BTreeMap<String, Tensor<f32>>,
        grads: &[(&str, &Tensor<f32>)],
        lr: f64,
    ) {
        self.steps += 1;
        let t = self.steps;
        // A copy, so the state can be borrowed mutably inside the loop.
        let config = self.config.clone();
        for &(name, g) in grads {
            let h = self.hyper(name);
            let Some(p) = params.get_mut(name) else {
                continue;
            };
            let lr = lr * h.lr_factor;
            let wd = h.weight_decay as f32;
            match &config {
                Optimizer::Sgd(s) => {
                    let mut d: Vec<f32> = g.data.clone();
                    if wd != 0.0 {
                        d.iter_mut().zip(&p.data).for_each(|(d, &p)| *d += wd * p);
                    }
                    if s.momentum != 0.0 {
                        let mu = s.momentum as f32;
                        let buf = self.slot("momentum_buffer", name, g);
                        if t == 1 {
                            buf.data.copy_from_slice(&d);
                        } else {
                            buf.data
                                .iter_mut()
                                .zip(&d)
                                .for_each(|(b, &d)| *b = mu * *b + d);
                        }
                        if s.nesterov {
                            d.iter_mut().zip(&buf.data).for_each(|(d, &b)| *d += mu * b);
                        } else {
                            d.copy_from_slice(&buf.data);
                        }
                    }
                    let lr = lr as f32;
                    p.data.iter_mut().zip(&d).for_each(|(p, &d)| *p -= lr * d);
                }
                Optimizer::Adam(a) | Optimizer::AdamW(a) => {
                    let decoupled = matches!(config, Optimizer::AdamW(_));
                    let (b1, b2) = (a.betas[0], a.betas[1]);
                    let eps = a.eps as f32;
                    let mut d: Vec<f32> = g.data.clone();
                    if wd != 0.0 {
                        if decoupled {
                            let keep = (1.0 - lr * h.weight_decay) as f32;
                            p.data.iter_mut().for_each(|p| *p *= keep);
                        } else {
                            d.iter_mut().zip(&p.data).for_each(|(d, &p)| *d += wd * p);
                        }
                    }
                    // PyTorch computes the bias corrections in Python floats (f64).
                    let bc1 = 1.0 - b1.powi(t as i32);
                    let bc2_sqrt = (1.0 - b2.powi(t as i32)).sqrt() as f32;
                    let step_size = (lr / bc1) as f32;
                    let (b1, b2) = (b1 as f32, b2 as f32);
                    self.slot("exp_avg", name, g)
                        .data
                        .iter_mut()
                        .zip(&d)
                        // PyTorch's `lerp_(g, 1 − β₁)`, rounded as it rounds.
                        .for_each(|(m, &d)| *m += (1.0 - b1) * (d - *m));
                    self.slot("exp_avg_sq", name, g)
                        .data
                        .iter_mut()
                        .zip(&d)
                        .for_each(|(v, &d)| *v = b2 * *v + (1.0 - b2) * d * d);
                    let m = &self.state["exp_avg"][name].data;
                    let v = &self.state["exp_avg_sq"][name].data;
                    for ((p, &m), &v) in p.data.iter_mut().zip(m).zip(v) {
                        *p -= step_size * m / (v.sqrt() / bc2_sqrt + eps);
                    }
                }
            }
        }
    }

    /// The state tensor `what` of parameter `name`, zeros shaped as `like` at first.
    fn slot(&mut self, what: &str, name: &str, like: &Tensor<f32>) -> &mut Tensor<f32> {
        self.state
            .entry(what.to_string())
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| Tensor {
                shape: like.shape.clone(),
                data: vec![0.0; like.data.len()],
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Adam, GroupDecay, ParamGroup, Sgd};

    fn t(v: &[f32]) -> Tensor<f32> {
        Tensor {
            shape: vec![v.len()],
            data: v.to_vec(),
        }
    }

    /// Runs `opt` over gradients `gs` (one per step) on one parameter from `p0`.
    fn run(opt: Optimizer, p0: f32, gs: &[f32], lr: f64) -> Vec<f32> {
        let mut o = Optim::new(opt);
        let mut params = BTreeMap::from([("w".to_string(), t(&[p0]))]);
        gs.iter()
            .map(|&g| {
                let g = t(&[g]);
                o.step(&mut params, &[("w", &g)], lr);
                params["w"].data[0]
            })
            .collect()
    }

    fn sgd(momentum: f64, nesterov: bool, wd: f64) -> Optimizer {
        Optimizer::Sgd(Sgd {
            lr: 0.1,
            momentum,
            nesterov,
            weight_decay: wd,
            groups: vec![],
        })
    }

    fn adam(wd: f64) -> Adam {
        Adam {
            lr: 0.1,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: wd,
            groups: vec![],
        }
    }

    fn close(a: &[f32], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((f64::from(*x) - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_plain_momentum_nesterov_and_decay_by_hand() {
        // p = 1, g = 1, 2: plain SGD: 1 − 0.1 = 0.9, then 0.9 − 0.2 = 0.7.
        close(
            &run(sgd(0.0, false, 0.0), 1.0, &[1.0, 2.0], 0.1),
            &[0.9, 0.7],
        );
        // Momentum 0.5: b = 1 → p 0.9; b = 0.5 + 2 = 2.5 → p 0.65.
        close(
            &run(sgd(0.5, false, 0.0), 1.0, &[1.0, 2.0], 0.1),
            &[0.9, 0.65],
        );
        // Nesterov: d = g + μb: 1 + 0.5 = 1.5 → 0.85; b = 2.5, d = 2 + 1.25 → 0.525.
        close(
            &run(sgd(0.5, true, 0.0), 1.0, &[1.0, 2.0], 0.1),
            &[0.85, 0.525],
        );
        // Decay 0.1: d = 1 + 0.1 = 1.1 → 0.89; d = 2 + 0.089 → 0.6811.
        close(
            &run(sgd(0.0, false, 0.1), 1.0, &[1.0, 2.0], 0.1),
            &[0.89, 0.6811],
        );
    }

    #[test]
    fn adam_and_adamw_by_hand() {
        // Step 1 of Adam moves every coordinate by lr (m̂/√v̂ = ±1), whatever the
        // gradient's size.
        close(&run(Optimizer::Adam(adam(0.0)), 1.0, &[4.0], 0.1), &[0.9]);
        // Step 2 with g = 4, −2: m = 0.36 − 0.2 = 0.16 (after 0.4), v = 0.015984 + 0.003996.
        let m: f64 = 0.9 * 0.4 + 0.1 * -2.0;
        let v: f64 = 0.999 * 0.016 + 0.001 * 4.0;
        let p2 = 0.9 - 0.1 / (1.0 - 0.81) * m / (v.sqrt() / (1.0 - 0.998001f64).sqrt() + 1e-8);
        close(
            &run(Optimizer::Adam(adam(0.0)), 1.0, &[4.0, -2.0], 0.1),
            &[0.9, p2],
        );
        // Adam's decay enters the gradient: g = 0 + 0.5·1 still moves p by lr.
        close(&run(Optimizer::Adam(adam(0.5)), 1.0, &[0.0], 0.1), &[0.9]);
        // AdamW's is decoupled: p·(1 − 0.1·0.5) = 0.95, and g = 0 moves it no further.
        close(&run(Optimizer::AdamW(adam(0.5)), 1.0, &[0.0], 0.1), &[0.95]);
    }

    #[test]
    fn groups_scale_the_rate_and_set_the_decay() {
        let mut a = adam(0.01);
        a.groups = vec![ParamGroup {
            pattern: "*.mask_params".into(),
            lr_factor: 0.1,
            weight_decay: GroupDecay::Value(0.0),
        }];
        let o = Optim::new(Optimizer::AdamW(a));
        assert_eq!(
            o.hyper("l.mask_params"),
            Hyper {
                lr_factor: 0.1,
                weight_decay: 0.0
            }
        );
        assert_eq!(
            o.hyper("l.weight"),
            Hyper {
                lr_factor: 1.0,
                weight_decay: 0.01
            }
        );
        let mut o = o;
        let mut params = BTreeMap::from([
            ("l.mask_params".to_string(), t(&[1.0])),
            ("l.weight".to_string(), t(&[1.0])),
        ]);
        let g = t(&[1.0]);
        o.step(&mut params, &[("l.mask_params", &g), ("l.weight", &g)], 0.1);
        close(&params["l.mask_params"].data, &[0.99]);
        close(&params["l.weight"].data, &[1.0 * (1.0 - 0.001) - 0.1]);
    }
}
