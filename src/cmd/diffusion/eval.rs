//! `tigel eval diffusion`: mixture metrics (2-D) or MMD² and precision/recall against held-out images.

use std::time::Instant;

use serde_json::json;
use tigel::checkpoint::Checkpoint;
use tigel::data::images::ImageSet;
use tigel::data::mixture::Mixture;
use tigel::data::source::Source;
use tigel::models::ddpm::{Diffusion, DiffusionConfig, SampleSettings, Sampler, SamplerKind, KIND};
use tigel::{Device, Error, Result};

use super::{parse_sampler, EvalArgs};

/// Scores a trained model: mixture metrics for 2-D data, MMD² and precision/recall (k = 3) against the
/// held-out images for images.
pub fn eval(backend: Option<&str>, a: EvalArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel eval diffusion`")?;
    let spec = super::super::data_spec("eval diffusion", a.data.as_deref(), Some(&ck))?;
    let source = Source::open_in(&spec, a.range)?;
    let dev = super::super::device(backend)?;
    let model = Diffusion::load(&dev, &ck, "`tigel eval diffusion`")?;
    let cfg = model.cfg.clone();
    let what = || format!("--n {:?} (and --batch {}) samples of {:?}", a.n, a.batch, cfg.sample_shape);
    let n = a.n.unwrap_or(2000);
    tigel::models::check_eval_samples("eval diffusion", n)?;
    tigel::models::check_values("eval diffusion", what, tigel::models::product(&[n.max(a.batch), cfg.sample_len()]))?;
    let sampler = Sampler::new(&dev, &model)?;
    let kind = parse_sampler(&a.sampler, a.sample_steps, a.order)?;
    if let Some(w) = a.guidance {
        let why = if cfg.num_classes == 0 {
            Some("the checkpoint is not label-conditioned (train it with --conditional on data with labels)")
        } else if !matches!(source, Source::Images { .. }) {
            Some("guidance is for class-conditional image models")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::invalid("--guidance", format!("{w}: {why}")));
        }
    }
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
            let x = sample_images(&dev, &sampler, &cfg, n, kind, a.guidance.unwrap_or(1.0), a.seed, a.batch)?;
            image_json(&x, held, n)?
        }
    };
    let mut v = v;
    v["sampler"] = json!(a.sampler);
    v["sample_steps"] = json!(kind.steps(cfg.timesteps));
    if let SamplerKind::Ddim { order, .. } = kind {
        v["order"] = json!(order);
    }
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
    // How far the samples reach, for bounds such as "within radius 3" or "within the grid's box plus 1".
    let non_finite = x.chunks(2).filter(|p| !(p[0].is_finite() && p[1].is_finite())).count();
    let max_radius = x.chunks(2).map(|p| p[0].hypot(p[1])).fold(0.0f32, f32::max);
    let max_abs = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    Ok(json!({"n": x.len() / 2, "modes_covered": m.modes_covered, "num_modes": m.num_modes,
              "high_quality": m.high_quality, "reverse_kl": m.reverse_kl,
              "mean_log_density": m.mean_log_density, "real_mean_log_density": real.mean_log_density,
              "log_density_gap": real.mean_log_density - m.mean_log_density, "mode_counts": m.mode_counts,
              "non_finite": non_finite, "max_radius": max_radius, "max_abs_coordinate": max_abs}))
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
