//! Casts between f32 and f16 storage. Kernels: shaders/cast.wgsl; CPU twin: device/cpu/cast.rs.
//!
//! f32 -> f16 rounds to nearest (ties to even on the CPU; a GPU may round an inexact value to either
//! neighbour, so backends agree within one f16 ulp) and overflows to ±inf; f16 -> f32 is exact. An f16
//! tensor is storage only: the kernels that read one widen it to f32 to compute.

use super::{launch_1d, u32_of};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernels::cast::{CastParams, CAST_F16_TO_F32, CAST_F32_TO_F16};
use crate::tensor::{DType, Tensor};

const OP: &str = "cast";

/// `x` (f32 or f16) as `to` (f32 or f16) in a new tensor of the same shape; a tensor already of dtype
/// `to` is returned as it is (shared, no dispatch).
pub fn cast(dev: &Device, x: &Tensor, to: DType) -> Result<Tensor> {
    if x.dtype == to {
        return Ok(x.clone());
    }
    let (kernel, threads) = match (x.dtype, to) {
        (DType::F32, DType::F16) => (&CAST_F32_TO_F16, DType::F16.words(x.numel())),
        (DType::F16, DType::F32) => (&CAST_F16_TO_F32, x.numel()),
        (from, to) => {
            return Err(Error::invalid(OP, format!("casts f32 <-> f16 only, not {} -> {}", from.name(), to.name())))
        }
    };
    let out = Tensor::empty(dev, &x.shape, to)?;
    let n = u32_of(OP, &format!("the element count of {:?}", x.shape), x.numel())?;
    if n > 0 {
        launch_1d(dev, kernel, &CastParams { n, _pad0: 0, _pad1: 0, _pad2: 0 }, &[&x.buf, &out.buf], threads)?;
    }
    Ok(out)
}
