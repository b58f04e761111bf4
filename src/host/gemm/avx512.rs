//! The AVX-512 micro-kernel of the host SGEMM (see the module header of `host::gemm`): MR x 32 tiles,
//! two zmm accumulators per row. With 32 zmm registers, MR = 12 keeps 24 accumulators, the two B
//! vectors and a broadcast in registers; 24 independent FMA chains cover two 512-bit FMA pipes at
//! 4-cycle latency three times over, and each k step issues 24 FMAs for 2 loads + 12 broadcasts.
//!
//! Each element of C is the same FMA chain over k as in the 6x16 AVX2 kernel (one lane, k in order,
//! then added to the old C), so the two kernels give bit-identical results.

use std::arch::x86_64::*;

/// Columns of the tile: two 16-lane vectors.
pub(super) const NR: usize = 32;

/// MR x 32 AVX-512 micro-kernel.
///
/// Safety: the caller must ensure avx512f is available, `a.len() >= MR*kc`, `b.len() >= 32*kc`,
/// 1 <= mr <= MR, 1 <= nr <= 32 and `c.len() >= (mr-1)*ldc + nr` (checked by `micro_tile`). All
/// pointer reads stay in the first MR*kc / 32*kc elements of a / b; C is read and written only at
/// (i, j) with i < mr, j < nr (masked loads and stores for a partial tile), which those bounds cover.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel_x32<const MR: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    acc: bool,
) {
    // Pull the C tile into cache during the k loop (see the AVX2 kernel).
    let cp = c.as_mut_ptr();
    for i in 0..mr {
        // wrapping_add: computing the address is safe; prefetch never faults.
        _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(i * ldc + nr - 1) as *const i8);
    }
    let mut t = [[_mm512_setzero_ps(); 2]; MR];
    let mut ap = a.as_ptr();
    let mut bp = b.as_ptr();
    // SAFETY: iteration p reads a[MR*p..MR*p+MR] and b[32p..32p+32], p < kc (bounds above).
    unsafe {
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (i, ti) in t.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ap.add(i));
                ti[0] = _mm512_fmadd_ps(x, b0, ti[0]);
                ti[1] = _mm512_fmadd_ps(x, b1, ti[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    // Lane masks of the valid columns in each half (all ones for a full tile).
    let bits = if nr >= NR { u32::MAX } else { (1u32 << nr) - 1 };
    let (m0, m1) = (bits as u16, (bits >> 16) as u16);
    for (i, [lo, hi]) in t.into_iter().enumerate().take(mr) {
        // SAFETY: row i < mr; the masks cover columns < nr only, so every touched element is at
        // i*ldc + j <= (mr-1)*ldc + nr - 1 < c.len(). Masked-off lanes are neither read nor written.
        unsafe {
            let p = cp.add(i * ldc);
            let (mut lo, mut hi) = (lo, hi);
            if acc {
                lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(m0, p));
                hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)));
            }
            _mm512_mask_storeu_ps(p, m0, lo);
            _mm512_mask_storeu_ps(p.wrapping_add(16), m1, hi);
        }
    }
}
