//! `tigel train|sample|eval gan`: the GAN on a 2-D mixture or an image dataset from the command line.

mod args;

use std::io::Write as _;
use std::time::Instant;

use serde_json::json;
use tigel::checkpoint::Checkpoint;
use tigel::data::images::write_npy_f32;
use tigel::data::mixture::Mixture;
use tigel::data::source::Source;
use tigel::models::gan::{
    check_data_fits, data_shape_of, evaluate, DcganPlan, Gan, GanConfig, GanTrainer, Sampler, TrainData, TrainSettings,
    KIND,
};
use tigel::plot;
use tigel::run::{self, gan::GanRun, Cadence, RunDir};
use tigel::{Error, Result};

pub use args::*;

/// `tigel train gan`: builds both nets and their trainer from the arguments (or the resumed checkpoint)
/// and runs the library's training loop.
pub fn train(backend: Option<&str>, a: TrainArgs) -> Result<()> {
    super::signal::install();
    let resume = run::resume_checkpoint(a.resume.as_deref(), KIND, "`tigel train gan --resume`")?
        .map(|c| a.resume_schedule.prepare(c));
    let spec = super::data_spec("train gan", a.data.as_deref(), resume.as_ref())?;
    let src = Source::open_in(&spec, a.range)?;
    let (shape, scale) = data_shape_of(&src);
    let shape_is_image = shape.len() == 3;
    let fitted;
    let d = match &src {
        Source::Images { train, .. } => {
            // An unsupported side gets the 28×28 figures here and is refused by `cfg.validate` below.
            let stages = DcganPlan::for_side(train.h).map_or(2, |p| p.stages);
            fitted = image_defaults(train.h, stages, train.n);
            &fitted
        }
        Source::Mixture(Mixture::Grid25) => &GRID25,
        _ => &MIXTURE,
    };
    let (cfg, prev) = match &resume {
        Some(ck) => {
            let cfg = GanConfig::from_json(ck.config.get("model").unwrap_or(&serde_json::Value::Null))?;
            check_data_fits(&cfg, &src)?;
            super::check_resumed(
                "train gan",
                &[
                    ("z-dim", super::given(a.z_dim), cfg.z_dim.to_string()),
                    ("width", super::given(a.width), cfg.width.to_string()),
                    ("depth", super::given(a.depth), cfg.depth.to_string()),
                    ("pack", super::given(a.pack), cfg.pack.to_string()),
                ],
            )?;
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
        // The schedule of a run of (the resumed step +) --steps: run::resume.
        horizon: resume.as_ref().map_or(0, |c| c.step as u32).saturating_add(a.steps.unwrap_or(d.steps)),
        ema: a.ema.unwrap_or(pf("ema").map_or(d.ema, |v| v as f32)),
        r1: a.r1.unwrap_or(pf("r1").map_or(d.r1, |v| v as f32)),
        d_steps: a.d_steps.unwrap_or(pf("d_steps").map_or(d.d_steps, |v| v as u32)),
        seed: if resume.is_some() && a.seed == 1 { pf("seed").map_or(a.seed, |v| v as u64) } else { a.seed },
    };
    settings.validate(&cfg)?;
    let start_step = super::start_step("train gan", resume.as_ref(), settings.steps)?;
    // Images evaluate five times a run, however long it is.
    let eval_every = a.eval_every.unwrap_or(if shape_is_image { (settings.steps / 5).max(1) } else { d.eval_every });
    if eval_every == 0 {
        return Err(Error::invalid("train gan", "--eval-every must be a positive integer"));
    }
    let into = a.resume.as_deref().filter(|_| a.resume_schedule.continues());
    let dir = RunDir::choose("train gan", "gan", a.out.as_deref(), into)?.with_keep(a.keep);

    let dev = super::device(backend)?;
    let model = Gan::new(&dev, cfg.clone(), settings.seed)?;
    let t = GanTrainer::new(&dev, model, &TrainData::from_source(&src, cfg.scale), settings, start_step)?;
    if let Some(ck) = &resume {
        t.restore(&dev, ck)?;
    }
    let mut gan = GanRun::new(&dev, t, &src, &spec, dir.path())?;
    let cadence = Cadence { steps: settings.steps, eval_every, log_every: a.log_every, start_step };
    if super::dist::follow(&dev, &mut gan, &dir, cadence, a.resume.as_deref())? {
        return Ok(());
    }
    eprintln!("{}", gan.describe());
    eprintln!("{}", settings_line(&cfg, &settings, eval_every, &a));
    eprintln!("writing {}", dir.path().display());
    let mut bar = super::progress::Bar::new(settings.steps, a.json);
    let outcome = run::train(&dev, &mut gan, &dir, cadence, a.resume.as_deref(), &mut super::dist::agreed(&mut bar))?;
    eprintln!("{}", outcome.done);
    super::dist::done();
    super::signal::exit_if_interrupted(&outcome, &dir.checkpoint());
    if a.json {
        println!("{}", outcome.summary);
    }
    Ok(())
}

/// The settings of a run, each marked `*` where it is a default (for images, `IMAGE_RULE`'s) rather than
/// given or resumed.
fn settings_line(cfg: &GanConfig, s: &TrainSettings, eval_every: u32, a: &TrainArgs) -> String {
    let m = |given: bool| if given || a.resume.is_some() { "" } else { "*" };
    format!(
        "width {}{}, z {}{}, batch {}{}, steps {}{}, lr {:e}{}, d-steps {}{}, eval every {}{} (* default{})",
        cfg.width,
        m(a.width.is_some()),
        cfg.z_dim,
        m(a.z_dim.is_some()),
        s.batch,
        m(a.batch.is_some()),
        s.steps,
        m(a.steps.is_some()),
        s.lr_g,
        m(a.lr.is_some()),
        s.d_steps,
        m(a.d_steps.is_some()),
        eval_every,
        m(a.eval_every.is_some()),
        if cfg.is_image() { ", fitted to the images: see --help" } else { "" }
    )
}

/// `tigel sample gan`: samples into a PNG (an image grid or a 2-D scatter plot) or a .npy file.
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
        plot::sample_grid(&a.out, &samples, a.n, c, h, w, cols, &[])?;
    } else {
        let modes = ck.config.get("data").and_then(|d| d.as_str()).map(plot::mixture_modes).unwrap_or_default();
        plot::scatter(&a.out, &[&samples], plot::scatter_extent(&modes, 1.25 * cfg.scale), &modes, 512)?;
    }
    let _ = writeln!(std::io::stderr(), "wrote {} samples to {}", a.n, a.out.display());
    Ok(())
}

/// `tigel eval gan`: mixtures: modes covered, high-quality fraction, reverse KL; images: MMD², precision
/// and recall against the held-out images.
pub fn eval(backend: Option<&str>, a: EvalArgs) -> Result<()> {
    if a.n == 0 {
        return Err(Error::invalid("eval gan", "--n must be a positive integer, got 0"));
    }
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel eval gan`")?;
    let spec = super::data_spec("eval gan", a.data.as_deref(), Some(&ck))?;
    let src = Source::open_in(&spec, a.range)?;
    let dev = super::device(backend)?;
    let model = Gan::load(&dev, &ck, "`tigel eval gan`", true)?;
    check_data_fits(&model.cfg, &src)?;
    let len = model.cfg.sample_len();
    tigel::models::check_eval_samples("eval gan", a.n)?;
    tigel::models::check_values(
        "eval gan",
        || format!("--n {} samples of {len} values", a.n),
        tigel::models::product(&[a.n, len]),
    )?;
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
