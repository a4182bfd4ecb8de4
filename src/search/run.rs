//! The search loop (`fnetc search`): M weight sets, each with its own optimiser state,
//! trained on configurations drawn uniformly and assigned to models through the
//! balanced p(m|a) of [`Mixture`]; each step is scored on one validation batch and
//! the score moves W. At the end every (configuration, model) pair is evaluated on the
//! whole validation split and ranked ([`super::outputs`]).
//!
//! The training split of the `train {}` section's data is cut in two: the first
//! `split` of it trains, the rest validates (no augmentation). Data order, sampling
//! and validation batches derive from (seed, epoch, step) alone, so a resumed search
//! is the same search.

use super::configs::{self, combinations, config_words, Built, Excluded};
use super::mixture::{temperature, Mixture};
use crate::backend::{open, Backend, BackendKind};
use crate::cli::CliError;
use crate::driver::compile_file;
use crate::eval::Options;
use crate::opencl::DeviceSel;
use crate::recipe::Search as SearchEntry;
use crate::runtime::{initialise, ParamStore, RunError};
use crate::tensor::Tensor;
use crate::train::data::{self, Batch, Prefetch, Samples};
use crate::train::graphs::io_shape;
use crate::train::metrics::{loss_and_correct, Metrics};
use crate::train::optimizer::Optim;
use crate::train::schedule::LrSchedule;
use crate::train::settings::{resolve, Overrides, Settings};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Most supernets one search keeps.
pub const MAX_MODELS: u64 = 256;

/// What `fnetc search` was asked to do.
#[derive(Clone, Debug)]
pub struct SearchArgs {
    pub model: PathBuf,
    /// `--set` constants.
    pub set: Vec<(String, String)>,
    pub overrides: Overrides,
    /// `--models M` over the section's `models:`.
    pub models: Option<u64>,
    pub backend: BackendKind,
    pub device: Option<DeviceSel>,
    pub out: PathBuf,
    pub resume: bool,
    pub force: bool,
    pub checkpoint_every: Option<u64>,
    pub keep: usize,
    pub stop_after: Option<u64>,
    /// Passes left out of every configuration's compilations (`--skip-pass`).
    pub skip_passes: Vec<String>,
}

/// The search settings with flags applied.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MixtureSettings {
    pub models: u64,
    pub t_max: f64,
    pub ema: f64,
    pub kl: f64,
    pub split: f64,
}

/// What the loop reports, for a progress display.
#[derive(Clone, Debug)]
pub enum Event {
    EpochStart {
        epoch: u64,
        epochs: u64,
        from: u64,
        steps: u64,
        temperature: f64,
        kl: f64,
    },
    Step {
        loss: f64,
        val_accuracy: f64,
    },
    Line(String),
}

/// How a search ended.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub run_dir: PathBuf,
    pub stopped: bool,
    /// The chosen configuration and its validation accuracy (not when stopped).
    pub chosen: Option<(Vec<u64>, f64)>,
    /// Plans prepared in this process (configurations × batch sizes × 2 at most).
    pub plans_built: usize,
    pub samples_per_s: f64,
}

/// One supernet: its weights and optimiser.
pub(crate) struct Member {
    pub params: ParamStore<f32>,
    pub optim: Optim,
}

pub(crate) struct Search<'a> {
    pub args: &'a SearchArgs,
    pub settings: Settings,
    pub mix_settings: MixtureSettings,
    pub backend: Box<dyn Backend>,
    pub built: Vec<Built>,
    pub excluded: Vec<Excluded>,
    pub sample: Vec<usize>,
    pub train: Arc<Samples>,
    pub val: Samples,
    pub members: Vec<Member>,
    pub mixture: Mixture,
    pub schedule: LrSchedule,
    pub metrics: Metrics,
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub step: u64,
    pub epoch: u64,
    pub batch_in_epoch: u64,
    pub sums: (f64, u64, u64),
    /// The source text, for the chosen configuration's `.fnet`.
    pub source_text: String,
}

/// Runs the search `args` describes.
pub fn search(args: &SearchArgs, observe: &mut dyn FnMut(Event)) -> Result<Summary, CliError> {
    let options = Options {
        slot_config: None,
        overrides: args.set.clone(),
    };
    let (source, module) = match compile_file(&args.model, &options) {
        Ok(x) => x,
        // The default configuration may be one that cannot be built: elaborate the
        // first that can, for the family, the recipe and the shapes.
        Err(report) => {
            // An error in the train section is the same for every configuration:
            // that one is reported.
            let text = std::fs::read_to_string(&args.model).unwrap_or_default();
            let section = configs::train_span(&text);
            let in_section = |r: &crate::diag::Report| {
                let d = r.diagnostics.first();
                let at = d.and_then(|d| d.labels.first()).map(|l| l.span.start);
                matches!((at, section), (Some(a), Some((lo, hi))) if a >= lo && a < hi)
            };
            let mut found = None;
            if let Some((count, active)) = configs::literal_family(&text) {
                for c in combinations(count, active) {
                    let o = Options {
                        slot_config: Some(c),
                        overrides: args.set.clone(),
                    };
                    match compile_file(&args.model, &o) {
                        Ok(x) => {
                            found = Some(x);
                            break;
                        }
                        Err(r) if in_section(&r) => return Err(r.into()),
                        Err(_) => {}
                    }
                }
            }
            found.ok_or(report)?
        }
    };
    crate::driver::eprint_warnings(&source, &module);
    let Some(family) = module.graph.slots.first().cloned() else {
        return Err(RunError::new(format!(
            "{}: model `{}` declares no pooling slots, so there is nothing to search",
            args.model.display(),
            module.graph.name
        ))
        .hint("declare them with `slots NAME = pool_slots(count: N, active: K)` and place them with `slot(NAME)`; train a model without slots with `fnetc train`")
        .into());
    };
    if module.graph.slots.len() > 1 {
        return Err(RunError::new(format!(
            "{}: model `{}` declares {} slot families; fnetc search searches one",
            args.model.display(),
            module.graph.name,
            module.graph.slots.len()
        ))
        .hint("merge them into one `pool_slots` family")
        .into());
    }
    let mut recipe = module.recipe.clone().unwrap_or_default();
    let mix = match recipe.search.take() {
        Some(SearchEntry::Mixture {
            models,
            t_max,
            ema,
            kl,
            split,
        }) => MixtureSettings {
            models,
            t_max,
            ema,
            kl,
            split,
        },
        // Without a `search:` entry, the defaults `mixture()` has.
        None => MixtureSettings {
            models: 4,
            t_max: 100.0,
            ema: 0.9,
            kl: 1e-4,
            split: 0.5,
        },
    };
    let mix = MixtureSettings {
        models: args.models.unwrap_or(mix.models),
        ..mix
    };
    if mix.models == 0 {
        return Err(
            RunError::new("--models 0: a mixture needs at least one supernet")
                .hint("pass --models 1 or more (the paper uses 4)")
                .into(),
        );
    }
    if mix.models > MAX_MODELS {
        return Err(RunError::new(format!(
            "{} supernets: a mixture here has at most {MAX_MODELS} (each is a whole weight set and its optimiser state in memory)",
            mix.models
        ))
        .hint("the paper uses 1 to 8")
        .into());
    }
    let settings = resolve(Some(&recipe), &args.overrides)?;
    let (sample, classes) = io_shape(&module.graph)?;
    let model_dir = args
        .model
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let data = data::load_resized(
        &settings.data,
        settings.recipe.resize,
        &model_dir,
        &sample,
        classes,
    )?;
    data::check_augment(&settings.augment, &sample)?;
    let (train, val) = split_samples(&data.train, mix.split)?;
    let backend = open(args.backend, args.device, &args.model)?;
    if !backend.capabilities().training {
        return Err(RunError::new(format!(
            "the {} backend cannot run training graphs",
            backend.kind().name()
        ))
        .hint("search with --backend jit or --backend opencl")
        .into());
    }
    // Every configuration elaborated and differentiated once; the plans are
    // prepared on their first batch and kept.
    let mut built = Vec::new();
    let mut excluded = Vec::new();
    let mut shapes: Option<BTreeMap<String, Vec<usize>>> = None;
    let mut first_params = None;
    for slots in combinations(family.count, family.active) {
        let b = match configs::build(
            &args.model,
            &args.set,
            &slots,
            &settings.recipe,
            (settings.batch, backend.cost_table(), &args.skip_passes),
        ) {
            Ok(b) => b,
            Err(reason) => {
                excluded.push(Excluded { slots, reason });
                continue;
            }
        };
        let init = initialise::<f32>(&b.graph, b.graph.seed)?;
        let s = configs::shapes(&init);
        match &shapes {
            None => {
                shapes = Some(s);
                first_params = Some(b.graph.clone());
            }
            Some(first) if *first != s => {
                let what = first.iter().find(|(k, v)| s.get(*k) != Some(v)).map_or(
                    "its parameter set".to_string(),
                    |(k, v)| {
                        format!(
                            "`{k}` is {:?} here, {v:?} in the first configuration",
                            s.get(k)
                        )
                    },
                );
                excluded.push(Excluded {
                    slots,
                    reason: format!("its weights cannot be shared: {what}"),
                });
                continue;
            }
            Some(_) => {}
        }
        built.push(b);
    }
    let (Some(shapes), Some(graph)) = (shapes, first_params) else {
        let why: Vec<String> = (excluded.iter().take(3))
            .map(|e| format!("[{}]: {}", config_words(&e.slots), e.reason))
            .collect();
        return Err(RunError::new(format!(
            "{}: none of the {} configurations can be built ({})",
            args.model.display(),
            excluded.len(),
            why.join("; ")
        ))
        .into());
    };
    for e in &excluded {
        observe(Event::Line(format!(
            "excluded configuration [{}]: {}",
            config_words(&e.slots),
            e.reason
        )));
    }
    let members = (0..mix.models)
        .map(|m| {
            Ok(Member {
                // Each supernet its own draw; `seed:` moves them all, so searches
                // with other seeds start from other weights too.
                params: initialise::<f32>(
                    &graph,
                    (graph.seed)
                        .wrapping_add(settings.seed.wrapping_mul(1_000_003))
                        .wrapping_add(m),
                )?,
                optim: Optim::new(settings.optimizer.clone()),
            })
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    let steps_per_epoch = (train.len() as u64).div_ceil(settings.batch);
    let schedule = LrSchedule::new(
        settings.schedule.clone(),
        settings.optimizer.lr(),
        settings.epochs,
        steps_per_epoch,
    );
    let mut s = Search {
        args,
        mixture: Mixture::new(built.len(), mix.models as usize, mix.ema),
        settings,
        mix_settings: mix,
        backend,
        built,
        excluded,
        sample,
        train: Arc::new(train),
        val,
        members,
        schedule,
        metrics: Metrics::default(),
        shapes,
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        sums: (0.0, 0, 0),
        source_text: source.text.clone(),
    };
    s.start()?;
    s.run(observe)
}

/// Cuts the training split: the first `split` trains, the rest validates.
fn split_samples(all: &Samples, split: f64) -> Result<(Samples, Samples), RunError> {
    let n = all.len();
    let k = ((n as f64) * split).round() as usize;
    if k == 0 || k >= n {
        return Err(RunError::new(format!(
            "the training split has {n} samples: `split: {split}` leaves {k} to train and {} to validate",
            n - k.min(n)
        ))
        .hint("both parts need a sample at least; use more data or a split nearer 0.5"));
    }
    let per: usize = all.sample_shape().iter().product();
    let part = |lo: usize, hi: usize| {
        let mut shape = all.images.shape.clone();
        shape[0] = hi - lo;
        Samples {
            images: Tensor {
                shape,
                data: all.images.data[lo * per..hi * per].to_vec(),
            },
            labels: all.labels[lo..hi].to_vec(),
        }
    };
    Ok((part(0, k), part(k, n)))
}

impl Search<'_> {
    fn steps_per_epoch(&self) -> u64 {
        (self.train.len() as u64).div_ceil(self.settings.batch)
    }

    fn run(&mut self, observe: &mut dyn FnMut(Event)) -> Result<Summary, CliError> {
        let epochs = self.settings.epochs;
        let steps = self.steps_per_epoch();
        let (mut samples, started) = (0u64, Instant::now());
        while self.epoch < epochs {
            let epoch_start = Instant::now();
            // Balance once per epoch, at its start; a resume mid-epoch keeps the
            // divisions its checkpoint holds.
            let kl_start = if self.batch_in_epoch == 0 {
                let t = temperature(self.epoch, epochs, self.mix_settings.t_max);
                self.mixture.balance(t, self.mix_settings.kl)
            } else {
                self.mixture.balance_kl()
            };
            observe(Event::EpochStart {
                epoch: self.epoch,
                epochs,
                from: self.batch_in_epoch,
                steps,
                temperature: self.mixture.t,
                kl: kl_start,
            });
            let batches = Prefetch::start(
                self.train.clone(),
                self.settings.batch as usize,
                self.batch_in_epoch as usize,
                self.settings.augment.clone(),
                self.settings.seed,
                self.epoch,
            );
            for (_, b) in batches {
                let t0 = Instant::now();
                let lr = self.schedule.lr(self.step, self.epoch);
                let (a, m) = self.mixture.sample(self.settings.seed, self.step);
                let (loss, correct) = self.train_step(a, m, &b, lr)?;
                let train_s = t0.elapsed().as_secs_f64();
                let val = self.val_batch(self.step);
                let (vc, vn) = self.evaluate(a, m, &val)?;
                let validate_s = t0.elapsed().as_secs_f64() - train_s;
                let val_acc = vc as f64 / vn as f64;
                self.mixture.update(a, m, val_acc);
                let n = b.labels.data.len() as u64;
                self.sums.0 += loss * n as f64;
                self.sums.1 += correct;
                self.sums.2 += n;
                self.step += 1;
                self.batch_in_epoch += 1;
                samples += n;
                let sps = n as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                self.metrics.push(json!({"kind": "step", "step": self.step, "epoch": self.epoch,
                    "loss": loss, "accuracy": correct as f64 / n as f64, "lr": lr, "samples_per_s": sps,
                    "config": self.built[a].slots, "model": m, "val_accuracy": val_acc,
                    "train_s": train_s, "validate_s": validate_s}));
                observe(Event::Step {
                    loss,
                    val_accuracy: val_acc,
                });
                let stop = self.args.stop_after.is_some_and(|s| self.step >= s);
                let every = self.args.checkpoint_every.filter(|&e| e > 0);
                if stop
                    || every
                        .is_some_and(|e| self.step.is_multiple_of(e) && self.batch_in_epoch < steps)
                {
                    self.save()?;
                }
                if stop {
                    return Ok(self.summary(samples, started, true, None));
                }
            }
            let seen = self.sums.2.max(1) as f64;
            let (train_loss, train_acc) = (self.sums.0 / seen, self.sums.1 as f64 / seen);
            self.schedule.end_epoch(train_loss);
            let p = self.mixture.probabilities();
            let kl_end = self.mixture.balance_kl();
            let wall = epoch_start.elapsed().as_secs_f64();
            let rows = |x: &[f64]| -> Vec<Vec<f64>> {
                x.chunks(self.mixture.models).map(<[f64]>::to_vec).collect()
            };
            self.metrics.push(
                json!({"kind": "epoch", "epoch": self.epoch, "step": self.step,
                "train_loss": train_loss, "train_accuracy": train_acc, "test_loss": null,
                "test_accuracy": null, "wall_s": wall, "temperature": self.mixture.t,
                "kl": kl_end, "kl_balanced": kl_start, "w": rows(&self.mixture.w), "p": rows(&p)}),
            );
            observe(Event::Line(format!(
                "epoch {}/{epochs}: T {:.1}, KL {kl_end:.2e}, train loss {train_loss:.4} accuracy {:.2}% ({wall:.1} s)",
                self.epoch + 1,
                self.mixture.t,
                100.0 * train_acc
            )));
            self.epoch += 1;
            self.batch_in_epoch = 0;
            self.sums = (0.0, 0, 0);
            self.save()?;
        }
        let chosen = super::outputs::finish(self, observe)?;
        self.metrics.write(&self.args.out)?;
        Ok(self.summary(samples, started, false, Some(chosen)))
    }

    fn summary(
        &self,
        samples: u64,
        started: Instant,
        stopped: bool,
        chosen: Option<(Vec<u64>, f64)>,
    ) -> Summary {
        Summary {
            steps: self.step,
            run_dir: self.args.out.clone(),
            stopped,
            chosen,
            plans_built: self.built.iter().map(Built::plans).sum(),
            samples_per_s: samples as f64 / started.elapsed().as_secs_f64().max(1e-9),
        }
    }

    /// One optimiser step of model `m` on configuration `a`: loss and correct count.
    fn train_step(
        &mut self,
        a: usize,
        m: usize,
        b: &Batch,
        lr: f64,
    ) -> Result<(f64, u64), RunError> {
        let member = &mut self.members[m];
        let built = &mut self.built[a];
        let outputs = built.train_run(&*self.backend, &self.sample, &member.params, b)?;
        let tg = &built.tg;
        let (ng, nb, nt) = (tg.grads.len(), tg.buffers.len(), tg.terms.len());
        if outputs.len() != 2 + ng + nb + nt {
            return Err(RunError::new(format!(
                "internal error: the training graph gave {} outputs, expected {}",
                outputs.len(),
                2 + ng + nb + nt
            )));
        }
        let loss = f64::from(outputs[0].data[0]);
        let where_ = || {
            format!(
                "step {} (epoch {}, configuration [{}], model {m})",
                self.step + 1,
                self.epoch + 1,
                config_words(&built.slots)
            )
        };
        if !loss.is_finite()
            || outputs[1..1 + ng]
                .iter()
                .any(|g| g.data.iter().any(|v| !v.is_finite()))
        {
            return Err(RunError::new(format!(
                "{}: the loss or a gradient is NaN or infinite; the search stopped",
                where_()
            ))
            .hint("the newest checkpoint is from before this step; search again with a lower learning rate (--lr)"));
        }
        let pairs: Vec<(&str, &Tensor<f32>)> = tg
            .grads
            .iter()
            .map(String::as_str)
            .zip(&outputs[1..1 + ng])
            .collect();
        member.optim.step(&mut member.params, &pairs, lr);
        for (name, u) in tg.buffers.iter().zip(&outputs[1 + ng..1 + ng + nb]) {
            member.params.insert(name.clone(), u.clone());
        }
        let logits = &outputs[1 + ng + nb + nt];
        let (_, correct) = loss_and_correct(&logits.data, &b.labels.data, 0.0);
        Ok((loss, correct))
    }

    /// The validation batch step `step` scores on: the split in order, a batch at a
    /// time, cycling (the whole split when it is smaller than a batch).
    fn val_batch(&self, step: u64) -> Batch {
        let bsz = (self.settings.batch as usize).min(self.val.len());
        let count = self.val.len() / bsz;
        let k = (step % count as u64) as usize;
        let idx: Vec<usize> = (k * bsz..(k + 1) * bsz).collect();
        data::gather(&self.val, &idx, &[], 0, 0, 0)
    }

    /// Correct predictions and samples of model `m` on configuration `a` for batch `b`
    /// (the per-step validation).
    fn evaluate(&mut self, a: usize, m: usize, b: &Batch) -> Result<(u64, u64), RunError> {
        let member = &self.members[m];
        let logits = self.built[a].val_run(&*self.backend, &self.sample, &member.params, b)?;
        let (_, correct) = loss_and_correct(&logits.data, &b.labels.data, 0.0);
        Ok((correct, b.labels.data.len() as u64))
    }

    /// Validation accuracy of model `m` on configuration `a` over the whole validation
    /// split, in evaluation mode (running statistics where the model keeps them).
    pub(crate) fn evaluate_all(&mut self, a: usize, m: usize) -> Result<f64, RunError> {
        let batch = self.settings.batch as usize;
        let mut plans: std::collections::HashMap<usize, Box<dyn crate::backend::Prepared<f32>>> =
            std::collections::HashMap::new();
        let (mut correct, mut seen) = (0u64, 0u64);
        for b in data::in_order(&self.val, batch) {
            let n = b.labels.data.len();
            let plan = match plans.entry(n) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.built[a].eval_plan(
                    &*self.backend,
                    n,
                    &self.sample,
                    &self.members[m].params,
                )?),
            };
            let out = plan.forward(std::slice::from_ref(&b.x))?;
            let (_, c) = loss_and_correct(&out[0].data, &b.labels.data, 0.0);
            correct += c;
            seen += n as u64;
        }
        Ok(correct as f64 / seen.max(1) as f64)
    }
}
