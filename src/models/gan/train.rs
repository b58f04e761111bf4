//! Training the GAN: two recorded steps (D, then G) over shared weights, each drawing its own batch and
//! noise on the device.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Gan, GanConfig, Net, KIND};
use crate::checkpoint::Checkpoint;
use crate::data::rows::TrainData;
use crate::device::{Device, Download};
use crate::dist::Share;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::BnMode;
use crate::ops::elementwise::Unary;
use crate::ops::{rng, sample};
use crate::optim::{OptimizerKind, Schedule};
use crate::tensor::{DType, Tensor};
use crate::train::{download_finite, TrainConfig, Trainer};

/// How to train.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Samples per step (a multiple of the pack size).
    pub batch: usize,
    /// Steps of this run.
    pub steps: u32,
    /// D's learning rate (Adam, β1 = 0.5).
    pub lr_d: f32,
    /// G's learning rate (Adam, β1 = 0.5).
    pub lr_g: f32,
    /// Both rates decay linearly from their value at step 0 to this fraction of it at step `horizon`
    /// (and stay there); 1: constant. A fixed horizon (kept by resumed runs) makes N + N steps the same
    /// run as 2N.
    pub lr_end: f32,
    /// G steps over which the rates decay (D's horizon is `d_steps` times it).
    pub horizon: u32,
    /// The fraction of the horizon the rates stay at their start before the decay begins (0: decay from
    /// step 0; 0.9: warmup-stable-decay over the last 10%).
    pub lr_hold: f32,
    /// Decay of the moving average of G's weights used for sampling (0: none).
    pub ema: f32,
    /// Weight γ of the R1 penalty γ/2 · E‖∇ₓD(x)‖² on real data (0: none; MLP only).
    pub r1: f32,
    /// D updates per G update (each on a fresh real batch and fresh z). D's optimizer counts its own
    /// updates, so its step counter and learning-rate horizon are `d_steps` times G's.
    pub d_steps: u32,
    /// Seed of the training rows and the noise.
    pub seed: u64,
}

impl TrainSettings {
    /// Checks every field against the model it trains.
    pub fn validate(&self, cfg: &GanConfig) -> Result<()> {
        let err = |m: String| Err(Error::invalid("gan train", m));
        if self.batch < 2 {
            return err(format!("--batch must be at least 2 (batch norm needs two samples), got {}", self.batch));
        }
        if !self.batch.is_multiple_of(cfg.pack) {
            return err(format!("--batch {} must be a multiple of --pack {}", self.batch, cfg.pack));
        }
        if self.steps == 0 {
            return err(format!("--steps must be a positive integer, got {}", self.steps));
        }
        if !(1..=MAX_D_STEPS).contains(&self.d_steps) {
            return err(format!("--d-steps must be between 1 and {MAX_D_STEPS}, got {}", self.d_steps));
        }
        // The command line sets both rates with --lr; the field names the one that is wrong.
        for (f, v) in [("lr_d", self.lr_d), ("lr_g", self.lr_g)] {
            if !(v.is_finite() && v > 0.0) {
                return err(format!("--lr must be a positive number, got {v} ({f})"));
            }
        }
        let widest = cfg.z_dim.max(cfg.width).max(cfg.sample_len());
        let what = || {
            format!(
                "--batch {} with --z-dim {} / --width {}: one layer's activations",
                self.batch, cfg.z_dim, cfg.width
            )
        };
        crate::models::check_values(
            "gan train",
            what,
            crate::models::product(&[self.batch, widest, cfg.sample_len().max(1)]),
        )?;
        if !(0.0..=1.0).contains(&self.lr_end) || self.horizon == 0 {
            return err(format!(
                "--lr-end must be in [0, 1] (got {}) over a positive horizon ({})",
                self.lr_end, self.horizon
            ));
        }
        if !(0.0..=1.0).contains(&self.lr_hold) {
            return err(format!("--lr-hold must be a fraction in [0, 1], got {}", self.lr_hold));
        }
        if !(0.0..1.0).contains(&self.ema) {
            return err(format!("--ema must be in [0, 1), got {}", self.ema));
        }
        if !(self.r1.is_finite() && self.r1 >= 0.0) || (self.r1 > 0.0 && cfg.is_image()) {
            return err(format!(
                "--r1 {} must be >= 0 (and 0 for images: D's batch norm has no second derivative)",
                self.r1
            ));
        }
        Ok(())
    }

    /// The settings as run directories and checkpoints store them.
    pub fn to_json(&self) -> Value {
        crate::models::config_json(self)
    }
}

/// The most D updates per G update `TrainSettings` accepts.
pub const MAX_D_STEPS: u32 = 16;

/// Two recorded steps over shared weights; each draws its own batch and noise on the device.
pub struct GanTrainer {
    /// Both networks.
    pub model: Gan,
    d: Trainer,
    g: Trainer,
    /// How it trains.
    pub settings: TrainSettings,
    /// Kept alive for the recorded steps that read it.
    _data: Tensor,
}

/// Adam with β1 0.5 for one of the nets; `per_step` is how many of its updates make one training step.
fn adam(lr: f32, s: &TrainSettings, ema: f32, per_step: u32) -> TrainConfig {
    let schedule = if s.lr_end >= 1.0 {
        Schedule::Constant { lr }
    } else {
        let total = s.horizon * per_step;
        let hold = (s.lr_hold as f64 * total as f64).round() as u32;
        Schedule::Wsd { lr, warmup: 0, hold, total, min_lr: lr * s.lr_end }
    };
    TrainConfig {
        optimizer: OptimizerKind::Adam { beta1: 0.5, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        schedule,
        clip: None,
        ema: (ema > 0.0).then_some(ema),
        loss_scale: None,
    }
}

impl GanTrainer {
    /// Builds both steps. `start_step` is the step counter of both optimizers (a resumed run's; call
    /// `restore` before stepping, which sets it again from the checkpoint).
    pub fn new(dev: &Device, model: Gan, data: &TrainData, s: TrainSettings, start_step: u32) -> Result<GanTrainer> {
        s.validate(&model.cfg)?;
        let cfg = model.cfg.clone();
        if data.shape[1..] != cfg.data_shape[..] {
            return Err(Error::ShapeMismatch {
                op: "gan train",
                lhs: data.shape[1..].to_vec(),
                rhs: cfg.data_shape.clone(),
                hint: " (the data's sample shape must be the model's)".into(),
            });
        }
        // On several ranks (`dist`) each graph reads this rank's share (whole packs) of the global batch;
        // batch norm then normalises over the share (per-rank statistics, docs/distributed.md).
        let share = Share::of("train gan", s.batch, cfg.pack)?;
        let b = share.len;
        let data_t = Tensor::from_f32(dev, &data.shape, &data.rows)?;
        let mut bshape = vec![b];
        bshape.extend(&cfg.data_shape);
        let real = Tensor::empty(dev, &bshape, DType::F32)?;
        let z_d = Tensor::empty(dev, &[b, cfg.z_dim], DType::F32)?;
        let z_g = Tensor::empty(dev, &[b, cfg.z_dim], DType::F32)?;
        let (real_all, zd_all, zg_all) = (share.full(dev, &real)?, share.full(dev, &z_d)?, share.full(dev, &z_g)?);
        let stride = rng::step_stride(s.batch * cfg.z_dim);
        let (seed_rows, seed_zd, seed_zg) = (s.seed ^ 0xda7a_0001, s.seed ^ 0x5eed_00d0, s.seed ^ 0x5eed_0060);

        // D step: D(real) → 1, D(G(z)) → 0, G held fixed.
        // D's counter runs d_steps times G's: both, and the end of this run, must fit in 32 bits.
        let counted = start_step.checked_add(s.steps).and_then(|e| e.max(s.horizon).checked_mul(s.d_steps));
        if counted.is_none() {
            return Err(Error::invalid(
                "train gan",
                format!(
                    "start step {start_step} + --steps {} (× --d-steps {}) pass the step counter's 32 bits",
                    s.steps, s.d_steps
                ),
            ));
        }
        let step_d = crate::ops::optim::step_counter(dev, start_step * s.d_steps)?;
        let mut gd = Graph::new();
        let x = gd.input(&real);
        let z = gd.input(&z_d);
        let fake = model.g.forward(&mut gd, z, BnMode::Train { update: false })?;
        let fake = gd.detach(fake);
        if s.r1 > 0.0 {
            // The penalty differentiates D's output with respect to the real batch.
            gd.nodes[x.0].requires_grad = true;
        }
        let dr = model.discriminate_split(&mut gd, x, BnMode::Train { update: false })?;
        let df = model.discriminate_split(&mut gd, fake, BnMode::Train { update: false })?;
        let lr = bce_mean(&mut gd, dr, 1.0)?;
        let lf = bce_mean(&mut gd, df, 0.0)?;
        // The penalty's gradient in x is the same with or without D's last bias.
        let dr = dr.0;
        let mut loss_d = gd.add(lr, lf)?;
        if s.r1 > 0.0 {
            let sum = gd.sum_all(dr)?;
            let gx = gd.backward(sum, &[x])?[0];
            let sq = gd.unary(Unary::Square, gx)?;
            let total = gd.sum_all(sq)?;
            let pen = gd.scale(total, s.r1 / 2.0 / b as f32)?;
            loss_d = gd.add(loss_d, pen)?;
        }
        let (dt, rl, zd, sd) = (data_t.clone(), real.clone(), z_d.clone(), step_d.clone());
        let d = Trainer::with_prologue(
            dev,
            gd,
            loss_d,
            model.d.params(),
            adam(s.lr_d, &s, 0.0, s.d_steps),
            step_d,
            move || {
                sample::sample_rows_into(dev, &dt, None, seed_rows, &sd, &real_all, None)?;
                rng::normal_step_into(dev, &zd_all, seed_zd, stride, &sd)?;
                share.take(dev, &real_all, &rl)?;
                share.take(dev, &zd_all, &zd)
            },
        )?;

        // G step: D(G(z)) → 1, only G updated; G's batch norms update their running statistics here.
        let step_g = crate::ops::optim::step_counter(dev, start_step)?;
        let mut gg = Graph::new();
        let z = gg.input(&z_g);
        let fake = model.g.forward(&mut gg, z, BnMode::Train { update: true })?;
        let df = model.discriminate_split(&mut gg, fake, BnMode::Train { update: false })?;
        let loss_g = bce_mean(&mut gg, df, 1.0)?;
        let (zg, sg) = (z_g.clone(), step_g.clone());
        let g =
            Trainer::with_prologue(dev, gg, loss_g, model.g.params(), adam(s.lr_g, &s, s.ema, 1), step_g, move || {
                rng::normal_step_into(dev, &zg_all, seed_zg, stride, &sg)?;
                share.take(dev, &zg_all, &zg)
            })?;
        Ok(GanTrainer { model, d, g, settings: s, _data: data_t })
    }

    /// `d_steps` D updates then one G update: submissions only, no wait.
    pub fn step(&self, dev: &Device) -> Result<()> {
        for _ in 0..self.settings.d_steps {
            self.d.step(dev)?;
        }
        self.g.step(dev)
    }

    /// The latest (D, G) losses (asynchronous reads).
    pub fn read_losses(&self, dev: &Device) -> Result<(Download, Download)> {
        Ok((self.d.read_loss(dev)?, self.g.read_loss(dev)?))
    }

    /// D's recorded step.
    pub fn d_trainer(&self) -> &Trainer {
        &self.d
    }

    /// G's recorded step.
    pub fn g_trainer(&self) -> &Trainer {
        &self.g
    }

    /// G as sampling uses it: over the EMA weights when there are some.
    pub fn sampling_generator(&self) -> Result<Net> {
        match self.g.ema() {
            Some(w) => self.model.g.with_weights(w),
            None => self.model.g.with_weights(&self.model.g.params().into_iter().map(|p| p.tensor).collect::<Vec<_>>()),
        }
    }

    /// Everything a checkpoint holds: both nets, both optimizers (`d.optim.*`, `g.optim.*`), G's EMA
    /// (`g.ema.<parameter name>`) and running statistics.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (net, t) in [("d", &self.d), ("g", &self.g)] {
            for (name, tensor) in t.state() {
                let is_param = t.params().iter().any(|p| p.name == name);
                out.push((if is_param { name } else { format!("{net}.{name}") }, tensor));
            }
        }
        out.extend(self.model.g.running());
        out
    }

    /// Saves everything needed to sample, evaluate or resume, atomically; refuses (leaving `path` as it
    /// was) when a tensor holds a non-finite value.
    pub fn save(&self, dev: &Device, path: &std::path::Path, data: &str) -> Result<()> {
        let mut config = crate::models::run_config(self.model.cfg.to_json(), self.settings.to_json(), data);
        config["image_shape"] = if self.model.cfg.is_image() { json!(self.model.cfg.data_shape) } else { Value::Null };
        let mut ck = Checkpoint::new(KIND, config);
        ck.step = self.g.optimizer().current_step(dev)? as u64;
        ck.rng = json!({"seed": self.settings.seed});
        for (name, t) in self.state() {
            let h = download_finite(dev, path, &name, &t)?;
            ck.tensors.insert(name, h);
        }
        ck.save(path)
    }

    /// Restores both nets, both optimizers and step counters, the EMA and the running statistics.
    pub fn restore(&self, dev: &Device, ck: &Checkpoint) -> Result<()> {
        ck.expect_kind_for(KIND, "`tigel train gan --resume`")?;
        let ck = &*ck.with_named_ema("g.", &self.g.params().iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        let state = self.state();
        let specs: Vec<(&str, &[usize], DType)> =
            state.iter().map(|(n, t)| (n.as_str(), &t.shape[..], t.dtype)).collect();
        ck.expect_tensors(&specs)?;
        for (name, t) in &state {
            ck.restore_into(dev, name, t)?;
        }
        Ok(())
    }
}

/// The mean BCE of D's logits (x·W, with the bias b added in the loss's kernel) against `target`.
fn bce_mean(g: &mut Graph, (logits, b): (NodeId, Option<NodeId>), target: f32) -> Result<NodeId> {
    let shape = g.shape(logits).to_vec();
    let t = g.fill(&shape, target)?;
    g.bce_logits_mean(logits, t, b)
}
