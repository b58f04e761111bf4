//! CPU twins of the multi-tensor kernels of shaders/optim.wgsl (`adam_multi`, `sgd_multi`, `ema_multi`,
//! `sumsq_multi`): each slot in use runs the one-tensor twin of device/cpu/optim.rs on its buffers, so
//! a multi-tensor dispatch computes exactly what one dispatch per tensor computes.

use super::optim;
use super::CpuArgs;
use crate::kernels::optim::{
    AdamMultiParams, AdamParams, EmaMultiParams, EmaParams, SgdMultiParams, SgdParams, SumsqMultiParams, SumsqParams,
    SLOTS,
};

/// Runs `twin` with `params`, inputs `ins` and outputs `outs`.
fn run<P: bytemuck::Pod>(twin: fn(&mut CpuArgs), params: &P, ins: Vec<&[u32]>, outs: Vec<&mut [u32]>) {
    twin(&mut CpuArgs { params: bytemuck::bytes_of(params), ins, outs });
}

/// Bindings: params, then per slot param (read_write), grad (read), m (read_write), v (read_write),
/// then step (read), clip (read).
pub fn adam_multi(args: &mut CpuArgs) {
    let mp: AdamMultiParams = args.params();
    let slots = args.ins.len() - 2; // `adam_multi_wide` too: its slot count is the bindings'
    let (step, clip) = (args.ins[slots], args.ins[slots + 1]);
    let mut outs = std::mem::take(&mut args.outs).into_iter();
    for k in 0..slots {
        let (p, m, v) = (outs.next().unwrap(), outs.next().unwrap(), outs.next().unwrap());
        if mp.n[k] == 0 {
            continue;
        }
        let a = AdamParams { n: mp.n[k], ..mp.a };
        run(optim::adam, &a, vec![args.ins[k], step, clip], vec![p, m, v]);
    }
}

/// Bindings: params, then per slot param (read_write), grad (read), momentum (read_write), then step
/// (read), clip (read).
pub fn sgd_multi(args: &mut CpuArgs) {
    let mp: SgdMultiParams = args.params();
    let (step, clip) = (args.ins[SLOTS], args.ins[SLOTS + 1]);
    let mut outs = std::mem::take(&mut args.outs).into_iter();
    for k in 0..SLOTS {
        let (p, b) = (outs.next().unwrap(), outs.next().unwrap());
        if mp.n[k] == 0 {
            continue;
        }
        let s = SgdParams { n: mp.n[k], ..mp.s };
        run(optim::sgd, &s, vec![args.ins[k], step, clip], vec![p, b]);
    }
}

/// Bindings: params, then per slot average (read_write), param (read), then step (read);
/// `ema_multi_wide` too (its slot count is the bindings').
pub fn ema_multi(args: &mut CpuArgs) {
    let mp: EmaMultiParams = args.params();
    let step = args.ins[args.outs.len()];
    let outs = std::mem::take(&mut args.outs);
    for (k, avg) in outs.into_iter().enumerate() {
        if mp.n[k] == 0 {
            continue;
        }
        let e = EmaParams { n: mp.n[k], ..mp.e };
        run(optim::ema, &e, vec![args.ins[k], step], vec![avg]);
    }
}

/// Bindings: params, x per slot (read), partials (read_write); `sumsq_multi_wide` too (its slot count
/// is the bindings').
pub fn sumsq_multi(args: &mut CpuArgs) {
    let mp: SumsqMultiParams = args.params();
    let partials = std::mem::take(&mut args.outs[0]);
    for k in 0..args.ins.len() {
        if mp.n[k] == 0 {
            continue;
        }
        let q = SumsqParams { n: mp.n[k], chunk: mp.chunk[k], slot: mp.slot[k], _pad0: 0 };
        run(optim::sumsq_partial, &q, vec![args.ins[k]], vec![&mut *partials]);
    }
}
