//! CPU twin of shaders/attention.wgsl: the same outputs per entry point (out and lse; dQ and delta;
//! dK and dV), with the same masking, computed the CPU's way rather than thread by thread.
//!
//! Work is split over batches and, inside each, over heads (nested rayon tasks). A worker first copies
//! the batch's inputs out in one pass down the rows (`Packed::fill`: the reads stream, and the copies
//! stay in cache for the heads): each head's rows padded to DP = D rounded up to 8, and, for the side
//! of a score product that is streamed past the owner rows (K in the forward and dQ kernels, Q in dK/dV,
//! and V / dO for dP), panels of KW = 16 rows stored k-major. Owner rows (queries, or keys for dK/dV)
//! then go R = 4 at a time through two register-blocked micro-kernels: `scores` (R rows against a
//! panel) and `accumulate` (R weighted sums of matrix rows). A whole score row fits in scratch, so the
//! softmax is taken over the row at once instead of online (the same value). `exp` is a polynomial
//! that vectorises (libm's does not) and runs only on visible keys (the causal half) up to the block
//! edge. Each head's results go to a buffer of its own, copied into the batch's rows once. The inner
//! loops are written twice: plain Rust, and AVX2 + FMA intrinsics chosen at run time.

use rayon::prelude::*;

use super::CpuArgs;
use crate::host::f16;
use crate::kernels::attention::AttentionParams;

/// Owner rows per block.
const R: usize = 4;
/// Rows of a packed panel: score columns per step of `scores`.
const KW: usize = 16;
/// Head dims are padded to a multiple of this (one 256-bit register of f32).
const LANES: usize = 8;
/// Masked score (as the shader's NEG): finite, and exp(NEG * scale - m) is 0.
const NEG: f32 = -1.0e30;

#[derive(Clone, Copy)]
struct Geo {
    t: usize,
    h: usize,
    d: usize,
    /// d rounded up to LANES.
    dp: usize,
    causal: bool,
    scale: f32,
}

impl Geo {
    fn new(p: &AttentionParams) -> Geo {
        let d = p.head_dim as usize;
        Geo {
            t: p.seq as usize,
            h: p.heads as usize,
            d,
            dp: d.div_ceil(LANES) * LANES,
            causal: p.causal == 1,
            scale: p.scale,
        }
    }
    fn c(&self) -> usize {
        self.h * self.d
    }
    /// Batch b's part (0 = q, 1 = k, 2 = v) of qkv: (offset of token 0's head 0, row stride).
    fn qkv(&self, b: usize, part: usize) -> (usize, usize) {
        (b * self.t * 3 * self.c() + part * self.c(), 3 * self.c())
    }
    /// Batch b of out or dout ([B, T, C]): (offset, row stride).
    fn oc(&self, b: usize) -> (usize, usize) {
        (b * self.t * self.c(), self.c())
    }
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// The [t, d] matrices of the heads of one batch, copied out by one pass down the rows (so the reads
/// stream through memory): `rows[h]` holds head h's rows, each padded with zeros to dp; `panels[h]`
/// packs them for `scores`: panel p holds rows p*KW .. p*KW + KW k-major (element (i, k) at
/// p*d*KW + k*KW + i % KW), zero padded past t.
#[derive(Default)]
struct Packed {
    rows: Vec<Vec<f32>>,
    panels: Vec<Vec<f32>>,
}

impl Packed {
    /// Fills with the heads whose rows start at src[base + i * stride + h * d]; `rows` and `panels`
    /// choose what to make (the other is left empty). Buffers of an earlier fill are reused, so a
    /// worker's memory stays mapped from one batch to the next.
    fn fill(&mut self, g: &Geo, src: &[f32], (base, stride): (usize, usize), rows: bool, panels: bool) {
        let (t, d, dp) = (g.t, g.d, g.dp);
        let size = |v: &mut Vec<Vec<f32>>, on: bool, n: usize| {
            v.resize_with(if on { g.h } else { 0 }, Vec::new);
            for x in v.iter_mut() {
                x.clear();
                x.resize(n, 0.0);
            }
        };
        size(&mut self.rows, rows, t * dp);
        size(&mut self.panels, panels, t.div_ceil(KW) * d * KW);
        for i in 0..t {
            prefetch(src, base + (i + PREFETCH) * stride, g.h * d);
            let row = &src[base + i * stride..][..g.h * d];
            for (h, x) in row.chunks_exact(d).enumerate() {
                if rows {
                    self.rows[h][i * dp..i * dp + d].copy_from_slice(x);
                }
                if panels {
                    let at = i / KW * d * KW + i % KW;
                    for (k, &x) in x.iter().enumerate() {
                        self.panels[h][at + k * KW] = x;
                    }
                }
            }
        }
    }
}

/// Rows ahead that `Packed::fill` asks the memory system for: rows are far apart (3C floats in qkv),
/// which the hardware prefetchers follow poorly, and these copies are the first touch of the inputs.
const PREFETCH: usize = 4;

/// Hints that src[at .. at + n] will be read soon (nothing where that is out of bounds or there is no
/// prefetch instruction).
fn prefetch(src: &[f32], at: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if at + n <= src.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for k in (at..at + n).step_by(16) {
            // SAFETY: a prefetch never faults; the address is inside src anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().wrapping_add(k) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, at, n);
}

/// One worker's buffers for a batch, reused across the batches it takes.
#[derive(Default)]
struct Scratch {
    q: Packed,
    k: Packed,
    v: Packed,
    dout: Packed,
    /// Per-head results, [H][T][D] (and a second set for dV).
    res: Vec<f32>,
    res2: Vec<f32>,
}

/// `v` cleared and refilled with n zeros (its memory reused).
fn zeroed(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.clear();
    v.resize(n, 0.0);
    v
}

/// Rows i0 .. i0 + R of a packed [t][dp] matrix, `zeros` (dp of them) for those at or past t.
fn block<'a>(m: &'a [f32], dp: usize, t: usize, i0: usize, zeros: &'a [f32]) -> [&'a [f32]; R] {
    std::array::from_fn(|r| if i0 + r < t { &m[(i0 + r) * dp..(i0 + r + 1) * dp] } else { zeros })
}

mod kern;
use kern::{Kern, Portable};
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
use avx2::Avx2;

/// Forward of one head: o [T, D] and lse [T] from its packed Q rows, K panels and V rows.
fn fwd_head<K: Kern>(g: &Geo, (q, kp, v): (&[f32], &[f32], &[f32]), o: &mut [f32], lse: &mut [f32]) {
    let (t, d, dp) = (g.t, g.d, g.dp);
    let ld = round_up(t, KW);
    let zeros = vec![0f32; dp];
    let mut s = vec![0f32; R * ld];
    let mut acc = vec![0f32; R * dp];
    for i0 in (0..t).step_by(R) {
        // Keys any row of the block sees.
        let n = if g.causal { (i0 + R).min(t) } else { t };
        let nk = round_up(n, KW);
        K::scores(block(q, dp, t, i0, &zeros), kp, d, 0, nk / KW, &mut s, ld);
        let mut inv = [0f32; R];
        for (r, inv) in inv.iter_mut().enumerate() {
            let nr = if g.causal { (i0 + r + 1).min(t) } else { t };
            let row = &mut s[r * ld..r * ld + nk];
            row[nr..].fill(NEG);
            let (m, l) = K::softmax_row(row, g.scale);
            *inv = 1.0 / l;
            if i0 + r < t {
                lse[i0 + r] = m + l.ln();
            }
        }
        K::accumulate(&s, ld, 0, n, v, dp, dp, &mut acc);
        for r in 0..R.min(t - i0) {
            let i = i0 + r;
            for (y, &a) in o[i * d..(i + 1) * d].iter_mut().zip(&acc[r * dp..]) {
                *y = a * inv[r];
            }
        }
    }
}

/// dQ [T, D] (scaled) of one head, from its packed Q and dO rows, K panels and rows, V panels, and its
/// lse and delta.
#[allow(clippy::type_complexity)]
fn dq_head<K: Kern>(
    g: &Geo,
    (q, dor, kp, k, vp): (&[f32], &[f32], &[f32], &[f32], &[f32]),
    (lse, delta): (&[f32], &[f32]),
    dq: &mut [f32],
) {
    let (t, d, dp) = (g.t, g.d, g.dp);
    let ld = round_up(t, KW);
    let zeros = vec![0f32; dp];
    let mut s = vec![0f32; R * ld];
    let mut dpm = vec![0f32; R * ld];
    let mut acc = vec![0f32; R * dp];
    for i0 in (0..t).step_by(R) {
        let n = if g.causal { (i0 + R).min(t) } else { t };
        let nk = round_up(n, KW);
        K::scores(block(q, dp, t, i0, &zeros), kp, d, 0, nk / KW, &mut s, ld);
        K::scores(block(dor, dp, t, i0, &zeros), vp, d, 0, nk / KW, &mut dpm, ld);
        for r in 0..R {
            let i = i0 + r;
            // Visible keys 0..nr, computed up to the next multiple of LANES and the rest zeroed.
            let nr = if g.causal { (i + 1).min(t) } else { t };
            let n8 = round_up(nr, LANES);
            let (li, di) = if i < t { (lse[i], delta[i]) } else { (0.0, 0.0) };
            let row = &mut s[r * ld..r * ld + nk];
            K::ds_row(&mut row[..n8], &dpm[r * ld..r * ld + n8], g.scale, li, di);
            row[nr..].fill(0.0);
        }
        K::accumulate(&s, ld, 0, n, k, dp, dp, &mut acc);
        for r in 0..R.min(t - i0) {
            let i = i0 + r;
            for (y, &a) in dq[i * d..(i + 1) * d].iter_mut().zip(&acc[r * dp..]) {
                *y = a * g.scale;
            }
        }
    }
}

/// dK (scaled) and dV [T, D] of one head, from its packed K and V rows, Q and dO rows and panels, and
/// its lse and delta.
#[allow(clippy::type_complexity)]
fn dkv_head<K: Kern>(
    g: &Geo,
    (k, v, q, qp, dor, dop): (&[f32], &[f32], &[f32], &[f32], &[f32], &[f32]),
    (lse, delta): (&[f32], &[f32]),
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t, d, dp) = (g.t, g.d, g.dp);
    let ld = round_up(t, KW);
    // lse and delta padded with zeros to ld, so whole LANES-chunks can be read.
    let pad = |x: &[f32]| -> Vec<f32> {
        let mut v = vec![0f32; ld];
        v[..t].copy_from_slice(x);
        v
    };
    let (lse, delta) = (pad(lse), pad(delta));
    let zeros = vec![0f32; dp];
    let mut p = vec![0f32; R * ld];
    let mut ds = vec![0f32; R * ld];
    let mut acc = vec![0f32; R * dp];
    for j0 in (0..t).step_by(R) {
        // Queries any key of the block is seen by, from the start of their panel.
        let i0 = if g.causal { j0 / KW * KW } else { 0 };
        let (p0, p1) = (i0 / KW, t.div_ceil(KW));
        K::scores(block(k, dp, t, j0, &zeros), qp, d, p0, p1, &mut p, ld);
        K::scores(block(v, dp, t, j0, &zeros), dop, d, p0, p1, &mut ds, ld);
        for r in 0..R {
            let j = j0 + r;
            // First query that sees key j (t: none, for the padding keys past t). Computed over whole
            // LANES-chunks from i0 that cover lo..t; the queries before lo are zeroed.
            let lo = if j >= t {
                t
            } else if g.causal {
                j
            } else {
                0
            };
            let a = i0 + (lo - i0) / LANES * LANES;
            let e = i0 + round_up(t - i0, LANES);
            let (prow, dsrow) = (&mut p[r * ld..(r + 1) * ld], &mut ds[r * ld..(r + 1) * ld]);
            K::p_ds_row(&mut prow[a..e], &mut dsrow[a..e], &lse[a..e], &delta[a..e], g.scale);
            prow[i0..lo].fill(0.0);
            dsrow[i0..lo].fill(0.0);
        }
        K::accumulate(&p, ld, i0, t, dor, dp, dp, &mut acc);
        for r in 0..R.min(t - j0) {
            let j = j0 + r;
            dv[j * d..(j + 1) * d].copy_from_slice(&acc[r * dp..r * dp + d]);
        }
        K::accumulate(&ds, ld, i0, t, q, dp, dp, &mut acc);
        for r in 0..R.min(t - j0) {
            let j = j0 + r;
            for (y, &a) in dk[j * d..(j + 1) * d].iter_mut().zip(&acc[r * dp..]) {
                *y = a * g.scale;
            }
        }
    }
}

/// Whether the AVX2 + FMA inner loops can run here.
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `$f::<Avx2>(args)` where the CPU has AVX2 and FMA (`$simd`), else `$f::<Portable>(args)`.
macro_rules! with_kern {
    ($simd:expr, $f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        let r = if $simd { $f::<Avx2>($($arg),*) } else { $f::<Portable>($($arg),*) };
        #[cfg(not(target_arch = "x86_64"))]
        let r = {
            let _ = $simd;
            $f::<Portable>($($arg),*)
        };
        r
    }};
}

/// Copies head results (`heads`: [H][T][D]) into columns col0 + h*D of a batch's rows of `row_len`.
fn put(heads: &[f32], rows: &mut [f32], row_len: usize, col0: usize, t: usize, d: usize) {
    for (i, row) in rows.chunks_exact_mut(row_len).enumerate() {
        for (h, x) in heads.chunks_exact(t * d).enumerate() {
            row[col0 + h * d..col0 + (h + 1) * d].copy_from_slice(&x[i * d..(i + 1) * d]);
        }
    }
}

/// Bindings: params, qkv (read), out (read_write), lse (read_write).
pub fn attention_fwd(args: &mut CpuArgs) {
    let p: AttentionParams = args.params();
    let g = Geo::new(&p);
    let qkv = args.f32_in(0);
    let out = args.f32_out(0);
    let lse = args.f32_out(1);
    let (nb, t, d, c) = (p.batch as usize, g.t, g.d, g.c());
    if nb * g.h * t == 0 {
        return;
    }
    let simd = avx2_fma();
    let out = out[..nb * t * c].par_chunks_mut(t * c);
    let batches = out.zip(lse[..nb * g.h * t].par_chunks_mut(g.h * t)).enumerate();
    batches.for_each_init(Scratch::default, |sc, (b, (out_b, lse_b))| {
        sc.q.fill(&g, qkv, g.qkv(b, 0), true, false);
        sc.k.fill(&g, qkv, g.qkv(b, 1), false, true);
        sc.v.fill(&g, qkv, g.qkv(b, 2), true, false);
        let Scratch { q, k, v, res, .. } = sc;
        let res = zeroed(res, g.h * t * d);
        res.par_chunks_mut(t * d)
            .zip(lse_b.par_chunks_mut(t))
            .enumerate()
            .for_each(|(h, (o, l))| with_kern!(simd, fwd_head(&g, (&q.rows[h], &k.panels[h], &v.rows[h]), o, l)));
        put(res, out_b, c, 0, t, d);
    });
}

/// Bindings: params, qkv, lse, dout, out (read), dqkv (read_write). Writes all of dqkv: the q columns
/// (the kernel's query-tile half), then the k and v columns (its key-tile half).
pub fn attention_bwd(args: &mut CpuArgs) {
    let (qkv, out) = (args.f32_in(0), args.f32_in(3));
    bwd(args, qkv, out);
}

/// Bindings as `attention_bwd`'s, qkv and out stored as f16 pairs: `attention_bwd` on the widened (exact)
/// values.
pub fn attention_bwd_half(args: &mut CpuArgs) {
    let p: AttentionParams = args.params();
    let g = Geo::new(&p);
    let rows = p.batch as usize * g.t;
    let qkv = f16::unpack(args.u32_in(0), rows * 3 * g.c());
    let out = f16::unpack(args.u32_in(3), rows * g.c());
    bwd(args, &qkv, &out);
}

/// The backward from qkv and out (f32) and the inputs lse and dout into dqkv.
fn bwd(args: &mut CpuArgs, qkv: &[f32], out: &[f32]) {
    let p: AttentionParams = args.params();
    let g = Geo::new(&p);
    let (lse, dout) = (args.f32_in(1), args.f32_in(2));
    let dqkv = args.f32_out(0);
    let (nb, t) = (p.batch as usize, g.t);
    if nb * g.h * t == 0 {
        return;
    }
    let delta = deltas(&g, nb, dout, out);
    let dqkv = &mut dqkv[..nb * t * 3 * g.c()];
    bwd_dq(&g, qkv, lse, dout, &delta, dqkv);
    bwd_dkv(&g, qkv, lse, dout, &delta, dqkv);
}

/// delta = rowsum(dout * out) per (b, h, query), [B, H, T].
fn deltas(g: &Geo, nb: usize, dout: &[f32], out: &[f32]) -> Vec<f32> {
    let (t, d, c) = (g.t, g.d, g.c());
    let mut delta = vec![0.0f32; nb * g.h * t];
    delta.par_chunks_mut(g.h * t).enumerate().for_each(|(b, delta_b)| {
        let (ob, _) = g.oc(b);
        for i in 0..t {
            let (x, y) = (&dout[ob + i * c..][..c], &out[ob + i * c..][..c]);
            for (h, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact(d)).enumerate() {
                delta_b[h * t + i] = x.iter().zip(y).map(|(a, b)| a * b).sum();
            }
        }
    });
    delta
}

/// The q columns of dqkv.
fn bwd_dq(g: &Geo, qkv: &[f32], lse: &[f32], dout: &[f32], delta: &[f32], dqkv: &mut [f32]) {
    let (t, d, c) = (g.t, g.d, g.c());
    let simd = avx2_fma();
    let batches = dqkv.par_chunks_mut(t * 3 * c).enumerate();
    batches.for_each_init(Scratch::default, |sc, (b, rows_b)| {
        let delta_b = &delta[b * g.h * t..][..g.h * t];
        sc.q.fill(g, qkv, g.qkv(b, 0), true, false);
        sc.k.fill(g, qkv, g.qkv(b, 1), true, true);
        sc.v.fill(g, qkv, g.qkv(b, 2), false, true);
        sc.dout.fill(g, dout, g.oc(b), true, false);
        let Scratch { q, k, v, dout: dor, res, .. } = sc;
        let res = zeroed(res, g.h * t * d);
        res.par_chunks_mut(t * d).enumerate().for_each(|(h, dq)| {
            let m = (&q.rows[h][..], &dor.rows[h][..], &k.panels[h][..], &k.rows[h][..], &v.panels[h][..]);
            let stats = (&lse[(b * g.h + h) * t..][..t], &delta_b[h * t..][..t]);
            with_kern!(simd, dq_head(g, m, stats, dq))
        });
        put(res, rows_b, 3 * c, 0, t, d);
    });
}

/// The k and v columns of dqkv.
fn bwd_dkv(g: &Geo, qkv: &[f32], lse: &[f32], dout: &[f32], delta: &[f32], dqkv: &mut [f32]) {
    let (t, d, c) = (g.t, g.d, g.c());
    let simd = avx2_fma();
    let batches = dqkv.par_chunks_mut(t * 3 * c).enumerate();
    batches.for_each_init(Scratch::default, |sc, (b, rows_b)| {
        sc.q.fill(g, qkv, g.qkv(b, 0), true, true);
        sc.k.fill(g, qkv, g.qkv(b, 1), true, false);
        sc.v.fill(g, qkv, g.qkv(b, 2), true, false);
        sc.dout.fill(g, dout, g.oc(b), true, true);
        let Scratch { q, k, v, dout: dor, res, res2 } = sc;
        let (dk, dv) = (zeroed(res, g.h * t * d), zeroed(res2, g.h * t * d));
        dk.par_chunks_mut(t * d).zip(dv.par_chunks_mut(t * d)).enumerate().for_each(|(h, (dk, dv))| {
            let m = (
                &k.rows[h][..],
                &v.rows[h][..],
                &q.rows[h][..],
                &q.panels[h][..],
                &dor.rows[h][..],
                &dor.panels[h][..],
            );
            let at = (b * g.h + h) * t;
            with_kern!(simd, dkv_head(g, m, (&lse[at..at + t], &delta[at..at + t]), dk, dv))
        });
        put(dk, rows_b, 3 * c, c, t, d);
        put(dv, rows_b, 3 * c, 2 * c, t, d);
    });
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
