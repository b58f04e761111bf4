//! The residual stream's layer norm, fused: `add_layer_norm` gives s = x + a and y = LayerNorm(s) in one
//! dispatch, and `layer_norm_backward_fused` the whole layer-norm backward (dx, optionally plus a
//! gradient r, with dγ and dβ) in one. Kernels: shaders/resnorm.wgsl; CPU twins: device/cpu/resnorm.rs.
//!
//! x is viewed as [N, C] (C the last axis); the statistics are stats [N, 2] of (mean, rstd), rstd =
//! 1 / sqrt(var + eps) with the biased variance.

use super::{u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::resnorm::{ResNormParams, ADD_LAYER_NORM_FWD, LAYER_NORM_BWD_FUSED, LAYER_NORM_BWD_FUSED_HALF};
use crate::tensor::{DType, Tensor};

/// (N, C) of `x` [..., C] (of dtype `x_dtype`) with every tensor of `same` f32 of x's shape and
/// `features` f32 [C].
fn rows_of(
    op: &'static str,
    (x, x_dtype): (&Tensor, DType),
    same: &[&Tensor],
    features: &[&Tensor],
) -> Result<(usize, usize)> {
    want_dtype(op, x, x_dtype)?;
    let c = match x.shape.last() {
        Some(&c) if c > 0 => c,
        _ => return Err(Error::invalid(op, format!("x of shape {:?} has no non-empty last axis", x.shape))),
    };
    for t in same {
        want_dtype(op, t, DType::F32)?;
        if t.shape != x.shape {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.shape.clone(),
                rhs: t.shape.clone(),
                hint: " (the operands must have x's shape)".into(),
            });
        }
    }
    for t in features {
        want_dtype(op, t, DType::F32)?;
        if t.shape != [c] {
            return Err(Error::invalid(op, format!("γ and β must have shape [{c}], got {:?}", t.shape)));
        }
    }
    u32_of(op, "elements of x", x.numel())?;
    Ok((x.numel() / c, c))
}

/// (s, y, stats): s = x + a and y = (s − mean) · rstd · γ + β over the last axis.
pub fn add_layer_norm(
    dev: &Device,
    x: &Tensor,
    a: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "add_layer_norm";
    let (n, c) = rows_of(OP, (x, DType::F32), &[a], &[gamma, beta])?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps} must be finite and > 0")));
    }
    let s = Tensor::empty(dev, &x.shape, DType::F32)?;
    let y = Tensor::empty(dev, &x.shape, DType::F32)?;
    let stats = Tensor::empty(dev, &[n, 2], DType::F32)?;
    if n > 0 {
        let p = ResNormParams { rows: n as u32, c: c as u32, eps, accumulate: 0 };
        let bufs = [&x.buf, &a.buf, &gamma.buf, &beta.buf, &s.buf, &y.buf, &stats.buf];
        dev.dispatch(Dispatch::new(&ADD_LAYER_NORM_FWD, &p, &bufs, groups_1d(n, 1, dev.max_groups_per_dim())))?;
    }
    Ok((s, y, stats))
}

/// The layer-norm backward from `add_layer_norm`'s stats, in one dispatch: (dx, dγ, dβ), with r added
/// to dx when given. The sum x may be f16 (as a mixed-precision plan keeps it for the backward): the
/// kernel then widens it as it reads (`layer_norm_bwd_fused_half`), the numbers of the f32 backward of
/// the widened values.
pub fn layer_norm_backward_fused(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    r: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layer_norm_backward_fused";
    let same: Vec<&Tensor> = std::iter::once(dy).chain(r).collect();
    let half = x.dtype == DType::F16;
    let (n, c) = rows_of(OP, (x, if half { DType::F16 } else { DType::F32 }), &same, &[gamma])?;
    want_dtype(OP, stats, DType::F32)?;
    if stats.numel() != 2 * n {
        return Err(Error::invalid(OP, format!("stats must hold (mean, rstd) for {n} rows, got {:?}", stats.shape)));
    }
    let spare;
    let r_buf = match r {
        Some(r) => &r.buf,
        None => {
            spare = Tensor::empty(dev, &[1], DType::F32)?;
            &spare.buf
        }
    };
    let dx = Tensor::empty(dev, &x.shape, DType::F32)?;
    let dgamma = Tensor::empty(dev, &[c], DType::F32)?;
    let dbeta = Tensor::empty(dev, &[c], DType::F32)?;
    let p = ResNormParams { rows: n as u32, c: c as u32, eps: 0.0, accumulate: r.is_some() as u32 };
    let bufs = [&x.buf, &gamma.buf, &stats.buf, &dy.buf, r_buf, &dx.buf, &dgamma.buf, &dbeta.buf];
    let groups = groups_1d(n + c, 1, dev.max_groups_per_dim());
    let kernel = if half { &LAYER_NORM_BWD_FUSED_HALF } else { &LAYER_NORM_BWD_FUSED };
    dev.dispatch(Dispatch::new(kernel, &p, &bufs, groups))?;
    Ok((dx, dgamma, dbeta))
}
