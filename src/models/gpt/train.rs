//! Training the GPT: a recorded step that draws its own batch on the device.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Gpt, KIND};
use crate::checkpoint::Checkpoint;
use crate::data::text::Corpus;
use crate::device::{Device, Download};
use crate::dist::Share;
use crate::error::{Error, Result};
use crate::graph::{Graph, Precision};
use crate::ops::batch;
use crate::optim::muon::MuonConfig;
use crate::optim::{LossScale, OptimizerKind, Schedule};
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
    /// The matrix products' precision (f16 operands under `mixed`; master weights and optimizer state
    /// stay f32, so a checkpoint is the same either way and a run may resume at the other precision).
    #[serde(default, skip_serializing_if = "is_f32")]
    pub precision: Precision,
}

fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

fn is_default_scale(s: &LossScale) -> bool {
    *s == LossScale::default()
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

/// The update rule of a GPT run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerChoice {
    /// AdamW on every tensor.
    #[default]
    Adamw,
    /// Muon on the blocks' matrices, AdamW on the embeddings, the head and the norms.
    Muon,
}

impl OptimizerChoice {
    /// The name the command line and configs use.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerChoice::Adamw => "adamw",
            OptimizerChoice::Muon => "muon",
        }
    }
}

/// The shape of the learning rate's decay after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// A half cosine to the floor at the last step.
    #[default]
    Cosine,
    /// A straight line to the floor at the last step.
    Linear,
}

impl std::fmt::Display for OptimizerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Decay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decay::Cosine => "cosine",
            Decay::Linear => "linear",
        })
    }
}

/// The optimizer and schedule of a run (absent from older configs: AdamW and a cosine decay, the rule
/// they were trained with).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimSettings {
    /// The update rule.
    pub optimizer: OptimizerChoice,
    /// The decay's shape.
    pub decay: Decay,
    /// The fraction of the run's steps over which the rate decays (1: all of them after warmup; less:
    /// the rate holds at its peak until then, warmup-stable-decay; linear decay only).
    pub cooldown: f32,
    /// Muon's learning rate (the matrices'), following the schedule's shape.
    pub muon_lr: f32,
    /// Muon's (Nesterov) momentum.
    pub muon_momentum: f32,
    /// How the loss is scaled under `--precision mixed` (f16 gradient operands); unused at f32.
    /// Recorded only when it is not the default, so configs without it read as the default.
    #[serde(skip_serializing_if = "is_default_scale")]
    pub loss_scale: LossScale,
}

impl Default for OptimSettings {
    fn default() -> OptimSettings {
        OptimSettings {
            optimizer: OptimizerChoice::Adamw,
            decay: Decay::Cosine,
            cooldown: 1.0,
            muon_lr: 0.02,
            muon_momentum: 0.95,
            loss_scale: LossScale::default(),
        }
    }
}

/// Names of the GPT's rank-2 tensors that are not hidden matrices: Muon leaves them to AdamW.
pub const EMBEDDING_NAMES: &[&str] = &["wte", "wpe", "lm_head"];

impl OptimSettings {
    /// Values in range; errors name the flag.
    pub fn validate(&self) -> Result<()> {
        let op = "gpt train";
        if !(self.cooldown > 0.0 && self.cooldown <= 1.0) {
            return Err(Error::invalid(op, format!("--cooldown must be in (0, 1], got {}", self.cooldown)));
        }
        if self.cooldown < 1.0 && self.decay != Decay::Linear {
            return Err(Error::invalid(op, "--cooldown below 1 needs --decay linear (warmup-stable-decay)"));
        }
        if !(self.muon_lr.is_finite() && self.muon_lr > 0.0) {
            return Err(Error::invalid(op, format!("--muon-lr must be a positive number, got {}", self.muon_lr)));
        }
        self.loss_scale.validate()?;
        if !(self.muon_momentum.is_finite() && (0.0..1.0).contains(&self.muon_momentum) && self.muon_momentum > 0.0) {
            return Err(Error::invalid(op, format!("--muon-momentum must be in (0, 1), got {}", self.muon_momentum)));
        }
        Ok(())
    }

    /// The schedule of a run of `total` steps (after warmup) with peak `lr` and floor `min_lr`.
    fn schedule(&self, lr: f32, warmup: u32, total: u32, min_lr: f32) -> Schedule {
        match self.decay {
            Decay::Cosine => Schedule::Cosine { lr, warmup, total, min_lr },
            Decay::Linear if self.cooldown >= 1.0 => Schedule::Linear { lr, warmup, total, min_lr },
            Decay::Linear => {
                let hold = total - ((total as f64 * self.cooldown as f64).round() as u32).min(total);
                Schedule::Wsd { lr, warmup, hold: hold.max(warmup), total, min_lr }
            }
        }
    }

    /// The optimizer for `s`.
    fn kind(&self, s: &TrainSettings) -> OptimizerKind {
        let (beta1, beta2, eps, weight_decay) = (0.9, 0.99, 1e-8, s.weight_decay);
        match self.optimizer {
            OptimizerChoice::Adamw => OptimizerKind::AdamW { beta1, beta2, eps, weight_decay },
            OptimizerChoice::Muon => OptimizerKind::Muon(MuonConfig {
                momentum: self.muon_momentum,
                nesterov: true,
                ns_steps: 5,
                lr_ratio: self.muon_lr / s.lr,
                weight_decay,
                beta1,
                beta2,
                eps,
                adamw_names: EMBEDDING_NAMES,
            }),
        }
    }

    /// The settings as run directories and checkpoints store them (under the training settings' `optim`).
    pub fn to_json(&self) -> Value {
        crate::models::config_json(self)
    }

    /// The settings a run's config stored (`train.optim`), or the defaults where absent (older runs).
    pub fn from_config(config: &Value) -> Result<OptimSettings> {
        match config.get("train").and_then(|t| t.get("optim")) {
            Some(v) => crate::models::config_from_json("gpt optim", v),
            None => Ok(OptimSettings::default()),
        }
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
    /// Its optimizer and schedule.
    pub optim: OptimSettings,
}

impl GptTrainer {
    /// Builds the step for `model` on `corpus`. `start_step` > 0 (a resumed run) continues the schedule
    /// of a run of `start_step + steps` steps; call `restore` before stepping.
    pub fn new(dev: &Device, model: Gpt, corpus: &Corpus, s: TrainSettings, start_step: u32) -> Result<GptTrainer> {
        GptTrainer::with_optim(dev, model, corpus, s, OptimSettings::default(), start_step)
    }

    /// Like `new`, with the optimizer and schedule `o`.
    pub fn with_optim(
        dev: &Device,
        model: Gpt,
        corpus: &Corpus,
        mut s: TrainSettings,
        o: OptimSettings,
        start_step: u32,
    ) -> Result<GptTrainer> {
        s.validate()?;
        if s.precision == Precision::Mixed && !dev.has_f16_storage() {
            eprintln!("note: this adapter lacks f16 storage (SHADER_F16_IN_F32); training at f32 precision");
            s.precision = Precision::F32;
        }
        o.validate()?;
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
        g.precision = s.precision;
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
        let schedule = o.schedule(s.lr, warmup, total, s.lr * s.min_lr_frac);
        let cfg = TrainConfig {
            optimizer: o.kind(&s),
            schedule,
            clip: (s.clip > 0.0).then_some(s.clip),
            ema: None,
            loss_scale: (s.precision == Precision::Mixed).then_some(o.loss_scale),
        };
        let seed = s.seed;
        let (xs, ys, step_c, cb) = (x.clone(), y.reshape(&[b, t])?, step.clone(), corpus_buf.clone());
        let trainer = Trainer::with_prologue(dev, g, loss, model.params(), cfg, step, move || {
            batch::text_windows_into(dev, &cb, train_start as u64, train_len as u64, seed, &step_c, &x_all, &y_all)?;
            share.take(dev, &x_all, &xs)?;
            share.take(dev, &y_all, &ys)
        })?;
        Ok(GptTrainer { model, trainer, start_step, settings: s, tokens_per_step: s.batch * t, optim: o })
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
        // A restarted run (step 0, the optimizer state zeroed: `ResumeSchedule::Restart`) may take
        // another optimizer than its checkpoint's (an AdamW checkpoint under the Muon default): its fresh
        // state is zeros under this optimizer's names.
        let optim = |n: &str| n.starts_with("optim.");
        let fresh =
            ck.step == 0 && ck.tensors.iter().filter(|(n, _)| optim(n)).all(|(_, t)| t.data.iter().all(|&w| w == 0));
        if !fresh {
            return self.trainer.restore(dev, ck);
        }
        let mut ck = ck.clone();
        ck.tensors.retain(|n, _| !optim(n));
        for (name, t) in self.trainer.state().into_iter().filter(|(n, _)| optim(n)) {
            let zeros =
                crate::checkpoint::HostTensor { shape: t.shape.clone(), dtype: t.dtype, data: vec![0; t.numel()] };
            ck.tensors.insert(name, zeros);
        }
        self.trainer.restore(dev, &ck)
    }

    /// Saves everything needed to sample, evaluate or resume, atomically.
    pub fn save(&self, dev: &Device, path: &std::path::Path, data: &str) -> Result<()> {
        let mut train = self.settings.to_json();
        train["optim"] = self.optim.to_json();
        let config = crate::models::run_config(self.model.cfg.to_json(), train, data);
        self.trainer.save(dev, path, KIND, config, json!({"seed": self.settings.seed}))
    }
}
