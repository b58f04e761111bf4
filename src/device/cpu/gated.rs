//! CPU twin of shaders/gated.wgsl: silu(u) ⊙ v and its backward, run as the elementwise twins that the
//! unfused form dispatches (SiLU, its derivative, the products), so the fused and unfused forms give the
//! same numbers on the CPU.

use super::elementwise::{binary_same, unary, unary_backward};
use super::CpuArgs;
use crate::kernels::elementwise::{BinaryParams, UnaryParams};
use crate::kernels::gated::GateParams;

/// SiLU's and the product's op codes in the elementwise family.
const SILU: u32 = 13;
const MUL: u32 = 2;

fn unary_params(n: u32) -> UnaryParams {
    UnaryParams { n, op: SILU, alpha: 0.0, _pad: 0 }
}

/// out = a ⊙ b through the elementwise twin.
fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    let p = BinaryParams { n: out.len() as u32, op: MUL, contiguous: 1, ..Default::default() };
    let ins = vec![bytemuck::cast_slice(a), bytemuck::cast_slice(b)];
    binary_same(&mut CpuArgs { params: bytemuck::bytes_of(&p), ins, outs: vec![bytemuck::cast_slice_mut(out)] });
}

/// silu(u) through the elementwise twin.
fn silu(u: &[f32]) -> Vec<f32> {
    let mut s = vec![0f32; u.len()];
    let p = unary_params(u.len() as u32);
    let ins = vec![bytemuck::cast_slice(u)];
    unary(&mut CpuArgs { params: bytemuck::bytes_of(&p), ins, outs: vec![bytemuck::cast_slice_mut(&mut s)] });
    s
}

/// Bindings: params, u, v (read), y (read_write).
pub fn silu_gate_fwd(args: &mut CpuArgs) {
    let n = args.params::<GateParams>().n as usize;
    let (u, v) = (&args.f32_in(0)[..n], &args.f32_in(1)[..n]);
    let s = silu(u);
    mul(&s, v, &mut args.f32_out(0)[..n]);
}

/// Bindings: params, u, v, dy (read), du, dv (read_write).
pub fn silu_gate_bwd(args: &mut CpuArgs) {
    let n = args.params::<GateParams>().n as usize;
    let (u, v, dy) = (&args.f32_in(0)[..n], &args.f32_in(1)[..n], &args.f32_in(2)[..n]);
    // ds = dy ⊙ v, du = ds ⊙ silu'(u), dv = dy ⊙ silu(u): the unfused backward's kernels.
    let mut ds = vec![0f32; n];
    mul(dy, v, &mut ds);
    let du = &mut args.f32_out(0)[..n];
    let p = unary_params(n as u32);
    let ins = vec![bytemuck::cast_slice(u), bytemuck::cast_slice(&ds[..])];
    unary_backward(&mut CpuArgs { params: bytemuck::bytes_of(&p), ins, outs: vec![bytemuck::cast_slice_mut(du)] });
    mul(dy, &silu(u), &mut args.f32_out(1)[..n]);
}
