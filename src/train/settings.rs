//! The settings of one training run: the model's `train {}` section with the
//! command-line flags applied over it and every default filled in. A setting the
//! trainer cannot honour yet is refused here, by name, rather than parsed and ignored.

use crate::recipe::{Augment, Data, Loss, Optimizer, Recipe, Schedule};
use crate::runtime::RunError;

/// Defaults for keys the section leaves out.
pub const DEFAULT_EPOCHS: u64 = 1;
pub const DEFAULT_BATCH: u64 = 32;
pub const DEFAULT_SEED: u64 = 0;
/// `bucket_kb:` when the section leaves it out (docs/distributed.md: measured on
/// ResNet-20, two ranks).
pub const DEFAULT_BUCKET_KB: u64 = 1024;

/// Flags that override the section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub epochs: Option<u64>,
    pub batch: Option<u64>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
}

/// A run's resolved settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The recipe as run: every key the trainer reads set, flags applied. This is what
    /// checkpoints and `recipe.json` record.
    pub recipe: Recipe,
    pub data: Data,
    pub label_smoothing: f64,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub epochs: u64,
    pub batch: u64,
    pub seed: u64,
    pub augment: Vec<Augment>,
    /// SyncBatchNorm over data-parallel ranks (`runtime::sync_stats`).
    pub sync_bn: bool,
    /// The size in KiB of the gradient buckets whose all-reduce overlaps the
    /// backward (data-parallel training); 0: one all-reduce after the backward.
    pub bucket_kb: u64,
}

/// Applies `flags` over `section` (the model's `train {}`, if any).
pub fn resolve(section: Option<&Recipe>, flags: &Overrides) -> Result<Settings, RunError> {
    let mut r = section.cloned().unwrap_or_default();
    if r.search.is_some() {
        return Err(RunError::new(
            "train { search: mixture(...) }: fnetc train trains one configuration, and none was chosen",
        )
        .hint("run the search with `fnetc search FILE`, or train one configuration with --config (e.g. the search's choice)"));
    }
    let Some(data) = r.data.clone() else {
        return Err(RunError::new("the train section names no `data`").hint(
            "add e.g. `data: idx(images: \"train-images.idx3-ubyte.gz\", labels: \"train-labels.idx1-ubyte.gz\", train: [0, 50000], test: [50000, 60000])`",
        ));
    };
    let mut optimizer = r.optimizer.clone().ok_or_else(|| {
        RunError::new("the train section names no `optimizer`")
            .hint("add e.g. `optimizer: adam(lr: 0.001)` or `sgd(lr: 0.1, momentum: 0.9)`")
    })?;
    if let Some(lr) = flags.lr {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(RunError::new(format!(
                "--lr {lr}: the learning rate must be a positive number"
            )));
        }
        match &mut optimizer {
            Optimizer::Sgd(s) => s.lr = lr,
            Optimizer::Adam(a) | Optimizer::AdamW(a) => a.lr = lr,
        }
    }
    for (flag, v) in [("--epochs", flags.epochs), ("--batch", flags.batch)] {
        if v == Some(0) {
            return Err(RunError::new(format!("{flag} 0: it must be at least 1")));
        }
    }
    let label_smoothing = match r.loss {
        Some(Loss::CrossEntropy { label_smoothing }) => label_smoothing,
        None => 0.0,
    };
    if label_smoothing > 1.0 {
        return Err(RunError::new(format!(
            "loss: cross_entropy(label_smoothing: {label_smoothing}): it must be at most 1"
        )));
    }
    let schedule = r.schedule.clone().unwrap_or(Schedule::Constant);
    let epochs = flags.epochs.or(r.epochs).unwrap_or(DEFAULT_EPOCHS);
    let batch = flags.batch.or(r.batch).unwrap_or(DEFAULT_BATCH);
    let seed = flags.seed.or(r.seed).unwrap_or(DEFAULT_SEED);
    let augment = r.augment.clone().unwrap_or_default();
    r.loss = Some(Loss::CrossEntropy { label_smoothing });
    r.optimizer = Some(optimizer.clone());
    r.schedule = Some(schedule.clone());
    r.epochs = Some(epochs);
    r.batch = Some(batch);
    r.seed = Some(seed);
    Ok(Settings {
        data,
        label_smoothing,
        optimizer,
        schedule,
        epochs,
        batch,
        seed,
        augment,
        sync_bn: r.sync_bn.unwrap_or(false),
        // A setting of speed, not of what is trained (with two ranks the sums are
        // the same bytes either way): left out of the recipe checkpoints record, so
        // a run may resume with another bucket size.
        bucket_kb: r.bucket_kb.take().unwrap_or(DEFAULT_BUCKET_KB),
        recipe: r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Adam, Regularizer, Search};

    fn section() -> Recipe {
        Recipe {
            data: Some(Data::Npy {
                inputs: "x.npy".into(),
                labels: "y.npy".into(),
            }),
            optimizer: Some(Optimizer::Adam(Adam {
                lr: 0.001,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
                groups: vec![],
            })),
            epochs: Some(3),
            batch: Some(64),
            ..Recipe::default()
        }
    }

    #[test]
    fn flags_override_the_section_and_defaults_fill_the_rest() {
        let s = resolve(
            Some(&section()),
            &Overrides {
                epochs: Some(1),
                lr: Some(0.5),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!((s.epochs, s.batch, s.seed), (1, 64, DEFAULT_SEED));
        assert_eq!(s.optimizer.lr(), 0.5);
        assert_eq!(s.recipe.optimizer.as_ref().unwrap().lr(), 0.5);
        assert_eq!(s.schedule, Schedule::Constant);
        assert_eq!(s.recipe.epochs, Some(1));
    }

    #[test]
    fn unsupported_and_missing_settings_are_named() {
        // Regularisers are kept in the recipe (the loss is built from it); the
        // search belongs to `fnetc search` (train refuses it without --config).
        let mut r = section();
        r.regularizers = Some(vec![Regularizer::KernelL2 { weight: 0.1 }]);
        let s = resolve(Some(&r), &Overrides::default()).unwrap();
        assert_eq!(s.recipe.regularizers, r.regularizers);
        r.search = Some(Search::Mixture {
            models: 2,
            t_max: 5.0,
            ema: 0.9,
            kl: 0.01,
            split: 0.8,
        });
        let e = resolve(Some(&r), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("search: mixture"), "{e}");
        let mut r = section();
        r.data = None;
        let e = resolve(Some(&r), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `data`"), "{e}");
        let e = resolve(None, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `data`"), "{e}");
        let e = resolve(
            Some(&section()),
            &Overrides {
                batch: Some(0),
                ..Overrides::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--batch 0"), "{e}");
    }

    #[test]
    fn the_bucket_size_is_a_setting_the_recipe_does_not_record() {
        let s = resolve(Some(&section()), &Overrides::default()).unwrap();
        assert_eq!(s.bucket_kb, DEFAULT_BUCKET_KB);
        let mut r = section();
        r.bucket_kb = Some(64);
        let s = resolve(Some(&r), &Overrides::default()).unwrap();
        assert_eq!(s.bucket_kb, 64);
        // Checkpoints compare the recipe on resume: another bucket size still resumes.
        assert_eq!(s.recipe.bucket_kb, None);
        assert_eq!(
            s.recipe,
            resolve(Some(&section()), &Overrides::default())
                .unwrap()
                .recipe
        );
    }
}
