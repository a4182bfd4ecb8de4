//! The training loop, over the [`Backend`] seam so that any backend that runs training
//! graphs trains (the reference interpreter and OpenCL).
//!
//! Each step writes the current parameters into the prepared training graph (inputs:
//! the batch and its labels; outputs: loss, `grad.*`, `update.*`, the loss's terms
//! with regularisers and, appended here, the logits for the training accuracy), runs
//! it in [`Mode::Train`], checks that the loss and every gradient are finite, steps
//! the optimiser on the host, and copies the updated BatchNorm running statistics
//! back into the buffers. Evaluation runs the
//! model's inference-compiled graph in [`Mode::Eval`] on the current weights.

use super::checkpoint::{self, Checkpoint, Progress};
use super::data::{self, in_order, DataSet, Prefetch};
use super::distributed::{self, Group, Solo, StepParts};
use super::graphs::{inference_graph, io_shape, training_graph, Compilation, GraphError};
use super::metrics::{loss_and_correct, Metrics};
use super::optimizer::Optim;
use super::overlap::Overlap;
use super::schedule::LrSchedule;
use super::settings::{resolve, Overrides, Settings};
use crate::autodiff::{Loss, TrainingGraph};
use crate::backend::{open, Backend, BackendKind, Prepared};
use crate::cli::compile::{compile, write_compiled, CompileArgs};
use crate::cli::CliError;
use crate::diag::{Report, Source};
use crate::driver::compile_file;
use crate::eval::Options;
use crate::ir::graph::Graph;
use crate::ir::types::DType;
use crate::opencl::DeviceSel;
use crate::passes::CompileMode;
use crate::recipe::glob;
use crate::runtime::sync_stats::StatsCollective;
use crate::runtime::{initialise, Mode, ParamStore, RunError};
use crate::tensor::Tensor;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The trained weights, the inference artifact and the resolved recipe in RUN_DIR.
pub const FINAL: &str = "final.safetensors";
pub const MODEL: &str = "model.fnc";
pub const RECIPE: &str = "recipe.json";

/// What `fnetc train` was asked to do.
#[derive(Clone, Debug)]
pub struct TrainArgs {
    pub model: PathBuf,
    pub options: Options,
    pub overrides: Overrides,
    pub backend: BackendKind,
    pub device: Option<DeviceSel>,
    /// The run directory.
    pub out: PathBuf,
    /// Continue the run in `out` from its newest checkpoint.
    pub resume: bool,
    /// Start afresh in an `out` that already holds a run.
    pub force: bool,
    /// Evaluate every N steps as well as at each epoch's end.
    pub eval_every: Option<u64>,
    /// Checkpoint every N steps as well as at each epoch's end.
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept.
    pub keep: usize,
    /// End the run after this many steps in all (with a checkpoint), as if stopped.
    pub stop_after: Option<u64>,
    /// Passes left out of the training and evaluation compilations (`--skip-pass`).
    pub skip_passes: Vec<String>,
    /// Patterns (`recipe::glob`) of the parameters whose gradient norms each step
    /// record carries (`--log-grad-norm`).
    pub log_grad_norms: Vec<String>,
}

/// What the loop reports as it goes, for a progress display.
#[derive(Clone, Debug)]
pub enum Event {
    /// Epoch `epoch` (0-based) of `epochs` starts at batch `from` of `steps`.
    EpochStart {
        epoch: u64,
        epochs: u64,
        from: u64,
        steps: u64,
    },
    Step {
        loss: f64,
        /// The loss's parts (`loss.ce`, `reg.<kind>`), empty without regularisers.
        terms: Vec<(String, f64)>,
        accuracy: f64,
        lr: f64,
        samples_per_s: f64,
    },
    /// A line to show: an epoch's summary or an evaluation.
    Line(String),
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub test_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    /// Mean training throughput of this process's steps.
    pub samples_per_s: f64,
    pub run_dir: PathBuf,
    /// Whether it stopped early (`stop_after`).
    pub stopped: bool,
}

/// Trains as `args` says, in this process alone.
pub fn train(args: &TrainArgs, observe: &mut dyn FnMut(Event)) -> Result<Summary, CliError> {
    train_in(args, &Solo, observe)
}

/// Trains as `args` says as one rank of `group` (data-parallel, docs/distributed.md):
/// every rank calls it with the same arguments; rank 0 alone writes the run directory.
pub fn train_in(
    args: &TrainArgs,
    group: &dyn Group,
    observe: &mut dyn FnMut(Event),
) -> Result<Summary, CliError> {
    let (source, module) = compile_file(&args.model, &args.options)?;
    crate::driver::eprint_warnings(&source, &module);
    // `search:` belongs to `fnetc search`; with `--config` the configuration is
    // chosen, and training it is what the search's result asks for (docs/search.md).
    let mut section = module.recipe.clone();
    if let (Some(r), Some(_)) = (section.as_mut(), &args.options.slot_config) {
        r.search = None;
    }
    let settings = resolve(section.as_ref(), &args.overrides)?;
    let graph = module.graph;
    let (sample_shape, classes) = io_shape(&graph)?;
    let model_dir = args.model.parent().unwrap_or(Path::new(".")).to_path_buf();
    let data = data::load_resized(
        &settings.data,
        settings.recipe.resize,
        &model_dir,
        &sample_shape,
        classes,
    )?;
    data::check_augment(&settings.augment, &sample_shape)?;
    // The section's loss: cross-entropy and its regularisers, each term also its own
    // output (`loss.ce`, `reg.<kind>`), logged per step.
    let report = |e: crate::autodiff::AutodiffError| Report {
        source: source.clone(),
        diagnostics: vec![e.to_diagnostic()],
    };
    let loss = Loss::from_recipe(&settings.recipe, 0).map_err(report)?;
    let backend = open(args.backend, args.device, &args.model)?;
    if !backend.capabilities().training {
        return Err(RunError::new(format!(
            "the {} backend cannot run training graphs yet",
            backend.kind().name()
        ))
        .hint("train with --backend reference")
        .into());
    }
    let initial = initialise::<f32>(&graph, graph.seed)?;
    let how = Compilation {
        batch: settings.batch,
        cost: backend.cost_table(),
        skip: &args.skip_passes,
        params: Some(&initial),
    };
    let graph_error = |e: GraphError| -> CliError {
        match e {
            GraphError::Model(d) => Report {
                source: source.clone(),
                diagnostics: vec![d],
            }
            .into(),
            GraphError::Internal(e) => e.into(),
        }
    };
    let tg = training_graph(&graph, &loss, &how).map_err(graph_error)?;
    for p in &args.log_grad_norms {
        if !tg.grads.iter().any(|g| glob(p, g)) {
            let some: Vec<&str> = tg.grads.iter().take(6).map(String::as_str).collect();
            return Err(RunError::new(format!(
                "--log-grad-norm `{p}` matches no trainable parameter of {}",
                args.model.display()
            ))
            .hint(format!(
                "`*` matches any run of characters; the trainable parameters include {}",
                some.join(", ")
            ))
            .into());
        }
    }
    let inference = inference_graph(&graph, &how).map_err(graph_error)?;
    let shapes: BTreeMap<String, Vec<usize>> = initial
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone()))
        .collect();
    let mut run = Run {
        args,
        group,
        settings,
        source,
        graph,
        tg,
        inference,
        backend,
        data,
        params: initial,
        shapes,
        optim: None,
        schedule: None,
        metrics: Metrics::default(),
        train_cache: HashMap::new(),
        epoch: 0,
        batch_in_epoch: 0,
        step: 0,
        sums: (0.0, 0, 0),
        term_sums: Vec::new(),
        comm_s: 0.0,
        overlap: None,
        allreduce_s: None,
        grad_norms: Vec::new(),
    };
    run.start()?;
    run.train(observe)
}

/// A step's loss, correct predictions and loss terms (name, value).
type StepOut = (f64, u64, Vec<(String, f64)>);

/// ` (ce 0.4100, orthogonality 0.0200)`: the loss's parts for a progress line;
/// nothing without regularisers.
pub fn terms_words(terms: &[(String, f64)]) -> String {
    if terms.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = terms
        .iter()
        .map(|(name, v)| {
            let short = name.strip_prefix("reg.").unwrap_or(name);
            let short = short.strip_prefix("loss.").unwrap_or(short);
            format!("{short} {v:.4}")
        })
        .collect();
    format!(" ({})", parts.join(", "))
}

/// A prepared training graph and the step whose parameters it holds.
type Synced = (Box<dyn Prepared<f32>>, Option<u64>);

struct Run<'a> {
    args: &'a TrainArgs,
    /// The data-parallel ranks; [`Solo`] trains alone.
    group: &'a dyn Group,
    settings: Settings,
    source: Source,
    graph: Graph,
    tg: TrainingGraph,
    inference: Graph,
    backend: Box<dyn Backend>,
    data: DataSet,
    /// The master copy of every parameter and buffer.
    params: ParamStore<f32>,
    shapes: BTreeMap<String, Vec<usize>>,
    optim: Option<Optim>,
    schedule: Option<LrSchedule>,
    metrics: Metrics,
    /// Prepared training graphs by batch size, with the step their parameters are from.
    train_cache: HashMap<usize, Synced>,
    epoch: u64,
    batch_in_epoch: u64,
    /// Global steps taken.
    step: u64,
    /// The epoch's running loss sum (per sample), correct predictions and samples.
    sums: (f64, u64, u64),
    /// The epoch's running sums of the loss's terms, weighted by samples as the loss
    /// is, so that their means sum to the epoch's training loss.
    term_sums: Vec<(String, f64)>,
    /// Seconds the last data-parallel step spent in its collectives (with overlap:
    /// those it waited for after the run).
    comm_s: f64,
    /// The overlapped gradient all-reduce (`bucket_kb` > 0 under data parallelism),
    /// started at the first data-parallel step.
    overlap: Option<Overlap>,
    /// Seconds the last step's overlapped all-reduces took on their thread.
    allreduce_s: Option<f64>,
    /// The last step's gradient norms of the `--log-grad-norm` parameters.
    grad_norms: Vec<(String, f64)>,
}

impl Run<'_> {
    fn steps_per_epoch(&self) -> u64 {
        (self.data.train.len() as u64).div_ceil(self.settings.batch)
    }

    /// Prepares the run directory: a fresh one, or the state of its newest checkpoint.
    fn start(&mut self) -> Result<(), CliError> {
        let out = &self.args.out;
        let s = &self.settings;
        let mut optim = Optim::new(s.optimizer.clone());
        let mut schedule = LrSchedule::new(
            s.schedule.clone(),
            s.optimizer.lr(),
            s.epochs,
            self.steps_per_epoch(),
        );
        let root = self.group.rank() == 0;
        if self.args.resume {
            if root {
                checkpoint::remove_temporaries(out);
            }
            let Some((_, path)) = checkpoint::list(out).pop() else {
                return Err(RunError::new(format!(
                    "--resume {}: no checkpoint in `{}`",
                    out.display(),
                    checkpoint::dir(out).display()
                ))
                .hint("a run writes one at each epoch's end (and every --checkpoint-every steps); start a new run with --out")
                .into());
            };
            let c = checkpoint::load(&path)?;
            let mismatch = |what: String| {
                RunError::new(format!(
                    "cannot resume from `{}`: it belongs to another {what}",
                    path.display()
                ))
            };
            if let Some(m) = checkpoint::first_param_mismatch(&c.progress.params, &self.shapes) {
                return Err(mismatch(format!("model: {m}"))
                    .hint(
                        "resume with the model file (and --set/--config) the run was started with",
                    )
                    .into());
            }
            if let Some(m) = checkpoint::first_recipe_mismatch(&c.progress.recipe, &s.recipe) {
                return Err(mismatch(format!("recipe: {m}"))
                    .hint("resume with the train section and flags the run was started with")
                    .into());
            }
            let p = &c.progress;
            self.params = c.params.clone();
            optim.state = c.optimizer.clone();
            optim.steps = p.step;
            schedule.plateau.scale = f64::from_bits(p.plateau_scale_bits);
            schedule.plateau.best = p.plateau_best_bits.map(f64::from_bits);
            schedule.plateau.bad_epochs = p.plateau_bad_epochs;
            self.step = p.step;
            self.epoch = p.epoch;
            self.batch_in_epoch = p.batch_in_epoch;
            self.sums = (
                f64::from_bits(p.epoch_loss_bits),
                p.epoch_correct,
                p.epoch_seen,
            );
            self.term_sums = (p.epoch_term_bits.iter())
                .map(|(k, bits)| (k.clone(), f64::from_bits(*bits)))
                .collect();
            self.metrics = Metrics::resume(out, p.metrics_lines as usize);
        } else if root {
            // Rank 0 alone prepares (and checks) the directory of a fresh run.
            let taken = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
            if taken && !self.args.force {
                return Err(RunError::new(format!(
                    "the run directory `{}` already exists and is not empty",
                    out.display()
                ))
                .hint("continue it with --resume, choose another --out, or pass --force to start over in it")
                .into());
            }
            std::fs::create_dir_all(out).map_err(|e| crate::io::IoError::os(out, &e, "create"))?;
            if taken {
                // --force: start over, removing only what a run writes, and never the
                // model itself if it is kept there under one of those names.
                let names = [
                    super::metrics::FILE,
                    FINAL,
                    MODEL,
                    RECIPE,
                    super::source::FILE,
                ];
                let checkpoints = checkpoint::dir(out);
                crate::io::clear_outputs(out, &names, &[&checkpoints], &[&self.args.model])?;
            }
            // Fail now, not after an epoch, when the directory cannot be written.
            self.metrics.write(out)?;
        }
        // The model as trained, for `fnetc plot` (a run resumed from before this file
        // existed gets it now: the resume checked that the model matches).
        if root && (!self.args.resume || !super::source::path(out).is_file()) {
            super::source::ModelSource::new(
                &self.args.model,
                &self.source.text,
                &self.args.options,
            )
            .write(out)?;
        }
        self.optim = Some(optim);
        self.schedule = Some(schedule);
        Ok(())
    }

    fn train(&mut self, observe: &mut dyn FnMut(Event)) -> Result<Summary, CliError> {
        let s = self.settings.clone();
        let train = Arc::new(self.data.train.clone());
        let steps = self.steps_per_epoch();
        let (mut samples, started) = (0u64, Instant::now());
        let mut last_test = None;
        // The newest step's loss terms, for the epoch line.
        let mut last_terms: Vec<(String, f64)> = Vec::new();
        while self.epoch < s.epochs {
            let epoch_start = Instant::now();
            observe(Event::EpochStart {
                epoch: self.epoch,
                epochs: s.epochs,
                from: self.batch_in_epoch,
                steps,
            });
            let batches = Prefetch::start(
                train.clone(),
                s.batch as usize,
                self.batch_in_epoch as usize,
                s.augment.clone(),
                s.seed,
                self.epoch,
            );
            for (_, b) in batches {
                let t = Instant::now();
                let lr = self
                    .schedule
                    .as_ref()
                    .expect("started")
                    .lr(self.step, self.epoch);
                let (loss, correct, terms) = self.step(&b, lr)?;
                let n = b.labels.data.len() as u64;
                self.sums.0 += loss * n as f64;
                self.sums.1 += correct;
                self.sums.2 += n;
                self.add_terms(&terms, n);
                self.step += 1;
                self.batch_in_epoch += 1;
                samples += n;
                let sps = n as f64 / t.elapsed().as_secs_f64().max(1e-9);
                let mut record = json!({"kind": "step", "step": self.step, "epoch": self.epoch,
                    "loss": loss, "accuracy": correct as f64 / n as f64, "lr": lr, "samples_per_s": sps});
                if !terms.is_empty() {
                    let t: serde_json::Map<String, serde_json::Value> =
                        terms.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    record["terms"] = serde_json::Value::Object(t);
                }
                if self.group.size() > 1 {
                    record["ranks"] = json!(self.group.size());
                    record["comm_s"] = json!(self.comm_s);
                    if let Some(a) = self.allreduce_s {
                        record["allreduce_s"] = json!(a);
                    }
                }
                if !self.grad_norms.is_empty() {
                    let norms: serde_json::Map<String, serde_json::Value> = self
                        .grad_norms
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    record["grad_norms"] = serde_json::Value::Object(norms);
                }
                self.metrics.push(record);
                last_terms.clone_from(&terms);
                observe(Event::Step {
                    loss,
                    terms,
                    accuracy: correct as f64 / n as f64,
                    lr,
                    samples_per_s: sps,
                });
                if let Some(every) = self.args.eval_every.filter(|&e| e > 0) {
                    if self.step.is_multiple_of(every) && self.batch_in_epoch < steps {
                        if let Some((l, a)) = self.evaluate()? {
                            self.metrics.push(json!({"kind": "eval", "step": self.step, "test_loss": l, "test_accuracy": a}));
                            observe(Event::Line(format!(
                                "step {}: test loss {l:.4}, accuracy {:.2}%",
                                self.step,
                                100.0 * a
                            )));
                        }
                    }
                }
                let stop = self.args.stop_after.is_some_and(|m| self.step >= m);
                let every = self.args.checkpoint_every.filter(|&e| e > 0);
                if stop
                    || every
                        .is_some_and(|e| self.step.is_multiple_of(e) && self.batch_in_epoch < steps)
                {
                    self.save()?;
                }
                if stop {
                    return Ok(self.summary(samples, started, last_test, true));
                }
            }
            let (train_loss, train_acc) = (
                self.sums.0 / self.sums.2.max(1) as f64,
                self.sums.1 as f64 / self.sums.2.max(1) as f64,
            );
            let test = self.evaluate()?;
            last_test = test;
            let plateau_loss = test.map_or(train_loss, |(l, _)| l);
            self.schedule
                .as_mut()
                .expect("started")
                .end_epoch(plateau_loss);
            let wall = epoch_start.elapsed().as_secs_f64();
            let mut record = json!({"kind": "epoch", "epoch": self.epoch, "step": self.step,
                "train_loss": train_loss, "train_accuracy": train_acc,
                "test_loss": test.map(|t| t.0), "test_accuracy": test.map(|t| t.1), "wall_s": wall});
            // Each FlexConv's kernel size as the mask now crops it (the next step's);
            // no field without FlexConvs (`fnetc plot` then draws no sizes).
            let sizes = super::flex_sizes::kernel_sizes(&self.graph, &self.params)?;
            if !sizes.is_empty() {
                record["kernel_sizes"] = json!(sizes);
            }
            // With regularisers, each term's mean over the epoch's samples, as
            // `train_loss` is (they sum to it).
            if !self.term_sums.is_empty() {
                let seen = self.sums.2.max(1) as f64;
                let means: serde_json::Map<String, serde_json::Value> = (self.term_sums.iter())
                    .map(|(k, v)| (k.clone(), json!(v / seen)))
                    .collect();
                record["terms"] = serde_json::Value::Object(means);
            }
            self.metrics.push(record);
            let test_words = test.map_or(String::from("no test split"), |(l, a)| {
                format!("test loss {l:.4} accuracy {:.2}%", 100.0 * a)
            });
            observe(Event::Line(format!(
                "epoch {}/{}: train loss {train_loss:.4}{} accuracy {:.2}%, {test_words} ({wall:.1} s)",
                self.epoch + 1,
                s.epochs,
                terms_words(&last_terms),
                100.0 * train_acc
            )));
            self.epoch += 1;
            self.batch_in_epoch = 0;
            self.sums = (0.0, 0, 0);
            self.term_sums.clear();
            self.save()?;
        }
        self.finish()?;
        Ok(self.summary(samples, started, last_test, false))
    }

    fn summary(
        &self,
        samples: u64,
        started: Instant,
        test: Option<(f64, f64)>,
        stopped: bool,
    ) -> Summary {
        Summary {
            steps: self.step,
            test_accuracy: test.map(|t| t.1),
            test_loss: test.map(|t| t.0),
            samples_per_s: samples as f64 / started.elapsed().as_secs_f64().max(1e-9),
            run_dir: self.args.out.clone(),
            stopped,
        }
    }

    /// One optimiser step on batch `b`: its loss, correct predictions and the loss's
    /// terms.
    fn step(&mut self, b: &data::Batch, lr: f64) -> Result<StepOut, CliError> {
        if self.group.size() > 1 {
            return self.step_shard(b, lr);
        }
        let n = b.labels.data.len();
        let outputs = {
            let prepared = self.prepared_for_training(n)?;
            prepared.write_inputs(&[b.x.clone(), b.labels.clone()])?;
            prepared.run()?;
            prepared.read_outputs()?
        };
        let logits = self.check_outputs(&outputs)?;
        let (_, correct) = loss_and_correct(&logits.data, &b.labels.data, 0.0);
        let (loss, terms) = self.apply(&outputs, lr)?;
        Ok((loss, correct, terms))
    }

    /// One data-parallel step: this rank's shard of the global batch `b`, its outputs
    /// reduced over the ranks (`distributed::reduce_step`; the gradients bucket by
    /// bucket during the run with `bucket_kb` > 0, `super::overlap`), then the same
    /// update as on every rank.
    fn step_shard(&mut self, b: &data::Batch, lr: f64) -> Result<StepOut, CliError> {
        let global = b.labels.data.len();
        let range = distributed::shard(global, self.group.rank(), self.group.size());
        let n = range.len();
        let (ng, nb, nt) = (
            self.tg.grads.len(),
            self.tg.buffers.len(),
            self.tg.terms.len(),
        );
        if self.settings.bucket_kb > 0 && self.overlap.is_none() {
            let sizes: Vec<usize> = self
                .tg
                .grads
                .iter()
                .map(|g| self.params[g].numel())
                .collect();
            let bytes = (self.settings.bucket_kb * 1024) as usize;
            self.overlap = Some(Overlap::start(self.group, &sizes, bytes)?);
        }
        // Taken out for the step, so the run can fill its buckets while borrowing the
        // prepared graph; put back only after a whole step (see `Overlap`'s drop).
        let mut overlap = self.overlap.take();
        if let Some(ov) = &mut overlap {
            ov.begin(n as f32 / global as f32);
        }
        let group = self.group;
        let sync = self.settings.sync_bn;
        let stats = distributed::RankStats::new(group, n > 0);
        let (mut outputs, correct) = if n > 0 {
            let local = distributed::slice_batch(b, range);
            let outputs = {
                let prepared = self.prepared_for_training(n)?;
                prepared.write_inputs(&[local.x, local.labels.clone()])?;
                match &mut overlap {
                    None => {
                        if sync {
                            prepared.run_synced(&stats)?;
                        } else {
                            prepared.run()?;
                        }
                        prepared.read_outputs()?
                    }
                    Some(ov) => {
                        let mut got: Vec<Option<Tensor<f32>>> = Vec::new();
                        let mut failed = None;
                        let collective = sync.then_some(&stats as &dyn StatsCollective);
                        prepared.run_streaming(collective, &mut |i, t| {
                            if (1..=ng).contains(&i) && failed.is_none() {
                                failed = ov.add(i - 1, &t.data).err();
                            }
                            if got.len() <= i {
                                got.resize(i + 1, None);
                            }
                            got[i] = Some(t);
                        })?;
                        if let Some(e) = failed {
                            return Err(e.into());
                        }
                        got.into_iter()
                            .enumerate()
                            .map(|(i, t)| {
                                t.ok_or_else(|| {
                                    RunError::new(format!(
                                        "internal error: the run never handed out output {i}"
                                    ))
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?
                    }
                }
            };
            let logits = self.check_outputs(&outputs)?;
            let (_, correct) = loss_and_correct(&logits.data, &local.labels.data, 0.0);
            (outputs, correct)
        } else {
            // A last batch smaller than the rank count leaves this rank no sample: it
            // contributes zeros (weight 0) to the reduction. With sync_bn the other
            // ranks' plans wait in the statistics' collectives, so this rank runs the
            // batch's first sample as a stand-in that adds nothing to them.
            if sync {
                let stand_in = distributed::slice_batch(b, 0..1);
                let prepared = self.prepared_for_training(1)?;
                prepared.write_inputs(&[stand_in.x, stand_in.labels])?;
                prepared.run_synced(&stats)?;
            }
            let outputs = self.empty_outputs();
            if let Some(ov) = &mut overlap {
                for (g, t) in outputs[1..1 + ng].iter().enumerate() {
                    ov.add(g, &t.data)?;
                }
            }
            (outputs, 0)
        };
        let spent = match &mut overlap {
            Some(ov) => Some(ov.finish(&mut outputs[1..1 + ng])?),
            None => None,
        };
        self.overlap = overlap;
        let r = distributed::reduce_step(
            self.group,
            StepParts {
                grads_reduced: spent.is_some(),
                outputs: &mut outputs,
                ng,
                nb,
                nt,
                n,
                global,
                correct,
            },
        );
        self.comm_s = r.comm_s + stats.seconds.get() + spent.map_or(0.0, |s| s.wait_s);
        self.allreduce_s = spent.map(|s| s.allreduce_s);
        outputs[0].data[0] = r.loss as f32;
        for (t, v) in outputs[1 + ng + nb..1 + ng + nb + nt]
            .iter_mut()
            .zip(&r.terms)
        {
            t.data[0] = *v as f32;
        }
        let (_, terms) = self.apply(&outputs, lr)?;
        let terms = terms
            .into_iter()
            .zip(&r.terms)
            .map(|((k, _), v)| (k, *v))
            .collect();
        Ok((r.loss, r.correct, terms))
    }

    /// Outputs of no samples: zero loss, gradients and terms, the buffers as they are.
    fn empty_outputs(&self) -> Vec<Tensor<f32>> {
        let zeros = |shape: &[usize]| Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        };
        let mut out = vec![zeros(&[1])];
        out.extend(self.tg.grads.iter().map(|g| zeros(&self.params[g].shape)));
        out.extend(self.tg.buffers.iter().map(|b| self.params[b].clone()));
        out.extend(self.tg.terms.iter().map(|_| zeros(&[1])));
        out
    }

    /// Checks the output count of a training-graph run; its logits.
    fn check_outputs<'o>(&self, outputs: &'o [Tensor<f32>]) -> Result<&'o Tensor<f32>, CliError> {
        let (ng, nb, nt) = (
            self.tg.grads.len(),
            self.tg.buffers.len(),
            self.tg.terms.len(),
        );
        if outputs.len() != 2 + ng + nb + nt {
            return Err(RunError::new(format!(
                "internal error: the training graph gave {} outputs, expected {}",
                outputs.len(),
                2 + ng + nb + nt
            ))
            .into());
        }
        Ok(&outputs[1 + ng + nb + nt])
    }

    /// Checks the loss and gradients of `outputs` (those of the whole global batch)
    /// for NaN and infinity, steps the optimiser and takes the updated buffers: the
    /// loss and its terms.
    fn apply(
        &mut self,
        outputs: &[Tensor<f32>],
        lr: f64,
    ) -> Result<(f64, Vec<(String, f64)>), CliError> {
        let (ng, nb, nt) = (
            self.tg.grads.len(),
            self.tg.buffers.len(),
            self.tg.terms.len(),
        );
        let loss = f64::from(outputs[0].data[0]);
        if !loss.is_finite() {
            return Err(self.non_finite("the loss", None).into());
        }
        let grads = &outputs[1..1 + ng];
        for (name, g) in self.tg.grads.iter().zip(grads) {
            if g.data.iter().any(|v| !v.is_finite()) {
                return Err(self
                    .non_finite(&format!("the gradient of `{name}`"), Some(name))
                    .into());
            }
        }
        let logged = |name: &str| (self.args.log_grad_norms.iter()).any(|p| glob(p, name));
        self.grad_norms = (self.tg.grads.iter().zip(grads))
            .filter(|(name, _)| logged(name))
            .map(|(name, g)| {
                let sq: f64 = g.data.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                (name.clone(), sq.sqrt())
            })
            .collect();
        let pairs: Vec<(&str, &Tensor<f32>)> = self
            .tg
            .grads
            .iter()
            .map(String::as_str)
            .zip(grads)
            .collect();
        self.optim
            .as_mut()
            .expect("started")
            .step(&mut self.params, &pairs, lr);
        for (name, u) in self.tg.buffers.iter().zip(&outputs[1 + ng..1 + ng + nb]) {
            self.params.insert(name.clone(), u.clone());
        }
        let terms = self
            .tg
            .terms
            .iter()
            .zip(&outputs[1 + ng + nb..1 + ng + nb + nt])
            .map(|(name, t)| (name.clone(), f64::from(t.data[0])))
            .collect();
        Ok((loss, terms))
    }

    /// The error for a NaN or infinity at this step, naming the parameter's layer and
    /// its source line; the last checkpoint stays the newest.
    fn non_finite(&self, what: &str, param: Option<&str>) -> RunError {
        let place = param
            .and_then(|p| self.graph.params().find(|(_, n, _)| n.name == p))
            .map(|(_, n, _)| {
                let (line, col) = self.source.line_col(n.span.start);
                format!(" (declared at {}:{line}:{col})", self.source.name)
            })
            .unwrap_or_default();
        RunError::new(format!(
            "step {} (epoch {}, batch {}): {what} is NaN or infinite{place}; training stopped",
            self.step + 1,
            self.epoch + 1,
            self.batch_in_epoch + 1
        ))
        .hint("the newest checkpoint in the run directory is from before this step; start a new run with a lower learning rate (--lr)")
    }

    /// The training graph prepared for batches of `n`, holding the current parameters.
    fn prepared_for_training(&mut self, n: usize) -> Result<&mut Box<dyn Prepared<f32>>, RunError> {
        if !self.train_cache.contains_key(&n) {
            let mut shape = vec![n];
            shape.extend(&self.data.train.images.shape[1..]);
            let mut p = self.backend.prepare(
                self.tg.graph.clone(),
                self.params.clone(),
                &[shape, vec![n]],
            )?;
            p.set_mode(Mode::Train)?;
            if self.settings.sync_bn && self.group.size() > 1 {
                // SyncBatchNorm: the plan combines its batch statistics over the
                // ranks (docs/distributed.md); one process keeps the plain plan.
                p.set_sync_stats(true)?;
            }
            self.train_cache.insert(n, (p, Some(self.step)));
        }
        let (p, synced) = self.train_cache.get_mut(&n).expect("inserted");
        if *synced != Some(self.step) {
            for name in self.tg.grads.iter().chain(&self.tg.buffers) {
                p.write_param(name, &self.params[name])?;
            }
            *synced = Some(self.step);
        }
        Ok(p)
    }

    /// Test loss and accuracy with the current weights, in evaluation mode; `None`
    /// without a test split.
    fn evaluate(&mut self) -> Result<Option<(f64, f64)>, RunError> {
        let Some(test) = &self.data.test else {
            return Ok(None);
        };
        let names: Vec<String> = self
            .inference
            .params()
            .map(|(_, n, _)| n.name.clone())
            .collect();
        let store: ParamStore<f32> = names
            .iter()
            .filter_map(|n| self.params.get(n).map(|t| (n.clone(), t.clone())))
            .collect();
        let mut prepared: HashMap<usize, Box<dyn Prepared<f32>>> = HashMap::new();
        let (mut loss, mut correct) = (0.0, 0u64);
        let (rank, size) = (self.group.rank(), self.group.size());
        // Data-parallel ranks score every size-th batch each, then sum.
        let batches = in_order(test, self.settings.batch as usize)
            .enumerate()
            .filter(|(k, _)| k % size == rank)
            .map(|(_, b)| b);
        for b in batches {
            let n = b.labels.data.len();
            let p = match prepared.entry(n) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let mut p = self.backend.prepare(
                        self.inference.clone(),
                        store.clone(),
                        std::slice::from_ref(&b.x.shape),
                    )?;
                    p.set_mode(Mode::Eval)?;
                    e.insert(p)
                }
            };
            let out = p.forward(&[b.x])?;
            let (l, c) =
                loss_and_correct(&out[0].data, &b.labels.data, self.settings.label_smoothing);
            loss += l * n as f64;
            correct += c;
        }
        if size > 1 {
            let mut sums = [loss, correct as f64];
            self.group.sum_f64(&mut sums);
            (loss, correct) = (sums[0], sums[1] as u64);
        }
        let n = test.len() as f64;
        Ok(Some((loss / n, correct as f64 / n)))
    }

    /// Adds a step's loss terms, over `n` samples, to the epoch's sums.
    fn add_terms(&mut self, terms: &[(String, f64)], n: u64) {
        for (name, v) in terms {
            match self.term_sums.iter_mut().find(|(k, _)| k == name) {
                Some((_, sum)) => *sum += v * n as f64,
                None => self.term_sums.push((name.clone(), v * n as f64)),
            }
        }
    }

    /// Writes the metrics, then a checkpoint of the state after the last step.
    fn save(&mut self) -> Result<(), RunError> {
        if self.group.size() > 1 {
            // The ranks apply the same updates to the same weights; a checkpoint is
            // where that is verified (cheaply: one hash per rank).
            let sums = self.group.gather_u64(distributed::checksum(&self.params));
            if let Some(r) = sums.iter().position(|&h| h != sums[0]) {
                return Err(RunError::new(format!(
                    "data-parallel ranks diverged: after step {} rank {r}'s weights differ from rank 0's",
                    self.step
                ))
                .hint("the MPI library's all-reduce gave the ranks different sums; please report it with the mpirun command"));
            }
            if self.group.rank() != 0 {
                return Ok(());
            }
        }
        let out = &self.args.out;
        self.metrics.write(out)?;
        let optim = self.optim.as_ref().expect("started");
        let plateau = &self.schedule.as_ref().expect("started").plateau;
        let c = Checkpoint {
            progress: Progress {
                format: checkpoint::format_tag(),
                step: self.step,
                epoch: self.epoch,
                batch_in_epoch: self.batch_in_epoch,
                rng_seed: self.settings.seed,
                plateau_scale_bits: plateau.scale.to_bits(),
                plateau_best_bits: plateau.best.map(f64::to_bits),
                plateau_bad_epochs: plateau.bad_epochs,
                epoch_loss_bits: self.sums.0.to_bits(),
                epoch_correct: self.sums.1,
                epoch_seen: self.sums.2,
                epoch_term_bits: (self.term_sums.iter())
                    .map(|(k, v)| (k.clone(), v.to_bits()))
                    .collect(),
                metrics_lines: self.metrics.lines.len() as u64,
                recipe: checkpoint::recipe_text(&self.settings.recipe),
                params: self.shapes.clone(),
            },
            params: self.params.clone(),
            optimizer: optim.state.clone(),
        };
        checkpoint::save(out, &c, self.args.keep)?;
        Ok(())
    }

    /// `final.safetensors`, `recipe.json`, and `model.fnc`: the inference artifact
    /// with the trained weights bound, compiled as `fnetc compile -w` compiles it (for
    /// the training backend's cost table).
    fn finish(&self) -> Result<(), CliError> {
        if self.group.rank() != 0 {
            return Ok(());
        }
        let out = &self.args.out;
        let weights = out.join(FINAL);
        crate::io::weights::write_weights(&weights, &self.params)?;
        let text = serde_json::to_string_pretty(&self.settings.recipe).expect("plain data") + "\n";
        crate::io::write_output(&out.join(RECIPE), &[], |w| w.write_all(text.as_bytes()))?;
        let args = CompileArgs {
            model: self.args.model.clone(),
            options: self.args.options.clone(),
            mode: CompileMode::Inference,
            passes: None,
            print_after: Vec::new(),
            verbose: false,
            weights: Some(weights),
            batch: 1,
            cost_backend: self.backend.cost_table(),
            precision: DType::F32,
        };
        let compiled = compile(&args)?;
        write_compiled(&compiled, &args, &out.join(MODEL))?;
        Ok(())
    }
}
