//! The training recipe: what a model's `train { ... }` section says, as types.
//!
//! `eval::recipe` parses and validates the section once, against the model; what comes
//! out is a [`Recipe`] whose every value is in range, so the trainer reads fields rather
//! than re-checking them. This module depends on nothing but serde, so the trainer (and
//! anything else that only consumes a recipe) imports it without the elaborator.
//!
//! The serialised form is the JSON that `fnetc check --json` prints under `"train"`:
//! only the keys the section sets, each constructor as an object with its `"kind"` and
//! every argument, defaults filled in.

use serde::{Deserialize, Serialize};

/// A validated `train { ... }` section. A key the section does not set is `None`; the
/// trainer (or its command-line flags) chooses the default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// `loss:` what training minimises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    /// `optimizer:` how gradients update the trainable parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<Optimizer>,
    /// `schedule:` how the learning rate changes over training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// `epochs:` passes over the training split (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// `batch:` samples per step (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// `seed:` seeds shuffling, augmentation and the search (0 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `regularizers:` terms added to the loss, in the order written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regularizers: Option<Vec<Regularizer>>,
    /// `data:` where the samples and labels come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    /// `augment:` transforms applied to each training sample, in the order written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Vec<Augment>>,
    /// `search:` an architecture search over the model's pooling slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// `sync_bn:` under data-parallel training, SyncBatchNorm: batch norms use the
    /// global batch's statistics inside the step (docs/distributed.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_bn: Option<bool>,
    /// `resize:` resample every image (train and test splits) to this height and width,
    /// bilinearly (PyTorch's `align_corners=False`), before training; e.g. 14 to train
    /// on 14×14 MNIST for the cross-resolution experiment (docs/experiments.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<u64>,
    /// `bucket_kb:` under data-parallel training, the size in KiB of the gradient
    /// buckets whose all-reduce overlaps the backward; 0 reduces all gradients in one
    /// all-reduce after the backward (docs/distributed.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_kb: Option<u64>,
}

/// The largest `bucket_kb:` (1 GiB): a bucket that large holds any model's gradients.
pub const MAX_BUCKET_KB: u64 = 1 << 20;

impl Recipe {
    /// The keys the section sets, in alphabetical order (the order `check` lists them).
    pub fn keys(&self) -> Vec<&'static str> {
        let set = [
            ("augment", self.augment.is_some()),
            ("batch", self.batch.is_some()),
            ("bucket_kb", self.bucket_kb.is_some()),
            ("data", self.data.is_some()),
            ("epochs", self.epochs.is_some()),
            ("loss", self.loss.is_some()),
            ("optimizer", self.optimizer.is_some()),
            ("regularizers", self.regularizers.is_some()),
            ("resize", self.resize.is_some()),
            ("schedule", self.schedule.is_some()),
            ("search", self.search.is_some()),
            ("seed", self.seed.is_some()),
            ("sync_bn", self.sync_bn.is_some()),
        ];
        set.into_iter()
            .filter(|(_, s)| *s)
            .map(|(k, _)| k)
            .collect()
    }
}

/// `loss: cross_entropy(label_smoothing: 0.1)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Softmax cross-entropy against integer labels.
    CrossEntropy {
        /// Mass moved from the true class to all classes uniformly, in `[0, ∞)`
        /// (PyTorch's `label_smoothing`); 0 is plain cross-entropy.
        label_smoothing: f64,
    },
}

/// `optimizer: sgd(...)`, `adam(...)` or `adamw(...)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    /// Stochastic gradient descent, PyTorch's `SGD`.
    Sgd(Sgd),
    /// Adam with L2 weight decay added to the gradient (PyTorch's `Adam`).
    Adam(Adam),
    /// Adam with decoupled weight decay (PyTorch's `AdamW`).
    #[serde(rename = "adamw")]
    AdamW(Adam),
}

impl Optimizer {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd(s) => s.lr,
            Optimizer::Adam(a) | Optimizer::AdamW(a) => a.lr,
        }
    }

    /// The optimiser's own weight decay, which groups inherit unless they override it.
    pub fn weight_decay(&self) -> f64 {
        match self {
            Optimizer::Sgd(s) => s.weight_decay,
            Optimizer::Adam(a) | Optimizer::AdamW(a) => a.weight_decay,
        }
    }

    /// Parameter groups, first match wins.
    pub fn groups(&self) -> &[ParamGroup] {
        match self {
            Optimizer::Sgd(s) => &s.groups,
            Optimizer::Adam(a) | Optimizer::AdamW(a) => &a.groups,
        }
    }
}

/// `sgd(lr, momentum: 0, nesterov: false, weight_decay: 0, groups: [])`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sgd {
    /// Base learning rate, positive.
    pub lr: f64,
    /// Momentum factor, 0 or more; 0 disables momentum.
    pub momentum: f64,
    /// Nesterov momentum instead of heavy-ball.
    pub nesterov: bool,
    /// L2 penalty added to the gradient, 0 or more.
    pub weight_decay: f64,
    /// Per-parameter overrides; parameters no group matches use the values above.
    pub groups: Vec<ParamGroup>,
}

/// `adam(lr, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0, groups: [])`; `adamw`
/// takes the same arguments with `weight_decay: 0.01` by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adam {
    /// Base learning rate, positive.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates, each in `[0, 1)`.
    pub betas: [f64; 2],
    /// Added to the denominator for stability, positive.
    pub eps: f64,
    /// Weight decay, 0 or more: L2 for `adam`, decoupled for `adamw`.
    pub weight_decay: f64,
    /// Per-parameter overrides; parameters no group matches use the values above.
    pub groups: Vec<ParamGroup>,
}

/// `group(match: "*.mask_params", lr_factor: 0.1, weight_decay: inherit)`: settings for
/// the trainable parameters whose stable name matches a glob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// serde cannot deny unknown fields next to a struct's tag.
#[serde(tag = "kind", rename = "group")]
pub struct ParamGroup {
    /// Glob over stable parameter names; `*` matches any run of characters, dots
    /// included. Validation guarantees it matches at least one parameter.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Multiplies the scheduled learning rate, 0 or more.
    pub lr_factor: f64,
    /// This group's weight decay, or the optimiser's.
    pub weight_decay: GroupDecay,
}

impl ParamGroup {
    /// Whether the parameter named `name` belongs to this group.
    pub fn matches(&self, name: &str) -> bool {
        glob(&self.pattern, name)
    }
}

/// A group's weight decay: `inherit` (the optimiser's) or its own, 0 or more.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupDecay {
    /// `inherit`: the optimiser's `weight_decay`.
    #[serde(with = "inherit_word")]
    Inherit,
    /// This group's own decay, 0 or more.
    Value(f64),
}

impl GroupDecay {
    /// The decay this group applies under an optimiser whose own decay is `inherited`.
    pub fn resolve(self, inherited: f64) -> f64 {
        match self {
            GroupDecay::Inherit => inherited,
            GroupDecay::Value(v) => v,
        }
    }
}

/// `GroupDecay::Inherit` is the string `"inherit"` in JSON, as the section spells it.
mod inherit_word {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("inherit")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        match String::deserialize(d)?.as_str() {
            "inherit" => Ok(()),
            other => Err(D::Error::custom(format!(
                "expected `inherit`, got `{other}`"
            ))),
        }
    }
}

/// `schedule:` how the learning rate moves from the optimiser's `lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The optimiser's `lr` throughout.
    Constant,
    /// Linear warm-up, then cosine decay from `lr` to `min_lr` at the end of training.
    Cosine {
        /// Warm-up length, counted in the unit of `per`; 0 for none.
        warmup: u64,
        /// The learning rate at the end, 0 or more.
        min_lr: f64,
        /// Whether the rate changes every step or once per epoch.
        per: Per,
    },
    /// Multiply the rate by `gamma` at each milestone (PyTorch's `MultiStepLR`).
    Step {
        /// Epochs at which the rate drops: positive and strictly increasing.
        milestones: Vec<u64>,
        /// Factor applied at each milestone, in `(0, 1)`.
        gamma: f64,
    },
    /// Multiply the rate by `factor` when the test loss has not improved for
    /// `patience` epochs (PyTorch's `ReduceLROnPlateau`).
    Plateau {
        /// Factor applied on a plateau, positive.
        factor: f64,
        /// Epochs without improvement before the rate drops, 0 or more.
        patience: u64,
    },
}

/// The unit a schedule counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Every optimiser step.
    Iteration,
    /// Once per epoch.
    Epoch,
}

/// `regularizers: [...]`: terms added to the loss, logged separately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Regularizer {
    /// `orthogonality(weight)`: the shared bases' orthogonality penalty. Validation
    /// guarantees the model has shared bases.
    Orthogonality {
        /// λ, 0 or more.
        weight: f64,
    },
    /// `antialias(weight, stddevs: 2, target: gabor)`: FlexConv's anti-aliasing
    /// penalty on frequencies above Nyquist. Validation guarantees the model has
    /// flexconv layers.
    Antialias {
        /// λ, 0 or more.
        weight: f64,
        /// Standard deviations of each Gabor filter's Gaussian envelope counted into
        /// its frequency (the official code's `gauss_stddevs`), 0 or more.
        stddevs: f64,
        /// Which frequencies are penalised.
        target: AntialiasTarget,
    },
    /// `kernel_l2(weight)`: L2 penalty on the generated kernels.
    KernelL2 {
        /// λ, 0 or more.
        weight: f64,
    },
}

/// What the anti-aliasing penalty looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AntialiasTarget {
    /// The Gabor filters of the kernel network alone.
    Gabor,
    /// The Gabor filters together with the mask.
    GaborMask,
}

/// `data:` the data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Data {
    /// `idx(images, labels, train: [a, b], test: [c, d])`: IDX files, gzipped or not.
    Idx {
        /// Path of the images file.
        images: String,
        /// Path of the labels file.
        labels: String,
        /// Samples `[start, end)` to train on; `None` (`[]`) for the loader's default.
        #[serde(with = "split_or_empty")]
        train: Option<Split>,
        /// Samples `[start, end)` to test on; `None` (`[]`) for the loader's default.
        #[serde(with = "split_or_empty")]
        test: Option<Split>,
    },
    /// `cifar10(dir)`: the CIFAR-10 binary batches (`data_batch_*.bin`,
    /// `test_batch.bin`) in one directory.
    Cifar10 {
        /// The directory.
        dir: String,
    },
    /// `npy(inputs, labels)`: NumPy arrays.
    Npy {
        /// Path of the inputs array, samples along the first axis.
        inputs: String,
        /// Path of the integer labels array.
        labels: String,
    },
}

/// Samples `start..end` of a data file; validation guarantees `start < end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// First sample index.
    pub start: u64,
    /// One past the last sample index.
    pub end: u64,
}

/// A split is `[start, end]` in the section and in JSON; no split is `[]`.
mod split_or_empty {
    use super::Split;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Split>, s: S) -> Result<S::Ok, S::Error> {
        let pair: &[u64] = match v {
            Some(sp) => &[sp.start, sp.end],
            None => &[],
        };
        s.collect_seq(pair)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Split>, D::Error> {
        match Vec::<u64>::deserialize(d)?.as_slice() {
            [] => Ok(None),
            &[start, end] if start < end => Ok(Some(Split { start, end })),
            other => Err(D::Error::custom(format!(
                "a split is [] or [start, end] with start < end, got {other:?}"
            ))),
        }
    }
}

/// `augment: [...]`: per-sample transforms of the training split, seeded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Augment {
    /// `flip`: horizontal flip with probability 1/2.
    Flip,
    /// `random_crop(size, padding: 0)`: zero-pad each side, then crop a random window.
    RandomCrop {
        /// Side of the cropped window, at least 1.
        size: u64,
        /// Zeros added on each side first, 0 or more.
        padding: u64,
    },
}

/// `search:` an architecture search over the model's pooling slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Search {
    /// `mixture(...)`: Balanced Mixture of SuperNets. Validation guarantees the model
    /// declares pooling slots.
    Mixture {
        /// Supernets in the mixture, at least 1.
        models: u64,
        /// Final temperature of the assignment softmax, reached linearly from 1 over
        /// training; positive.
        t_max: f64,
        /// Decay of the moving average of each configuration's validation accuracy,
        /// in `(0, 1)`.
        ema: f64,
        /// Balancing stops once the assignment's KL divergence to uniform is at most
        /// this.
        kl: f64,
        /// Fraction of the training split that trains weights; the rest validates.
        /// In `(0, 1)`.
        split: f64,
    },
}

/// Glob match where `*` matches any run of characters (dots included).
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_runs() {
        assert!(glob("*.mask_params", "res1.flex1.mask_params"));
        assert!(glob("stem.*", "stem.weight"));
        assert!(glob("*flex*bias", "a.flex1.bias"));
        assert!(!glob("*.mask_params", "res1.flex1.bias"));
        assert!(glob("exact", "exact"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn group_decay_resolves_inherit_to_the_optimisers() {
        assert_eq!(GroupDecay::Inherit.resolve(5e-4), 5e-4);
        assert_eq!(GroupDecay::Value(0.0).resolve(5e-4), 0.0);
    }

    #[test]
    fn json_round_trips_and_rejects_bad_splits() {
        let text = r#"{"data": {"kind": "idx", "images": "i", "labels": "l",
                       "train": [0, 8], "test": []},
                       "optimizer": {"kind": "adamw", "lr": 0.1, "betas": [0.9, 0.99],
                         "eps": 1e-8, "weight_decay": 0.01,
                         "groups": [{"kind": "group", "match": "*.w", "lr_factor": 1.0,
                                     "weight_decay": "inherit"}]}}"#;
        let r: Recipe = serde_json::from_str(text).expect("valid recipe JSON");
        assert_eq!(r.keys(), ["data", "optimizer"]);
        let Some(Data::Idx { train, test, .. }) = &r.data else {
            panic!("idx data: {r:?}")
        };
        assert_eq!(*train, Some(Split { start: 0, end: 8 }));
        assert_eq!(*test, None);
        let opt = r.optimizer.as_ref().expect("optimizer");
        assert!(matches!(opt, Optimizer::AdamW(_)));
        assert_eq!(
            opt.groups()[0].weight_decay.resolve(opt.weight_decay()),
            0.01
        );
        assert!(opt.groups()[0].matches("fc.w"));
        let back: Recipe =
            serde_json::from_value(serde_json::to_value(&r).expect("serialises")).expect("reads");
        assert_eq!(back, r);
        let bad = text.replace("[0, 8]", "[8, 0]");
        let err = serde_json::from_str::<Recipe>(&bad).expect_err("empty split");
        assert!(err.to_string().contains("start < end"), "{err}");
        let bad = text.replace("\"inherit\"", "\"keep\"");
        assert!(serde_json::from_str::<Recipe>(&bad).is_err());
    }
}
