//! CPU twin of shaders/softmax.wgsl. The row max and the sum of exponentials are formed with 8-lane
//! running values and a vectorized exp (device::cpu::fastmath), not in the shader's tree order: the
//! results agree to float rounding, which the tests bound, at several times the speed.

use rayon::prelude::*;

use super::fastmath;
use super::reduce::rows_per_task;
use super::CpuArgs;
use crate::kernels::softmax::SoftmaxParams;

/// Row max and Σ exp(x − max) of one row. Shared with the loss twins.
pub(super) fn row_stats(x: &[f32]) -> (f32, f32) {
    let m = fastmath::max(x);
    (m, fastmath::sum_exp(x, m))
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
            *o = fastmath::exp(v - m) / sum;
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
        super::simd(|| {
            for (j, o) in ch.chunks_mut(len).enumerate() {
                let base = c * per + j * len;
                softmax_row(p.log == 1, &x[base..base + len], o);
            }
        })
    });
}
