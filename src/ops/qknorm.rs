//! QK normalisation on a packed q|k|v projection: per-head layer norm of q and of k (one γ, β of D values
//! for q's heads and one for k's), optionally followed by rotary positions (as `ops::rope`), v copied; and
//! its backward. Kernels: shaders/qknorm.wgsl; CPU twins: device/cpu/qknorm.rs.
//!
//! qkv is [B, T, 3C] with heads of D = C / heads values. The forward returns y (qkv's shape) and the
//! statistics the backward needs, stats [B·T, 2·heads, 2] of (mean, rstd) per q and k head. The
//! backward returns dqkv, dγ_q, dβ_q, dγ_k and dβ_k.

use super::{launch_1d, u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::qknorm::{
    QkNormParams, QK_NORM_BWD_DX, QK_NORM_BWD_DX_HALF, QK_NORM_BWD_FUSED, QK_NORM_BWD_FUSED_HALF, QK_NORM_BWD_PARAMS,
    QK_NORM_BWD_PARAMS_HALF, QK_NORM_FWD,
};
use crate::tensor::{DType, Tensor};

/// (B, T, C, D) of qkv [B, T, 3C] split into `heads`, checking an optional rope table as `ops::rope` does.
pub fn qk_norm_shapes(qkv: &[usize], table: Option<&[usize]>, heads: usize) -> Result<(usize, usize, usize, usize)> {
    if let Some(t) = table {
        return super::rope::rope_shapes(qkv, t, heads);
    }
    match *qkv {
        [b, t, w] if heads > 0 && w > 0 && w % (3 * heads) == 0 => Ok((b, t, w / 3, w / 3 / heads)),
        _ => Err(Error::invalid(
            "qk_norm",
            format!("qkv must be [B, T, 3C] with 3C a positive multiple of 3 · heads ({heads}), got {qkv:?}"),
        )),
    }
}

/// The params of a call on qkv (B, T, C, D).
fn params(
    op: &'static str,
    (b, t, _, d): (usize, usize, usize, usize),
    heads: usize,
    eps: f32,
    rope: bool,
) -> Result<QkNormParams> {
    u32_of(op, "elements of qkv", b * t * 3 * heads * d)?;
    Ok(QkNormParams {
        rows: u32_of(op, "rows", b * t)?,
        t: u32_of(op, "sequence length", t)?,
        heads: u32_of(op, "heads", heads)?,
        hd: u32_of(op, "head size", d)?,
        eps,
        rope: rope as u32,
        dx_groups: 0,
        _pad1: 0,
    })
}

/// The four per-head norm parameters: f32 [D].
fn want_head_params(op: &'static str, ps: &[&Tensor], d: usize) -> Result<()> {
    for p in ps {
        want_dtype(op, p, DType::F32)?;
        if p.shape != [d] {
            return Err(Error::invalid(
                op,
                format!("γ and β must have shape [{d}] (the head size), got {:?}", p.shape),
            ));
        }
    }
    Ok(())
}

/// The rope table, or a one-word stand-in the kernels never read.
fn table_or_spare(dev: &Device, op: &'static str, table: Option<&Tensor>) -> Result<Tensor> {
    match table {
        Some(t) => {
            want_dtype(op, t, DType::F32)?;
            Ok(t.clone())
        }
        None => Tensor::empty(dev, &[1], DType::F32),
    }
}

/// y = qkv with each q head layer-normalised with (γ_q, β_q), each k head with (γ_k, β_k), then q and
/// k rotated by `table` when given; v copied. Returns (y, stats [B·T, 2·heads, 2]).
#[allow(clippy::too_many_arguments)]
pub fn qk_norm(
    dev: &Device,
    qkv: &Tensor,
    [gq, bq, gk, bk]: [&Tensor; 4],
    table: Option<&Tensor>,
    heads: usize,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "qk_norm";
    want_dtype(OP, qkv, DType::F32)?;
    let dims = qk_norm_shapes(&qkv.shape, table.map(|t| &t.shape[..]), heads)?;
    want_head_params(OP, &[gq, bq, gk, bk], dims.3)?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps} must be finite and > 0")));
    }
    let p = params(OP, dims, heads, eps, table.is_some())?;
    let tab = table_or_spare(dev, OP, table)?;
    let y = Tensor::empty(dev, &qkv.shape, DType::F32)?;
    let stats = Tensor::empty(dev, &[dims.0 * dims.1, 2 * heads, 2], DType::F32)?;
    let threads = dims.0 * dims.1 * 3 * heads;
    if threads > 0 {
        let bufs = [&qkv.buf, &gq.buf, &bq.buf, &gk.buf, &bk.buf, &tab.buf, &y.buf, &stats.buf];
        launch_1d(dev, &QK_NORM_FWD, &p, &bufs, threads)?;
    }
    Ok((y, stats))
}

/// The backward of `qk_norm` from its saved stats: returns (dqkv, dγ_q, dβ_q, dγ_k, dβ_k). One dispatch
/// where the device binds 11 storage buffers, else two. qkv may be f16 (as a mixed-precision plan keeps
/// it for the backward): the kernels then widen it as they read (the `_half` entries), the numbers of
/// the f32 backward of the widened values.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_backward(
    dev: &Device,
    qkv: &Tensor,
    gammas: [&Tensor; 2],
    stats: &Tensor,
    table: Option<&Tensor>,
    dy: &Tensor,
    heads: usize,
) -> Result<(Tensor, [Tensor; 4])> {
    let one = dev.max_storage_buffers() >= 11;
    qk_norm_backward_with(dev, qkv, gammas, stats, table, dy, heads, one)
}

/// `qk_norm_backward` with the path forced: `one_dispatch` runs `qk_norm_bwd_fused`, else
/// `qk_norm_bwd_dx` and `qk_norm_bwd_params` (the same numbers).
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_backward_with(
    dev: &Device,
    qkv: &Tensor,
    [gq, gk]: [&Tensor; 2],
    stats: &Tensor,
    table: Option<&Tensor>,
    dy: &Tensor,
    heads: usize,
    one_dispatch: bool,
) -> Result<(Tensor, [Tensor; 4])> {
    const OP: &str = "qk_norm_backward";
    let half = qkv.dtype == DType::F16;
    want_dtype(OP, qkv, if half { DType::F16 } else { DType::F32 })?;
    let [fused, dx_only, params_only] = match half {
        true => [&QK_NORM_BWD_FUSED_HALF, &QK_NORM_BWD_DX_HALF, &QK_NORM_BWD_PARAMS_HALF],
        false => [&QK_NORM_BWD_FUSED, &QK_NORM_BWD_DX, &QK_NORM_BWD_PARAMS],
    };
    let dims = qk_norm_shapes(&qkv.shape, table.map(|t| &t.shape[..]), heads)?;
    want_head_params(OP, &[gq, gk], dims.3)?;
    want_dtype(OP, stats, DType::F32)?;
    want_dtype(OP, dy, DType::F32)?;
    if dy.shape != qkv.shape || stats.numel() != dims.0 * dims.1 * 4 * heads {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: qkv.shape.clone(),
            rhs: dy.shape.clone(),
            hint: format!(" (dy must have qkv's shape and stats {} values)", dims.0 * dims.1 * 4 * heads),
        });
    }
    let p = params(OP, dims, heads, 0.0, table.is_some())?;
    let tab = table_or_spare(dev, OP, table)?;
    let dx = Tensor::empty(dev, &qkv.shape, DType::F32)?;
    let d = dims.3;
    let grads = [(); 4].map(|_| Tensor::empty(dev, &[d], DType::F32));
    let [dgq, dbq, dgk, dbk] = grads;
    let (dgq, dbq, dgk, dbk) = (dgq?, dbq?, dgk?, dbk?);
    let threads = dims.0 * dims.1 * 3 * heads;
    let ins = [&qkv.buf, &stats.buf, &tab.buf, &dy.buf, &gq.buf, &gk.buf];
    let outs = [&dgq.buf, &dbq.buf, &dgk.buf, &dbk.buf];
    let max = dev.max_groups_per_dim();
    // With no rows the sums are zeros: the column workgroups still run.
    if one_dispatch {
        let dx_groups = threads.div_ceil(fused.workgroup_size()[0] as usize);
        let p = QkNormParams { dx_groups: u32_of(OP, "workgroups", dx_groups)?, ..p };
        let bufs: Vec<&crate::device::Buffer> = ins.into_iter().chain([&dx.buf]).chain(outs).collect();
        dev.dispatch(Dispatch::new(fused, &p, &bufs, groups_1d(dx_groups + 2 * d, 1, max)))?;
        return Ok((dx, [dgq, dbq, dgk, dbk]));
    }
    if threads > 0 {
        let bufs: Vec<&crate::device::Buffer> = ins.into_iter().chain([&dx.buf]).collect();
        launch_1d(dev, dx_only, &p, &bufs, threads)?;
    }
    // The parameters' kernel reads neither γ (8 storage buffers: WebGPU's default limit).
    let bufs: Vec<&crate::device::Buffer> = ins[..4].iter().copied().chain(outs).collect();
    dev.dispatch(Dispatch::new(params_only, &p, &bufs, groups_1d(2 * d, 1, max)))?;
    Ok((dx, [dgq, dbq, dgk, dbk]))
}
