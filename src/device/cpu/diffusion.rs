//! CPU twin of shaders/diffusion.wgsl, function by function: the same exact turn reductions, fixed-point and
//! polynomial cosines, random streams, and the schedule's cumulative product in the shader's order. Where
//! the shader works on 64-bit values as (lo, hi) word pairs this file uses u64 and u128.

use rayon::prelude::*;

use super::CpuArgs;
use super::{par_chunks, CHUNK};
use crate::host::philox::{add64, bits_at, cos_sin, mul32x32, step_offset, NormalStream};
use crate::kernels::diffusion::{
    DdimParams, DdpmParams, EmbedParams, QSampleParams, SchedParams, VParams, SCHED_LINEAR, V_TO_EPS, WG,
};

/// Exact u32 -> f32 with one rounding to nearest (the shader's `f32_of_u32`).
pub fn f32_of_u32(x: u32) -> f32 {
    (x >> 8) as f32 * 256.0 + (x & 255) as f32
}

// ---------------------------------------------------------------------------------------------------------
// schedule

/// 2pi * 2^-32 in f32 (`TAU_2POW32`).
#[allow(clippy::excessive_precision)]
const TAU_2POW32: f32 = 1.462918119976564e-9;

/// sin(x) for 0 <= x <= pi/4 (`poly_sin`).
#[allow(clippy::excessive_precision)]
fn poly_sin(x: f32) -> f32 {
    let x2 = x * x;
    x * (1.0 + x2 * (-0.16666667 + x2 * (0.008333334 + x2 * (-1.984127e-4 + x2 * 2.7557319e-6))))
}

/// cos(x) for 0 <= x <= pi/4 (`poly_cos`).
#[allow(clippy::excessive_precision)]
fn poly_cos(x: f32) -> f32 {
    let x2 = x * x;
    1.0 + x2 * (-0.5 + x2 * (0.041666668 + x2 * (-0.0013888889 + x2 * (2.4801588e-5 + x2 * -2.755732e-7))))
}

/// sin(2pi u) for a Q0.64 turn u in [0, 1/2] (`sin_turn`; the shader's (lo, hi) words are one u64 here).
pub fn sin_turn(turn: u64) -> f32 {
    let mut u = turn;
    if u >= 1 << 62 {
        u = (1u64 << 63) - u;
    }
    let mut use_cos = false;
    if u >= 1 << 61 {
        u = (1u64 << 62) - u;
        use_cos = true;
    }
    let x = (f32_of_u32((u >> 32) as u32) + f32_of_u32(u as u32) * (1.0 / 4_294_967_296.0)) * TAU_2POW32;
    if use_cos {
        poly_cos(x)
    } else {
        poly_sin(x)
    }
}

/// k D as a Q0.64 turn (`cosine_turn`).
fn cosine_turn(p: &SchedParams, k: u32) -> u64 {
    (k as u64).wrapping_mul(p.turn_step[0] as u64 | (p.turn_step[1] as u64) << 32)
}

/// beta_i (`schedule_beta`): for the cosine schedule sin(D) sin((2m - 1) D) / sin^2(m D) with m = T - i.
pub fn schedule_beta(p: &SchedParams, i: u32) -> f32 {
    if p.kind == SCHED_LINEAR {
        return p.beta_start + i as f32 * p.delta;
    }
    let m = p.timesteps - i;
    let sm = sin_turn(cosine_turn(p, m));
    let beta = sin_turn(cosine_turn(p, 1)) * sin_turn(cosine_turn(p, 2 * m - 1)) / (sm * sm);
    beta.min(p.max_beta)
}

/// Bindings: params, betas_out, alphas_out, alpha_bar_out (read_write). Thread l of the shader's one
/// workgroup is chunk l here: local products in order, exclusive prefixes of the chunk products in order,
/// then each chunk scaled by its prefix.
pub fn schedule(args: &mut CpuArgs) {
    let p: SchedParams = args.params();
    let betas = args.f32_out(0);
    let alphas = args.f32_out(1);
    let alpha_bar = args.f32_out(2);
    let t = p.timesteps as usize;
    let per = t.div_ceil(WG);
    let mut chunk_prod = [1.0f32; WG];
    for (lid, cp) in chunk_prod.iter_mut().enumerate() {
        let (start, end) = ((lid * per).min(t), (lid * per + per).min(t));
        let mut prod = 1.0f32;
        for i in start..end {
            let beta = schedule_beta(&p, i as u32);
            let alpha = 1.0 - beta;
            betas[i] = beta;
            alphas[i] = alpha;
            prod *= alpha;
            alpha_bar[i] = prod;
        }
        *cp = prod;
    }
    let mut acc = 1.0f32;
    for cp in chunk_prod.iter_mut() {
        let v = *cp;
        *cp = acc;
        acc *= v;
    }
    for (lid, pre) in chunk_prod.iter().enumerate() {
        let (start, end) = ((lid * per).min(t), (lid * per + per).min(t));
        for ab in &mut alpha_bar[start..end] {
            *ab *= pre; // the shader's pre * alpha_bar[i] (the same rounded product)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// q_sample

/// Bindings: params, x0, q_alpha_bar, q_step (read), xt_out, eps_out, t_out (read_write). Rows in parallel,
/// a few hundred rows per task when rows are short; each row's timestep is drawn once.
pub fn q_sample(args: &mut CpuArgs) {
    let p: QSampleParams = args.params();
    let (x0, alpha_bar, step) = (args.f32_in(0), args.f32_in(1), args.u32_in(2)[0]);
    let xt = args.f32_out(0);
    let eps = args.f32_out(1);
    let t_out = args.u32_out(2);
    let (n, d) = (p.n as usize, p.row_len as usize);
    let base = step_offset(step, p.stride);
    let noise = add64(base, p.eps_offset);
    let rows = (CHUNK / d).max(1);
    xt[..n]
        .par_chunks_mut(rows * d)
        .zip(eps[..n].par_chunks_mut(rows * d))
        .zip(t_out[..n / d].par_chunks_mut(rows))
        .enumerate()
        .for_each(|(c, ((xs, es), ts))| {
            let mut z = NormalStream::new(p.seed, noise);
            for (k, t_slot) in ts.iter_mut().enumerate() {
                let r = c * rows + k;
                let t = bits_at(p.seed, base, r as u32) % p.timesteps;
                *t_slot = t;
                let ab = alpha_bar[t as usize];
                let (sa, sb) = (ab.sqrt(), (1.0 - ab).sqrt());
                for j in 0..d {
                    let i = r * d + j;
                    let e = z.at(i as u32);
                    xs[k * d + j] = sa * x0[i] + sb * e;
                    es[k * d + j] = e;
                }
            }
        });
}

// ---------------------------------------------------------------------------------------------------------
// timestep_embedding

/// 1 / 2pi in Q0.64, rounded (the shader's INV_2PI).
pub const INV_2PI: u64 = 0x28BE_60DB_9391_054A;

/// High 64 bits of the 128-bit product (`mul64hi`; the shader builds it from 32-bit pieces).
pub fn mul64hi(a: u64, b: u64) -> u64 {
    ((a as u128 * b as u128) >> 64) as u64
}

/// g_k = f_k / 2pi in Q0.64 (`freq_turns`).
pub fn freq_turns(ratio: u64, k: u32) -> u64 {
    let mut acc = INV_2PI;
    let mut base = ratio;
    let mut e = k;
    while e != 0 {
        if e & 1 == 1 {
            acc = mul64hi(acc, base);
        }
        e >>= 1;
        base = mul64hi(base, base);
    }
    acc
}

/// (t * g) mod 1 as a Q0.32 turn, rounded (`embed_turn`).
pub fn embed_turn(t: u32, g: u64) -> u32 {
    let l = mul32x32(t, g as u32);
    let h = mul32x32(t, (g >> 32) as u32);
    h.0.wrapping_add(l.1).wrapping_add(l.0 >> 31)
}

/// A Q1.31 magnitude and its sign as f32 (`signed_q31`).
pub fn signed_q31(m: u32, neg: u32) -> f32 {
    let v = f32_of_u32(m) * (1.0 / 2_147_483_648.0);
    if neg == 1 {
        -v
    } else {
        v
    }
}

/// Bindings: params, t_in (read, u32), emb_out (read_write). The frequencies depend on k only, so they
/// are computed once per dispatch (the shader recomputes them per element).
pub fn timestep_embedding(args: &mut CpuArgs) {
    let p: EmbedParams = args.params();
    let t_in = args.u32_in(0);
    let out = args.f32_out(0);
    let (dim, half) = (p.dim as usize, p.half);
    let ratio = p.ratio[0] as u64 | (p.ratio[1] as u64) << 32;
    let g: Vec<u64> = (0..half).map(|k| freq_turns(ratio, k)).collect();
    let rows = (CHUNK / dim).max(1);
    out[..p.n as usize].par_chunks_mut(rows * dim).enumerate().for_each(|(c, ch)| {
        for (k, row) in ch.chunks_mut(dim).enumerate() {
            let t = t_in[c * rows + k];
            let (cos, sin) = row.split_at_mut(half as usize);
            for (kk, (oc, os)) in cos.iter_mut().zip(sin).enumerate() {
                let cs = cos_sin(embed_turn(t, g[kk]));
                *oc = signed_q31(cs[0], cs[2]);
                *os = signed_q31(cs[1], cs[3]);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// ddpm_step, ddim_step

/// Bindings: params, d_xt, d_eps, d_betas, d_alphas, d_alpha_bar (read), d_out (read_write).
pub fn ddpm_step(args: &mut CpuArgs) {
    let p: DdpmParams = args.params();
    let (xt, eps) = (args.f32_in(0), args.f32_in(1));
    let t = p.t as usize;
    let (beta, alpha, ab) = (args.f32_in(2)[t], args.f32_in(3)[t], args.f32_in(4)[t]);
    let ab_prev = if t > 0 { args.f32_in(4)[t - 1] } else { 1.0 };
    let out = args.f32_out(0);
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        let mut z = NormalStream::new(p.seed, p.offset);
        for (k, o) in ch.iter_mut().enumerate() {
            let i = s + k;
            let mean = if p.clip > 0.0 {
                let x0_hat = ((xt[i] - (1.0 - ab).sqrt() * eps[i]) / ab.sqrt()).clamp(-p.clip, p.clip);
                ab_prev.sqrt() * beta / (1.0 - ab) * x0_hat + alpha.sqrt() * (1.0 - ab_prev) / (1.0 - ab) * xt[i]
            } else {
                (1.0 / alpha.sqrt()) * (xt[i] - beta / (1.0 - ab).sqrt() * eps[i])
            };
            let mut noise = 0.0;
            if p.t > 0 {
                noise = beta.sqrt() * z.at(i as u32);
            }
            *o = mean + noise;
        }
    });
}

/// Bindings: params, i_xt, i_eps, i_alpha_bar (read), i_out (read_write).
pub fn ddim_step(args: &mut CpuArgs) {
    let p: DdimParams = args.params();
    let (xt, eps, alpha_bar) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let out = args.f32_out(0);
    let ab = alpha_bar[p.t as usize];
    let mut ab_prev = 1.0f32;
    if p.has_prev == 1 {
        ab_prev = alpha_bar[p.t_prev as usize];
    }
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            let i = s + k;
            let mut e = eps[i];
            let mut x0_hat = (xt[i] - (1.0 - ab).sqrt() * e) / ab.sqrt();
            if p.clip > 0.0 {
                x0_hat = x0_hat.clamp(-p.clip, p.clip);
                if p.has_prev == 0 {
                    *o = x0_hat;
                    continue;
                }
                e = (xt[i] - ab.sqrt() * x0_hat) / (1.0 - ab).sqrt();
            }
            *o = ab_prev.sqrt() * x0_hat + (1.0 - ab_prev).sqrt() * e;
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// v-prediction

/// Bindings: params, v_a, v_b, v_t (u32), v_alpha_bar (read), v_out (read_write).
pub fn v_convert(args: &mut CpuArgs) {
    let p: VParams = args.params();
    let (a, b, t, alpha_bar) = (args.f32_in(0), args.f32_in(1), args.u32_in(2), args.f32_in(3));
    let out = args.f32_out(0);
    let d = p.row_len as usize;
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            let i = s + k;
            let ab = alpha_bar[t[i / d].min(p.timesteps - 1) as usize];
            let sb = (1.0 - ab).sqrt();
            *o = ab.sqrt() * a[i] + if p.mode == V_TO_EPS { sb } else { -sb } * b[i];
        }
    });
}
