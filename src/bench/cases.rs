//! The case list: which ops, at which sizes, for each of `Sizes`.

use crate::device::Device;
use crate::ops::elementwise::{self as ew, Unary};
use crate::ops::matmul::{self as mm, MatmulOpts};
use crate::ops::{layout, reduce, rng, softmax};

use super::families;
use super::{Case, Check, Input, Sizes};

fn is_software(dev: &Device) -> bool {
    dev.adapter_info().is_some_and(|i| i.device_type == wgpu::DeviceType::Cpu)
}

fn matmul_case(batch: usize, m: usize, n: usize, k: usize) -> Case {
    matmul_case_t(batch, m, n, k, false, false)
}

/// C [M, N] = op(A)·op(B). Named by the transposes ("matmul", "matmul_at": A stored [K, M], as a weight
/// gradient Xᵀ·dY; "matmul_bt": B stored [N, K], as an input gradient dY·Wᵀ) so that runs of other
/// implementations match by name; the kernel `Auto` picks is recorded beside it.
fn matmul_case_t(batch: usize, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Case {
    let a_dims = if trans_a { [k, m] } else { [m, k] };
    let b_dims = if trans_b { [n, k] } else { [k, n] };
    let (a, b, shape) = if batch > 1 {
        ([&[batch][..], &a_dims].concat(), [&[batch][..], &b_dims].concat(), format!("{batch}x({m}x{n}x{k})"))
    } else {
        (a_dims.to_vec(), b_dims.to_vec(), format!("{m}x{n}x{k}"))
    };
    let kernel = mm::choose_kernel(m, n, k, trans_a, trans_b).kernel().expect("auto resolves").entry;
    let name = match (trans_a, trans_b) {
        (false, false) => "matmul",
        (true, false) => "matmul_at",
        (false, true) => "matmul_bt",
        (true, true) => "matmul_at_bt",
    };
    let (batch64, m64, n64, k64) = (batch as u64, m as u64, n as u64, k as u64);
    let opts = MatmulOpts { trans_a, trans_b, alpha: 1.0 };
    let mut c = Case::new(
        "matmul",
        name,
        shape,
        2 * batch64 * m64 * n64 * k64,
        4 * batch64 * (m64 * k64 + k64 * n64 + m64 * n64),
        vec![Input::uniform(a, -1.0, 1.0), Input::uniform(b, -1.0, 1.0)],
        Check::Matmul { batch, m, n, k, trans_a, trans_b },
        move |d, x| mm::matmul(d, &x[0], &x[1], opts),
    );
    c.kernel = Some(kernel);
    c
}

fn add_case(n: usize) -> Case {
    let inp = Input { shape: vec![n], lo: -1.0, hi: 1.0, fixed_u32: None };
    Case::new(
        "elementwise",
        "add",
        format!("[{n}]"),
        n as u64,
        12 * n as u64,
        vec![inp.clone(), inp],
        Check::Elementwise { host: |x, i| x[0][i] + x[1][i] },
        |d, x| ew::add(d, &x[0], &x[1]),
    )
}

fn exp_case(n: usize) -> Case {
    Case::new(
        "elementwise",
        "exp",
        format!("[{n}]"),
        n as u64,
        8 * n as u64,
        vec![Input { shape: vec![n], lo: -4.0, hi: 4.0, fixed_u32: None }],
        Check::Elementwise { host: |x, i| x[0][i].exp() },
        |d, x| ew::unary(d, Unary::Exp, &x[0]),
    )
}

fn sum_rows_case(rows: usize, len: usize) -> Case {
    let n = (rows * len) as u64;
    Case::new(
        "reduce",
        "sum_rows",
        format!("[{rows}, {len}]"),
        n,
        4 * n + 4 * rows as u64,
        vec![Input { shape: vec![rows, len], lo: -1.0, hi: 1.0, fixed_u32: None }],
        Check::SumRows { len },
        |d, x| reduce::sum(d, &x[0], 1, false),
    )
}

fn softmax_case(rows: usize, len: usize) -> Case {
    let n = (rows * len) as u64;
    Case::new(
        "softmax",
        "softmax",
        format!("[{rows}, {len}]"),
        5 * n,
        8 * n,
        vec![Input { shape: vec![rows, len], lo: -4.0, hi: 4.0, fixed_u32: None }],
        Check::Softmax { len },
        |d, x| softmax::softmax(d, &x[0]),
    )
}

fn transpose_case(rows: usize, cols: usize) -> Case {
    Case::new(
        "layout",
        "transpose2d",
        format!("[{rows}, {cols}]"),
        0,
        8 * (rows * cols) as u64,
        vec![Input { shape: vec![rows, cols], lo: -1.0, hi: 1.0, fixed_u32: None }],
        Check::Transpose { rows, cols },
        |d, x| layout::transpose2d(d, &x[0]),
    )
}

fn copy_case(n: usize) -> Case {
    Case::new(
        "layout",
        "copy",
        format!("[{n}]"),
        0,
        8 * n as u64,
        vec![Input { shape: vec![n], lo: -1.0, hi: 1.0, fixed_u32: None }],
        Check::Copy,
        |d, x| layout::copy(d, &x[0]),
    )
}

fn normal_case(n: usize) -> Case {
    const SEED: u64 = 0x5EED;
    Case::new("rng", "normal", format!("[{n}]"), 0, 4 * n as u64, vec![], Check::Normal { seed: SEED }, move |d, _| {
        rng::normal(d, &[n], SEED, 0, 0.0, 1.0)
    })
}

/// The cases of a run on `dev` (software adapters get smaller sizes: they run matmul at about 1 GFLOP/s).
///
/// The model-shaped cases follow the GPT regime at width 128 over 2048 tokens (batch 16 x context 128):
/// the qkv, output, MLP up and down projections, their input gradients (dY·Wᵀ) and weight gradients
/// (Xᵀ·dY); attention at a few lengths and head sizes over 2048 tokens; conv2d as a DCGAN stage (k4 s2)
/// and a UNet stage (3x3 s1); AdamW over 1M parameters.
pub fn cases(dev: &Device, sizes: Sizes) -> Vec<Case> {
    use families::{adam_case, attention_case, conv_case, ConvDir::*};
    const M: usize = 1 << 20;
    let soft = is_software(dev);
    let mut v = Vec::new();
    let conv3 = |v: &mut Vec<Case>, args: (usize, usize, usize, usize, usize, usize, usize)| {
        let (n, ci, hw, co, k, s, p) = args;
        for dir in [Forward, BackwardInput, BackwardWeight] {
            v.push(conv_case(n, ci, hw, co, k, s, p, dir));
        }
    };
    match sizes {
        Sizes::Full => {
            for s in [256, 512, 1024, 2048, 4096] {
                if !(soft && s > 512) {
                    v.push(matmul_case(1, s, s, s));
                }
            }
            let tokens = if soft { 512 } else { 2048 };
            for (n, k) in [(384, 128), (128, 128), (512, 128), (128, 512), (256, 128)] {
                v.push(matmul_case(1, tokens, n, k));
            }
            // Input gradients dX = dY·Wᵀ and weight gradients dW = Xᵀ·dY of the qkv and MLP projections.
            for (n, k) in [(128, 384), (128, 512), (512, 128)] {
                v.push(matmul_case_t(1, tokens, n, k, false, true));
            }
            for (m, n) in [(128, 384), (128, 512), (512, 128)] {
                v.push(matmul_case_t(1, m, n, tokens, true, false));
            }
            v.push(matmul_case(12, 64, 64, 32));
            for t in [64, 128, 256] {
                for d in [32, 64] {
                    for backward in [false, true] {
                        v.push(attention_case(tokens / t, t, 4, d, backward));
                    }
                }
            }
            let batch = if soft { 8 } else { 64 };
            conv3(&mut v, (batch, 64, 14, 128, 4, 2, 1));
            conv3(&mut v, (batch, 64, 16, 64, 3, 1, 1));
            v.push(adam_case(M));
            for n in [M, 16 * M] {
                if !(soft && n > M) {
                    v.push(add_case(n));
                    v.push(exp_case(n));
                }
            }
        }
        Sizes::Quick => {
            let s = if soft { 256 } else { 512 };
            v.push(matmul_case(1, s, s, s));
            let tokens = if soft { 512 } else { 2048 };
            v.push(matmul_case(1, tokens, 384, 128));
            v.push(matmul_case_t(1, 128, 384, tokens, true, false));
            v.push(attention_case(tokens / 128, 128, 4, 32, false));
            v.push(attention_case(tokens / 128, 128, 4, 32, true));
            conv3(&mut v, (if soft { 4 } else { 16 }, 64, 14, 128, 4, 2, 1));
            v.push(adam_case(M));
            v.push(add_case(M));
            v.push(exp_case(M));
        }
        Sizes::Tiny => {
            v.push(matmul_case(1, 64, 64, 64));
            v.push(matmul_case(3, 20, 24, 8));
            v.push(matmul_case_t(1, 40, 36, 20, false, true));
            v.push(matmul_case_t(1, 36, 20, 44, true, false));
            v.push(attention_case(2, 21, 2, 8, false));
            v.push(attention_case(2, 21, 2, 8, true));
            conv3(&mut v, (2, 3, 9, 5, 3, 2, 1));
            v.push(adam_case(4099));
            v.push(add_case(4099));
            v.push(exp_case(4099));
            v.push(sum_rows_case(37, 300));
            v.push(softmax_case(37, 300));
            v.push(transpose_case(70, 96));
            v.push(normal_case(4099));
            v.push(copy_case(4099));
            return v;
        }
    }
    v.push(sum_rows_case(4096, 1024));
    v.push(softmax_case(4096, 1024));
    v.push(transpose_case(2048, 2048));
    v.push(normal_case(4 * M));
    v.push(copy_case(16 * M));
    v
}
