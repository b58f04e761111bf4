//! CPU twin of shaders/elementwise.wgsl.

use super::stream::{fill_streaming, STREAM_CHUNK, STREAM_STORES_MIN};
use super::CpuArgs;
use super::{par_chunks, par_chunks_min, Odometer, CHUNK};
use crate::kernels::elementwise::{BinaryParams, ScalarParams, UnaryParams};

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

use super::fastmath;
pub use super::fastmath::{sigmoid, tanh as stable_tanh};

/// One element of `unary`: op code `op` of shaders/elementwise.wgsl applied to x.
#[inline(always)]
pub fn unary_op(op: u32, x: f32, alpha: f32) -> f32 {
    match op {
        0 => -x,
        1 => x.abs(),
        2 => fastmath::exp(x),
        3 => x.ln(),
        4 => x.sqrt(),
        5 => 1.0 / x.sqrt(),
        6 => 1.0 / x,
        7 => x.sin(),
        8 => x.cos(),
        9 => stable_tanh(x),
        10 => sigmoid(x),
        11 => x.max(0.0),
        12 => fastmath::gelu(x),
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

/// act'(z) from y = act(z), as common/activation.wgsl's `deriv_from_out`: tanh, sigmoid, relu and leaky
/// relu (positive slope), whose derivative the output alone gives; 1 for any other code.
#[inline(always)]
pub fn deriv_from_out(op: u32, y: f32, alpha: f32) -> f32 {
    match op {
        9 => 1.0 - y * y,
        10 => y * (1.0 - y),
        11 => (y > 0.0) as u32 as f32,
        16 if y > 0.0 => 1.0,
        16 => alpha,
        _ => 1.0,
    }
}

/// f'(x) of `unary_op`, as the shader's `unary_deriv` (tails rewritten so they do not cancel).
#[inline(always)]
pub fn unary_deriv(op: u32, x: f32, alpha: f32) -> f32 {
    match op {
        0 => -1.0,
        1 => sign(x),
        2 => fastmath::exp(x),
        3 => 1.0 / x,
        4 => 0.5 * (1.0 / x.sqrt()),
        5 => -0.5 * (1.0 / x.sqrt()) / x,
        6 => -1.0 / (x * x),
        7 => x.cos(),
        8 => -x.sin(),
        9 => {
            let e = fastmath::exp(-2.0 * x.abs());
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
        12 => fastmath::gelu_deriv(x),
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

/// One element of `binary`: op code `op` of shaders/elementwise.wgsl applied to (a, b).
#[inline(always)]
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

/// Calls `$f::<OP>(..)` with the op code as a constant, so each op gets its own loop with the op's
/// arithmetic inlined (and vectorized) instead of a branch per element.
macro_rules! with_op {
    ($op:expr, $f:ident ( $($arg:expr),* )) => {
        match $op {
            0 => $f::<0>($($arg),*),
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            13 => $f::<13>($($arg),*),
            14 => $f::<14>($($arg),*),
            15 => $f::<15>($($arg),*),
            16 => $f::<16>($($arg),*),
            _ => $f::<{ u32::MAX }>($($arg),*),
        }
    };
}

#[inline(always)]
fn unary_chunk<const OP: u32>(x: &[f32], out: &mut [f32], alpha: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = unary_op(OP, v, alpha);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unary_chunk_avx2<const OP: u32>(x: &[f32], out: &mut [f32], alpha: f32) {
    unary_chunk::<OP>(x, out, alpha)
}

// 16 lanes where the CPU has them: the same operations in the same order per element, so the same
// results (no contraction into FMAs either way).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn unary_chunk_avx512<const OP: u32>(x: &[f32], out: &mut [f32], alpha: f32) {
    unary_chunk::<OP>(x, out, alpha)
}

fn unary_loop<const OP: u32>(x: &[f32], out: &mut [f32], alpha: f32) {
    par_chunks(out, |s, ch| {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx512() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { unary_chunk_avx512::<OP>(&x[s..], ch, alpha) };
        }
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { unary_chunk_avx2::<OP>(&x[s..], ch, alpha) };
        }
        unary_chunk::<OP>(&x[s..], ch, alpha)
    });
}

/// Bindings: params, x (read), out (read_write).
pub fn unary(args: &mut CpuArgs) {
    let p: UnaryParams = args.params();
    let x = args.f32_in(0);
    let out = &mut args.f32_out(0)[..p.n as usize];
    with_op!(p.op, unary_loop(x, out, p.alpha));
}

#[inline(always)]
fn unary_backward_chunk<const OP: u32>(x: &[f32], dy: &[f32], dx: &mut [f32], alpha: f32) {
    for ((o, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
        *o = g * unary_deriv(OP, xv, alpha);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unary_backward_chunk_avx2<const OP: u32>(x: &[f32], dy: &[f32], dx: &mut [f32], alpha: f32) {
    unary_backward_chunk::<OP>(x, dy, dx, alpha)
}

fn unary_backward_loop<const OP: u32>(x: &[f32], dy: &[f32], dx: &mut [f32], alpha: f32) {
    par_chunks(dx, |s, ch| {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { unary_backward_chunk_avx2::<OP>(&x[s..], &dy[s..], ch, alpha) };
        }
        unary_backward_chunk::<OP>(&x[s..], &dy[s..], ch, alpha)
    });
}

/// Bindings: params, x (read), dy (read), dx (read_write).
pub fn unary_backward(args: &mut CpuArgs) {
    let p: UnaryParams = args.params();
    let (x, dy) = (args.f32_in(0), args.f32_in(1));
    let dx = &mut args.f32_out(0)[..p.n as usize];
    with_op!(p.op, unary_backward_loop(x, dy, dx, p.alpha));
}

#[inline(always)]
fn binary_same_chunk<const OP: u32>(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = binary_op(OP, x, y);
    }
}

/// `binary_same_chunk`, through non-temporal stores when `stream`.
#[inline(always)]
fn binary_same_part<const OP: u32>(a: &[f32], b: &[f32], out: &mut [f32], stream: bool) {
    if stream {
        fill_streaming(out, |s, o| binary_same_chunk::<OP>(&a[s..], &b[s..], o));
    } else {
        binary_same_chunk::<OP>(a, b, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn binary_same_part_avx512<const OP: u32>(a: &[f32], b: &[f32], out: &mut [f32], stream: bool) {
    binary_same_part::<OP>(a, b, out, stream)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn binary_same_part_avx2<const OP: u32>(a: &[f32], b: &[f32], out: &mut [f32], stream: bool) {
    binary_same_part::<OP>(a, b, out, stream)
}

fn binary_same_loop<const OP: u32>(a: &[f32], b: &[f32], out: &mut [f32]) {
    // Every op but powf (6) is a memory-bound loop: bigger pieces per thread, streaming stores.
    let memory_bound = OP != 6;
    let min = if memory_bound { STREAM_CHUNK } else { CHUNK };
    let stream = memory_bound && out.len() >= STREAM_STORES_MIN;
    par_chunks_min(out, min, |s, ch| {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx512() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { binary_same_part_avx512::<OP>(&a[s..], &b[s..], ch, stream) };
        }
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { binary_same_part_avx2::<OP>(&a[s..], &b[s..], ch, stream) };
        }
        binary_same_part::<OP>(&a[s..], &b[s..], ch, stream)
    });
}

/// Bindings: params, a (read), b (read), out (read_write); a, b and out share one shape.
pub fn binary_same(args: &mut CpuArgs) {
    let p: BinaryParams = args.params();
    let (a, b) = (args.f32_in(0), args.f32_in(1));
    let out = &mut args.f32_out(0)[..p.n as usize];
    with_op!(p.op, binary_same_loop(a, b, out));
}

/// Bindings: params, a (read), b (read), out (read_write).
pub fn binary(args: &mut CpuArgs) {
    let p: BinaryParams = args.params();
    let (a, b) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    let n = p.n as usize;
    let rank = p.rank as usize;
    par_chunks(&mut out[..n], |s, ch| {
        let mut od = Odometer::new(s, &p.shape[..rank], [&p.a_strides, &p.b_strides]);
        for o in ch.iter_mut() {
            *o = binary_op(p.op, a[od.at[0]], b[od.at[1]]);
            od.step();
        }
    });
}

fn scalar_loop<const OP: u32>(x: &[f32], out: &mut [f32], c: f32, reverse: bool) {
    par_chunks(out, |s, ch| {
        if reverse {
            for (o, &v) in ch.iter_mut().zip(&x[s..]) {
                *o = binary_op(OP, c, v);
            }
        } else {
            for (o, &v) in ch.iter_mut().zip(&x[s..]) {
                *o = binary_op(OP, v, c);
            }
        }
    });
}

/// Bindings: params, x (read), out (read_write).
pub fn scalar(args: &mut CpuArgs) {
    let p: ScalarParams = args.params();
    let x = args.f32_in(0);
    let out = &mut args.f32_out(0)[..p.n as usize];
    if p.rep > 0 {
        // x broadcast along one axis: read each output's source element.
        let (rep, inner) = (p.rep as usize, p.inner as usize);
        par_chunks(out, |s, ch| {
            for (k, o) in ch.iter_mut().enumerate() {
                let i = s + k;
                let v = x[(i / (rep * inner)) * inner + i % inner];
                *o = if p.reverse == 1 { binary_op(p.op, p.s, v) } else { binary_op(p.op, v, p.s) };
            }
        });
        return;
    }
    with_op!(p.op, scalar_loop(x, out, p.s, p.reverse == 1));
}

#[inline(always)]
fn unary_in_place_chunk<const OP: u32>(v: &mut [f32], alpha: f32) {
    for o in v.iter_mut() {
        *o = unary_op(OP, *o, alpha);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unary_in_place_avx2<const OP: u32>(v: &mut [f32], alpha: f32) {
    unary_in_place_chunk::<OP>(v, alpha)
}

fn unary_in_place_any<const OP: u32>(v: &mut [f32], alpha: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the features were detected on this CPU.
        return unsafe { unary_in_place_avx2::<OP>(v, alpha) };
    }
    unary_in_place_chunk::<OP>(v, alpha)
}

/// v = op(v) in place on the calling thread: `unary`'s arithmetic for kernels that fuse an activation
/// into a pass of their own (chnorm_apply).
pub fn unary_in_place(op: u32, alpha: f32, v: &mut [f32]) {
    with_op!(op, unary_in_place_any(v, alpha))
}

#[inline(always)]
fn unary_backward_in_place_chunk<const OP: u32>(z: &mut [f32], dy: &[f32], alpha: f32) {
    for (o, &g) in z.iter_mut().zip(dy) {
        *o = g * unary_deriv(OP, *o, alpha);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unary_backward_in_place_avx2<const OP: u32>(z: &mut [f32], dy: &[f32], alpha: f32) {
    unary_backward_in_place_chunk::<OP>(z, dy, alpha)
}

fn unary_backward_in_place_any<const OP: u32>(z: &mut [f32], dy: &[f32], alpha: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the features were detected on this CPU.
        return unsafe { unary_backward_in_place_avx2::<OP>(z, dy, alpha) };
    }
    unary_backward_in_place_chunk::<OP>(z, dy, alpha)
}

/// z = dy · op'(z) in place on the calling thread: `unary_backward`'s arithmetic for kernels that fuse
/// an activation's backward (chnorm_bwd_partial_act).
pub fn unary_backward_in_place(op: u32, alpha: f32, z: &mut [f32], dy: &[f32]) {
    with_op!(op, unary_backward_in_place_any(z, dy, alpha))
}
