//! Muon's kernels over all its matrices at once (shaders/muon.wgsl; CPU twins: device/cpu/muon.rs): the
//! matrices' working copies live in arenas, one f32 buffer with each matrix at an element offset.
//! `momentum` writes every matrix's Nesterov momentum into the arena, `unit_norm` scales every arena
//! region to unit Frobenius norm, `update` applies the arena's result to every parameter. `momentum` and
//! `update` bind one buffer per matrix: up to `kernels::optim::SLOTS` (`MUON_*_SLOTS_WIDE` in the wide kernels) matrices per dispatch where the
//! device binds enough storage buffers (`ops::optim_multi::fits`), one per dispatch elsewhere.
//! `crate::optim::muon` builds the optimizer on these and `ops::matmul_grouped`.

use super::optim::{sumsq_layout, Schedule};
use super::optim_multi::{fits, layout, spares};
use super::{launch_1d, u32_of, want_dtype, want_f32_fit};
use crate::device::{Buffer, Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::muon::{
    MuonMomentumMultiParams, MuonMomentumParams, MuonNormParams, MuonUpdateMultiParams, MuonUpdateParams,
    MUON_MOMENTUM, MUON_MOMENTUM_MULTI, MUON_MOMENTUM_MULTI_WIDE, MUON_NORMALIZE, MUON_SUMSQ, MUON_UPDATE,
    MUON_UPDATE_MULTI, MUON_UPDATE_MULTI_WIDE, WG,
};
use crate::kernels::optim::{MUON_MOMENTUM_SLOTS_WIDE, MUON_UPDATE_SLOTS_WIDE, SLOTS};
use crate::tensor::{DType, Tensor};

/// Matrices per dispatch of `momentum` on `dev`: MUON_MOMENTUM_SLOTS_WIDE where the device binds the
/// wide multi-matrix kernel, SLOTS where it binds the other, else 1.
pub fn momentum_per_dispatch(dev: &Device) -> usize {
    if fits(dev, &MUON_MOMENTUM_MULTI_WIDE) {
        MUON_MOMENTUM_SLOTS_WIDE
    } else if fits(dev, &MUON_MOMENTUM_MULTI) {
        SLOTS
    } else {
        1
    }
}

/// Matrices per dispatch of `update` on `dev`: MUON_UPDATE_SLOTS_WIDE, SLOTS or 1 (as
/// `momentum_per_dispatch`).
pub fn update_per_dispatch(dev: &Device) -> usize {
    if fits(dev, &MUON_UPDATE_MULTI_WIDE) {
        MUON_UPDATE_SLOTS_WIDE
    } else if fits(dev, &MUON_UPDATE_MULTI) {
        SLOTS
    } else {
        1
    }
}

/// Checks a grouping: 1, SLOTS or `wide` matrices per dispatch.
fn check_per(op: &'static str, per: usize, wide: usize) -> Result<()> {
    if ![1, SLOTS, wide].contains(&per) {
        return Err(Error::invalid(op, format!("{per} matrices per dispatch: 1, {SLOTS} or {wide}")));
    }
    Ok(())
}

/// Checks `list` against `params` (as many, the same element counts, f32), and that every region
/// `[at[k], at[k] + numel)` lies inside the arena.
fn check_regions(
    op: &'static str,
    params: &[&Tensor],
    others: &[(&str, &[&Tensor])],
    at: &[usize],
    arena: &Tensor,
) -> Result<()> {
    want_dtype(op, arena, DType::F32)?;
    if at.len() != params.len() {
        return Err(Error::invalid(op, format!("{} matrices but {} arena offsets", params.len(), at.len())));
    }
    for (what, list) in others {
        if list.len() != params.len() {
            return Err(Error::invalid(op, format!("{} matrices but {} {what}s", params.len(), list.len())));
        }
        for (p, t) in params.iter().zip(list.iter()) {
            want_f32_fit(op, t, p, t.numel() == p.numel(), || format!("the {what} must have as many elements"))?;
        }
    }
    for (k, (p, &o)) in params.iter().zip(at).enumerate() {
        want_dtype(op, p, DType::F32)?;
        if o + p.numel() > arena.numel() {
            return Err(Error::invalid(
                op,
                format!("matrix {k} needs arena elements {o}..{} of {}", o + p.numel(), arena.numel()),
            ));
        }
    }
    Ok(())
}

/// Per matrix k: `m[k] = momentum * m[k] + g[k] * clip[0]`, then `arena[dst[k]..]` = `g[k] * clip[0] +
/// momentum * m[k]` (Nesterov) or `m[k]`. `clip` is the optimizer's [scale, norm] buffer.
#[allow(clippy::too_many_arguments)]
pub fn momentum(
    dev: &Device,
    grads: &[&Tensor],
    moms: &[&Tensor],
    clip: &Tensor,
    arena: &Tensor,
    dst: &[usize],
    momentum: f32,
    nesterov: bool,
) -> Result<()> {
    momentum_per(dev, momentum_per_dispatch(dev), grads, moms, clip, arena, dst, momentum, nesterov)
}

/// `momentum` with `per` matrices per dispatch: 1 (one-matrix kernel), SLOTS or
/// MUON_MOMENTUM_SLOTS_WIDE (the multi-matrix kernels, where the device binds them). All compute the
/// same numbers.
#[allow(clippy::too_many_arguments)]
pub fn momentum_per(
    dev: &Device,
    per: usize,
    grads: &[&Tensor],
    moms: &[&Tensor],
    clip: &Tensor,
    arena: &Tensor,
    dst: &[usize],
    momentum: f32,
    nesterov: bool,
) -> Result<()> {
    const OP: &str = "muon_momentum";
    check_regions(OP, grads, &[("momentum buffer", moms)], dst, arena)?;
    if clip.dtype != DType::F32 || clip.numel() != 2 {
        return Err(Error::invalid(OP, format!("the clip buffer must be f32 [2] [scale, norm], got {:?}", clip.shape)));
    }
    if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
        return Err(Error::invalid(OP, format!("momentum = {momentum} is out of range: must be in [0, 1)")));
    }
    check_per(OP, per, MUON_MOMENTUM_SLOTS_WIDE)?;
    let nesterov = nesterov as u32;
    for ((g, m), d) in grads.chunks(per).zip(moms.chunks(per)).zip(dst.chunks(per)) {
        if per == 1 {
            if g[0].numel() == 0 {
                continue;
            }
            let p = MuonMomentumParams {
                n: u32_of(OP, "elements", g[0].numel())?,
                momentum,
                nesterov,
                dst: u32_of(OP, "offset", d[0])?,
            };
            launch_1d(dev, &MUON_MOMENTUM, &p, &[&g[0].buf, &clip.buf, &m[0].buf, &arena.buf], g[0].numel())?;
            continue;
        }
        let sizes: Vec<usize> = g.iter().map(|t| t.numel()).collect();
        let (n, start, total) = layout(OP, &sizes)?;
        if total == 0 {
            continue;
        }
        let mut p = MuonMomentumMultiParams { momentum, nesterov, total, n, start, ..Default::default() };
        for (k, &o) in d.iter().enumerate() {
            p.dst[k] = u32_of(OP, "offset", o)?;
        }
        let spare = spares(dev, 2 * (per - g.len()))?;
        let mut bufs: Vec<&Buffer> = Vec::with_capacity(2 * per + 2);
        for (gk, mk) in g.iter().zip(m) {
            bufs.extend([&gk.buf, &mk.buf]);
        }
        bufs.extend(spare.iter().map(|t| &t.buf));
        bufs.extend([&clip.buf, &arena.buf]);
        let kernel = if per == SLOTS { &MUON_MOMENTUM_MULTI } else { &MUON_MOMENTUM_MULTI_WIDE };
        launch_1d(dev, kernel, &p, &bufs, total as usize)?;
    }
    Ok(())
}

/// The regions of an arena that `unit_norm` scales, and where their partial sums go: a segment table
/// uploaded once (make it before `Device::capture`).
pub struct Segments {
    table: Tensor,
    count: u32,
    /// Partial sums of the largest matrix, the largest matrix, all partial sums, the arena's extent.
    most_slots: usize,
    most_n: usize,
    partials: usize,
    need: usize,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segments({} regions, {} partial sums)", self.count, self.partials)
    }
}

impl Segments {
    /// The regions `(offset, elements)` of an arena; each sums in the chunks of
    /// `ops::optim::sumsq_partial`.
    pub fn new(dev: &Device, regions: &[(usize, usize)]) -> Result<Segments> {
        const OP: &str = "muon_segments";
        let mut words = Vec::with_capacity(4 * regions.len().max(1));
        let (mut most_slots, mut most_n, mut partials, mut need) = (0, 0, 0, 0);
        for &(off, n) in regions {
            let (chunk, slots) = sumsq_layout(n);
            need = need.max(off + n);
            words.extend([u32_of(OP, "offset", off)?, u32_of(OP, "elements", n)?, u32_of(OP, "chunk", chunk)?]);
            words.push(u32_of(OP, "partial slot", partials)?);
            partials += slots;
            most_slots = most_slots.max(slots);
            most_n = most_n.max(n);
        }
        u32_of(OP, "arena elements", need)?;
        if words.is_empty() {
            words.resize(4, 0);
        }
        Ok(Segments {
            table: Tensor::from_u32(dev, &[words.len()], &words)?,
            count: u32_of(OP, "regions", regions.len())?,
            most_slots,
            most_n,
            partials,
            need,
        })
    }

    /// Partial sums `unit_norm` writes (the length its partials buffer needs).
    pub fn partials(&self) -> usize {
        self.partials
    }
}

/// Scales every region of `seg` in `arena` by 1 / (its Frobenius norm + eps), in two dispatches: the
/// partial sums of squares into `partials` (at least `seg.partials()` f32), then the scaling.
pub fn unit_norm(dev: &Device, seg: &Segments, arena: &Tensor, partials: &Tensor, eps: f32) -> Result<()> {
    const OP: &str = "muon_normalize";
    want_dtype(OP, arena, DType::F32)?;
    want_dtype(OP, partials, DType::F32)?;
    if arena.numel() < seg.need || partials.numel() < seg.partials {
        return Err(Error::invalid(
            OP,
            format!(
                "the arena holds {} elements and the partials {}; the regions need {} and {}",
                arena.numel(),
                partials.numel(),
                seg.need,
                seg.partials
            ),
        ));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps} is out of range: must be finite and >= 0")));
    }
    if seg.count == 0 || seg.most_n == 0 {
        return Ok(());
    }
    let p = MuonNormParams { count: seg.count, eps, _pad0: 0, _pad1: 0 };
    let sums = [u32_of(OP, "partial slots", seg.most_slots)?, seg.count, 1];
    dev.dispatch(Dispatch::new(&MUON_SUMSQ, &p, &[&seg.table.buf, &arena.buf, &partials.buf], sums))?;
    // Enough workgroups per region to keep a GPU busy; each thread strides over the rest.
    let x = seg.most_n.div_ceil(WG).min(1024) as u32;
    dev.dispatch(Dispatch::new(&MUON_NORMALIZE, &p, &[&seg.table.buf, &partials.buf, &arena.buf], [x, seg.count, 1]))
}

/// Per matrix k: `params[k] -= lr * (arena[src[k]..] + weight_decay * params[k])`, lr being `sched`'s
/// rate at the step counter `step` (u32 [1]): SGD without momentum from the arena's update.
pub fn update(
    dev: &Device,
    sched: &Schedule,
    weight_decay: f32,
    params: &[&Tensor],
    arena: &Tensor,
    src: &[usize],
    step: &Tensor,
) -> Result<()> {
    update_per(dev, update_per_dispatch(dev), sched, weight_decay, params, arena, src, step)
}

/// `update` with `per` matrices per dispatch (see `momentum_per`).
#[allow(clippy::too_many_arguments)]
pub fn update_per(
    dev: &Device,
    per: usize,
    sched: &Schedule,
    weight_decay: f32,
    params: &[&Tensor],
    arena: &Tensor,
    src: &[usize],
    step: &Tensor,
) -> Result<()> {
    const OP: &str = "muon_update";
    sched.validate(OP)?;
    check_regions(OP, params, &[], src, arena)?;
    want_dtype(OP, step, DType::U32)?;
    if !weight_decay.is_finite() {
        return Err(Error::invalid(OP, format!("weight_decay = {weight_decay} must be finite")));
    }
    // The kernels' schedule struct is optim.wgsl's (the same snippet), field for field.
    check_per(OP, per, MUON_UPDATE_SLOTS_WIDE)?;
    let sp = bytemuck::cast(sched.params());
    for (ps, s) in params.chunks(per).zip(src.chunks(per)) {
        if per == 1 {
            if ps[0].numel() == 0 {
                continue;
            }
            let n = u32_of(OP, "elements", ps[0].numel())?;
            let p = MuonUpdateParams { sched: sp, n, src: u32_of(OP, "offset", s[0])?, weight_decay, _pad0: 0 };
            launch_1d(dev, &MUON_UPDATE, &p, &[&ps[0].buf, &arena.buf, &step.buf], ps[0].numel())?;
            continue;
        }
        let sizes: Vec<usize> = ps.iter().map(|t| t.numel()).collect();
        let (n, start, total) = layout(OP, &sizes)?;
        if total == 0 {
            continue;
        }
        let mut p = MuonUpdateMultiParams { sched: sp, weight_decay, total, n, start, ..Default::default() };
        for (k, &o) in s.iter().enumerate() {
            p.src[k] = u32_of(OP, "offset", o)?;
        }
        let spare = spares(dev, per - ps.len())?;
        let mut bufs: Vec<&Buffer> = ps.iter().map(|t| &t.buf).collect();
        bufs.extend(spare.iter().map(|t| &t.buf));
        bufs.extend([&arena.buf, &step.buf]);
        let kernel = if per == SLOTS { &MUON_UPDATE_MULTI } else { &MUON_UPDATE_MULTI_WIDE };
        launch_1d(dev, kernel, &p, &bufs, total as usize)?;
    }
    Ok(())
}
