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

mod partial;
use crate::device::cpu::elementwise::{unary_backward_in_place, unary_in_place};
pub use partial::{chnorm_bwd_partial, chnorm_stats_partial};

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

/// Bindings: params, x (read), partial (read_write, [P, 2, K]), mean (read_write), rstd (read_write).
/// The shader's two phases (each workgroup's partials, then its first thread's combine) as two passes.
pub fn chnorm_stats(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let x = args.f32_in(0);
    let part = args.f32_out(0);
    partial::stats_partial(&p, x, part);
    stats_final(&p, part, args.f32_out(1), args.f32_out(2));
}

/// Bindings: params, x (read), partial (read_write), mean (read_write), rstd (read_write), gamma (read),
/// beta (read), y (read_write): `chnorm_stats`, then `chnorm_apply` with those statistics.
pub fn chnorm_stats_apply(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let x = args.f32_in(0);
    let (gamma, beta) = (args.f32_in(1), args.f32_in(2));
    let (part, mean, rstd, y) = (args.f32_out(0), args.f32_out(1), args.f32_out(2), args.f32_out(3));
    partial::stats_partial(&p, x, part);
    stats_final(&p, part, mean, rstd);
    apply(&p, x, gamma, beta, mean, rstd, y);
}

/// Mean and rstd per stat group from the partials.
fn stats_final(p: &ChnormParams, part: &[f32], mean: &mut [f32], rstd: &mut [f32]) {
    let g = Geo::of(p);
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

/// Bindings: params, partial (read), gamma (read), ab (read_write, [T, 2]: mean(g), mean(g · x̂)),
/// dgamma (read_write), dbeta (read_write).
pub fn chnorm_bwd_reduce(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let (part, gamma) = (args.f32_in(0), args.f32_in(1));
    if p.grads_only == 0 {
        bwd_coeffs(&p, part, gamma, args.f32_out(0));
    }
    bwd_params(&p, part, args.f32_out(1), args.f32_out(2));
}

/// dgamma and dbeta per channel from the partials.
fn bwd_params(p: &ChnormParams, part: &[f32], dgamma: &mut [f32], dbeta: &mut [f32]) {
    // Per channel over all samples: the channels as stat groups of one channel across the batch.
    let g = Geo { cg: 1, per_sample: false, ..Geo::of(p) };
    let tot = all_group_sums::<2>(&g, part, g.c, |_, _, pp, acc| {
        let (a1, a2) = plane_total(pp, g.k);
        acc[0] += a1;
        acc[1] += a2;
    });
    for ((dg, db), s) in dgamma[..g.c].iter_mut().zip(dbeta[..g.c].iter_mut()).zip(&tot) {
        (*db, *dg) = (s[0], s[1]);
    }
}

/// ab per stat group from the partials.
fn bwd_coeffs(p: &ChnormParams, part: &[f32], gamma: &[f32], ab: &mut [f32]) {
    let g = Geo::of(p);
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
    apply(&p, x, gamma, beta, mean, rstd, args.f32_out(0));
}

/// y = act((x - mean) · rstd · gamma + beta), rstd from variances with `var_in`.
fn apply(p: &ChnormParams, x: &[f32], gamma: &[f32], beta: &[f32], mean: &[f32], rstd: &[f32], y: &mut [f32]) {
    let g = Geo::of(p);
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
                if p.act != 0 {
                    unary_in_place(p.act - 1, p.alpha, yc);
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
            if p.act != 0 {
                unary_in_place(p.act - 1, p.alpha, yc);
            }
        })
    });
}

/// Bindings: params, x (read), mean (read), rstd (read), dy (read), gamma (read), beta (read), partial
/// (read_write, [P, 2, K]), dz (read_write). dz = dy · act'(z), z = x̂ · gamma + beta, recomputed as
/// `chnorm_apply` computes it; then the partials of (x, dz) as `chnorm_bwd_partial`'s.
pub fn chnorm_bwd_partial_act(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let (x, mean, rstd, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let (gamma, beta) = (args.f32_in(4), args.f32_in(5));
    let part = args.f32_out(0);
    let dz = args.f32_out(1);
    act_grad(&p, (x, mean, rstd, dy), gamma, beta, dz);
    partial::bwd_partial(&p, (x, dz, mean, rstd), part);
}

/// dz = dy · act'(z), z = x̂ · gamma + beta (ins: x, mean, rstd, dy).
fn act_grad(p: &ChnormParams, (x, mean, rstd, dy): partial::GradIns, gamma: &[f32], beta: &[f32], dz: &mut [f32]) {
    let g = Geo::of(p);
    let hw = g.hw;
    let per = planes_per_task(hw);
    dz[..g.planes() * hw].par_chunks_mut(per * hw).enumerate().for_each(|(ti, zc)| {
        simd(|| {
            let mut at = Walk::at(g, ti * per);
            for (j, zr) in zc.chunks_exact_mut(hw).enumerate() {
                let pl = ti * per + j;
                let (c, t) = (at.c, at.stat());
                let (m, rs, w, b) = (mean[t], rstd[t], gamma[c], beta[c]);
                for (o, &v) in zr.iter_mut().zip(&x[pl * hw..(pl + 1) * hw]) {
                    *o = (v - m) * rs * w + b;
                }
                at.advance();
            }
            let s0 = ti * per * hw;
            unary_backward_in_place(p.act - 1, p.alpha, zc, &dy[s0..s0 + zc.len()]);
        })
    });
}

/// Bindings: params, x (read), mean (read), rstd (read), dy (read), gamma (read), beta (read), partial
/// (read_write), dx (read_write): the passes of `chnorm_bwd_partial(_act)`, the coefficients of
/// `chnorm_bwd_reduce` and `chnorm_bwd_dx`, in order.
pub fn chnorm_bwd_group(args: &mut CpuArgs) {
    bwd_group(args, None);
}

/// Bindings: as `chnorm_bwd_group`, then acc (read): dx = acc + (`chnorm_bwd_group`'s dx).
pub fn chnorm_bwd_group_acc(args: &mut CpuArgs) {
    let acc = args.f32_in(6);
    bwd_group(args, Some(acc));
}

fn bwd_group(args: &mut CpuArgs, acc: Option<&[f32]>) {
    let p: ChnormParams = args.params();
    let (x, mean, rstd, dy) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let (gamma, beta) = (args.f32_in(4), args.f32_in(5));
    let (part, dx) = (args.f32_out(0), args.f32_out(1));
    let g = Geo::of(&p);
    let mut scratch = Vec::new();
    let dz: &[f32] = if p.act == 0 {
        dy
    } else {
        scratch.resize(g.planes() * g.hw, 0.0);
        act_grad(&p, (x, mean, rstd, dy), gamma, beta, &mut scratch);
        &scratch
    };
    partial::bwd_partial(&p, (x, dz, mean, rstd), part);
    let mut ab = vec![0f32; 2 * g.stat_groups()];
    bwd_coeffs(&p, part, gamma, &mut ab);
    bwd_dx(&p, (x, dz, mean, rstd), gamma, &ab, dx);
    if let Some(acc) = acc {
        add_acc(&mut dx[..g.planes() * g.hw], acc);
    }
}

/// dx += acc, element by element.
fn add_acc(dx: &mut [f32], acc: &[f32]) {
    super::par_chunks(dx, |s, ch| {
        for (o, &a) in ch.iter_mut().zip(&acc[s..]) {
            *o += a;
        }
    });
}

/// Bindings: params, x (read), gamma (read), mean (read), rstd (read), dy (read), ab (read), dx (read_write).
pub fn chnorm_bwd_dx(args: &mut CpuArgs) {
    let p: ChnormParams = args.params();
    let (x, gamma, mean, rstd, dy, ab) =
        (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3), args.f32_in(4), args.f32_in(5));
    bwd_dx(&p, (x, dy, mean, rstd), gamma, ab, args.f32_out(0));
}

/// dx = rstd · (dy · gamma - a - x̂ · b), (a, b) = ab[t] of each element's stat group t.
fn bwd_dx(p: &ChnormParams, (x, dy, mean, rstd): partial::GradIns, gamma: &[f32], ab: &[f32], dx: &mut [f32]) {
    let g = Geo::of(p);
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

/// Bindings: as `chnorm_bwd_dx`, then acc (read): dx = acc + (`chnorm_bwd_dx`'s dx).
pub fn chnorm_bwd_dx_acc(args: &mut CpuArgs) {
    let acc = args.f32_in(6);
    let p: ChnormParams = args.params();
    let dx = args.f32_out(0);
    // The plain pass writes dx; the sum is a second pass over it.
    let plain = vec![bytemuck::cast_slice_mut(&mut *dx)];
    chnorm_bwd_dx(&mut CpuArgs { params: args.params, ins: args.ins[..6].to_vec(), outs: plain });
    add_acc(&mut dx[..(p.n * p.c * p.hw) as usize], acc);
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
