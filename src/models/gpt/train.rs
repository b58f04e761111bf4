//! Training the GPT: a recorded step that draws its own batch on the device.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Gpt, KIND};
use crate::checkpoint::Checkpoint;
use crate::data::text::Corpus;
use crate::device::{Device, Download};
use crate::dist::Share;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::batch;
use crate::optim::{OptimizerKind, Schedule};
use crate::tensor::{DType, Tensor};
use crate::train::{TrainConfig, Trainer};

/// How to train.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Sequences per step.
    pub batch: usize,
    /// Peak learning rate (AdamW), reached after `warmup` steps, then a cosine decay to `lr·min_lr_frac`
    /// at the last step.
    pub lr: f32,
    /// The learning rate's floor as a fraction of `lr`.
    pub min_lr_frac: f32,
    /// Steps of linear warmup.
    pub warmup: u32,
    /// Steps of this run.
    pub steps: u32,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0: off).
    pub clip: f32,
    /// Seed of the initial weights and of the training windows.
    pub seed: u64,
}

impl TrainSettings {
    /// A positive batch, step count and learning rate.
    pub fn validate(&self) -> Result<()> {
        crate::models::check_batch_steps_lr("gpt train", self.batch, self.steps, self.lr)?;
        crate::models::check_clip("gpt train", self.clip)?;
        if !(0.0..=1.0).contains(&self.min_lr_frac) {
            return Err(Error::invalid(
                "gpt train",
                format!("--min-lr-frac must be in [0, 1], got {}", self.min_lr_frac),
            ));
        }
        Ok(())
    }

    /// The settings as run directories and checkpoints store them.
    pub fn to_json(&self) -> Value {
        crate::models::config_json(self)
    }
}

/// A recorded training step that draws its batch on the device: the corpus lives there (4 bytes per
/// word), `text_windows` picks B random windows of the training part from the step counter, then the
/// forward, backward and AdamW update run. One submission per step, nothing from the host.
pub struct GptTrainer {
    /// The model being trained.
    pub model: Gpt,
    trainer: Trainer,
    /// The optimizer step this run started at (0, or the step of the checkpoint it resumed).
    pub start_step: u32,
    /// How it trains.
    pub settings: TrainSettings,
    /// B·T.
    pub tokens_per_step: usize,
}

impl GptTrainer {
    /// Builds the step for `model` on `corpus`. `start_step` > 0 (a resumed run) continues the schedule
    /// of a run of `start_step + steps` steps; call `restore` before stepping.
    pub fn new(dev: &Device, model: Gpt, corpus: &Corpus, s: TrainSettings, start_step: u32) -> Result<GptTrainer> {
        s.validate()?;
        corpus.check_context(model.cfg.context)?;
        // On several ranks (`dist`) this rank's graph reads its share of the global batch's windows.
        let share = Share::of("train gpt", s.batch, 1)?;
        let (b, t) = (share.len, model.cfg.context);
        let ((train_start, train_len), _) = corpus.split();
        let words = batch::pack_bytes(&corpus.bytes);
        let corpus_buf = Tensor::from_u32(dev, &[words.len()], &words)?;
        let x = Tensor::empty(dev, &[b, t], DType::U32)?;
        let y = Tensor::empty(dev, &[b * t], DType::U32)?;
        let (x_all, y_all) = (share.full(dev, &x)?, share.full(dev, &y.reshape(&[b, t])?)?);
        let step = crate::ops::optim::step_counter(dev, start_step)?;

        let mut g = Graph::new();
        let ids = g.input(&x);
        let targets = g.input(&y);
        let logits = model.forward(&mut g, ids, (model.cfg.dropout > 0.0).then_some(&step))?;
        let loss = g.cross_entropy_mean(logits, targets)?;

        let total = start_step.checked_add(s.steps).ok_or_else(|| {
            Error::invalid(
                "train",
                format!("start step {start_step} + --steps {} pass the step counter's 32 bits", s.steps),
            )
        })?;
        // A resumed run continues the schedule of a start_step + steps run (run::resume).
        let warmup = s.warmup.min(total);
        let schedule = Schedule::Cosine { lr: s.lr, warmup, total, min_lr: s.lr * s.min_lr_frac };
        let cfg = TrainConfig {
            optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: s.weight_decay },
            schedule,
            clip: (s.clip > 0.0).then_some(s.clip),
            ema: None,
        };
        let seed = s.seed;
        let (xs, ys, step_c, cb) = (x.clone(), y.reshape(&[b, t])?, step.clone(), corpus_buf.clone());
        let trainer = Trainer::with_prologue(dev, g, loss, model.params(), cfg, step, move || {
            batch::text_windows_into(dev, &cb, train_start as u64, train_len as u64, seed, &step_c, &x_all, &y_all)?;
            share.take(dev, &x_all, &xs)?;
            share.take(dev, &y_all, &ys)
        })?;
        Ok(GptTrainer { model, trainer, start_step, settings: s, tokens_per_step: s.batch * t })
    }

    /// Submits one training step (no wait).
    pub fn step(&self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    /// The latest step's mean loss in nats (asynchronous read).
    pub fn read_loss(&self, dev: &Device) -> Result<Download> {
        self.trainer.read_loss(dev)
    }

    /// The underlying recorded step (optimizer, plan, parameters).
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// Restores weights, optimizer state and step counter.
    pub fn restore(&self, dev: &Device, ck: &Checkpoint) -> Result<()> {
        ck.expect_kind_for(KIND, "`tigel train gpt --resume`")?;
        self.trainer.restore(dev, ck)
    }

    /// Saves everything needed to sample, evaluate or resume, atomically.
    pub fn save(&self, dev: &Device, path: &std::path::Path, data: &str) -> Result<()> {
        let config = crate::models::run_config(self.model.cfg.to_json(), self.settings.to_json(), data);
        self.trainer.save(dev, path, KIND, config, json!({"seed": self.settings.seed}))
    }
}
