//! Multi-threaded fp32 matrix multiply (SGEMM) on the host: the CPU twins of matmul, conv and attention
//! and the metrics all use it. Device-neutral (rayon and the host CPU only).
//!
//! Scheme (BLIS / GotoBLAS):
//!
//! ```text
//! for jc in 0..n step NC            // B panel columns        (panel lives in L3)
//!   for pc in 0..k step KC          // shared dimension       (one rank-KC update)
//!     pack B[pc.., jc..] -> Bp      // KC x NC, NR-column slivers, zero padded; shared by threads
//!     for ic in 0..m step mc        // PARALLEL over row blocks (rayon), disjoint rows of C
//!       pack A[ic.., pc..] -> Ap    // mc x KC, MR-row slivers, zero padded; per-thread buffer (L2)
//!       for jr in 0..nc step NR     // one B sliver (KC x NR) stays in L1 ...
//!         for ir in 0..mc step MR   // ... while the A slivers stream from L2
//!           micro-kernel: C[ir.., jr..] (+)= Ap sliver * Bp sliver   (MR x NR register tile)
//! ```
//!
//! Packing reads A and B through arbitrary (row, column) strides, so transposed operands cost
//! nothing extra: after packing every micro-kernel sees the same contiguous layout.
//! Edge tiles are packed with zero padding; the kernel computes a full MR x NR tile and only the
//! valid part is written back. Tiny problems skip all of this and use a direct loop.
//!
//! The micro-kernel is 12x32 with AVX-512 (24 zmm accumulators, `avx512`), else 6x16 with AVX2+FMA
//! (12 ymm accumulators + 2 for B + 1 broadcast of A = 15 of the 16 ymm registers), selected once at
//! run time with `is_x86_feature_detected!`; a portable scalar kernel with the 6x16 packing is the
//! fallback (other CPUs / architectures). The packing is generic over the tile (MR x NR). Every
//! kernel sums each element of C over k in the same order (one chain per KC block), so the SIMD
//! kernels agree bit for bit.

use rayon::prelude::*;
use std::cell::Cell;
use std::sync::OnceLock;

/// Strided view of a row-major-or-transposed matrix: element (i, j) is at data[i * rs + j * cs].
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Stride between rows.
    pub rs: usize,
    /// Stride between columns.
    pub cs: usize,
}

// ---------------------------------------------------------------------------------------------
// Block sizes, chosen for AMD EPYC Zen 3 (32 KiB L1d, 512 KiB L2 per core, shared L3):
// * MR x NR = 6 x 16: the largest register tile that fits the 16 ymm registers (see header);
//   12 independent FMA chains cover the 2 FMA pipes x 4-cycle latency (>= 8 needed), and each
//   k step does 12 FMAs for 2 loads + 6 broadcasts, well within the 2-3 loads/cycle budget.
// * KC = 256: one B sliver is KC x NR x 4 B = 16 KiB, half of L1d, leaving room for the A
//   sliver (6 KiB) and C lines; long enough to amortise loading/storing the C tile.
//   (The AVX-512 kernel's 32-wide sliver is 32 KiB, within Zen 5's 48 KiB L1d beside its 12 KiB A sliver.)
// * MC = 144: the packed A block is MC x KC x 4 B = 144 KiB, well inside the 512 KiB L2 with
//   room for the B sliver stream. (Effective mc is then balanced over the threads.)
// * NC = 4096: the packed B panel is KC x NC x 4 B = 4 MiB, sized for the shared L3 (a multiple of
//   every kernel's NR, so that panels split on sliver boundaries); in
//   practice n <= NC for the model's shapes, so B is packed once per KC step.
// ---------------------------------------------------------------------------------------------
const MR: usize = 6;
const NR: usize = 16;
/// The AVX-512 kernel's tile rows (its columns are `avx512::NR` = 32).
#[cfg(target_arch = "x86_64")]
const MR512: usize = 12;
const KC: usize = 256;
const MC: usize = 144;
const NC: usize = 4096;
// Panels and row blocks split on tile boundaries for every kernel.
const _: () = assert!(NC.is_multiple_of(NR) && MC.is_multiple_of(MR));
#[cfg(target_arch = "x86_64")]
const _: () = assert!(NC.is_multiple_of(avx512::NR) && MC.is_multiple_of(MR512));

/// Below this many multiply-adds (m*n*k) the direct loop wins: packing/threading overhead dominates.
const SMALL_WORK: usize = 32 * 32 * 32;
/// Below this many multiply-adds one thread is used (rayon fork/join costs several µs).
const PAR_WORK: usize = 64 * 64 * 64;

/// Which micro-kernel to run on packed panels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Scalar,
    /// Invariant: only constructed after `is_x86_feature_detected!` confirmed avx2 and fma.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// Invariant: only constructed after `is_x86_feature_detected!` confirmed avx512f.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn detect_kernel() -> Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Kernel::Avx2Fma;
            }
        }
        Kernel::Scalar
    })
}

/// How `sgemm_with` computes the product (overridable in tests).
#[derive(Clone, Copy, Debug)]
enum Path {
    Direct,
    Packed(Kernel),
}

/// C (m x n, row stride ldc, column stride 1) = A (m x k) * B (k x n), plus the old C when `accumulate`.
/// Any rs/cs combination must work (covers A, B transposed or not). Panics (assert!) only on slices too short for the given shape/strides.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) {
    let work = m.saturating_mul(n).saturating_mul(k);
    let path = if work < SMALL_WORK { Path::Direct } else { Path::Packed(detect_kernel()) };
    sgemm_with(path, m, n, k, a, b, c, ldc, accumulate);
}

/// Asserts that every element (i, j), i < rows, j < cols, of a strided view lies inside `len`.
fn check_view(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1).checked_mul(rs).zip((cols - 1).checked_mul(cs)).and_then(|(x, y)| x.checked_add(y));
    assert!(
        matches!(last, Some(l) if l < len),
        "sgemm: {what} slice of length {len} too short for {rows}x{cols} with strides ({rs}, {cs})"
    );
}

#[allow(clippy::too_many_arguments)]
fn sgemm_with(
    path: Path,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    check_view("A", a.data.len(), m, k, a.rs, a.cs);
    check_view("B", b.data.len(), k, n, b.rs, b.cs);
    check_view("C", c.len(), m, n, ldc, 1);
    // Rows of C must not overlap: threads write disjoint row blocks.
    assert!(m <= 1 || ldc >= n, "sgemm: ldc ({ldc}) < n ({n})");
    if m == 0 || n == 0 {
        return;
    }
    // With one row the row stride is irrelevant; normalising keeps the chunking below simple.
    let ldc = if m == 1 { n } else { ldc };
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    match path {
        Path::Direct => gemm_direct(m, n, k, a, b, c, ldc, accumulate),
        Path::Packed(kernel) => gemm_packed(kernel, m, n, k, a, b, c, ldc, accumulate),
    }
}

/// Plain triple loop for tiny problems; i-p-j order so the inner loop runs along rows of B and C.
#[allow(clippy::too_many_arguments)]
fn gemm_direct(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) {
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        if !accumulate {
            row.fill(0.0);
        }
        for p in 0..k {
            let aip = a.data[i * a.rs + p * a.cs];
            let brow = p * b.rs;
            if b.cs == 1 {
                for (cj, &bj) in row.iter_mut().zip(&b.data[brow..brow + n]) {
                    *cj += aip * bj;
                }
            } else {
                for (j, cj) in row.iter_mut().enumerate() {
                    *cj += aip * b.data[brow + j * b.cs];
                }
            }
        }
    }
}

// ----------------------------------------- buffers -------------------------------------------

thread_local! {
    // Packing buffers, reused across calls. `take`/`set` instead of RefCell borrows: if this
    // thread re-enters sgemm (e.g. a rayon worker steals another sgemm job while waiting), the
    // nested call simply finds an empty Vec and allocates its own.
    static PACK_A: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static PACK_B: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// A 64-byte-aligned window of `len` floats inside `v` (grown as needed), so that every packed
/// B row of NR = 16 floats is exactly one cache line.
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len + 16 {
        v.resize(len + 16, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(16);
    &mut v[off..off + len]
}

// ----------------------------------------- packing -------------------------------------------

/// Packs one W-wide sliver: `dst[p*W + i] = data[(x0 + i)*sx + (p0 + p)*sp]` for i < w, p < kc,
/// and zero for w <= i < W. For A, x is the row (W = MR, sx = rs, sp = cs); for B, x is the
/// column (W = NR, sx = cs, sp = rs). Full slivers get fixed-width copies the compiler inlines.
#[allow(clippy::too_many_arguments)]
fn pack_sliver<const W: usize>(
    dst: &mut [f32],
    data: &[f32],
    sx: usize,
    sp: usize,
    x0: usize,
    w: usize,
    p0: usize,
    kc: usize,
) {
    let dst = &mut dst[..W * kc];
    if w < W {
        dst.fill(0.0);
    }
    if sx == 1 {
        // The W values of one k step are contiguous (row-major B, transposed A): plain copies.
        for (p, d) in dst.chunks_exact_mut(W).enumerate() {
            let src = &data[(p0 + p) * sp + x0..];
            if w == W {
                d.copy_from_slice(&src[..W]);
            } else {
                d[..w].copy_from_slice(&src[..w]);
            }
        }
    } else if sp == 1 && w == W {
        // Each of the W lines is contiguous along k (row-major A, transposed B): walk all W
        // lines in lockstep so that every write is sequential.
        let lines: [&[f32]; W] = std::array::from_fn(|i| &data[(x0 + i) * sx + p0..][..kc]);
        for (p, d) in dst.chunks_exact_mut(W).enumerate() {
            for (dv, line) in d.iter_mut().zip(&lines) {
                *dv = line[p];
            }
        }
    } else {
        for (p, d) in dst.chunks_exact_mut(W).enumerate() {
            for (i, dv) in d[..w].iter_mut().enumerate() {
                *dv = data[(x0 + i) * sx + (p0 + p) * sp];
            }
        }
    }
}

/// Packs rows i0..i0+rows, columns p0..p0+kc of A into consecutive MR-row slivers.
fn pack_a<const MR: usize>(dst: &mut [f32], a: MatRef, i0: usize, rows: usize, p0: usize, kc: usize) {
    for (s, sliver) in dst.chunks_exact_mut(MR * kc).take(rows.div_ceil(MR)).enumerate() {
        let mr = MR.min(rows - s * MR);
        pack_sliver::<MR>(sliver, a.data, a.rs, a.cs, i0 + s * MR, mr, p0, kc);
    }
}

/// Where the packed path reads B from: a strided matrix, or a gather (implicit im2col).
trait PackB: Sync {
    /// Packs rows p0..p0+kc, columns j0..j0+w (w <= W) into `dst` [kc][W], zero for columns w..W.
    fn pack<const W: usize>(&self, dst: &mut [f32], p0: usize, kc: usize, j0: usize, w: usize);
    /// Run the whole product on the calling thread (its caller already keeps the threads busy).
    fn serial(&self) -> bool {
        false
    }
}

impl PackB for MatRef<'_> {
    fn pack<const W: usize>(&self, dst: &mut [f32], p0: usize, kc: usize, j0: usize, w: usize) {
        pack_sliver::<W>(dst, self.data, self.cs, self.rs, j0, w, p0, kc);
    }
}

// ------------------------------------------ driver -------------------------------------------

/// The blocked product with `kernel`'s tile.
#[allow(clippy::too_many_arguments)]
fn gemm_packed(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => gemm_blocked::<MR512, { avx512::NR }, _>(kernel, m, n, k, a, &b, c, ldc, accumulate),
        _ => gemm_blocked::<MR, NR, _>(kernel, m, n, k, a, &b, c, ldc, accumulate),
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_blocked<const MR: usize, const NR: usize, B: PackB>(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: &B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && !b.serial() && m > MR && m.saturating_mul(n).saturating_mul(k) >= PAR_WORK;

    // Row blocks: at most MC rows, and (when parallel) a multiple of the thread count so that
    // every thread gets the same amount of work. Splitting M (not N) lets all threads share one
    // packed B panel while each packs only its own rows of A, so nothing is packed twice, and
    // threads own disjoint rows of C (plain `par_chunks_mut`, no shared mutable pointers).
    let mut blocks = m.div_ceil(MC);
    if parallel {
        blocks = blocks.div_ceil(threads) * threads;
    }
    let mc = m.div_ceil(blocks).next_multiple_of(MR).min(MC);
    let c = &mut c[..(m - 1) * ldc + n];

    // One row block per thread and several rank-KC steps (a short, deep product: a weight gradient
    // Xᵀ·dY over many tokens): each thread packs its own copy of each B panel and runs every step
    // of its block, so the product is one fork-join instead of two per step (a worker that wakes
    // late for one of those joins held the whole product back to below one thread's speed). The
    // duplicated packing is kc·n per step against mc·kc·n multiply-adds; the arithmetic, and so
    // the result, is the shared path's.
    if parallel && blocks == threads && k > KC {
        c.par_chunks_mut(mc * ldc).enumerate().for_each(|(blk, cb)| {
            let mut bbuf = PACK_B.take();
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let bp = aligned(&mut bbuf, nc.div_ceil(NR) * NR * kc);
                    bp.chunks_mut(NR * kc).enumerate().for_each(|(s, d)| pack_b::<NR, B>(b, d, jc, s, pc, kc, n));
                    let step = Step { kernel, a, m, n, mc, jc, pc, kc, ldc, acc: accumulate || pc > 0 };
                    step.block::<MR, NR>(bp, blk, cb);
                }
            }
            PACK_B.set(bbuf);
        });
        return;
    }

    let mut bbuf = PACK_B.take();
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let slivers = nc.div_ceil(NR);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // Only the first rank-KC update may overwrite C.
            let acc = accumulate || pc > 0;

            let bp = aligned(&mut bbuf, slivers * NR * kc);
            let pack = |(s, d): (usize, &mut [f32])| pack_b::<NR, B>(b, d, jc, s, pc, kc, n);
            if parallel {
                bp.par_chunks_mut(NR * kc).enumerate().with_min_len(4).for_each(pack);
            } else {
                bp.chunks_mut(NR * kc).enumerate().for_each(pack);
            }
            let bp: &[f32] = bp;
            let step = Step { kernel, a, m, n, mc, jc, pc, kc, ldc, acc };
            if parallel {
                c.par_chunks_mut(mc * ldc).enumerate().for_each(|(blk, cb)| step.block::<MR, NR>(bp, blk, cb));
            } else {
                c.chunks_mut(mc * ldc).enumerate().for_each(|(blk, cb)| step.block::<MR, NR>(bp, blk, cb));
            }
        }
    }
    PACK_B.set(bbuf);
}

/// Packs sliver `s` of the B panel at columns jc.., rows pc..pc+kc into `d` (NR·kc floats).
#[allow(clippy::too_many_arguments)]
fn pack_b<const NR: usize, B: PackB>(b: &B, d: &mut [f32], jc: usize, s: usize, pc: usize, kc: usize, n: usize) {
    let j0 = jc + s * NR;
    b.pack::<NR>(&mut d[..NR * kc], pc, kc, j0, NR.min(n - j0));
}

/// One rank-KC step of the blocked product: its panel of B is packed, each row block of C adds
/// A's rows times it.
#[derive(Clone, Copy)]
struct Step<'a> {
    kernel: Kernel,
    a: MatRef<'a>,
    m: usize,
    n: usize,
    mc: usize,
    jc: usize,
    pc: usize,
    kc: usize,
    ldc: usize,
    /// Add into C (every step but a non-accumulating product's first).
    acc: bool,
}

impl Step<'_> {
    /// Row block `blk` (C's rows from blk·mc, `cb`) += its rows of A times the packed panel `bp`.
    fn block<const MR: usize, const NR: usize>(&self, bp: &[f32], blk: usize, cb: &mut [f32]) {
        let i0 = blk * self.mc;
        let rows = self.mc.min(self.m - i0);
        let mut abuf = PACK_A.take();
        let ap = aligned(&mut abuf, rows.next_multiple_of(MR) * self.kc);
        pack_a::<MR>(ap, self.a, i0, rows, self.pc, self.kc);
        for (s, bs) in bp.chunks_exact(NR * self.kc).enumerate() {
            let j = self.jc + s * NR;
            let nr = NR.min(self.n - j);
            for (t, as_) in ap.chunks_exact(MR * self.kc).enumerate() {
                let mr = MR.min(rows - t * MR);
                let ct = &mut cb[t * MR * self.ldc + j..];
                micro_tile::<MR, NR>(self.kernel, self.kc, as_, bs, ct, self.ldc, mr, nr, self.acc);
            }
        }
        PACK_A.set(abuf);
    }
}

/// C tile (mr x nr valid, row stride ldc) (+)= A sliver (MR x kc) * B sliver (kc x NR).
#[allow(clippy::too_many_arguments)]
#[inline]
fn micro_tile<const MR: usize, const NR: usize>(
    kernel: Kernel,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    acc: bool,
) {
    // These bounds make the raw-pointer accesses in the SIMD kernel sound.
    assert!(a.len() >= MR * kc && b.len() >= NR * kc);
    assert!((1..=MR).contains(&mr) && (1..=NR).contains(&nr) && c.len() >= (mr - 1) * ldc + nr);
    match kernel {
        Kernel::Scalar => kernel_scalar::<MR, NR>(kc, a, b, c, ldc, mr, nr, acc),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma => {
            assert!(MR == 6 && NR == 16, "the AVX2 kernel packs 6x16 tiles");
            // SAFETY: Kernel::Avx2Fma is only constructed after runtime detection of avx2 and fma;
            // the tile is its own (asserted).
            unsafe { avx2::kernel_6x16(kc, a, b, c, ldc, mr, nr, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            assert!(NR == avx512::NR, "the AVX-512 kernel packs 32-column tiles");
            // SAFETY: Kernel::Avx512 is only constructed after runtime detection of avx512f; the
            // tile's columns are its own (asserted).
            unsafe { avx512::kernel_x32::<MR>(kc, a, b, c, ldc, mr, nr, acc) }
        }
    }
}

/// Writes a computed MR x NR tile into C (only the valid mr x nr part).
#[inline]
fn store_tile<const MR: usize, const NR: usize>(
    t: &[[f32; NR]; MR],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    acc: bool,
) {
    for (i, trow) in t.iter().enumerate().take(mr) {
        let crow = &mut c[i * ldc..i * ldc + nr];
        if acc {
            crow.iter_mut().zip(trow).for_each(|(c, t)| *c += t);
        } else {
            crow.copy_from_slice(&trow[..nr]);
        }
    }
}

/// Portable micro-kernel: same packed layout, plain arrays the compiler can vectorise.
#[allow(clippy::too_many_arguments)]
fn kernel_scalar<const MR: usize, const NR: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    acc: bool,
) {
    let mut t = [[0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (trow, &ai) in t.iter_mut().zip(ap) {
            for (tv, &bj) in trow.iter_mut().zip(bp) {
                *tv += ai * bj;
            }
        }
    }
    store_tile(&t, c, ldc, mr, nr, acc);
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

mod gather;
pub use gather::{sgemm_gather, Gather};

#[cfg(test)]
mod tests;
