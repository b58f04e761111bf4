//! CPU twin of shaders/matmul_grouped.wgsl: per problem of the table, one `sgemm` on strided views of
//! the arenas (the transposes of A and B are strides, as in the shader), then C = alpha·C + beta·D
//! rounded as the shader does (alpha scales the finished dot product, then beta·D is added); a
//! transposed C is the product of the transposed operands in swapped order.

use super::CpuArgs;
use crate::host::gemm::{sgemm, MatRef};
use crate::kernels::matmul_grouped::{GroupedParams, PROBLEM_WORDS};

/// Bindings: params, problems (read), a (read), b (read), d (read), c (read_write).
pub fn matmul_grouped(args: &mut CpuArgs) {
    let p: GroupedParams = args.params();
    let table = args.u32_in(0);
    let (a, b, d) = (args.f32_in(1), args.f32_in(2), args.f32_in(3));
    let c = args.f32_out(0);
    for w in table.chunks_exact(PROBLEM_WORDS).take(p.count as usize) {
        let [m, n, k, oa, ob, oc, od] = [w[0], w[1], w[2], w[3], w[4], w[5], w[6]].map(|v| v as usize);
        let (trans_a, trans_b) = (w[7] == 1, w[8] == 1);
        let (alpha, beta) = (f32::from_bits(w[9]), f32::from_bits(w[10]));
        if m == 0 || n == 0 {
            continue;
        }
        let av = &a[oa..];
        let bv = &b[ob..];
        let am = if trans_a { MatRef { data: av, rs: 1, cs: m } } else { MatRef { data: av, rs: k, cs: 1 } };
        let bm = if trans_b { MatRef { data: bv, rs: 1, cs: k } } else { MatRef { data: bv, rs: n, cs: 1 } };
        let cq = &mut c[oc..oc + m * n];
        if w[12] == 1 {
            // Cᵀ = op(B)ᵀ·op(A)ᵀ, row-major [n, m]: the same products summed in the same order.
            let bt = MatRef { data: bv, rs: bm.cs, cs: bm.rs };
            let at = MatRef { data: av, rs: am.cs, cs: am.rs };
            sgemm(n, m, k, bt, at, cq, m, false);
        } else {
            sgemm(m, n, k, am, bm, cq, n, false);
        }
        if beta != 0.0 {
            for (v, &dv) in cq.iter_mut().zip(&d[od..od + m * n]) {
                *v = alpha * *v + beta * dv;
            }
        } else if alpha != 1.0 {
            cq.iter_mut().for_each(|v| *v *= alpha);
        }
    }
}
