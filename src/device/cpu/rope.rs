//! CPU twin of shaders/rope.wgsl: the same products in the same order, so the engines agree to the ulp
//! (up to the GPU's fused multiply-adds). The GPU computes one output element per invocation; here a
//! task takes whole rows and turns each head's pairs in one pass, with no index division per element
//! (the per-element form cost more than the rest of a GPT layer's elementwise work).

use rayon::prelude::*;

use super::{simd, CpuArgs, CHUNK};
use crate::kernels::rope::RopeParams;

/// Bindings: params, x (read), table (read), out (read_write).
pub fn rope_qkv(args: &mut CpuArgs) {
    let p: RopeParams = args.params();
    let (x, table) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    let (n, t, c, hd) = (p.n as usize, p.t as usize, p.c as usize, p.hd as usize);
    if n == 0 || hd == 0 {
        return;
    }
    let (w, half) = (3 * c, hd / 2);
    // Whole rows per task (ops::rope checked n = B·T·3C).
    let per = (CHUNK / w).max(1) * w;
    out[..n].par_chunks_mut(per).enumerate().for_each(|(task, ch)| {
        simd(|| {
            let first = task * per / w;
            for (k, orow) in ch.chunks_mut(w).enumerate() {
                let r = first + k;
                let xrow = &x[r * w..(r + 1) * w];
                let pos = r % t;
                let angles = &table[pos * half * 2..(pos + 1) * half * 2];
                // q's heads then k's: 2C / D of them; v (the last C) is copied.
                for base in (0..2 * c).step_by(hd) {
                    for j in 0..half {
                        let cs = angles[2 * j];
                        let sn = p.sign * angles[2 * j + 1];
                        let (x1, x2) = (xrow[base + j], xrow[base + j + half]);
                        orow[base + j] = x1 * cs - x2 * sn;
                        orow[base + j + half] = x2 * cs + x1 * sn;
                    }
                }
                orow[2 * c..].copy_from_slice(&xrow[2 * c..]);
            }
        })
    });
}
