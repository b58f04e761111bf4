//! Channel norms over NCHW tensors: batch norm (training with batch statistics, the running-statistics
//! update, eval mode) and group norm, with their backward. Kernels: shaders/chnorm.wgsl; CPU twins:
//! device/cpu/chnorm.rs.
//!
//! x is f32 [N, C, H, W], or [N, C] read as H = W = 1 (batch norm after a linear layer); gamma and beta are
//! f32 [C]. Batch norm normalises each channel over N·H·W, group norm each (sample, group of C/G channels)
//! over (C/G)·H·W; both use the biased variance and save mean and rstd = 1 / sqrt(var + eps) for the
//! backward (batch norm: [C]; group norm: [N·G], sample-major). Every reduction sums partials in a fixed
//! order (no float atomics), so results are deterministic run to run on every device.

use super::{launch_1d, u32_of, want_dtype, want_f32_fit};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernels::chnorm::{
    ChnormParams, RunningParams, CHNORM_APPLY, CHNORM_BWD_DX, CHNORM_BWD_DX_ACC, CHNORM_BWD_GROUP,
    CHNORM_BWD_GROUP_ACC, CHNORM_BWD_PARTIAL, CHNORM_BWD_PARTIAL_ACT, CHNORM_BWD_REDUCE, CHNORM_STATS,
    CHNORM_STATS_APPLY, CHNORM_UPDATE_RUNNING,
};
use crate::ops::elementwise::Unary;
use crate::tensor::{DType, Tensor};

/// An activation fused after a norm: y = op(norm(x)), computed in the norm's pass (and its derivative
/// in the norm backward's first pass), so the pair costs the norm's dispatches alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedAct {
    /// The activation.
    pub op: Unary,
    /// Its parameter (LeakyRelu's slope; unused by the others).
    pub alpha: f32,
}

/// Interleaved chunks per plane of `hw` elements: a power of two, about 32 elements each, at most 32
/// chunks (longer chunks past 32·32 elements). Chunk k holds elements k, k + K, ...: on a GPU the K
/// threads of a plane read adjacent words; on the CPU the chunks are lanes of one vector loop.
pub fn plane_chunks(hw: usize) -> usize {
    hw.div_ceil(32).next_power_of_two().min(32)
}

/// x's dimensions as (N, C, H·W), checked: f32, rank 2 or 4, no empty axis, offsets within u32.
fn dims(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    want_dtype(op, x, DType::F32)?;
    let (n, c, hw) = match x.shape[..] {
        [n, c] => (n, c, 1),
        [n, c, h, w] => (n, c, h * w),
        _ => {
            return Err(Error::invalid(op, format!("x of shape {:?} must be [N, C, H, W] or [N, C]", x.shape)));
        }
    };
    if x.shape.contains(&0) {
        return Err(Error::invalid(op, format!("x of shape {:?} has an empty axis", x.shape)));
    }
    u32_of(op, "elements of x", x.numel())?;
    // The partials hold 2 · K words per plane.
    u32_of(op, "partials", 2 * n * c * plane_chunks(hw))?;
    Ok((n, c, hw))
}

/// A per-channel tensor (gamma, beta, running statistics): f32 of shape [C].
fn want_channels(op: &'static str, what: &str, t: &Tensor, x: &Tensor, c: usize) -> Result<()> {
    want_f32_fit(op, t, x, t.shape == [c], || format!("{what} must have shape [{c}], one value per channel"))
}

/// Saved statistics (mean, rstd): f32 with one value per stat group.
fn want_stats(op: &'static str, what: &str, t: &Tensor, x: &Tensor, count: usize, per: &str) -> Result<()> {
    want_f32_fit(op, t, x, t.numel() == count, || format!("{what} must hold {count} values, one per {per} of x"))
}

fn want_eps(op: &'static str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(op, format!("eps = {eps} must be finite and > 0")));
    }
    Ok(())
}

/// Channels per group, checked: groups >= 1 and dividing C.
fn group_size(op: &'static str, x: &Tensor, c: usize, groups: usize) -> Result<usize> {
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::invalid(
            op,
            format!("groups = {groups} must divide the {c} channels of x of shape {:?}", x.shape),
        ));
    }
    Ok(c / groups)
}

/// The kernels' view of one norm: (N, C, H·W), channels per stat group, per-sample statistics or not.
#[derive(Clone, Copy)]
struct Layout {
    n: usize,
    c: usize,
    hw: usize,
    cg: usize,
    per_sample: bool,
}

impl Layout {
    fn chunks(&self) -> usize {
        plane_chunks(self.hw)
    }
    fn stat_groups(&self) -> usize {
        if self.per_sample {
            self.n * self.c / self.cg
        } else {
            self.c / self.cg
        }
    }
    fn params(&self, eps: f32, var_in: bool, act: Option<FusedAct>) -> ChnormParams {
        // dims() checked that every count here fits in u32.
        ChnormParams {
            act: act.map_or(0, |a| a.op as u32 + 1),
            alpha: act.map_or(0.0, |a| a.alpha),
            n: self.n as u32,
            c: self.c as u32,
            hw: self.hw as u32,
            chunks: self.chunks() as u32,
            cg: self.cg as u32,
            per_sample: self.per_sample as u32,
            var_in: var_in as u32,
            eps,
            ..Default::default()
        }
    }
}

/// Forward with batch statistics: (y, mean [T], rstd [T]) for T stat groups. Two dispatches: the
/// statistics, one workgroup per stat group, then y; one for a group norm, whose stat group's
/// workgroup writes its y too.
#[allow(clippy::too_many_arguments)]
fn forward(
    dev: &Device,
    l: Layout,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    act: Option<FusedAct>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let p = l.params(eps, false, act);
    let (planes, k, t) = (l.n * l.c, l.chunks(), l.stat_groups());
    let partial = Tensor::empty(dev, &[planes, 2, k], DType::F32)?;
    let y = Tensor::empty(dev, &x.shape, DType::F32)?;
    let mean = Tensor::empty(dev, &[t], DType::F32)?;
    let rstd = Tensor::empty(dev, &[t], DType::F32)?;
    // One workgroup per stat group: t workgroups of the kernel's size.
    let wg = CHNORM_STATS.workgroup_size()[0] as usize;
    if l.per_sample {
        // A group norm's stat group is cg planes of one sample: its workgroup writes y as well.
        let bufs = [&x.buf, &partial.buf, &mean.buf, &rstd.buf, &gamma.buf, &beta.buf, &y.buf];
        launch_1d(dev, &CHNORM_STATS_APPLY, &p, &bufs, t * wg)?;
        return Ok((y, mean, rstd));
    }
    launch_1d(dev, &CHNORM_STATS, &p, &[&x.buf, &partial.buf, &mean.buf, &rstd.buf], t * wg)?;
    launch_1d(dev, &CHNORM_APPLY, &p, &[&x.buf, &gamma.buf, &beta.buf, &mean.buf, &rstd.buf, &y.buf], x.numel())?;
    Ok((y, mean, rstd))
}

/// Backward from the saved statistics: (dx, dgamma [C], dbeta [C]). With a fused activation, dy is its
/// output's gradient and `beta` (needed to recompute the activation's input) is given; with `acc`, dx is
/// acc + dx (a gradient sum folded into the last pass).
#[allow(clippy::too_many_arguments)]
fn backward(
    dev: &Device,
    l: Layout,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    act: Option<(&Tensor, FusedAct)>,
    acc: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut p = l.params(0.0, false, act.map(|a| a.1));
    let (planes, k, t) = (l.n * l.c, l.chunks(), l.stat_groups());
    let partial = Tensor::empty(dev, &[planes, 2, k], DType::F32)?;
    let dx = Tensor::empty(dev, &x.shape, DType::F32)?;
    let dgamma = Tensor::empty(dev, &[l.c], DType::F32)?;
    let dbeta = Tensor::empty(dev, &[l.c], DType::F32)?;
    let wg = CHNORM_BWD_REDUCE.workgroup_size()[0] as usize;
    let kernel = if acc.is_some() { &CHNORM_BWD_GROUP_ACC } else { &CHNORM_BWD_GROUP };
    // A device that binds fewer storage buffers (WebGPU's default 8; the accumulating form takes 9)
    // runs the three passes below instead.
    if l.per_sample && super::optim_multi::fits(dev, kernel) {
        // A group norm: one workgroup per stat group forms its partials, coefficients and dx, then
        // dgamma and dbeta are summed over the samples (the reduction binds a placeholder for ab).
        let beta = act.map_or(gamma, |a| a.0);
        let mut bufs = vec![&x.buf, &mean.buf, &rstd.buf, &dy.buf, &gamma.buf, &beta.buf, &partial.buf, &dx.buf];
        bufs.extend(acc.map(|a| &a.buf));
        launch_1d(dev, kernel, &p, &bufs, t * kernel.workgroup_size()[0] as usize)?;
        p.grads_only = 1;
        let none = Tensor::empty(dev, &[2], DType::F32)?;
        let bufs = [&partial.buf, &gamma.buf, &none.buf, &dgamma.buf, &dbeta.buf];
        launch_1d(dev, &CHNORM_BWD_REDUCE, &p, &bufs, l.c * wg)?;
        return Ok((dx, dgamma, dbeta));
    }
    let ab = Tensor::empty(dev, &[t, 2], DType::F32)?;
    // The norm's output gradient: dy itself, or dy through the activation's derivative.
    let dz = match act {
        None => {
            let bufs = [&x.buf, &mean.buf, &rstd.buf, &dy.buf, &partial.buf];
            launch_1d(dev, &CHNORM_BWD_PARTIAL, &p, &bufs, planes * k)?;
            dy.clone()
        }
        Some((beta, _)) => {
            let dz = Tensor::empty(dev, &x.shape, DType::F32)?;
            let bufs = [&x.buf, &mean.buf, &rstd.buf, &dy.buf, &partial.buf, &gamma.buf, &beta.buf, &dz.buf];
            launch_1d(dev, &CHNORM_BWD_PARTIAL_ACT, &p, &bufs, planes * k)?;
            dz
        }
    };
    let bufs = [&partial.buf, &gamma.buf, &ab.buf, &dgamma.buf, &dbeta.buf];
    // One workgroup per channel or stat group, whichever are more.
    launch_1d(dev, &CHNORM_BWD_REDUCE, &p, &bufs, l.c.max(t) * wg)?;
    let mut bufs = vec![&x.buf, &gamma.buf, &mean.buf, &rstd.buf, &dz.buf, &ab.buf, &dx.buf];
    bufs.extend(acc.map(|a| &a.buf));
    launch_1d(dev, if acc.is_some() { &CHNORM_BWD_DX_ACC } else { &CHNORM_BWD_DX }, &p, &bufs, x.numel())?;
    Ok((dx, dgamma, dbeta))
}

fn want_dy(op: &'static str, x: &Tensor, dy: &Tensor) -> Result<()> {
    want_f32_fit(op, dy, x, dy.shape == x.shape, || "dy must have the shape of x".into())?;
    Ok(())
}

fn want_acc(op: &'static str, x: &Tensor, acc: Option<&Tensor>) -> Result<()> {
    acc.map_or(Ok(()), |a| want_f32_fit(op, a, x, a.shape == x.shape, || "acc must have the shape of x".into()))
}

/// Batch norm with batch statistics (training): per channel over N·H·W, mean and biased variance,
/// y = (x - mean) · rstd · gamma + beta with rstd = 1 / sqrt(var + eps). Returns (y, mean [C], rstd [C]).
pub fn batch_norm_train(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_act(dev, x, gamma, beta, eps, None)
}

/// `batch_norm_train` followed by the activation `act` when given, in the same passes: returns
/// (act(y), mean [C], rstd [C]).
pub fn batch_norm_train_act(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    act: Option<FusedAct>,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm_train";
    let (n, c, hw) = dims(OP, x)?;
    want_channels(OP, "gamma", gamma, x, c)?;
    want_channels(OP, "beta", beta, x, c)?;
    want_eps(OP, eps)?;
    forward(dev, Layout { n, c, hw, cg: 1, per_sample: false }, x, gamma, beta, eps, act)
}

/// Backward of `batch_norm_train` through the batch statistics, from its saved mean and rstd: with
/// x̂ = (x - mean) · rstd and means over N·H·W per channel,
/// dx = rstd · gamma · (dy - mean(dy) - x̂ · mean(dy · x̂)), dgamma = Σ dy · x̂, dbeta = Σ dy.
/// Returns (dx, dgamma [C], dbeta [C]).
pub fn batch_norm_backward(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm_backward";
    let (n, c, hw) = dims(OP, x)?;
    want_channels(OP, "gamma", gamma, x, c)?;
    want_stats(OP, "mean", mean, x, c, "channel")?;
    want_stats(OP, "rstd", rstd, x, c, "channel")?;
    want_dy(OP, x, dy)?;
    backward(dev, Layout { n, c, hw, cg: 1, per_sample: false }, x, gamma, mean, rstd, dy, None, None)
}

/// Backward of `batch_norm_train_act`: with `act`, dy is the activation output's gradient, taken
/// through act' at the recomputed norm output (which needs beta; beta is read only then); with `acc`
/// (x's shape), dx is acc + dx. Returns (dx, dgamma [C], dbeta [C]).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_fused(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    act: Option<FusedAct>,
    acc: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm_backward";
    let (n, c, hw) = dims(OP, x)?;
    want_channels(OP, "gamma", gamma, x, c)?;
    want_channels(OP, "beta", beta, x, c)?;
    want_stats(OP, "mean", mean, x, c, "channel")?;
    want_stats(OP, "rstd", rstd, x, c, "channel")?;
    want_dy(OP, x, dy)?;
    want_acc(OP, x, acc)?;
    let l = Layout { n, c, hw, cg: 1, per_sample: false };
    backward(dev, l, x, gamma, mean, rstd, dy, act.map(|a| (beta, a)), acc)
}

/// Running statistics update, in place (so it can sit inside a recorded step):
/// running_mean = (1 - momentum) · running_mean + momentum · mean and
/// running_var = (1 - momentum) · running_var + momentum · var · count / (count - 1), where
/// var = 1 / rstd² - eps is the biased batch variance `batch_norm_train` normalised with (pass the same
/// eps) and count = N·H·W the elements per channel. All four tensors are f32 [C].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_update_running(
    dev: &Device,
    running_mean: &Tensor,
    running_var: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    momentum: f32,
    eps: f32,
    count: usize,
) -> Result<()> {
    const OP: &str = "batch_norm_update_running";
    want_dtype(OP, running_mean, DType::F32)?;
    let c = match running_mean.shape[..] {
        [c] if c > 0 => c,
        _ => {
            return Err(Error::invalid(
                OP,
                format!("running_mean of shape {:?} must have shape [C], C >= 1", running_mean.shape),
            ))
        }
    };
    want_channels(OP, "running_var", running_var, running_mean, c)?;
    want_channels(OP, "mean", mean, running_mean, c)?;
    want_channels(OP, "rstd", rstd, running_mean, c)?;
    want_eps(OP, eps)?;
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::invalid(OP, format!("momentum = {momentum} must be in [0, 1]")));
    }
    if count < 2 {
        return Err(Error::invalid(OP, format!("count = {count}: the unbiased variance needs count >= 2")));
    }
    let p = RunningParams {
        c: u32_of(OP, "channels", c)?,
        momentum,
        eps,
        unbias: (count as f64 / (count - 1) as f64) as f32,
    };
    launch_1d(dev, &CHNORM_UPDATE_RUNNING, &p, &[&mean.buf, &rstd.buf, &running_mean.buf, &running_var.buf], c)
}

/// Batch norm in eval mode: y = (x - running_mean) / sqrt(running_var + eps) · gamma + beta.
pub fn batch_norm_eval(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "batch_norm_eval";
    let (n, c, hw) = dims(OP, x)?;
    want_channels(OP, "gamma", gamma, x, c)?;
    want_channels(OP, "beta", beta, x, c)?;
    want_channels(OP, "running_mean", running_mean, x, c)?;
    want_channels(OP, "running_var", running_var, x, c)?;
    want_eps(OP, eps)?;
    let p = Layout { n, c, hw, cg: 1, per_sample: false }.params(eps, true, None);
    let y = Tensor::empty(dev, &x.shape, DType::F32)?;
    launch_1d(
        dev,
        &CHNORM_APPLY,
        &p,
        &[&x.buf, &gamma.buf, &beta.buf, &running_mean.buf, &running_var.buf, &y.buf],
        x.numel(),
    )?;
    Ok(y)
}

/// Group norm: the C channels form `groups` groups of C / groups consecutive channels; each (sample,
/// group) is normalised over its (C / groups)·H·W elements with the biased variance, then scaled and
/// shifted per channel. Returns (y, mean [N·G], rstd [N·G]), sample-major.
pub fn group_norm(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    group_norm_act(dev, x, gamma, beta, groups, eps, None)
}

/// `group_norm` followed by the activation `act` when given, in the same passes: returns
/// (act(y), mean [N·G], rstd [N·G]).
pub fn group_norm_act(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f32,
    act: Option<FusedAct>,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "group_norm";
    let (n, c, hw) = dims(OP, x)?;
    let cg = group_size(OP, x, c, groups)?;
    want_channels(OP, "gamma", gamma, x, c)?;
    want_channels(OP, "beta", beta, x, c)?;
    want_eps(OP, eps)?;
    forward(dev, Layout { n, c, hw, cg, per_sample: true }, x, gamma, beta, eps, act)
}

/// Backward of `group_norm` from its saved mean and rstd: with g = dy · gamma and means over each
/// (sample, group), dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)); dgamma = Σ dy · x̂ and dbeta = Σ dy
/// per channel over samples and positions. Returns (dx, dgamma [C], dbeta [C]).
pub fn group_norm_backward(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    groups: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "group_norm_backward";
    let (n, c, hw) = dims(OP, x)?;
    let cg = group_size(OP, x, c, groups)?;
    want_channels(OP, "gamma", gamma, x, c)?;
    want_stats(OP, "mean", mean, x, n * groups, "(sample, group)")?;
    want_stats(OP, "rstd", rstd, x, n * groups, "(sample, group)")?;
    want_dy(OP, x, dy)?;
    backward(dev, Layout { n, c, hw, cg, per_sample: true }, x, gamma, mean, rstd, dy, None, None)
}

/// Backward of `group_norm_act`, with its activation and a folded gradient sum as
/// `batch_norm_backward_fused`. Returns (dx, dgamma [C], dbeta [C]).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_fused(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    groups: usize,
    act: Option<FusedAct>,
    acc: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "group_norm_backward";
    let (n, c, hw) = dims(OP, x)?;
    let cg = group_size(OP, x, c, groups)?;
    want_channels(OP, "gamma", gamma, x, c)?;
    want_channels(OP, "beta", beta, x, c)?;
    want_stats(OP, "mean", mean, x, n * groups, "(sample, group)")?;
    want_stats(OP, "rstd", rstd, x, n * groups, "(sample, group)")?;
    want_dy(OP, x, dy)?;
    want_acc(OP, x, acc)?;
    let l = Layout { n, c, hw, cg, per_sample: true };
    backward(dev, l, x, gamma, mean, rstd, dy, act.map(|a| (beta, a)), acc)
}
