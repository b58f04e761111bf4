//! CPU twin of shaders/gated.wgsl: silu(u) ⊙ v and its backward, one pass each (also the epilogues of
//! the matmul_pair twins), through the elementwise twin's `unary_op` and `unary_deriv` (SiLU, op 13):
//! the formulas the unfused form's kernels evaluate, so the fused and unfused forms give the same
//! numbers on the CPU.

use rayon::prelude::*;

use super::elementwise::{unary_deriv, unary_op};
use super::{par_chunks, CpuArgs, CHUNK};
use crate::host::f16;
use crate::kernels::gated::GateParams;

/// SiLU's op code in the elementwise family.
const SILU: u32 = 13;

/// Bindings: params, u, v (read), y (read_write).
pub fn silu_gate_fwd(args: &mut CpuArgs) {
    let n = args.params::<GateParams>().n as usize;
    let (u, v) = (args.f32_in(0), args.f32_in(1));
    silu_gate_into(&u[..n], &v[..n], &mut args.f32_out(0)[..n]);
}

/// y = silu(u) ⊙ v over equal lengths (also the epilogue of `matmul_pair_silu_gate`'s twin).
pub(crate) fn silu_gate_into(u: &[f32], v: &[f32], y: &mut [f32]) {
    par_chunks(y, |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = unary_op(SILU, u[s + k], 0.0) * v[s + k];
        }
    });
}

/// Bindings: params, u, v, dy (read), du, dv (read_write): du = (dy ⊙ v) ⊙ silu'(u), dv = dy ⊙ silu(u).
pub fn silu_gate_bwd(args: &mut CpuArgs) {
    let n = args.params::<GateParams>().n as usize;
    let (u, v, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    silu_gate_grads_into(&u[..n], &v[..n], &dy[..n], &mut args.f32_out(0)[..n], &mut args.f32_out(1)[..n]);
}

/// (du, dv) of silu(u) ⊙ v given dy, over equal lengths (also the epilogue of
/// `matmul_pair_silu_gate_bwd`'s twin).
pub(crate) fn silu_gate_grads_into(u: &[f32], v: &[f32], dy: &[f32], du: &mut [f32], dv: &mut [f32]) {
    grads_of(|i| u[i], |i| v[i], dy, du, dv);
}

/// Bindings: params, u, v (f16 pairs, read), dy (read), du, dv (read_write): `silu_gate_bwd` on the
/// widened (exact) f16 values.
pub fn silu_gate_bwd_half(args: &mut CpuArgs) {
    let n = args.params::<GateParams>().n as usize;
    let (u, v, dy) = (args.u32_in(0), args.u32_in(1), args.f32_in(2));
    let (du, dv) = (&mut args.f32_out(0)[..n], &mut args.f32_out(1)[..n]);
    grads_of(|i| f16::get(u, i), |i| f16::get(v, i), &dy[..n], du, dv);
}

/// du = (dy ⊙ v) ⊙ silu'(u), dv = dy ⊙ silu(u), element i of u and v read through `u(i)`, `v(i)`.
fn grads_of(
    u: impl Fn(usize) -> f32 + Sync,
    v: impl Fn(usize) -> f32 + Sync,
    dy: &[f32],
    du: &mut [f32],
    dv: &mut [f32],
) {
    du.par_chunks_mut(CHUNK).zip(dv.par_chunks_mut(CHUNK)).enumerate().for_each(|(c, (a, b))| {
        let s = c * CHUNK;
        for (k, (da, db)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
            let (x, g) = (u(s + k), dy[s + k]);
            *da = (g * v(s + k)) * unary_deriv(SILU, x, 0.0);
            *db = g * unary_op(SILU, x, 0.0);
        }
    });
}
