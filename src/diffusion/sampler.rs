//! The reverse processes: DDPM (ancestral, all T steps) and DDIM (deterministic, K of them), from pure noise
//! to data, with classifier-free guidance for class-conditional models.

use super::schedule::{ddim_timesteps, Prediction, Schedule};
use super::{MAX_PERIOD, TIME_SIN_DIM};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Plan};
use crate::ops::diffusion::{self, ScheduleTensors};
use crate::ops::elementwise::{self as ew, Binary};
use crate::ops::{layout, rng};
use crate::tensor::{DType, Tensor};

/// The diffusion process a denoiser was trained for.
#[derive(Clone, Copy, Debug)]
pub struct Process<'a> {
    /// One sample: [D] for points, [C, H, W] for images.
    pub sample_shape: &'a [usize],
    /// Timesteps T.
    pub timesteps: usize,
    /// The noise schedule.
    pub schedule: Schedule,
    /// What the network predicts.
    pub prediction: Prediction,
    /// Classes of the label conditioning (0: unconditional).
    pub num_classes: usize,
    /// Samples are multiplied by it on the way out (the model works at unit scale).
    pub data_scale: f32,
    /// The data's extent per coordinate in model units: x̂_0 is clamped to [-x0_clip, x0_clip] when the
    /// settings name no clip of their own (0: not known, no clamp).
    pub x0_clip: f32,
}

impl Process<'_> {
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }
}

/// A network the reverse process can run: its process, and its prediction for x_t.
pub trait Denoiser {
    /// The process it was trained for.
    fn process(&self) -> Process<'_>;
    /// The prediction for x_t [B, sample_shape...] at the timesteps whose sinusoidal embedding is `tsin`
    /// [B, TIME_SIN_DIM]; `cond`: class ids (u32 [B]) and a keep mask (f32 [B, 1]) for a
    /// class-conditional model.
    fn forward(&self, g: &mut Graph, xt: NodeId, tsin: NodeId, cond: Option<(NodeId, NodeId)>) -> Result<NodeId>;
}

/// The reverse process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    /// Ancestral sampling through all T steps.
    Ddpm,
    /// Deterministic DDIM (eta 0) over `steps` timesteps spread evenly over 0..T: DDIM's probability-flow
    /// ODE, integrated with its own first-order step (`order` 1) or with the second-order multistep
    /// update of DPM-Solver++(2M) (`order` 2, Lu et al. 2022), which uses the previous step's x̂_0 as well.
    Ddim {
        /// Reverse steps.
        steps: usize,
        /// 1 or 2.
        order: usize,
    },
}

impl SamplerKind {
    /// DDIM over `steps` timesteps with the second-order update: the default, because first-order DDIM-50
    /// leaves samples between the modes of a 2-D mixture (docs/benchmarks.md, diffusion).
    pub fn ddim(steps: usize) -> SamplerKind {
        SamplerKind::Ddim { steps, order: 2 }
    }

    /// Reverse steps it runs for a model of `timesteps` steps.
    pub fn steps(self, timesteps: usize) -> usize {
        match self {
            SamplerKind::Ddpm => timesteps,
            SamplerKind::Ddim { steps, .. } => steps,
        }
    }
}

/// How to sample.
#[derive(Clone, Debug)]
pub struct SampleSettings {
    /// DDPM or DDIM.
    pub sampler: SamplerKind,
    /// Class to generate (class-conditional models); None: unconditional (the null class).
    pub label: Option<u32>,
    /// Classifier-free guidance weight w (1: the conditional prediction alone).
    pub guidance: f32,
    /// Seed of the initial noise and of DDPM's per-step noise.
    pub seed: u64,
    /// Clamp x̂_0 to [-clip, clip] in both reverse steps (images: 1, pixels live in [-1, 1]); 0: the
    /// model's data range (`Process::x0_clip`), which keeps every sample within the data's extent.
    pub clip: f32,
    /// Reverse steps after which to keep a copy of x (in data units), e.g. for a trajectory strip.
    pub keep_at: Vec<usize>,
}

/// Runs a model's reverse process on batches of `n` samples: a planned forward pass per step, then one
/// reverse-step kernel. With guidance the batch is doubled (labelled and null halves in one pass).
pub struct Sampler<'a> {
    model: &'a dyn Denoiser,
    sched: ScheduleTensors,
    /// ᾱ on the host, for the second-order DDIM update's coefficients.
    alpha_bar: Vec<f32>,
}

/// Samples (data units, [n, sample_shape...] row-major) and the copies asked for by `keep_at`.
pub struct Samples {
    /// The samples, [n, sample_shape...] row-major.
    pub x: Vec<f32>,
    /// (reverse step, x after it) for each step of `keep_at`.
    pub kept: Vec<(usize, Vec<f32>)>,
}

impl<'a> Sampler<'a> {
    /// The schedule's tables for `model`'s process.
    pub fn new(dev: &Device, model: &'a dyn Denoiser) -> Result<Sampler<'a>> {
        let p = model.process();
        let sched = diffusion::schedule(dev, p.schedule, p.timesteps)?;
        let alpha_bar = sched.alpha_bar.to_f32(dev)?;
        Ok(Sampler { model, sched, alpha_bar })
    }

    /// Checks the label and guidance against the model.
    pub fn check(&self, s: &SampleSettings) -> Result<()> {
        let k = self.model.process().num_classes;
        if let Some(l) = s.label {
            if k == 0 {
                return Err(Error::invalid(
                    "--label",
                    "the model is not class-conditional (train it with --conditional)",
                ));
            }
            if l as usize >= k {
                return Err(Error::invalid("--label", format!("label {l} is out of range: the model has {k} classes")));
            }
        }
        if s.guidance != 1.0 && s.label.is_none() {
            return Err(Error::invalid(
                "--guidance",
                if k == 0 {
                    "guidance needs a class-conditional model (train it with --conditional) and a --label".to_string()
                } else {
                    "guidance needs a --label".to_string()
                },
            ));
        }
        if !(s.guidance.is_finite() && s.guidance >= 0.0) {
            return Err(Error::invalid(
                "--guidance",
                format!("must be finite and >= 0 (0: the null class alone, 1: no guidance), got {}", s.guidance),
            ));
        }
        if let SamplerKind::Ddim { steps, order } = s.sampler {
            ddim_timesteps(self.model.process().timesteps, steps)?;
            if !(1..=2).contains(&order) {
                return Err(Error::invalid("--order", format!("DDIM's order is 1 or 2, got {order}")));
            }
        }
        Ok(())
    }

    /// `n` samples, drawn in batches of at most `batch`.
    pub fn sample(&self, dev: &Device, n: usize, batch: usize, s: &SampleSettings) -> Result<Samples> {
        self.check(s)?;
        if n == 0 || batch == 0 {
            return Err(Error::invalid("sample", format!("--n {n} and the batch {batch} must be positive")));
        }
        let mut out = Samples { x: Vec::new(), kept: s.keep_at.iter().map(|&k| (k, Vec::new())).collect() };
        let mut done = 0;
        while done < n {
            let m = batch.min(n - done);
            let seed = s.seed.wrapping_add((done as u64) << 32);
            let r = self.sample_batch(dev, m, &SampleSettings { seed, ..s.clone() })?;
            out.x.extend(r.x);
            for (dst, src) in out.kept.iter_mut().zip(r.kept) {
                dst.1.extend(src.1);
            }
            done += m;
        }
        Ok(out)
    }

    fn sample_batch(&self, dev: &Device, n: usize, s: &SampleSettings) -> Result<Samples> {
        let cfg = self.model.process();
        let conditional = cfg.num_classes > 0;
        let guided = conditional && s.label.is_some() && s.guidance != 1.0;
        let m = if guided { 2 * n } else { n };
        let mut shape = vec![m];
        shape.extend(cfg.sample_shape);
        let xin = Tensor::empty(dev, &shape, DType::F32)?;
        let tin = Tensor::empty(dev, &[m], DType::U32)?;
        let tsin = Tensor::empty(dev, &[m, TIME_SIN_DIM], DType::F32)?;
        let mut g = Graph::new();
        let xn = g.input(&xin);
        let tn = g.input(&tsin);
        let cond = if conditional {
            // Rows [0, n) carry the label (or the null class), rows [n, 2n) the null class.
            let label = s.label.unwrap_or(0);
            let keep1 = if s.label.is_some() { 1.0 } else { 0.0 };
            let keep: Vec<f32> = (0..m).map(|i| if i < n { keep1 } else { 0.0 }).collect();
            let ids = g.input(&Tensor::from_u32(dev, &[m], &vec![label; m])?);
            let kp = g.input(&Tensor::from_f32(dev, &[m, 1], &keep)?);
            Some((ids, kp))
        } else {
            None
        };
        let pred = self.model.forward(&mut g, xn, tn, cond)?;
        let plan = Plan::build(dev, &g, &[pred], |_| Ok(()))?;

        shape[0] = n;
        let len = n * cfg.sample_len();
        let stride = rng::step_stride(len);
        let mut x = rng::normal(dev, &shape, s.seed, 0, 0.0, 1.0)?;
        let t_n = Tensor::empty(dev, &[n], DType::U32)?;
        let steps: Vec<usize> = match s.sampler {
            SamplerKind::Ddpm => (0..cfg.timesteps).rev().collect(),
            SamplerKind::Ddim { steps, .. } => ddim_timesteps(cfg.timesteps, steps)?,
        };
        let order2 = matches!(s.sampler, SamplerKind::Ddim { order: 2, .. });
        // The second-order update's memory: the previous step's clamped x̂_0 and its log-SNR step h.
        let mut prev: Option<(Tensor, f64)> = None;
        // Without a clamp an ε-model's x̂_0 carries its error times 1/√ᾱ_t (2·10⁴ at the cosine schedule's
        // last step) and a few samples in thousands fly off to 1e10; clamped, every step is a convex mix of
        // x_t and a bounded x̂_0 (docs/benchmarks.md, diffusion).
        let clip = if s.clip > 0.0 { s.clip } else { cfg.x0_clip };
        let mut kept = Vec::new();
        for (i, &t) in steps.iter().enumerate() {
            dev.write(&tin.buf, &vec![t as u32; m])?;
            let e = diffusion::timestep_embedding(dev, &tin, TIME_SIN_DIM, MAX_PERIOD)?;
            layout::copy_into(dev, &e, &tsin)?;
            if guided {
                let both = layout::concat(dev, &[&x, &x], 0)?;
                layout::copy_into(dev, &both, &xin)?;
            } else {
                layout::copy_into(dev, &x, &xin)?;
            }
            plan.run(dev)?;
            let p = plan.value(pred);
            let mut eps = if guided {
                let c = layout::slice(dev, p, 0, 0, n)?;
                let u = layout::slice(dev, p, 0, n, n)?;
                let d = ew::sub(dev, &c, &u)?;
                let d = ew::scalar(dev, Binary::Mul, &d, s.guidance, false)?;
                ew::add(dev, &u, &d)?
            } else {
                layout::copy(dev, p)?
            };
            if cfg.prediction == Prediction::V {
                dev.write(&t_n.buf, &vec![t as u32; n])?;
                eps = diffusion::v_to_eps(dev, &eps, &x, &t_n, &self.sched.alpha_bar)?;
            }
            x = match s.sampler {
                SamplerKind::Ddpm => {
                    diffusion::ddpm_step_clipped(dev, &x, &eps, t, &self.sched, s.seed, (i as u64 + 1) * stride, clip)?
                }
                SamplerKind::Ddim { .. } => {
                    let t_prev = steps.get(i + 1).copied();
                    // Below 15 steps the last step's log-SNR step dwarfs the one before (cosine, evenly spaced
                    // t), and the extrapolation to D overshoots: first order there, as DPM-Solver++ does.
                    if order2 && !(steps.len() < 15 && i + 2 >= steps.len()) {
                        eps = self.multistep_eps(dev, &x, &eps, t, t_prev, clip, &mut prev)?;
                    }
                    diffusion::ddim_step_clipped(dev, &x, &eps, t, t_prev, &self.sched, clip)?
                }
            };
            if s.keep_at.contains(&(i + 1)) {
                kept.push((i + 1, self.to_data(dev, &x)?));
            }
        }
        let kept = s
            .keep_at
            .iter()
            .map(|&k| (k, kept.iter().find(|(j, _)| *j == k).map(|v| v.1.clone()).unwrap_or_default()))
            .collect();
        Ok(Samples { x: self.to_data(dev, &x)?, kept })
    }

    /// DPM-Solver++(2M) as a DDIM step: with x̂_0 replaced by D = (1 + 1/2r)·x̂_0 − (1/2r)·x̂_0' (x̂_0' the
    /// previous step's, r = h'/h the ratio of the log-SNR steps), DDIM's update σ'/σ·x_t + α'(1 − e^(−h))·D
    /// is the second-order multistep one. Returns the ε that makes `ddim_step_clipped` use D; that kernel
    /// clamps D to [-clip, clip], so every step stays a convex mix of x_t and a bounded x̂_0. The first step
    /// and the last (to x_0) are first order.
    #[allow(clippy::too_many_arguments)]
    fn multistep_eps(
        &self,
        dev: &Device,
        x: &Tensor,
        eps: &Tensor,
        t: usize,
        t_prev: Option<usize>,
        clip: f32,
        prev: &mut Option<(Tensor, f64)>,
    ) -> Result<Tensor> {
        let a = self.alpha_bar[t] as f64;
        let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
        // x̂_0 = (x_t − σ·ε)/α, clamped as the kernel clamps it.
        let x0 = ew::scalar(dev, Binary::Mul, eps, sigma as f32, false)?;
        let x0 = ew::sub(dev, x, &x0)?;
        let mut x0 = ew::scalar(dev, Binary::Mul, &x0, (1.0 / alpha) as f32, false)?;
        if clip > 0.0 {
            x0 = ew::scalar(dev, Binary::Min, &x0, clip, false)?;
            x0 = ew::scalar(dev, Binary::Max, &x0, -clip, false)?;
        }
        let Some(tp) = t_prev else {
            *prev = None;
            return layout::copy(dev, eps);
        };
        let lambda = |ab: f64| 0.5 * (ab / (1.0 - ab)).ln();
        let h = lambda(self.alpha_bar[tp] as f64) - lambda(a);
        let d = match prev.take() {
            Some((x0_prev, h_prev)) if h > 0.0 && h_prev > 0.0 => {
                let c = 0.5 * h / h_prev;
                let d = ew::scalar(dev, Binary::Mul, &x0, (1.0 + c) as f32, false)?;
                let p = ew::scalar(dev, Binary::Mul, &x0_prev, c as f32, false)?;
                ew::sub(dev, &d, &p)?
            }
            _ => layout::copy(dev, &x0)?,
        };
        *prev = Some((x0, h));
        // ε_D = (x_t − α·D)/σ.
        let e = ew::scalar(dev, Binary::Mul, &d, alpha as f32, false)?;
        let e = ew::sub(dev, x, &e)?;
        ew::scalar(dev, Binary::Mul, &e, (1.0 / sigma) as f32, false)
    }

    fn to_data(&self, dev: &Device, x: &Tensor) -> Result<Vec<f32>> {
        let scale = self.model.process().data_scale;
        Ok(x.to_f32(dev)?.into_iter().map(|v| v * scale).collect())
    }

    /// The schedule's tables (ᾱ and friends) on the device.
    pub fn schedule(&self) -> &ScheduleTensors {
        &self.sched
    }
}
