//! One training session of the page: a regime's trainer on a device, stepped and read asynchronously;
//! its state as a checkpoint (the same file `tigel train` writes), and a session made from one.

use serde_json::{json, Value};
use tigel::checkpoint::{Checkpoint, HostTensor};
use tigel::data::mixture::Mixture;
use tigel::data::rows::{data_shape_of, TrainData as GanData, MIXTURE_POINTS};
use tigel::data::source::Source;
use tigel::device::Download;
use tigel::diffusion::Prediction;
use tigel::models::ddpm::{self, mixture_scale, Arch, Diffusion, DiffusionConfig, DiffusionTrainer};
use tigel::models::gan::{self, Gan, GanConfig, GanTrainer};
use tigel::models::gpt::{self, Gpt, GptConfig, GptTrainer};
use tigel::models::unet::UnetConfig;
use tigel::tensor::DType;
use tigel::{Device, Error, Result, Tensor};

use crate::data::{shapes, Data, CLASSES};

/// The page's GPT: small enough that a software adapter trains it at a few steps per second.
pub const GPT: GptConfig = GptConfig {
    layers: 2,
    heads: 4,
    width: 64,
    context: 64,
    dropout: 0.0,
    rope: false,
    qk_norm: false,
    gated_mlp: false,
    mlp_hidden: 0,
    untied: false,
};

/// How the page trains the GPT for `steps` steps from `seed`.
pub fn gpt_settings(steps: u32, seed: u64) -> gpt::TrainSettings {
    gpt::TrainSettings {
        batch: 8,
        lr: 3e-3,
        min_lr_frac: 0.1,
        warmup: steps.min(10),
        steps,
        weight_decay: 0.1,
        clip: 1.0,
        seed,
        precision: Default::default(),
    }
}

/// The page's built-in text: the WGSL of every kernel tigel ships (about 100 KB). Fixed by the shaders
/// alone, unlike `Corpus::embedded` (every source and doc), so a native build and a browser build of
/// one commit train on the same bytes even when docs differ between the two builds.
pub fn corpus() -> Result<tigel::data::text::Corpus> {
    let text: String = tigel::kernels::SHADERS.iter().map(|s| s.source).collect::<Vec<_>>().join("\n");
    tigel::data::text::Corpus::from_bytes(CORPUS.into(), text.into_bytes())
}

/// The name the GPT's checkpoints give its data.
pub const CORPUS: &str = "tigel's kernels (WGSL)";

/// The page's GAN for `data`.
pub fn gan_config(data: Data) -> GanConfig {
    match data {
        Data::Ring8 => {
            let (shape, scale) = data_shape_of(&Source::Mixture(Mixture::Ring8));
            GanConfig { data_shape: shape, z_dim: 8, width: 64, depth: 2, pack: 4, scale }
        }
        Data::Shapes => GanConfig { data_shape: vec![1, 8, 8], z_dim: 32, width: 32, depth: 1, pack: 1, scale: 1.0 },
    }
}

/// How the page trains its GAN (the rates of `tigel train gan`'s defaults for points and for 8×8 images).
pub fn gan_settings(data: Data, steps: u32, seed: u64) -> gan::TrainSettings {
    let (batch, lr, d_steps) = if data == Data::Ring8 { (128, 2e-3, 1) } else { (32, 5e-4, 2) };
    gan::TrainSettings {
        batch,
        steps,
        lr_d: lr,
        lr_g: lr,
        lr_end: 1.0,
        horizon: steps,
        lr_hold: 0.0,
        ema: 0.999,
        r1: 0.0,
        d_steps,
        seed,
    }
}

/// The page's diffusion model for `data` (class-conditional on the shapes).
pub fn diffusion_config(data: Data) -> DiffusionConfig {
    let common = |arch, sample_shape, timesteps, prediction, num_classes, emb, data_scale| DiffusionConfig {
        arch,
        sample_shape,
        timesteps,
        schedule: tigel::diffusion::parse_schedule("cosine").expect("a schedule tigel has"),
        prediction,
        num_classes,
        emb,
        data_scale,
    };
    match data {
        Data::Ring8 => common(
            Arch::Mlp { hidden: 64, layers: 2 },
            vec![2],
            1000,
            Prediction::Eps,
            0,
            64,
            mixture_scale(&Mixture::Ring8.modes()),
        ),
        Data::Shapes => common(
            Arch::Unet(UnetConfig { base: 8, mults: vec![1, 2], attention: false }),
            vec![1, 8, 8],
            500,
            Prediction::V,
            CLASSES,
            32,
            1.0,
        ),
    }
}

/// How the page trains its diffusion model.
pub fn diffusion_settings(data: Data, steps: u32, seed: u64) -> ddpm::TrainSettings {
    let (batch, lr) = if data == Data::Ring8 { (128, 2e-3) } else { (32, 1.5e-3) };
    ddpm::TrainSettings { batch, lr, warmup: 0, steps, weight_decay: 0.0, clip: 1.0, ema: 0.999, p_uncond: 0.1, seed }
}

/// A regime's trainer.
pub enum Model {
    /// The GPT on `corpus()`.
    Gpt(Box<GptTrainer>),
    /// The GAN.
    Gan(Box<GanTrainer>),
    /// The diffusion model.
    Diffusion(Box<DiffusionTrainer>),
}

/// A regime training on a device.
pub struct Session {
    /// The trainer.
    pub model: Model,
    /// What a GAN or diffusion model trains on (ring8 for the GPT, which ignores it).
    pub data: Data,
    /// Optimizer steps done (a loaded checkpoint's steps included).
    pub step: u32,
}

impl Session {
    /// A new model of `regime` (`gpt`, `gan`, `diffusion`) on `data`, with a schedule of `steps` steps.
    pub fn new(dev: &Device, regime: &str, data: Data, steps: u32, seed: u64) -> Result<Session> {
        let model = match regime {
            "gpt" => Model::Gpt(Box::new(gpt_trainer(dev, GPT, gpt_settings(steps, seed), 0, seed)?)),
            "gan" => {
                Model::Gan(Box::new(gan_trainer(dev, data, gan_config(data), gan_settings(data, steps, seed), 0)?))
            }
            "diffusion" => Model::Diffusion(Box::new(diffusion_trainer(
                dev,
                data,
                diffusion_config(data),
                diffusion_settings(data, steps, seed),
                0,
            )?)),
            _ => {
                return Err(Error::invalid("run", format!("regime `{regime}`: the page trains gpt, gan and diffusion")))
            }
        };
        Ok(Session { model, data, step: 0 })
    }

    /// The session a checkpoint of `tigel train` (or of the page) holds, ready to train on.
    pub fn from_checkpoint(dev: &Device, ck: &Checkpoint) -> Result<Session> {
        let part = |k: &str| ck.config.get(k).cloned().unwrap_or(Value::Null);
        let bad = |what: &str, e: serde_json::Error| Error::invalid("checkpoint", format!("bad {what} config: {e}"));
        let start = u32::try_from(ck.step).map_err(|_| Error::invalid("checkpoint", "step over 32 bits"))?;
        let data = match ck.kind.as_str() {
            gpt::KIND => Data::Ring8,
            _ => Data::parse(part("data").as_str().unwrap_or(""))
                .map_err(|e| Error::invalid("checkpoint", format!("{e}; the page trains on its own data only")))?,
        };
        let model = match ck.kind.as_str() {
            gpt::KIND => {
                let cfg = GptConfig::from_json(&part("model"))?;
                let s: gpt::TrainSettings = serde_json::from_value(part("train")).map_err(|e| bad("train", e))?;
                // The schedule of the run that saved it goes on (its total is start + steps).
                let s = gpt::TrainSettings { steps: s.steps.saturating_sub(start).max(1), ..s };
                let t = gpt_trainer(dev, cfg, s, start, s.seed)?;
                t.restore(dev, ck)?;
                Model::Gpt(Box::new(t))
            }
            gan::KIND => {
                let cfg = GanConfig::from_json(&part("model"))?;
                let s: gan::TrainSettings = serde_json::from_value(part("train")).map_err(|e| bad("train", e))?;
                let t = gan_trainer(dev, data, cfg, s, start)?;
                t.restore(dev, ck)?;
                Model::Gan(Box::new(t))
            }
            ddpm::KIND => {
                let cfg = DiffusionConfig::from_json(&part("model"))?;
                let s: ddpm::TrainSettings = serde_json::from_value(part("train")).map_err(|e| bad("train", e))?;
                let s = ddpm::TrainSettings { steps: s.steps.saturating_sub(start).max(1), ..s };
                let t = diffusion_trainer(dev, data, cfg, s, start)?;
                t.restore(dev, ck)?;
                Model::Diffusion(Box::new(t))
            }
            k => {
                return Err(Error::invalid(
                    "checkpoint",
                    format!("a `{k}` model: the page trains gpt, gan and diffusion"),
                ))
            }
        };
        Ok(Session { model, data, step: start })
    }

    /// `gpt`, `gan` or `diffusion`.
    pub fn regime(&self) -> &'static str {
        match self.model {
            Model::Gpt(_) => "gpt",
            Model::Gan(_) => "gan",
            Model::Diffusion(_) => "diffusion",
        }
    }

    /// What each step's losses are.
    pub fn loss_names(&self) -> &'static [&'static str] {
        match self.model {
            Model::Gpt(_) => &["loss"],
            Model::Gan(_) => &["D", "G"],
            Model::Diffusion(_) => &["loss"],
        }
    }

    /// One training step (submitted, not waited for).
    pub fn step(&mut self, dev: &Device) -> Result<()> {
        match &self.model {
            Model::Gpt(t) => t.step(dev)?,
            Model::Gan(t) => t.step(dev)?,
            Model::Diffusion(t) => t.step(dev)?,
        }
        self.step += 1;
        Ok(())
    }

    /// Starts reading the last step's losses (`loss_names`); `wait_losses` awaits them.
    pub fn read_losses(&self, dev: &Device) -> Result<Vec<Download>> {
        Ok(match &self.model {
            Model::Gpt(t) => vec![t.read_loss(dev)?],
            Model::Gan(t) => {
                let (d, g) = t.read_losses(dev)?;
                vec![d, g]
            }
            Model::Diffusion(t) => vec![t.read_loss(dev)?],
        })
    }

    /// The last step's losses (`loss_names`), read asynchronously.
    pub async fn losses(&self, dev: &Device) -> Result<Vec<f32>> {
        wait_losses(self.read_losses(dev)?).await
    }

    /// A one-line description: the regime, its data and its parameter count.
    pub fn describe(&self) -> String {
        let count = |ps: &[tigel::nn::Param]| ps.iter().map(|p| p.tensor.numel()).sum::<usize>();
        match &self.model {
            Model::Gpt(t) => format!("GPT, {} parameters, on {CORPUS}", count(t.trainer().params())),
            Model::Gan(t) => format!(
                "GAN on {}, G {} parameters, D {}",
                self.data.name(),
                count(t.g_trainer().params()),
                count(t.d_trainer().params())
            ),
            Model::Diffusion(t) => {
                format!("diffusion on {}, {} parameters", self.data.name(), count(t.trainer().params()))
            }
        }
    }

    /// Everything `tigel train` saves for this model, read asynchronously: the same checkpoint, which
    /// `tigel sample` and `tigel train --resume` load.
    pub async fn checkpoint(&self, dev: &Device) -> Result<Checkpoint> {
        let (ck, state) = self.checkpoint_parts();
        fill_checkpoint(dev, ck, state).await
    }

    /// The checkpoint without its tensors, and the device tensors it holds (`fill_checkpoint` reads them).
    pub fn checkpoint_parts(&self) -> (Checkpoint, Vec<(String, Tensor)>) {
        let (kind, mut config, state, seed) = match &self.model {
            Model::Gpt(t) => {
                let c = tigel::models::run_config(t.model.cfg.to_json(), t.settings.to_json(), CORPUS);
                (gpt::KIND, c, t.trainer().state(), t.settings.seed)
            }
            Model::Gan(t) => {
                let mut c = tigel::models::run_config(t.model.cfg.to_json(), t.settings.to_json(), self.data.name());
                c["image_shape"] = if t.model.cfg.is_image() { json!(t.model.cfg.data_shape) } else { Value::Null };
                (gan::KIND, c, t.state(), t.settings.seed)
            }
            Model::Diffusion(t) => {
                let c = tigel::models::run_config(t.model.cfg.to_json(), t.settings.to_json(), self.data.name());
                (ddpm::KIND, c, t.trainer().state(), t.settings.seed)
            }
        };
        if let Some(r) = self.x0_range() {
            config["x0_range"] = json!(r);
        }
        let mut ck = Checkpoint::new(kind, config);
        ck.step = self.step as u64;
        ck.rng = json!({ "seed": seed });
        (ck, state)
    }

    /// A diffusion model's clamp range of points (what its checkpoint records).
    fn x0_range(&self) -> Option<f32> {
        match &self.model {
            Model::Diffusion(t) if t.model.cfg.sample_shape.len() == 1 => t.model.x0_range,
            _ => None,
        }
    }
}

/// Awaits the losses `Session::read_losses` started.
pub async fn wait_losses(reads: Vec<Download>) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(reads.len());
    for r in reads {
        out.push(r.f32_async().await?);
    }
    Ok(out)
}

/// `ck` with `state`'s tensors read into it asynchronously; refuses a non-finite value, as `tigel train`'s
/// save does.
pub async fn fill_checkpoint(dev: &Device, mut ck: Checkpoint, state: Vec<(String, Tensor)>) -> Result<Checkpoint> {
    for (name, t) in state {
        let mut data = dev.read_u32_async(&t.buf).await?;
        data.truncate(t.numel());
        if t.dtype == DType::F32 && data.iter().any(|w| !f32::from_bits(*w).is_finite()) {
            return Err(Error::invalid("save", format!("tensor `{name}` holds a non-finite value")));
        }
        ck.tensors.insert(name, HostTensor { shape: t.shape.clone(), dtype: t.dtype, data });
    }
    Ok(ck)
}

fn gpt_trainer(dev: &Device, cfg: GptConfig, s: gpt::TrainSettings, start: u32, seed: u64) -> Result<GptTrainer> {
    let model = Gpt::new(dev, cfg, seed)?;
    GptTrainer::new(dev, model, &corpus()?, s, start)
}

fn gan_trainer(dev: &Device, data: Data, cfg: GanConfig, s: gan::TrainSettings, start: u32) -> Result<GanTrainer> {
    let rows = match data {
        Data::Ring8 => GanData::from_source(&Source::Mixture(Mixture::Ring8), cfg.scale),
        Data::Shapes => {
            let set = shapes();
            GanData { shape: vec![set.n, set.c, set.h, set.w], rows: set.pixels }
        }
    };
    let model = Gan::new(dev, cfg, s.seed)?;
    GanTrainer::new(dev, model, &rows, s, start)
}

fn diffusion_trainer(
    dev: &Device,
    data: Data,
    cfg: DiffusionConfig,
    s: ddpm::TrainSettings,
    start: u32,
) -> Result<DiffusionTrainer> {
    let (rows, labels) = match data {
        // As `tigel train diffusion` draws them.
        Data::Ring8 => {
            let k = cfg.data_scale;
            (Mixture::Ring8.sample(MIXTURE_POINTS, s.seed, 0).into_iter().map(|v| v / k).collect(), None)
        }
        Data::Shapes => {
            let set = shapes();
            (set.pixels, if cfg.num_classes > 0 { set.labels } else { None })
        }
    };
    let model = Diffusion::new(dev, cfg, s.seed)?;
    DiffusionTrainer::new(dev, model, ddpm::TrainData { rows: &rows, labels: labels.as_deref() }, s, start)
}
