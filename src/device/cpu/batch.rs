//! CPU twin of shaders/batch.wgsl, on the same Philox functions (host::philox), so the windows are
//! identical to the GPU's.

use rayon::prelude::*;

use super::CpuArgs;
use crate::host::philox::{bits_at, mul32x32};
use crate::kernels::batch::WindowParams;

/// The shader's `byte_at`: byte p of the little-endian packed corpus.
fn byte_at(corpus: &[u32], p: u32) -> u32 {
    (corpus[(p >> 2) as usize] >> ((p & 3) * 8)) & 0xFF
}

/// The shader's `window_start`: start + (element b of stream (seed, step * stride)) % span.
pub fn window_start(p: &WindowParams, step: u32, b: u32) -> u32 {
    let (lo, hi) = mul32x32(step, p.stride);
    p.start.wrapping_add(bits_at(p.seed, [lo, hi], b) % p.span)
}

/// Bindings: params, corpus (read, u32), step (read, u32, one word), x (read_write, u32),
/// y (read_write, u32). One window per row, its start computed once.
pub fn text_windows(args: &mut CpuArgs) {
    let p: WindowParams = args.params();
    let (corpus, step) = (args.u32_in(0), args.u32_in(1));
    let xo = args.u32_out(0);
    let yo = args.u32_out(1);
    let (b, t) = (p.batch as usize, p.context as usize);
    if b == 0 || t == 0 {
        return;
    }
    let step = step[0];
    xo[..b * t].par_chunks_mut(t).zip(yo[..b * t].par_chunks_mut(t)).enumerate().for_each(|(row, (xr, yr))| {
        let o = window_start(&p, step, row as u32);
        for (k, (xv, yv)) in xr.iter_mut().zip(yr.iter_mut()).enumerate() {
            let q = o + k as u32;
            *xv = byte_at(corpus, q);
            *yv = byte_at(corpus, q + 1);
        }
    });
}
