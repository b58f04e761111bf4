//! The CPU backend: one twin per shader family, same names, same binding order as the WGSL, each
//! running a whole dispatch on the host with rayon. Each file reads side by side with its shader.

pub mod attention;
pub mod batch;
pub mod chnorm;
pub mod conv;
pub mod diffusion;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod fastmath;
pub mod gemm;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod rng;
pub mod sample;
pub mod softmax;

use rayon::prelude::*;

/// Elements per parallel task: big enough that rayon's per-task cost vanishes, small enough that both
/// cores get work on mid-sized tensors.
pub const CHUNK: usize = 1 << 14;

/// Runs `f(start_index, chunk)` over `out` in parallel chunks, each under `simd`.
pub fn par_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() <= CHUNK {
        simd(|| f(0, out));
    } else {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, ch)| simd(|| f(c * CHUNK, ch)));
    }
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them (checked once), else as is. The build
/// targets baseline x86-64 (SSE2) so the binary runs anywhere; a loop inlined into `f` is vectorized
/// 8 lanes wide here instead of 4. Rust never contracts a·b + c into an FMA on its own, so both paths
/// round identically.
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

/// Whether this CPU has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
