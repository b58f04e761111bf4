//! `tigel train|sample|eval gan`: the GAN on a 2-D mixture or an image dataset from the command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tigel::checkpoint::{checkpoint_path, Checkpoint};
use tigel::data::images::{write_npy_f32, write_png_grid};
use tigel::data::mixture::Mixture;
use tigel::data::source::Source;
use tigel::models::gan::{
    check_data_fits, data_shape_of, evaluate, scatter_image, Gan, GanConfig, GanTrainer, Sampler, TrainData,
    TrainSettings, KIND,
};
use tigel::{Error, Result};

/// Defaults per kind of data (see docs/benchmarks.md for the measurements behind them).
struct Defaults {
    steps: u32,
    batch: usize,
    lr: f32,
    lr_end: f32,
    lr_hold: f32,
    z_dim: usize,
    width: usize,
    depth: usize,
    pack: usize,
    ema: f32,
    r1: f32,
    d_steps: u32,
    eval_every: u32,
}

const MIXTURE: Defaults = Defaults {
    steps: 15000,
    batch: 512,
    lr: 2e-3,
    lr_end: 1.0,
    lr_hold: 0.0,
    z_dim: 8,
    width: 128,
    depth: 3,
    pack: 4,
    ema: 0.9995,
    r1: 0.0,
    d_steps: 1,
    eval_every: 2500,
};
/// grid25's 25 tight modes (docs/benchmarks.md): a larger pack and batch for coverage, more steps, and a
/// decay of the rates over the last tenth for precision.
const GRID25: Defaults =
    Defaults { steps: 45000, batch: 1024, pack: 8, lr_end: 0.1, lr_hold: 0.9, eval_every: 5000, ..MIXTURE };
const IMAGES: Defaults = Defaults {
    steps: 6000,
    batch: 64,
    lr: 2e-4,
    lr_end: 1.0,
    lr_hold: 0.0,
    z_dim: 64,
    width: 32,
    depth: 1,
    pack: 1,
    ema: 0.0,
    r1: 0.0,
    d_steps: 1,
    eval_every: 1000,
};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// ring8, grid25, or an image file/folder (IDX, .npy, PNG folder); with --resume, default: the
    /// checkpoint's data.
    #[arg(long)]
    pub data: Option<String>,
    /// Steps (one D and one G update each) in this run.
    #[arg(long)]
    pub steps: Option<u32>,
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate of both Adam optimizers (β1 = 0.5).
    #[arg(long)]
    pub lr: Option<f32>,
    /// The learning rates decay linearly to this fraction of --lr at the last step (1: constant).
    /// A resumed run keeps the schedule of the run it continues.
    #[arg(long)]
    pub lr_end: Option<f32>,
    /// The fraction of the run before that decay begins (0: from the first step).
    #[arg(long)]
    pub lr_hold: Option<f32>,
    /// Noise dimension.
    #[arg(long)]
    pub z_dim: Option<usize>,
    /// MLP hidden width / DCGAN base channels.
    #[arg(long)]
    pub width: Option<usize>,
    /// MLP hidden layers.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Samples the discriminator judges together (2-D only).
    #[arg(long)]
    pub pack: Option<usize>,
    /// Decay of the moving average of G's weights used for sampling (0: off).
    #[arg(long)]
    pub ema: Option<f32>,
    /// R1 gradient penalty weight on real data (2-D only; 0: off).
    #[arg(long)]
    pub r1: Option<f32>,
    /// Discriminator updates per generator update.
    #[arg(long)]
    pub d_steps: Option<u32>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate, write a sample grid and save a checkpoint every N steps.
    #[arg(long)]
    pub eval_every: Option<u32>,
    /// Run directory (default: the first free runs/gan, runs/gan-2, ...).
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
    /// Run directory (or checkpoint file) of a trained GAN.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// FILE.png (an image grid, or a scatter plot of 2-D points) or FILE.npy (raw samples).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data to score against (default: the checkpoint's); images use their held-out last 10%.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn train(backend: Option<&str>, a: TrainArgs) -> Result<()> {
    let resume = a.resume.as_deref().map(Checkpoint::load).transpose()?;
    if let Some(ck) = &resume {
        ck.expect_kind_for(KIND, "`tigel train gan --resume`")?;
    }
    let spec = super::data_spec("train gan", a.data.as_deref(), resume.as_ref())?;
    let src = Source::open(&spec)?;
    let (shape, scale) = data_shape_of(&src);
    let d = match &src {
        _ if shape.len() == 3 => &IMAGES,
        Source::Mixture(Mixture::Grid25) => &GRID25,
        _ => &MIXTURE,
    };
    let (cfg, prev) = match &resume {
        Some(ck) => {
            let cfg = GanConfig::from_json(ck.config.get("model").unwrap_or(&serde_json::Value::Null))?;
            check_data_fits(&cfg, &src)?;
            for (flag, given, have) in [
                ("z-dim", a.z_dim, cfg.z_dim),
                ("width", a.width, cfg.width),
                ("depth", a.depth, cfg.depth),
                ("pack", a.pack, cfg.pack),
            ] {
                if given.is_some_and(|g| g != have) {
                    return Err(Error::invalid(
                        "train gan",
                        format!("--{flag} {} differs from the resumed model's {have}", given.unwrap()),
                    ));
                }
            }
            (cfg, ck.config.get("train").cloned())
        }
        None => (
            GanConfig {
                data_shape: shape,
                z_dim: a.z_dim.unwrap_or(d.z_dim),
                width: a.width.unwrap_or(d.width),
                depth: a.depth.unwrap_or(d.depth),
                pack: a.pack.unwrap_or(d.pack),
                scale,
            },
            None,
        ),
    };
    cfg.validate()?;
    // A resumed run keeps its batch, rates, EMA, penalty and seed unless told otherwise.
    let pf = |k: &str| prev.as_ref().and_then(|p| p.get(k)).and_then(|v| v.as_f64());
    let lr = a.lr.unwrap_or(pf("lr_g").map_or(d.lr, |v| v as f32));
    let settings = TrainSettings {
        batch: a.batch.unwrap_or(pf("batch").map_or(d.batch, |v| v as usize)),
        steps: a.steps.unwrap_or(d.steps),
        lr_d: lr,
        lr_g: lr,
        lr_end: a.lr_end.unwrap_or(pf("lr_end").map_or(d.lr_end, |v| v as f32)),
        lr_hold: a.lr_hold.unwrap_or(pf("lr_hold").map_or(d.lr_hold, |v| v as f32)),
        horizon: pf("horizon").map_or(a.steps.unwrap_or(d.steps), |v| v as u32),
        ema: a.ema.unwrap_or(pf("ema").map_or(d.ema, |v| v as f32)),
        r1: a.r1.unwrap_or(pf("r1").map_or(d.r1, |v| v as f32)),
        d_steps: a.d_steps.unwrap_or(pf("d_steps").map_or(d.d_steps, |v| v as u32)),
        seed: if resume.is_some() && a.seed == 1 { pf("seed").map_or(a.seed, |v| v as u64) } else { a.seed },
    };
    settings.validate(&cfg)?;
    let eval_every = a.eval_every.unwrap_or(d.eval_every);
    if eval_every == 0 {
        return Err(Error::invalid("train gan", "--eval-every must be a positive integer"));
    }
    let dir = super::run_dir("train gan", "gan", a.out.as_deref(), a.resume.as_deref())?;

    let dev = super::device(backend)?;
    let start_step = resume.as_ref().map_or(0, |ck| ck.step as u32);
    let model = Gan::new(&dev, cfg.clone(), settings.seed)?;
    let data = TrainData::from_source(&src, cfg.scale);
    let t = GanTrainer::new(&dev, model, &data, settings, start_step)?;
    if let Some(ck) = &resume {
        t.restore(&dev, ck)?;
    }
    let sampler = Sampler::new(&dev, &cfg, &t.sampling_generator()?, 500)?;
    std::fs::create_dir_all(&dir).map_err(|e| super::io_err(&dir, e))?;
    let config = json!({"model": cfg.to_json(), "train": settings.to_json(), "data": spec,
                        "resumed_from": a.resume, "start_step": start_step});
    super::write_atomic(&dir.join("config.json"), &(serde_json::to_string_pretty(&config).unwrap() + "\n"))?;
    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| super::io_err(&metrics_path, e))?;
    let params = |n: &tigel::models::gan::Net| n.params().iter().map(|p| p.tensor.numel()).sum::<usize>();
    eprintln!(
        "gan ({}): G {} parameters, D {}, z {}; {}",
        if cfg.is_image() { "DCGAN" } else { "MLP" },
        params(&t.model.g),
        params(&t.model.d),
        cfg.z_dim,
        src.describe()
    );
    eprintln!("writing {}", dir.display());

    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(settings.steps as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} < {eta_precise}  {msg}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let mut side = 0.0f64;
    let (mut loss_d, mut loss_g) = (f64::NAN, f64::NAN);
    let mut pending = None;
    let mut last = None;
    let eval_n = if cfg.is_image() { 500 } else { 2000 };
    for i in 1..=settings.steps {
        t.step(&dev)?;
        if i % 10 == 0 || i == settings.steps {
            if let Some((dd, dg)) = pending.take() {
                (loss_d, loss_g) = (super::loss_of(dd)?, super::loss_of(dg)?);
            }
            pending = Some(t.read_losses(&dev)?);
            bar.set_position(i as u64);
            bar.set_message(format!("D {loss_d:.3}  G {loss_g:.3}"));
        }
        if i % eval_every == 0 || i == settings.steps {
            if let Some((dd, dg)) = pending.take() {
                (loss_d, loss_g) = (super::loss_of(dd)?, super::loss_of(dg)?);
            }
            let side_start = Instant::now();
            let step = start_step + i;
            let samples = sampler.sample(&dev, eval_n, 0)?;
            if cfg.is_image() {
                let [c, h, w] = [cfg.data_shape[0], cfg.data_shape[1], cfg.data_shape[2]];
                write_png_grid(
                    &dir.join(format!("samples-{step:06}.png")),
                    &samples[..64 * c * h * w],
                    64,
                    c,
                    h,
                    w,
                    8,
                )?;
            }
            let scores = evaluate(&samples, &src)?;
            let mut line = json!({"step": step, "loss_d": loss_d, "loss_g": loss_g,
                                  "elapsed_s": started.elapsed().as_secs_f64()});
            line.as_object_mut().unwrap().extend(scores.to_json().as_object().unwrap().clone());
            writeln!(metrics, "{line}").map_err(|e| super::io_err(&metrics_path, e))?;
            bar.println(format!("step {step}: D {loss_d:.3}, G {loss_g:.3}; {}", scores.line()));
            t.save(&dev, &checkpoint_path(&dir), &spec)?;
            last = Some(scores);
            side += side_start.elapsed().as_secs_f64();
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let train_s = (elapsed - side).max(1e-9);
    eprintln!(
        "done: {} steps in {elapsed:.0} s ({train_s:.0} s training, {:.1} steps/s); checkpoint {}",
        settings.steps,
        settings.steps as f64 / train_s,
        checkpoint_path(&dir).display()
    );
    if a.json {
        let mut v = json!({"steps": start_step + settings.steps, "loss_d": loss_d, "loss_g": loss_g,
                           "elapsed_s": elapsed, "train_s": train_s, "steps_per_s": settings.steps as f64 / train_s,
                           "backend": dev.backend_name(), "out": dir});
        if let Some(s) = last {
            v.as_object_mut().unwrap().extend(s.to_json().as_object().unwrap().clone());
        }
        println!("{v}");
    }
    Ok(())
}

pub fn sample(backend: Option<&str>, a: SampleArgs) -> Result<()> {
    if a.n == 0 {
        return Err(Error::invalid("sample gan", "--n must be a positive integer, got 0"));
    }
    let ext = a.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("png" | "npy")) {
        return Err(Error::invalid("sample gan", format!("--out {}: give a .png or .npy file", a.out.display())));
    }
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel sample gan`")?;
    let dev = super::device(backend)?;
    let model = Gan::load(&dev, &ck, "`tigel sample gan`", true)?;
    let cfg = &model.cfg;
    let samples = Sampler::new(&dev, cfg, &model.g, a.n.min(500))?.sample(&dev, a.n, a.seed)?;
    let mut shape = vec![a.n];
    shape.extend(&cfg.data_shape);
    if ext.as_deref() == Some("npy") {
        write_npy_f32(&a.out, &samples, &shape)?;
    } else if cfg.is_image() {
        let [c, h, w] = [cfg.data_shape[0], cfg.data_shape[1], cfg.data_shape[2]];
        let cols = (a.n as f64).sqrt().ceil() as usize;
        write_png_grid(&a.out, &samples, a.n, c, h, w, cols)?;
    } else {
        let side = 512;
        write_png_grid(&a.out, &scatter_image(&samples, 1.25 * cfg.scale, side), 1, 1, side, side, 1)?;
    }
    let _ = writeln!(std::io::stderr(), "wrote {} samples to {}", a.n, a.out.display());
    Ok(())
}

pub fn eval(backend: Option<&str>, a: EvalArgs) -> Result<()> {
    if a.n == 0 {
        return Err(Error::invalid("eval gan", "--n must be a positive integer, got 0"));
    }
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel eval gan`")?;
    let spec = super::data_spec("eval gan", a.data.as_deref(), Some(&ck))?;
    let src = Source::open(&spec)?;
    let dev = super::device(backend)?;
    let model = Gan::load(&dev, &ck, "`tigel eval gan`", true)?;
    check_data_fits(&model.cfg, &src)?;
    let started = Instant::now();
    let samples = Sampler::new(&dev, &model.cfg, &model.g, a.n.min(500))?.sample(&dev, a.n, a.seed)?;
    let scores = evaluate(&samples, &src)?;
    if a.json {
        let mut v = json!({"data": spec, "n": a.n, "step": ck.step, "backend": dev.backend_name(),
                           "seconds": started.elapsed().as_secs_f64()});
        v.as_object_mut().unwrap().extend(scores.to_json().as_object().unwrap().clone());
        println!("{v}");
    } else {
        println!("{spec}: {}", scores.line());
    }
    Ok(())
}
