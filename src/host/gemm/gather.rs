//! B read through a gather: element (p, j) = data[rows[p] + cols[j]]. A convolution's im2col matrix is
//! such a B (rows: the filter taps' offsets, cols: the output pixels' offsets in a zero-padded image),
//! so the packed SGEMM packs its B panels straight from the image, with no col matrix in between.

#[cfg(target_arch = "x86_64")]
use super::{avx512, Kernel, MR512};
use super::{check_view, detect_kernel, gemm_blocked, MatRef, PackB, MR};

/// B as a gather: element (p, j) is `data[rows[p] + cols[j]]`.
#[derive(Clone, Copy, Debug)]
pub struct Gather<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Offset of each row (k index).
    pub rows: &'a [u32],
    /// Offset of each column (n index).
    pub cols: &'a [u32],
    /// Run on the calling thread only: the caller runs several products in parallel.
    pub serial: bool,
}

impl PackB for Gather<'_> {
    fn pack<const W: usize>(&self, dst: &mut [f32], p0: usize, kc: usize, j0: usize, w: usize) {
        let dst = &mut dst[..W * kc];
        let (rows, cols) = (&self.rows[p0..p0 + kc], &self.cols[j0..j0 + w]);
        #[cfg(target_arch = "x86_64")]
        if W == avx512::NR && detect_kernel() == Kernel::Avx512 && self.data.len() <= i32::MAX as usize {
            // SAFETY: avx512f was detected; sgemm_gather checked max(rows) + max(cols) < data.len(), so
            // every column offset fits the gather's signed 32-bit indices.
            return unsafe { avx512::pack_gather(dst, self.data, rows, cols) };
        }
        if w < W {
            dst.fill(0.0);
        }
        for (d, &r) in dst.chunks_exact_mut(W).zip(rows) {
            let line = &self.data[r as usize..];
            for (dv, &o) in d.iter_mut().zip(cols) {
                // SAFETY: sgemm_gather checked max(rows) + max(cols) < data.len() and line starts at a row.
                *dv = unsafe { *line.get_unchecked(o as usize) };
            }
        }
    }
    fn serial(&self) -> bool {
        self.serial
    }
}

/// C (m x n, row stride ldc) = A (m x k) * B (k x n, gathered), plus the old C when `accumulate`: the
/// same sums, in the same order, as `sgemm` on the materialised B. Panics (assert!) when `rows` or
/// `cols` is shorter than k or n, or a gathered offset falls outside `data`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_gather(m: usize, n: usize, k: usize, a: MatRef, b: Gather, c: &mut [f32], ldc: usize, accumulate: bool) {
    assert!(b.rows.len() >= k && b.cols.len() >= n, "sgemm_gather: {k} rows / {n} columns of offsets needed");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // Nothing is gathered: the strided path zeroes C (or leaves it).
        return super::sgemm(m, n, 0, a, MatRef { data: &[], rs: 0, cs: 0 }, c, ldc, accumulate);
    }
    let top = b.rows[..k].iter().max().copied().unwrap_or(0) as usize
        + b.cols[..n].iter().max().copied().unwrap_or(0) as usize;
    assert!(top < b.data.len(), "sgemm_gather: offset {top} outside data of length {}", b.data.len());
    check_view("A", a.data.len(), m, k, a.rs, a.cs);
    check_view("C", c.len(), m, n, ldc, 1);
    assert!(m <= 1 || ldc >= n, "sgemm_gather: ldc ({ldc}) < n ({n})");
    let ldc = if m == 1 { n } else { ldc };
    match detect_kernel() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => gemm_blocked::<MR512, { avx512::NR }, _>(Kernel::Avx512, m, n, k, a, &b, c, ldc, accumulate),
        kernel => gemm_blocked::<MR, { super::NR }, _>(kernel, m, n, k, a, &b, c, ldc, accumulate),
    }
}
