//! Softmax and log-softmax along the last axis, numerically stable (the row max is subtracted first).
//! Kernel: shaders/softmax.wgsl (`softmax_rows`, one workgroup per row, rows folded into y past the
//! per-dimension limit); CPU twin: device/cpu/softmax.rs. Inputs are expected finite.

use super::{u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::softmax::{SoftmaxParams, SOFTMAX_ROWS};
use crate::tensor::{DType, Tensor};

fn run(dev: &Device, op: &'static str, x: &Tensor, log: bool) -> Result<Tensor> {
    want_dtype(op, x, DType::F32)?;
    let Some(&len) = x.shape.last() else {
        return Err(Error::invalid(op, format!("shape {:?} has no last axis to normalise", x.shape)));
    };
    let out = Tensor::empty(dev, &x.shape, DType::F32)?;
    let n = x.numel();
    if n == 0 {
        return Ok(out);
    }
    let rows = n / len;
    let p = SoftmaxParams {
        rows: u32_of(op, "rows", rows)?,
        len: u32_of(op, "row length", len)?,
        log: log as u32,
        _pad: 0,
    };
    // Element offsets in the shader are u32.
    u32_of(op, "elements", n)?;
    let groups = groups_1d(rows, 1, dev.max_groups_per_dim());
    dev.dispatch(Dispatch::new(&SOFTMAX_ROWS, &p, &[&x.buf, &out.buf], groups))?;
    Ok(out)
}

/// exp(x - max) / sum(exp(x - max)) along the last axis.
pub fn softmax(dev: &Device, x: &Tensor) -> Result<Tensor> {
    run(dev, "softmax", x, false)
}

/// x - max - log(sum(exp(x - max))) along the last axis.
pub fn log_softmax(dev: &Device, x: &Tensor) -> Result<Tensor> {
    run(dev, "log_softmax", x, true)
}
