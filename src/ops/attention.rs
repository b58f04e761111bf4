//! Fused multi-head self-attention (FlashAttention-2 style): forward and backward without the T x T
//! attention matrix in memory.
//! Kernels: shaders/attention.wgsl; CPU twins: device/cpu/attention.rs.
//!
//! Layout, chosen so no transpose surrounds the op: `qkv` is [B, T, 3C] with C = H*D, each token's row
//! = [q (H heads x D), k (H x D), v (H x D)] (the output of one x @ W_qkv matmul). `out` is [B, T, C]
//! (head h in columns h*D .. h*D+D, ready for the output projection) and `lse` [B, H, T] is each query
//! row's log-sum-exp of its scaled scores, which the backward uses to recompute the probabilities.
//! Scale = 1/sqrt(D); causal: query i sees keys j <= i.
//!
//! The backward is one dispatch of `attention_bwd`: half its workgroups own query tiles (dQ), half own
//! key tiles (dK and dV), each computing the delta = rowsum(dO * O) of the query rows it meets. They
//! write disjoint columns of one `dqkv` buffer, each element once: no atomics, no scratch, deterministic.

use super::{u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::attention::{variant, AttentionKernels, AttentionParams, FULL, MAX_HEAD_DIM, SMALL, TILE};
use crate::kernels::groups_1d;
use crate::tensor::{DType, Tensor};

/// (B, T, H, D) of a qkv tensor, checked.
fn dims(op: &'static str, (qkv, dtype): (&Tensor, DType), heads: usize) -> Result<(usize, usize, usize, usize)> {
    want_dtype(op, qkv, dtype)?;
    if qkv.rank() != 3 {
        return Err(Error::invalid(
            op,
            format!("qkv of shape {:?} must be [B, T, 3*C] (rank 3), got rank {}", qkv.shape, qkv.rank()),
        ));
    }
    if heads == 0 {
        return Err(Error::invalid(op, format!("heads must be > 0 (qkv {:?})", qkv.shape)));
    }
    let (b, t, w) = (qkv.shape[0], qkv.shape[1], qkv.shape[2]);
    if w == 0 || w % (3 * heads) != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "qkv of shape {:?}: last dim {w} must be a positive multiple of 3 * heads = {} (q, k, v of {heads} heads)",
                qkv.shape,
                3 * heads
            ),
        ));
    }
    let d = w / (3 * heads);
    if d > MAX_HEAD_DIM {
        return Err(Error::invalid(
            op,
            format!(
                "qkv of shape {:?} with {heads} heads has head dim {d}, over the supported {MAX_HEAD_DIM}",
                qkv.shape
            ),
        ));
    }
    // Element offsets in the shaders are u32.
    u32_of(op, "qkv elements", qkv.numel())?;
    u32_of(op, "batch * heads * tiles", b.saturating_mul(heads).saturating_mul(t.div_ceil(TILE)))?;
    Ok((b, t, heads, d))
}

/// The kernels for head dim `d` on `dev`: the small tiles where its workgroup memory is short (WebGPU's
/// default 16 KiB).
fn kernels(op: &'static str, dev: &Device, d: usize) -> Result<&'static AttentionKernels> {
    let limit = dev.max_workgroup_memory();
    variant(limit, d).ok_or_else(|| Error::LimitExceeded {
        what: format!("{op} with head dim {d} (up to {} fits {} bytes)", SMALL.max_head_dim, SMALL.workgroup_memory()),
        requested: FULL.workgroup_memory() as u64,
        limit_name: "max_compute_workgroup_storage_size",
        limit: limit as u64,
    })
}

fn params(b: usize, t: usize, h: usize, d: usize, causal: bool) -> AttentionParams {
    let tiles = t.div_ceil(TILE);
    AttentionParams {
        batch: b as u32,
        seq: t as u32,
        heads: h as u32,
        head_dim: d as u32,
        causal: causal as u32,
        scale: 1.0 / (d as f32).sqrt(),
        tiles: tiles as u32,
        groups: (tiles * b * h) as u32,
    }
}

/// Checks an f32 tensor of the given shape (an argument of the backward) against qkv's.
fn want(op: &'static str, what: &str, t: &Tensor, shape: &[usize], qkv: &Tensor) -> Result<()> {
    want_in(op, what, t, shape, qkv, DType::F32)
}

/// `want` for a tensor of `dtype`.
fn want_in(op: &'static str, what: &str, t: &Tensor, shape: &[usize], qkv: &Tensor, dtype: DType) -> Result<()> {
    want_dtype(op, t, dtype)?;
    if t.shape != shape {
        return Err(Error::ShapeMismatch {
            op,
            lhs: qkv.shape.clone(),
            rhs: t.shape.clone(),
            hint: format!(" ({what} must be {shape:?} for qkv {:?})", qkv.shape),
        });
    }
    Ok(())
}

/// Multi-head self-attention of `qkv` [B, T, 3C] with `heads` heads: returns `out` [B, T, C] and
/// `lse` [B, H, T] (row log-sum-exp of the scaled scores, for `attention_backward`).
pub fn attention(dev: &Device, qkv: &Tensor, heads: usize, causal: bool) -> Result<(Tensor, Tensor)> {
    let op = "attention";
    let (b, t, h, d) = dims(op, (qkv, DType::F32), heads)?;
    let out = Tensor::empty(dev, &[b, t, h * d], DType::F32)?;
    let lse = Tensor::empty(dev, &[b, h, t], DType::F32)?;
    if b * t == 0 {
        return Ok((out, lse));
    }
    let k = kernels(op, dev, d)?;
    let p = params(b, t, h, d, causal);
    let groups = groups_1d(p.groups as usize, 1, dev.max_groups_per_dim());
    dev.dispatch(Dispatch::new(k.fwd, &p, &[&qkv.buf, &out.buf, &lse.buf], groups))?;
    Ok((out, lse))
}

/// Backward of `attention`: from the forward's `qkv`, `out`, `lse` and the gradient `dout` of `out`,
/// returns `dqkv` [B, T, 3C] in qkv's layout. qkv and out may both be f16 (as a mixed-precision plan
/// keeps them for the backward): the kernel then widens them as it reads (`attention_bwd_half`), the
/// numbers of the f32 backward of the widened values.
pub fn attention_backward(
    dev: &Device,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Tensor> {
    let op = "attention_backward";
    // qkv and out both f16 (as a mixed-precision plan keeps them for the backward) or both f32.
    let half = qkv.dtype == DType::F16;
    let (b, t, h, d) = dims(op, (qkv, if half { DType::F16 } else { DType::F32 }), heads)?;
    want_in(op, "out", out, &[b, t, h * d], qkv, if half { DType::F16 } else { DType::F32 })?;
    want(op, "dout", dout, &[b, t, h * d], qkv)?;
    want(op, "lse", lse, &[b, h, t], qkv)?;
    let dqkv = Tensor::empty(dev, &qkv.shape, DType::F32)?;
    if b * t == 0 {
        return Ok(dqkv);
    }
    let k = kernels(op, dev, d)?;
    let p = params(b, t, h, d, causal);
    // The query-tile half, then the key-tile half.
    u32_of(op, "2 * batch * heads * tiles", 2 * p.groups as usize)?;
    let groups = groups_1d(2 * p.groups as usize, 1, dev.max_groups_per_dim());
    let kernel = if half { k.bwd_half } else { k.bwd };
    dev.dispatch(Dispatch::new(kernel, &p, &[&qkv.buf, &lse.buf, &dout.buf, &out.buf, &dqkv.buf], groups))?;
    Ok(dqkv)
}
