//! Muon's element-wise kernels (shaders/muon.wgsl; CPU twins: device/cpu/muon.rs): Nesterov momentum,
//! scaling to unit Frobenius norm, and `axpby`, which joins the Newton-Schulz matmuls. `crate::optim::muon`
//! builds the optimizer on these, `ops::matmul` and the SGD update of `ops::optim`.

use super::{launch_1d, u32_of, want_dtype, want_f32_fit};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernels::muon::{
    AxpbyParams, MuonMomentumParams, MuonNormalizeParams, MUON_AXPBY, MUON_MOMENTUM, MUON_NORMALIZE,
};
use crate::tensor::{DType, Tensor};

fn same_numel(op: &'static str, what: &'static str, x: &Tensor, t: &Tensor) -> Result<()> {
    want_f32_fit(op, t, x, t.numel() == x.numel(), || format!("{what} must have as many elements"))
}

/// `m = momentum * m + g * clip[0]`, then `out = g * clip[0] + momentum * m` (Nesterov) or `out = m`.
/// `m` and `out` hold as many f32 as `grad`; `clip` is the optimizer's [scale, norm] buffer.
pub fn momentum(
    dev: &Device,
    grad: &Tensor,
    clip: &Tensor,
    m: &Tensor,
    out: &Tensor,
    momentum: f32,
    nesterov: bool,
) -> Result<()> {
    const OP: &str = "muon_momentum";
    want_dtype(OP, grad, DType::F32)?;
    want_f32_fit(OP, clip, grad, clip.numel() == 2, || "the clip buffer holds two f32 [scale, norm]".into())?;
    same_numel(OP, "the momentum buffer", grad, m)?;
    same_numel(OP, "the output", grad, out)?;
    if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
        return Err(Error::invalid(OP, format!("momentum = {momentum} is out of range: must be in [0, 1)")));
    }
    let n = grad.numel();
    if n == 0 {
        return Ok(());
    }
    let p = MuonMomentumParams { n: u32_of(OP, "elements", n)?, momentum, nesterov: nesterov as u32, _pad0: 0 };
    launch_1d(dev, &MUON_MOMENTUM, &p, &[&grad.buf, &clip.buf, &m.buf, &out.buf], n)
}

/// `x *= 1 / (sqrt(sum of partials[slot .. slot + n_partials]) + eps)`: with the partial sums of squares
/// of `x` that `ops::optim::sumsq_partial` wrote at `slot`, scales `x` to unit Frobenius norm.
pub fn normalize(dev: &Device, x: &Tensor, partials: &Tensor, slot: usize, n_partials: usize, eps: f32) -> Result<()> {
    const OP: &str = "muon_normalize";
    want_dtype(OP, x, DType::F32)?;
    want_dtype(OP, partials, DType::F32)?;
    if slot + n_partials > partials.numel() {
        return Err(Error::invalid(
            OP,
            format!("partial slots {slot}..{} are past the partials buffer's {}", slot + n_partials, partials.numel()),
        ));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps} is out of range: must be finite and >= 0")));
    }
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let p = MuonNormalizeParams {
        n: u32_of(OP, "elements", n)?,
        slot: u32_of(OP, "slot", slot)?,
        n_partials: u32_of(OP, "partials", n_partials)?,
        eps,
    };
    launch_1d(dev, &MUON_NORMALIZE, &p, &[&partials.buf, &x.buf], n)
}

/// `y = alpha * x + beta * y` in place (`beta = 0`: `y = alpha * x`, y's old values unread); `x` and `y`
/// hold as many f32.
pub fn axpby(dev: &Device, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<()> {
    const OP: &str = "muon_axpby";
    want_dtype(OP, x, DType::F32)?;
    same_numel(OP, "y", x, y)?;
    if x.buf.same(&y.buf) {
        return Err(Error::invalid(OP, format!("x {:?} and y {:?} share a buffer", x.shape, y.shape)));
    }
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let p = AxpbyParams { n: u32_of(OP, "elements", n)?, alpha, beta, _pad0: 0 };
    launch_1d(dev, &MUON_AXPBY, &p, &[&x.buf, &y.buf], n)
}
