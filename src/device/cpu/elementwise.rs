//! CPU twin of shaders/elementwise.wgsl.

use super::par_chunks;
use crate::kernels::CpuArgs;
use crate::ops::elementwise::{BinaryParams, ScalarParams, UnaryParams};

/// WGSL's sign: 0 at 0 (Rust's signum gives 1).
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

pub fn stable_tanh(x: f32) -> f32 {
    let e = (-2.0 * x.abs()).exp();
    sign(x) * (1.0 - e) / (1.0 + e)
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn unary_op(op: u32, x: f32, alpha: f32) -> f32 {
    match op {
        0 => -x,
        1 => x.abs(),
        2 => x.exp(),
        3 => x.ln(),
        4 => x.sqrt(),
        5 => 1.0 / x.sqrt(),
        6 => 1.0 / x,
        7 => x.sin(),
        8 => x.cos(),
        9 => stable_tanh(x),
        10 => sigmoid(x),
        11 => x.max(0.0),
        12 => 0.5 * x * (1.0 + stable_tanh(0.797_884_6 * (x + 0.044715 * x * x * x))),
        13 => x * sigmoid(x),
        14 => x * x,
        15 => sign(x),
        16 => {
            if x > 0.0 {
                x
            } else {
                alpha * x
            }
        }
        _ => x,
    }
}

/// f'(x) of `unary_op`, as the shader's `unary_deriv` (tails rewritten so they do not cancel).
pub fn unary_deriv(op: u32, x: f32, alpha: f32) -> f32 {
    match op {
        0 => -1.0,
        1 => sign(x),
        2 => x.exp(),
        3 => 1.0 / x,
        4 => 0.5 * (1.0 / x.sqrt()),
        5 => -0.5 * (1.0 / x.sqrt()) / x,
        6 => -1.0 / (x * x),
        7 => x.cos(),
        8 => -x.sin(),
        9 => {
            let e = (-2.0 * x.abs()).exp();
            let d = 1.0 + e;
            4.0 * e / (d * d)
        }
        10 => sigmoid(x) * sigmoid(-x),
        11 => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        12 => {
            let u = 0.797_884_6 * (x + 0.044715 * x * x * x);
            let du = 0.797_884_6 * (1.0 + 0.134145 * x * x);
            let e = (-2.0 * u.abs()).exp();
            let d = 1.0 + e;
            let one_plus_t = if u >= 0.0 { 2.0 } else { 2.0 * e } / d;
            let sech2 = 4.0 * e / (d * d);
            0.5 * one_plus_t + 0.5 * x * sech2 * du
        }
        13 => sigmoid(x) * (1.0 + x * sigmoid(-x)),
        14 => 2.0 * x,
        15 => 0.0,
        16 => {
            if x > 0.0 {
                1.0
            } else {
                alpha
            }
        }
        _ => 1.0,
    }
}

pub fn binary_op(op: u32, a: f32, b: f32) -> f32 {
    match op {
        0 => a + b,
        1 => a - b,
        2 => a * b,
        3 => a / b,
        4 => a.max(b),
        5 => a.min(b),
        6 => a.powf(b),
        7 => (a > b) as u32 as f32,
        8 => (a < b) as u32 as f32,
        9 => (a == b) as u32 as f32,
        _ => a,
    }
}

/// Bindings: params, x (read), out (read_write).
pub fn unary(args: &mut CpuArgs) {
    let p: UnaryParams = args.params();
    let x = args.f32_in(0);
    let out = args.f32_out(0);
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        for (o, &v) in ch.iter_mut().zip(&x[s..]) {
            *o = unary_op(p.op, v, p.alpha);
        }
    });
}

/// Bindings: params, x (read), dy (read), dx (read_write).
pub fn unary_backward(args: &mut CpuArgs) {
    let p: UnaryParams = args.params();
    let (x, dy) = (args.f32_in(0), args.f32_in(1));
    let dx = args.f32_out(0);
    par_chunks(&mut dx[..p.n as usize], |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = dy[s + k] * unary_deriv(p.op, x[s + k], p.alpha);
        }
    });
}

/// Bindings: params, a (read), b (read), out (read_write); a, b and out share one shape.
pub fn binary_same(args: &mut CpuArgs) {
    let p: BinaryParams = args.params();
    let (a, b) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        for (i, o) in ch.iter_mut().enumerate() {
            *o = binary_op(p.op, a[s + i], b[s + i]);
        }
    });
}

/// Bindings: params, a (read), b (read), out (read_write).
pub fn binary(args: &mut CpuArgs) {
    let p: BinaryParams = args.params();
    let (a, b) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    let n = p.n as usize;
    let rank = p.rank as usize;
    par_chunks(&mut out[..n], |s, ch| {
        // Decompose the chunk's first index once, then step an odometer (the shader decomposes per
        // element; the offsets are the same).
        let mut idx = [0usize; 8];
        let mut rem = s;
        for d in (0..rank).rev() {
            idx[d] = rem % p.shape[d] as usize;
            rem /= p.shape[d] as usize;
        }
        let mut ia: usize = (0..rank).map(|d| idx[d] * p.a_strides[d] as usize).sum();
        let mut ib: usize = (0..rank).map(|d| idx[d] * p.b_strides[d] as usize).sum();
        for o in ch.iter_mut() {
            *o = binary_op(p.op, a[ia], b[ib]);
            for d in (0..rank).rev() {
                idx[d] += 1;
                ia += p.a_strides[d] as usize;
                ib += p.b_strides[d] as usize;
                if idx[d] < p.shape[d] as usize {
                    break;
                }
                ia -= idx[d] * p.a_strides[d] as usize;
                ib -= idx[d] * p.b_strides[d] as usize;
                idx[d] = 0;
            }
        }
    });
}

/// Bindings: params, x (read), out (read_write).
pub fn scalar(args: &mut CpuArgs) {
    let p: ScalarParams = args.params();
    let x = args.f32_in(0);
    let out = args.f32_out(0);
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        for (o, &v) in ch.iter_mut().zip(&x[s..]) {
            *o = if p.reverse == 1 { binary_op(p.op, p.s, v) } else { binary_op(p.op, v, p.s) };
        }
    });
}
