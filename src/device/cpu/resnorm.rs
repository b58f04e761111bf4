//! CPU twin of shaders/resnorm.wgsl, through the layer-norm twins of device/cpu/norm.rs (the sum s = x + a
//! first, then the same row and column passes), so the fused and unfused forms give the same numbers on
//! the CPU. The shader sums dγ and dβ over all rows of a column in one workgroup; the twin keeps the
//! norm twin's chunked order: the two agree to rounding.

use super::norm;
use super::{par_chunks, CpuArgs};
use crate::host::f16;
use crate::kernels::norm::NormParams;
use crate::kernels::resnorm::ResNormParams;

/// Runs a norm twin with `params`.
fn run(twin: fn(&mut CpuArgs), p: &NormParams, ins: Vec<&[u32]>, outs: Vec<&mut [u32]>) {
    twin(&mut CpuArgs { params: bytemuck::bytes_of(p), ins, outs });
}

fn words(v: &[f32]) -> &[u32] {
    bytemuck::cast_slice(v)
}

fn words_mut(v: &mut [f32]) -> &mut [u32] {
    bytemuck::cast_slice_mut(v)
}

/// (mean, rstd) interleaved as [rows, 2] → two vectors.
fn split_stats(stats: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
    (stats[..2 * n].iter().step_by(2).copied().collect(), stats[1..2 * n].iter().step_by(2).copied().collect())
}

/// Bindings: params, x, a, gamma, beta (read), s, y, stats (read_write).
pub fn add_layer_norm_fwd(args: &mut CpuArgs) {
    let p: ResNormParams = args.params();
    let (n, c) = (p.rows as usize, p.c as usize);
    let (x, a) = (args.f32_in(0), args.f32_in(1));
    let s = &mut args.f32_out(0)[..n * c];
    par_chunks(s, |st, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = x[st + k] + a[st + k];
        }
    });
    let (mut mean, mut rstd) = (vec![0f32; n], vec![0f32; n]);
    let np = NormParams { rows: p.rows, c: p.c, eps: p.eps, chunk: 1 };
    let y = args.f32_out(1);
    run(
        norm::layer_norm_fwd,
        &np,
        vec![words(s), args.ins[2], args.ins[3]],
        vec![words_mut(y), words_mut(&mut mean), words_mut(&mut rstd)],
    );
    let stats = &mut args.f32_out(2)[..2 * n];
    for (r, st) in stats.chunks_exact_mut(2).enumerate() {
        st[0] = mean[r];
        st[1] = rstd[r];
    }
}

/// Bindings: params, x, gamma, stats, dy, r (read), dx, dgamma, dbeta (read_write).
pub fn layer_norm_bwd_fused(args: &mut CpuArgs) {
    let x = args.ins[0];
    bwd_fused(args, x);
}

/// Bindings as `layer_norm_bwd_fused`'s, x stored as f16 pairs: `layer_norm_bwd_fused` on the widened
/// (exact) values.
pub fn layer_norm_bwd_fused_half(args: &mut CpuArgs) {
    let p: ResNormParams = args.params();
    let x = f16::unpack(args.u32_in(0), p.rows as usize * p.c as usize);
    bwd_fused(args, words(&x));
}

/// The fused layer-norm backward of the sum `x` (f32 words).
fn bwd_fused(args: &mut CpuArgs, x: &[u32]) {
    let p: ResNormParams = args.params();
    let (n, c) = (p.rows as usize, p.c as usize);
    let (mean, rstd) = split_stats(args.f32_in(2), n);
    let (gamma, dy) = (args.ins[1], args.ins[3]);
    let dx = args.f32_out(0);
    let chunk = n.isqrt().max(8);
    let np = NormParams { rows: p.rows, c: p.c, eps: 0.0, chunk: chunk as u32 };
    if n > 0 {
        run(norm::layer_norm_bwd_dx, &np, vec![x, gamma, words(&mean), words(&rstd), dy], vec![words_mut(dx)]);
    }
    if p.accumulate == 1 {
        let r = args.f32_in(4);
        par_chunks(&mut dx[..n * c], |st, ch| {
            for (k, o) in ch.iter_mut().enumerate() {
                *o += r[st + k];
            }
        });
    }
    let mut partial = vec![0f32; n.div_ceil(chunk) * 2 * c];
    if n > 0 {
        run(norm::layer_norm_bwd_partial, &np, vec![x, words(&mean), words(&rstd), dy], vec![words_mut(&mut partial)]);
    }
    let (dg, db) = (args.f32_out(1), args.f32_out(2));
    run(norm::layer_norm_bwd_params, &np, vec![words(&partial)], vec![words_mut(dg), words_mut(db)]);
}
