//! CPU twin of shaders/cast.wgsl. Stores round to nearest, ties to even (`host::f16`); the shader's
//! pack2x16float may round an inexact value either way, so the two agree within one f16 ulp.

use super::{par_chunks, CpuArgs};
use crate::host::f16;
use crate::kernels::cast::CastParams;

/// Bindings: params, x (f32, read), y (f16 pairs, read_write). Word w packs elements 2w and 2w+1.
pub fn cast_f32_to_f16(args: &mut CpuArgs) {
    let p: CastParams = args.params();
    let n = p.n as usize;
    let x = args.f32_in(0);
    let y = args.u32_out(0);
    par_chunks(&mut y[..f16::words(n)], |s, ch| {
        let lo = 2 * s;
        let hi = (lo + 2 * ch.len()).min(n);
        ch.copy_from_slice(&f16::pack(&x[lo..hi]));
    });
}

/// Bindings: params, x (f16 pairs, read), y (f32, read_write).
pub fn cast_f16_to_f32(args: &mut CpuArgs) {
    let p: CastParams = args.params();
    let x = args.u32_in(0);
    let y = args.f32_out(0);
    par_chunks(&mut y[..p.n as usize], |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = f16::get(x, s + k);
        }
    });
}
