//! Denoising diffusion: a network learns the noise in x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, and sampling runs the
//! noising backwards from pure noise, one reverse step (one kernel) per timestep. Read top to bottom.
//!
//! t ──► sinusoidal embedding ──► Linear ─ SiLU ─ Linear ──► e [B, E]   (+ class embedding, optional)
//! x_t, e ──► denoiser ──► ε̂ (or v̂)          MLP for 2-D points, UNet (models::unet) for images
//!
//! The MLP: h = x·W_in + b_in, then per layer h = SiLU(h·W + b + e), then ε̂ = h·W_out + b_out: the
//! time embedding enters every layer, which the denoiser needs to tell a sample at t = 0 (where a mode
//! is 0.02 wide) from one at t = T.
//!
//! Class conditioning (classifier-free guidance): a table of K + 1 rows, the last one the "null" class.
//! During training each row's label is replaced by the null class with probability `p_uncond` (drawn on the
//! device); at sampling, ε = ε_null + w·(ε_label − ε_null).
//!
//! Below the model: `DiffusionTrainer` (a step that draws its batch, timesteps and noise on the device),
//! and `Sampler` (DDPM ancestral or DDIM deterministic reverse processes).

use serde_json::{json, Value};

use super::unet::{linear, Init, Unet, UnetConfig};
use crate::checkpoint::Checkpoint;
use crate::device::{Device, Download};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Plan};
use crate::nn::Param;
use crate::ops::diffusion::{self, QSample, Schedule, ScheduleTensors};
use crate::ops::elementwise::{self as ew, Binary, Unary};
use crate::ops::matmul::MatmulOpts;
use crate::ops::{layout, rng, rng::RngState, sample};
use crate::optim::{OptimizerKind, Schedule as LrSchedule};
use crate::tensor::{DType, Tensor};
use crate::train::{TrainConfig, Trainer};

/// Checkpoint kind of this model.
pub const KIND: &str = "diffusion";
/// Width of the sinusoidal timestep embedding, and its longest period.
const TIME_SIN_DIM: usize = 64;
const MAX_PERIOD: f32 = 10_000.0;

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε.
    Eps,
    /// v = √ᾱ·ε − √(1−ᾱ)·x_0.
    V,
}

impl Prediction {
    pub fn parse(s: &str) -> Result<Prediction> {
        match s {
            "eps" => Ok(Prediction::Eps),
            "v" => Ok(Prediction::V),
            _ => Err(Error::invalid("--prediction", format!("`{s}`: choose eps or v"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Eps => "eps",
            Prediction::V => "v",
        }
    }
}

/// The noise schedule by name: `linear` (1e-4 to 0.02) or `cosine` (s = 0.008).
pub fn parse_schedule(s: &str) -> Result<Schedule> {
    match s {
        "linear" => Ok(Schedule::LINEAR),
        "cosine" => Ok(Schedule::COSINE),
        _ => Err(Error::invalid("--schedule", format!("`{s}`: choose linear or cosine"))),
    }
}

pub fn schedule_name(s: Schedule) -> &'static str {
    match s {
        Schedule::Linear { .. } => "linear",
        Schedule::Cosine { .. } => "cosine",
    }
}

/// The denoising network.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    Mlp { hidden: usize, layers: usize },
    Unet(UnetConfig),
}

/// The shape of the model and of its diffusion process.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffusionConfig {
    pub arch: Arch,
    /// One sample: [D] for points, [C, H, W] for images.
    pub sample_shape: Vec<usize>,
    pub timesteps: usize,
    pub schedule: Schedule,
    pub prediction: Prediction,
    /// Classes of the label conditioning (0: unconditional); the table holds one more, the null class.
    pub num_classes: usize,
    /// Width of the conditioning embedding e.
    pub emb: usize,
    /// Data are divided by it on the way in (and multiplied on the way out), so the model sees unit scale.
    pub data_scale: f32,
}

impl DiffusionConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("diffusion config", m));
        if self.timesteps == 0 {
            return bad("--timesteps must be a positive integer, got 0".into());
        }
        if self.timesteps > diffusion::MAX_TIMESTEPS {
            return bad(format!("--timesteps {} is over the {} supported", self.timesteps, diffusion::MAX_TIMESTEPS));
        }
        if self.emb == 0 || !(self.data_scale.is_finite() && self.data_scale > 0.0) {
            return bad(format!("embedding width {} and data scale {} must be positive", self.emb, self.data_scale));
        }
        match (&self.arch, &self.sample_shape[..]) {
            (Arch::Mlp { hidden, layers }, [d]) => {
                if *hidden == 0 || *layers == 0 || *d == 0 {
                    return bad(format!("--hidden {hidden} and --layers {layers} must be positive"));
                }
                if *hidden != self.emb {
                    return bad(format!("the MLP's hidden width {hidden} must equal the embedding width {}", self.emb));
                }
            }
            (Arch::Unet(u), &[c, h, w]) => u.validate(c, h, w)?,
            (a, s) => return bad(format!("{a:?} does not take samples of shape {s:?}")),
        }
        Ok(())
    }

    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    pub fn to_json(&self) -> Value {
        let arch = match &self.arch {
            Arch::Mlp { hidden, layers } => json!({"kind": "mlp", "hidden": hidden, "layers": layers}),
            Arch::Unet(u) => json!({"kind": "unet", "unet": u.to_json()}),
        };
        json!({"arch": arch, "sample_shape": self.sample_shape, "timesteps": self.timesteps,
               "schedule": schedule_name(self.schedule), "prediction": self.prediction.name(),
               "num_classes": self.num_classes, "emb": self.emb, "data_scale": self.data_scale})
    }

    pub fn from_json(v: &Value) -> Result<DiffusionConfig> {
        let bad = || Error::invalid("diffusion config", format!("missing or invalid fields in {v}"));
        let u = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize).ok_or_else(bad);
        let a = v.get("arch").ok_or_else(bad)?;
        let arch = match a.get("kind").and_then(Value::as_str) {
            Some("mlp") => Arch::Mlp {
                hidden: a.get("hidden").and_then(Value::as_u64).ok_or_else(bad)? as usize,
                layers: a.get("layers").and_then(Value::as_u64).ok_or_else(bad)? as usize,
            },
            Some("unet") => Arch::Unet(a.get("unet").and_then(UnetConfig::from_json).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        let shape = v.get("sample_shape").and_then(Value::as_array).ok_or_else(bad)?;
        let cfg = DiffusionConfig {
            arch,
            sample_shape: shape
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(bad)?,
            timesteps: u("timesteps")?,
            schedule: parse_schedule(v.get("schedule").and_then(Value::as_str).ok_or_else(bad)?)?,
            prediction: Prediction::parse(v.get("prediction").and_then(Value::as_str).ok_or_else(bad)?)?,
            num_classes: u("num_classes")?,
            emb: u("emb")?,
            data_scale: v.get("data_scale").and_then(Value::as_f64).ok_or_else(bad)? as f32,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The MLP denoiser's weights.
pub struct MlpNet {
    input: [Param; 2],
    hidden: Vec<[Param; 2]>,
    out: [Param; 2],
}

// One per model, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Net {
    Mlp(MlpNet),
    Unet(Unet),
}

pub struct Diffusion {
    pub cfg: DiffusionConfig,
    time1: [Param; 2],
    time2: [Param; 2],
    /// [K + 1, E]; row K is the null class.
    classes: Option<Param>,
    net: Net,
}

impl Diffusion {
    pub fn new(dev: &Device, cfg: DiffusionConfig, seed: u64) -> Result<Diffusion> {
        cfg.validate()?;
        let mut init = Init { dev, rng: RngState::new(seed) };
        let e = cfg.emb;
        let time1 = init.linear("time.0", TIME_SIN_DIM, e)?;
        let time2 = init.linear("time.1", e, e)?;
        let classes = if cfg.num_classes > 0 {
            Some(init.normal("classes".into(), &[cfg.num_classes + 1, e], 1.0)?)
        } else {
            None
        };
        let net = match &cfg.arch {
            Arch::Mlp { hidden, layers } => {
                let d = cfg.sample_shape[0];
                let input = init.linear("mlp.in", d, *hidden)?;
                let hidden_l = (0..*layers)
                    .map(|i| init.linear(&format!("mlp.h.{i}"), *hidden, *hidden))
                    .collect::<Result<_>>()?;
                let out = init.linear("mlp.out", *hidden, d)?;
                Net::Mlp(MlpNet { input, hidden: hidden_l, out })
            }
            Arch::Unet(u) => Net::Unet(Unet::new(&mut init, u.clone(), cfg.sample_shape[0], e)?),
        };
        Ok(Diffusion { cfg, time1, time2, classes, net })
    }

    /// The model a checkpoint holds, with its EMA weights when it has them (they sample better).
    pub fn load(dev: &Device, ck: &Checkpoint, needed_by: &str) -> Result<Diffusion> {
        ck.expect_kind_for(KIND, needed_by)?;
        let src = ck.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into());
        let cfg = DiffusionConfig::from_json(ck.config.get("model").unwrap_or(&Value::Null))
            .map_err(|e| Error::Checkpoint { path: src.clone(), msg: format!("bad model config: {e}") })?;
        let m = Diffusion::new(dev, cfg, 0)?;
        for (i, p) in m.params().iter().enumerate() {
            let ema = format!("ema.{i}");
            let name = if ck.tensors.contains_key(&ema) { ema } else { p.name.clone() };
            ck.restore_into(dev, &name, &p.tensor)?;
        }
        Ok(m)
    }

    /// Every parameter, named as in checkpoints.
    pub fn params(&self) -> Vec<Param> {
        let mut v: Vec<Param> = self.time1.iter().chain(&self.time2).cloned().collect();
        v.extend(self.classes.clone());
        match &self.net {
            Net::Mlp(m) => {
                v.extend(m.input.iter().cloned());
                for l in &m.hidden {
                    v.extend(l.iter().cloned());
                }
                v.extend(m.out.iter().cloned());
            }
            Net::Unet(u) => v.extend(u.params()),
        }
        v
    }

    pub fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.tensor.numel()).sum()
    }

    /// Copies `src` (tensors in the order of `params`, e.g. the trainer's EMA) into this model's weights.
    pub fn copy_weights_from(&self, dev: &Device, src: &[Tensor]) -> Result<()> {
        for (p, s) in self.params().iter().zip(src) {
            layout::copy_into(dev, s, &p.tensor)?;
        }
        Ok(())
    }

    /// The prediction for x_t [B, sample_shape...] at the timesteps whose sinusoidal embedding is `tsin`
    /// [B, 64]. `cond`: class ids (u32 [B]) and a keep mask (f32 [B, 1]: 1 keeps the label, 0 takes the
    /// null class); required exactly when the model is class-conditional.
    pub fn forward(&self, g: &mut Graph, xt: NodeId, tsin: NodeId, cond: Option<(NodeId, NodeId)>) -> Result<NodeId> {
        let e = linear(g, tsin, &self.time1)?;
        let e = g.unary(Unary::Silu, e)?;
        let mut e = linear(g, e, &self.time2)?;
        match (&self.classes, cond) {
            (Some(table), Some((labels, keep))) => {
                let t = g.param(&table.tensor);
                let c = g.embedding(labels, t)?;
                let null = g.slice(t, 0, self.cfg.num_classes, 1)?;
                // null + keep·(c − null): the label's row where kept, the null row elsewhere.
                let d = g.sub(c, null)?;
                let d = g.mul(d, keep)?;
                let c = g.add(null, d)?;
                e = g.add(e, c)?;
            }
            (None, None) => {}
            _ => return Err(Error::invalid("diffusion", "labels are given exactly to a class-conditional model")),
        }
        match &self.net {
            Net::Mlp(m) => {
                let mut h = linear(g, xt, &m.input)?;
                for l in &m.hidden {
                    let w = g.param(&l[0].tensor);
                    let y = g.matmul(h, w, MatmulOpts::default())?;
                    let b = g.param(&l[1].tensor);
                    let y = g.add(y, b)?;
                    let y = g.add(y, e)?;
                    h = g.unary(Unary::Silu, y)?;
                }
                linear(g, h, &m.out)
            }
            Net::Unet(u) => u.forward(g, xt, e),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Training

/// How to train.
#[derive(Clone, Copy, Debug)]
pub struct TrainSettings {
    pub batch: usize,
    /// Peak learning rate (AdamW), after `warmup` steps, then a cosine decay to a tenth.
    pub lr: f32,
    pub warmup: u32,
    pub steps: u32,
    pub weight_decay: f32,
    pub clip: f32,
    /// Decay of the EMA of the weights that sampling uses.
    pub ema: f32,
    /// Probability of training a row with the null class (class-conditional models).
    pub p_uncond: f32,
    pub seed: u64,
}

impl TrainSettings {
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::invalid("diffusion train", m));
        if self.batch == 0 {
            return err(format!("--batch must be a positive integer, got {}", self.batch));
        }
        if self.steps == 0 {
            return err(format!("--steps must be a positive integer, got {}", self.steps));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return err(format!("--lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.ema) {
            return err(format!("--ema must be in [0, 1), got {}", self.ema));
        }
        if !(0.0..1.0).contains(&self.p_uncond) {
            return err(format!("--p-uncond must be in [0, 1), got {}", self.p_uncond));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({"batch": self.batch, "lr": self.lr, "warmup": self.warmup, "steps": self.steps,
               "weight_decay": self.weight_decay, "clip": self.clip, "ema": self.ema, "p_uncond": self.p_uncond,
               "seed": self.seed})
    }
}

/// Training data in model space: rows [N, sample_shape...] (already divided by `data_scale`), with labels
/// for a class-conditional model.
pub struct TrainData<'a> {
    pub rows: &'a [f32],
    pub labels: Option<&'a [u32]>,
}

/// A recorded training step that needs nothing from the host: the data set lives on the device; the
/// prologue picks B rows, draws each row's timestep and noise (q_sample) and, for a conditional model, the
/// label dropout, all from the step counter; then forward, MSE, backward, AdamW and the EMA update.
pub struct DiffusionTrainer {
    pub model: Diffusion,
    trainer: Trainer,
    pub start_step: u32,
    pub settings: TrainSettings,
    pub sched: ScheduleTensors,
}

impl DiffusionTrainer {
    pub fn new(
        dev: &Device,
        model: Diffusion,
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

        let mut g = Graph::new();
        let xt = g.input(&qs.xt);
        let ts = g.input(&tsin);
        let target = g.input(vt.as_ref().unwrap_or(&qs.eps));
        let cond = match &lab {
            Some(l) => {
                let ids = g.input(l);
                let un = g.input(&u);
                let keep = g.scalar(Binary::Greater, un, s.p_uncond, false)?;
                Some((ids, keep))
            }
            None => None,
        };
        let pred = model.forward(&mut g, xt, ts, cond)?;
        let loss = g.mse(pred, target)?;

        let total = start_step + s.steps;
        let warmup = if start_step == 0 { s.warmup.min(s.steps) } else { start_step };
        let tc = TrainConfig {
            optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: s.weight_decay },
            schedule: LrSchedule::Cosine { lr: s.lr, warmup, total, min_lr: s.lr * 0.1 },
            clip: (s.clip > 0.0).then_some(s.clip),
            ema: Some(s.ema),
        };
        // One seed per stream, so the rows, the noise and the label dropout never share random numbers.
        let (seed_rows, seed_q, seed_u) = (s.seed ^ 0x5EED_0001, s.seed ^ 0x5EED_0002, s.seed ^ 0x5EED_0003);
        let (sc, abar) = (step.clone(), sched.alpha_bar.clone());
        let trainer = Trainer::with_prologue(dev, g, loss, model.params(), tc, step, move || {
            sample::sample_rows_into(dev, &data_t, labels_t.as_ref(), seed_rows, &sc, &x0, lab.as_ref())?;
            diffusion::q_sample_into(dev, &x0, &abar, seed_q, &sc, &qs)?;
            let e = diffusion::timestep_embedding(dev, &qs.t, TIME_SIN_DIM, MAX_PERIOD)?;
            layout::copy_into(dev, &e, &tsin)?;
            if let Some(vt) = &vt {
                let v = diffusion::v_target(dev, &x0, &qs.eps, &qs.t, &abar)?;
                layout::copy_into(dev, &v, vt)?;
            }
            if lab.is_some() {
                rng::uniform_step_into(dev, &u, seed_u, rng::step_stride(b), 0.0, 1.0, &sc)?;
            }
            Ok(())
        })?;
        Ok(DiffusionTrainer { model, trainer, start_step, settings: s, sched })
    }

    pub fn step(&self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    /// The latest step's loss (asynchronous read).
    pub fn read_loss(&self, dev: &Device) -> Result<Download> {
        self.trainer.read_loss(dev)
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// A copy of the model holding the EMA weights, for sampling.
    pub fn ema_model(&self, dev: &Device) -> Result<Diffusion> {
        let m = Diffusion::new(dev, self.model.cfg.clone(), 0)?;
        m.copy_weights_from(dev, self.trainer.ema().expect("the trainer keeps an EMA"))?;
        Ok(m)
    }

    pub fn restore(&self, dev: &Device, ck: &Checkpoint) -> Result<()> {
        ck.expect_kind_for(KIND, "`tigel train diffusion --resume`")?;
        self.trainer.restore(dev, ck)
    }

    pub fn save(&self, dev: &Device, path: &std::path::Path, data: &str) -> Result<()> {
        let config = json!({"model": self.model.cfg.to_json(), "train": self.settings.to_json(), "data": data});
        self.trainer.save(dev, path, KIND, config, json!({"seed": self.settings.seed}))
    }
}

// ---------------------------------------------------------------------------------------------------
// Sampling

/// The reverse process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    /// Ancestral sampling through all T steps.
    Ddpm,
    /// Deterministic DDIM (eta 0) over `steps` timesteps spread evenly over 0..T.
    Ddim { steps: usize },
}

#[derive(Clone, Debug)]
pub struct SampleSettings {
    pub sampler: SamplerKind,
    /// Class to generate (class-conditional models); None: unconditional (the null class).
    pub label: Option<u32>,
    /// Classifier-free guidance weight w (1: the conditional prediction alone).
    pub guidance: f32,
    pub seed: u64,
    /// Clamp x̂_0 to [-clip, clip] in both reverse steps (images: 1, pixels live in [-1, 1]); 0: off.
    pub clip: f32,
    /// Reverse steps after which to keep a copy of x (in data units), e.g. for a trajectory strip.
    pub keep_at: Vec<usize>,
}

/// The DDIM timesteps for K steps out of T: K distinct values spread evenly over 0..T-1, descending.
pub fn ddim_timesteps(timesteps: usize, k: usize) -> Result<Vec<usize>> {
    if k == 0 || k > timesteps {
        return Err(Error::invalid(
            "--sample-steps",
            format!("{k} DDIM steps: must be between 1 and the model's {timesteps} timesteps"),
        ));
    }
    let mut ts: Vec<usize> = if k == 1 {
        vec![timesteps - 1]
    } else {
        (0..k).map(|i| ((i as f64 * (timesteps - 1) as f64 / (k - 1) as f64).round()) as usize).collect()
    };
    ts.dedup();
    ts.reverse();
    Ok(ts)
}

/// Runs a model's reverse process on batches of `n` samples: a planned forward pass per step, then one
/// reverse-step kernel. With guidance the batch is doubled (labelled and null halves in one pass).
pub struct Sampler<'a> {
    model: &'a Diffusion,
    sched: ScheduleTensors,
}

/// Samples (data units, [n, sample_shape...] row-major) and the copies asked for by `keep_at`.
pub struct Samples {
    pub x: Vec<f32>,
    pub kept: Vec<(usize, Vec<f32>)>,
}

impl<'a> Sampler<'a> {
    pub fn new(dev: &Device, model: &'a Diffusion) -> Result<Sampler<'a>> {
        let sched = diffusion::schedule(dev, model.cfg.schedule, model.cfg.timesteps)?;
        Ok(Sampler { model, sched })
    }

    /// Checks the label and guidance against the model.
    pub fn check(&self, s: &SampleSettings) -> Result<()> {
        let k = self.model.cfg.num_classes;
        if let Some(l) = s.label {
            if k == 0 {
                return Err(Error::invalid(
                    "--label",
                    "the model is not class-conditional (train it with --conditional)",
                ));
            }
            if l as usize >= k {
                return Err(Error::invalid("--label", format!("label {l} is out of range: the model has {k} classes")));
            }
        }
        if s.guidance != 1.0 && s.label.is_none() {
            return Err(Error::invalid(
                "--guidance",
                if k == 0 {
                    "guidance needs a class-conditional model (train it with --conditional) and a --label".to_string()
                } else {
                    "guidance needs a --label".to_string()
                },
            ));
        }
        if !s.guidance.is_finite() {
            return Err(Error::invalid("--guidance", format!("must be finite, got {}", s.guidance)));
        }
        if let SamplerKind::Ddim { steps } = s.sampler {
            ddim_timesteps(self.model.cfg.timesteps, steps)?;
        }
        Ok(())
    }

    /// `n` samples, drawn in batches of at most `batch`.
    pub fn sample(&self, dev: &Device, n: usize, batch: usize, s: &SampleSettings) -> Result<Samples> {
        self.check(s)?;
        if n == 0 || batch == 0 {
            return Err(Error::invalid("sample", format!("--n {n} and the batch {batch} must be positive")));
        }
        let mut out = Samples { x: Vec::new(), kept: s.keep_at.iter().map(|&k| (k, Vec::new())).collect() };
        let mut done = 0;
        while done < n {
            let m = batch.min(n - done);
            let seed = s.seed.wrapping_add((done as u64) << 32);
            let r = self.sample_batch(dev, m, &SampleSettings { seed, ..s.clone() })?;
            out.x.extend(r.x);
            for (dst, src) in out.kept.iter_mut().zip(r.kept) {
                dst.1.extend(src.1);
            }
            done += m;
        }
        Ok(out)
    }

    fn sample_batch(&self, dev: &Device, n: usize, s: &SampleSettings) -> Result<Samples> {
        let cfg = &self.model.cfg;
        let conditional = cfg.num_classes > 0;
        let guided = conditional && s.label.is_some() && s.guidance != 1.0;
        let m = if guided { 2 * n } else { n };
        let mut shape = vec![m];
        shape.extend(&cfg.sample_shape);
        let xin = Tensor::empty(dev, &shape, DType::F32)?;
        let tin = Tensor::empty(dev, &[m], DType::U32)?;
        let tsin = Tensor::empty(dev, &[m, TIME_SIN_DIM], DType::F32)?;
        let mut g = Graph::new();
        let xn = g.input(&xin);
        let tn = g.input(&tsin);
        let cond = if conditional {
            // Rows [0, n) carry the label (or the null class), rows [n, 2n) the null class.
            let label = s.label.unwrap_or(0);
            let keep1 = if s.label.is_some() { 1.0 } else { 0.0 };
            let keep: Vec<f32> = (0..m).map(|i| if i < n { keep1 } else { 0.0 }).collect();
            let ids = g.input(&Tensor::from_u32(dev, &[m], &vec![label; m])?);
            let kp = g.input(&Tensor::from_f32(dev, &[m, 1], &keep)?);
            Some((ids, kp))
        } else {
            None
        };
        let pred = self.model.forward(&mut g, xn, tn, cond)?;
        let plan = Plan::build(dev, &g, &[pred], |_| Ok(()))?;

        shape[0] = n;
        let len = n * cfg.sample_len();
        let stride = rng::step_stride(len);
        let mut x = rng::normal(dev, &shape, s.seed, 0, 0.0, 1.0)?;
        let t_n = Tensor::empty(dev, &[n], DType::U32)?;
        let steps: Vec<usize> = match s.sampler {
            SamplerKind::Ddpm => (0..cfg.timesteps).rev().collect(),
            SamplerKind::Ddim { steps } => ddim_timesteps(cfg.timesteps, steps)?,
        };
        let mut kept = Vec::new();
        for (i, &t) in steps.iter().enumerate() {
            dev.write(&tin.buf, &vec![t as u32; m])?;
            let e = diffusion::timestep_embedding(dev, &tin, TIME_SIN_DIM, MAX_PERIOD)?;
            layout::copy_into(dev, &e, &tsin)?;
            if guided {
                let both = layout::concat(dev, &[&x, &x], 0)?;
                layout::copy_into(dev, &both, &xin)?;
            } else {
                layout::copy_into(dev, &x, &xin)?;
            }
            plan.run(dev)?;
            let p = plan.value(pred);
            let mut eps = if guided {
                let c = layout::slice(dev, p, 0, 0, n)?;
                let u = layout::slice(dev, p, 0, n, n)?;
                let d = ew::sub(dev, &c, &u)?;
                let d = ew::scalar(dev, Binary::Mul, &d, s.guidance, false)?;
                ew::add(dev, &u, &d)?
            } else {
                layout::copy(dev, p)?
            };
            if cfg.prediction == Prediction::V {
                dev.write(&t_n.buf, &vec![t as u32; n])?;
                eps = diffusion::v_to_eps(dev, &eps, &x, &t_n, &self.sched.alpha_bar)?;
            }
            x = match s.sampler {
                SamplerKind::Ddpm => diffusion::ddpm_step_clipped(
                    dev,
                    &x,
                    &eps,
                    t,
                    &self.sched,
                    s.seed,
                    (i as u64 + 1) * stride,
                    s.clip,
                )?,
                SamplerKind::Ddim { .. } => {
                    diffusion::ddim_step_clipped(dev, &x, &eps, t, steps.get(i + 1).copied(), &self.sched, s.clip)?
                }
            };
            if s.keep_at.contains(&(i + 1)) {
                kept.push((i + 1, self.to_data(dev, &x)?));
            }
        }
        let kept = s
            .keep_at
            .iter()
            .map(|&k| (k, kept.iter().find(|(j, _)| *j == k).map(|v| v.1.clone()).unwrap_or_default()))
            .collect();
        Ok(Samples { x: self.to_data(dev, &x)?, kept })
    }

    fn to_data(&self, dev: &Device, x: &Tensor) -> Result<Vec<f32>> {
        let scale = self.model.cfg.data_scale;
        Ok(x.to_f32(dev)?.into_iter().map(|v| v * scale).collect())
    }

    pub fn schedule(&self) -> &ScheduleTensors {
        &self.sched
    }
}

/// The scale that gives a 2-D mixture about unit variance per coordinate: the RMS coordinate of its modes.
pub fn mixture_scale(modes: &[[f32; 2]]) -> f32 {
    let s: f64 = modes.iter().map(|m| (m[0] as f64).powi(2) + (m[1] as f64).powi(2)).sum::<f64>();
    ((s / (2 * modes.len()) as f64).sqrt() as f32).max(1e-3)
}
