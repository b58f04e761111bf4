//! Training the diffusion model: a recorded step that draws its batch, timesteps and noise on the device.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Diffusion, Prediction, KIND};
use crate::checkpoint::Checkpoint;
use crate::device::{Device, Download};
use crate::diffusion::{MAX_PERIOD, TIME_SIN_DIM};
use crate::dist::Share;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::diffusion::{self, QSample, ScheduleTensors};
use crate::ops::elementwise::Binary;
use crate::ops::{rng, sample};
use crate::optim::{OptimizerKind, Schedule as LrSchedule};
use crate::tensor::{DType, Tensor};
use crate::train::{TrainConfig, Trainer};

/// How to train.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Samples per step.
    pub batch: usize,
    /// Peak learning rate (AdamW), after `warmup` steps, then a cosine decay to a tenth.
    pub lr: f32,
    /// Steps of linear warmup.
    pub warmup: u32,
    /// Steps of this run.
    pub steps: u32,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0: off).
    pub clip: f32,
    /// Decay of the EMA of the weights that sampling uses.
    pub ema: f32,
    /// Probability of training a row with the null class (class-conditional models).
    pub p_uncond: f32,
    /// Seed of the training rows, timesteps, noise and label dropout.
    pub seed: u64,
}

impl TrainSettings {
    /// Positive sizes and rates in range.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::invalid("diffusion train", m));
        crate::models::check_batch_steps_lr("diffusion train", self.batch, self.steps, self.lr)?;
        if !(0.0..1.0).contains(&self.ema) {
            return err(format!("--ema must be in [0, 1), got {}", self.ema));
        }
        if !(0.0..1.0).contains(&self.p_uncond) {
            return err(format!("--p-uncond must be in [0, 1), got {}", self.p_uncond));
        }
        crate::models::check_clip("diffusion train", self.clip)?;
        Ok(())
    }

    /// The settings as run directories and checkpoints store them.
    pub fn to_json(&self) -> Value {
        crate::models::config_json(self)
    }
}

/// Training data in model space: rows [N, sample_shape...] (already divided by `data_scale`), with labels
/// for a class-conditional model.
pub struct TrainData<'a> {
    /// Row-major samples.
    pub rows: &'a [f32],
    /// One class per row (class-conditional models).
    pub labels: Option<&'a [u32]>,
}

/// A recorded training step that needs nothing from the host: the data set lives on the device; the
/// prologue picks B rows, draws each row's timestep and noise (q_sample) and, for a conditional model, the
/// label dropout, all from the step counter; then forward, MSE, backward, AdamW and the EMA update.
pub struct DiffusionTrainer {
    /// The model being trained.
    pub model: Diffusion,
    trainer: Trainer,
    /// The optimizer step this run started at.
    pub start_step: u32,
    /// How it trains.
    pub settings: TrainSettings,
    /// The noise schedule's tables on the device.
    pub sched: ScheduleTensors,
}

impl DiffusionTrainer {
    /// Builds the step for `model` on `data`; `start_step` > 0 resumes (call `restore` before stepping).
    pub fn new(
        dev: &Device,
        mut model: Diffusion,
        data: TrainData,
        s: TrainSettings,
        start_step: u32,
    ) -> Result<DiffusionTrainer> {
        s.validate()?;
        let cfg = model.cfg.clone();
        let d = cfg.sample_len();
        if data.rows.is_empty() || !data.rows.len().is_multiple_of(d) {
            return Err(Error::invalid(
                "diffusion train",
                format!("{} values are not rows of shape {:?}", data.rows.len(), cfg.sample_shape),
            ));
        }
        let n = data.rows.len() / d;
        if cfg.sample_shape.len() == 1 {
            // Points record their data's extent, to which sampling clamps x̂_0.
            model.x0_range = Some(data.rows.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3));
        }
        let conditional = cfg.num_classes > 0;
        match (conditional, data.labels) {
            (true, None) => return Err(Error::invalid("diffusion train", "a class-conditional model needs labels")),
            (true, Some(l)) if l.len() != n || l.iter().any(|&c| c as usize >= cfg.num_classes) => {
                return Err(Error::invalid(
                    "diffusion train",
                    format!("need {n} labels below {}, got {} labels", cfg.num_classes, l.len()),
                ))
            }
            _ => {}
        }
        let sched = diffusion::schedule(dev, cfg.schedule, cfg.timesteps)?;
        let mut shape = vec![n];
        shape.extend(&cfg.sample_shape);
        let data_t = Tensor::from_f32(dev, &shape, data.rows)?;
        let labels_t = match (conditional, data.labels) {
            (true, Some(l)) => Some(Tensor::from_u32(dev, &[n], l)?),
            _ => None,
        };
        let b = s.batch;
        shape[0] = b;
        let x0 = Tensor::empty(dev, &shape, DType::F32)?;
        let lab = labels_t.as_ref().map(|_| Tensor::empty(dev, &[b], DType::U32)).transpose()?;
        let qs = QSample::empty(dev, &shape)?;
        let tsin = Tensor::empty(dev, &[b, TIME_SIN_DIM], DType::F32)?;
        let vt = (cfg.prediction == Prediction::V).then(|| Tensor::empty(dev, &shape, DType::F32)).transpose()?;
        let u = Tensor::empty(dev, &[b, 1], DType::F32)?;
        let step = crate::ops::optim::step_counter(dev, start_step)?;
        // The prologue draws the global batch (`--batch`) as one process would; on several ranks (`dist`)
        // the graph reads this rank's share of its rows.
        let share = Share::of("train diffusion", s.batch, 1)?;
        let target_all = vt.as_ref().unwrap_or(&qs.eps).clone();
        let (xt_l, ts_l, target_l) =
            (share.local(dev, &qs.xt)?, share.local(dev, &tsin)?, share.local(dev, &target_all)?);
        let (lab_l, u_l) = (lab.as_ref().map(|l| share.local(dev, l)).transpose()?, share.local(dev, &u)?);

        let mut g = Graph::new();
        let xt = g.input(&xt_l);
        let ts = g.input(&ts_l);
        let target = g.input(&target_l);
        let cond = match &lab_l {
            Some(l) => {
                let ids = g.input(l);
                let un = g.input(&u_l);
                let keep = g.scalar(Binary::Greater, un, s.p_uncond, false)?;
                Some((ids, keep))
            }
            None => None,
        };
        let pred = model.forward(&mut g, xt, ts, cond)?;
        let loss = g.mse(pred, target)?;

        let total = start_step.checked_add(s.steps).ok_or_else(|| {
            Error::invalid(
                "train",
                format!("start step {start_step} + --steps {} pass the step counter's 32 bits", s.steps),
            )
        })?;
        // A resumed run continues the schedule of a start_step + steps run (run::resume).
        let warmup = s.warmup.min(total);
        let tc = TrainConfig {
            optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: s.weight_decay },
            schedule: LrSchedule::Cosine { lr: s.lr, warmup, total, min_lr: s.lr * 0.1 },
            clip: (s.clip > 0.0).then_some(s.clip),
            ema: Some(s.ema),
            loss_scale: None,
        };
        // One seed per stream, so the rows, the noise and the label dropout never share random numbers.
        let (seed_rows, seed_q, seed_u) = (s.seed ^ 0x5EED_0001, s.seed ^ 0x5EED_0002, s.seed ^ 0x5EED_0003);
        let (sc, abar) = (step.clone(), sched.alpha_bar.clone());
        let trainer = Trainer::with_prologue(dev, g, loss, model.params(), tc, step, move || {
            sample::sample_rows_into(dev, &data_t, labels_t.as_ref(), seed_rows, &sc, &x0, lab.as_ref())?;
            diffusion::q_sample_into(dev, &x0, &abar, seed_q, &sc, &qs)?;
            diffusion::timestep_embedding_into(dev, &qs.t, TIME_SIN_DIM, MAX_PERIOD, &tsin)?;
            if let Some(vt) = &vt {
                diffusion::v_target_into(dev, &x0, &qs.eps, &qs.t, &abar, vt)?;
            }
            if lab.is_some() {
                rng::uniform_step_into(dev, &u, seed_u, rng::step_stride(b), 0.0, 1.0, &sc)?;
            }
            share.take(dev, &qs.xt, &xt_l)?;
            share.take(dev, &tsin, &ts_l)?;
            share.take(dev, &target_all, &target_l)?;
            if let (Some(l), Some(ll)) = (&lab, &lab_l) {
                share.take(dev, l, ll)?;
                share.take(dev, &u, &u_l)?;
            }
            Ok(())
        })?;
        Ok(DiffusionTrainer { model, trainer, start_step, settings: s, sched })
    }

    /// Submits one training step (no wait).
    pub fn step(&self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    /// The latest step's loss (asynchronous read).
    pub fn read_loss(&self, dev: &Device) -> Result<Download> {
        self.trainer.read_loss(dev)
    }

    /// The underlying recorded step.
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// A copy of the model holding the EMA weights, for sampling.
    pub fn ema_model(&self, dev: &Device) -> Result<Diffusion> {
        let mut m = Diffusion::new(dev, self.model.cfg.clone(), 0)?;
        m.x0_range = self.model.x0_range;
        m.copy_weights_from(dev, self.trainer.ema().expect("the trainer keeps an EMA"))?;
        Ok(m)
    }

    /// Restores weights, optimizer state, EMA and step counter.
    pub fn restore(&self, dev: &Device, ck: &Checkpoint) -> Result<()> {
        ck.expect_kind_for(KIND, "`tigel train diffusion --resume`")?;
        self.trainer.restore(dev, ck)
    }

    /// Saves everything needed to sample, evaluate or resume, atomically.
    pub fn save(&self, dev: &Device, path: &std::path::Path, data: &str) -> Result<()> {
        let mut config = crate::models::run_config(self.model.cfg.to_json(), self.settings.to_json(), data);
        if let (Some(r), true) = (self.model.x0_range, self.model.cfg.sample_shape.len() == 1) {
            config["x0_range"] = json!(r);
        }
        self.trainer.save(dev, path, KIND, config, json!({"seed": self.settings.seed}))
    }
}
