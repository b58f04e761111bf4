//! CPU twin of shaders/matmul_grouped.wgsl: per problem of the table, one `sgemm` on strided views of
//! the arenas (the transposes of A and B are strides, as in the shader), then C = alpha·C + beta·D
//! rounded as the shader does (alpha scales the finished dot product, then beta·D is added); a
//! transposed C goes through a scratch product.

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
        let dq = if beta != 0.0 { &d[od..od + m * n] } else { &[][..] };
        let out = |v: f32, at: usize| if beta != 0.0 { alpha * v + beta * dq[at] } else { alpha * v };
        if w[12] == 1 {
            let mut t = vec![0f32; m * n];
            sgemm(m, n, k, am, bm, &mut t, n, false);
            for (e, &v) in t.iter().enumerate() {
                let at = (e % n) * m + e / n;
                cq[at] = out(v, at);
            }
        } else {
            sgemm(m, n, k, am, bm, cq, n, false);
            if beta != 0.0 || alpha != 1.0 {
                for (at, v) in cq.iter_mut().enumerate() {
                    *v = out(*v, at);
                }
            }
        }
    }
}
