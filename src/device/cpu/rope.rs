//! CPU twin of shaders/rope.wgsl: the same products in the same order, so the engines agree to the ulp
//! (up to the GPU's fused multiply-adds).

use super::{par_chunks, CpuArgs};
use crate::kernels::rope::RopeParams;

/// Bindings: params, x (read), table (read), out (read_write).
pub fn rope_qkv(args: &mut CpuArgs) {
    let p: RopeParams = args.params();
    let (x, table) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    let (n, t, c, hd) = (p.n as usize, p.t as usize, p.c as usize, p.hd as usize);
    if n == 0 {
        return;
    }
    let (w, half) = (3 * c, hd / 2);
    par_chunks(&mut out[..n], |start, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            let i = start + k;
            let (r, col) = (i / w, i % w);
            if col >= 2 * c {
                *o = x[i];
                continue;
            }
            let d = col % hd;
            let j = d % half;
            let base = i - d;
            let pos = r % t;
            let cs = table[(pos * half + j) * 2];
            let sn = p.sign * table[(pos * half + j) * 2 + 1];
            let (x1, x2) = (x[base + j], x[base + j + half]);
            *o = if d < half { x1 * cs - x2 * sn } else { x2 * cs + x1 * sn };
        }
    });
}
