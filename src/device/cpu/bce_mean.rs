//! CPU twin of shaders/bce_mean.wgsl: the mean BCE of logits plus a broadcast bias, and its backward.

use super::elementwise::sigmoid;
use super::CpuArgs;
use crate::kernels::loss::BceMeanParams;

/// x[i] plus the bias of its column, when there is one.
fn logit(p: &BceMeanParams, x: &[f32], b: &[f32], i: usize) -> f32 {
    if p.bias == 1 {
        x[i] + b[i % p.cols as usize]
    } else {
        x[i]
    }
}

/// Bindings: params, x (read), t (read), b (read), loss (read_write).
pub fn bce_mean_fwd(args: &mut CpuArgs) {
    let p: BceMeanParams = args.params();
    let (x, t, b) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let out = args.f32_out(0);
    let n = (p.rows * p.cols) as usize;
    let s: f32 = (0..n)
        .map(|i| {
            let z = logit(&p, x, b, i);
            z.max(0.0) - z * t[i] + (1.0 + (-z.abs()).exp()).ln()
        })
        .sum();
    out[0] = s / n as f32;
}

/// Bindings: params, x (read), t (read), b (read), dy (read, one element), dx (read_write), db
/// (read_write).
pub fn bce_mean_bwd(args: &mut CpuArgs) {
    let p: BceMeanParams = args.params();
    let (x, t, b, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let dx = args.f32_out(0);
    let db = args.f32_out(1);
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    let g = dy[0] * p.scale;
    for (col, dbc) in db[..cols].iter_mut().enumerate() {
        let mut s = 0.0;
        for r in 0..rows {
            let i = r * cols + col;
            let d = (sigmoid(logit(&p, x, b, i)) - t[i]) * g;
            dx[i] = d;
            s += d;
        }
        *dbc = s;
    }
}
