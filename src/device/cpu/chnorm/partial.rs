//! The partial passes of the chnorm twin (`chnorm_stats`'s first phase, `chnorm_bwd_partial`): per plane, the
//! K chunk sums of a dispatch, read in rows of lanes (see the parent module).

use rayon::prelude::*;

use super::{planes_per_task, Geo, Walk};
use crate::device::cpu::CpuArgs;
use crate::kernels::chnorm::ChnormParams;

// The partial passes. A plane is read in rows of LW lanes (lane l takes elements l, l + LW, ...; K divides
// LW, so lane l belongs to chunk l % K) and the lanes are folded into the K chunk sums. K = 1 and 2 (planes
// of up to 64 elements) use 8 lanes (statistics) or 16 (gradient sums) with the fold written out; K >= 4
// uses 32 lanes folded by halving. The lane loops zip a row (a slice) with the lane array: LLVM
// vectorizes that form, while it unrolls loops of a fixed count over arrays and leaves them scalar. The
// lane counts are the fastest measured for each loop (LLVM's choices differ between them).

/// Adds the rows of LW elements of `xs` into the lanes, then the remainder into the first lanes.
#[inline(always)]
fn add_rows<const LW: usize>(acc: &mut [f32; LW], xs: &[f32]) {
    let mut it = xs.chunks_exact(LW);
    for row in &mut it {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(it.remainder()) {
        *a += v;
    }
}

/// Adds (x - ml[lane])² over the rows of `xs` into the lanes, as `add_rows`.
#[inline(always)]
fn add_sqdev_rows<const LW: usize>(acc: &mut [f32; LW], xs: &[f32], ml: &[f32; LW]) {
    let mut it = xs.chunks_exact(LW);
    for row in &mut it {
        for ((a, &v), &m) in acc.iter_mut().zip(row).zip(ml) {
            let d = v - m;
            *a += d * d;
        }
    }
    for ((a, &v), &m) in acc.iter_mut().zip(it.remainder()).zip(ml) {
        let d = v - m;
        *a += d * d;
    }
}

/// Adds dy and dy · (x - m) · rs over the rows of `xs`, `dys` into two lane sets, as `add_rows`.
#[inline(always)]
fn add_grad_rows<const LW: usize>(a1: &mut [f32; LW], a2: &mut [f32; LW], xs: &[f32], dys: &[f32], m: f32, rs: f32) {
    let (mut xi, mut di) = (xs.chunks_exact(LW), dys.chunks_exact(LW));
    for (xr, dr) in (&mut xi).zip(&mut di) {
        for (((s1, s2), &v), &d) in a1.iter_mut().zip(a2.iter_mut()).zip(xr).zip(dr) {
            *s1 += d;
            *s2 += d * ((v - m) * rs);
        }
    }
    for (((s1, s2), &v), &d) in a1.iter_mut().zip(a2.iter_mut()).zip(xi.remainder()).zip(di.remainder()) {
        *s1 += d;
        *s2 += d * ((v - m) * rs);
    }
}

/// The chunk sums of 8 lanes for K = 1, 2: a tree over lanes 0..8, or over the even and the odd lanes.
#[inline(always)]
fn fold8<const K: usize>(a: &[f32; 8]) -> [f32; K] {
    let (e, o) = ((a[0] + a[4]) + (a[2] + a[6]), (a[1] + a[5]) + (a[3] + a[7]));
    let mut out = [0f32; K];
    if K == 1 {
        out[0] = e + o;
    } else {
        out[0] = e;
        out[K - 1] = o;
    }
    out
}

/// The chunk sums of 16 lanes for K = 1, 2: lanes l and l + 8 first, then as `fold8`.
#[inline(always)]
fn fold16<const K: usize>(a: &[f32; 16]) -> [f32; K] {
    let mut h = [0f32; 8];
    for (i, v) in h.iter_mut().enumerate() {
        *v = a[i] + a[i + 8];
    }
    fold8::<K>(&h)
}

/// Folds 32 lanes into the K chunk sums (K = 4 .. 32) by halving; the sums are left in acc[..K].
#[inline(always)]
fn fold32<const K: usize>(acc: &mut [f32; 32]) {
    let mut w = 32;
    while w > K {
        w /= 2;
        let (lo, hi) = acc.split_at_mut(w);
        for (a, &b) in lo.iter_mut().zip(&hi[..w]) {
            *a += b;
        }
    }
}

/// Chunk means and M2s of one plane into its 2K partials, for K = 1 or 2 (up to 64 elements).
#[inline(always)]
fn plane_stats_narrow<const K: usize>(xs: &[f32], lens: &[f32], pp: &mut [f32]) {
    let (pm, pq) = pp.split_at_mut(K);
    if K == 1 && xs.len() < 8 {
        // A few elements (one with [N, C] input): no lanes.
        let m = xs.iter().sum::<f32>() / lens[0];
        pm[0] = m;
        pq[0] = xs.iter().map(|&v| (v - m) * (v - m)).sum();
        return;
    }
    let mut acc = [0f32; 8];
    add_rows(&mut acc, xs);
    let s = fold8::<K>(&acc);
    let mut ml = [0f32; 8];
    for (l, m) in ml.iter_mut().enumerate() {
        *m = s[l % K] / lens[l % K];
    }
    let mut acc = [0f32; 8];
    add_sqdev_rows(&mut acc, xs, &ml);
    pm.copy_from_slice(&ml[..K]);
    pq.copy_from_slice(&fold8::<K>(&acc));
}

/// Chunk means and M2s of one plane into its 2K partials, for K = 4 .. 32.
#[inline(always)]
fn plane_stats_wide<const K: usize>(xs: &[f32], lens: &[f32], pp: &mut [f32]) {
    let (pm, pq) = pp.split_at_mut(K);
    let mut acc = [0f32; 32];
    add_rows(&mut acc, xs);
    fold32::<K>(&mut acc);
    // The chunk means (chunk sum / chunk length, as the shader), then repeated across the lanes.
    let mut ml = [0f32; 32];
    for ((m, &s), &len) in ml[..K].iter_mut().zip(&acc[..K]).zip(lens) {
        *m = s / len;
    }
    let mut w = K;
    while w < 32 {
        let (lo, hi) = ml.split_at_mut(w);
        hi[..w].copy_from_slice(lo);
        w *= 2;
    }
    let mut acc = [0f32; 32];
    add_sqdev_rows(&mut acc, xs, &ml);
    fold32::<K>(&mut acc);
    pm.copy_from_slice(&ml[..K]);
    pq.copy_from_slice(&acc[..K]);
}

/// Chunk Σ dy and Σ dy · x̂ of one plane for K = 1 or 2.
#[inline(always)]
fn plane_grad_narrow<const K: usize>(xs: &[f32], dys: &[f32], m: f32, rs: f32, o1: &mut [f32], o2: &mut [f32]) {
    if K == 1 && xs.len() < 8 {
        let (mut s1, mut s2) = (0f32, 0f32);
        for (&v, &d) in xs.iter().zip(dys) {
            s1 += d;
            s2 += d * ((v - m) * rs);
        }
        (o1[0], o2[0]) = (s1, s2);
        return;
    }
    let (mut a1, mut a2) = ([0f32; 16], [0f32; 16]);
    add_grad_rows(&mut a1, &mut a2, xs, dys, m, rs);
    o1.copy_from_slice(&fold16::<K>(&a1));
    o2.copy_from_slice(&fold16::<K>(&a2));
}

/// Chunk Σ dy and Σ dy · x̂ of one plane for K = 4 .. 32.
#[inline(always)]
fn plane_grad_wide<const K: usize>(xs: &[f32], dys: &[f32], m: f32, rs: f32, o1: &mut [f32], o2: &mut [f32]) {
    let (mut a1, mut a2) = ([0f32; 32], [0f32; 32]);
    add_grad_rows(&mut a1, &mut a2, xs, dys, m, rs);
    fold32::<K>(&mut a1);
    fold32::<K>(&mut a2);
    o1.copy_from_slice(&a1[..K]);
    o2.copy_from_slice(&a2[..K]);
}

/// Any other chunk count (`plane_chunks` gives none): each chunk's elements in order, as the shader.
fn plane_stats_any(xs: &[f32], k: usize, lens: &[f32], pm: &mut [f32], pq: &mut [f32]) {
    for c in 0..k {
        let m = xs[c..].iter().step_by(k).sum::<f32>() / lens[c];
        pm[c] = m;
        pq[c] = xs[c..].iter().step_by(k).map(|&v| (v - m) * (v - m)).sum();
    }
}

fn plane_grad_any(xs: &[f32], dys: &[f32], k: usize, m: f32, rs: f32, o1: &mut [f32], o2: &mut [f32]) {
    for c in 0..k {
        let (mut s1, mut s2) = (0f32, 0f32);
        for e in (c..xs.len()).step_by(k) {
            s1 += dys[e];
            s2 += dys[e] * ((xs[e] - m) * rs);
        }
        (o1[c], o2[c]) = (s1, s2);
    }
}

/// `plane(x, its 2K partials)` over the planes pl0.., whose partials are pc. Plain loops (not iterator
/// adapters, which LLVM may leave out of line) keep the lane loops inside the AVX2 entry points.
#[inline(always)]
fn stats_planes(g: &Geo, x: &[f32], pl0: usize, pc: &mut [f32], plane: impl Fn(&[f32], &mut [f32])) {
    let hw = g.hw;
    for (j, pp) in pc.chunks_exact_mut(2 * g.k).enumerate() {
        plane(&x[(pl0 + j) * hw..(pl0 + j + 1) * hw], pp);
    }
}

/// One task of `chnorm_stats_partial`: the planes pl0.., whose partials are pc.
#[inline(always)]
fn stats_task(g: &Geo, x: &[f32], lens: &[f32], pl0: usize, pc: &mut [f32]) {
    let k = g.k;
    match k {
        // One element per plane ([N, C] input): its mean is itself and its M2 zero.
        1 if g.hw == 1 => {
            for (pp, &v) in pc.chunks_exact_mut(2).zip(&x[pl0..]) {
                (pp[0], pp[1]) = (v, 0.0);
            }
        }
        1 => stats_planes(g, x, pl0, pc, |xs, pp| plane_stats_narrow::<1>(xs, lens, pp)),
        2 => stats_planes(g, x, pl0, pc, |xs, pp| plane_stats_narrow::<2>(xs, lens, pp)),
        4 => stats_planes(g, x, pl0, pc, |xs, pp| plane_stats_wide::<4>(xs, lens, pp)),
        8 => stats_planes(g, x, pl0, pc, |xs, pp| plane_stats_wide::<8>(xs, lens, pp)),
        16 => stats_planes(g, x, pl0, pc, |xs, pp| plane_stats_wide::<16>(xs, lens, pp)),
        32 => stats_planes(g, x, pl0, pc, |xs, pp| plane_stats_wide::<32>(xs, lens, pp)),
        _ => stats_planes(g, x, pl0, pc, |xs, pp| {
            let (pm, pq) = pp.split_at_mut(k);
            plane_stats_any(xs, k, lens, pm, pq)
        }),
    }
}

/// `stats_task` compiled for AVX2 and FMA. `simd` gets that by LLVM inlining its closure into an AVX2
/// wrapper, which LLVM declines for a body this large (six specialisations of the lane loops), so the
/// partial passes have target-feature entries of their own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn stats_task_avx2(g: &Geo, x: &[f32], lens: &[f32], pl0: usize, pc: &mut [f32]) {
    stats_task(g, x, lens, pl0, pc)
}

/// Whether the CPU has AVX2 and FMA (std caches the detection).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The shader's first phase of `chnorm_stats` alone. Bindings: params, x (read), partial (read_write,
/// [P, 2, K]: chunk means, then chunk M2s).
pub fn chnorm_stats_partial(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let x = args.f32_in(0);
    stats_partial(&p, x, args.f32_out(0));
}

/// The chunk means and M2s of x into `part` [P, 2, K].
pub(super) fn stats_partial(p: &ChnormParams, x: &[f32], part: &mut [f32]) {
    let g = Geo::of(p);
    let per = planes_per_task(g.hw);
    let lens: Vec<f32> = (0..g.k).map(|j| g.chunk_len(j) as f32).collect();
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let avx2 = has_avx2();
    part[..g.planes() * 2 * g.k].par_chunks_mut(per * 2 * g.k).enumerate().for_each(|(ti, pc)| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the features were detected on this CPU.
            return unsafe { stats_task_avx2(&g, x, &lens, ti * per, pc) };
        }
        stats_task(&g, x, &lens, ti * per, pc)
    });
}

pub(super) type GradIns<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32]);

/// `plane(x, dy, mean, rstd, Σ dy out, Σ dy · x̂ out)` over the planes pl0.., whose partials are pc.
#[inline(always)]
fn grad_planes(
    g: &Geo,
    (x, dy, mean, rstd): GradIns,
    pl0: usize,
    pc: &mut [f32],
    plane: impl Fn(&[f32], &[f32], f32, f32, &mut [f32], &mut [f32]),
) {
    let (hw, k) = (g.hw, g.k);
    let mut at = Walk::at(*g, pl0);
    for (j, pp) in pc.chunks_exact_mut(2 * k).enumerate() {
        let r = (pl0 + j) * hw..(pl0 + j + 1) * hw;
        let t = at.stat();
        let (o1, o2) = pp.split_at_mut(k);
        plane(&x[r.clone()], &dy[r], mean[t], rstd[t], o1, o2);
        at.advance();
    }
}

/// One task of `chnorm_bwd_partial`: the planes pl0.., whose partials are pc.
#[inline(always)]
fn grad_task(g: &Geo, ins: GradIns, pl0: usize, pc: &mut [f32]) {
    match g.k {
        // One element per plane ([N, C] input): its sums are its terms.
        1 if g.hw == 1 => {
            let (x, dy, mean, rstd) = ins;
            let mut at = Walk::at(*g, pl0);
            for (pp, (&v, &d)) in pc.chunks_exact_mut(2).zip(x[pl0..].iter().zip(&dy[pl0..])) {
                let t = at.stat();
                (pp[0], pp[1]) = (d, d * ((v - mean[t]) * rstd[t]));
                at.advance();
            }
        }
        1 => grad_planes(g, ins, pl0, pc, plane_grad_narrow::<1>),
        2 => grad_planes(g, ins, pl0, pc, plane_grad_narrow::<2>),
        4 => grad_planes(g, ins, pl0, pc, plane_grad_wide::<4>),
        8 => grad_planes(g, ins, pl0, pc, plane_grad_wide::<8>),
        16 => grad_planes(g, ins, pl0, pc, plane_grad_wide::<16>),
        32 => grad_planes(g, ins, pl0, pc, plane_grad_wide::<32>),
        _ => grad_planes(g, ins, pl0, pc, |xs, dys, m, rs, o1, o2| plane_grad_any(xs, dys, o1.len(), m, rs, o1, o2)),
    }
}

/// `grad_task` compiled for AVX2 and FMA, as `stats_task_avx2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn grad_task_avx2(g: &Geo, ins: GradIns, pl0: usize, pc: &mut [f32]) {
    grad_task(g, ins, pl0, pc)
}

/// Bindings: params, x (read), mean (read), rstd (read), dy (read), partial (read_write, [P, 2, K]:
/// chunk Σ dy, then chunk Σ dy · x̂).
pub fn chnorm_bwd_partial(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let ins = (args.f32_in(0), args.f32_in(3), args.f32_in(1), args.f32_in(2));
    bwd_partial(&p, ins, args.f32_out(0));
}

/// The chunk Σ dy and Σ dy · x̂ of (x, dy, mean, rstd) into `part` [P, 2, K].
pub(super) fn bwd_partial(p: &ChnormParams, ins: GradIns, part: &mut [f32]) {
    let g = Geo::of(p);
    let per = planes_per_task(g.hw);
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let avx2 = has_avx2();
    part[..g.planes() * 2 * g.k].par_chunks_mut(per * 2 * g.k).enumerate().for_each(|(ti, pc)| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the features were detected on this CPU.
            return unsafe { grad_task_avx2(&g, ins, ti * per, pc) };
        }
        grad_task(&g, ins, ti * per, pc)
    });
}
