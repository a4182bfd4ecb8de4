//! The trainer's optimisers and schedules against PyTorch
//! (`tools/train_fixture.py` → `tests/fixtures/train_optim.json`): three steps of each
//! optimiser on fixed gradients, alone and in a group at half the learning rate, and
//! the learning rates of `MultiStepLR` and `CosineAnnealingLR`.

use fnet::recipe::{Adam, GroupDecay, Optimizer, ParamGroup, Per, Schedule, Sgd};
use fnet::tensor::Tensor;
use fnet::train::optimizer::Optim;
use fnet::train::schedule::LrSchedule;
use serde_json::Value;
use std::collections::BTreeMap;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/train_optim.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn adam(lr: f64, betas: [f64; 2], eps: f64, wd: f64) -> Adam {
    Adam {
        lr,
        betas,
        eps,
        weight_decay: wd,
        groups: vec![],
    }
}

fn sgd(momentum: f64, nesterov: bool, wd: f64) -> Sgd {
    Sgd {
        lr: 0.1,
        momentum,
        nesterov,
        weight_decay: wd,
        groups: vec![],
    }
}

/// `opt` with its only parameter `w` in a group at `factor` times the rate.
fn grouped(opt: Optimizer, factor: f64) -> Optimizer {
    let g = vec![ParamGroup {
        pattern: "w".into(),
        lr_factor: factor,
        weight_decay: GroupDecay::Inherit,
    }];
    match opt {
        Optimizer::Sgd(s) => Optimizer::Sgd(Sgd { groups: g, ..s }),
        Optimizer::Adam(a) => Optimizer::Adam(Adam { groups: g, ..a }),
        Optimizer::AdamW(a) => Optimizer::AdamW(Adam { groups: g, ..a }),
    }
}

#[test]
fn optimisers_match_pytorch() {
    let f = fixture();
    let p0: Vec<f32> = floats(&f["p0"]).iter().map(|&v| v as f32).collect();
    let cases = [
        ("sgd", Optimizer::Sgd(sgd(0.0, false, 0.0))),
        ("sgd_momentum", Optimizer::Sgd(sgd(0.9, false, 0.01))),
        ("sgd_nesterov", Optimizer::Sgd(sgd(0.9, true, 0.0))),
        ("adam", Optimizer::Adam(adam(0.01, [0.9, 0.99], 1e-6, 0.1))),
        (
            "adamw",
            Optimizer::AdamW(adam(0.01, [0.9, 0.999], 1e-8, 0.5)),
        ),
    ];
    for (name, opt) in cases {
        for (key, factor) in [("factor_1", 1.0), ("factor_0.5", 0.5)] {
            let mut o = Optim::new(grouped(opt.clone(), factor));
            let lr = opt.lr();
            let mut params = BTreeMap::from([(
                "w".to_string(),
                Tensor::from_vec(vec![4], p0.clone()).unwrap(),
            )]);
            let want = f["optimizers"][name][key].as_array().unwrap();
            for (step, g) in f["grads"].as_array().unwrap().iter().enumerate() {
                let g: Vec<f32> = floats(g).iter().map(|&v| v as f32).collect();
                let g = Tensor::from_vec(vec![4], g).unwrap();
                o.step(&mut params, &[("w", &g)], lr);
                for (i, (got, want)) in params["w"].data.iter().zip(floats(&want[step])).enumerate()
                {
                    let err = (f64::from(*got) - want).abs();
                    assert!(
                        err <= 2e-7 * want.abs().max(1.0),
                        "{name} {key} step {} element {i}: {got} vs PyTorch {want}",
                        step + 1
                    );
                }
            }
        }
    }
}

#[test]
fn schedules_match_pytorch() {
    let f = fixture();
    let multistep = LrSchedule::new(
        Schedule::Step {
            milestones: vec![2, 5],
            gamma: 0.1,
        },
        0.5,
        7,
        1,
    );
    let cosine = LrSchedule::new(
        Schedule::Cosine {
            warmup: 0,
            min_lr: 0.05,
            per: Per::Epoch,
        },
        0.5,
        6,
        1,
    );
    for (name, s) in [("multistep", multistep), ("cosine", cosine)] {
        for (e, want) in floats(&f[name]).iter().enumerate() {
            let got = s.lr(e as u64, e as u64);
            assert!(
                (got - want).abs() < 1e-12,
                "{name} epoch {e}: {got} vs PyTorch {want}"
            );
        }
    }
}
