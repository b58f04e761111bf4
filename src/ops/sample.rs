//! Minibatch sampling on the device: a batch of rows drawn with replacement from a data set that lives on
//! the device, at the training step held in the step counter. Kernels: shaders/sample.wgsl; CPU twins:
//! device/cpu/sample.rs (the same rows on both engines: the index is integer Philox arithmetic).
//!
//! Row r of the batch at step s is data row `bits(seed, s * stride + r) mod N`, bits being the raw Philox
//! stream of ops::rng and stride = `batch_stride(batch)` (the batch size rounded up to 4). A training step
//! recorded with `sample_rows_into` gathers a new batch at every replay once the step counter is advanced.
//! The modulo's bias is below N / 2^32 per row. Give the sampler a seed of its own (see ops::rng).

use super::rng::want_step_counter;
use super::{launch_1d, u32_of, want_dtype};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::host::philox::split64;
use crate::kernels::sample::{SampleParams, GATHER_LABELS, GATHER_ROWS};
use crate::tensor::{DType, Tensor};

/// Stream elements one step of a batch of `batch` rows uses: `batch` rounded up to 4.
pub fn batch_stride(batch: usize) -> u64 {
    (batch as u64).div_ceil(4) * 4
}

/// A batch of `batch` rows of `data` (f32 [N, D...]) and, given `labels` (u32 [N]), their labels, at the step
/// held in `step` (one-word u32 step counter). Returns ([batch, D...], labels u32 [batch]).
pub fn sample_rows(
    dev: &Device,
    data: &Tensor,
    labels: Option<&Tensor>,
    batch: usize,
    seed: u64,
    step: &Tensor,
) -> Result<(Tensor, Option<Tensor>)> {
    want_dtype("sample_rows", data, DType::F32)?;
    if data.rank() == 0 {
        return Err(Error::invalid("sample_rows", "data must have a row axis, got a scalar of shape []"));
    }
    let mut shape = data.shape.clone();
    shape[0] = batch;
    let out = Tensor::empty(dev, &shape, DType::F32)?;
    let out_labels = labels.map(|_| Tensor::empty(dev, &[batch], DType::U32)).transpose()?;
    sample_rows_into(dev, data, labels, seed, step, &out, out_labels.as_ref())?;
    Ok((out, out_labels))
}

/// `sample_rows` into existing tensors: the batch size is `out.shape[0]`; `out_labels` (u32 [batch]) is
/// required exactly when `labels` is given.
pub fn sample_rows_into(
    dev: &Device,
    data: &Tensor,
    labels: Option<&Tensor>,
    seed: u64,
    step: &Tensor,
    out: &Tensor,
    out_labels: Option<&Tensor>,
) -> Result<()> {
    const OP: &str = "sample_rows";
    want_dtype(OP, data, DType::F32)?;
    want_dtype(OP, out, DType::F32)?;
    want_step_counter(OP, step)?;
    if data.rank() == 0 || data.shape[0] == 0 {
        return Err(Error::invalid(OP, format!("data of shape {:?} has no rows to sample", data.shape)));
    }
    if out.rank() != data.rank() || out.shape[1..] != data.shape[1..] {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: data.shape.clone(),
            rhs: out.shape.clone(),
            hint: " (the batch must be [batch, ...] with the data's row shape)".into(),
        });
    }
    let nrows = data.shape[0];
    let batch = out.shape[0];
    let row_len = data.shape[1..].iter().product::<usize>();
    u32_of(OP, "data elements", data.numel())?;
    let p = SampleParams {
        n: u32_of(OP, "batch elements", out.numel())?,
        row_len: row_len as u32,
        nrows: nrows as u32,
        _pad: 0,
        seed: split64(seed),
        stride: split64(batch_stride(batch)),
    };
    match (labels, out_labels) {
        (Some(l), Some(ol)) => {
            want_dtype(OP, l, DType::U32)?;
            want_dtype(OP, ol, DType::U32)?;
            if l.shape != [nrows] {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    lhs: data.shape.clone(),
                    rhs: l.shape.clone(),
                    hint: " (labels must be [N] for data [N, ...])".into(),
                });
            }
            if ol.shape != [batch] {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    lhs: out.shape.clone(),
                    rhs: ol.shape.clone(),
                    hint: " (out_labels must be [batch] for a batch [batch, ...])".into(),
                });
            }
            if batch > 0 {
                let pl = SampleParams { n: batch as u32, ..p };
                launch_1d(dev, &GATHER_LABELS, &pl, &[&l.buf, &step.buf, &ol.buf], batch)?;
            }
        }
        (None, None) => {}
        (Some(_), None) => return Err(Error::invalid(OP, "labels were given without out_labels to write them to")),
        (None, Some(_)) => return Err(Error::invalid(OP, "out_labels were given without labels to gather")),
    }
    if p.n > 0 {
        launch_1d(dev, &GATHER_ROWS, &p, &[&data.buf, &step.buf, &out.buf], p.n as usize)?;
    }
    Ok(())
}
