//! CPU twin of shaders/dropout.wgsl, on the same Philox functions (host::philox), so the mask is
//! bit-identical to the GPU's.

use super::par_chunks;
use super::CpuArgs;
use crate::host::philox::{add64, block_of, lane_of, mul32x32, uniform4};
use crate::kernels::dropout::DropoutParams;

/// The shader's `step_base`: offset + step * stride in 64 bits (wrapping), as (lo, hi).
pub fn step_base(p: &DropoutParams, step: u32) -> [u32; 2] {
    let prod = mul32x32(step, p.stride);
    let b = add64(p.offset, prod.0);
    [b[0], b[1].wrapping_add(prod.1)]
}

/// The shader's `apply` over the whole dispatch. Element i uses `rng_uniform_at(seed, base, i)`, which is
/// lane `lane_of(base, i)` of block `block_of(base, i)`; each chunk computes a block's words once and
/// takes its lanes in order (the values are those of `rng::uniform_at`).
fn apply(args: &mut CpuArgs) {
    let p: DropoutParams = args.params();
    let (src, step) = (args.f32_in(0), args.u32_in(1));
    let dst = args.f32_out(0);
    let base = step_base(&p, step[0]);
    par_chunks(&mut dst[..p.n as usize], |s, ch| {
        let mut cached: Option<([u32; 2], [f32; 4])> = None;
        for (k, o) in ch.iter_mut().enumerate() {
            let i = (s + k) as u32;
            let b = block_of(base, i);
            let u4 = match cached {
                Some((cb, u4)) if cb == b => u4,
                _ => {
                    let u4 = uniform4(p.seed, b);
                    cached = Some((b, u4));
                    u4
                }
            };
            let u = u4[lane_of(base, i)];
            *o = if u >= p.p { src[i as usize] * p.scale } else { 0.0 };
        }
    });
}

/// Bindings: params, x (read), step (read, u32, one word), out (read_write).
pub fn dropout_fwd(args: &mut CpuArgs) {
    apply(args);
}

/// Bindings: params, dy (read), step (read, u32, one word), dx (read_write).
pub fn dropout_bwd(args: &mut CpuArgs) {
    apply(args);
}
