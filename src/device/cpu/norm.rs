//! CPU twin of shaders/norm.wgsl. Row statistics are summed in 32 lane partials (so the loops vectorize)
//! rather than in the shader's workgroup tree: the two engines agree to rounding, not bit for bit. The
//! column passes keep the shader's order exactly (rows in order within a chunk, then chunks in order).

use rayon::prelude::*;

use super::reduce::rows_per_task;
use super::CpuArgs;
use super::CHUNK;
use crate::kernels::norm::NormParams;

/// Lane partials of the row sums. The lane loops run over slices (not fixed-size arrays, which LLVM
/// unrolls and then leaves scalar at opt-level 2), so they vectorize in dev and release builds alike.
const LANES: usize = 32;

/// Σ of the lane partials as a pairwise tree.
fn lane_total(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        let (lo, hi) = acc.split_at_mut(w);
        lo.iter_mut().zip(&hi[..w]).for_each(|(a, &b)| *a += b);
        w /= 2;
    }
    acc[0]
}

/// Σ f(x_k) over a row: element k goes to lane k % 32 (the remainder too), then the lanes are added as a
/// tree, so no chain of roundings is longer than C/32 + 6.
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for ch in &mut it {
        acc.iter_mut().zip(ch).for_each(|(a, &v)| *a += f(v));
    }
    acc.iter_mut().zip(it.remainder()).for_each(|(a, &v)| *a += f(v));
    lane_total(acc)
}

/// (Σ g, Σ g x̂) with g = dy · gamma and x̂ = (x - mean) · rstd, lane by lane as `lane_sum`.
fn sums_g(x: &[f32], dy: &[f32], gamma: &[f32], mean: f32, rstd: f32) -> (f32, f32) {
    let (mut ag, mut agx) = ([0f32; LANES], [0f32; LANES]);
    let step = |ag: &mut [f32; LANES], agx: &mut [f32; LANES], xc: &[f32], dc: &[f32], gc: &[f32]| {
        for ((((a, b), &v), &d), &w) in ag.iter_mut().zip(agx.iter_mut()).zip(xc).zip(dc).zip(gc) {
            let g = d * w;
            *a += g;
            *b += g * ((v - mean) * rstd);
        }
    };
    let (mut xi, mut di, mut gi) = (x.chunks_exact(LANES), dy.chunks_exact(LANES), gamma.chunks_exact(LANES));
    for ((xc, dc), gc) in (&mut xi).zip(&mut di).zip(&mut gi) {
        step(&mut ag, &mut agx, xc, dc, gc);
    }
    step(&mut ag, &mut agx, xi.remainder(), di.remainder(), gi.remainder());
    (lane_total(ag), lane_total(agx))
}

/// One workgroup of `layer_norm_fwd`: writes the row of y, returns (mean, rstd).
fn fwd_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) -> (f32, f32) {
    let c = x.len() as f32;
    let mean = lane_sum(x, |v| v) / c;
    let rstd = 1.0 / (lane_sum(x, |v| (v - mean) * (v - mean)) / c + eps).sqrt();
    for (((o, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = (v - mean) * rstd * g + b;
    }
    (mean, rstd)
}

/// Bindings: params, x (read), gamma (read), beta (read), y (read_write), mean (read_write),
/// rstd (read_write).
pub fn layer_norm_fwd(args: &mut CpuArgs) {
    let p: NormParams = args.params();
    let (x, gamma, beta) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let y = args.f32_out(0);
    let mean = args.f32_out(1);
    let rstd = args.f32_out(2);
    let (rows, c) = (p.rows as usize, p.c as usize);
    if rows == 0 || c == 0 {
        return;
    }
    let (gamma, beta) = (&gamma[..c], &beta[..c]);
    let per = rows_per_task(c);
    y[..rows * c]
        .par_chunks_mut(per * c)
        .zip(mean[..rows].par_chunks_mut(per))
        .zip(rstd[..rows].par_chunks_mut(per))
        .enumerate()
        .for_each(|(t, ((yc, mc), sc))| {
            for (j, ((yr, m), s)) in yc.chunks_mut(c).zip(mc.iter_mut()).zip(sc.iter_mut()).enumerate() {
                let base = (t * per + j) * c;
                (*m, *s) = fwd_row(&x[base..base + c], gamma, beta, p.eps, yr);
            }
        });
}

/// Bindings: params, x (read), gamma (read), beta (read), y (read_write), stats (read_write): as
/// `layer_norm_fwd`, with stats[2r] = mean and stats[2r + 1] = rstd.
pub fn layer_norm_fwd_stats(args: &mut CpuArgs) {
    let p: NormParams = args.params();
    let (x, gamma, beta) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let y = args.f32_out(0);
    let stats = args.f32_out(1);
    let (rows, c) = (p.rows as usize, p.c as usize);
    if rows == 0 || c == 0 {
        return;
    }
    let (gamma, beta) = (&gamma[..c], &beta[..c]);
    let per = rows_per_task(c);
    y[..rows * c].par_chunks_mut(per * c).zip(stats[..2 * rows].par_chunks_mut(2 * per)).enumerate().for_each(
        |(t, (yc, sc))| {
            for (j, (yr, st)) in yc.chunks_mut(c).zip(sc.chunks_mut(2)).enumerate() {
                let base = (t * per + j) * c;
                (st[0], st[1]) = fwd_row(&x[base..base + c], gamma, beta, p.eps, yr);
            }
        },
    );
}

/// Bindings: params, x (read), gamma (read), mean (read), rstd (read), dy (read), dx (read_write).
pub fn layer_norm_bwd_dx(args: &mut CpuArgs) {
    let p: NormParams = args.params();
    let (x, gamma, mean, rstd, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3), args.f32_in(4));
    let dx = args.f32_out(0);
    let (rows, c) = (p.rows as usize, p.c as usize);
    if rows == 0 || c == 0 {
        return;
    }
    let gamma = &gamma[..c];
    let per = rows_per_task(c);
    let cf = c as f32;
    dx[..rows * c].par_chunks_mut(per * c).enumerate().for_each(|(t, dc)| {
        for (j, dxr) in dc.chunks_mut(c).enumerate() {
            let row = t * per + j;
            let base = row * c;
            let (xr, dyr) = (&x[base..base + c], &dy[base..base + c]);
            let (m, rs) = (mean[row], rstd[row]);
            let (sg, sgx) = sums_g(xr, dyr, gamma, m, rs);
            let (mg, mgx) = (sg / cf, sgx / cf);
            for (((o, &v), &d), &w) in dxr.iter_mut().zip(xr).zip(dyr).zip(gamma) {
                let g = d * w;
                let xh = (v - m) * rs;
                *o = rs * (g - mg - xh * mgx);
            }
        }
    });
}

/// Bindings: params, x (read), mean (read), rstd (read), dy (read), partial (read_write, [chunks, 2, C]).
pub fn layer_norm_bwd_partial(args: &mut CpuArgs) {
    let p: NormParams = args.params();
    let (x, mean, rstd, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let partial = args.f32_out(0);
    let (rows, c, chunk) = (p.rows as usize, p.c as usize, p.chunk as usize);
    if rows == 0 || c == 0 {
        return;
    }
    let chunks = rows.div_ceil(chunk);
    // Several chunks per rayon task on narrow rows, so each task reads about CHUNK elements.
    let per = (CHUNK / (chunk * c)).max(1);
    partial[..2 * chunks * c].par_chunks_mut(per * 2 * c).enumerate().for_each(|(t, pc)| {
        for (j, part) in pc.chunks_mut(2 * c).enumerate() {
            let k = t * per + j;
            let (dg, db) = part.split_at_mut(c);
            dg.fill(0.0);
            db.fill(0.0);
            for r in k * chunk..rows.min((k + 1) * chunk) {
                let (xr, dyr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
                let (m, rs) = (mean[r], rstd[r]);
                for (((g, b), &v), &d) in dg.iter_mut().zip(db.iter_mut()).zip(xr).zip(dyr) {
                    *g += d * ((v - m) * rs);
                    *b += d;
                }
            }
        }
    });
}

/// Bindings: params, partial (read), dgamma (read_write), dbeta (read_write).
pub fn layer_norm_bwd_params(args: &mut CpuArgs) {
    let p: NormParams = args.params();
    let partial = args.f32_in(0);
    let dgamma = args.f32_out(0);
    let dbeta = args.f32_out(1);
    let (rows, c, chunk) = (p.rows as usize, p.c as usize, p.chunk as usize);
    let (dgamma, dbeta) = (&mut dgamma[..c], &mut dbeta[..c]);
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    // Chunk by chunk, each column in chunk order as the shader's per-column loop.
    for part in partial[..2 * rows.div_ceil(chunk) * c].chunks_exact(2 * c) {
        let (pg, pb) = part.split_at(c);
        dgamma.iter_mut().zip(pg).for_each(|(o, &v)| *o += v);
        dbeta.iter_mut().zip(pb).for_each(|(o, &v)| *o += v);
    }
}
