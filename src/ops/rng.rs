//! Random tensors from counter-based Philox streams: raw u32 words, uniform and normal f32.
//! Kernels: shaders/rng.wgsl (generator in shaders/common/philox.wgsl); CPU twins: device/cpu/rng.rs.
//!
//! A stream is (seed, offset): output element i is element offset + i of the seed's sequence, computed
//! from the counter alone, so the same (seed, offset) gives the same tensor on every device. `bits`,
//! `uniform(0, 1)` and the standard `normal(0, 1)` are bit-identical between GPU and CPU. Other ranges
//! apply `shift + scale * x` in f32, which a GPU driver may fuse into one rounding: those agree to within
//! one rounding of `scale * x` (test: kernels_rng.rs). Use `RngState` to hand out offsets so that two draws
//! never reuse a stream.
//!
//! Step-indexed draws (`normal_step`, `uniform_step`) read the training step s from the step counter (a
//! one-word u32 tensor, ops::optim::step_counter) at run time: element i is element s * stride + i of the
//! seed's stream. A recorded training step therefore draws new numbers at each replay once the counter is
//! advanced (ops::optim::advance_step). Give each such draw a seed of its own (the stream offsets count up
//! from 0 with the step, so two draws on one seed overlap unless their windows are laid out by hand).

use super::{launch_1d, want_dtype};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::host::philox::split64;
use crate::kernels::rng::{RngParams, RngStepParams, BITS, NORMAL, NORMAL_STEP, PER_ELEMENT, UNIFORM, UNIFORM_STEP};
use crate::kernels::Kernel;
use crate::tensor::{numel, DType, Tensor};

/// Largest number of values one op writes: keeps the shader's `4 * invocation + lane` below 2^32.
pub const MAX_VALUES: usize = (u32::MAX - 8) as usize;

/// Dispatches `k` writing `n` values that start at lane `lane0` of counter block `block0`.
#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &Device,
    op: &'static str,
    k: &'static Kernel,
    shape: &[usize],
    dtype: DType,
    key: [u32; 2],
    block0: [u32; 2],
    ctr_hi: [u32; 2],
    lane0: u32,
    shift: f32,
    scale: f32,
) -> Result<Tensor> {
    let n = numel(shape)?;
    if n > MAX_VALUES {
        return Err(Error::invalid(
            op,
            format!("shape {shape:?} has {n} elements, over the {MAX_VALUES} one op draws"),
        ));
    }
    let out = Tensor::empty(dev, shape, dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let nblocks = (n + lane0 as usize).div_ceil(4);
    let p = RngParams { n: n as u32, lane0, nblocks: nblocks as u32, _pad: 0, key, block0, ctr_hi, shift, scale };
    launch_1d(dev, k, &p, &[&out.buf], nblocks)?;
    Ok(out)
}

/// Block and lane of stream element `offset`.
fn start(offset: u64) -> ([u32; 2], u32) {
    (split64(offset >> 2), (offset & 3) as u32)
}

/// Raw Philox words (u32) of stream (seed, offset), one per element.
pub fn bits(dev: &Device, shape: &[usize], seed: u64, offset: u64) -> Result<Tensor> {
    let (block0, lane0) = start(offset);
    launch(dev, "rng::bits", &BITS, shape, DType::U32, split64(seed), block0, [0, 0], lane0, 0.0, 1.0)
}

/// Uniform f32 in [lo, hi): `lo + (hi - lo) * u` with u = k * 2^-24, k in 0..2^24. With (0, 1) the result
/// is u itself, bit-identical on every device; for other ranges f32 rounding can give `hi` itself when
/// u is within 2^-24 of 1.
pub fn uniform(dev: &Device, shape: &[usize], seed: u64, offset: u64, lo: f32, hi: f32) -> Result<Tensor> {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi && (hi - lo).is_finite()) {
        return Err(Error::invalid(
            "rng::uniform",
            format!("range [{lo}, {hi}) for shape {shape:?}: needs finite lo <= hi with finite hi - lo"),
        ));
    }
    let (block0, lane0) = start(offset);
    launch(dev, "rng::uniform", &UNIFORM, shape, DType::F32, split64(seed), block0, [0, 0], lane0, lo, hi - lo)
}

/// Normal f32: `mean + std * z` with z a standard normal (Box-Muller in integer fixed point, |z| < 8,
/// within 2^-21 + 1e-7 of exact Box-Muller on the same words). With (0, 1) the result is z itself,
/// bit-identical on every device.
pub fn normal(dev: &Device, shape: &[usize], seed: u64, offset: u64, mean: f32, std: f32) -> Result<Tensor> {
    if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
        return Err(Error::invalid(
            "rng::normal",
            format!("mean {mean}, std {std} for shape {shape:?}: needs finite mean and finite std >= 0"),
        ));
    }
    let (block0, lane0) = start(offset);
    launch(dev, "rng::normal", &NORMAL, shape, DType::F32, split64(seed), block0, [0, 0], lane0, mean, std)
}

/// Raw counter access through the `bits` kernel: `4 * nblocks` words, block b being
/// `philox4x32([c0, c1, ctr[2], ctr[3]], key)` with (c0, c1) = (ctr[0], ctr[1]) + b as a 64-bit counter.
/// Tensor streams use ctr[2] = ctr[3] = 0; this reaches every counter (known-answer tests use it).
pub fn philox_blocks(dev: &Device, nblocks: usize, key: [u32; 2], ctr: [u32; 4]) -> Result<Tensor> {
    let n = nblocks.checked_mul(4).ok_or_else(|| Error::invalid("rng::philox_blocks", "block count overflows"))?;
    launch(dev, "rng::philox_blocks", &BITS, &[n], DType::U32, key, [ctr[0], ctr[1]], [ctr[2], ctr[3]], 0, 0.0, 1.0)
}

/// Diagnostic: elements 0..n of stream (seed, offset) through the one-element helpers `rng_*_at` that
/// kernels with one invocation per element use, as a [3, n] u32 tensor: the words, then the uniform and
/// normal values as f32 bit patterns. Equal to `bits`, `uniform(0, 1)` and `normal(0, 1)` by construction.
pub fn per_element(dev: &Device, n: usize, seed: u64, offset: u64) -> Result<Tensor> {
    if n > MAX_VALUES / 3 {
        return Err(Error::invalid("rng::per_element", format!("{n} elements, over the {} it checks", MAX_VALUES / 3)));
    }
    let out = Tensor::empty(dev, &[3, n], DType::U32)?;
    if n == 0 {
        return Ok(out);
    }
    let (block0, lane0) = start(offset);
    let p = RngParams {
        n: n as u32,
        lane0,
        nblocks: 0,
        _pad: 0,
        key: split64(seed),
        block0,
        ctr_hi: [0, 0],
        shift: 0.0,
        scale: 1.0,
    };
    launch_1d(dev, &PER_ELEMENT, &p, &[&out.buf], n)?;
    Ok(out)
}

/// The smallest stride a step-indexed draw of `n` values may use: n rounded up to a multiple of 4.
pub fn step_stride(n: usize) -> u64 {
    (n as u64).div_ceil(4) * 4
}

/// Checks the step counter: one u32 word.
pub(crate) fn want_step_counter(op: &'static str, step: &Tensor) -> Result<()> {
    if step.dtype != DType::U32 || step.numel() != 1 {
        return Err(Error::invalid(
            op,
            format!("step must be the one-word u32 step counter, got {} of shape {:?}", step.dtype.name(), step.shape),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn launch_step(
    dev: &Device,
    op: &'static str,
    k: &'static Kernel,
    out: &Tensor,
    seed: u64,
    stride: u64,
    shift: f32,
    scale: f32,
    step: &Tensor,
) -> Result<()> {
    want_dtype(op, out, DType::F32)?;
    want_step_counter(op, step)?;
    let n = out.numel();
    if n > MAX_VALUES {
        return Err(Error::invalid(
            op,
            format!("shape {:?} has {n} elements, over the {MAX_VALUES} one op draws", out.shape),
        ));
    }
    if stride < n as u64 || !stride.is_multiple_of(4) {
        return Err(Error::invalid(
            op,
            format!(
                "stride {stride} for shape {:?} must be a multiple of 4 and at least its {n} elements (step_stride \
                 gives {})",
                out.shape,
                step_stride(n)
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let nblocks = n.div_ceil(4);
    let p = RngStepParams {
        n: n as u32,
        nblocks: nblocks as u32,
        shift,
        scale,
        key: split64(seed),
        stride: split64(stride),
    };
    launch_1d(dev, k, &p, &[&step.buf, &out.buf], nblocks)
}

fn check_range(op: &'static str, shape: &[usize], lo: f32, hi: f32) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi && (hi - lo).is_finite()) {
        return Err(Error::invalid(
            op,
            format!("range [{lo}, {hi}) for shape {shape:?}: needs finite lo <= hi with finite hi - lo"),
        ));
    }
    Ok(())
}

/// Standard normal f32 at the step held in `step` (one-word u32 step counter): element i at step s is
/// element s * stride + i of stream `seed` (s * stride in 64 bits, wrapping), so `normal_step` at step s equals
/// `normal(dev, shape, seed, s * stride, 0.0, 1.0)`, bit for bit on every device. `stride` must be a multiple
/// of 4 and at least the number of elements (`step_stride`).
pub fn normal_step(dev: &Device, shape: &[usize], seed: u64, stride: u64, step: &Tensor) -> Result<Tensor> {
    let out = Tensor::empty(dev, shape, DType::F32)?;
    normal_step_into(dev, &out, seed, stride, step)?;
    Ok(out)
}

/// `normal_step` written into `out` (f32), for recorded steps whose buffers are allocated beforehand.
pub fn normal_step_into(dev: &Device, out: &Tensor, seed: u64, stride: u64, step: &Tensor) -> Result<()> {
    launch_step(dev, "rng::normal_step", &NORMAL_STEP, out, seed, stride, 0.0, 1.0, step)
}

/// Uniform f32 in [lo, hi) at the step held in `step`: `lo + (hi - lo) * u`, u being element s * stride + i
/// of stream `seed` as in `uniform`. With (0, 1) bit-identical on every device; other ranges as `uniform`.
#[allow(clippy::too_many_arguments)]
pub fn uniform_step(
    dev: &Device,
    shape: &[usize],
    seed: u64,
    stride: u64,
    lo: f32,
    hi: f32,
    step: &Tensor,
) -> Result<Tensor> {
    check_range("rng::uniform_step", shape, lo, hi)?;
    let out = Tensor::empty(dev, shape, DType::F32)?;
    uniform_step_into(dev, &out, seed, stride, lo, hi, step)?;
    Ok(out)
}

/// `uniform_step` written into `out` (f32).
pub fn uniform_step_into(
    dev: &Device,
    out: &Tensor,
    seed: u64,
    stride: u64,
    lo: f32,
    hi: f32,
    step: &Tensor,
) -> Result<()> {
    check_range("rng::uniform_step", &out.shape, lo, hi)?;
    launch_step(dev, "rng::uniform_step", &UNIFORM_STEP, out, seed, stride, lo, hi - lo, step)
}

/// Hands out stream offsets for one seed so that no two draws share random numbers. Each draw advances
/// the offset by the number of values drawn, rounded up to whole Philox blocks (4 values): a uniform and
/// a normal draw would otherwise read the same words of a shared block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngState {
    /// The stream's seed.
    pub seed: u64,
    /// Next unused stream offset.
    pub offset: u64,
}

impl RngState {
    /// A stream for `seed`, at offset 0.
    pub fn new(seed: u64) -> RngState {
        RngState { seed, offset: 0 }
    }

    /// Reserves `n` values: returns the offset to draw them at and advances past them. A u64 of offsets
    /// lasts 2^64 values, so the wrap is not a practical concern.
    pub fn take(&mut self, n: u64) -> u64 {
        let o = self.offset;
        self.offset = self.offset.wrapping_add(n.div_ceil(4).wrapping_mul(4));
        o
    }

    /// Random u32 words of `shape`.
    pub fn bits(&mut self, dev: &Device, shape: &[usize]) -> Result<Tensor> {
        let o = self.take(numel(shape)? as u64);
        bits(dev, shape, self.seed, o)
    }

    /// Uniform f32 in [lo, hi) of `shape`.
    pub fn uniform(&mut self, dev: &Device, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
        let o = self.take(numel(shape)? as u64);
        uniform(dev, shape, self.seed, o, lo, hi)
    }

    /// Normal f32 of `shape`.
    pub fn normal(&mut self, dev: &Device, shape: &[usize], mean: f32, std: f32) -> Result<Tensor> {
        let o = self.take(numel(shape)? as u64);
        normal(dev, shape, self.seed, o, mean, std)
    }
}
