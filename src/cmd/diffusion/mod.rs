//! `tigel train|sample|eval diffusion`: denoising diffusion on 2-D mixtures (an MLP denoiser) or images
//! (a UNet) from the command line.

mod args;
mod eval;
mod sample;

use tigel::data::mixture::Mixture;
use tigel::data::source::Source;
use tigel::models::ddpm::{
    mixture_scale, parse_schedule, Arch, Diffusion, DiffusionConfig, DiffusionTrainer, Prediction, SamplerKind,
    TrainData, TrainSettings, KIND,
};
use tigel::models::unet::UnetConfig;
use tigel::run::{self, diffusion::DiffusionRun, Cadence, RunDir};
use tigel::{Error, Result};

pub use args::*;
pub use eval::eval;
pub use sample::sample;

/// The reverse process `--sampler` names, with `--sample-steps` for DDIM.
fn parse_sampler(name: &str, steps: usize) -> Result<SamplerKind> {
    match name {
        "ddpm" => Ok(SamplerKind::Ddpm),
        "ddim" => Ok(SamplerKind::Ddim { steps }),
        _ => Err(Error::invalid("--sampler", format!("`{name}`: choose ddpm or ddim"))),
    }
}

/// `tigel train diffusion`: builds the denoiser and its trainer from the arguments (or the resumed
/// checkpoint) and runs the library's training loop.
pub fn train(backend: Option<&str>, a: TrainArgs) -> Result<()> {
    let resume = run::resume_checkpoint(a.resume.as_deref(), KIND, "`tigel train diffusion --resume`")?;
    let data = super::data_spec("train diffusion", a.data.as_deref(), resume.as_ref())?;
    let source = Source::open(&data)?;
    let d = match source {
        Source::Mixture(Mixture::Grid25) => GRID25,
        Source::Mixture(_) => MIXTURE,
        Source::Images { .. } => IMAGES,
    };
    let cfg = match &resume {
        Some(ck) => DiffusionConfig::from_json(ck.config.get("model").unwrap_or(&serde_json::Value::Null))?,
        None => {
            let schedule = parse_schedule(a.schedule.as_deref().unwrap_or(d.schedule))?;
            let timesteps = a.timesteps.unwrap_or(d.timesteps);
            let prediction = Prediction::parse(a.prediction.as_deref().unwrap_or(d.prediction))?;
            match &source {
                Source::Mixture(m) => {
                    if a.conditional {
                        return Err(Error::invalid("--conditional", format!("{} has no labels", m.name())));
                    }
                    let hidden = a.hidden.unwrap_or(256);
                    DiffusionConfig {
                        arch: Arch::Mlp { hidden, layers: a.layers.unwrap_or(3) },
                        sample_shape: vec![2],
                        timesteps,
                        schedule,
                        prediction,
                        num_classes: 0,
                        emb: hidden,
                        data_scale: mixture_scale(&m.modes()),
                    }
                }
                Source::Images { train, .. } => {
                    if a.conditional && train.labels.is_none() {
                        return Err(Error::invalid(
                            "--conditional",
                            format!("`{data}` has no labels (IDX label file or labels .npy beside it)"),
                        ));
                    }
                    let base = a.base.unwrap_or(IMAGE_BASE);
                    DiffusionConfig {
                        arch: Arch::Unet(UnetConfig {
                            base,
                            mults: a.mults.clone().unwrap_or(vec![1, 2, 2]),
                            attention: !a.no_attention,
                        }),
                        sample_shape: vec![train.c, train.h, train.w],
                        timesteps,
                        schedule,
                        prediction,
                        num_classes: if a.conditional { train.num_classes } else { 0 },
                        emb: 4 * base,
                        data_scale: 1.0,
                    }
                }
            }
        }
    };
    cfg.validate()?;
    let settings = TrainSettings {
        batch: a.batch.unwrap_or(d.batch),
        lr: a.lr.unwrap_or(d.lr),
        warmup: a.warmup,
        steps: a.steps.unwrap_or(d.steps),
        weight_decay: a.weight_decay,
        clip: a.clip,
        ema: a.ema,
        p_uncond: a.p_uncond,
        seed: a.seed,
    };
    settings.validate()?;
    if a.eval_every == 0 {
        return Err(Error::invalid("train diffusion", "--eval-every must be positive"));
    }
    let (rows, labels): (Vec<f32>, Option<Vec<u32>>) = match &source {
        Source::Mixture(m) => {
            if cfg.sample_shape != [2] {
                return Err(Error::invalid("train diffusion", "the resumed model was not trained on 2-D points"));
            }
            let s = cfg.data_scale;
            (m.sample(MIXTURE_POINTS, a.seed, 0).into_iter().map(|v| v / s).collect(), None)
        }
        Source::Images { train, .. } => {
            if cfg.sample_shape != [train.c, train.h, train.w] {
                return Err(Error::invalid(
                    "train diffusion",
                    format!("the model takes {:?} samples, the data are {}", cfg.sample_shape, source.describe()),
                ));
            }
            let labels = if cfg.num_classes > 0 { train.labels.clone() } else { None };
            (train.pixels.clone(), labels)
        }
    };
    let dir = RunDir::choose("train diffusion", "diffusion", a.out.as_deref(), a.resume.as_deref())?;

    let dev = super::device(backend)?;
    let start_step = resume.as_ref().map_or(0, |ck| ck.step as u32);
    let model = Diffusion::new(&dev, cfg.clone(), a.seed)?;
    let t =
        DiffusionTrainer::new(&dev, model, TrainData { rows: &rows, labels: labels.as_deref() }, settings, start_step)?;
    if let Some(ck) = &resume {
        t.restore(&dev, ck)?;
    }
    let mut diffusion = DiffusionRun::new(t, &data, dir.path());
    eprintln!("{}", diffusion.describe(&source.describe()));
    eprintln!("writing {}", dir.path().display());
    let cadence = Cadence { steps: settings.steps, eval_every: a.eval_every, log_every: a.log_every, start_step };
    let mut bar = super::progress::Bar::new(settings.steps, a.json);
    let outcome = run::train(&dev, &mut diffusion, &dir, cadence, a.resume.as_deref(), &mut bar)?;
    eprintln!("{}", outcome.done);
    if a.json {
        println!("{}", outcome.summary);
    }
    Ok(())
}
