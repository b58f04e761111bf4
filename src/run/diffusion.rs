//! Diffusion in the run loop: one step's loss is noisy (its timesteps are random), so each evaluation
//! reports the mean of the losses read since the previous one; nothing is sampled during training.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{At, Clock, Evaluation, Finished, Guarded, Regime};
use crate::device::{Device, Download};
use crate::error::Result;
use crate::models::ddpm::{schedule_name, Arch, DiffusionTrainer};

/// A diffusion training run.
pub struct DiffusionRun {
    trainer: DiffusionTrainer,
    data: String,
    params: usize,
    out: PathBuf,
    loss: f64,
    /// Sum and count of the losses read since the last evaluation.
    acc: f64,
    cnt: usize,
    first_window: f64,
}

impl DiffusionRun {
    /// A run of `trainer` on the data named `data` (in config.json and the checkpoint), writing into `out`.
    pub fn new(trainer: DiffusionTrainer, data: &str, out: &Path) -> DiffusionRun {
        DiffusionRun {
            params: trainer.model.param_count(),
            trainer,
            data: data.to_string(),
            out: out.to_path_buf(),
            loss: f64::NAN,
            acc: 0.0,
            cnt: 0,
            first_window: f64::NAN,
        }
    }

    /// The trainer.
    pub fn trainer(&self) -> &DiffusionTrainer {
        &self.trainer
    }

    /// A line describing the model and the data (`data` as described by its source).
    pub fn describe(&self, data: &str) -> String {
        let cfg = &self.trainer.model.cfg;
        format!(
            "diffusion: {}, {:.2} M parameters, T = {} ({}), predicting {}; data {data}",
            arch_line(&cfg.arch),
            self.params as f64 / 1e6,
            cfg.timesteps,
            schedule_name(cfg.schedule),
            cfg.prediction.name(),
        )
    }
}

impl DiffusionRun {
    /// samples.png from the EMA weights with DDIM (50 steps, seed fixed so pictures compare across
    /// evaluations): 64 images, or a row of 8 per class (up to 10) for a class-conditional model, or a
    /// scatter plot of 2,000 points with the true modes.
    #[cfg(feature = "plot")]
    fn sample_picture(&self, dev: &Device, _at: At) -> Result<()> {
        use crate::models::ddpm::{SampleSettings, Sampler, SamplerKind};
        let cfg = &self.trainer.model.cfg;
        let model = self.trainer.ema_model(dev)?;
        let sampler = Sampler::new(dev, &model)?;
        let image = cfg.sample_shape.len() == 3;
        let s = SampleSettings {
            sampler: SamplerKind::ddim(cfg.timesteps.min(50)),
            label: None,
            guidance: 1.0,
            seed: 1,
            clip: if image { 1.0 } else { 0.0 },
            keep_at: vec![],
        };
        let path = self.out.join("samples.png");
        if !image {
            let x = sampler.sample(dev, 2000, 2000, &s)?.x;
            let modes = crate::plot::mixture_modes(&self.data);
            let extent = crate::plot::scatter_extent(&modes, 3.0 * cfg.data_scale);
            return crate::plot::scatter(&path, &[&x], extent, &modes, 384);
        }
        let (c, h, w) = (cfg.sample_shape[0], cfg.sample_shape[1], cfg.sample_shape[2]);
        if cfg.num_classes > 0 {
            let (k, per) = (cfg.num_classes.min(10), 8);
            let mut x = Vec::new();
            for l in 0..k {
                x.extend(sampler.sample(dev, per, per, &SampleSettings { label: Some(l as u32), ..s.clone() })?.x);
            }
            let labels: Vec<String> = (0..k).map(|l| l.to_string()).collect();
            crate::plot::sample_grid(&path, &x, k * per, c, h, w, per, &labels)
        } else {
            let x = sampler.sample(dev, 64, 64, &s)?.x;
            crate::plot::sample_grid(&path, &x, 64, c, h, w, 8, &[])
        }
    }
}

impl Regime for DiffusionRun {
    fn step(&mut self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    fn read_losses(&self, dev: &Device) -> Result<Vec<Download>> {
        Ok(vec![self.trainer.read_loss(dev)?])
    }

    fn guarded(&self) -> Vec<Guarded<'_>> {
        vec![Guarded { name: "", trainer: self.trainer.trainer(), per_step: 1 }]
    }

    fn take_losses(&mut self, losses: &[f64]) {
        self.loss = losses[0];
        self.acc += self.loss;
        self.cnt += 1;
    }

    fn progress(&self, at: At, clock: &Clock) -> String {
        let rate = at.i as f64 / clock.train_s();
        if self.loss.is_nan() {
            format!("loss pending  {rate:.1} steps/s")
        } else {
            format!("loss {:.4}  {rate:.1} steps/s", self.loss)
        }
    }

    fn train_metrics(&self, at: At, train_s: f64) -> Value {
        json!({"loss": self.loss, "lr": self.trainer.trainer().optimizer().lr_at(at.step.saturating_sub(1)),
               "samples_per_s": (at.i as usize * self.trainer.settings.batch) as f64 / train_s})
    }

    #[cfg(feature = "plot")]
    fn plot(&self, dir: &Path, history: &crate::run::History) -> Result<()> {
        use crate::plot::{line_plot, Curve};
        let curves = [
            Curve::from_metrics(history, "train", "loss", "training loss", false),
            Curve::from_metrics(history, "eval", "mean_loss", "mean since the last evaluation", true),
        ];
        line_plot(&dir.join("loss.png"), "loss (MSE)", &curves)
    }

    /// The mean training loss since the previous evaluation: nothing held out is scored during training.
    fn best_key(&self) -> Option<&'static str> {
        Some("mean_loss")
    }

    fn evaluate(&mut self, dev: &Device, at: At, clock: &Clock) -> Result<Evaluation> {
        #[cfg(feature = "plot")]
        self.sample_picture(dev, at)?;
        #[cfg(not(feature = "plot"))]
        let _ = dev;
        let mean = self.acc / self.cnt.max(1) as f64;
        if self.first_window.is_nan() {
            self.first_window = mean;
        }
        let metrics = json!({"step": at.step, "loss": self.loss, "mean_loss": mean, "elapsed_s": clock.elapsed_s()});
        let line = format!("step {}: loss {mean:.4} (mean since the last evaluation)", at.step);
        if at.last {
            self.loss = mean;
        }
        (self.acc, self.cnt) = (0.0, 0);
        Ok(Evaluation { metrics, line })
    }

    fn save(&self, dev: &Device, path: &Path) -> Result<()> {
        self.trainer.save(dev, path, &self.data)
    }

    fn config(&self) -> Value {
        crate::models::run_config(self.trainer.model.cfg.to_json(), self.trainer.settings.to_json(), self.data.as_str())
    }

    fn done(&self, fin: &Finished, checkpoint: &Path) -> String {
        fin.done_line(&format!(" ({:.1} steps/s)", fin.steps as f64 / fin.elapsed_s), checkpoint)
    }

    fn summary(&self, dev: &Device, fin: &Finished) -> Value {
        json!({"steps": fin.start_step + fin.steps, "loss": self.loss, "first_loss": self.first_window,
               "elapsed_s": fin.elapsed_s, "steps_per_s": fin.steps as f64 / fin.elapsed_s, "params": self.params,
               "backend": dev.backend_name(), "device": dev.name(), "out": self.out})
    }
}

/// The denoiser in words: "MLP denoiser, 3 hidden layers of 256" or "UNet, 16 base channels, levels
/// ×1,2,2, attention at the lowest".
fn arch_line(arch: &Arch) -> String {
    match arch {
        Arch::Mlp { hidden, layers } => format!("MLP denoiser, {layers} hidden layers of {hidden}"),
        Arch::Unet(u) => format!(
            "UNet, {} base channels, levels ×{}, {}",
            u.base,
            u.mults.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(","),
            if u.attention { "attention at the lowest" } else { "no attention" }
        ),
    }
}
