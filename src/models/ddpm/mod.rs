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
//! Beside the model: `train` (`DiffusionTrainer`, a step that draws its batch, timesteps and noise on the
//! device); the noise schedules and the DDPM / DDIM samplers live in `crate::diffusion` (re-exported here).

mod train;

pub use train::{DiffusionTrainer, TrainData, TrainSettings};
// The process and its samplers live in `crate::diffusion`; re-exported so `models::ddpm::X` keeps working.
pub use crate::diffusion::{
    ddim_timesteps, parse_schedule, schedule_name, Prediction, SampleSettings, Sampler, SamplerKind, Samples,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::unet::{Unet, UnetConfig};
use crate::checkpoint::Checkpoint;
use crate::device::Device;
use crate::diffusion::{Denoiser, Process, TIME_SIN_DIM};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Activation, Embedding, Init, Linear, Param};
use crate::ops::diffusion::{self, Schedule};
use crate::ops::layout;
use crate::ops::rng::RngState;
use crate::tensor::Tensor;

/// Checkpoint kind of this model.
pub const KIND: &str = "diffusion";

/// The denoising network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "ArchJson", from = "ArchJson")]
pub enum Arch {
    /// The MLP for points: `layers` hidden layers of width `hidden` (= the embedding width).
    Mlp {
        /// Hidden width.
        hidden: usize,
        /// Hidden layers.
        layers: usize,
    },
    /// The UNet for images.
    Unet(UnetConfig),
}

/// `Arch` as configs store it: `{"kind": "mlp", "hidden", "layers"}` or `{"kind": "unet", "unet": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ArchJson {
    Mlp { hidden: usize, layers: usize },
    Unet { unet: UnetConfig },
}

impl From<Arch> for ArchJson {
    fn from(a: Arch) -> ArchJson {
        match a {
            Arch::Mlp { hidden, layers } => ArchJson::Mlp { hidden, layers },
            Arch::Unet(unet) => ArchJson::Unet { unet },
        }
    }
}

impl From<ArchJson> for Arch {
    fn from(a: ArchJson) -> Arch {
        match a {
            ArchJson::Mlp { hidden, layers } => Arch::Mlp { hidden, layers },
            ArchJson::Unet { unet } => Arch::Unet(unet),
        }
    }
}

/// The shape of the model and of its diffusion process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffusionConfig {
    /// The denoising network.
    pub arch: Arch,
    /// One sample: [D] for points, [C, H, W] for images.
    pub sample_shape: Vec<usize>,
    /// Timesteps T.
    pub timesteps: usize,
    /// The noise schedule, stored by name.
    #[serde(with = "crate::diffusion::schedule::by_name")]
    pub schedule: Schedule,
    /// What the network predicts.
    pub prediction: Prediction,
    /// Classes of the label conditioning (0: unconditional); the table holds one more, the null class.
    pub num_classes: usize,
    /// Width of the conditioning embedding e.
    pub emb: usize,
    /// Data are divided by it on the way in (and multiplied on the way out), so the model sees unit scale.
    pub data_scale: f32,
}

impl DiffusionConfig {
    /// Timesteps within the kernels' range, positive sizes, and an architecture that fits the samples.
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
        // Checked before anything is built: the MLP's weights, the label table, one sample.
        let what = || format!("--hidden / embedding width {} with {:?}", self.emb, self.arch);
        let layers = match self.arch {
            Arch::Mlp { layers, .. } => layers,
            Arch::Unet(_) => 1,
        };
        crate::models::check_values("diffusion config", what, crate::models::product(&[self.emb, self.emb, layers]))?;
        let what = || format!("{} classes of a {}-wide label embedding", self.num_classes, self.emb);
        crate::models::check_values(
            "diffusion config",
            what,
            crate::models::product(&[self.num_classes.saturating_add(1), self.emb]),
        )?;
        let what = || format!("samples of shape {:?}", self.sample_shape);
        crate::models::check_values("diffusion config", what, crate::models::product(&self.sample_shape))?;
        Ok(())
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The config as checkpoints store it.
    pub fn to_json(&self) -> Value {
        crate::models::config_json(self)
    }

    /// The config a checkpoint stores, validated.
    pub fn from_json(v: &Value) -> Result<DiffusionConfig> {
        let cfg: DiffusionConfig = crate::models::config_from_json("diffusion config", v)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The MLP denoiser: h = x·W_in + b_in, then per layer h = SiLU(h·W + b + e), then ε̂ = h·W_out + b_out.
pub struct MlpNet {
    input: Linear,
    hidden: Vec<Linear>,
    out: Linear,
}

impl MlpNet {
    fn new(dev: &Device, rng: &mut RngState, d: usize, hidden: usize, layers: usize) -> Result<MlpNet> {
        Ok(MlpNet {
            input: linear(dev, rng, "mlp.in", d, hidden)?,
            hidden: (0..layers)
                .map(|i| linear(dev, rng, &format!("mlp.h.{i}"), hidden, hidden))
                .collect::<Result<_>>()?,
            out: linear(dev, rng, "mlp.out", hidden, d)?,
        })
    }

    fn params(&self) -> Vec<Param> {
        let mut v = self.input.params();
        for l in &self.hidden {
            v.extend(l.params());
        }
        v.extend(self.out.params());
        v
    }

    fn forward(&self, g: &mut Graph, x: NodeId, e: NodeId) -> Result<NodeId> {
        let mut h = self.input.forward(g, x)?;
        for l in &self.hidden {
            let y = l.forward(g, h)?;
            let y = g.add(y, e)?;
            h = Activation::Silu.forward(g, y)?;
        }
        self.out.forward(g, h)
    }
}

/// A linear map named `{name}.w` [i, o] (std 1/√i) with a zero bias `{name}.b`.
fn linear(dev: &Device, rng: &mut RngState, name: &str, i: usize, o: usize) -> Result<Linear> {
    Linear::named(dev, rng, format!("{name}.w"), Some(format!("{name}.b")), [i, o], Init::lecun(i))
}

// One per model, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Net {
    Mlp(MlpNet),
    Unet(Unet),
}

/// The diffusion model: time (and class) embedding and the denoiser.
pub struct Diffusion {
    /// Its shape and process.
    pub cfg: DiffusionConfig,
    time1: Linear,
    time2: Linear,
    /// [K + 1, E]; row K is the null class.
    classes: Option<Embedding>,
    net: Net,
    /// The data's extent per coordinate in model units: sampling clamps x̂_0 to [-r, r], which keeps every
    /// sample within it (images: 1; points: the training rows' largest |value|; None: not known).
    pub x0_range: Option<f32>,
}

impl Diffusion {
    /// A fresh model, its weights from the Philox stream of `seed`.
    pub fn new(dev: &Device, cfg: DiffusionConfig, seed: u64) -> Result<Diffusion> {
        cfg.validate()?;
        let rng = &mut RngState::new(seed);
        let e = cfg.emb;
        let time1 = linear(dev, rng, "time.0", TIME_SIN_DIM, e)?;
        let time2 = linear(dev, rng, "time.1", e, e)?;
        let classes = if cfg.num_classes > 0 {
            Some(Embedding::new(dev, rng, "classes", cfg.num_classes + 1, e, Init::Normal(1.0))?)
        } else {
            None
        };
        let net = match &cfg.arch {
            Arch::Mlp { hidden, layers } => Net::Mlp(MlpNet::new(dev, rng, cfg.sample_shape[0], *hidden, *layers)?),
            Arch::Unet(u) => Net::Unet(Unet::new(dev, rng, u.clone(), cfg.sample_shape[0], e)?),
        };
        let x0_range = (cfg.sample_shape.len() == 3).then_some(1.0);
        Ok(Diffusion { cfg, time1, time2, classes, net, x0_range })
    }
    /// The model a checkpoint holds, with its EMA weights when it has them (they sample better).
    pub fn load(dev: &Device, ck: &Checkpoint, needed_by: &str) -> Result<Diffusion> {
        ck.expect_kind_for(KIND, needed_by)?;
        let src = ck.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into());
        let cfg = DiffusionConfig::from_json(ck.config.get("model").unwrap_or(&Value::Null))
            .map_err(|e| Error::Checkpoint { path: src.clone(), msg: format!("bad model config: {e}") })?;
        let mut m = Diffusion::new(dev, cfg, 0)?;
        m.x0_range = stored_x0_range(&ck.config, &m.cfg).or(m.x0_range);
        let params = m.params();
        let ck = ck.with_named_ema("", &params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        for p in &params {
            let ema = crate::checkpoint::ema_name(&p.name);
            let name = if ck.tensors.contains_key(&ema) { ema } else { p.name.clone() };
            ck.restore_into(dev, &name, &p.tensor)?;
        }
        Ok(m)
    }

    /// Every parameter, named as in checkpoints.
    pub fn params(&self) -> Vec<Param> {
        let mut v = self.time1.params();
        v.extend(self.time2.params());
        v.extend(self.classes.iter().flat_map(|c| c.params()));
        match &self.net {
            Net::Mlp(m) => v.extend(m.params()),
            Net::Unet(u) => v.extend(u.params()),
        }
        v
    }

    /// Number of trainable values.
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
        let e = self.time1.forward_act(g, tsin, Some(Activation::Silu))?;
        let mut e = self.time2.forward(g, e)?;
        match (&self.classes, cond) {
            (Some(table), Some((labels, keep))) => {
                let c = table.forward(g, labels)?;
                let t = g.param(&table.table.tensor);
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
            Net::Mlp(m) => m.forward(g, xt, e),
            Net::Unet(u) => u.forward(g, xt, e),
        }
    }
}

impl Denoiser for Diffusion {
    fn process(&self) -> Process<'_> {
        let c = &self.cfg;
        Process {
            sample_shape: &c.sample_shape,
            timesteps: c.timesteps,
            schedule: c.schedule,
            prediction: c.prediction,
            num_classes: c.num_classes,
            data_scale: c.data_scale,
            x0_clip: self.x0_range.unwrap_or(0.0),
        }
    }

    fn forward(&self, g: &mut Graph, xt: NodeId, tsin: NodeId, cond: Option<(NodeId, NodeId)>) -> Result<NodeId> {
        Diffusion::forward(self, g, xt, tsin, cond)
    }
}

/// The x̂_0 range a checkpoint's config records (`x0_range`, written since it was added) or, for a 2-D model
/// trained on a named mixture before that, the mixture's extent (its farthest mode coordinate plus 5σ) in
/// model units.
fn stored_x0_range(config: &Value, cfg: &DiffusionConfig) -> Option<f32> {
    if let Some(r) = config.get("x0_range").and_then(Value::as_f64).filter(|r| r.is_finite() && *r > 0.0) {
        return Some(r as f32);
    }
    let mix = crate::data::mixture::Mixture::parse(config.get("data")?.as_str()?).ok()?;
    (cfg.sample_shape == [2]).then(|| mixture_extent(&mix.modes(), mix.std()) / cfg.data_scale)
}

/// The largest |coordinate| a 2-D mixture's samples reach in practice: its farthest mode coordinate + 5σ.
pub fn mixture_extent(modes: &[[f32; 2]], std: f32) -> f32 {
    modes.iter().flat_map(|m| [m[0].abs(), m[1].abs()]).fold(0.0, f32::max) + 5.0 * std
}

/// The scale that gives a 2-D mixture about unit variance per coordinate: the RMS coordinate of its modes.
pub fn mixture_scale(modes: &[[f32; 2]]) -> f32 {
    let s: f64 = modes.iter().map(|m| (m[0] as f64).powi(2) + (m[1] as f64).powi(2)).sum::<f64>();
    ((s / (2 * modes.len()) as f64).sqrt() as f32).max(1e-3)
}
