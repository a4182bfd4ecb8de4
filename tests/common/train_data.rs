//! Small crafted training runs for the `fnetc train` tests: an IDX data set of
//! `side`×`side` one-channel images of three classes (a bright band in the top,
//! middle or bottom third of the rows, with pixel noise) and default [`TrainArgs`].

use fnet::backend::BackendKind;
use fnet::eval::Options;
use fnet::train::settings::Overrides;
use fnet::train::{train, Event, Summary, TrainArgs};
use std::path::Path;

/// Writes `images.idx` and `labels.idx` of `n` samples into `dir`.
pub fn write_idx(dir: &Path, n: usize, side: usize) {
    let mut img = vec![0, 0, 8, 3];
    img.extend((n as u32).to_be_bytes());
    img.extend((side as u32).to_be_bytes());
    img.extend((side as u32).to_be_bytes());
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    let mut s = 12345u64;
    for i in 0..n {
        let class = (i * 7 + i / 3) % 3;
        for r in 0..side {
            for _ in 0..side {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (s >> 58) as u8;
                img.push(if r * 3 / side == class {
                    180 + noise
                } else {
                    noise * 2
                });
            }
        }
        lab.push(class as u8);
    }
    std::fs::write(dir.join("images.idx"), img).unwrap();
    std::fs::write(dir.join("labels.idx"), lab).unwrap();
}

/// A run of `model` into `out` on the reference backend, nothing overridden.
pub fn args(model: &Path, out: &Path) -> TrainArgs {
    TrainArgs {
        model: model.to_path_buf(),
        options: Options::default(),
        overrides: Overrides::default(),
        backend: BackendKind::Reference,
        device: None,
        out: out.to_path_buf(),
        resume: false,
        force: false,
        eval_every: None,
        checkpoint_every: None,
        keep: 2,
        stop_after: None,
        skip_passes: Vec::new(),
        log_grad_norms: Vec::new(),
    }
}

/// Trains without a progress display; the error as text.
pub fn quiet(a: &TrainArgs) -> Result<Summary, String> {
    train(a, &mut |_: Event| {}).map_err(|e| e.to_string())
}

/// The records of one kind in `run`'s metrics.jsonl.
pub fn metrics(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// A masked 2D FlexConv whose narrow Gaussian crops its 7×7 horizon; its mask learns
/// five times faster than the rest.
pub const FLEX: &str = r#"
model flexy {
  input x: f32[B, 1, 6, 6]
  seed 3
  h = x |> flexconv(4, horizon: 7, kernel: magnet(hidden: 8, layers: 1),
                    mask: gauss(sigma: 0.3, threshold: 0.1)) |> batchnorm |> relu
  return h |> global_avg_pool |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, 40], test: [40, 52])
  optimizer: adam(lr: 0.02, groups: [group(match: "*.mask_params", lr_factor: 5)])
  epochs: 3
  batch: 10
  seed: 5
}
"#;
