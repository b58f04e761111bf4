//! Denoising diffusion (DDPM, Ho et al. 2020; DDIM, Song et al. 2021): the noise schedule, the forward
//! process for training (`q_sample`), the sinusoidal timestep embedding, the reverse steps and the
//! v-prediction conversions. Kernels: shaders/diffusion.wgsl; CPU twins: device/cpu/diffusion.rs.
//!
//! Timestep t indexes the schedule tensors (0-based, t < T): `alpha_bar[t]` is the product of `alphas[0..=t]`.
//!
//! Training reads the step counter: `q_sample` at training step s draws each row's timestep and the noise
//! from Philox at stream offset s * stride of its seed (see `q_sample_stream`), so a recorded training step
//! draws new timesteps and noise at every replay once the counter is advanced. Sampling steps
//! (`ddpm_step`, `ddim_step`) take their timesteps as host values (they are not replayed), but read the
//! schedule values from the device tensors.
//!
//! Precision: no GPU builtin transcendental is used. Angles are exact fixed-point turns: the embedding's
//! cosines are integer arithmetic (bit-identical on every device, within 1e-7 of exact), the cosine
//! schedule's sines f32 polynomials on exactly reduced angles (betas within about 5e-7 relative of the
//! f64 formula). The rest is f32 +, *, /, sqrt, which a GPU evaluates to within a few ulp of the CPU twin.
//! The random numbers are bit-identical.

use super::rng::want_step_counter;
use super::{launch_1d, u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::host::philox::split64;
use crate::kernels::diffusion::{
    DdimParams, DdpmParams, EmbedParams, QSampleParams, SchedParams, VParams, DDIM_STEP, DDPM_STEP, Q_SAMPLE, SCHEDULE,
    SCHED_COSINE, SCHED_LINEAR, TIMESTEP_EMBEDDING, V_CONVERT, V_TARGET, V_TO_EPS,
};
use crate::tensor::{DType, Tensor};

/// Longest schedule: timesteps stay exact in f32 (and 2T in u32).
pub const MAX_TIMESTEPS: usize = 1 << 24;
/// Upper clip of the cosine schedule's betas (Nichol & Dhariwal 2021).
pub const COSINE_MAX_BETA: f32 = 0.999;

/// A noise schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// betas = linspace(beta_start, beta_end, T); DDPM uses 1e-4 to 0.02 for T = 1000.
    Linear {
        /// beta at t = 0.
        beta_start: f32,
        /// beta at t = T - 1.
        beta_end: f32,
    },
    /// abar(t) = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), betas = min(1 - abar(t + 1) /
    /// abar(t), 0.999); s = 0.008 in the paper.
    Cosine {
        /// The offset that keeps beta small near t = 0.
        s: f32,
    },
}

impl Schedule {
    /// Linear from 1e-4 to 0.02.
    pub const LINEAR: Schedule = Schedule::Linear { beta_start: 1e-4, beta_end: 0.02 };
    /// Cosine with s = 0.008.
    pub const COSINE: Schedule = Schedule::Cosine { s: 0.008 };
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::LINEAR
    }
}

/// The schedule on the device: f32 [T] each.
#[derive(Debug, Clone)]
pub struct ScheduleTensors {
    /// beta_t.
    pub betas: Tensor,
    /// alpha_t = 1 - beta_t.
    pub alphas: Tensor,
    /// The running product of alpha_t.
    pub alpha_bar: Tensor,
}

impl ScheduleTensors {
    /// T, the schedule's length.
    pub fn timesteps(&self) -> usize {
        self.alpha_bar.numel()
    }

    /// All three f32 and of one shape [T] with T > 0.
    fn check(&self, op: &'static str) -> Result<usize> {
        for (name, t) in [("betas", &self.betas), ("alphas", &self.alphas), ("alpha_bar", &self.alpha_bar)] {
            want_dtype(op, t, DType::F32)?;
            if t.rank() != 1 || t.shape != self.alpha_bar.shape || t.numel() == 0 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "schedule tensors must all be [T] with T > 0: {name} is {:?}, alpha_bar {:?}",
                        t.shape, self.alpha_bar.shape
                    ),
                ));
            }
        }
        Ok(self.alpha_bar.numel())
    }
}

/// A Q0.64 fixed-point fraction of `v` in [0, 1), rounded, as the shader's (lo, hi) words.
fn q064(v: f64) -> [u32; 2] {
    split64((v * 18_446_744_073_709_551_616.0).round() as u64)
}

/// The schedule of `timesteps` steps, computed on the device by one kernel (one workgroup).
pub fn schedule(dev: &Device, kind: Schedule, timesteps: usize) -> Result<ScheduleTensors> {
    const OP: &str = "diffusion::schedule";
    if timesteps == 0 {
        return Err(Error::invalid(OP, "timesteps = 0: a schedule needs at least one step"));
    }
    if timesteps > MAX_TIMESTEPS {
        return Err(Error::invalid(OP, format!("timesteps = {timesteps} is over the {MAX_TIMESTEPS} supported")));
    }
    let t = timesteps as u32;
    let mut p = SchedParams { timesteps: t, max_beta: COSINE_MAX_BETA, ..Default::default() };
    match kind {
        Schedule::Linear { beta_start, beta_end } => {
            let ok = |b: f32| (0.0..1.0).contains(&b);
            if !(ok(beta_start) && ok(beta_end)) {
                return Err(Error::invalid(
                    OP,
                    format!("linear betas from {beta_start} to {beta_end}: both must be in [0, 1)"),
                ));
            }
            p.kind = SCHED_LINEAR;
            p.beta_start = beta_start;
            p.delta = if timesteps > 1 {
                ((beta_end as f64 - beta_start as f64) / (timesteps - 1) as f64) as f32
            } else {
                0.0
            };
        }
        Schedule::Cosine { s } => {
            // s is 0.008 in practice; the bound keeps the angle step D well inside f32's normal range.
            if !(0.0..=1000.0).contains(&s) {
                return Err(Error::invalid(OP, format!("cosine offset s = {s} must be in [0, 1000]")));
            }
            let s = s as f64;
            p.kind = SCHED_COSINE;
            p.turn_step = q064(1.0 / (4.0 * timesteps as f64 * (1.0 + s)));
        }
    }
    let betas = Tensor::empty(dev, &[timesteps], DType::F32)?;
    let alphas = Tensor::empty(dev, &[timesteps], DType::F32)?;
    let alpha_bar = Tensor::empty(dev, &[timesteps], DType::F32)?;
    dev.dispatch(Dispatch::new(&SCHEDULE, &p, &[&betas.buf, &alphas.buf, &alpha_bar.buf], [1, 1, 1]))?;
    Ok(ScheduleTensors { betas, alphas, alpha_bar })
}

/// The forward process at one training step: the noised batch, the noise and each row's timestep.
#[derive(Debug, Clone)]
pub struct QSample {
    /// sqrt(abar[t]) x0 + sqrt(1 - abar[t]) eps, x0's shape.
    pub xt: Tensor,
    /// The standard normal noise, x0's shape.
    pub eps: Tensor,
    /// Each row's timestep, u32 [B], uniform on 0..T.
    pub t: Tensor,
}

impl QSample {
    /// Outputs for `q_sample_into` with a batch of shape `x0_shape` ([B, D...]).
    pub fn empty(dev: &Device, x0_shape: &[usize]) -> Result<QSample> {
        let b = x0_shape.first().copied().unwrap_or(0);
        Ok(QSample {
            xt: Tensor::empty(dev, x0_shape, DType::F32)?,
            eps: Tensor::empty(dev, x0_shape, DType::F32)?,
            t: Tensor::empty(dev, &[b], DType::U32)?,
        })
    }
}

/// Where `q_sample` of a batch of shape [B, D...] draws at each step: (stride, eps_offset). At step s, row
/// r's timestep is `bits(seed, s * stride + r) mod T` and noise element i is `normal(seed, s * stride +
/// eps_offset + i)`; eps_offset = B rounded up to 4 and stride = eps_offset + B * D rounded up to 4.
pub fn q_sample_stream(x0_shape: &[usize]) -> (u64, u64) {
    let b = x0_shape.first().copied().unwrap_or(0) as u64;
    let n: u64 = x0_shape.iter().map(|&d| d as u64).product();
    let eps_offset = b.div_ceil(4) * 4;
    (eps_offset + n.div_ceil(4) * 4, eps_offset)
}

/// The forward process for training, fused: per row of x0 (f32 [B, D...]) a timestep t ~ U{0..T-1} and
/// noise eps ~ N(0, 1) drawn from Philox at the step held in `step` (one-word u32 step counter), and
/// xt = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, abar = `alpha_bar` (f32 [T]).
pub fn q_sample(dev: &Device, x0: &Tensor, alpha_bar: &Tensor, seed: u64, step: &Tensor) -> Result<QSample> {
    want_dtype("q_sample", x0, DType::F32)?;
    let out = QSample::empty(dev, &x0.shape)?;
    q_sample_into(dev, x0, alpha_bar, seed, step, &out)?;
    Ok(out)
}

/// `q_sample` into preallocated outputs (`QSample::empty`), for a recorded training step.
pub fn q_sample_into(
    dev: &Device,
    x0: &Tensor,
    alpha_bar: &Tensor,
    seed: u64,
    step: &Tensor,
    out: &QSample,
) -> Result<()> {
    const OP: &str = "q_sample";
    want_dtype(OP, x0, DType::F32)?;
    want_step_counter(OP, step)?;
    let timesteps = want_alpha_bar(OP, alpha_bar)?;
    let row_len = x0.shape.get(1..).map(|r| r.iter().product::<usize>());
    if row_len.is_none_or(|d| d == 0) {
        return Err(Error::invalid(OP, format!("x0 of shape {:?} must be [B, D...] with non-empty rows", x0.shape)));
    }
    for (name, t) in [("xt", &out.xt), ("eps", &out.eps)] {
        want_dtype(OP, t, DType::F32)?;
        if t.shape != x0.shape {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: x0.shape.clone(),
                rhs: t.shape.clone(),
                hint: format!(" ({name} must have x0's shape)"),
            });
        }
    }
    let b = x0.shape[0];
    want_dtype(OP, &out.t, DType::U32)?;
    if out.t.shape != [b] {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: x0.shape.clone(),
            rhs: out.t.shape.clone(),
            hint: " (t must be [B] for x0 [B, ...])".into(),
        });
    }
    let n = u32_of(OP, "x0 elements", x0.numel())?;
    if n == 0 {
        return Ok(());
    }
    let (stride, eps_offset) = q_sample_stream(&x0.shape);
    let p = QSampleParams {
        n,
        row_len: row_len.unwrap_or(1) as u32,
        timesteps,
        eps_offset: u32_of(OP, "batch", eps_offset as usize)?,
        seed: split64(seed),
        stride: split64(stride),
    };
    launch_1d(
        dev,
        &Q_SAMPLE,
        &p,
        &[&x0.buf, &alpha_bar.buf, &step.buf, &out.xt.buf, &out.eps.buf, &out.t.buf],
        n as usize,
    )
}

/// alpha_bar is f32 [T] with T > 0; returns T.
fn want_alpha_bar(op: &'static str, alpha_bar: &Tensor) -> Result<u32> {
    want_dtype(op, alpha_bar, DType::F32)?;
    if alpha_bar.rank() != 1 || alpha_bar.numel() == 0 {
        return Err(Error::invalid(op, format!("alpha_bar must be [T] with T > 0, got shape {:?}", alpha_bar.shape)));
    }
    u32_of(op, "timesteps", alpha_bar.numel())
}

/// Sinusoidal timestep embedding: row b of t (u32 [B]) becomes [cos(t f_0), .., cos(t f_{h-1}), sin(t f_0),
/// .., sin(t f_{h-1})] with h = dim / 2 and f_k = max_period^(-k / h) (max_period 10000 in DDPM). `dim` must
/// be even and positive, `max_period` finite and > 1. Integer fixed point: bit-identical on every device,
/// within 1e-7 of the exact values for t below 2^16 (about 6e-8 of that is the rounding to f32).
pub fn timestep_embedding(dev: &Device, t: &Tensor, dim: usize, max_period: f32) -> Result<Tensor> {
    let out = Tensor::empty(dev, &[t.shape.first().copied().unwrap_or(0), dim], DType::F32)?;
    timestep_embedding_into(dev, t, dim, max_period, &out)?;
    Ok(out)
}

/// `timestep_embedding` written into `out` (f32 [B, dim]), a buffer bound elsewhere (a training step's
/// input), without a copy.
pub fn timestep_embedding_into(dev: &Device, t: &Tensor, dim: usize, max_period: f32, out: &Tensor) -> Result<()> {
    const OP: &str = "timestep_embedding";
    want_dtype(OP, t, DType::U32)?;
    if t.rank() != 1 {
        return Err(Error::invalid(OP, format!("t must be [B] (u32), got shape {:?}", t.shape)));
    }
    if dim == 0 || dim % 2 == 1 {
        return Err(Error::invalid(OP, format!("dim = {dim}: the embedding dimension must be even and positive")));
    }
    if !(max_period.is_finite() && max_period > 1.0) {
        return Err(Error::invalid(OP, format!("max_period = {max_period} must be finite and > 1")));
    }
    let b = t.shape[0];
    if out.dtype != DType::F32 || out.shape != [b, dim] {
        return Err(Error::invalid(OP, format!("out {:?} ({}) must be f32 [{b}, {dim}]", out.shape, out.dtype.name())));
    }
    let n = u32_of(OP, "output elements", out.numel())?;
    if n == 0 {
        return Ok(());
    }
    let half = dim / 2;
    // ratio = max_period^(-1 / half) < 1; rounding can only bring it to 1 for max_period within 1e-16 of 1.
    let ratio = (max_period as f64).powf(-1.0 / half as f64);
    let ratio = split64(((ratio * 18_446_744_073_709_551_616.0).round()).min(u64::MAX as f64) as u64);
    let p = EmbedParams { n, dim: dim as u32, half: half as u32, _pad: 0, ratio };
    launch_1d(dev, &TIMESTEP_EMBEDDING, &p, &[&t.buf, &out.buf], n as usize)
}

/// x_t and the predicted noise: f32, one shape, non-empty; returns the element count.
fn want_pair(op: &'static str, xt: &Tensor, eps: &Tensor, eps_name: &str) -> Result<u32> {
    want_dtype(op, xt, DType::F32)?;
    want_dtype(op, eps, DType::F32)?;
    if xt.shape != eps.shape {
        return Err(Error::ShapeMismatch {
            op,
            lhs: xt.shape.clone(),
            rhs: eps.shape.clone(),
            hint: format!(" (x_t and {eps_name} must have one shape)"),
        });
    }
    u32_of(op, "elements", xt.numel())
}

/// A reverse step's x̂_0 clamp: finite and >= 0 (0: off).
fn want_clip(op: &'static str, clip: f32) -> Result<()> {
    if !(clip.is_finite() && clip >= 0.0) {
        return Err(Error::invalid(op, format!("clip = {clip} must be finite and >= 0 (0: off)")));
    }
    Ok(())
}

fn want_t(op: &'static str, what: &str, t: usize, timesteps: usize) -> Result<u32> {
    if t >= timesteps {
        return Err(Error::invalid(
            op,
            format!("{what} = {t} is out of range for a schedule of T = {timesteps} steps"),
        ));
    }
    Ok(t as u32)
}

/// One DDPM reverse step at timestep t (host value, t < T): x_{t-1} = 1 / sqrt(alpha_t) (x_t - beta_t /
/// sqrt(1 - abar_t) eps_pred) + sigma_t z, sigma_t^2 = beta_t (no noise at t = 0), z_i the standard normal
/// element `offset + i` of stream `seed` (ops::rng). Schedule values are read from the device tensors.
pub fn ddpm_step(
    dev: &Device,
    xt: &Tensor,
    eps_pred: &Tensor,
    t: usize,
    sched: &ScheduleTensors,
    seed: u64,
    offset: u64,
) -> Result<Tensor> {
    ddpm_step_clipped(dev, xt, eps_pred, t, sched, seed, offset, 0.0)
}

/// `ddpm_step` with x̂_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) clamped to [-clip, clip] when clip > 0:
/// the mean is then the posterior mean written with x̂_0, c0 clamp(x̂_0) + c1 x_t with c0 = sqrt(abar_{t-1})
/// beta_t / (1 - abar_t) and c1 = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) (abar_{-1} = 1), the same
/// value as the ε form when nothing is clamped. Near t = T a cosine schedule's beta reaches 0.999, where the
/// ε form divides by sqrt(alpha_t) ≈ 0.03 and amplifies any error in eps_pred; images (data in [-1, 1])
/// sample with clip = 1. The noise is the same as `ddpm_step`'s.
#[allow(clippy::too_many_arguments)]
pub fn ddpm_step_clipped(
    dev: &Device,
    xt: &Tensor,
    eps_pred: &Tensor,
    t: usize,
    sched: &ScheduleTensors,
    seed: u64,
    offset: u64,
    clip: f32,
) -> Result<Tensor> {
    const OP: &str = "ddpm_step";
    let n = want_pair(OP, xt, eps_pred, "eps_pred")?;
    let t = want_t(OP, "t", t, sched.check(OP)?)?;
    want_clip(OP, clip)?;
    let out = Tensor::empty(dev, &xt.shape, DType::F32)?;
    if n == 0 {
        return Ok(out);
    }
    let p = DdpmParams { n, t, clip, _pad1: 0, seed: split64(seed), offset: split64(offset) };
    let bufs = [&xt.buf, &eps_pred.buf, &sched.betas.buf, &sched.alphas.buf, &sched.alpha_bar.buf, &out.buf];
    launch_1d(dev, &DDPM_STEP, &p, &bufs, n as usize)?;
    Ok(out)
}

/// One deterministic DDIM step (eta = 0) from timestep t to t_prev (None: to x_0): x0_hat = (x_t - sqrt(1 -
/// abar_t) eps) / sqrt(abar_t), x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps, abar_prev = 1
/// without t_prev. No clipping (see `ddim_step_clipped`).
pub fn ddim_step(
    dev: &Device,
    xt: &Tensor,
    eps_pred: &Tensor,
    t: usize,
    t_prev: Option<usize>,
    sched: &ScheduleTensors,
) -> Result<Tensor> {
    ddim_step_clipped(dev, xt, eps_pred, t, t_prev, sched, 0.0)
}

/// `ddim_step` with x0_hat clamped to [-clip, clip] when clip > 0 (0: no clipping). The step then uses the
/// eps that reconstructs x_t from the clamped x0_hat, (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), so x_prev
/// stays on the line through x_t and x0_hat; keeping the model's eps beside a clamped x0_hat leaves speckle
/// in image samples (measured in docs/benchmarks.md).
pub fn ddim_step_clipped(
    dev: &Device,
    xt: &Tensor,
    eps_pred: &Tensor,
    t: usize,
    t_prev: Option<usize>,
    sched: &ScheduleTensors,
    clip: f32,
) -> Result<Tensor> {
    const OP: &str = "ddim_step";
    let n = want_pair(OP, xt, eps_pred, "eps_pred")?;
    let timesteps = sched.check(OP)?;
    let t32 = want_t(OP, "t", t, timesteps)?;
    if let Some(tp) = t_prev {
        if tp >= t {
            return Err(Error::invalid(OP, format!("t_prev = {tp} must be below t = {t}")));
        }
    }
    want_clip(OP, clip)?;
    let out = Tensor::empty(dev, &xt.shape, DType::F32)?;
    if n == 0 {
        return Ok(out);
    }
    let p = DdimParams {
        n,
        t: t32,
        t_prev: t_prev.unwrap_or(0) as u32,
        has_prev: t_prev.is_some() as u32,
        clip,
        ..Default::default()
    };
    launch_1d(dev, &DDIM_STEP, &p, &[&xt.buf, &eps_pred.buf, &sched.alpha_bar.buf, &out.buf], n as usize)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn v_convert(
    dev: &Device,
    op: &'static str,
    mode: u32,
    a: &Tensor,
    b: &Tensor,
    names: (&str, &str),
    t: &Tensor,
    alpha_bar: &Tensor,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    want_dtype(op, a, DType::F32)?;
    want_dtype(op, b, DType::F32)?;
    want_dtype(op, t, DType::U32)?;
    let timesteps = want_alpha_bar(op, alpha_bar)?;
    if a.shape != b.shape {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.shape.clone(),
            rhs: b.shape.clone(),
            hint: format!(" ({} and {} must have one shape)", names.0, names.1),
        });
    }
    if a.rank() == 0 || t.shape != [a.shape[0]] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.shape.clone(),
            rhs: t.shape.clone(),
            hint: " (t must be u32 [B] for inputs [B, ...])".into(),
        });
    }
    let out = match into {
        Some(o) if o.dtype != DType::F32 || o.shape != a.shape => {
            return Err(Error::ShapeMismatch { op, lhs: o.shape.clone(), rhs: a.shape.clone(), hint: " (out)".into() })
        }
        Some(o) => o.clone(),
        None => Tensor::empty(dev, &a.shape, DType::F32)?,
    };
    let n = u32_of(op, "elements", a.numel())?;
    if n == 0 {
        return Ok(out);
    }
    let p = VParams { n, row_len: (a.numel() / a.shape[0]) as u32, timesteps, mode };
    launch_1d(dev, &V_CONVERT, &p, &[&a.buf, &b.buf, &t.buf, &alpha_bar.buf, &out.buf], n as usize)?;
    Ok(out)
}

/// The noise a v-prediction (Salimans & Ho 2022) stands for: eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t, with
/// t per row (u32 [B]; values past T - 1 read abar[T - 1]). Feed the result to `ddpm_step` or `ddim_step`.
pub fn v_to_eps(dev: &Device, v: &Tensor, xt: &Tensor, t: &Tensor, alpha_bar: &Tensor) -> Result<Tensor> {
    v_convert(dev, "v_to_eps", V_TO_EPS, v, xt, ("v", "x_t"), t, alpha_bar, None)
}

/// The v-prediction training target: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0, t per row (u32 [B], as
/// `q_sample` returns it).
pub fn v_target(dev: &Device, x0: &Tensor, eps: &Tensor, t: &Tensor, alpha_bar: &Tensor) -> Result<Tensor> {
    v_convert(dev, "v_target", V_TARGET, eps, x0, ("eps", "x0"), t, alpha_bar, None)
}

/// `v_target` written into `out` (f32, x0's shape), a buffer bound elsewhere, without a copy.
pub fn v_target_into(
    dev: &Device,
    x0: &Tensor,
    eps: &Tensor,
    t: &Tensor,
    alpha_bar: &Tensor,
    out: &Tensor,
) -> Result<()> {
    v_convert(dev, "v_target", V_TARGET, eps, x0, ("eps", "x0"), t, alpha_bar, Some(out)).map(|_| ())
}
