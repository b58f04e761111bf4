//! The GAN in the run loop: D's and G's losses, and at each evaluation samples from G (its EMA weights
//! when it keeps them) scored against the data, with a grid of 64 of them written for images.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{At, Clock, Evaluation, Finished, Guarded, Regime};
use crate::data::images::write_png_grid;
use crate::data::source::Source;
use crate::device::{Device, Download};
use crate::error::Result;
use crate::models::gan::{evaluate, GanTrainer, Sampler, Scores};

/// A GAN training run on a 2-D mixture or an image set.
pub struct GanRun<'a> {
    trainer: GanTrainer,
    sampler: Sampler,
    src: &'a Source,
    data: String,
    out: PathBuf,
    loss_d: f64,
    loss_g: f64,
    last: Option<Scores>,
}

impl<'a> GanRun<'a> {
    /// A run of `trainer` on `src` (named `data` in config.json and the checkpoint), writing into `out`.
    pub fn new(dev: &Device, trainer: GanTrainer, src: &'a Source, data: &str, out: &Path) -> Result<Self> {
        let sampler = Sampler::new(dev, &trainer.model.cfg, &trainer.sampling_generator()?, 500)?;
        Ok(GanRun {
            trainer,
            sampler,
            src,
            data: data.to_string(),
            out: out.to_path_buf(),
            loss_d: f64::NAN,
            loss_g: f64::NAN,
            last: None,
        })
    }

    /// The trainer.
    pub fn trainer(&self) -> &GanTrainer {
        &self.trainer
    }

    /// A line describing the networks and the data.
    pub fn describe(&self) -> String {
        let m = &self.trainer.model;
        let params = |ps: Vec<crate::nn::Param>| ps.iter().map(|p| p.tensor.numel()).sum::<usize>();
        let arch = match crate::models::gan::DcganPlan::for_side(m.cfg.data_shape[m.cfg.data_shape.len() - 1]) {
            Some(p) if m.cfg.is_image() => format!("DCGAN, {0}×{0} map, {1} 2× stage(s)", p.first, p.stages),
            _ if m.cfg.is_image() => "DCGAN".into(),
            _ => "MLP".into(),
        };
        format!(
            "gan ({arch}): G {} parameters, D {}, z {}; {}",
            params(m.g.params()),
            params(m.d.params()),
            m.cfg.z_dim,
            self.src.describe()
        )
    }
}

impl Regime for GanRun<'_> {
    fn step(&mut self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    fn read_losses(&self, dev: &Device) -> Result<Vec<Download>> {
        let (d, g) = self.trainer.read_losses(dev)?;
        Ok(vec![d, g])
    }

    fn guarded(&self) -> Vec<Guarded<'_>> {
        vec![
            Guarded { name: "D", trainer: self.trainer.d_trainer(), per_step: self.trainer.settings.d_steps },
            Guarded { name: "G", trainer: self.trainer.g_trainer(), per_step: 1 },
        ]
    }

    fn take_losses(&mut self, losses: &[f64]) {
        (self.loss_d, self.loss_g) = (losses[0], losses[1]);
    }

    fn progress(&self, at: At, clock: &Clock) -> String {
        let rate = at.i as f64 / clock.train_s();
        if self.loss_d.is_nan() {
            format!("losses pending  {rate:.1} steps/s")
        } else {
            format!("D {:.3}  G {:.3}  {rate:.1} steps/s", self.loss_d, self.loss_g)
        }
    }

    fn train_metrics(&self, at: At, train_s: f64) -> Value {
        let s = &self.trainer.settings;
        let k = at.step.saturating_sub(1);
        json!({"loss_d": self.loss_d, "loss_g": self.loss_g,
               "lr_d": self.trainer.d_trainer().optimizer().lr_at(k * s.d_steps),
               "lr_g": self.trainer.g_trainer().optimizer().lr_at(k),
               "samples_per_s": (at.i as usize * s.batch) as f64 / train_s})
    }

    #[cfg(feature = "plot")]
    fn plot(&self, dir: &Path, history: &crate::run::History) -> Result<()> {
        use crate::plot::{line_plot, Curve};
        let curves = [
            Curve::from_metrics(history, "train", "loss_d", "D loss", false),
            Curve::from_metrics(history, "train", "loss_g", "G loss", false),
        ];
        line_plot(&dir.join("loss.png"), "loss", &curves)
    }

    /// Reverse KL on a 2-D mixture (it falls with both coverage and quality), MMD² on images.
    fn best_key(&self) -> Option<&'static str> {
        Some(if self.trainer.model.cfg.is_image() { "mmd2" } else { "reverse_kl" })
    }

    fn evaluate(&mut self, dev: &Device, at: At, clock: &Clock) -> Result<Evaluation> {
        let cfg = &self.trainer.model.cfg;
        let samples = self.sampler.sample(dev, if cfg.is_image() { 500 } else { 2000 }, 0)?;
        if cfg.is_image() {
            let [c, h, w] = [cfg.data_shape[0], cfg.data_shape[1], cfg.data_shape[2]];
            let path = self.out.join(format!("samples-{:06}.png", at.step));
            write_png_grid(&path, &samples[..64 * c * h * w], 64, c, h, w, 8)?;
            #[cfg(feature = "plot")]
            crate::plot::sample_grid(&self.out.join("samples.png"), &samples[..64 * c * h * w], 64, c, h, w, 8, &[])?;
        } else {
            #[cfg(feature = "plot")]
            {
                let modes = crate::plot::mixture_modes(&self.data);
                let extent = crate::plot::scatter_extent(&modes, 1.25 * cfg.scale);
                crate::plot::scatter(&self.out.join("samples.png"), &[&samples], extent, &modes, 384)?;
            }
        }
        let scores = evaluate(&samples, self.src)?;
        let mut metrics = json!({"step": at.step, "loss_d": self.loss_d, "loss_g": self.loss_g,
                                 "elapsed_s": clock.elapsed_s()});
        merge(&mut metrics, scores.to_json());
        let line = format!("step {}: D {:.3}, G {:.3}; {}", at.step, self.loss_d, self.loss_g, scores.line());
        self.last = Some(scores);
        Ok(Evaluation { metrics, line })
    }

    fn save(&self, dev: &Device, path: &Path) -> Result<()> {
        self.trainer.save(dev, path, &self.data)
    }

    fn config(&self) -> Value {
        crate::models::run_config(self.trainer.model.cfg.to_json(), self.trainer.settings.to_json(), self.data.as_str())
    }

    fn done(&self, fin: &Finished, checkpoint: &Path) -> String {
        let detail = format!(" ({:.0} s training, {:.1} steps/s)", fin.train_s, fin.steps as f64 / fin.train_s);
        fin.done_line(&detail, checkpoint)
    }

    fn summary(&self, dev: &Device, fin: &Finished) -> Value {
        let mut v = json!({"steps": fin.start_step + fin.steps, "loss_d": self.loss_d, "loss_g": self.loss_g,
                           "elapsed_s": fin.elapsed_s, "train_s": fin.train_s,
                           "steps_per_s": fin.steps as f64 / fin.train_s, "backend": dev.backend_name(),
                           "out": self.out});
        if let Some(s) = &self.last {
            merge(&mut v, s.to_json());
        }
        v
    }
}

/// Adds the keys of the object `more` to the object `v`.
fn merge(v: &mut Value, more: Value) {
    if let (Some(o), Value::Object(m)) = (v.as_object_mut(), more) {
        o.extend(m);
    }
}
