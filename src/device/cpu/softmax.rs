//! CPU twin of shaders/softmax.wgsl, mirrored thread by thread: the row max and the sum of exponentials
//! are reduced from 256 strided partials through the same tree as the shader.

use rayon::prelude::*;

use super::reduce::rows_per_task;
use crate::kernels::CpuArgs;
use crate::ops::softmax::SoftmaxParams;

const WG: usize = 256;

/// Row max and Σ exp(x − max) of one row, reduced in the shader's order: 256 strided per-thread partials,
/// then a tree (so the CPU twin sums in the same order as the workgroup). Shared with the loss twins.
pub(super) fn row_stats(x: &[f32]) -> (f32, f32) {
    let len = x.len();
    let mut red = [0f32; WG];

    // Pass 1: row max.
    for (lid, r) in red.iter_mut().enumerate() {
        let mut m = x[0];
        for k in (lid..len).step_by(WG) {
            m = m.max(x[k]);
        }
        *r = m;
    }
    let mut s = WG / 2;
    while s > 0 {
        for lid in 0..s {
            red[lid] = red[lid].max(red[lid + s]);
        }
        s >>= 1;
    }
    let m = red[0];

    // Pass 2: sum of exp(x - max).
    for (lid, r) in red.iter_mut().enumerate() {
        let mut acc = 0f32;
        for k in (lid..len).step_by(WG) {
            acc += (x[k] - m).exp();
        }
        *r = acc;
    }
    let mut s = WG / 2;
    while s > 0 {
        for lid in 0..s {
            red[lid] += red[lid + s];
        }
        s >>= 1;
    }
    (m, red[0])
}

/// One workgroup of `softmax_rows`.
fn softmax_row(log: bool, x: &[f32], out: &mut [f32]) {
    let (m, sum) = row_stats(x);

    // Pass 3.
    if log {
        let ls = sum.ln();
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - m) - ls;
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - m).exp() / sum;
        }
    }
}

/// Bindings: params, x (read), out (read_write).
pub fn softmax_rows(args: &mut CpuArgs) {
    let p: SoftmaxParams = args.params();
    let x = args.f32_in(0);
    let out = args.f32_out(0);
    let (rows, len) = (p.rows as usize, p.len as usize);
    if rows == 0 || len == 0 {
        return;
    }
    let per = rows_per_task(len) * len;
    out[..rows * len].par_chunks_mut(per).enumerate().for_each(|(c, ch)| {
        for (j, o) in ch.chunks_mut(len).enumerate() {
            let base = c * per + j * len;
            softmax_row(p.log == 1, &x[base..base + len], o);
        }
    });
}
