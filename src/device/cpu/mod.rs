//! The CPU backend: one twin per shader family, same names, same binding order as the WGSL, each
//! running a whole dispatch on the host with rayon. Each file reads side by side with its shader.

pub mod conv;
pub mod diffusion;
pub mod dropout;
pub mod elementwise;
pub mod fastmath;
pub mod gemm;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod rng;
pub mod sample;
pub mod softmax;

use rayon::prelude::*;

/// Elements per parallel task: big enough that rayon's per-task cost vanishes, small enough that both
/// cores get work on mid-sized tensors.
pub const CHUNK: usize = 1 << 14;

/// Runs `f(start_index, chunk)` over `out` in parallel chunks.
pub fn par_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() <= CHUNK {
        f(0, out);
    } else {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, ch)| f(c * CHUNK, ch));
    }
}
