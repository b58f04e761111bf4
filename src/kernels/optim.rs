//! The `optim` kernel family (shaders/optim.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Threads per workgroup of the optimizer kernels.
pub const WG: usize = 256;

/// Uniform params of `ScheduleParams` in shaders/optim.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ScheduleParams {
    /// WGSL field `kind`.
    pub kind: u32,
    /// WGSL field `warmup`.
    pub warmup: u32,
    /// WGSL field `total`.
    pub total: u32,
    /// The decay starts at max(warmup, hold) (0 for `Linear` and `Cosine`).
    pub hold: u32,
    /// WGSL field `base_lr`.
    pub base_lr: f32,
    /// WGSL field `min_lr`.
    pub min_lr: f32,
    /// Padding to the WGSL layout.
    pub _pad1: u32,
    /// Padding to the WGSL layout.
    pub _pad2: u32,
}

/// Uniform params of `AdvanceParams` in shaders/optim.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AdvanceParams {
    /// WGSL field `by`.
    pub by: u32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 3],
}

/// Uniform params of `SgdParams` in shaders/optim.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SgdParams {
    /// WGSL field `sched`.
    pub sched: ScheduleParams,
    /// WGSL field `n`.
    pub n: u32,
    /// 0: plain SGD, the momentum buffer is neither read nor written
    pub momentum: f32,
    /// WGSL field `dampening`.
    pub dampening: f32,
    /// WGSL field `nesterov`.
    pub nesterov: u32,
    /// L2: weight_decay * p is added to the (clipped) gradient
    pub weight_decay: f32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 3],
}

/// Uniform params of `AdamParams` in shaders/optim.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AdamParams {
    /// WGSL field `sched`.
    pub sched: ScheduleParams,
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `beta1`.
    pub beta1: f32,
    /// WGSL field `beta2`.
    pub beta2: f32,
    /// WGSL field `eps`.
    pub eps: f32,
    /// WGSL field `weight_decay`.
    pub weight_decay: f32,
    /// 0: Adam, L2 added to the gradient; 1: AdamW, p *= 1 - lr * weight_decay
    pub decoupled: u32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 2],
}

/// Uniform params of `SumsqParams` in shaders/optim.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SumsqParams {
    /// WGSL field `n`.
    pub n: u32,
    /// Elements per workgroup, a multiple of WG
    pub chunk: u32,
    /// First slot of `partials` this tensor writes (one per workgroup)
    pub slot: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
}

/// Uniform params of `ClipParams` in shaders/optim.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ClipParams {
    /// WGSL field `n_partials`.
    pub n_partials: u32,
    /// WGSL field `max_norm`.
    pub max_norm: f32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 2],
}

/// Uniform params of `EmaParams` in shaders/optim.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct EmaParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `decay`.
    pub decay: f32,
    /// 1: decay_t = min(decay, (1 + step) / (10 + step))
    pub warmup: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
}

/// Entry point `advance_step` of shaders/optim.wgsl.
pub static ADVANCE_STEP: Kernel = Kernel { shader: "optim", entry: "advance_step" };

/// Entry point `sgd` of shaders/optim.wgsl.
pub static SGD: Kernel = Kernel { shader: "optim", entry: "sgd" };

/// Entry point `adam` of shaders/optim.wgsl.
pub static ADAM: Kernel = Kernel { shader: "optim", entry: "adam" };

/// Entry point `sumsq_partial` of shaders/optim.wgsl.
pub static SUMSQ_PARTIAL: Kernel = Kernel { shader: "optim", entry: "sumsq_partial" };

/// Entry point `clip_scale` of shaders/optim.wgsl.
pub static CLIP_SCALE: Kernel = Kernel { shader: "optim", entry: "clip_scale" };

/// Entry point `ema` of shaders/optim.wgsl.
pub static EMA: Kernel = Kernel { shader: "optim", entry: "ema" };

/// Schedule kind codes of shaders/common/schedule.wgsl.
pub const SCHED_CONSTANT: u32 = 0;

/// Schedule kind code: linear decay.
pub const SCHED_LINEAR: u32 = 1;

/// Schedule kind code: cosine decay.
pub const SCHED_COSINE: u32 = 2;

// The host twin of shaders/common/schedule.wgsl: the CPU twins step with it, and the ops report the
// learning rate of a step with the same arithmetic.

const HALF_PI: f32 = 1.570_796_4;

/// cos(x) for 0 <= x <= pi/4: the shader's Taylor polynomial (`sched_cos`).
#[allow(clippy::excessive_precision)]
fn sched_cos(x: f32) -> f32 {
    let x2 = x * x;
    1.0 + x2 * (-0.5 + x2 * (0.041666668 + x2 * (-0.0013888889 + x2 * (2.4801588e-5 + x2 * -2.755732e-7))))
}

/// sin(x) for 0 <= x <= pi/4 (`sched_sin`).
#[allow(clippy::excessive_precision)]
fn sched_sin(x: f32) -> f32 {
    let x2 = x * x;
    x * (1.0 + x2 * (-0.16666667 + x2 * (0.008333334 + x2 * (-1.984127e-4 + x2 * (2.7557319e-6 + x2 * -2.5052108e-8)))))
}

/// 0.5 * (1 + cos(pi * p)) given q = 1 - p (`cosine_factor`).
fn cosine_factor(p: f32, q: f32) -> f32 {
    if p <= 0.5 {
        let c = sched_cos(HALF_PI * p);
        c * c
    } else {
        let s = sched_sin(HALF_PI * q);
        s * s
    }
}

/// The learning rate at 0-based step `step` (twin of `schedule_lr` in shaders/common/schedule.wgsl).
pub fn schedule_lr(kind: u32, base_lr: f32, min_lr: f32, warmup: u32, hold: u32, total: u32, step: u32) -> f32 {
    if kind == SCHED_CONSTANT {
        return base_lr;
    }
    if step < warmup {
        return base_lr * (step + 1) as f32 / warmup as f32;
    }
    let start = warmup.max(hold);
    if step < start {
        return base_lr;
    }
    let span = total - start.min(total);
    let (mut p, mut q) = (1.0f32, 0.0f32);
    if span > 0 {
        let s = step.min(total);
        p = (s - start) as f32 / span as f32;
        q = (total - s) as f32 / span as f32;
    }
    if kind == SCHED_LINEAR {
        return min_lr + (base_lr - min_lr) * q;
    }
    min_lr + (base_lr - min_lr) * cosine_factor(p, q)
}

/// `schedule_lr` with the schedule fields of `s`.
pub fn schedule_lr_of(s: &ScheduleParams, step: u32) -> f32 {
    schedule_lr(s.kind, s.base_lr, s.min_lr, s.warmup, s.hold, s.total, step)
}
