//! The 6x16 AVX2+FMA micro-kernel of the host SGEMM (see the module header of `host::gemm`).

use super::{store_tile, MR, NR};
use std::arch::x86_64::*;

/// 6x16 AVX2+FMA micro-kernel.
///
/// Safety: the caller must ensure avx2 and fma are available, `a.len() >= 6*kc`,
/// `b.len() >= 16*kc`, 1 <= mr <= 6, 1 <= nr <= 16 and `c.len() >= (mr-1)*ldc + nr`
/// (checked by `micro_tile`). All pointer reads stay in the first 6*kc / 16*kc elements of
/// a / b; C is read/written through pointers only for a full 6x16 tile, which those bounds
/// cover; partial tiles go through a stack buffer and safe slices.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel_6x16(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    acc: bool,
) {
    // Start pulling the C tile into cache now; it is only needed after the k loop, and for
    // large matrices it is far away (L3/DRAM): without this every tile stalls at the end.
    if mr == MR && nr == NR {
        let cp = c.as_ptr();
        for i in 0..MR {
            // wrapping_add: computing the address is safe; prefetch never faults.
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(i * ldc + NR - 1) as *const i8);
        }
    }
    let mut ap = a.as_ptr();
    let mut bp = b.as_ptr();
    let mut c00 = _mm256_setzero_ps();
    let mut c01 = _mm256_setzero_ps();
    let mut c10 = _mm256_setzero_ps();
    let mut c11 = _mm256_setzero_ps();
    let mut c20 = _mm256_setzero_ps();
    let mut c21 = _mm256_setzero_ps();
    let mut c30 = _mm256_setzero_ps();
    let mut c31 = _mm256_setzero_ps();
    let mut c40 = _mm256_setzero_ps();
    let mut c41 = _mm256_setzero_ps();
    let mut c50 = _mm256_setzero_ps();
    let mut c51 = _mm256_setzero_ps();
    // SAFETY: iteration p reads a[6p..6p+6] and b[16p..16p+16], p < kc (bounds above).
    unsafe {
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            let x = _mm256_broadcast_ss(&*ap);
            c00 = _mm256_fmadd_ps(x, b0, c00);
            c01 = _mm256_fmadd_ps(x, b1, c01);
            let x = _mm256_broadcast_ss(&*ap.add(1));
            c10 = _mm256_fmadd_ps(x, b0, c10);
            c11 = _mm256_fmadd_ps(x, b1, c11);
            let x = _mm256_broadcast_ss(&*ap.add(2));
            c20 = _mm256_fmadd_ps(x, b0, c20);
            c21 = _mm256_fmadd_ps(x, b1, c21);
            let x = _mm256_broadcast_ss(&*ap.add(3));
            c30 = _mm256_fmadd_ps(x, b0, c30);
            c31 = _mm256_fmadd_ps(x, b1, c31);
            let x = _mm256_broadcast_ss(&*ap.add(4));
            c40 = _mm256_fmadd_ps(x, b0, c40);
            c41 = _mm256_fmadd_ps(x, b1, c41);
            let x = _mm256_broadcast_ss(&*ap.add(5));
            c50 = _mm256_fmadd_ps(x, b0, c50);
            c51 = _mm256_fmadd_ps(x, b1, c51);
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    let rows = [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]];
    if mr == MR && nr == NR {
        let cp = c.as_mut_ptr();
        // SAFETY: full tile: element (i, j) at i*ldc + j <= 5*ldc + 15 < c.len().
        unsafe {
            for (i, [lo, hi]) in rows.into_iter().enumerate() {
                let p = cp.add(i * ldc);
                let (mut lo, mut hi) = (lo, hi);
                if acc {
                    lo = _mm256_add_ps(lo, _mm256_loadu_ps(p));
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(p.add(8)));
                }
                _mm256_storeu_ps(p, lo);
                _mm256_storeu_ps(p.add(8), hi);
            }
        }
    } else {
        let mut t = [[0f32; NR]; MR];
        for (trow, [lo, hi]) in t.iter_mut().zip(rows) {
            // SAFETY: each row of t holds 16 floats.
            unsafe {
                _mm256_storeu_ps(trow.as_mut_ptr(), lo);
                _mm256_storeu_ps(trow.as_mut_ptr().add(8), hi);
            }
        }
        store_tile(&t, c, ldc, mr, nr, acc);
    }
}
