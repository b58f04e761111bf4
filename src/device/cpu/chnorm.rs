//! CPU twin of shaders/chnorm.wgsl. The partial passes run plane by plane with the chunk count K as a
//! constant (`plane_chunks` gives powers of two up to 32; any other count takes a plain loop per chunk):
//! a plane is read in rows of lanes, lane l belonging to chunk l % K, and the lanes are folded into the K
//! chunks. Within a chunk that order differs from the shader's sequential loop, so the engines agree to
//! rounding; the final passes keep the shader's order exactly (per sample: the group's planes, each
//! plane's chunks; then the samples in order), with the samples as the outer loop so the partials are
//! read in memory order.

use rayon::prelude::*;

use super::CpuArgs;
use super::{simd, CHUNK};
use crate::kernels::chnorm::{ChnormParams, RunningParams};

/// The shader's view of one dispatch.
#[derive(Clone, Copy)]
struct Geo {
    n: usize,
    c: usize,
    hw: usize,
    k: usize,
    cg: usize,
    per_sample: bool,
}

impl Geo {
    fn of(p: &ChnormParams) -> Geo {
        Geo {
            n: p.n as usize,
            c: p.c as usize,
            hw: p.hw as usize,
            k: p.chunks as usize,
            cg: p.cg as usize,
            per_sample: p.per_sample == 1,
        }
    }
    fn planes(&self) -> usize {
        self.n * self.c
    }
    fn stat_groups(&self) -> usize {
        if self.per_sample {
            self.n * (self.c / self.cg)
        } else {
            self.c / self.cg
        }
    }
    /// Elements of chunk `j` of a plane.
    fn chunk_len(&self, j: usize) -> usize {
        (self.hw - j).div_ceil(self.k)
    }
    /// (first sample, first channel) of stat group t; it spans one sample (group norm) or all of them.
    fn group(&self, t: usize) -> (usize, usize) {
        let gpc = self.c / self.cg;
        (if self.per_sample { t / gpc } else { 0 }, (t % gpc) * self.cg)
    }
    /// Elements per stat group.
    fn count(&self) -> usize {
        (if self.per_sample { 1 } else { self.n }) * self.cg * self.hw
    }
}

/// (sample, channel, stat group) of consecutive planes, advanced without divisions (a plane of a few
/// elements would otherwise spend more on index arithmetic than on its data).
struct Walk {
    g: Geo,
    n: usize,
    c: usize,
    /// c / cg and c % cg.
    grp: usize,
    in_grp: usize,
}

impl Walk {
    fn at(g: Geo, plane: usize) -> Walk {
        let c = plane % g.c;
        Walk { g, n: plane / g.c, c, grp: c / g.cg, in_grp: c % g.cg }
    }
    fn stat(&self) -> usize {
        if self.g.per_sample {
            self.n * (self.g.c / self.g.cg) + self.grp
        } else {
            self.grp
        }
    }
    fn advance(&mut self) {
        self.c += 1;
        self.in_grp += 1;
        if self.in_grp == self.g.cg {
            (self.in_grp, self.grp) = (0, self.grp + 1);
        }
        if self.c == self.g.c {
            (self.n, self.c, self.grp, self.in_grp) = (self.n + 1, 0, 0, 0);
        }
    }
}

/// Planes per rayon task: about CHUNK elements each.
fn planes_per_task(hw: usize) -> usize {
    (CHUNK / hw.max(1)).max(1)
}

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

/// Bindings: params, x (read), partial (read_write, [P, 2, K]: chunk means, then chunk M2s).
pub fn chnorm_stats_partial(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let x = args.f32_in(0);
    let part = args.f32_out(0);
    let g = Geo::of(&p);
    let per = planes_per_task(g.hw);
    let lens: Vec<f32> = (0..g.k).map(|j| g.chunk_len(j) as f32).collect();
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

type GradIns<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32]);

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
    let part = args.f32_out(0);
    let g = Geo::of(&p);
    let per = planes_per_task(g.hw);
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

/// Per stat group t0.., the shader's sums over partials: for each of the group's samples in order, the
/// group's planes in channel order feed `term(t, c, that plane's 2K partials, acc)` into a fresh
/// per-sample `acc`, which is then added to the group's total. Samples are the outer loop here (a batch
/// norm group spans all samples), so the partials are read in memory order.
fn group_sums<const W: usize>(
    g: &Geo,
    part: &[f32],
    t0: usize,
    tot: &mut [[f32; W]],
    term: impl Fn(usize, usize, &[f32], &mut [f32; W]),
) {
    let k2 = 2 * g.k;
    tot.fill([0.0; W]);
    if !g.per_sample && g.cg == 1 {
        // Batch norm: the task's channels are one run of partials per sample.
        for r in 0..g.n {
            let row = &part[(r * g.c + t0) * k2..(r * g.c + t0 + tot.len()) * k2];
            for (i, (tv, pp)) in tot.iter_mut().zip(row.chunks_exact(k2)).enumerate() {
                let mut acc = [0f32; W];
                term(t0 + i, t0 + i, pp, &mut acc);
                for (t, a) in tv.iter_mut().zip(acc) {
                    *t += a;
                }
            }
        }
        return;
    }
    // Each group's first sample and channel, once per task rather than per sample.
    let firsts: Vec<(usize, usize)> = (t0..t0 + tot.len()).map(|t| g.group(t)).collect();
    for r in 0..if g.per_sample { 1 } else { g.n } {
        for (i, (tv, &(n0, c0))) in tot.iter_mut().zip(&firsts).enumerate() {
            let base = ((n0 + r) * g.c + c0) * k2;
            let mut acc = [0f32; W];
            for j in 0..g.cg {
                let b = base + j * k2;
                term(t0 + i, c0 + j, &part[b..b + k2], &mut acc);
            }
            for (t, a) in tv.iter_mut().zip(acc) {
                *t += a;
            }
        }
    }
}

/// `group_sums` over all T stat groups of `g`, in parallel blocks of groups.
fn all_group_sums<const W: usize>(
    g: &Geo,
    part: &[f32],
    t_all: usize,
    term: impl Fn(usize, usize, &[f32], &mut [f32; W]) + Sync,
) -> Vec<[f32; W]> {
    let mut tot = vec![[0f32; W]; t_all];
    // Partials a group reads: its samples' cg planes of 2K each.
    let per_group = (if g.per_sample { 1 } else { g.n }) * g.cg * 2 * g.k;
    // At least 64 groups per task: a batch norm task reads, per sample, its groups' partials as one
    // contiguous run, so short runs would make it a strided walk through the partials.
    let per = (CHUNK / per_group).max(64);
    tot.par_chunks_mut(per).enumerate().for_each(|(ti, tc)| group_sums(g, part, ti * per, tc, &term));
    tot
}

/// Bindings: params, partial (read), mean (read_write), rstd (read_write).
pub fn chnorm_stats_final(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let part = args.f32_in(0);
    let mean = args.f32_out(0);
    let rstd = args.f32_out(1);
    let g = Geo::of(&p);
    let (t_all, k) = (g.stat_groups(), g.k);
    let count = g.count() as f32;
    let lens: Vec<f32> = (0..k).map(|j| g.chunk_len(j) as f32).collect();
    let tot = all_group_sums::<1>(&g, part, t_all, |_, _, pp, acc| {
        for (&m, &len) in pp[..k].iter().zip(&lens) {
            acc[0] += len * m;
        }
    });
    mean[..t_all].iter_mut().zip(&tot).for_each(|(m, s)| *m = s[0] / count);
    let mean = &mean[..t_all];
    let m2 = all_group_sums::<1>(&g, part, t_all, |t, _, pp, acc| {
        for ((&pm, &pq), &len) in pp[..k].iter().zip(&pp[k..]).zip(&lens) {
            let d = pm - mean[t];
            acc[0] += pq + len * (d * d);
        }
    });
    rstd[..t_all].iter_mut().zip(&m2).for_each(|(r, s)| *r = 1.0 / (s[0] / count + p.eps).sqrt());
}

/// Σ over the K chunks of one plane's two partial fields, in chunk order.
fn plane_total(pp: &[f32], k: usize) -> (f32, f32) {
    let (mut a1, mut a2) = (0f32, 0f32);
    for (&v1, &v2) in pp[..k].iter().zip(&pp[k..2 * k]) {
        a1 += v1;
        a2 += v2;
    }
    (a1, a2)
}

/// Bindings: params, partial (read), dgamma (read_write), dbeta (read_write).
pub fn chnorm_bwd_params(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let part = args.f32_in(0);
    let dgamma = args.f32_out(0);
    let dbeta = args.f32_out(1);
    // Per channel over all samples: the channels as stat groups of one channel across the batch.
    let g = Geo { cg: 1, per_sample: false, ..Geo::of(&p) };
    let tot = all_group_sums::<2>(&g, part, g.c, |_, _, pp, acc| {
        let (a1, a2) = plane_total(pp, g.k);
        acc[0] += a1;
        acc[1] += a2;
    });
    for ((dg, db), s) in dgamma[..g.c].iter_mut().zip(dbeta[..g.c].iter_mut()).zip(&tot) {
        (*db, *dg) = (s[0], s[1]);
    }
}

/// Bindings: params, partial (read), gamma (read), ab (read_write, [T, 2]: mean(g), mean(g · x̂)).
pub fn chnorm_bwd_coeffs(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let (part, gamma) = (args.f32_in(0), args.f32_in(1));
    let ab = args.f32_out(0);
    let g = Geo::of(&p);
    let count = g.count() as f32;
    let tot = all_group_sums::<2>(&g, part, g.stat_groups(), |_, c, pp, acc| {
        let (a1, a2) = plane_total(pp, g.k);
        acc[0] += gamma[c] * a1;
        acc[1] += gamma[c] * a2;
    });
    for (o, s) in ab.chunks_exact_mut(2).zip(&tot) {
        (o[0], o[1]) = (s[0] / count, s[1] / count);
    }
}

/// Batch norm of [N, C] (one element per plane): rows of C channels, vectorized across channels.
fn rows_of_channels(g: &Geo) -> bool {
    g.hw == 1 && g.cg == 1 && !g.per_sample
}

/// Bindings: params, x (read), gamma (read), beta (read), mean (read), rstd or variance (read),
/// y (read_write).
pub fn chnorm_apply(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let (x, gamma, beta, mean, rstd) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3), args.f32_in(4));
    let y = args.f32_out(0);
    let g = Geo::of(&p);
    let rs_of = |t: usize| if p.var_in == 1 { 1.0 / (rstd[t] + p.eps).sqrt() } else { rstd[t] };
    if rows_of_channels(&g) {
        let c = g.c;
        let rs: Vec<f32> = (0..c).map(rs_of).collect();
        let per = planes_per_task(c);
        y[..g.n * c].par_chunks_mut(per * c).enumerate().for_each(|(ti, yc)| {
            simd(|| {
                for (j, yr) in yc.chunks_exact_mut(c).enumerate() {
                    let xr = &x[(ti * per + j) * c..(ti * per + j + 1) * c];
                    for (((((o, &v), &m), &s), &w), &b) in
                        yr.iter_mut().zip(xr).zip(&mean[..c]).zip(&rs).zip(&gamma[..c]).zip(&beta[..c])
                    {
                        *o = (v - m) * s * w + b;
                    }
                }
            })
        });
        return;
    }
    let hw = g.hw;
    let per = planes_per_task(hw);
    y[..g.planes() * hw].par_chunks_mut(per * hw).enumerate().for_each(|(ti, yc)| {
        simd(|| {
            let mut at = Walk::at(g, ti * per);
            for (j, yr) in yc.chunks_exact_mut(hw).enumerate() {
                let pl = ti * per + j;
                let (c, t) = (at.c, at.stat());
                let (m, rs, w, b) = (mean[t], rs_of(t), gamma[c], beta[c]);
                for (o, &v) in yr.iter_mut().zip(&x[pl * hw..(pl + 1) * hw]) {
                    *o = (v - m) * rs * w + b;
                }
                at.advance();
            }
        })
    });
}

/// Bindings: params, x (read), gamma (read), mean (read), rstd (read), dy (read), ab (read), dx (read_write).
pub fn chnorm_bwd_dx(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let (x, gamma, mean, rstd, dy, ab) =
        (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3), args.f32_in(4), args.f32_in(5));
    let dx = args.f32_out(0);
    let g = Geo::of(&p);
    if rows_of_channels(&g) {
        let c = g.c;
        let (a, b): (Vec<f32>, Vec<f32>) = ab[..2 * c].chunks_exact(2).map(|v| (v[0], v[1])).unzip();
        let per = planes_per_task(c);
        dx[..g.n * c].par_chunks_mut(per * c).enumerate().for_each(|(ti, dc)| {
            simd(|| {
                for (j, dr) in dc.chunks_exact_mut(c).enumerate() {
                    let r = (ti * per + j) * c..(ti * per + j + 1) * c;
                    let it = dr.iter_mut().zip(&x[r.clone()]).zip(&dy[r]).zip(&mean[..c]).zip(&rstd[..c]);
                    for (((((((o, &v), &d), &m), &rs), &w), &a), &b) in it.zip(&gamma[..c]).zip(&a).zip(&b) {
                        let xh = (v - m) * rs;
                        *o = rs * (d * w - a - xh * b);
                    }
                }
            })
        });
        return;
    }
    let hw = g.hw;
    let per = planes_per_task(hw);
    dx[..g.planes() * hw].par_chunks_mut(per * hw).enumerate().for_each(|(ti, dc)| {
        simd(|| {
            let mut at = Walk::at(g, ti * per);
            for (j, dr) in dc.chunks_exact_mut(hw).enumerate() {
                let pl = ti * per + j;
                let (c, t) = (at.c, at.stat());
                let (m, rs, w, a, b) = (mean[t], rstd[t], gamma[c], ab[2 * t], ab[2 * t + 1]);
                let r = pl * hw..(pl + 1) * hw;
                for ((o, &v), &d) in dr.iter_mut().zip(&x[r.clone()]).zip(&dy[r]) {
                    let xh = (v - m) * rs;
                    *o = rs * (d * w - a - xh * b);
                }
                at.advance();
            }
        })
    });
}

/// Bindings: params, mean (read), rstd (read), running_mean (read_write), running_var (read_write).
pub fn chnorm_update_running(args: &mut CpuArgs) {
    let p: RunningParams = args.params();
    let (mean, rstd) = (args.f32_in(0), args.f32_in(1));
    let rm = args.f32_out(0);
    let rv = args.f32_out(1);
    let (c, m) = (p.c as usize, p.momentum);
    for i in 0..c {
        let rs = rstd[i];
        let var_b = (1.0 / (rs * rs) - p.eps).max(0.0);
        rm[i] = (1.0 - m) * rm[i] + m * mean[i];
        rv[i] = (1.0 - m) * rv[i] + m * (var_b * p.unbias);
    }
}
