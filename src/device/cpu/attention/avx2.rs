//! The AVX2 + FMA inner loops. Each `Kern` method checks the bounds its raw-pointer loop relies on.
//! Loads and stores go through `ld8` / `st8` (an unaligned read of a packed struct): the intrinsics'
//! own unaligned loads copy through memory when debug assertions are on.

use super::kern::{Kern, EXP_POLY, LN2_HI, LN2_LO, ROUND};
use super::{KW, LANES, R};
use std::arch::x86_64::*;

/// The AVX2 + FMA inner loops; made only after run-time detection of both.
pub(super) struct Avx2;

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
