//! Rotary position embeddings on a packed q|k|v projection. Kernel: shaders/rope.wgsl; CPU twin:
//! device/cpu/rope.rs.
//!
//! qkv is [B, T, 3C] (q | k | v, heads of D = C / heads values); the angle table is [context, D/2, 2],
//! (cos, sin) of position · θ_j, context ≥ T. In q and in k, each head's pair (x_j, x_{j+D/2}) turns by its
//! position's angle (`sign` = −1 turns it back: the transpose, hence the backward); v is copied.

use super::{launch_1d, u32_of, want_dtype};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernels::rope::{RopeParams, ROPE_QKV};
use crate::tensor::{DType, Tensor};

/// The angle table [context, D/2, 2] for heads of `head_dim` values (even): (cos, sin) of
/// position · base^(−2j/D), computed in f64 and rounded once.
pub fn rope_table(context: usize, head_dim: usize, base: f64) -> Vec<f32> {
    let half = head_dim / 2;
    let mut v = Vec::with_capacity(context * half * 2);
    for p in 0..context {
        for j in 0..half {
            let a = p as f64 * base.powf(-2.0 * j as f64 / head_dim as f64);
            v.push(a.cos() as f32);
            v.push(a.sin() as f32);
        }
    }
    v
}

/// (B, T, C, D) of a valid call, or an error naming the shapes.
pub fn rope_shapes(qkv: &[usize], table: &[usize], heads: usize) -> Result<(usize, usize, usize, usize)> {
    let bad = |why: &str| {
        Err(Error::ShapeMismatch {
            op: "rope",
            lhs: qkv.to_vec(),
            rhs: table.to_vec(),
            hint: format!(" (qkv [B, T, 3C] with C = heads · D, D even, and a table [context ≥ T, D/2, 2]: {why})"),
        })
    };
    let &[b, t, w] = qkv else { return bad("qkv is not rank 3") };
    if heads == 0 || w % (3 * heads) != 0 || w == 0 {
        return bad("3C is not a positive multiple of 3 · heads");
    }
    let c = w / 3;
    let hd = c / heads;
    if hd % 2 == 1 {
        return bad("odd head size");
    }
    match table {
        &[ctx, h, 2] if ctx >= t && h == hd / 2 => Ok((b, t, c, hd)),
        _ => bad("table does not match"),
    }
}

/// qkv [B, T, 3C] with q and k rotated by `sign` times their positions' angles (see the module header).
pub fn rope(dev: &Device, qkv: &Tensor, table: &Tensor, heads: usize, sign: f32) -> Result<Tensor> {
    const OP: &str = "rope";
    want_dtype(OP, qkv, DType::F32)?;
    want_dtype(OP, table, DType::F32)?;
    let (b, t, c, hd) = rope_shapes(&qkv.shape, &table.shape, heads)?;
    let n = u32_of(OP, "elements", b * t * 3 * c)?;
    let p = RopeParams { n, t: t as u32, c: c as u32, hd: hd as u32, sign, _pad0: 0, _pad1: 0, _pad2: 0 };
    let out = Tensor::empty(dev, &qkv.shape, DType::F32)?;
    if n > 0 {
        launch_1d(dev, &ROPE_QKV, &p, &[&qkv.buf, &table.buf, &out.buf], n as usize)?;
    }
    Ok(out)
}
