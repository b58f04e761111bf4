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

use crate::kernels::CpuArgs;
use crate::ops::attention::AttentionParams;

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

/// The numeric inner loops. `Portable` is plain Rust; `Avx2` (x86-64 with AVX2 and FMA, detected at
/// run time) is written with intrinsics, which do not depend on the optimiser (the dev profile's
/// opt-level 2 does not SLP-vectorise register-blocked loops).
trait Kern {
    /// out[r * ld + j] = sum_k a[r][k] * B[j][k] for r < R and j in p0*KW .. p1*KW, where B is packed
    /// by `Packed::fill` (`bp`) and each a[r] holds d values.
    fn scores(a: [&[f32]; R], bp: &[f32], d: usize, p0: usize, p1: usize, out: &mut [f32], ld: usize);
    /// out[r * dp + c] = sum_{j in j0..j1} w[r * ld + j] * m[j * ms + c] for r < R, c < dp (a multiple
    /// of LANES).
    #[allow(clippy::too_many_arguments)]
    fn accumulate(w: &[f32], ld: usize, j0: usize, j1: usize, m: &[f32], ms: usize, dp: usize, out: &mut [f32]);
    /// Softmax of one score row in place (length a multiple of LANES): with m = max(row) * scale,
    /// row[j] = exp(row[j] * scale - m); returns (m, sum of the row).
    fn softmax_row(row: &mut [f32], scale: f32) -> (f32, f32);
    /// dS of one query row in place: s[j] = exp(s[j] * scale - lse) * (dp[j] - delta) (length a multiple
    /// of LANES).
    fn ds_row(s: &mut [f32], dp: &[f32], scale: f32, lse: f32, delta: f32);
    /// P and dS of one key against queries: p[i] = exp(p[i] * scale - lse[i]), ds[i] = p[i] * (ds[i] -
    /// delta[i]) (lengths equal, a multiple of LANES).
    fn p_ds_row(p: &mut [f32], ds: &mut [f32], lse: &[f32], delta: &[f32], scale: f32);
}

/// e^x, within about 1 ulp for -87 <= x <= 88 and 0 below -87 (where e^x leaves f32's normal range):
/// Cody-Waite reduction x = n ln2 + r and Cephes' expf polynomial (as `avx2::exp8`, lane by lane).
fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    // t holds ROUND + n: its low mantissa bits are n, which becomes the exponent of 2^n.
    let pow2 = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        y * pow2
    }
}

/// Adding 1.5 * 2^23 rounds an f32 of magnitude < 2^22 to an integer held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with few mantissa bits so that n * LN2_HI is exact.
const LN2_HI: f32 = 0.693_359_4; // 355/512 exactly
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' expf: e^r = 1 + r + r^2 * poly(r) on |r| <= ln2 / 2, highest degree first.
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

struct Portable;

impl Kern for Portable {
    fn scores(a: [&[f32]; R], bp: &[f32], d: usize, p0: usize, p1: usize, out: &mut [f32], ld: usize) {
        for p in p0..p1 {
            let panel = &bp[p * d * KW..(p + 1) * d * KW];
            for (r, a) in a.iter().enumerate() {
                let o = &mut out[r * ld + p * KW..r * ld + p * KW + KW];
                o.fill(0.0);
                for (&x, prow) in a[..d].iter().zip(panel.chunks_exact(KW)) {
                    for (o, &b) in o.iter_mut().zip(prow) {
                        *o += x * b;
                    }
                }
            }
        }
    }

    fn accumulate(w: &[f32], ld: usize, j0: usize, j1: usize, m: &[f32], ms: usize, dp: usize, out: &mut [f32]) {
        for (r, orow) in out.chunks_exact_mut(dp).take(R).enumerate() {
            orow.fill(0.0);
            for (j, &x) in w[r * ld + j0..r * ld + j1].iter().enumerate() {
                for (o, &v) in orow.iter_mut().zip(&m[(j0 + j) * ms..][..dp]) {
                    *o += x * v;
                }
            }
        }
    }

    fn softmax_row(row: &mut [f32], scale: f32) -> (f32, f32) {
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) * scale;
        let mut l = 0.0;
        for x in row.iter_mut() {
            *x = exp(*x * scale - m);
            l += *x;
        }
        (m, l)
    }

    fn ds_row(s: &mut [f32], dp: &[f32], scale: f32, lse: f32, delta: f32) {
        for (x, &d) in s.iter_mut().zip(dp) {
            *x = exp(*x * scale - lse) * (d - delta);
        }
    }

    fn p_ds_row(p: &mut [f32], ds: &mut [f32], lse: &[f32], delta: &[f32], scale: f32) {
        for (((x, d), &l), &dl) in p.iter_mut().zip(ds.iter_mut()).zip(lse).zip(delta) {
            *x = exp(*x * scale - l);
            *d = *x * (*d - dl);
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

/// The AVX2 + FMA inner loops. Each `Kern` method checks the bounds its raw-pointer loop relies on.
/// Loads and stores go through `ld8` / `st8` (an unaligned read of a packed struct): the intrinsics'
/// own unaligned loads copy through memory when debug assertions are on.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Avx2, Kern, EXP_POLY, KW, LANES, LN2_HI, LN2_LO, R, ROUND};
    use std::arch::x86_64::*;

    impl Kern for Avx2 {
        fn scores(a: [&[f32]; R], bp: &[f32], d: usize, p0: usize, p1: usize, out: &mut [f32], ld: usize) {
            assert!(a.iter().all(|a| a.len() >= d) && bp.len() >= p1 * d * KW);
            assert!(p0 <= p1 && p1 * KW <= ld && out.len() >= R * ld);
            // SAFETY: Avx2 is only made after run-time detection of avx2 and fma; bounds checked above.
            unsafe { scores(a, bp, d, p0, p1, out, ld) }
        }

        fn accumulate(w: &[f32], ld: usize, j0: usize, j1: usize, m: &[f32], ms: usize, dp: usize, out: &mut [f32]) {
            assert!(j0 <= j1 && j1 <= ld && w.len() >= (R - 1) * ld + j1);
            assert!(j1 == j0 || m.len() >= (j1 - 1) * ms + dp);
            assert!(dp.is_multiple_of(LANES) && out.len() >= R * dp);
            // SAFETY: as above.
            unsafe { accumulate(w, ld, j0, j1, m, ms, dp, out) }
        }

        fn softmax_row(row: &mut [f32], scale: f32) -> (f32, f32) {
            assert!(row.len().is_multiple_of(LANES));
            // SAFETY: as above.
            unsafe { softmax_row(row, scale) }
        }

        fn ds_row(s: &mut [f32], dp: &[f32], scale: f32, lse: f32, delta: f32) {
            assert!(s.len().is_multiple_of(LANES) && dp.len() >= s.len());
            // SAFETY: as above.
            unsafe { ds_row(s, dp, scale, lse, delta) }
        }

        fn p_ds_row(p: &mut [f32], ds: &mut [f32], lse: &[f32], delta: &[f32], scale: f32) {
            let n = p.len();
            assert!(n.is_multiple_of(LANES) && ds.len() >= n && lse.len() >= n && delta.len() >= n);
            // SAFETY: as above.
            unsafe { p_ds_row(p, ds, lse, delta, scale) }
        }
    }

    #[repr(C, packed)]
    struct Unaligned(__m256);

    /// 8 floats from p (any alignment). Safety: p .. p + 8 is readable.
    #[inline(always)]
    unsafe fn ld8(p: *const f32) -> __m256 {
        unsafe { (*(p as *const Unaligned)).0 }
    }

    /// Stores 8 floats at p (any alignment). Safety: p .. p + 8 is writable.
    #[inline(always)]
    unsafe fn st8(p: *mut f32, v: __m256) {
        unsafe { (*(p as *mut Unaligned)).0 = v }
    }

    /// Per panel, a 4 x 16 register tile: 8 accumulators, 2 loads and 4 broadcasts per k.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scores(a: [&[f32]; R], bp: &[f32], d: usize, p0: usize, p1: usize, out: &mut [f32], ld: usize) {
        let ap = a.map(|a| a.as_ptr());
        for p in p0..p1 {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let mut pp = bp.as_ptr().wrapping_add(p * d * KW);
            for k in 0..d {
                // SAFETY (caller): panel p holds d rows of KW; each a[r] holds d values.
                unsafe {
                    let (b0, b1) = (ld8(pp), ld8(pp.wrapping_add(8)));
                    for r in 0..R {
                        let x = _mm256_set1_ps(*ap[r].wrapping_add(k));
                        acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
                    }
                }
                pp = pp.wrapping_add(KW);
            }
            for (r, [lo, hi]) in acc.into_iter().enumerate() {
                let o = out.as_mut_ptr().wrapping_add(r * ld + p * KW);
                // SAFETY (caller): out holds R rows of ld >= p1 * KW.
                unsafe {
                    st8(o, lo);
                    st8(o.wrapping_add(8), hi);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn accumulate(w: &[f32], ld: usize, j0: usize, j1: usize, m: &[f32], ms: usize, dp: usize, out: &mut [f32]) {
        let wp: [*const f32; R] = std::array::from_fn(|r| w.as_ptr().wrapping_add(r * ld));
        let mut c0 = 0;
        while c0 < dp {
            // 16 columns (R x 2 accumulators) while they last, then the last 8.
            let wide = c0 + 2 * LANES <= dp;
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for j in j0..j1 {
                let mp = m.as_ptr().wrapping_add(j * ms + c0);
                // SAFETY (caller): row j of m has dp >= c0 + 8 (+ 8 when wide) values; w R rows of ld >= j1.
                unsafe {
                    let m0 = ld8(mp);
                    let m1 = if wide { ld8(mp.wrapping_add(8)) } else { m0 };
                    for r in 0..R {
                        let x = _mm256_set1_ps(*wp[r].wrapping_add(j));
                        acc[r][0] = _mm256_fmadd_ps(x, m0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(x, m1, acc[r][1]);
                    }
                }
            }
            for (r, [lo, hi]) in acc.into_iter().enumerate() {
                let o = out.as_mut_ptr().wrapping_add(r * dp + c0);
                // SAFETY (caller): out holds R rows of dp.
                unsafe {
                    st8(o, lo);
                    if wide {
                        st8(o.wrapping_add(8), hi);
                    }
                }
            }
            c0 += if wide { 2 * LANES } else { LANES };
        }
    }

    /// exp of 8 lanes: the parent module's scalar `exp`, lane by lane (fused where it has a * b + c).
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
        let round = _mm256_set1_ps(ROUND);
        let t = _mm256_fmadd_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E), round);
        let n = _mm256_sub_ps(t, round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        let e = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(ROUND.to_bits() as i32 - 127));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e));
        let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-87.0));
        _mm256_and_ps(_mm256_mul_ps(y, pow2), keep)
    }

    /// The 8 lanes of v.
    #[target_feature(enable = "avx2,fma")]
    fn lanes(v: __m256) -> [f32; 8] {
        let mut a = [0f32; 8];
        // SAFETY: a holds 8 floats.
        unsafe { st8(a.as_mut_ptr(), v) };
        a
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_row(row: &mut [f32], scale: f32) -> (f32, f32) {
        let p = row.as_mut_ptr();
        let mut mv = _mm256_set1_ps(f32::MIN);
        // SAFETY (caller): row.len() is a multiple of 8, so every 8-lane access is inside row.
        for i in (0..row.len()).step_by(LANES) {
            mv = _mm256_max_ps(mv, unsafe { ld8(p.wrapping_add(i)) });
        }
        let m = lanes(mv).iter().fold(f32::MIN, |a, &b| a.max(b)) * scale;
        let (sv, mb) = (_mm256_set1_ps(scale), _mm256_set1_ps(m));
        let mut lv = _mm256_setzero_ps();
        for i in (0..row.len()).step_by(LANES) {
            let q = p.wrapping_add(i);
            // SAFETY: as above.
            unsafe {
                let e = exp8(_mm256_fmsub_ps(ld8(q), sv, mb));
                st8(q, e);
                lv = _mm256_add_ps(lv, e);
            }
        }
        (m, lanes(lv).iter().sum())
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn ds_row(s: &mut [f32], dp: &[f32], scale: f32, lse: f32, delta: f32) {
        let (sv, lv, dv) = (_mm256_set1_ps(scale), _mm256_set1_ps(lse), _mm256_set1_ps(delta));
        for i in (0..s.len()).step_by(LANES) {
            let (p, q) = (s.as_mut_ptr().wrapping_add(i), dp.as_ptr().wrapping_add(i));
            // SAFETY (caller): s.len() is a multiple of 8 and dp is at least as long.
            unsafe {
                let e = exp8(_mm256_fmsub_ps(ld8(p), sv, lv));
                st8(p, _mm256_mul_ps(e, _mm256_sub_ps(ld8(q), dv)));
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn p_ds_row(p: &mut [f32], ds: &mut [f32], lse: &[f32], delta: &[f32], scale: f32) {
        let sv = _mm256_set1_ps(scale);
        for i in (0..p.len()).step_by(LANES) {
            let (pp, dp) = (p.as_mut_ptr().wrapping_add(i), ds.as_mut_ptr().wrapping_add(i));
            let (lp, dlp) = (lse.as_ptr().wrapping_add(i), delta.as_ptr().wrapping_add(i));
            // SAFETY (caller): p.len() is a multiple of 8 and the other slices are at least as long.
            unsafe {
                let e = exp8(_mm256_fmsub_ps(ld8(pp), sv, ld8(lp)));
                st8(pp, e);
                st8(dp, _mm256_mul_ps(e, _mm256_sub_ps(ld8(dp), ld8(dlp))));
            }
        }
    }
}

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

/// Bindings: params, qkv, lse, dout, out (read), dqkv, delta (read_write). Writes the q columns of
/// dqkv and delta = rowsum(dout * out).
pub fn attention_bwd_dq(args: &mut CpuArgs) {
    let p: AttentionParams = args.params();
    let g = Geo::new(&p);
    let (qkv, lse, dout, out) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let dqkv = args.f32_out(0);
    let delta = args.f32_out(1);
    let (nb, t, d, c) = (p.batch as usize, g.t, g.d, g.c());
    if nb * g.h * t == 0 {
        return;
    }
    let simd = avx2_fma();
    let rows = dqkv[..nb * t * 3 * c].par_chunks_mut(t * 3 * c);
    let batches = rows.zip(delta[..nb * g.h * t].par_chunks_mut(g.h * t)).enumerate();
    batches.for_each_init(Scratch::default, |sc, (b, (rows_b, delta_b))| {
        let (ob, _) = g.oc(b);
        for i in 0..t {
            let (x, y) = (&dout[ob + i * c..][..c], &out[ob + i * c..][..c]);
            for (h, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact(d)).enumerate() {
                delta_b[h * t + i] = x.iter().zip(y).map(|(a, b)| a * b).sum();
            }
        }
        let delta_b = &*delta_b;
        sc.q.fill(&g, qkv, g.qkv(b, 0), true, false);
        sc.k.fill(&g, qkv, g.qkv(b, 1), true, true);
        sc.v.fill(&g, qkv, g.qkv(b, 2), false, true);
        sc.dout.fill(&g, dout, g.oc(b), true, false);
        let Scratch { q, k, v, dout: dor, res, .. } = sc;
        let res = zeroed(res, g.h * t * d);
        res.par_chunks_mut(t * d).enumerate().for_each(|(h, dq)| {
            let m = (&q.rows[h][..], &dor.rows[h][..], &k.panels[h][..], &k.rows[h][..], &v.panels[h][..]);
            let stats = (&lse[(b * g.h + h) * t..][..t], &delta_b[h * t..][..t]);
            with_kern!(simd, dq_head(&g, m, stats, dq))
        });
        put(res, rows_b, 3 * c, 0, t, d);
    });
}

/// Bindings: params, qkv, lse, dout, delta (read), dqkv (read_write). Writes the k and v columns of
/// dqkv.
pub fn attention_bwd_dkv(args: &mut CpuArgs) {
    let p: AttentionParams = args.params();
    let g = Geo::new(&p);
    let (qkv, lse, dout, delta) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let dqkv = args.f32_out(0);
    let (nb, t, d, c) = (p.batch as usize, g.t, g.d, g.c());
    if nb * g.h * t == 0 {
        return;
    }
    let simd = avx2_fma();
    let batches = dqkv[..nb * t * 3 * c].par_chunks_mut(t * 3 * c).enumerate();
    batches.for_each_init(Scratch::default, |sc, (b, rows_b)| {
        sc.q.fill(&g, qkv, g.qkv(b, 0), true, true);
        sc.k.fill(&g, qkv, g.qkv(b, 1), true, false);
        sc.v.fill(&g, qkv, g.qkv(b, 2), true, false);
        sc.dout.fill(&g, dout, g.oc(b), true, true);
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
            with_kern!(simd, dkv_head(&g, m, (&lse[at..at + t], &delta[at..at + t]), dk, dv))
        });
        put(dk, rows_b, 3 * c, c, t, d);
        put(dv, rows_b, 3 * c, 2 * c, t, d);
    });
}
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Uniform in [-1.5, 1.5) from a xorshift state.
    fn rand(state: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                ((*state >> 40) as f32 / (1u64 << 24) as f32) * 3.0 - 1.5
            })
            .collect()
    }

    /// Largest |a - b| over max |b| (at least 1: inputs are O(1), and some outputs are all ~0, as dQ
    /// for T = 1).
    fn rel(a: &[f32], b: &[f32]) -> f32 {
        let m = b.iter().fold(1f32, |m, x| m.max(x.abs()));
        a.iter().zip(b).fold(0f32, |e, (x, y)| e.max((x - y).abs())) / m
    }

    /// The portable inner loops give the AVX2 ones' results (which tests/kernels_attention.rs checks
    /// against an f64 reference) on every head function: within 1e-5 of each tensor's scale (or of 1), a few
    /// roundings of sums of at most 70 terms apart (FMA against separate multiply and add).
    #[test]
    fn portable_matches_avx2() {
        if !avx2_fma() {
            return;
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for (t, d, causal) in
            [(1, 8, true), (7, 6, true), (33, 32, false), (20, 40, true), (17, 128, false), (70, 16, true)]
        {
            let g = Geo { t, h: 1, d, dp: round_up(d, LANES), causal, scale: 1.0 / (d as f32).sqrt() };
            let (qkv, dout) = (rand(&mut state, t * 3 * d), rand(&mut state, t * d));
            let pack = |src: &[f32], at: (usize, usize)| {
                let mut m = Packed::default();
                m.fill(&g, src, at, true, true);
                m
            };
            let (q, k, v, dor) =
                (pack(&qkv, (0, 3 * d)), pack(&qkv, (d, 3 * d)), pack(&qkv, (2 * d, 3 * d)), pack(&dout, (0, d)));
            let what = format!("t={t} d={d} causal={causal}");

            let fwd = |avx: bool| {
                let (mut o, mut l) = (vec![0f32; t * d], vec![0f32; t]);
                let m = (&q.rows[0][..], &k.panels[0][..], &v.rows[0][..]);
                with_kern!(avx, fwd_head(&g, m, &mut o, &mut l));
                (o, l)
            };
            let ((o, l), (o2, l2)) = (fwd(true), fwd(false));
            assert!(rel(&o2, &o) < 1e-5 && rel(&l2, &l) < 1e-5, "fwd {what}");

            let delta: Vec<f32> = (0..t).map(|i| (0..d).map(|c| dout[i * d + c] * o[i * d + c]).sum()).collect();
            let dq = |avx: bool| {
                let mut dq = vec![0f32; t * d];
                let m = (&q.rows[0][..], &dor.rows[0][..], &k.panels[0][..], &k.rows[0][..], &v.panels[0][..]);
                with_kern!(avx, dq_head(&g, m, (&l, &delta), &mut dq));
                dq
            };
            assert!(rel(&dq(false), &dq(true)) < 1e-5, "dq {what}");

            let dkv = |avx: bool| {
                let (mut dk, mut dv) = (vec![0f32; t * d], vec![0f32; t * d]);
                let m = (
                    &k.rows[0][..],
                    &v.rows[0][..],
                    &q.rows[0][..],
                    &q.panels[0][..],
                    &dor.rows[0][..],
                    &dor.panels[0][..],
                );
                with_kern!(avx, dkv_head(&g, m, (&l, &delta), &mut dk, &mut dv));
                (dk, dv)
            };
            let ((dk, dv), (dk2, dv2)) = (dkv(true), dkv(false));
            assert!(rel(&dk2, &dk) < 1e-5 && rel(&dv2, &dv) < 1e-5, "dkv {what}");
        }
    }
}
