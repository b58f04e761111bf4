//! CPU twin of shaders/matmul.wgsl. The three entry points differ only in how the GPU schedules the
//! work, so they share one implementation: per batch matrix, one `sgemm` call on strided views (the
//! transposes are strides, as the shader's `sa`/`sb` in matmul_tiled and matmul_small), then alpha.
//! `matmul_pair` (shaders/matmul_pair.wgsl) and `matmul_pair_silu_gate_bwd` (shaders/matmul_pair_gate.wgsl)
//! run the same for each of their two products.

use rayon::prelude::*;

use super::elementwise::deriv_from_out;
use super::CpuArgs;
use crate::host::f16;
use crate::host::gemm::{sgemm, MatRef};
use crate::kernels::matmul::{MatmulBiasBwdParams, MatmulEpiParams, MatmulParams, HALF_A, HALF_B};
use crate::kernels::matmul_pair::MatmulPairParams;

/// Below this many multiply-adds per matrix, sgemm runs on one thread, so the batch loop itself is
/// spread over the cores instead (many small matrices: attention heads).
const PAR_BATCH_WORK: usize = 64 * 64 * 64;

/// Bindings: params, a (read), b (read), c (read_write).
pub fn matmul_tiled(args: &mut CpuArgs) {
    run(args)
}

/// Bindings as `matmul_tiled` (the shader views the same buffers as vec4).
pub fn matmul_tiled_vec4(args: &mut CpuArgs) {
    run(args)
}

/// Bindings as `matmul_tiled`.
pub fn matmul_small(args: &mut CpuArgs) {
    run(args)
}

/// Bindings: params (two `MatmulParams` and the grid split), a0, b0, a1, b1 (read), c0, c1 (read_write):
/// product 0 then product 1, each as `matmul_tiled` computes it.
pub fn matmul_pair(args: &mut CpuArgs) {
    let pp: MatmulPairParams = args.params();
    let (a0, b0, a1, b1) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let (c0, c1) = (args.f32_out(0), args.f32_out(1));
    product(bytemuck::cast(pp.p0), a0, b0, c0);
    product(bytemuck::cast(pp.p1), a1, b1, c1);
}

/// Bindings as `matmul_pair` (one shape, A shared), then h (read_write): u = product 0, v = product 1,
/// h = silu(u) ⊙ v as the gated family's twin computes it.
pub fn matmul_pair_silu_gate(args: &mut CpuArgs) {
    let pp: MatmulPairParams = args.params();
    let (a0, b0, a1, b1) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let (u, v, h) = (args.f32_out(0), args.f32_out(1), args.f32_out(2));
    product(bytemuck::cast(pp.p0), a0, b0, u);
    product(bytemuck::cast(pp.p1), a1, b1, v);
    let n = (pp.p0.batch * pp.p0.stride_c) as usize;
    super::gated::silu_gate_into(&u[..n], &v[..n], &mut h[..n]);
}

/// Bindings: params (as `matmul_pair`), g, b0, a1, u, v (read), c1, du, dv (read_write): dH = product 0
/// of g and b0, then du and dv from it as the gated family's `silu_gate_bwd` twin computes them (dH is
/// never stored); product 1 of a1 and g into c1. The numbers of `matmul_pair` then `silu_gate_bwd`.
pub fn matmul_pair_silu_gate_bwd(args: &mut CpuArgs) {
    let pp: MatmulPairParams = args.params();
    let (g, b0, a1, u, v) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3), args.f32_in(4));
    let (c1, du, dv) = (args.f32_out(0), args.f32_out(1), args.f32_out(2));
    let p0: MatmulParams = bytemuck::cast(pp.p0);
    let n = (p0.batch * p0.stride_c) as usize;
    let mut dh = vec![0f32; n];
    product(p0, g, b0, &mut dh);
    product(bytemuck::cast(pp.p1), a1, g, c1);
    super::gated::silu_gate_grads_into(&u[..n], &v[..n], &dh, &mut du[..n], &mut dv[..n]);
}

/// Bindings as `matmul_tiled`; A and/or B hold f16 pairs (`MatmulParams::half`), widened exactly
/// before the same f32 product.
pub fn matmul_half(args: &mut CpuArgs) {
    let p: MatmulParams = args.params();
    // Elements of a whole (batched) operand: the last batch matrix's offset plus one matrix.
    let (m, n, k, z) = (p.m as usize, p.n as usize, p.k as usize, p.batch.max(1) as usize - 1);
    let widen = |i: usize, bit: u32, len: usize| -> Option<Vec<f32>> {
        (p.half & bit != 0).then(|| f16::unpack(args.u32_in(i), len))
    };
    let wa = widen(0, HALF_A, z * p.stride_a as usize + m * k);
    let wb = widen(1, HALF_B, z * p.stride_b as usize + k * n);
    let a = wa.as_deref().unwrap_or_else(|| args.f32_in(0));
    let b = wb.as_deref().unwrap_or_else(|| args.f32_in(1));
    product(p, a, b, args.f32_out(0));
}

/// Bindings: params (`MatmulEpiParams`), a, b (read), c (read_write), bias (read), and for the `_keep`
/// entry points z (read_write): the product as `matmul_tiled` computes it, then each row of C takes the
/// bias (a copy kept in z) and the activation as the broadcast add's and the unary op's twins compute
/// them (the same numbers as those three dispatches). Serves every `*_bias_act*` entry point and variant.
pub fn matmul_bias_act(args: &mut CpuArgs) {
    let p: MatmulEpiParams = args.params();
    let mm: MatmulParams = bytemuck::cast(p.mm);
    let (a, b, bias) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let keep = args.outs.len() > 1;
    let c = args.f32_out(0);
    product(mm, a, b, c);
    let n = mm.n as usize;
    let len = mm.batch as usize * mm.stride_c as usize;
    if n == 0 || len == 0 {
        return;
    }
    let apply = |row: &mut [f32], z: Option<&mut [f32]>| {
        row.iter_mut().zip(&bias[..n]).for_each(|(v, &bv)| *v += bv);
        if let Some(z) = z {
            z.copy_from_slice(row);
        }
        if p.act != 0 {
            super::elementwise::unary_in_place(p.act - 1, p.act_alpha, row);
        }
    };
    let rows = c[..len].par_chunks_mut(n).with_min_len(64);
    if keep {
        let z = &mut args.f32_out(1)[..len];
        rows.zip(z.par_chunks_mut(n)).for_each(|(row, z)| apply(row, Some(z)));
    } else {
        rows.for_each(|row| apply(row, None));
    }
}

/// Bindings: params, t (read: y or z), dy (read), dz (read_write), db (read_write): dz = dy·act' row by
/// row (from z through the unary op's backward twin, or from y), then db = the column sums of dz, rows
/// in order.
pub fn matmul_act_bias_bwd(args: &mut CpuArgs) {
    let p: MatmulBiasBwdParams = args.params();
    let (t, dy) = (args.f32_in(0), args.f32_in(1));
    let dz = args.f32_out(0);
    let db = args.f32_out(1);
    let (rows, n) = (p.rows as usize, p.n as usize);
    if n == 0 {
        return;
    }
    let len = rows * n;
    dz[..len].par_chunks_mut(n).enumerate().with_min_len(64).for_each(|(r, out)| {
        let (tr, gr) = (&t[r * n..][..n], &dy[r * n..][..n]);
        match (p.act, p.from_out) {
            (0, _) => out.copy_from_slice(gr),
            (a, 1) => {
                out.iter_mut().zip(tr).zip(gr).for_each(|((o, &y), &g)| *o = g * deriv_from_out(a - 1, y, p.alpha))
            }
            (a, _) => {
                out.copy_from_slice(tr);
                super::elementwise::unary_backward_in_place(a - 1, p.alpha, out, gr);
            }
        }
    });
    let db = &mut db[..n];
    db.fill(0.0);
    for row in dz[..len].chunks(n) {
        db.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
    }
}

fn run(args: &mut CpuArgs) {
    let p: MatmulParams = args.params();
    let (a, b) = (args.f32_in(0), args.f32_in(1));
    product(p, a, b, args.f32_out(0));
}

/// One (batched) product as the matmul family's params describe it.
fn product(p: MatmulParams, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let (sa, sb, sc) = (p.stride_a as usize, p.stride_b as usize, p.stride_c as usize);
    if m == 0 || n == 0 || p.batch == 0 {
        return;
    }
    let one = |z: usize, cz: &mut [f32]| {
        // op(A)[i, kk] = a[i*rs + kk*cs]: [M,K] storage, or [K,M] read transposed.
        let av = &a[z * sa..];
        let bv = &b[z * sb..];
        let am = if p.trans_a == 1 { MatRef { data: av, rs: 1, cs: m } } else { MatRef { data: av, rs: k, cs: 1 } };
        let bm = if p.trans_b == 1 { MatRef { data: bv, rs: 1, cs: k } } else { MatRef { data: bv, rs: n, cs: 1 } };
        gemm_alpha(m, n, k, am, bm, &mut cz[..m * n], p.alpha, p.accumulate == 1);
    };
    let batch = p.batch as usize;
    // Matrices of C are disjoint when stride_c >= M*N (always, from the op layer).
    if batch > 1 && sc >= m * n && m.saturating_mul(n).saturating_mul(k) < PAR_BATCH_WORK {
        c.par_chunks_mut(sc).take(batch).enumerate().for_each(|(z, cz)| one(z, cz));
    } else {
        for z in 0..batch {
            one(z, &mut c[z * sc..]);
        }
    }
}

/// C = alpha*A*B (+ C), rounded as the shader does: alpha scales the finished dot product, then the
/// old C is added.
#[allow(clippy::too_many_arguments)]
fn gemm_alpha(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], alpha: f32, accumulate: bool) {
    if alpha == 1.0 {
        sgemm(m, n, k, a, b, c, n, accumulate);
    } else if !accumulate {
        sgemm(m, n, k, a, b, c, n, false);
        c.iter_mut().for_each(|v| *v *= alpha);
    } else {
        // Folding alpha into C (C/alpha, accumulate, *alpha) would round differently and fail at 0.
        let mut t = vec![0f32; m * n];
        sgemm(m, n, k, a, b, &mut t, n, false);
        c.iter_mut().zip(&t).for_each(|(v, &x)| *v += alpha * x);
    }
}
