//! Memory-bound elementwise loops (one cheap operation per 12 bytes moved): when to split them across
//! threads, and stores that bypass the caches for outputs too big to stay there.

/// Smallest piece of a memory-bound loop given to one thread. Below 2^20 elements (12 MB moved by a
/// binary op) one core streams the tensor as fast as two and a second thread only adds its wake-up:
/// on the 2-core machine of docs/benchmarks.md a 2^20-element add takes 0.100 ms on one thread and
/// 0.112 ms on two, and 0.013 ms against 0.026 ms at 2^17 elements.
pub const STREAM_CHUNK: usize = 1 << 20;

/// Outputs of at least this many elements (8 MB) are written with non-temporal stores: an output
/// that size leaves the caches before most consumers read it anyway, and bypassing them skips reading
/// each output line before writing it (a third of a binary op's traffic). On the machine above a
/// 2^21-element add took 0.25 ms instead of 0.30–0.48 ms on one thread, 2^22 elements 0.79–0.86 ms
/// instead of 1.02; at 2^20 elements (12 MB moved, within its 32 MB L3) they gave no gain.
pub const STREAM_STORES_MIN: usize = 1 << 21;

/// Elements per block: computed into a buffer that stays in L1, then stored in whole cache lines.
const BLOCK: usize = 256;

#[repr(C, align(64))]
struct Block([f32; BLOCK]);

/// Fills `out` by `fill(start, part)` (writing `out[start..start + part.len()]`'s values into `part`),
/// with non-temporal stores for the cache-line-aligned middle. The values are `fill`'s, so they are
/// the same as filling `out` in one call; `#[inline(always)]` so `fill` is compiled with the caller's
/// target features.
#[inline(always)]
pub fn fill_streaming(out: &mut [f32], mut fill: impl FnMut(usize, &mut [f32])) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_load_ps, _mm_sfence, _mm_stream_ps};
        let n = out.len();
        let head = out.as_ptr().align_offset(64).min(n);
        fill(0, &mut out[..head]);
        let mut tmp = Block([0.0; BLOCK]);
        let mut i = head;
        while i + BLOCK <= n {
            fill(i, &mut tmp.0);
            for k in (0..BLOCK).step_by(4) {
                // SAFETY: out[i..i + BLOCK] is in bounds and 64-byte aligned (i - head is a multiple
                // of BLOCK), tmp is 64-byte aligned; SSE is part of x86-64.
                unsafe { _mm_stream_ps(out.as_mut_ptr().add(i + k), _mm_load_ps(tmp.0.as_ptr().add(k))) };
            }
            i += BLOCK;
        }
        fill(i, &mut out[i..]);
        // Non-temporal stores are weakly ordered: fence them before another thread reads the output.
        // SAFETY: SSE is part of x86-64.
        unsafe { _mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    fill(0, out);
}
