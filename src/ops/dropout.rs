//! Dropout whose mask is regenerated, not stored. Kernels: shaders/dropout.wgsl; CPU twins:
//! device/cpu/dropout.rs (bit-identical masks: both use the Philox stream of ops::rng).
//!
//! At training step s, element i of a site is kept when `u >= p`, u being element i of the uniform stream
//! (seed, offset + s * stride), and kept elements are multiplied by f32(1 / (1 - p)). The step s is read
//! from a one-word u32 tensor on the device (the project's step counter, advanced by a kernel), so a
//! captured training step draws a fresh mask at each replay although its params are frozen; the backward
//! reads the same counter and so regenerates the forward's mask, as long as the counter is not advanced
//! between the two.
//!
//! Streams must not overlap: site k at step s reads stream elements [offset_k + s * stride,
//! offset_k + s * stride + n_k). Sites that share a seed should share one stride (the sum of their sizes)
//! and take disjoint windows [offset_k, offset_k + n_k) inside [0, stride): `Dropout::sites` lays them out
//! so. A seed used for dropout should not also feed `rng::RngState` draws, whose offsets count up from 0.

use super::{launch_1d, layout, u32_of, want_dtype};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::host::philox::split64;
use crate::kernels::dropout::{DropoutParams, DROPOUT_BWD, DROPOUT_FWD};
use crate::kernels::Kernel;
use crate::tensor::{DType, Tensor};

/// Where one dropout site draws its masks: drop probability `p` in [0, 1), and the stream (seed, offset +
/// step * stride) of each step. `stride` is at least the site's element count and a multiple of 4.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Drop probability in [0, 1).
    pub p: f32,
    /// Philox stream of the mask.
    pub seed: u64,
    /// Stream offset at step 0.
    pub offset: u64,
    /// Stream elements per step (`stride_for`).
    pub stride: u32,
}

/// `n` rounded up to a multiple of 4, as a u32 stride.
pub fn stride_for(n: usize) -> Result<u32> {
    n.checked_next_multiple_of(4)
        .and_then(|s| u32::try_from(s).ok())
        .ok_or_else(|| Error::invalid("dropout", format!("{n} elements need a stride over 2^32 - 1")))
}

impl Dropout {
    /// A site with a window of its own: stream elements [offset + s * stride, ... + n) at step s, with
    /// stride = n rounded up to 4.
    pub fn new(p: f32, seed: u64, offset: u64, n: usize) -> Result<Dropout> {
        let d = Dropout { p, seed, offset, stride: stride_for(n)? };
        d.check(n)?;
        Ok(d)
    }

    /// Sites of `sizes` elements sharing `seed` and one stride (the sizes, each rounded up to 4, summed):
    /// their windows are disjoint at every step.
    pub fn sites(p: f32, seed: u64, sizes: &[usize]) -> Result<Vec<Dropout>> {
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut total = 0u64;
        for &n in sizes {
            offsets.push(total);
            total += stride_for(n)? as u64;
        }
        let stride = u32::try_from(total)
            .map_err(|_| Error::invalid("dropout", format!("sites of sizes {sizes:?} need a stride over 2^32 - 1")))?;
        let sites: Vec<Dropout> = offsets.into_iter().map(|offset| Dropout { p, seed, offset, stride }).collect();
        for (d, &n) in sites.iter().zip(sizes) {
            d.check(n)?;
        }
        Ok(sites)
    }

    /// The scale of kept elements, f32(1 / (1 - p)).
    pub fn scale(&self) -> f32 {
        (1.0 / (1.0 - self.p as f64)) as f32
    }

    fn check(&self, n: usize) -> Result<()> {
        self.problem(n).map_or(Ok(()), |m| Err(Error::invalid("dropout", m)))
    }

    fn problem(&self, n: usize) -> Option<String> {
        if !(self.p >= 0.0 && self.p < 1.0) {
            return Some(format!("p = {} must be in [0, 1)", self.p));
        }
        if (self.stride as usize) < n || !self.stride.is_multiple_of(4) {
            return Some(format!("stride {} must be a multiple of 4 and at least the {n} elements", self.stride));
        }
        None
    }
}

fn run(dev: &Device, op: &'static str, k: &'static Kernel, x: &Tensor, d: &Dropout, step: &Tensor) -> Result<Tensor> {
    want_dtype(op, x, DType::F32)?;
    if step.dtype != DType::U32 || step.numel() != 1 {
        return Err(Error::invalid(
            op,
            format!("step must be the one-word u32 step counter, got {} of shape {:?}", step.dtype.name(), step.shape),
        ));
    }
    let n = x.numel();
    if let Some(m) = d.problem(n) {
        return Err(Error::invalid(op, format!("{m} (input of shape {:?})", x.shape)));
    }
    if d.p == 0.0 {
        return layout::copy(dev, x);
    }
    let out = Tensor::empty(dev, &x.shape, DType::F32)?;
    if n == 0 {
        return Ok(out);
    }
    let p = DropoutParams {
        n: u32_of(op, "elements", n)?,
        stride: d.stride,
        p: d.p,
        scale: d.scale(),
        seed: split64(d.seed),
        offset: split64(d.offset),
    };
    launch_1d(dev, k, &p, &[&x.buf, &step.buf, &out.buf], n)?;
    Ok(out)
}

/// Dropout forward at the step held in `step` (a one-element u32 tensor): kept elements scaled by
/// 1 / (1 - p), dropped ones 0. p = 0 is a copy.
pub fn dropout(dev: &Device, x: &Tensor, d: &Dropout, step: &Tensor) -> Result<Tensor> {
    run(dev, "dropout", &DROPOUT_FWD, x, d, step)
}

/// Dropout backward: dx = dy * 1 / (1 - p) where the forward at the same step kept the element, 0
/// elsewhere (the mask is regenerated from the stream).
pub fn dropout_backward(dev: &Device, dy: &Tensor, d: &Dropout, step: &Tensor) -> Result<Tensor> {
    run(dev, "dropout_backward", &DROPOUT_BWD, dy, d, step)
}
