//! CPU twin of shaders/qknorm.wgsl: per-head layer norm of q and k in a packed q|k|v projection, rotary
//! positions in the same pass, and the backward. Same formulas in the same order per head as the shader;
//! the parameter sums mirror the shader's strided per-thread partials and workgroup tree.

use rayon::prelude::*;

use super::CpuArgs;
use crate::host::f16;
use crate::kernels::qknorm::{QkNormParams, WG};

/// The shape facts every entry point needs.
struct Dims {
    rows: usize,
    t: usize,
    heads: usize,
    d: usize,
    rope: bool,
}

fn dims(p: &QkNormParams) -> Dims {
    Dims { rows: p.rows as usize, t: p.t as usize, heads: p.heads as usize, d: p.hd as usize, rope: p.rope == 1 }
}

/// (cos, sin) of pair j at position pos.
fn angle(table: &[f32], d: usize, pos: usize, j: usize) -> (f32, f32) {
    let i = (pos * (d / 2) + j) * 2;
    (table[i], table[i + 1])
}

/// dn_j of one head from its dy (`dn_of` in the shader).
fn dn_of(dy: &[f32], table: &[f32], dm: &Dims, pos: usize, j: usize) -> f32 {
    if !dm.rope {
        return dy[j];
    }
    let half = dm.d / 2;
    let p = j % half;
    let (cs, sn) = angle(table, dm.d, pos, p);
    let (ya, yb) = (dy[p], dy[p + half]);
    if j < half {
        ya * cs + yb * sn
    } else {
        yb * cs - ya * sn
    }
}

/// Bindings: params, x, gq, bq, gk, bk, table (read), y, stats (read_write).
pub fn qk_norm_fwd(args: &mut CpuArgs) {
    let qp: QkNormParams = args.params();
    let dm = dims(&qp);
    let (x, gq, bq, gk, bk, table) =
        (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3), args.f32_in(4), args.f32_in(5));
    let w = 3 * dm.heads * dm.d;
    let y = &mut args.f32_out(0)[..dm.rows * w];
    let stats = &mut args.f32_out(1)[..dm.rows * 4 * dm.heads];
    y.par_chunks_mut(w).zip(stats.par_chunks_mut(4 * dm.heads)).enumerate().for_each(|(r, (yr, sr))| {
        let xr = &x[r * w..(r + 1) * w];
        let pos = r % dm.t;
        for s in 0..3 * dm.heads {
            let (xh, yh) = (&xr[s * dm.d..(s + 1) * dm.d], &mut yr[s * dm.d..(s + 1) * dm.d]);
            if s >= 2 * dm.heads {
                yh.copy_from_slice(xh);
                continue;
            }
            let mut sum = 0f32;
            for &v in xh {
                sum += v;
            }
            let mean = sum / dm.d as f32;
            let mut sq = 0f32;
            for &v in xh {
                let e = v - mean;
                sq += e * e;
            }
            let rstd = 1.0 / (sq / dm.d as f32 + qp.eps).sqrt();
            sr[2 * s] = mean;
            sr[2 * s + 1] = rstd;
            let (g, b) = if s < dm.heads { (gq, bq) } else { (gk, bk) };
            let n = |j: usize| (xh[j] - mean) * rstd * g[j] + b[j];
            if !dm.rope {
                for (j, o) in yh.iter_mut().enumerate() {
                    *o = n(j);
                }
                continue;
            }
            let half = dm.d / 2;
            for j in 0..half {
                let (na, nb) = (n(j), n(j + half));
                let (cs, sn) = angle(table, dm.d, pos, j);
                yh[j] = na * cs - nb * sn;
                yh[j + half] = nb * cs + na * sn;
            }
        }
    });
}

/// Bindings: params, x, stats, table, dy, gq, gk (read), dx (read_write).
pub fn qk_norm_bwd_dx(args: &mut CpuArgs) {
    let x = args.f32_in(0);
    bwd_dx(args, x, 0);
}

/// Bindings as `qk_norm_bwd_dx`'s, x stored as f16 pairs: `qk_norm_bwd_dx` on the widened (exact) values.
pub fn qk_norm_bwd_dx_half(args: &mut CpuArgs) {
    let x = widened_x(args);
    bwd_dx(args, &x, 0);
}

/// Bindings as `qk_norm_bwd_params`', x stored as f16 pairs: `qk_norm_bwd_params` on the widened values.
pub fn qk_norm_bwd_params_half(args: &mut CpuArgs) {
    let x = widened_x(args);
    bwd_params(args, &x, 0);
}

/// Bindings as `qk_norm_bwd_fused`'s, x stored as f16 pairs: `qk_norm_bwd_fused` on the widened values.
pub fn qk_norm_bwd_fused_half(args: &mut CpuArgs) {
    let x = widened_x(args);
    bwd_dx(args, &x, 0);
    bwd_params(args, &x, 1);
}

/// Input 0 (x [rows, 3 · heads · D]) stored as f16 pairs, widened (exactly) to f32.
fn widened_x(args: &CpuArgs) -> Vec<f32> {
    let dm = dims(&args.params());
    f16::unpack(args.u32_in(0), dm.rows * 3 * dm.heads * dm.d)
}

/// dx from x and the inputs stats, table, dy, γ_q, γ_k into output `out` (qk_norm_bwd_dx's work).
fn bwd_dx(args: &mut CpuArgs, x: &[f32], out: usize) {
    let qp: QkNormParams = args.params();
    let dm = dims(&qp);
    let (stats, table, dy, gq, gk) = (args.f32_in(1), args.f32_in(2), args.f32_in(3), args.f32_in(4), args.f32_in(5));
    let w = 3 * dm.heads * dm.d;
    let dx = &mut args.f32_out(out)[..dm.rows * w];
    dx.par_chunks_mut(w).enumerate().for_each(|(r, dxr)| {
        let pos = r % dm.t;
        for s in 0..3 * dm.heads {
            let at = r * w + s * dm.d;
            let (xh, dyh) = (&x[at..at + dm.d], &dy[at..at + dm.d]);
            let out = &mut dxr[s * dm.d..(s + 1) * dm.d];
            if s >= 2 * dm.heads {
                out.copy_from_slice(dyh);
                continue;
            }
            let st = (r * 2 * dm.heads + s) * 2;
            let (mean, rstd) = (stats[st], stats[st + 1]);
            let gamma = if s < dm.heads { gq } else { gk };
            let (mut sg, mut sgx) = (0f32, 0f32);
            for j in 0..dm.d {
                let g = dn_of(dyh, table, &dm, pos, j) * gamma[j];
                sg += g;
                sgx += g * ((xh[j] - mean) * rstd);
            }
            let (mg, mgx) = (sg / dm.d as f32, sgx / dm.d as f32);
            for (j, o) in out.iter_mut().enumerate() {
                let g = dn_of(dyh, table, &dm, pos, j) * gamma[j];
                let xhat = (xh[j] - mean) * rstd;
                *o = rstd * (g - mg - xhat * mgx);
            }
        }
    });
}

/// The shader's workgroup tree over 256 partials; returns the sum.
fn tree_sum(red: &mut [f32; WG]) -> f32 {
    let mut s = WG / 2;
    while s > 0 {
        for lid in 0..s {
            red[lid] += red[lid + s];
        }
        s >>= 1;
    }
    red[0]
}

/// Bindings: params, x, stats, table, dy (read), dgq, dbq, dgk, dbk (read_write).
pub fn qk_norm_bwd_params(args: &mut CpuArgs) {
    let x = args.f32_in(0);
    bwd_params(args, x, 0);
}

/// Bindings as `qk_norm_bwd_dx`, then dgq, dbq, dgk, dbk (read_write): both kernels' work.
pub fn qk_norm_bwd_fused(args: &mut CpuArgs) {
    let x = args.f32_in(0);
    bwd_dx(args, x, 0);
    bwd_params(args, x, 1);
}

/// dγ_q, dβ_q, dγ_k, dβ_k into outputs `first`.. (qk_norm_bwd_params' work), from x and the inputs
/// stats, table, dy (the first four of every backward kernel). Head row i (row r, head h, i = r · heads + h)
/// goes to lane i mod 256, as the shader's threads stride over them; each lane keeps every column's
/// partials (for q and k), then each column's lanes are added as the shader's tree.
fn bwd_params(args: &mut CpuArgs, x: &[f32], first: usize) {
    let qp: QkNormParams = args.params();
    let dm = dims(&qp);
    let (stats, table, dy) = (args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let (w, d, n) = (3 * dm.heads * dm.d, dm.d, dm.rows * dm.heads);
    // lanes[l] = [dγ_q | dβ_q | dγ_k | dβ_k] partials, D each.
    let lanes: Vec<Vec<f32>> = (0..WG)
        .into_par_iter()
        .map(|lane| {
            let mut acc = vec![0f32; 4 * d];
            for i in (lane..n).step_by(WG) {
                let (r, h) = (i / dm.heads, i % dm.heads);
                for which in 0..2 {
                    let s = which * dm.heads + h;
                    let at = r * w + s * d;
                    let st = (r * 2 * dm.heads + s) * 2;
                    let (mean, rstd) = (stats[st], stats[st + 1]);
                    let (dyh, xh) = (&dy[at..at + d], &x[at..at + d]);
                    let part = &mut acc[2 * which * d..2 * (which + 1) * d];
                    for j in 0..d {
                        let dn = dn_of(dyh, table, &dm, r % dm.t, j);
                        part[j] += dn * ((xh[j] - mean) * rstd);
                        part[d + j] += dn;
                    }
                }
            }
            acc
        })
        .collect();
    for (k, o) in (0..4).map(|k| (k, args.f32_out(first + k))).collect::<Vec<_>>() {
        for (j, v) in o[..d].iter_mut().enumerate() {
            let mut red = [0f32; WG];
            for (l, r) in red.iter_mut().enumerate() {
                *r = lanes[l][k * d + j];
            }
            *v = tree_sum(&mut red);
        }
    }
}
