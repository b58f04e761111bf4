//! The gated MLP's gate, fused: y = silu(u) ⊙ v (SwiGLU) and its backward (du, dv), one dispatch each.
//! Kernels: shaders/gated.wgsl; CPU twins: device/cpu/gated.rs. `linear_silu_gate` makes the gate the
//! epilogue of the two input projections (shaders/matmul_pair.wgsl), `matmul_pair_silu_gate_backward`
//! the gate's backward the epilogue of the output projection's backward (shaders/matmul_pair_gate.wgsl).

use super::matmul::{
    checked_params, matmul_into, matmul_pair_into, matmul_shape, pair_grid, MatmulJob, MatmulOpts, MatmulShape,
};
use super::{launch_1d, u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::gated::{GateParams, SILU_GATE_BWD, SILU_GATE_BWD_HALF, SILU_GATE_FWD};
use crate::kernels::matmul_pair::{MATMUL_PAIR_SILU_GATE, MATMUL_PAIR_SILU_GATE_BWD};
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

/// The backward of `silu_gate`: (du, dv) = (dy ⊙ v ⊙ silu'(u), dy ⊙ silu(u)). u and v may both be f16
/// (the projections a mixed-precision plan keeps in f16 for the backward): they are read as they are
/// and widened exactly, so the result is that of their f32 copies. dy, du and dv are f32.
pub fn silu_gate_backward(dev: &Device, u: &Tensor, v: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "silu_gate_backward";
    let (n, kernel) = if u.dtype == DType::F16 && v.dtype == DType::F16 {
        if u.shape != v.shape {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: u.shape.clone(),
                rhs: v.shape.clone(),
                hint: " (the gate's operands share one shape)".into(),
            });
        }
        (check(OP, &[dy])?, &SILU_GATE_BWD_HALF)
    } else {
        (check(OP, &[u, v])?, &SILU_GATE_BWD)
    };
    if dy.shape != u.shape {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: u.shape.clone(),
            rhs: dy.shape.clone(),
            hint: " (the gate's operands share one shape)".into(),
        });
    }
    want_dtype(OP, dy, DType::F32)?;
    let du = Tensor::empty(dev, &u.shape, DType::F32)?;
    let dv = Tensor::empty(dev, &u.shape, DType::F32)?;
    if n > 0 {
        let p = GateParams { n, ..Default::default() };
        launch_1d(dev, kernel, &p, &[&u.buf, &v.buf, &dy.buf, &du.buf, &dv.buf], n as usize)?;
    }
    Ok((du, dv))
}

/// The gated MLP's input side, with the gate as the matmul's epilogue: u = x·W_gate, v = x·W_up and
/// h = silu(u) ⊙ v for x [rows, in] and both weights [in, hidden], in one dispatch
/// (shaders/matmul_pair.wgsl `matmul_pair_silu_gate`: the numbers of two `matmul`s and `silu_gate`).
/// Returns (h, u, v); the backward needs u and v. Where the grid passes the device's limits, the three
/// unfused dispatches.
pub fn linear_silu_gate(dev: &Device, x: &Tensor, w_gate: &Tensor, w_up: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "linear_silu_gate";
    if x.shape.len() != 2 || w_gate.shape.len() != 2 || w_gate.shape != w_up.shape {
        return Err(Error::invalid(
            OP,
            format!(
                "x {:?} must be [rows, in] and both weights one [in, hidden] shape (gate {:?}, up {:?})",
                x.shape, w_gate.shape, w_up.shape
            ),
        ));
    }
    for t in [x, w_gate, w_up] {
        want_dtype(OP, t, DType::F32)?;
    }
    let opts = MatmulOpts::default();
    let shape = matmul_shape(&x.shape, &w_gate.shape, &opts)?.out_shape;
    let (u, v, h) = (
        Tensor::empty(dev, &shape, DType::F32)?,
        Tensor::empty(dev, &shape, DType::F32)?,
        Tensor::empty(dev, &shape, DType::F32)?,
    );
    let (s0, p0) = checked_params(x, w_gate, opts, &u, false)?;
    let (s1, p1) = checked_params(x, w_up, opts, &v, false)?;
    if s0.m == 0 || s0.n == 0 {
        return Ok((h, u, v));
    }
    match pair_grid(dev, (&s0, p0), (&s1, p1), false) {
        Some((pp, groups)) => {
            let bufs = [&x.buf, &w_gate.buf, &x.buf, &w_up.buf, &u.buf, &v.buf, &h.buf];
            dev.dispatch(Dispatch::new(&MATMUL_PAIR_SILU_GATE, &pp, &bufs, groups))?;
            Ok((h, u, v))
        }
        None => {
            matmul_into(dev, x, w_gate, opts, &u, false)?;
            matmul_into(dev, x, w_up, opts, &v, false)?;
            Ok((silu_gate(dev, &u, &v)?, u, v))
        }
    }
}

/// The backward through a gated MLP's output projection y = α·op(h)·op(W) of h = silu(u) ⊙ v, given G
/// (y's gradient): its two products dH = α0·op(G)·op(W') and dW = α1·op(H')·op(G), with dH handed to
/// the gate's backward (`matmul_pair_silu_gate_backward`).
#[derive(Clone, Copy, Debug)]
pub struct GateProjectionGrads<'a> {
    /// G: A of product 0 and B of product 1.
    pub g: &'a Tensor,
    /// B of product 0 (the projection's weight).
    pub w: &'a Tensor,
    /// A of product 1 (the projection's input h).
    pub h: &'a Tensor,
    /// The gate's saved input u (dH has its element count, laid out as u).
    pub u: &'a Tensor,
    /// The gate's saved input v, of u's shape.
    pub v: &'a Tensor,
    /// Each product's transposes and alpha.
    pub opts: [MatmulOpts; 2],
    /// dW is added into this tensor (and returned) instead of written to a fresh one.
    pub dw_into: Option<&'a Tensor>,
}

/// The products dH and dW of `GateProjectionGrads` and the gate's backward (du, dv) of dH, in one
/// dispatch where it can (shaders/matmul_pair_gate.wgsl `matmul_pair_silu_gate_bwd`: dH turned into du
/// and dv in the epilogue, never stored; the numbers of `matmul_pair_into` and `silu_gate_backward`).
/// Returns (du, dv, dW). Where one dispatch cannot hold it (an empty product, an f16 operand, dW's
/// buffer also read, a grid over the device's limits), the pair then `silu_gate_backward`.
pub fn matmul_pair_silu_gate_backward(dev: &Device, j: GateProjectionGrads) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "matmul_pair_silu_gate_backward";
    check(OP, &[j.u, j.v])?;
    let [o0, o1] = j.opts;
    let dh_shape = matmul_shape(&j.g.shape, &j.w.shape, &o0)?.out_shape;
    if dh_shape.iter().product::<usize>() != j.u.numel() {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: dh_shape,
            rhs: j.u.shape.clone(),
            hint: " (dH and the gate's u must have one element count)".into(),
        });
    }
    // du in the fused dispatch, dH in the fallback: checked as the product dH either way.
    let first = Tensor::empty(dev, &j.u.shape, DType::F32)?;
    let dw = match j.dw_into {
        Some(t) => t.clone(),
        None => Tensor::empty(dev, &matmul_shape(&j.h.shape, &j.g.shape, &o1)?.out_shape, DType::F32)?,
    };
    let dh = first.reshape(&dh_shape)?;
    let (s0, p0) = checked_params(j.g, j.w, o0, &dh, false)?;
    let (s1, p1) = checked_params(j.h, j.g, o1, &dw, j.dw_into.is_some())?;
    let empty = |s: &MatmulShape| s.m == 0 || s.n == 0 || s.batch == 0;
    let read = [j.g, j.w, j.h, j.u, j.v];
    let fused = !empty(&s0) && !empty(&s1) && p0.half == 0 && p1.half == 0 && !read.iter().any(|t| t.buf.same(&dw.buf));
    match pair_grid(dev, (&s0, p0), (&s1, p1), true).filter(|_| fused) {
        Some((pp, groups)) => {
            let (du, dv) = (first, Tensor::empty(dev, &j.u.shape, DType::F32)?);
            let bufs = [&j.g.buf, &j.w.buf, &j.h.buf, &j.u.buf, &j.v.buf, &dw.buf, &du.buf, &dv.buf];
            dev.dispatch(Dispatch::new(&MATMUL_PAIR_SILU_GATE_BWD, &pp, &bufs, groups))?;
            Ok((du, dv, dw))
        }
        None => {
            let job = |a, b, opts, out, accumulate| MatmulJob { a, b, opts, out, accumulate };
            matmul_pair_into(dev, [job(j.g, j.w, o0, &dh, false), job(j.h, j.g, o1, &dw, j.dw_into.is_some())])?;
            let (du, dv) = silu_gate_backward(dev, j.u, j.v, &first)?;
            Ok((du, dv, dw))
        }
    }
}
