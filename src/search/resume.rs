//! Where a search's state goes between processes: a fresh run directory or the newest
//! checkpoint's state ([`super::state`] holds the file format), and the checkpoint of
//! the state after the last step.

use super::run::Search;
use super::state::{self, bits, from_bits, SearchCheckpoint, SearchProgress};
use crate::cli::CliError;
use crate::runtime::RunError;
use crate::train::metrics::Metrics;

impl Search<'_> {
    /// A fresh run directory, or the state of its newest checkpoint.
    pub(crate) fn start(&mut self) -> Result<(), CliError> {
        let out = self.args.out.clone();
        if self.args.resume {
            crate::train::checkpoint::remove_temporaries(&out);
            let Some((_, path)) = crate::train::checkpoint::list(&out).pop() else {
                return Err(RunError::new(format!(
                    "--resume {}: no checkpoint in `{}`",
                    out.display(),
                    crate::train::checkpoint::dir(&out).display()
                ))
                .hint("a search writes one at each epoch's end (and every --checkpoint-every steps); start a new one with --out")
                .into());
            };
            let c = state::load(&path)?;
            self.restore(c, &path)?;
        } else {
            let taken = std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some());
            if taken && !self.args.force {
                return Err(RunError::new(format!(
                    "the run directory `{}` already exists and is not empty",
                    out.display()
                ))
                .hint("continue it with --resume, choose another --out, or pass --force to start over in it")
                .into());
            }
            std::fs::create_dir_all(&out)
                .map_err(|e| crate::io::IoError::os(&out, &e, "create"))?;
            // Refused before anything is removed or searched: `--force` clears these
            // names, and the search writes them at its end.
            let mut names = super::outputs::FILES.to_vec();
            names.push(crate::train::metrics::FILE);
            let model = [self.args.model.as_path()];
            if taken {
                let checkpoints = crate::train::checkpoint::dir(&out);
                crate::io::clear_outputs(&out, &names, &[&checkpoints], &model)?;
            } else {
                for f in names {
                    crate::io::check_output(&out.join(f), &model)?;
                }
            }
            self.metrics.write(&out)?;
        }
        Ok(())
    }

    pub(crate) fn configs(&self) -> Vec<Vec<u64>> {
        self.built.iter().map(|b| b.slots.clone()).collect()
    }

    fn recipe_text(&self) -> (String, String) {
        (
            crate::train::checkpoint::recipe_text(&self.settings.recipe),
            serde_json::to_string(&self.mix_settings).expect("plain data"),
        )
    }

    fn restore(&mut self, c: SearchCheckpoint, path: &std::path::Path) -> Result<(), RunError> {
        let p = &c.progress;
        let mismatch = |what: String| {
            RunError::new(format!(
                "cannot resume from `{}`: it belongs to another {what}",
                path.display()
            ))
            .hint(
                "resume with the model file, --set, --models and flags the search was started with",
            )
        };
        if p.configs != self.configs() {
            return Err(mismatch("set of configurations".into()));
        }
        if p.models != self.mix_settings.models {
            return Err(mismatch(format!(
                "mixture: {} models, not {}",
                p.models, self.mix_settings.models
            )));
        }
        if let Some(m) = crate::train::checkpoint::first_param_mismatch(&p.params, &self.shapes) {
            return Err(mismatch(format!("model: {m}")));
        }
        let (recipe, search) = self.recipe_text();
        if p.recipe != recipe || p.search != search {
            return Err(mismatch(
                "recipe (the train section or its flags differ)".into(),
            ));
        }
        let (a, m) = (self.mixture.configs, self.mixture.models);
        if p.w_bits.len() != a * m
            || p.optim_steps.len() != m
            || p.divisions_bits.iter().any(|d| d.len() != m)
            || c.params.len() != m
        {
            return Err(RunError::new(format!(
                "`{}` is not a usable search checkpoint: its W, divisions or models do not match {a} configurations × {m} models",
                path.display()
            ))
            .hint("delete it to resume from the previous checkpoint, or start a new search"));
        }
        self.mixture.w = from_bits(&p.w_bits);
        self.mixture.t = f64::from_bits(p.t_bits);
        self.mixture.divisions = p.divisions_bits.iter().map(|d| from_bits(d)).collect();
        for (m, member) in self.members.iter_mut().enumerate() {
            member.params = c.params[m].clone();
            member.optim.state = c.optimizer[m].clone();
            member.optim.steps = p.optim_steps[m];
        }
        self.schedule.plateau.scale = f64::from_bits(p.plateau_scale_bits);
        self.schedule.plateau.best = p.plateau_best_bits.map(f64::from_bits);
        self.schedule.plateau.bad_epochs = p.plateau_bad_epochs;
        self.step = p.step;
        self.epoch = p.epoch;
        self.batch_in_epoch = p.batch_in_epoch;
        self.sums = (
            f64::from_bits(p.epoch_loss_bits),
            p.epoch_correct,
            p.epoch_seen,
        );
        self.metrics = Metrics::resume(&self.args.out, p.metrics_lines as usize);
        Ok(())
    }

    pub(crate) fn save(&mut self) -> Result<(), RunError> {
        let out = self.args.out.clone();
        self.metrics.write(&out)?;
        let (recipe, search) = self.recipe_text();
        let plateau = &self.schedule.plateau;
        let c = SearchCheckpoint {
            progress: SearchProgress {
                format: state::format_tag(),
                step: self.step,
                epoch: self.epoch,
                batch_in_epoch: self.batch_in_epoch,
                models: self.mix_settings.models,
                configs: self.configs(),
                w_bits: bits(&self.mixture.w),
                t_bits: self.mixture.t.to_bits(),
                divisions_bits: self.mixture.divisions.iter().map(|d| bits(d)).collect(),
                optim_steps: self.members.iter().map(|m| m.optim.steps).collect(),
                plateau_scale_bits: plateau.scale.to_bits(),
                plateau_best_bits: plateau.best.map(f64::to_bits),
                plateau_bad_epochs: plateau.bad_epochs,
                epoch_loss_bits: self.sums.0.to_bits(),
                epoch_correct: self.sums.1,
                epoch_seen: self.sums.2,
                metrics_lines: self.metrics.lines.len() as u64,
                recipe,
                search,
                params: self.shapes.clone(),
            },
            params: self.members.iter().map(|m| m.params.clone()).collect(),
            optimizer: self.members.iter().map(|m| m.optim.state.clone()).collect(),
        };
        state::save(&out, &c, self.args.keep)?;
        Ok(())
    }
}
