//! The mean binary cross-entropy with logits as one loss value, the logits plus an optional bias
//! broadcast over their rows (the last layer's, so that its add costs no dispatch): one dispatch
//! forward, one backward (shaders/bce_mean.wgsl; CPU twin device/cpu/bce_mean.rs). The same values as
//! `loss::bce_logits` followed by a mean, up to the order of the sum.

use super::{u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::loss::{BceMeanParams, BCE_MEAN_BWD, BCE_MEAN_FWD};
use crate::tensor::{DType, Tensor};

/// Checks x [rows, ...] (rows × cols elements), t (x's shape) and b (cols values); the params.
fn params(op: &'static str, x: &Tensor, t: &Tensor, b: Option<&Tensor>) -> Result<BceMeanParams> {
    want_dtype(op, x, DType::F32)?;
    want_dtype(op, t, DType::F32)?;
    if t.shape != x.shape {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape.clone(),
            rhs: t.shape.clone(),
            hint: " (logits and targets must have one shape)".into(),
        });
    }
    let n = x.numel();
    if n == 0 || x.rank() == 0 {
        return Err(Error::invalid(op, format!("the logits {:?} are empty", x.shape)));
    }
    let cols = n / x.shape[0];
    if let Some(b) = b {
        want_dtype(op, b, DType::F32)?;
        if b.numel() != cols {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.shape.clone(),
                rhs: b.shape.clone(),
                hint: format!(" (the bias holds one value per column, {cols})"),
            });
        }
    }
    Ok(BceMeanParams {
        rows: u32_of(op, "rows", x.shape[0])?,
        cols: u32_of(op, "columns", cols)?,
        bias: b.is_some() as u32,
        scale: 1.0 / n as f32,
    })
}

/// mean over i of bce(x_i + b[column of i], t_i), shape [1].
pub fn bce_mean(dev: &Device, x: &Tensor, t: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let p = params("bce_mean", x, t, b)?;
    let out = Tensor::empty(dev, &[1], DType::F32)?;
    let b = b.unwrap_or(x);
    dev.dispatch(Dispatch::new(&BCE_MEAN_FWD, &p, &[&x.buf, &t.buf, &b.buf, &out.buf], [1, 1, 1]))?;
    Ok(out)
}

/// The gradients of `bce_mean` for its upstream gradient dy (one element): dx (x's shape) and db (one
/// per column; the bias's gradient).
pub fn bce_mean_backward(
    dev: &Device,
    x: &Tensor,
    t: &Tensor,
    b: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "bce_mean_backward";
    let p = params(OP, x, t, b)?;
    want_dtype(OP, dy, DType::F32)?;
    if dy.numel() != 1 {
        return Err(Error::invalid(OP, format!("dy {:?} must hold one element", dy.shape)));
    }
    let dx = Tensor::empty(dev, &x.shape, DType::F32)?;
    let db = Tensor::empty(dev, &[p.cols as usize], DType::F32)?;
    let b = b.unwrap_or(x);
    let bufs = [&x.buf, &t.buf, &b.buf, &dy.buf, &dx.buf, &db.buf];
    dev.dispatch(Dispatch::new(&BCE_MEAN_BWD, &p, &bufs, [1, 1, 1]))?;
    Ok((dx, db))
}
