//! CPU twin of shaders/loss.wgsl. Row max and sum of exponentials come from the softmax twin's
//! vectorized `row_stats`.

use rayon::prelude::*;

use super::elementwise::sigmoid;
use super::par_chunks;
use super::reduce::rows_per_task;
use super::CpuArgs;
use crate::kernels::loss::{BceParams, CrossEntropyParams};

/// The target of a row, clamped into the row as the shader's `target_of`.
fn target_of(t: u32, len: u32) -> usize {
    t.min(len - 1) as usize
}

/// One workgroup of `cross_entropy_fwd`: (loss, lse) of one row.
fn ce_row(x: &[f32], target: usize) -> (f32, f32) {
    let (m, sum) = super::softmax::row_stats(x);
    let ls = sum.ln();
    (ls + (m - x[target]), m + ls)
}

/// Bindings: params, logits (read), targets (read, u32), loss (read_write), lse (read_write).
pub fn cross_entropy_fwd(args: &mut CpuArgs) {
    let p: CrossEntropyParams = args.params();
    let (x, t) = (args.f32_in(0), args.u32_in(1));
    let loss = args.f32_out(0);
    let lse = args.f32_out(1);
    let (rows, len) = (p.rows as usize, p.len as usize);
    if rows == 0 || len == 0 {
        return;
    }
    let per = rows_per_task(len);
    loss[..rows].par_chunks_mut(per).zip(lse[..rows].par_chunks_mut(per)).enumerate().for_each(|(c, (lc, sc))| {
        super::simd(|| {
            for (j, (l, s)) in lc.iter_mut().zip(sc.iter_mut()).enumerate() {
                let row = c * per + j;
                let base = row * len;
                (*l, *s) = ce_row(&x[base..base + len], target_of(t[row], p.len));
            }
        })
    });
}

/// Bindings: params, logits (read), targets (read, u32), lse (read), g (read), dlogits (read_write).
pub fn cross_entropy_bwd(args: &mut CpuArgs) {
    let p: CrossEntropyParams = args.params();
    let (x, t, lse, g) = (args.f32_in(0), args.u32_in(1), args.f32_in(2), args.f32_in(3));
    let dx = args.f32_out(0);
    let len = p.len as usize;
    let rows = p.rows as usize;
    if rows == 0 || len == 0 {
        return;
    }
    let per = rows_per_task(len) * len;
    dx[..rows * len].par_chunks_mut(per).enumerate().for_each(|(c, ch)| {
        super::simd(|| {
            for (j, o) in ch.chunks_mut(len).enumerate() {
                let row = c * per / len + j;
                let gr = if p.g_one == 1 { g[0] * p.g_scale } else { g[row] };
                let (xr, l) = (&x[row * len..][..len], lse[row]);
                for (ov, &xv) in o.iter_mut().zip(xr) {
                    *ov = super::fastmath::exp(xv - l) * gr;
                }
                o[target_of(t[row], p.len)] -= gr;
            }
        })
    });
}

/// Bindings: params, x (read), t (read), loss (read_write).
pub fn bce_logits_fwd(args: &mut CpuArgs) {
    let p: BceParams = args.params();
    let (x, t) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            let v = x[s + k];
            *o = v.max(0.0) - v * t[s + k] + (1.0 + (-v.abs()).exp()).ln();
        }
    });
}

/// Bindings: params, x (read), t (read), dy (read: 1 element, or n with `dy_full`), dx (read_write).
pub fn bce_logits_bwd(args: &mut CpuArgs) {
    let p: BceParams = args.params();
    let (x, t, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let dx = args.f32_out(0);
    par_chunks(&mut dx[..p.n as usize], |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            let i = s + k;
            let d = dy[if p.dy_full == 1 { i } else { 0 }];
            *o = (sigmoid(x[i]) - t[i]) * d;
        }
    });
}
