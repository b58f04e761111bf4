//! `tigel train|sample|eval diffusion`: denoising diffusion on 2-D mixtures (an MLP denoiser) or images
//! (a UNet) from the command line.

mod args;
mod eval;
mod sample;

use tigel::data::mixture::Mixture;
use tigel::data::source::Source;
use tigel::models::ddpm::{
    mixture_scale, parse_schedule, schedule_name, Arch, Diffusion, DiffusionConfig, DiffusionTrainer, Prediction,
    SamplerKind, TrainData, TrainSettings, KIND,
};
use tigel::models::unet::UnetConfig;
use tigel::run::{self, diffusion::DiffusionRun, Cadence, RunDir};
use tigel::{Error, Result};

pub use args::*;
pub use eval::eval;
pub use sample::sample;

/// The reverse process `--sampler` names, with `--sample-steps` and `--order` for DDIM (refused with
/// DDPM, which runs all T steps of its own kind).
fn parse_sampler(name: &str, steps: Option<usize>, order: Option<usize>) -> Result<SamplerKind> {
    match name {
        "ddpm" => {
            if let Some(k) = steps {
                return Err(Error::invalid(
                    "--sample-steps",
                    format!("{k}: DDPM runs all the model's timesteps; use --sampler ddim for fewer steps"),
                ));
            }
            if order.is_some() {
                return Err(Error::invalid("--order", "is DDIM's (--sampler ddim); DDPM has no order to choose"));
            }
            Ok(SamplerKind::Ddpm)
        }
        "ddim" => {
            let order = order.unwrap_or(2);
            if !(1..=2).contains(&order) {
                return Err(Error::invalid("--order", format!("DDIM's order is 1 or 2, got {order}")));
            }
            Ok(SamplerKind::Ddim { steps: steps.unwrap_or(DEFAULT_DDIM_STEPS), order })
        }
        _ => Err(Error::invalid("--sampler", format!("`{name}`: choose ddpm or ddim"))),
    }
}

/// Refuses model flags that conflict with the resumed model (its architecture and process are the
/// checkpoint's; only training settings may change on resume).
fn check_resumed_model(a: &TrainArgs, cfg: &DiffusionConfig) -> Result<()> {
    let (mlp, unet) = match &cfg.arch {
        Arch::Mlp { hidden, layers } => (Some((*hidden, *layers)), None),
        Arch::Unet(u) => (None, Some(u)),
    };
    let none = |what: &str| format!("none: it is {what}");
    let mlp_field = |f: fn((usize, usize)) -> usize| mlp.map_or(none("a UNet"), |m| f(m).to_string());
    let mults = unet.map_or(none("an MLP"), |u| u.mults.iter().map(usize::to_string).collect::<Vec<_>>().join(","));
    let given_mults = a.mults.as_ref().map(|m| m.iter().map(usize::to_string).collect::<Vec<_>>().join(","));
    let attention = unet.map_or(none("an MLP"), |u| if u.attention { "attention on" } else { "attention off" }.into());
    super::check_resumed(
        "train diffusion",
        &[
            ("schedule", a.schedule.clone(), schedule_name(cfg.schedule).to_string()),
            ("timesteps", super::given(a.timesteps), cfg.timesteps.to_string()),
            ("prediction", a.prediction.clone(), cfg.prediction.name().to_string()),
            ("hidden", super::given(a.hidden), mlp_field(|m| m.0)),
            ("layers", super::given(a.layers), mlp_field(|m| m.1)),
            ("base", super::given(a.base), unet.map_or(none("an MLP"), |u| u.base.to_string())),
            ("mults", given_mults, mults),
            ("no-attention", (a.no_attention && unet.is_none_or(|u| u.attention)).then(String::new), attention),
            (
                "conditional",
                (a.conditional && cfg.num_classes == 0).then(String::new),
                "it was trained unconditionally".into(),
            ),
        ],
    )
}

/// `tigel train diffusion`: builds the denoiser and its trainer from the arguments (or the resumed
/// checkpoint) and runs the library's training loop.
pub fn train(backend: Option<&str>, a: TrainArgs) -> Result<()> {
    super::signal::install();
    let resume = run::resume_checkpoint(a.resume.as_deref(), KIND, "`tigel train diffusion --resume`")?
        .map(|c| a.resume_schedule.prepare(c));
    let data = super::data_spec("train diffusion", a.data.as_deref(), resume.as_ref())?;
    let source = Source::open_in(&data, a.range)?;
    let d = match &source {
        Source::Mixture(Mixture::Grid25) => GRID25,
        Source::Mixture(_) => MIXTURE,
        Source::Images { train, .. } => image_defaults(train.h, train.w, train.n),
    };
    let cfg = match &resume {
        Some(ck) => {
            let cfg = DiffusionConfig::from_json(ck.config.get("model").unwrap_or(&serde_json::Value::Null))?;
            check_resumed_model(&a, &cfg)?;
            cfg
        }
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
                    let fitted = UnetConfig::for_image(train.h, train.w);
                    let base = a.base.unwrap_or(fitted.base);
                    DiffusionConfig {
                        arch: Arch::Unet(UnetConfig {
                            base,
                            mults: a.mults.clone().unwrap_or(fitted.mults),
                            attention: fitted.attention && !a.no_attention,
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
    let start_step = super::start_step("train diffusion", resume.as_ref(), settings.steps)?;
    let what = || format!("--batch {} of {:?} samples", settings.batch, cfg.sample_shape);
    let widest = cfg.sample_len().max(cfg.emb);
    tigel::models::check_values("train diffusion", what, tigel::models::product(&[settings.batch, widest]))?;
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
    let into = a.resume.as_deref().filter(|_| a.resume_schedule.continues());
    let dir = RunDir::choose("train diffusion", "diffusion", a.out.as_deref(), into)?.with_keep(a.keep);

    let dev = super::device(backend)?;
    let model = Diffusion::new(&dev, cfg.clone(), a.seed)?;
    let t =
        DiffusionTrainer::new(&dev, model, TrainData { rows: &rows, labels: labels.as_deref() }, settings, start_step)?;
    if let Some(ck) = &resume {
        t.restore(&dev, ck)?;
    }
    let mut diffusion = DiffusionRun::new(t, &data, dir.path());
    let cadence = Cadence { steps: settings.steps, eval_every: a.eval_every, log_every: a.log_every, start_step };
    if super::dist::follow(&dev, &mut diffusion, &dir, cadence, a.resume.as_deref())? {
        return Ok(());
    }
    eprintln!("{}", diffusion.describe(&source.describe()));
    eprintln!("writing {}", dir.path().display());
    let mut bar = super::progress::Bar::new(settings.steps, a.json);
    let outcome =
        run::train(&dev, &mut diffusion, &dir, cadence, a.resume.as_deref(), &mut super::dist::agreed(&mut bar))?;
    eprintln!("{}", outcome.done);
    super::dist::done();
    super::signal::exit_if_interrupted(&outcome, &dir.checkpoint());
    if a.json {
        println!("{}", outcome.summary);
    }
    Ok(())
}
