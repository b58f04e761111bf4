//! Losses and their gradients: cross-entropy fused with log-softmax, binary cross-entropy with logits,
//! and mean squared error (composed from existing ops).
//! Kernels: shaders/loss.wgsl; CPU twins: device/cpu/loss.rs.
//!
//! Cross-entropy takes logits [N, V] f32 and targets [N] u32 (class ids). The forward writes the per-row
//! loss and the row's log-sum-exp (`lse`), which the backward reuses instead of recomputing the row
//! reduction. The backward takes the upstream gradient per row as a tensor `g` of N f32 (a buffer, so a
//! captured step can scale it without re-recording): `cross_entropy_mean_backward` passes 1/N.
//!
//! Targets out of range: the kernels clamp a target >= V to V - 1, so the GPU never reads outside the row
//! (the loss and gradient of such a row are then those of class V - 1). Nothing inside the ops checks the
//! targets, since that needs a download and a training step must not wait on one: validate them once
//! where they are made, with `check_targets`.

use super::elementwise::{self as ew, Binary, Unary};
use super::{launch_1d, layout, reduce, u32_of, want_dtype, want_f32_fit};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::loss::{
    BceParams, CrossEntropyParams, BCE_LOGITS_BWD, BCE_LOGITS_FWD, CROSS_ENTROPY_BWD, CROSS_ENTROPY_FWD,
};
use crate::tensor::{DType, Tensor};

/// Checks host-side class ids against `classes`: the error names the first bad position and value.
/// Call it once where targets are made (the data loader); the kernels only clamp.
pub fn check_targets(targets: &[u32], classes: usize) -> Result<()> {
    match targets.iter().position(|&t| t as usize >= classes) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(
            "check_targets",
            format!(
                "target {i} is class {} but there are {classes} classes (valid ids 0..{classes}); \
                 the kernels would clamp it to class {}",
                targets[i],
                classes.saturating_sub(1)
            ),
        )),
    }
}

/// `check_targets` on a u32 tensor on the device. It downloads the tensor and waits: for tests and data
/// preparation, never inside a training step.
pub fn check_targets_tensor(dev: &Device, targets: &Tensor, classes: usize) -> Result<()> {
    want_dtype("check_targets", targets, DType::U32)?;
    check_targets(&targets.to_u32(dev)?, classes)
}

/// Shape checks shared by the cross-entropy ops: returns (N, V).
fn ce_shapes(op: &'static str, logits: &Tensor, targets: &Tensor) -> Result<(usize, usize)> {
    want_dtype(op, logits, DType::F32)?;
    if logits.rank() != 2 {
        return Err(Error::invalid(
            op,
            format!("logits of shape {:?} must be [N, V] (rank 2), got rank {}", logits.shape, logits.rank()),
        ));
    }
    let (n, v) = (logits.shape[0], logits.shape[1]);
    if targets.dtype != DType::U32 {
        return Err(Error::invalid(
            op,
            format!(
                "targets of shape {:?} have dtype {} where u32 class ids are required (logits {:?})",
                targets.shape,
                targets.dtype.name(),
                logits.shape
            ),
        ));
    }
    if targets.shape != [n] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: logits.shape.clone(),
            rhs: targets.shape.clone(),
            hint: format!(" (logits [N, V] need targets [N] = [{n}])"),
        });
    }
    if v == 0 && n > 0 {
        return Err(Error::invalid(op, format!("logits of shape {:?} have no classes", logits.shape)));
    }
    // Element offsets in the shaders are u32.
    u32_of(op, "elements", logits.numel())?;
    Ok((n, v))
}

/// Checks a per-row f32 tensor (lse, g) of shape [N].
fn want_rows(op: &'static str, what: &str, t: &Tensor, logits: &Tensor) -> Result<()> {
    let n = logits.shape[0];
    want_f32_fit(op, t, logits, t.shape == [n], || format!("{what} must be [N] = [{n}] for logits [N, V]"))
}

/// Cross-entropy of each row: loss[n] = logsumexp(logits[n]) - logits[n, targets[n]]. Returns
/// (loss [N], lse [N]); keep `lse` for `cross_entropy_backward`.
pub fn cross_entropy(dev: &Device, logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let op = "cross_entropy";
    let (n, v) = ce_shapes(op, logits, targets)?;
    let loss = Tensor::empty(dev, &[n], DType::F32)?;
    let lse = Tensor::empty(dev, &[n], DType::F32)?;
    if n == 0 {
        return Ok((loss, lse));
    }
    let p = CrossEntropyParams { rows: u32_of(op, "rows", n)?, len: u32_of(op, "classes", v)?, ..Default::default() };
    let groups = groups_1d(n, 1, dev.max_groups_per_dim());
    dev.dispatch(Dispatch::new(&CROSS_ENTROPY_FWD, &p, &[&logits.buf, &targets.buf, &loss.buf, &lse.buf], groups))?;
    Ok((loss, lse))
}

/// Gradient of sum_n g[n] * loss[n] with respect to the logits: dlogits[n, v] = (softmax(logits[n])[v] -
/// [v == targets[n]]) * g[n], with `lse` from `cross_entropy` and `g` of shape [N].
pub fn cross_entropy_backward(
    dev: &Device,
    logits: &Tensor,
    targets: &Tensor,
    lse: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let op = "cross_entropy_backward";
    let (n, v) = ce_shapes(op, logits, targets)?;
    want_rows(op, "lse", lse, logits)?;
    want_rows(op, "g", g, logits)?;
    let dx = Tensor::empty(dev, &[n, v], DType::F32)?;
    if n == 0 {
        return Ok(dx);
    }
    let p = CrossEntropyParams { rows: n as u32, len: v as u32, ..Default::default() };
    launch_1d(dev, &CROSS_ENTROPY_BWD, &p, &[&logits.buf, &targets.buf, &lse.buf, &g.buf, &dx.buf], n * v)?;
    Ok(dx)
}

/// The backward of the mean cross-entropy with upstream gradient `g` (one element): what
/// `cross_entropy_backward` gives with g[0] · (1/N) on every row (the mean's backward), in one dispatch.
pub fn cross_entropy_mean_backward_g(
    dev: &Device,
    logits: &Tensor,
    targets: &Tensor,
    lse: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let op = "cross_entropy_mean_backward";
    let (n, v) = ce_shapes(op, logits, targets)?;
    want_rows(op, "lse", lse, logits)?;
    want_dtype(op, g, DType::F32)?;
    if g.numel() != 1 {
        return Err(Error::invalid(op, format!("the upstream gradient must have one element, got {:?}", g.shape)));
    }
    let dx = Tensor::empty(dev, &[n, v], DType::F32)?;
    if n == 0 {
        return Ok(dx);
    }
    let p = CrossEntropyParams { rows: n as u32, len: v as u32, g_one: 1, g_scale: 1.0 / n as f32 };
    launch_1d(dev, &CROSS_ENTROPY_BWD, &p, &[&logits.buf, &targets.buf, &lse.buf, &g.buf, &dx.buf], n * v)?;
    Ok(dx)
}

/// Mean cross-entropy over the rows, shape [1], and the per-row `lse` for the backward.
pub fn cross_entropy_mean(dev: &Device, logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let (loss, lse) = cross_entropy(dev, logits, targets)?;
    if loss.numel() == 0 {
        return Err(Error::invalid("cross_entropy_mean", format!("logits of shape {:?} have no rows", logits.shape)));
    }
    Ok((reduce::mean_all(dev, &loss)?, lse))
}

/// Gradient of `cross_entropy_mean` (upstream gradient 1): `cross_entropy_backward` with g = 1/N.
pub fn cross_entropy_mean_backward(dev: &Device, logits: &Tensor, targets: &Tensor, lse: &Tensor) -> Result<Tensor> {
    let (n, _) = ce_shapes("cross_entropy_mean_backward", logits, targets)?;
    let g = layout::fill(dev, &[n], 1.0 / n.max(1) as f32)?;
    cross_entropy_backward(dev, logits, targets, lse, &g)
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor, hint: &str) -> Result<()> {
    want_dtype(op, a, DType::F32)?;
    want_dtype(op, b, DType::F32)?;
    if a.shape != b.shape {
        return Err(Error::ShapeMismatch { op, lhs: a.shape.clone(), rhs: b.shape.clone(), hint: hint.into() });
    }
    Ok(())
}

/// Binary cross-entropy with logits, elementwise: max(x, 0) - x t + log(1 + exp(-|x|)) (the stable form of
/// -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x))). Targets t are f32, usually in [0, 1].
pub fn bce_logits(dev: &Device, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let op = "bce_logits";
    same_shape(op, x, t, " (logits and targets must have one shape)")?;
    let out = Tensor::empty(dev, &x.shape, DType::F32)?;
    let n = x.numel();
    if n == 0 {
        return Ok(out);
    }
    let p = BceParams { n: u32_of(op, "elements", n)?, ..Default::default() };
    launch_1d(dev, &BCE_LOGITS_FWD, &p, &[&x.buf, &t.buf, &out.buf], n)?;
    Ok(out)
}

/// Gradient of `bce_logits`: dx = (sigmoid(x) - t) * dy, where dy has x's shape or a single element
/// (broadcast: 1/numel for a mean loss, for example).
pub fn bce_logits_backward(dev: &Device, x: &Tensor, t: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let op = "bce_logits_backward";
    same_shape(op, x, t, " (logits and targets must have one shape)")?;
    want_dtype(op, dy, DType::F32)?;
    let full = dy.shape == x.shape;
    if !full && dy.numel() != 1 {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape.clone(),
            rhs: dy.shape.clone(),
            hint: " (dy must have the logits' shape or a single element)".into(),
        });
    }
    let dx = Tensor::empty(dev, &x.shape, DType::F32)?;
    let n = x.numel();
    if n == 0 {
        return Ok(dx);
    }
    let p = BceParams { n: u32_of(op, "elements", n)?, dy_full: full as u32, ..Default::default() };
    launch_1d(dev, &BCE_LOGITS_BWD, &p, &[&x.buf, &t.buf, &dy.buf, &dx.buf], n)?;
    Ok(dx)
}

/// Mean squared error, shape [1]: mean((pred - target)^2), from elementwise ops and a reduction.
pub fn mse(dev: &Device, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    same_shape("mse", pred, target, " (prediction and target must have one shape)")?;
    if pred.numel() == 0 {
        return Err(Error::invalid("mse", format!("prediction of shape {:?} is empty", pred.shape)));
    }
    let d = ew::sub(dev, pred, target)?;
    let sq = ew::unary(dev, Unary::Square, &d)?;
    reduce::mean_all(dev, &sq)
}

/// Gradient of `mse` with respect to `pred`, scaled by the upstream gradient `g` (one element, f32):
/// 2 (pred - target) / numel * g.
pub fn mse_backward(dev: &Device, pred: &Tensor, target: &Tensor, g: &Tensor) -> Result<Tensor> {
    let op = "mse_backward";
    same_shape(op, pred, target, " (prediction and target must have one shape)")?;
    want_dtype(op, g, DType::F32)?;
    if g.numel() != 1 {
        return Err(Error::invalid(op, format!("g of shape {:?} must hold one element", g.shape)));
    }
    let n = pred.numel();
    if n == 0 {
        return Err(Error::invalid(op, format!("prediction of shape {:?} is empty", pred.shape)));
    }
    let d = ew::sub(dev, pred, target)?;
    let d = ew::scalar(dev, Binary::Mul, &d, 2.0 / n as f32, false)?;
    ew::mul(dev, &d, &g.reshape(&[1])?)?.reshape(&pred.shape)
}
