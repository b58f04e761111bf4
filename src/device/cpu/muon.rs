//! CPU twin of shaders/muon.wgsl: the same formulas in the same order, so the twins match the shaders
//! to rounding (the norm's partial sums are added in the shader's order).

use rayon::prelude::*;

use super::CpuArgs;
use super::{par_chunks, CHUNK};
use crate::kernels::muon::{AxpbyParams, MuonMomentumParams, MuonNormalizeParams};

/// Bindings: params, grad (read), clip (read), momentum (read_write), out (read_write).
pub fn muon_momentum(args: &mut CpuArgs) {
    let p: MuonMomentumParams = args.params();
    let n = p.n as usize;
    let grad = args.f32_in(0);
    let scale = args.f32_in(1)[0];
    let mom = &mut args.f32_out(0)[..n];
    let out = &mut args.f32_out(1)[..n];
    mom.par_chunks_mut(CHUNK).zip(out.par_chunks_mut(CHUNK)).enumerate().for_each(|(c, (mc, oc))| {
        for ((m, o), &gi) in mc.iter_mut().zip(oc.iter_mut()).zip(&grad[c * CHUNK..]) {
            let g = gi * scale;
            let b = p.momentum * *m + g;
            *m = b;
            *o = if p.nesterov == 1 { g + p.momentum * b } else { b };
        }
    });
}

/// Bindings: params, partials (read), x (read_write).
pub fn muon_normalize(args: &mut CpuArgs) {
    let p: MuonNormalizeParams = args.params();
    let partials = &args.f32_in(0)[p.slot as usize..(p.slot + p.n_partials) as usize];
    let s = partials.iter().fold(0.0f32, |s, &v| s + v);
    let k = 1.0 / (s.sqrt() + p.eps);
    par_chunks(&mut args.f32_out(0)[..p.n as usize], |_, ch| {
        for x in ch {
            *x *= k;
        }
    });
}

/// Bindings: params, x (read), y (read_write).
pub fn muon_axpby(args: &mut CpuArgs) {
    let p: AxpbyParams = args.params();
    let x = args.f32_in(0);
    par_chunks(&mut args.f32_out(0)[..p.n as usize], |s, ch| {
        let x = &x[s..];
        if p.beta == 0.0 {
            for (y, &xi) in ch.iter_mut().zip(x) {
                *y = p.alpha * xi;
            }
        } else {
            for (y, &xi) in ch.iter_mut().zip(x) {
                *y = p.alpha * xi + p.beta * *y;
            }
        }
    });
}
