//! Language-model batches sampled on the device from a byte corpus. Kernel: shaders/batch.wgsl; CPU twin:
//! device/cpu/batch.rs (identical windows: both draw from the Philox stream of ops::rng).
//!
//! The corpus stays on the device as bytes packed four per u32 word, little-endian (`pack_bytes`). Each
//! training step, row b of the batch starts at o_b = start + bits % (len - T), bits being element b of the
//! Philox bit stream (seed, step * stride) with stride = the batch rounded up to 4 and `step` read from the
//! step-counter buffer when the kernel runs: a captured training step samples fresh windows at every
//! replay. x[b, t] is byte o_b + t and y[b, t] = byte o_b + t + 1, so every byte read lies in
//! [start, start + len). A seed used here should not also drive dropout or `rng::RngState` draws.

use super::{launch_1d, u32_of, want_dtype};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::host::philox::split64;
use crate::kernels::batch::{WindowParams, TEXT_WINDOWS};
use crate::tensor::{DType, Tensor};

/// Bytes packed four per u32 word, little-endian, the last word padded with zeros: the corpus layout
/// `text_windows` reads.
pub fn pack_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

/// `batch` windows of `context` bytes from bytes [start, start + len) of `corpus` (u32 words, bytes packed
/// by `pack_bytes`), at the step held in `step` (the one-word u32 step counter): returns (x, y), both u32
/// [batch, context], y being x shifted by one byte (the next-byte targets). Requires len >= context + 1
/// and the range inside the corpus.
#[allow(clippy::too_many_arguments)]
pub fn text_windows(
    dev: &Device,
    corpus: &Tensor,
    start: u64,
    len: u64,
    batch: usize,
    context: usize,
    seed: u64,
    step: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let x = Tensor::empty(dev, &[batch, context], DType::U32)?;
    let y = Tensor::empty(dev, &[batch, context], DType::U32)?;
    text_windows_into(dev, corpus, start, len, seed, step, &x, &y)?;
    Ok((x, y))
}

/// `text_windows` into existing u32 [B, T] tensors `x` and `y` (for a recorded step whose graph reads
/// them as inputs).
#[allow(clippy::too_many_arguments)]
pub fn text_windows_into(
    dev: &Device,
    corpus: &Tensor,
    start: u64,
    len: u64,
    seed: u64,
    step: &Tensor,
    x: &Tensor,
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "text_windows";
    if x.dtype != DType::U32 || y.dtype != DType::U32 || x.shape.len() != 2 || x.shape != y.shape {
        return Err(Error::invalid(
            OP,
            format!("x and y must be u32 [B, T] of one shape, got {:?} and {:?}", x.shape, y.shape),
        ));
    }
    let (batch, context) = (x.shape[0], x.shape[1]);
    want_dtype(OP, corpus, DType::U32)?;
    if step.dtype != DType::U32 || step.numel() != 1 {
        return Err(Error::invalid(
            OP,
            format!("step must be the one-word u32 step counter, got {} of shape {:?}", step.dtype.name(), step.shape),
        ));
    }
    let bytes = corpus.numel() as u64 * 4;
    let end = start.saturating_add(len);
    if end > bytes {
        return Err(Error::invalid(
            OP,
            format!(
                "byte range [{start}, {start} + {len}) lies outside the corpus of shape {:?} ({bytes} bytes)",
                corpus.shape
            ),
        ));
    }
    if end > 1u64 << 32 {
        return Err(Error::invalid(OP, format!("byte range [{start}, {end}) ends past 2^32: byte positions are u32")));
    }
    if len < context as u64 + 1 {
        return Err(Error::invalid(
            OP,
            format!("a range of {len} bytes cannot hold a window of context {context} plus its target byte"),
        ));
    }
    let n = batch.saturating_mul(context);
    let p = WindowParams {
        batch: u32_of(OP, "batch", batch)?,
        context: u32_of(OP, "context", context)?,
        stride: u32_of(OP, "batch rounded up to 4", batch.next_multiple_of(4))?,
        span: u32_of(OP, "len - context", (len - context as u64) as usize)?,
        start: start as u32,
        _pad: 0,
        seed: split64(seed),
    };
    u32_of(OP, "batch * context", n)?;
    if n > 0 {
        launch_1d(dev, &TEXT_WINDOWS, &p, &[&corpus.buf, &step.buf, &x.buf, &y.buf], n)?;
    }
    Ok(())
}
