//! The optimizer kernels over many tensors at once: `adam_multi`, `sgd_multi`, `ema_multi` and
//! `sumsq_multi` (shaders/optim.wgsl; CPU twins: device/cpu/optim_multi.rs) serve up to
//! `kernels::optim::SLOTS` tensors per dispatch (`sumsq_multi_wide`: `SUMSQ_SLOTS_WIDE`) and compute, element for element, what the one-tensor
//! kernels of `ops::optim` compute. A kernel binds four buffers per tensor at most, more than WebGPU's
//! default eight storage buffers: `fits` says whether the device takes it, and callers fall back to the
//! one-tensor kernels where it does not.

use super::optim::{same_shape, sumsq_layout, AdamConfig, Schedule, SgdConfig};
use super::{launch_1d, u32_of, want_dtype};
use crate::device::{Buffer, Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::optim::{
    AdamMultiParams, AdamParams, EmaMultiParams, EmaParams, SgdMultiParams, SgdParams, SumsqMultiParams, ADAM_MULTI,
    ADAM_MULTI_WIDE, ADAM_SLOTS_WIDE, EMA_MULTI, EMA_MULTI_WIDE, EMA_SLOTS_WIDE, SGD_MULTI, SLOTS, SLOT_TABLE,
    SUMSQ_MULTI, SUMSQ_MULTI_WIDE, SUMSQ_SLOTS_WIDE, WG,
};
use crate::kernels::Kernel;
use crate::tensor::{DType, Tensor};

/// Whether `dev` can bind every storage buffer of multi-tensor kernel `k`.
pub fn fits(dev: &Device, k: &Kernel) -> bool {
    k.info().is_ok_and(|i| i.bindings.len() - 1 <= dev.max_storage_buffers() as usize)
}

/// Whether `dev` runs every multi-tensor optimizer kernel.
pub fn supported(dev: &Device) -> bool {
    [&ADAM_MULTI, &SGD_MULTI, &EMA_MULTI, &SUMSQ_MULTI].iter().all(|k| fits(dev, k))
}

/// Tensors per `sumsq_multi` dispatch on `dev`: `SUMSQ_SLOTS_WIDE` where it binds `sumsq_multi_wide`,
/// else `SLOTS`.
pub fn sumsq_per_dispatch(dev: &Device) -> usize {
    if fits(dev, &SUMSQ_MULTI_WIDE) {
        SUMSQ_SLOTS_WIDE
    } else {
        SLOTS
    }
}

/// Tensors per `adam_multi` dispatch on `dev`: `ADAM_SLOTS_WIDE` where it binds `adam_multi_wide`,
/// else `SLOTS`.
pub fn adam_per_dispatch(dev: &Device) -> usize {
    if fits(dev, &ADAM_MULTI_WIDE) {
        ADAM_SLOTS_WIDE
    } else {
        SLOTS
    }
}

/// Tensors per `ema_multi` dispatch on `dev`: `EMA_SLOTS_WIDE` where it binds `ema_multi_wide`, else
/// `SLOTS`.
pub fn ema_per_dispatch(dev: &Device) -> usize {
    if fits(dev, &EMA_MULTI_WIDE) {
        EMA_SLOTS_WIDE
    } else {
        SLOTS
    }
}

/// Per-slot element counts and starts (multiples of WG) of one group of tensors, and the total.
pub(crate) fn layout(op: &'static str, sizes: &[usize]) -> Result<([u32; SLOT_TABLE], [u32; SLOT_TABLE], u32)> {
    let (mut n, mut start) = ([0u32; SLOT_TABLE], [0u32; SLOT_TABLE]);
    let mut at = 0usize;
    for (k, &len) in sizes.iter().enumerate() {
        n[k] = u32_of(op, "elements", len)?;
        start[k] = u32_of(op, "elements", at)?;
        at += len.div_ceil(WG) * WG;
    }
    let total = u32_of(op, "elements", at)?;
    for s in start.iter_mut().skip(sizes.len()) {
        *s = total;
    }
    Ok((n, start, total))
}

/// One-word stand-ins for the buffers of unused slots (distinct, so no buffer is bound twice).
pub(crate) fn spares(dev: &Device, n: usize) -> Result<Vec<Tensor>> {
    (0..n).map(|_| Tensor::empty(dev, &[1], DType::F32)).collect()
}

/// Checks one group's lists: at most `most` tensors, each f32 and of its parameter's shape.
fn check_lists(op: &'static str, most: usize, params: &[&Tensor], others: &[(&str, &[&Tensor])]) -> Result<()> {
    if params.len() > most {
        return Err(Error::invalid(op, format!("{} tensors in one dispatch, at most {most}", params.len())));
    }
    for (what, list) in others {
        if list.len() != params.len() {
            return Err(Error::invalid(op, format!("{} parameters but {} {what}s", params.len(), list.len())));
        }
        for (p, t) in params.iter().zip(list.iter()) {
            same_shape(op, what, p, t)?;
        }
    }
    Ok(())
}

/// `ops::optim::adam` on up to `adam_per_dispatch(dev)` tensors (`params[k]`, `grads[k]`, `m[k]`, `v[k]`)
/// in one dispatch (the wide kernel past SLOTS).
#[allow(clippy::too_many_arguments)]
pub fn adam_multi(
    dev: &Device,
    sched: &Schedule,
    cfg: &AdamConfig,
    params: &[&Tensor],
    grads: &[&Tensor],
    m: &[&Tensor],
    v: &[&Tensor],
    step: &Tensor,
    clip: &Tensor,
) -> Result<()> {
    const OP: &str = "adam_multi";
    sched.validate(OP)?;
    cfg.validate(OP)?;
    let most = adam_per_dispatch(dev);
    check_lists(
        OP,
        most,
        params,
        &[("parameter", params), ("gradient", grads), ("first moment", m), ("second moment", v)],
    )?;
    let (kernel, slots) = if params.len() > SLOTS { (&ADAM_MULTI_WIDE, most) } else { (&ADAM_MULTI, SLOTS) };
    let sizes: Vec<usize> = params.iter().map(|p| p.numel()).collect();
    let (n, start, total) = layout(OP, &sizes)?;
    if total == 0 {
        return Ok(());
    }
    let a = AdamParams {
        sched: sched.params(),
        n: 0,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        decoupled: cfg.decoupled as u32,
        _pad0: 0,
        _pad1: 0,
    };
    let p = AdamMultiParams { a, n, start, total, ..Default::default() };
    let spare = spares(dev, 4 * (slots - params.len()))?;
    let mut bufs: Vec<&Buffer> = Vec::with_capacity(4 * slots + 2);
    for k in 0..params.len() {
        bufs.extend([&params[k].buf, &grads[k].buf, &m[k].buf, &v[k].buf]);
    }
    bufs.extend(spare.iter().map(|t| &t.buf));
    bufs.extend([&step.buf, &clip.buf]);
    launch_1d(dev, kernel, &p, &bufs, total as usize)
}

/// `ops::optim::sgd` on up to SLOTS tensors in one dispatch; `momentum` holds their momentum buffers
/// (empty for SGD without momentum).
#[allow(clippy::too_many_arguments)]
pub fn sgd_multi(
    dev: &Device,
    sched: &Schedule,
    cfg: &SgdConfig,
    params: &[&Tensor],
    grads: &[&Tensor],
    momentum: &[&Tensor],
    step: &Tensor,
    clip: &Tensor,
) -> Result<()> {
    const OP: &str = "sgd_multi";
    sched.validate(OP)?;
    cfg.validate(OP)?;
    let with_mom = cfg.momentum != 0.0;
    let moms: &[&Tensor] = if with_mom { momentum } else { params };
    check_lists(OP, SLOTS, params, &[("parameter", params), ("gradient", grads), ("momentum buffer", moms)])?;
    let sizes: Vec<usize> = params.iter().map(|p| p.numel()).collect();
    let (n, start, total) = layout(OP, &sizes)?;
    if total == 0 {
        return Ok(());
    }
    let s = SgdParams {
        sched: sched.params(),
        n: 0,
        momentum: cfg.momentum,
        dampening: cfg.dampening,
        nesterov: cfg.nesterov as u32,
        weight_decay: cfg.weight_decay,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let p = SgdMultiParams { s, n, start, total, ..Default::default() };
    // Without momentum each slot's momentum binding is a stand-in the kernel never touches.
    let spare = spares(dev, 3 * SLOTS)?;
    let mut bufs: Vec<&Buffer> = Vec::with_capacity(3 * SLOTS + 2);
    for k in 0..SLOTS {
        match params.get(k) {
            Some(t) => {
                let b = if with_mom { &momentum[k].buf } else { &spare[3 * k + 2].buf };
                bufs.extend([&t.buf, &grads[k].buf, b]);
            }
            None => bufs.extend(spare[3 * k..3 * k + 3].iter().map(|t| &t.buf)),
        }
    }
    bufs.extend([&step.buf, &clip.buf]);
    launch_1d(dev, &SGD_MULTI, &p, &bufs, total as usize)
}

/// `ops::optim::ema` on up to `ema_per_dispatch(dev)` tensors (`avg[k]` from `params[k]`) in one dispatch
/// (the wide kernel past SLOTS).
pub fn ema_multi(
    dev: &Device,
    avg: &[&Tensor],
    params: &[&Tensor],
    step: &Tensor,
    decay: f32,
    warmup: bool,
) -> Result<()> {
    const OP: &str = "ema_multi";
    if !(decay.is_finite() && (0.0..=1.0).contains(&decay)) {
        return Err(Error::invalid(OP, format!("decay = {decay} is out of range: must be in [0, 1]")));
    }
    let most = ema_per_dispatch(dev);
    check_lists(OP, most, avg, &[("average", avg), ("parameter", params)])?;
    let (kernel, slots) = if avg.len() > SLOTS { (&EMA_MULTI_WIDE, most) } else { (&EMA_MULTI, SLOTS) };
    let sizes: Vec<usize> = avg.iter().map(|p| p.numel()).collect();
    let (n, start, total) = layout(OP, &sizes)?;
    if total == 0 {
        return Ok(());
    }
    let e = EmaParams { n: 0, decay, warmup: warmup as u32, _pad0: 0 };
    let p = EmaMultiParams { e, n, start, total, ..Default::default() };
    let spare = spares(dev, 2 * (slots - avg.len()))?;
    let mut bufs: Vec<&Buffer> = Vec::with_capacity(2 * slots + 1);
    for k in 0..avg.len() {
        bufs.extend([&avg[k].buf, &params[k].buf]);
    }
    bufs.extend(spare.iter().map(|t| &t.buf));
    bufs.push(&step.buf);
    launch_1d(dev, kernel, &p, &bufs, total as usize)
}

/// `ops::optim::sumsq_partial` on up to `sumsq_per_dispatch(dev)` tensors in one dispatch (the wide
/// kernel past SLOTS): tensor k writes its partials from slot `first[k]` on. Returns the partials written.
pub fn sumsq_multi(dev: &Device, xs: &[&Tensor], first: &[usize], partials: &Tensor) -> Result<usize> {
    const OP: &str = "sumsq_multi";
    want_dtype(OP, partials, DType::F32)?;
    let most = sumsq_per_dispatch(dev);
    if xs.len() > most || first.len() != xs.len() {
        return Err(Error::invalid(OP, format!("{} tensors and {} slots, at most {most}", xs.len(), first.len())));
    }
    let (kernel, slots) = if xs.len() > SLOTS { (&SUMSQ_MULTI_WIDE, most) } else { (&SUMSQ_MULTI, SLOTS) };
    let mut p = SumsqMultiParams::default();
    let mut at = 0usize;
    for (k, (x, &slot)) in xs.iter().zip(first).enumerate() {
        want_dtype(OP, x, DType::F32)?;
        let (chunk, slots) = sumsq_layout(x.numel());
        if slot + slots > partials.numel() {
            return Err(Error::invalid(
                OP,
                format!("tensor {k} needs partial slots {slot}..{} of {}", slot + slots, partials.numel()),
            ));
        }
        p.n[k] = u32_of(OP, "elements", x.numel())?;
        p.chunk[k] = u32_of(OP, "chunk", chunk)?;
        p.slot[k] = u32_of(OP, "slot", slot)?;
        p.start[k] = u32_of(OP, "workgroups", at)?;
        at += slots;
    }
    p.total = u32_of(OP, "workgroups", at)?;
    for s in p.start.iter_mut().skip(xs.len()) {
        *s = p.total;
    }
    if at == 0 {
        return Ok(0);
    }
    let spare = spares(dev, slots - xs.len())?;
    let mut bufs: Vec<&Buffer> = xs.iter().map(|x| &x.buf).collect();
    bufs.extend(spare.iter().map(|t| &t.buf));
    bufs.push(&partials.buf);
    dev.dispatch(Dispatch::new(kernel, &p, &bufs, groups_1d(at, 1, dev.max_groups_per_dim())))?;
    Ok(at)
}
