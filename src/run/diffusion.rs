//! Diffusion in the run loop: one step's loss is noisy (its timesteps are random), so each evaluation
//! reports the mean of the losses read since the previous one; nothing is sampled during training.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{At, Clock, Evaluation, Finished, Guarded, Regime};
use crate::device::{Device, Download};
use crate::error::Result;
use crate::models::ddpm::{schedule_name, DiffusionTrainer};

/// A diffusion training run.
pub struct DiffusionRun {
    trainer: DiffusionTrainer,
    data: String,
    params: usize,
    out: PathBuf,
    loss: f64,
    /// Sum and count of the losses read since the last evaluation.
    acc: f64,
    cnt: usize,
    first_window: f64,
}

impl DiffusionRun {
    /// A run of `trainer` on the data named `data` (in config.json and the checkpoint), writing into `out`.
    pub fn new(trainer: DiffusionTrainer, data: &str, out: &Path) -> DiffusionRun {
        DiffusionRun {
            params: trainer.model.param_count(),
            trainer,
            data: data.to_string(),
            out: out.to_path_buf(),
            loss: f64::NAN,
            acc: 0.0,
            cnt: 0,
            first_window: f64::NAN,
        }
    }

    /// The trainer.
    pub fn trainer(&self) -> &DiffusionTrainer {
        &self.trainer
    }

    /// A line describing the model and the data (`data` as described by its source).
    pub fn describe(&self, data: &str) -> String {
        let cfg = &self.trainer.model.cfg;
        format!(
            "diffusion: {:?}, {:.2} M parameters, T = {} ({}), predicting {}; data {data}",
            cfg.arch,
            self.params as f64 / 1e6,
            cfg.timesteps,
            schedule_name(cfg.schedule),
            cfg.prediction.name(),
        )
    }
}

impl Regime for DiffusionRun {
    fn step(&mut self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    fn read_losses(&self, dev: &Device) -> Result<Vec<Download>> {
        Ok(vec![self.trainer.read_loss(dev)?])
    }

    fn guarded(&self) -> Vec<Guarded<'_>> {
        vec![Guarded { name: "", trainer: self.trainer.trainer(), per_step: 1 }]
    }

    fn take_losses(&mut self, losses: &[f64]) {
        self.loss = losses[0];
        self.acc += self.loss;
        self.cnt += 1;
    }

    fn progress(&self, _at: At, _clock: &Clock) -> String {
        format!("loss {:.4}", self.loss)
    }

    fn evaluate(&mut self, _dev: &Device, at: At, clock: &Clock) -> Result<Evaluation> {
        let mean = self.acc / self.cnt.max(1) as f64;
        if self.first_window.is_nan() {
            self.first_window = mean;
        }
        let metrics = json!({"step": at.step, "loss": self.loss, "mean_loss": mean, "elapsed_s": clock.elapsed_s()});
        let line = format!("step {}: loss {mean:.4} (mean since the last save)", at.step);
        if at.last {
            self.loss = mean;
        }
        (self.acc, self.cnt) = (0.0, 0);
        Ok(Evaluation { metrics, line })
    }

    fn save(&self, dev: &Device, path: &Path) -> Result<()> {
        self.trainer.save(dev, path, &self.data)
    }

    fn config(&self) -> Value {
        json!({"model": self.trainer.model.cfg.to_json(), "train": self.trainer.settings.to_json(),
               "data": self.data})
    }

    fn done(&self, fin: &Finished, checkpoint: &Path) -> String {
        format!(
            "done: {} steps in {:.0} s ({:.1} steps/s); checkpoint {}",
            fin.steps,
            fin.elapsed_s,
            fin.steps as f64 / fin.elapsed_s,
            checkpoint.display()
        )
    }

    fn summary(&self, dev: &Device, fin: &Finished) -> Value {
        json!({"steps": fin.start_step + fin.steps, "loss": self.loss, "first_loss": self.first_window,
               "elapsed_s": fin.elapsed_s, "steps_per_s": fin.steps as f64 / fin.elapsed_s, "params": self.params,
               "backend": dev.backend_name(), "device": dev.name(), "out": self.out})
    }
}
