//! Embedding lookup and its backward. Kernels: shaders/embedding.wgsl; CPU twins: device/cpu/embedding.rs.
//!
//! Ids are u32 of any shape S and index the rows of a table [V, C]; the lookup gives [S..., C]. An id >= V
//! is clamped to V - 1 inside the kernels (the lookup returns the last row and the backward adds to it), so
//! a bad id can never read or write outside the table; validate ids where they are made. The backward is a
//! deterministic scatter-add: each table element sums its positions' gradients in increasing position
//! order, the same order on every device, so the GPU and CPU results are bit for bit equal.

use super::{launch_1d, u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::embedding::{EmbeddingParams, EMBEDDING_BWD, EMBEDDING_FWD};
use crate::kernels::groups_1d;
use crate::tensor::{DType, Tensor};

/// Params for ids `ids`, C features and `vocab` rows, with every index the kernels form checked to fit u32.
fn params(op: &'static str, ids: &Tensor, c: usize, vocab: usize) -> Result<EmbeddingParams> {
    want_dtype(op, ids, DType::U32)?;
    let n = ids.numel();
    u32_of(op, "output elements", n.saturating_mul(c))?;
    u32_of(op, "table elements", vocab.saturating_mul(c))?;
    // The backward stages ids 256 at a time: its chunk start runs up to n + 255.
    u32_of(op, "ids", n + 256)?;
    let wg = EMBEDDING_BWD.workgroup_size()[0] as usize;
    let cblocks = c.div_ceil(wg);
    u32_of(op, "backward workgroups", vocab * cblocks)?;
    Ok(EmbeddingParams { n: n as u32, c: c as u32, vocab: vocab as u32, cblocks: cblocks as u32 })
}

/// Rows of `table` picked by `ids` (u32, any shape S): f32 [S..., C] for a table f32 [V, C]. Ids >= V
/// read row V - 1 (see the module header).
pub fn embedding(dev: &Device, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    want_dtype(OP, table, DType::F32)?;
    let (vocab, c) = match table.shape[..] {
        [v, c] if v > 0 && c > 0 => (v, c),
        _ => {
            return Err(Error::invalid(
                OP,
                format!("table must be f32 [V, C] with V, C >= 1, got shape {:?} (ids {:?})", table.shape, ids.shape),
            ))
        }
    };
    let p = params(OP, ids, c, vocab)?;
    let mut shape = ids.shape.clone();
    shape.push(c);
    let out = Tensor::empty(dev, &shape, DType::F32)?;
    if p.n > 0 {
        launch_1d(dev, &EMBEDDING_FWD, &p, &[&ids.buf, &table.buf, &out.buf], p.n as usize * c)?;
    }
    Ok(out)
}

/// Gradient of `embedding` with respect to the table: dtable [vocab, C] with row v the sum of the rows of
/// `dout` ([S..., C] for ids of shape S) whose id is v (clamped as in the forward), added in increasing
/// position order; rows no id selects are 0.
pub fn embedding_backward(dev: &Device, ids: &Tensor, dout: &Tensor, vocab: usize) -> Result<Tensor> {
    const OP: &str = "embedding_backward";
    want_dtype(OP, dout, DType::F32)?;
    let c = match dout.shape.split_last() {
        Some((&c, s)) if s == &ids.shape[..] && c > 0 => c,
        _ => {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: ids.shape.clone(),
                rhs: dout.shape.clone(),
                hint: " (dout must be the ids' shape plus a non-empty feature axis)".into(),
            })
        }
    };
    if vocab == 0 {
        return Err(Error::invalid(OP, format!("vocab must be >= 1 (ids {:?}, dout {:?})", ids.shape, dout.shape)));
    }
    let p = params(OP, ids, c, vocab)?;
    let dtable = Tensor::empty(dev, &[vocab, c], DType::F32)?;
    let groups = groups_1d(vocab * p.cblocks as usize, 1, dev.max_groups_per_dim());
    dev.dispatch(Dispatch::new(&EMBEDDING_BWD, &p, &[&ids.buf, &dout.buf, &dtable.buf], groups))?;
    Ok(dtable)
}
