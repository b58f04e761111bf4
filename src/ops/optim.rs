//! Optimizer kernels, one tensor per call: SGD (momentum, Nesterov, L2 weight decay), Adam/AdamW, the
//! two gradient-clipping kernels, the weight EMA and the step counter. Kernels: shaders/optim.wgsl
//! (schedule in shaders/common/schedule.wgsl); CPU twins: device/cpu/optim.rs. `crate::optim` builds the
//! user-facing `Optimizer` and `Ema` on these.
//!
//! Per-step state lives in buffers, never in params, so a recorded step replays correctly:
//! * the step counter: a u32 tensor of shape [1] holding the 0-based index of the current optimizer step
//!   (`step_counter`). Update kernels read it for the learning-rate schedule and Adam's bias correction
//!   (t = step + 1); `advance_step` increments it and ends a training step;
//! * the clip buffer: an f32 tensor of shape [2], [scale, total_norm] (`clip_buffer`). Update kernels
//!   multiply every gradient element by clip[0] as they read it. `sumsq_partial` (once per gradient tensor,
//!   each at its own slot range of a shared `partials` tensor) and then `clip_scale` write it; with
//!   clipping off it stays [1, 0].
//! * the loss-scale state: an f32 tensor of shape [4], [S, finite steps in a row, steps skipped, the S of
//!   the latest step] (`loss_scale_buffer`), which `clip_guard_scaled` reads and updates; its first word
//!   seeds the backward of a scaled loss. A step it skips carries `STEP_SKIP` in the step counter (and
//!   clip[0] = -1): the update kernels then change nothing and `advance_step` clears the bit.
//! * the guard flag: a u32 tensor of shape [4], [tripped, step, what, index] (`guard_flag`), zero until
//!   `guard_finite` first sees a non-finite value; then it keeps that first one (see `GuardParams`).

use super::{launch_1d, u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::optim::{
    schedule_lr_of, AdamParams, AdvanceParams, ClipGuardParams, ClipParams, EmaParams, GuardParams, ScaledGuardParams,
    ScheduleParams, SgdParams, SumsqParams, ADAM, ADVANCE_STEP, CLIP_GUARD, CLIP_GUARD_SCALED, CLIP_SCALE, EMA,
    GUARD_FINITE, SCHED_CONSTANT, SCHED_COSINE, SCHED_LINEAR, SGD, SUMSQ_PARTIAL, WG,
};
use crate::tensor::{DType, Tensor};

/// Fewest elements one `sumsq_partial` workgroup sums (8 per thread).
pub const MIN_CHUNK: usize = 8 * WG;
/// Most partial sums one tensor contributes: bigger tensors get bigger chunks, so that the single
/// `clip_scale` workgroup has a bounded amount of work whatever the model size.
pub const MAX_SLOTS_PER_TENSOR: usize = 4096;

/// Learning rate as a function of the step counter (see shaders/common/schedule.wgsl).
/// A learning-rate schedule, evaluated in-kernel from the step counter on the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `lr` at every step.
    Constant {
        /// The peak (or constant) learning rate.
        lr: f32,
    },
    /// Linear warmup from lr/warmup to `lr` over `warmup` steps, then a linear decay to `min_lr` at step
    /// `total`, and `min_lr` after. `min_lr == lr` gives warmup followed by a constant rate.
    Linear {
        /// The peak (or constant) learning rate.
        lr: f32,
        /// Steps of linear warmup.
        warmup: u32,
        /// The step at which the decay ends.
        total: u32,
        /// The rate at and after `total`.
        min_lr: f32,
    },
    /// Linear warmup as `Linear`, then a half cosine from `lr` down to `min_lr` at step `total`.
    Cosine {
        /// The peak (or constant) learning rate.
        lr: f32,
        /// Steps of linear warmup.
        warmup: u32,
        /// The step at which the decay ends.
        total: u32,
        /// The rate at and after `total`.
        min_lr: f32,
    },
    /// Warmup-stable-decay: linear warmup as `Linear`, `lr` until step `hold`, then a linear decay to
    /// `min_lr` at step `total`. A run can stop anywhere in the stable phase and continue later, and the
    /// short decay at the end settles the weights.
    Wsd {
        /// The peak (or constant) learning rate.
        lr: f32,
        /// Steps of linear warmup.
        warmup: u32,
        /// The step at which the decay begins.
        hold: u32,
        /// The step at which the decay ends.
        total: u32,
        /// The rate at and after `total`.
        min_lr: f32,
    },
}

fn bad(op: &'static str, field: &str, value: impl std::fmt::Display, rule: &str) -> Error {
    Error::invalid(op, format!("{field} = {value} is out of range: {rule}"))
}

impl Schedule {
    /// Checks the fields: lr finite and >= 0, 0 <= min_lr <= lr, warmup <= total, hold <= total.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let p = self.params();
        if !(p.base_lr.is_finite() && p.base_lr >= 0.0) {
            return Err(bad(op, "lr", p.base_lr, "must be finite and >= 0"));
        }
        if !matches!(self, Schedule::Constant { .. }) {
            if !(p.min_lr.is_finite() && p.min_lr >= 0.0 && p.min_lr <= p.base_lr) {
                return Err(bad(op, "min_lr", p.min_lr, &format!("must be in [0, lr = {}]", p.base_lr)));
            }
            if p.warmup > p.total {
                return Err(bad(op, "warmup", p.warmup, &format!("must be <= total = {}", p.total)));
            }
            if p.hold > p.total {
                return Err(bad(op, "hold", p.hold, &format!("must be <= total = {}", p.total)));
            }
        }
        Ok(())
    }

    /// The kernels' params fields for this schedule.
    pub fn params(&self) -> ScheduleParams {
        let (kind, base_lr, warmup, hold, total, min_lr) = match *self {
            Schedule::Constant { lr } => (SCHED_CONSTANT, lr, 0, 0, 0, lr),
            Schedule::Linear { lr, warmup, total, min_lr } => (SCHED_LINEAR, lr, warmup, 0, total, min_lr),
            Schedule::Cosine { lr, warmup, total, min_lr } => (SCHED_COSINE, lr, warmup, 0, total, min_lr),
            Schedule::Wsd { lr, warmup, hold, total, min_lr } => (SCHED_LINEAR, lr, warmup, hold, total, min_lr),
        };
        ScheduleParams { kind, warmup, total, hold, base_lr, min_lr, ..Default::default() }
    }

    /// The learning rate at 0-based step `step`, computed on the host exactly as the kernels do.
    pub fn lr_at(&self, step: u32) -> f32 {
        schedule_lr_of(&self.params(), step)
    }
}

/// SGD hyper-parameters (PyTorch's semantics: L2 weight decay added to the gradient; the momentum buffer
/// starts at zero, so the first step's buffer is (1 - dampening) * g).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0: plain SGD).
    pub momentum: f32,
    /// Dampening of the momentum buffer's gradient term.
    pub dampening: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay factor.
    pub weight_decay: f32,
}

impl SgdConfig {
    /// Checks the values (finite, in range), naming `op` in the error.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(bad(op, "momentum", self.momentum, "must be in [0, 1)"));
        }
        if !(self.dampening.is_finite() && (0.0..1.0).contains(&self.dampening)) {
            return Err(bad(op, "dampening", self.dampening, "must be in [0, 1)"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(bad(op, "weight_decay", self.weight_decay, "must be finite and >= 0"));
        }
        if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "nesterov = true needs momentum > 0 and dampening = 0 (got momentum = {}, dampening = {})",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }
}

/// Adam hyper-parameters. `decoupled`: false is Adam (L2 weight decay added to the gradient), true is
/// AdamW (`p *= 1 - lr * weight_decay` before the update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Decay of the first-moment average.
    pub beta1: f32,
    /// Decay of the second-moment average.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Weight decay factor.
    pub weight_decay: f32,
    /// AdamW's decoupled weight decay.
    pub decoupled: bool,
}

impl AdamConfig {
    /// Checks the values (finite, in range), naming `op` in the error.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return Err(bad(op, name, b, "must be in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(bad(op, "eps", self.eps, "must be finite and > 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(bad(op, "weight_decay", self.weight_decay, "must be finite and >= 0"));
        }
        Ok(())
    }
}

/// A step counter at `value`: u32, shape [1].
pub fn step_counter(dev: &Device, value: u32) -> Result<Tensor> {
    Tensor::from_u32(dev, &[1], &[value])
}

/// A clip buffer [scale, total_norm] = [1, 0]: f32, shape [2] (the value when clipping is off).
pub fn clip_buffer(dev: &Device) -> Result<Tensor> {
    Tensor::from_f32(dev, &[2], &[1.0, 0.0])
}

/// A loss-scale state [S, 0, 0, S] starting at scale `init`: f32, shape [4] (`clip_guard_scaled`).
pub fn loss_scale_buffer(dev: &Device, init: f32) -> Result<Tensor> {
    if !(init.is_finite() && init >= 1.0) {
        return Err(bad("loss_scale_buffer", "init", init, "must be finite and >= 1"));
    }
    Tensor::from_f32(dev, &[4], &[init, 0.0, 0.0, init])
}

fn want_step(op: &'static str, step: &Tensor) -> Result<()> {
    want_dtype(op, step, DType::U32)?;
    if step.numel() != 1 {
        return Err(Error::invalid(op, format!("the step counter must hold one u32, got shape {:?}", step.shape)));
    }
    Ok(())
}

fn want_clip(op: &'static str, clip: &Tensor) -> Result<()> {
    want_dtype(op, clip, DType::F32)?;
    if clip.numel() != 2 {
        return Err(Error::invalid(
            op,
            format!("the clip buffer must hold two f32 [scale, norm], got shape {:?}", clip.shape),
        ));
    }
    Ok(())
}

/// `t` is f32 and of the parameter `p`'s shape (a moment, a gradient, an average).
pub(super) fn same_shape(op: &'static str, what: &str, p: &Tensor, t: &Tensor) -> Result<()> {
    want_dtype(op, t, DType::F32)?;
    if p.shape != t.shape {
        return Err(Error::ShapeMismatch {
            op,
            lhs: p.shape.clone(),
            rhs: t.shape.clone(),
            hint: format!(" (parameter and {what} must have one shape)"),
        });
    }
    Ok(())
}

/// Adds `by` to the step counter (a training step ends with `advance_step(dev, step, 1)`).
pub fn advance_step(dev: &Device, step: &Tensor, by: u32) -> Result<()> {
    want_step("advance_step", step)?;
    let p = AdvanceParams { by, ..Default::default() };
    dev.dispatch(Dispatch::new(&ADVANCE_STEP, &p, &[&step.buf], [1, 1, 1]))
}

/// One SGD update of `param` in place. `momentum_buf` (same shape as `param`) is required when
/// `cfg.momentum > 0`. With momentum 0 it is neither read nor written: pass any f32 tensor (bound as a
/// placeholder) or None (a one-word placeholder is allocated).
#[allow(clippy::too_many_arguments)]
pub fn sgd(
    dev: &Device,
    sched: &Schedule,
    cfg: &SgdConfig,
    param: &Tensor,
    grad: &Tensor,
    momentum_buf: Option<&Tensor>,
    step: &Tensor,
    clip: &Tensor,
) -> Result<()> {
    const OP: &str = "sgd";
    sched.validate(OP)?;
    cfg.validate(OP)?;
    want_dtype(OP, param, DType::F32)?;
    same_shape(OP, "gradient", param, grad)?;
    want_step(OP, step)?;
    want_clip(OP, clip)?;
    let placeholder;
    let mom = match momentum_buf {
        Some(m) if cfg.momentum == 0.0 => {
            want_dtype(OP, m, DType::F32)?;
            m
        }
        Some(m) => {
            same_shape(OP, "momentum buffer", param, m)?;
            m
        }
        None if cfg.momentum == 0.0 => {
            placeholder = Tensor::empty(dev, &[1], DType::F32)?;
            &placeholder
        }
        None => {
            return Err(Error::invalid(OP, format!("momentum = {} needs a momentum buffer", cfg.momentum)));
        }
    };
    let n = param.numel();
    if n == 0 {
        return Ok(());
    }
    let p = SgdParams {
        sched: sched.params(),
        n: u32_of(OP, "elements", n)?,
        momentum: cfg.momentum,
        dampening: cfg.dampening,
        nesterov: cfg.nesterov as u32,
        weight_decay: cfg.weight_decay,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    launch_1d(dev, &SGD, &p, &[&param.buf, &grad.buf, &mom.buf, &step.buf, &clip.buf], n)
}

/// One Adam or AdamW update of `param`, `m` and `v` in place (`m`, `v`: same shape as `param`, zero at
/// the start of training).
#[allow(clippy::too_many_arguments)]
pub fn adam(
    dev: &Device,
    sched: &Schedule,
    cfg: &AdamConfig,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &Tensor,
    clip: &Tensor,
) -> Result<()> {
    const OP: &str = "adam";
    sched.validate(OP)?;
    cfg.validate(OP)?;
    want_dtype(OP, param, DType::F32)?;
    same_shape(OP, "gradient", param, grad)?;
    same_shape(OP, "first moment m", param, m)?;
    same_shape(OP, "second moment v", param, v)?;
    want_step(OP, step)?;
    want_clip(OP, clip)?;
    let n = param.numel();
    if n == 0 {
        return Ok(());
    }
    let p = AdamParams {
        sched: sched.params(),
        n: u32_of(OP, "elements", n)?,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        decoupled: cfg.decoupled as u32,
        _pad0: 0,
        _pad1: 0,
    };
    launch_1d(dev, &ADAM, &p, &[&param.buf, &grad.buf, &m.buf, &v.buf, &step.buf, &clip.buf], n)
}

/// (elements per workgroup, partial sums) of `sumsq_partial` over `n` elements.
pub fn sumsq_layout(n: usize) -> (usize, usize) {
    if n == 0 {
        return (MIN_CHUNK, 0);
    }
    let chunk = n.div_ceil(MAX_SLOTS_PER_TENSOR).div_ceil(WG).max(MIN_CHUNK / WG) * WG;
    (chunk, n.div_ceil(chunk))
}

/// Writes the sums of squares of `x`, one per chunk (see `sumsq_layout`), to `partials[slot..]`, and
/// returns the number of slots written.
pub fn sumsq_partial(dev: &Device, x: &Tensor, partials: &Tensor, slot: usize) -> Result<usize> {
    const OP: &str = "sumsq_partial";
    want_dtype(OP, x, DType::F32)?;
    want_dtype(OP, partials, DType::F32)?;
    let n = x.numel();
    let (chunk, slots) = sumsq_layout(n);
    if slot + slots > partials.numel() {
        return Err(Error::invalid(
            OP,
            format!(
                "a tensor of shape {:?} needs partial slots {slot}..{} but the partials buffer holds {}",
                x.shape,
                slot + slots,
                partials.numel()
            ),
        ));
    }
    if slots == 0 {
        return Ok(0);
    }
    let p = SumsqParams {
        n: u32_of(OP, "elements", n)?,
        chunk: u32_of(OP, "chunk", chunk)?,
        slot: u32_of(OP, "slot", slot)?,
        _pad0: 0,
    };
    let groups = groups_1d(slots, 1, dev.max_groups_per_dim());
    dev.dispatch(Dispatch::new(&SUMSQ_PARTIAL, &p, &[&x.buf, &partials.buf], groups))?;
    Ok(slots)
}

/// Sums `partials[..n_partials]` into the global norm and writes clip = [min(1, max_norm / (norm +
/// 1e-6)), norm]. One workgroup; a fixed order of additions.
pub fn clip_scale(dev: &Device, partials: &Tensor, n_partials: usize, max_norm: f32, clip: &Tensor) -> Result<()> {
    const OP: &str = "clip_scale";
    want_dtype(OP, partials, DType::F32)?;
    want_clip(OP, clip)?;
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(bad(OP, "max_norm", max_norm, "must be finite and > 0"));
    }
    if n_partials > partials.numel() {
        return Err(Error::invalid(
            OP,
            format!("n_partials = {n_partials} but the partials buffer holds {}", partials.numel()),
        ));
    }
    let p = ClipParams { n_partials: u32_of(OP, "n_partials", n_partials)?, max_norm, _pad0: 0, _pad1: 0 };
    dev.dispatch(Dispatch::new(&CLIP_SCALE, &p, &[&partials.buf, &clip.buf], [1, 1, 1]))
}

/// `ema = d * ema + (1 - d) * param` with d = decay, or min(decay, (1 + step) / (10 + step)) with `warmup`.
pub fn ema(dev: &Device, avg: &Tensor, param: &Tensor, step: &Tensor, decay: f32, warmup: bool) -> Result<()> {
    const OP: &str = "ema";
    if !(decay.is_finite() && (0.0..=1.0).contains(&decay)) {
        return Err(bad(OP, "decay", decay, "must be in [0, 1]"));
    }
    want_dtype(OP, avg, DType::F32)?;
    same_shape(OP, "average", avg, param)?;
    want_step(OP, step)?;
    let n = avg.numel();
    if n == 0 {
        return Ok(());
    }
    let p = EmaParams { n: u32_of(OP, "elements", n)?, decay, warmup: warmup as u32, _pad0: 0 };
    launch_1d(dev, &EMA, &p, &[&avg.buf, &param.buf, &step.buf], n)
}

/// A clear guard flag [tripped, step, what, index] = [0, 0, 0, 0]: u32, shape [4].
pub fn guard_flag(dev: &Device) -> Result<Tensor> {
    Tensor::from_u32(dev, &[4], &[0; 4])
}

/// Records in `flag`, unless it holds a value already, the first non-finite value of `x[..n]`:
/// [1, step[0] + offset, what, tag + its index]. One workgroup: meant for short arrays (a loss, partial
/// sums) or checks outside the training step.
#[allow(clippy::too_many_arguments)]
pub fn guard_finite(
    dev: &Device,
    x: &Tensor,
    n: usize,
    step: &Tensor,
    flag: &Tensor,
    what: u32,
    offset: u32,
    tag: u32,
) -> Result<()> {
    const OP: &str = "guard_finite";
    want_dtype(OP, x, DType::F32)?;
    want_step(OP, step)?;
    want_dtype(OP, flag, DType::U32)?;
    if flag.numel() != 4 {
        return Err(Error::invalid(OP, format!("the guard flag must hold four u32, got shape {:?}", flag.shape)));
    }
    if n > x.numel() {
        return Err(Error::invalid(OP, format!("n = {n} but the tensor holds {}", x.numel())));
    }
    if n == 0 {
        return Ok(());
    }
    let p = GuardParams { n: u32_of(OP, "n", n)?, what, offset, tag };
    dev.dispatch(Dispatch::new(&GUARD_FINITE, &p, &[&x.buf, &step.buf, &flag.buf], [1, 1, 1]))
}

/// `clip_scale` (with `max_norm`; none leaves `clip` as it is), then `guard_finite` on the loss
/// (`loss[0]`, what `GUARD_LOSS`) and on `partials[..n_partials]` (`GUARD_GRADIENT`), both with `offset`
/// and tag 0: one dispatch for what takes three.
#[allow(clippy::too_many_arguments)]
pub fn clip_guard(
    dev: &Device,
    partials: &Tensor,
    n_partials: usize,
    max_norm: Option<f32>,
    loss: &Tensor,
    step: &Tensor,
    clip: &Tensor,
    flag: &Tensor,
    offset: u32,
) -> Result<()> {
    const OP: &str = "clip_guard";
    let n_partials = check_clip_guard(OP, partials, n_partials, max_norm, loss, step, clip, flag)?;
    let p = ClipGuardParams { n_partials, max_norm: max_norm.unwrap_or(0.0), clip: max_norm.is_some() as u32, offset };
    let bufs = [&partials.buf, &loss.buf, &step.buf, &clip.buf, &flag.buf];
    dev.dispatch(Dispatch::new(&CLIP_GUARD, &p, &bufs, [1, 1, 1]))
}

/// `clip_guard` for the gradients of a loss scaled by `scale[0]` (the loss-scale state, f32 [4],
/// `loss_scale_buffer`): writes clip[0] = (the clipping factor of the unscaled norm, 1 without
/// `max_norm`) / S and clip[1] = the unscaled norm, so the update kernels unscale as they clip. With
/// `interval` (dynamic scaling), a non-finite sum of squares skips the step (`STEP_SKIP` in `step`,
/// clip[0] = -1), halves S (not below 1) and counts the skip without tripping the guard, and `interval`
/// finite steps in a row double S; the guard still trips on a non-finite loss, and on a non-finite
/// gradient norm at a fixed scale (`interval` None) or with S at 1. One dispatch, as `clip_guard`.
#[allow(clippy::too_many_arguments)]
pub fn clip_guard_scaled(
    dev: &Device,
    partials: &Tensor,
    n_partials: usize,
    max_norm: Option<f32>,
    loss: &Tensor,
    step: &Tensor,
    clip: &Tensor,
    flag: &Tensor,
    scale: &Tensor,
    interval: Option<u32>,
    offset: u32,
) -> Result<()> {
    const OP: &str = "clip_guard_scaled";
    let n_partials = check_clip_guard(OP, partials, n_partials, max_norm, loss, step, clip, flag)?;
    want_dtype(OP, scale, DType::F32)?;
    if scale.numel() != 4 {
        return Err(Error::invalid(
            OP,
            format!("the loss-scale state must hold four f32, got shape {:?}", scale.shape),
        ));
    }
    if let Some(i) = interval.filter(|&i| i == 0 || i > 1 << 24) {
        return Err(bad(OP, "interval", i, "must be in 1..=2^24"));
    }
    let p = ScaledGuardParams {
        n_partials,
        max_norm: max_norm.unwrap_or(0.0),
        clip: max_norm.is_some() as u32,
        offset,
        dynamic: interval.is_some() as u32,
        interval: interval.unwrap_or(0),
        _pad0: 0,
        _pad1: 0,
    };
    let bufs = [&partials.buf, &loss.buf, &step.buf, &clip.buf, &flag.buf, &scale.buf];
    dev.dispatch(Dispatch::new(&CLIP_GUARD_SCALED, &p, &bufs, [1, 1, 1]))
}

/// The checks `clip_guard` and `clip_guard_scaled` share; the partials' count as the params' u32.
#[allow(clippy::too_many_arguments)]
fn check_clip_guard(
    op: &'static str,
    partials: &Tensor,
    n_partials: usize,
    max_norm: Option<f32>,
    loss: &Tensor,
    step: &Tensor,
    clip: &Tensor,
    flag: &Tensor,
) -> Result<u32> {
    want_dtype(op, partials, DType::F32)?;
    want_dtype(op, loss, DType::F32)?;
    want_clip(op, clip)?;
    want_step(op, step)?;
    want_dtype(op, flag, DType::U32)?;
    if flag.numel() != 4 {
        return Err(Error::invalid(op, format!("the guard flag must hold four u32, got shape {:?}", flag.shape)));
    }
    if loss.numel() != 1 {
        return Err(Error::invalid(op, format!("the loss must have one element, it has shape {:?}", loss.shape)));
    }
    if let Some(m) = max_norm.filter(|m| !(m.is_finite() && *m > 0.0)) {
        return Err(bad(op, "max_norm", m, "must be finite and > 0"));
    }
    if n_partials > partials.numel() {
        return Err(Error::invalid(
            op,
            format!("n_partials = {n_partials} but the partials buffer holds {}", partials.numel()),
        ));
    }
    u32_of(op, "n_partials", n_partials)
}
