//! The gated MLP's gate, fused: y = silu(u) ⊙ v (SwiGLU) and its backward (du, dv), one dispatch each.
//! Kernels: shaders/gated.wgsl; CPU twins: device/cpu/gated.rs.

use super::{launch_1d, u32_of, want_dtype};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernels::gated::{GateParams, SILU_GATE_BWD, SILU_GATE_FWD};
use crate::tensor::{DType, Tensor};

fn check(op: &'static str, ts: &[&Tensor]) -> Result<u32> {
    for t in ts {
        want_dtype(op, t, DType::F32)?;
        if t.shape != ts[0].shape {
            return Err(Error::ShapeMismatch {
                op,
                lhs: ts[0].shape.clone(),
                rhs: t.shape.clone(),
                hint: " (the gate's operands share one shape)".into(),
            });
        }
    }
    u32_of(op, "elements", ts[0].numel())
}

/// silu(u) ⊙ v, elementwise over one shape.
pub fn silu_gate(dev: &Device, u: &Tensor, v: &Tensor) -> Result<Tensor> {
    const OP: &str = "silu_gate";
    let n = check(OP, &[u, v])?;
    let y = Tensor::empty(dev, &u.shape, DType::F32)?;
    if n > 0 {
        let p = GateParams { n, ..Default::default() };
        launch_1d(dev, &SILU_GATE_FWD, &p, &[&u.buf, &v.buf, &y.buf], n as usize)?;
    }
    Ok(y)
}

/// The backward of `silu_gate`: (du, dv) = (dy ⊙ v ⊙ silu'(u), dy ⊙ silu(u)).
pub fn silu_gate_backward(dev: &Device, u: &Tensor, v: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "silu_gate_backward";
    let n = check(OP, &[u, v, dy])?;
    let du = Tensor::empty(dev, &u.shape, DType::F32)?;
    let dv = Tensor::empty(dev, &u.shape, DType::F32)?;
    if n > 0 {
        let p = GateParams { n, ..Default::default() };
        launch_1d(dev, &SILU_GATE_BWD, &p, &[&u.buf, &v.buf, &dy.buf, &du.buf, &dv.buf], n as usize)?;
    }
    Ok((du, dv))
}
