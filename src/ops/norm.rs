//! Layer norm over the last axis, with its fused backward. Kernels: shaders/norm.wgsl; CPU twins:
//! device/cpu/norm.rs.
//!
//! x is viewed as [N, C] (C the last axis, N the product of the others). The forward returns y (x's shape)
//! and the per-row statistics the backward needs: mean [N] and rstd = 1 / sqrt(var + eps) [N], with the
//! biased variance. The backward returns dx, dgamma [C] and dbeta [C]; the column sums are formed without
//! float atomics (per-chunk partials, then the chunks in order), so they are deterministic on every device.

use super::{launch_1d, u32_of, want_dtype, want_f32_fit};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::norm::{
    NormParams, LAYER_NORM_BWD_DX, LAYER_NORM_BWD_PARAMS, LAYER_NORM_BWD_PARTIAL, LAYER_NORM_FWD, LAYER_NORM_FWD_STATS,
};
use crate::tensor::{DType, Tensor};

/// (N, C) of x viewed as [N, C], with x's dtype and the element count checked.
fn rows_of(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    want_dtype(op, x, DType::F32)?;
    let c = match x.shape.last() {
        Some(&c) if c > 0 => c,
        _ => {
            return Err(Error::invalid(op, format!("x of shape {:?} has no non-empty last axis to normalise", x.shape)))
        }
    };
    // Element offsets in the shaders are u32.
    u32_of(op, "elements of x", x.numel())?;
    Ok((x.numel() / c, c))
}

/// A per-feature tensor (gamma, beta): f32 of shape [C].
fn want_features(op: &'static str, what: &str, t: &Tensor, x: &Tensor, c: usize) -> Result<()> {
    want_f32_fit(op, t, x, t.shape == [c], || format!("{what} must have shape [{c}], the last axis of x"))
}

/// A per-row tensor (mean, rstd): f32 with N elements.
fn want_rows(op: &'static str, what: &str, t: &Tensor, x: &Tensor, n: usize) -> Result<()> {
    want_f32_fit(op, t, x, t.numel() == n, || format!("{what} must hold one value per row of x, {n}"))
}

/// Rows per column partial of the backward: about sqrt(N), so that the partial pass (N / chunk · C threads,
/// chunk rows each) and the final pass (C threads, N / chunk partials each) are both short.
fn chunk_rows(n: usize) -> usize {
    n.isqrt().max(8)
}

/// Layer norm of x over its last axis: y = (x - mean) · rstd · gamma + beta with rstd = 1 / sqrt(var + eps)
/// and the biased variance. Returns (y, mean [N], rstd [N]) where N = numel / C.
pub fn layer_norm(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layer_norm";
    let (n, c) = rows_of(OP, x)?;
    want_features(OP, "gamma", gamma, x, c)?;
    want_features(OP, "beta", beta, x, c)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps} must be finite and >= 0")));
    }
    let y = Tensor::empty(dev, &x.shape, DType::F32)?;
    let mean = Tensor::empty(dev, &[n], DType::F32)?;
    let rstd = Tensor::empty(dev, &[n], DType::F32)?;
    if n == 0 {
        return Ok((y, mean, rstd));
    }
    let p = NormParams { rows: u32_of(OP, "rows", n)?, c: u32_of(OP, "features", c)?, eps, chunk: 1 };
    let groups = groups_1d(n, 1, dev.max_groups_per_dim());
    dev.dispatch(Dispatch::new(
        &LAYER_NORM_FWD,
        &p,
        &[&x.buf, &gamma.buf, &beta.buf, &y.buf, &mean.buf, &rstd.buf],
        groups,
    ))?;
    Ok((y, mean, rstd))
}

/// `layer_norm` with the row statistics as one tensor stats [N, 2] = (mean, rstd), the layout
/// `resnorm::layer_norm_backward_fused` (one dispatch) reads. Returns (y, stats).
pub fn layer_norm_stats(dev: &Device, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "layer_norm";
    let (n, c) = rows_of(OP, x)?;
    want_features(OP, "gamma", gamma, x, c)?;
    want_features(OP, "beta", beta, x, c)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps} must be finite and >= 0")));
    }
    let y = Tensor::empty(dev, &x.shape, DType::F32)?;
    let stats = Tensor::empty(dev, &[n, 2], DType::F32)?;
    if n > 0 {
        let p = NormParams { rows: u32_of(OP, "rows", n)?, c: u32_of(OP, "features", c)?, eps, chunk: 1 };
        let bufs = [&x.buf, &gamma.buf, &beta.buf, &y.buf, &stats.buf];
        dev.dispatch(Dispatch::new(&LAYER_NORM_FWD_STATS, &p, &bufs, groups_1d(n, 1, dev.max_groups_per_dim())))?;
    }
    Ok((y, stats))
}

/// Backward of `layer_norm` from its saved mean and rstd: with g = dy · gamma and x̂ = (x - mean) · rstd,
/// dx = rstd · (g - mean_C(g) - x̂ · mean_C(g x̂)), dgamma = Σ_rows dy · x̂, dbeta = Σ_rows dy.
/// Returns (dx, dgamma [C], dbeta [C]).
pub fn layer_norm_backward(
    dev: &Device,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layer_norm_backward";
    let (n, c) = rows_of(OP, x)?;
    want_features(OP, "gamma", gamma, x, c)?;
    want_rows(OP, "mean", mean, x, n)?;
    want_rows(OP, "rstd", rstd, x, n)?;
    want_dtype(OP, dy, DType::F32)?;
    if dy.shape != x.shape {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: x.shape.clone(),
            rhs: dy.shape.clone(),
            hint: " (dy must have the shape of x)".into(),
        });
    }
    let chunk = chunk_rows(n);
    let chunks = n.div_ceil(chunk);
    let p = NormParams {
        rows: u32_of(OP, "rows", n)?,
        c: u32_of(OP, "features", c)?,
        eps: 0.0,
        chunk: u32_of(OP, "chunk", chunk)?,
    };
    u32_of(OP, "column partials", 2 * chunks * c)?;

    let dx = Tensor::empty(dev, &x.shape, DType::F32)?;
    let partial = Tensor::empty(dev, &[chunks, 2, c], DType::F32)?;
    let dgamma = Tensor::empty(dev, &[c], DType::F32)?;
    let dbeta = Tensor::empty(dev, &[c], DType::F32)?;
    if n > 0 {
        let groups = groups_1d(n, 1, dev.max_groups_per_dim());
        dev.dispatch(Dispatch::new(
            &LAYER_NORM_BWD_DX,
            &p,
            &[&x.buf, &gamma.buf, &mean.buf, &rstd.buf, &dy.buf, &dx.buf],
            groups,
        ))?;
        launch_1d(
            dev,
            &LAYER_NORM_BWD_PARTIAL,
            &p,
            &[&x.buf, &mean.buf, &rstd.buf, &dy.buf, &partial.buf],
            chunks * c,
        )?;
    }
    // With no rows there are no partials and the column sums are zeros.
    launch_1d(dev, &LAYER_NORM_BWD_PARAMS, &p, &[&partial.buf, &dgamma.buf, &dbeta.buf], c)?;
    Ok((dx, dgamma, dbeta))
}
