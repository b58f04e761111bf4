//! CPU twin of shaders/gated.wgsl: silu(u) ⊙ v and its backward, through the elementwise twin's
//! `unary_op` and `unary_deriv` (op 13, SiLU), so the fused and unfused forms give the same numbers.

use super::elementwise::{unary_deriv, unary_op};
use super::{par_chunks, CpuArgs};
use crate::kernels::gated::GateParams;

/// SiLU's op code in the elementwise family.
const SILU: u32 = 13;

/// Bindings: params, u, v (read), y (read_write).
pub fn silu_gate_fwd(args: &mut CpuArgs) {
    let p: GateParams = args.params();
    let (u, v) = (args.f32_in(0), args.f32_in(1));
    let y = &mut args.f32_out(0)[..p.n as usize];
    par_chunks(y, |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = unary_op(SILU, u[s + k], 0.0) * v[s + k];
        }
    });
}

/// Bindings: params, u, v, dy (read), du, dv (read_write).
pub fn silu_gate_bwd(args: &mut CpuArgs) {
    let p: GateParams = args.params();
    let n = p.n as usize;
    let (u, v, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let du = &mut args.f32_out(0)[..n];
    par_chunks(du, |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = (dy[s + k] * v[s + k]) * unary_deriv(SILU, u[s + k], 0.0);
        }
    });
    let dv = &mut args.f32_out(1)[..n];
    par_chunks(dv, |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = dy[s + k] * unary_op(SILU, u[s + k], 0.0);
        }
    });
}
