//! CPU twin of shaders/muon.wgsl: the same formulas in the same order, so the twins match the shaders
//! to rounding. The norms run `sumsq_partial`'s twin (device/cpu/optim.rs) on each matrix's arena region,
//! so they add in the shader's order; the multi-matrix twins run the one-matrix twin per slot in use.

use rayon::prelude::*;

use super::{optim, par_chunks, CpuArgs, CHUNK};
use crate::kernels::muon::{
    MuonMomentumMultiParams, MuonMomentumParams, MuonNormParams, MuonUpdateMultiParams, MuonUpdateParams,
};
use crate::kernels::optim::{schedule_lr_of, SumsqParams, STEP_SKIP};

/// Runs `twin` with `params`, inputs `ins` and outputs `outs`.
fn run<P: bytemuck::Pod>(twin: fn(&mut CpuArgs), params: &P, ins: Vec<&[u32]>, outs: Vec<&mut [u32]>) {
    twin(&mut CpuArgs { params: bytemuck::bytes_of(params), ins, outs });
}

/// One matrix's momentum: `mom` updated, `out` (its arena region) written.
fn momentum_of(p: &MuonMomentumParams, grad: &[f32], scale: f32, mom: &mut [f32], out: &mut [f32]) {
    mom.par_chunks_mut(CHUNK).zip(out.par_chunks_mut(CHUNK)).enumerate().for_each(|(c, (mc, oc))| {
        for ((m, o), &gi) in mc.iter_mut().zip(oc.iter_mut()).zip(&grad[c * CHUNK..]) {
            let g = gi * scale;
            let b = p.momentum * *m + g;
            *m = b;
            *o = if p.nesterov == 1 { g + p.momentum * b } else { b };
        }
    });
}

/// Bindings: params, grad (read), clip (read), momentum (read_write), arena (read_write).
pub fn muon_momentum(args: &mut CpuArgs) {
    let p: MuonMomentumParams = args.params();
    let (n, dst) = (p.n as usize, p.dst as usize);
    let (grad, scale) = (args.f32_in(0), args.f32_in(1)[0]);
    if scale < 0.0 {
        return; // a skipped step (clip[0] = -1)
    }
    let mom = &mut args.f32_out(0)[..n];
    momentum_of(&p, grad, scale, mom, &mut args.f32_out(1)[dst..dst + n]);
}

/// Bindings: params, then per slot grad (read), momentum (read_write), then clip (read), arena
/// (read_write); `muon_momentum_multi_wide` too (its slot count is the bindings').
pub fn muon_momentum_multi(args: &mut CpuArgs) {
    let mp: MuonMomentumMultiParams = args.params();
    let slots = args.ins.len() - 1;
    let scale = args.f32_in(slots)[0];
    if scale < 0.0 {
        return; // a skipped step (clip[0] = -1)
    }
    let arena = args.f32_out(slots);
    for k in 0..slots {
        let (n, dst) = (mp.n[k] as usize, mp.dst[k] as usize);
        if n == 0 {
            continue;
        }
        let q = MuonMomentumParams { n: mp.n[k], momentum: mp.momentum, nesterov: mp.nesterov, dst: mp.dst[k] };
        let mom = &mut args.f32_out(k)[..n];
        momentum_of(&q, args.f32_in(k), scale, mom, &mut arena[dst..dst + n]);
    }
}

/// Bindings: params, segments (read), arena (read), partials (read_write).
pub fn muon_sumsq(args: &mut CpuArgs) {
    let p: MuonNormParams = args.params();
    let segs = args.u32_in(0);
    let x = args.ins[1];
    let partials = args.u32_out(0);
    for s in segs.chunks_exact(4).take(p.count as usize) {
        let (off, n) = (s[0] as usize, s[1] as usize);
        let q = SumsqParams { n: s[1], chunk: s[2], slot: s[3], _pad0: 0 };
        run(optim::sumsq_partial, &q, vec![&x[off..off + n]], vec![&mut *partials]);
    }
}

/// Bindings: params, segments (read), partials (read), arena (read_write).
pub fn muon_normalize(args: &mut CpuArgs) {
    let p: MuonNormParams = args.params();
    let segs = args.u32_in(0);
    let partials = args.f32_in(1);
    let x = args.f32_out(0);
    for s in segs.chunks_exact(4).take(p.count as usize) {
        let (off, n, chunk, slot) = (s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize);
        let sum = partials[slot..slot + n.div_ceil(chunk)].iter().fold(0.0f32, |s, &v| s + v);
        let f = 1.0 / (sum.sqrt() + p.eps);
        par_chunks(&mut x[off..off + n], |_, ch| {
            for v in ch {
                *v *= f;
            }
        });
    }
}

/// Bindings: params, param (read_write), arena (read), step (read).
pub fn muon_update(args: &mut CpuArgs) {
    let p: MuonUpdateParams = args.params();
    let o = &args.f32_in(0)[p.src as usize..];
    let step = args.u32_in(1)[0];
    if step & STEP_SKIP != 0 {
        return;
    }
    let lr = schedule_lr_of(&bytemuck::cast(p.sched), step);
    let wd = p.weight_decay;
    par_chunks(&mut args.f32_out(0)[..p.n as usize], |s, ch| {
        for (w, &oi) in ch.iter_mut().zip(&o[s..]) {
            let mut g = oi;
            if wd != 0.0 {
                g += wd * *w;
            }
            *w -= lr * g;
        }
    });
}

/// Bindings: params, then param per slot (read_write), then arena (read), step (read).
pub fn muon_update_multi(args: &mut CpuArgs) {
    let mp: MuonUpdateMultiParams = args.params();
    let (o, step) = (args.ins[0], args.ins[1]);
    let outs = std::mem::take(&mut args.outs);
    for (k, w) in outs.into_iter().enumerate() {
        if mp.n[k] == 0 {
            continue;
        }
        let q =
            MuonUpdateParams { sched: mp.sched, n: mp.n[k], src: mp.src[k], weight_decay: mp.weight_decay, _pad0: 0 };
        run(muon_update, &q, vec![o, step], vec![w]);
    }
}
