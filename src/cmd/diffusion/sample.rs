//! `tigel sample diffusion`: DDPM or DDIM samples (optionally guided, per class or as a trajectory) into
//! a PNG (an image grid or a 2-D scatter plot) or a .npy file.

use std::time::Instant;

use tigel::checkpoint::Checkpoint;
use tigel::data::images::write_npy_f32;
use tigel::host::fs::io_err;
use tigel::models::ddpm::{Diffusion, SampleSettings, Sampler, KIND};
use tigel::plot;
use tigel::{Error, Result};

use super::{parse_sampler, SampleArgs};

/// Frames of a trajectory: after these reverse steps (of `total`).
fn trajectory_frames(total: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (1..=8).map(|k| (k * total).div_ceil(8).max(1)).collect();
    v.dedup();
    v
}

/// Samples from a trained diffusion model.
pub fn sample(backend: Option<&str>, a: SampleArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel sample diffusion`")?;
    let ext = a.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let png = match ext.as_deref() {
        Some("png") => true,
        Some("npy") => false,
        _ => return Err(Error::invalid("--out", format!("{}: name a .png or .npy file", a.out.display()))),
    };
    let dev = super::super::device(backend)?;
    let model = Diffusion::load(&dev, &ck, "`tigel sample diffusion`")?;
    let cfg = model.cfg.clone();
    let what = || format!("--n {} (and --batch {}) samples of {:?}", a.n, a.batch, cfg.sample_shape);
    let rows = cfg.num_classes.max(1);
    tigel::models::check_values(
        "sample diffusion",
        what,
        tigel::models::product(&[a.n.max(a.batch), rows, cfg.sample_len()]),
    )?;
    let sampler = Sampler::new(&dev, &model)?;
    let kind = parse_sampler(&a.sampler, a.sample_steps, a.order)?;
    let total = kind.steps(cfg.timesteps);
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
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
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
                plot::sample_grid(&a.out, &pix, shape[0], c, h, w, frames.len(), &[])?;
            } else {
                write_npy_f32(&a.out, &pix, &[rows, frames.len(), c, h, w])?;
            }
        } else if a.per_class {
            if png {
                let labels: Vec<String> = (0..rows).map(|k| k.to_string()).collect();
                plot::sample_grid(&a.out, &out.x, n, c, h, w, a.n, &labels)?;
            } else {
                write_npy_f32(&a.out, &out.x, &[rows, a.n, c, h, w])?;
            }
        } else if png {
            let cols = (n as f64).sqrt().ceil() as usize;
            plot::sample_grid(&a.out, &out.x, n, c, h, w, cols, &[])?;
        } else {
            write_npy_f32(&a.out, &out.x, &[n, c, h, w])?;
        }
    } else {
        let modes = ck.config.get("data").and_then(|d| d.as_str()).map(plot::mixture_modes).unwrap_or_default();
        let extent = plot::scatter_extent(&modes, 3.0 * cfg.data_scale);
        let sets: Vec<&[f32]> =
            if a.trajectory { out.kept.iter().map(|(_, f)| &f[..]).collect() } else { vec![&out.x[..]] };
        if png {
            plot::scatter(&a.out, &sets, extent, &modes, 384)?;
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
