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

/// Packs a 32-wide B sliver through a gather: `dst[p*32 + j] = data[rows[p] + cols[j]]` for j < cols.len(),
/// zero for the columns beyond. Where each 16-column half spans under 32 consecutive floats (runs of an
/// image row: a stride-1 row, or a stride phase of a strided one), a row's half is two plain loads and
/// one permute; otherwise two 16-lane gathers per row, their indices held in registers for the sliver.
///
/// Safety: the caller must ensure avx512f is available, `dst.len() >= 32 * rows.len()`,
/// `cols.len() <= 32`, `data.len() <= i32::MAX` and `r + c < data.len()` for every r in rows, c in cols.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_gather(dst: &mut [f32], data: &[f32], rows: &[u32], cols: &[u32]) {
    let w = cols.len();
    assert!(w <= NR && dst.len() >= NR * rows.len());
    let mut idx = [0i32; NR];
    for (i, &c) in idx.iter_mut().zip(cols) {
        *i = c as i32;
    }
    let bits = if w >= NR { u32::MAX } else { (1u32 << w) - 1 };
    let masks = [bits as u16, (bits >> 16) as u16];
    // Per half: the first offset and every lane's distance from it, when all lie in a 32-float window
    // that stays inside data for every row.
    let top = rows.iter().max().map_or(0, |&r| r as usize);
    let window = |h: usize| -> Option<(usize, [i32; 16])> {
        let lanes = &cols[(16 * h).min(w)..(16 * h + 16).min(w)];
        let lo = *lanes.iter().min()?;
        let mut rel = [0i32; 16];
        for (r, &c) in rel.iter_mut().zip(lanes) {
            *r = (c - lo) as i32;
        }
        let fits = lanes.iter().all(|&c| c - lo < 32) && top + lo as usize + 32 <= data.len();
        fits.then_some((lo as usize, rel))
    };
    let wins = [window(0), window(1)];
    let base = data.as_ptr();
    // SAFETY (all vector loads below): the index vectors come from the stack arrays; a window's two
    // loads read data[r + lo .. r + lo + 32] with r + lo + 32 <= data.len() (checked above); gathers
    // read only their enabled lanes, each at r + cols[j] < data.len(); row p's stores land in dst.
    unsafe {
        let gidx = [_mm512_loadu_si512(idx.as_ptr() as *const _), _mm512_loadu_si512(idx.as_ptr().add(16) as *const _)];
        let perm = wins.map(|o| o.map(|(lo, rel)| (lo, _mm512_loadu_si512(rel.as_ptr() as *const _))));
        for (p, &r) in rows.iter().enumerate() {
            let line = base.add(r as usize);
            let d = dst.as_mut_ptr().add(p * NR);
            for h in 0..2 {
                let v = match perm[h] {
                    Some((lo, pi)) => {
                        let at = line.add(lo);
                        _mm512_maskz_permutex2var_ps(masks[h], _mm512_loadu_ps(at), pi, _mm512_loadu_ps(at.add(16)))
                    }
                    None => _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), masks[h], gidx[h], line),
                };
                _mm512_storeu_ps(d.add(16 * h), v);
            }
        }
    }
}
