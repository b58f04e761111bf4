//! `tigel train|sample|eval diffusion`: denoising diffusion on 2-D mixtures (an MLP denoiser) or images
//! (a UNet) from the command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tigel::checkpoint::{checkpoint_path, Checkpoint};
use tigel::data::images::{write_npy_f32, write_png_grid, ImageSet};
use tigel::data::mixture::Mixture;
use tigel::data::source::Source;
use tigel::models::ddpm::{
    mixture_scale, parse_schedule, Arch, Diffusion, DiffusionConfig, DiffusionTrainer, Prediction, SampleSettings,
    Sampler, SamplerKind, TrainData, TrainSettings, KIND,
};
use tigel::models::unet::UnetConfig;
use tigel::{Device, Error, Result};

/// Defaults per kind of data (docs/benchmarks.md has the measurements behind them).
struct Defaults {
    steps: u32,
    batch: usize,
    lr: f32,
    schedule: &'static str,
    timesteps: usize,
    prediction: &'static str,
}

const MIXTURE: Defaults =
    Defaults { steps: 15000, batch: 256, lr: 2e-3, schedule: "cosine", timesteps: 1000, prediction: "eps" };
/// grid25's 25 tight modes need more steps: at 15,000 its log-density gap is 0.50 nats, at 25,000 0.20.
const GRID25: Defaults = Defaults { steps: 25000, ..MIXTURE };
/// The measured Fashion-MNIST run (docs/benchmarks.md): about 20 minutes on a shared 2-core CPU. Images
/// predict v: an ε-predicting UNet's x̂_0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ multiplies its error by up to 1/√ᾱ_T (10⁴
/// for the cosine schedule), which left deterministic DDIM samples blotchy; v keeps x̂_0 bounded.
const IMAGES: Defaults =
    Defaults { steps: 3500, batch: 32, lr: 1.5e-3, schedule: "cosine", timesteps: 500, prediction: "v" };
/// UNet channels at the first level for images (0.22 M parameters with mults 1,2,2).
const IMAGE_BASE: usize = 16;
/// Points the mixture's training set holds (generated once, uploaded once).
const MIXTURE_POINTS: usize = 100_000;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// ring8, grid25, or an image dataset (IDX file, .npy, folder of PNGs); the last 10% of images is held out.
    /// With --resume, default: the checkpoint's data.
    #[arg(long)]
    pub data: Option<String>,
    /// Optimizer steps in this run (default: 15000 for ring8, 25000 for grid25, 3500 for images).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Noise schedule: linear or cosine (default: cosine).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Diffusion timesteps T (default: 1000 for mixtures, 500 for images).
    #[arg(long)]
    pub timesteps: Option<usize>,
    /// What the network predicts: eps (the noise) or v (default: eps for mixtures, v for images).
    #[arg(long)]
    pub prediction: Option<String>,
    /// Samples per step (default: 256 for mixtures, 32 for images).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate (AdamW, warmup then cosine decay to a tenth).
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = 100)]
    pub warmup: u32,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Decay of the EMA of the weights used for sampling.
    #[arg(long, default_value_t = 0.999)]
    pub ema: f32,
    /// MLP denoiser (mixtures): hidden width and layers.
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    /// UNet (images): channels of the first level (default 16), multipliers per level (default 1,2,2),
    /// attention at the lowest level.
    #[arg(long)]
    pub base: Option<usize>,
    #[arg(long, value_delimiter = ',')]
    pub mults: Option<Vec<usize>>,
    #[arg(long)]
    pub no_attention: bool,
    /// Train a class-conditional model (for classifier-free guidance) on the dataset's labels.
    #[arg(long)]
    pub conditional: bool,
    /// Probability of dropping a label to the null class during training.
    #[arg(long, default_value_t = 0.1)]
    pub p_uncond: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Log the loss and save a checkpoint every N steps.
    #[arg(long, default_value_t = 500)]
    pub save_every: u32,
    /// Run directory for checkpoint.safetensors, config.json, metrics.jsonl (default: the first free
    /// runs/diffusion, runs/diffusion-2, ...).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue training the checkpoint in this run directory.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// End with one JSON line of results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Run directory (or checkpoint file) of a trained diffusion model.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// ddpm (ancestral, all T steps) or ddim (deterministic, --sample-steps steps).
    #[arg(long, default_value = "ddpm")]
    pub sampler: String,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub sample_steps: usize,
    /// Class to generate (class-conditional models).
    #[arg(long)]
    pub label: Option<u32>,
    /// Classifier-free guidance weight (needs --label and a class-conditional model).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Write x_t at a few steps of the reverse process instead of the final samples only.
    #[arg(long)]
    pub trajectory: bool,
    /// One row of --n samples for each class label, in label order (class-conditional image models).
    #[arg(long)]
    pub per_class: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// FILE.png (an image grid, or a scatter plot for 2-D data) or FILE.npy.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The data to compare with (default: the data the checkpoint was trained on); images are compared
    /// with the held-out last 10%.
    #[arg(long)]
    pub data: Option<String>,
    /// Samples to generate (default: 2000 for mixtures, 500 for images).
    #[arg(long)]
    pub n: Option<usize>,
    #[arg(long, default_value = "ddpm")]
    pub sampler: String,
    #[arg(long, default_value_t = 50)]
    pub sample_steps: usize,
    /// Guidance weight for a class-conditional model (samples are spread evenly over the classes).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
}

fn parse_sampler(name: &str, steps: usize) -> Result<SamplerKind> {
    match name {
        "ddpm" => Ok(SamplerKind::Ddpm),
        "ddim" => Ok(SamplerKind::Ddim { steps }),
        _ => Err(Error::invalid("--sampler", format!("`{name}`: choose ddpm or ddim"))),
    }
}

pub fn train(backend: Option<&str>, a: TrainArgs) -> Result<()> {
    let resume = a.resume.as_deref().map(Checkpoint::load).transpose()?;
    if let Some(ck) = &resume {
        ck.expect_kind_for(KIND, "`tigel train diffusion --resume`")?;
    }
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
    if a.save_every == 0 {
        return Err(Error::invalid("train diffusion", "--save-every must be positive"));
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
    let dir = super::run_dir("train diffusion", "diffusion", a.out.as_deref(), a.resume.as_deref())?;

    let dev = super::device(backend)?;
    let start_step = resume.as_ref().map_or(0, |ck| ck.step as u32);
    let model = Diffusion::new(&dev, cfg.clone(), a.seed)?;
    let params = model.param_count();
    let t =
        DiffusionTrainer::new(&dev, model, TrainData { rows: &rows, labels: labels.as_deref() }, settings, start_step)?;
    if let Some(ck) = &resume {
        t.restore(&dev, ck)?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| super::io_err(&dir, e))?;
    let config = json!({"model": cfg.to_json(), "train": settings.to_json(), "data": data,
                        "resumed_from": a.resume, "start_step": start_step});
    super::write_atomic(&dir.join("config.json"), &(serde_json::to_string_pretty(&config).unwrap() + "\n"))?;
    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| super::io_err(&metrics_path, e))?;
    eprintln!(
        "diffusion: {:?}, {:.2} M parameters, T = {} ({}), predicting {}; data {}",
        cfg.arch,
        params as f64 / 1e6,
        cfg.timesteps,
        tigel::models::ddpm::schedule_name(cfg.schedule),
        cfg.prediction.name(),
        source.describe()
    );
    eprintln!("writing {}", dir.display());

    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(settings.steps as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} < {eta_precise}  {msg}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let mut pending = None;
    let mut loss = f64::NAN;
    // Mean of the logged losses since the last save: one step's loss is noisy (its timesteps are random).
    let (mut acc, mut cnt) = (0.0f64, 0usize);
    let mut first_window = f64::NAN;
    let log_every = 10u32;
    for i in 1..=settings.steps {
        t.step(&dev)?;
        if i % log_every == 0 || i == settings.steps {
            if let Some(dl) = pending.take() {
                loss = super::loss_of(dl)?;
                acc += loss;
                cnt += 1;
            }
            pending = Some(t.read_loss(&dev)?);
            bar.set_position(i as u64);
            bar.set_message(format!("loss {loss:.4}"));
        }
        if i % a.save_every == 0 || i == settings.steps {
            if let Some(dl) = pending.take() {
                loss = super::loss_of(dl)?;
                acc += loss;
                cnt += 1;
            }
            let mean = acc / cnt.max(1) as f64;
            if first_window.is_nan() {
                first_window = mean;
            }
            let step = start_step + i;
            let line =
                json!({"step": step, "loss": loss, "mean_loss": mean, "elapsed_s": started.elapsed().as_secs_f64()});
            writeln!(metrics, "{line}").map_err(|e| super::io_err(&metrics_path, e))?;
            bar.println(format!("step {step}: loss {mean:.4} (mean since the last save)"));
            t.save(&dev, &checkpoint_path(&dir), &data)?;
            if i == settings.steps {
                loss = mean;
            }
            (acc, cnt) = (0.0, 0);
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "done: {} steps in {elapsed:.0} s ({:.1} steps/s); checkpoint {}",
        settings.steps,
        settings.steps as f64 / elapsed,
        checkpoint_path(&dir).display()
    );
    if a.json {
        let v = json!({"steps": start_step + settings.steps, "loss": loss, "first_loss": first_window,
                       "elapsed_s": elapsed, "steps_per_s": settings.steps as f64 / elapsed, "params": params,
                       "backend": dev.backend_name(), "device": dev.name(), "out": dir});
        println!("{v}");
    }
    Ok(())
}

/// Frames of a trajectory: after these reverse steps (of `total`).
fn trajectory_frames(total: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (1..=8).map(|k| (k * total).div_ceil(8).max(1)).collect();
    v.dedup();
    v
}

pub fn sample(backend: Option<&str>, a: SampleArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel sample diffusion`")?;
    let ext = a.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let png = match ext.as_deref() {
        Some("png") => true,
        Some("npy") => false,
        _ => return Err(Error::invalid("--out", format!("{}: name a .png or .npy file", a.out.display()))),
    };
    let dev = super::device(backend)?;
    let model = Diffusion::load(&dev, &ck, "`tigel sample diffusion`")?;
    let cfg = model.cfg.clone();
    let sampler = Sampler::new(&dev, &model)?;
    let kind = parse_sampler(&a.sampler, a.sample_steps)?;
    let total = match kind {
        SamplerKind::Ddpm => cfg.timesteps,
        SamplerKind::Ddim { steps } => steps,
    };
    let frames = if a.trajectory { trajectory_frames(total) } else { vec![] };
    let s = SampleSettings {
        sampler: kind,
        label: a.label,
        guidance: a.guidance.unwrap_or(1.0),
        seed: a.seed,
        clip: if cfg.sample_shape.len() == 3 { 1.0 } else { 0.0 },
        keep_at: frames.clone(),
    };
    if a.guidance.is_some() && cfg.num_classes == 0 {
        return Err(Error::invalid(
            "--guidance",
            "the checkpoint is not label-conditioned (train it with --conditional on data with labels)",
        ));
    }
    if a.per_class {
        let why = if cfg.num_classes == 0 {
            Some("the checkpoint is not label-conditioned (train it with --conditional on data with labels)")
        } else if cfg.sample_shape.len() != 3 {
            Some("rows per class are for image models")
        } else if a.label.is_some() || a.trajectory {
            Some("draws every label itself: drop --label and --trajectory")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::invalid("--per-class", why));
        }
    }
    // Per class, the settings are checked as for label 0: every label drawn is in range by construction.
    sampler.check(&SampleSettings { label: if a.per_class { Some(0) } else { s.label }, ..s.clone() })?;
    let started = Instant::now();
    let (out, rows) = if a.per_class {
        // Class k's row uses seed + k: each row is what `--label k --seed (seed + k)` draws.
        let mut x = Vec::new();
        for k in 0..cfg.num_classes {
            let sk = SampleSettings { label: Some(k as u32), seed: a.seed.wrapping_add(k as u64), ..s.clone() };
            x.extend(sampler.sample(&dev, a.n, a.batch, &sk)?.x);
        }
        (tigel::models::ddpm::Samples { x, kept: vec![] }, cfg.num_classes)
    } else {
        (sampler.sample(&dev, a.n, a.batch, &s)?, 1)
    };
    let d = cfg.sample_len();
    let n = a.n * rows;
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| super::io_err(parent, e))?;
    }
    if cfg.sample_shape.len() == 3 {
        let (c, h, w) = (cfg.sample_shape[0], cfg.sample_shape[1], cfg.sample_shape[2]);
        if a.trajectory {
            // Rows: up to 8 samples; columns: x_t after each kept step, the last the final sample.
            let rows = n.min(8);
            let mut pix = Vec::with_capacity(rows * frames.len() * d);
            for r in 0..rows {
                for (_, f) in &out.kept {
                    pix.extend_from_slice(&f[r * d..(r + 1) * d]);
                }
            }
            let shape = [rows * frames.len(), c, h, w];
            if png {
                write_png_grid(&a.out, &pix, shape[0], c, h, w, frames.len())?;
            } else {
                write_npy_f32(&a.out, &pix, &[rows, frames.len(), c, h, w])?;
            }
        } else if a.per_class {
            if png {
                write_png_grid(&a.out, &out.x, n, c, h, w, a.n)?;
            } else {
                write_npy_f32(&a.out, &out.x, &[rows, a.n, c, h, w])?;
            }
        } else if png {
            let cols = (n as f64).sqrt().ceil() as usize;
            write_png_grid(&a.out, &out.x, n, c, h, w, cols)?;
        } else {
            write_npy_f32(&a.out, &out.x, &[n, c, h, w])?;
        }
    } else {
        let extent = 3.0 * cfg.data_scale;
        let sets: Vec<&[f32]> =
            if a.trajectory { out.kept.iter().map(|(_, f)| &f[..]).collect() } else { vec![&out.x[..]] };
        if png {
            let size = 256;
            let mut pix = Vec::new();
            for set in &sets {
                pix.extend(scatter(set, size, extent));
            }
            write_png_grid(&a.out, &pix, sets.len(), 1, size, size, sets.len())?;
        } else if a.trajectory {
            let all: Vec<f32> = sets.iter().flat_map(|s| s.iter().copied()).collect();
            write_npy_f32(&a.out, &all, &[sets.len(), n, d])?;
        } else {
            write_npy_f32(&a.out, &out.x, &[n, d])?;
        }
    }
    eprintln!("{n} samples in {:.1} s, written to {}", started.elapsed().as_secs_f64(), a.out.display());
    Ok(())
}

/// A 2-D scatter plot: white background, each point a dark pixel, axes [-extent, extent]; values in [-1, 1].
fn scatter(points: &[f32], size: usize, extent: f32) -> Vec<f32> {
    let mut img = vec![1.0f32; size * size];
    // Faint axes through the origin, for scale.
    for i in 0..size {
        img[size / 2 * size + i] = 0.7;
        img[i * size + size / 2] = 0.7;
    }
    for p in points.chunks_exact(2) {
        let px = ((p[0] / extent + 1.0) * 0.5 * size as f32) as isize;
        let py = ((1.0 - (p[1] / extent + 1.0) * 0.5) * size as f32) as isize;
        if (0..size as isize).contains(&px) && (0..size as isize).contains(&py) {
            img[py as usize * size + px as usize] = -1.0;
        }
    }
    img
}

/// Scores a trained model: mixture metrics for 2-D data, MMD² and precision/recall (k = 3) against the
/// held-out images for images.
pub fn eval(backend: Option<&str>, a: EvalArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel eval diffusion`")?;
    let spec = super::data_spec("eval diffusion", a.data.as_deref(), Some(&ck))?;
    let source = Source::open(&spec)?;
    let dev = super::device(backend)?;
    let model = Diffusion::load(&dev, &ck, "`tigel eval diffusion`")?;
    let cfg = model.cfg.clone();
    let sampler = Sampler::new(&dev, &model)?;
    let kind = parse_sampler(&a.sampler, a.sample_steps)?;
    let started = Instant::now();
    let v = match &source {
        Source::Mixture(mix) => {
            if cfg.sample_shape != [2] {
                return Err(Error::invalid("eval diffusion", "the model does not generate 2-D points"));
            }
            let n = a.n.unwrap_or(2000);
            let s =
                SampleSettings { sampler: kind, label: None, guidance: 1.0, seed: a.seed, clip: 0.0, keep_at: vec![] };
            let x = sampler.sample(&dev, n, a.batch.max(n), &s)?.x;
            mixture_json(&x, *mix, a.seed)?
        }
        Source::Images { held, .. } => {
            if cfg.sample_shape != [held.c, held.h, held.w] {
                return Err(Error::invalid(
                    "eval diffusion",
                    format!("the model generates {:?}, the data are {}", cfg.sample_shape, source.describe()),
                ));
            }
            let n = a.n.unwrap_or(500);
            let x = sample_images(&dev, &sampler, &cfg, n, kind, a.guidance, a.seed, a.batch)?;
            image_json(&x, held, n)?
        }
    };
    let mut v = v;
    v["sampler"] = json!(a.sampler);
    v["sample_steps"] = json!(match kind {
        SamplerKind::Ddpm => cfg.timesteps,
        SamplerKind::Ddim { steps } => steps,
    });
    v["step"] = json!(ck.step);
    v["data"] = json!(spec);
    v["seconds"] = json!(started.elapsed().as_secs_f64());
    v["backend"] = json!(dev.backend_name());
    if a.json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    }
    Ok(())
}

/// Mixture metrics of generated points, beside the same metrics of as many true samples.
pub fn mixture_json(x: &[f32], mix: Mixture, seed: u64) -> Result<serde_json::Value> {
    let m = tigel::metrics::mixture_metrics(x, mix)?;
    let real = tigel::metrics::mixture_metrics(&mix.sample(x.len() / 2, seed ^ 0xEA1, 1 << 40), mix)?;
    Ok(json!({"n": x.len() / 2, "modes_covered": m.modes_covered, "num_modes": m.num_modes,
              "high_quality": m.high_quality, "reverse_kl": m.reverse_kl,
              "mean_log_density": m.mean_log_density, "real_mean_log_density": real.mean_log_density,
              "log_density_gap": real.mean_log_density - m.mean_log_density, "mode_counts": m.mode_counts}))
}

/// `n` generated images, spread evenly over the classes of a class-conditional model.
#[allow(clippy::too_many_arguments)]
pub fn sample_images(
    dev: &Device,
    sampler: &Sampler,
    cfg: &DiffusionConfig,
    n: usize,
    kind: SamplerKind,
    guidance: f32,
    seed: u64,
    batch: usize,
) -> Result<Vec<f32>> {
    let base = SampleSettings { sampler: kind, label: None, guidance: 1.0, seed, clip: 1.0, keep_at: vec![] };
    if cfg.num_classes == 0 {
        return Ok(sampler.sample(dev, n, batch, &base)?.x);
    }
    let k = cfg.num_classes;
    let mut x = Vec::new();
    for c in 0..k {
        let m = n / k + usize::from(c < n % k);
        if m == 0 {
            continue;
        }
        let s = SampleSettings { label: Some(c as u32), guidance, seed: seed ^ ((c as u64 + 1) << 48), ..base.clone() };
        x.extend(sampler.sample(dev, m, batch, &s)?.x);
    }
    Ok(x)
}

/// MMD² and precision/recall (k = 3) of generated images against the first `n` held-out ones.
pub fn image_json(x: &[f32], held: &ImageSet, n: usize) -> Result<serde_json::Value> {
    let d = held.image_len();
    let m = n.min(held.n);
    let real = &held.pixels[..m * d];
    let mmd = tigel::metrics::mmd2(real, x, d)?;
    let (precision, recall) = tigel::metrics::precision_recall_k(real, x, d, 3)?;
    Ok(json!({"n": x.len() / d, "held_out": m, "mmd2": mmd, "precision": precision, "recall": recall}))
}
