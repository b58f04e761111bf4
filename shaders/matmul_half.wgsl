// Matrix multiply with f16 operands: C[b] = alpha * op(A[b]) * op(B[b]) (+ C[b] when accumulate), as
// matmul_tiled in shaders/matmul.wgsl (same params, shapes, strides and transposes, C f32), where A
// and/or B are stored as f16 pairs (see shaders/cast.wgsl for the layout): bit 0 of `p.half` says A is
// f16, bit 1 says B is. f16 values are widened exactly as they are loaded; the products and the sum are
// f32 (the shared register-tiled core, common/gemm_tile.wgsl), so the only rounding f16 adds is the
// storage's own. Any M, N, K: loads zero-fill, stores are bounds-checked.
//#include "common/gemm_tile.wgsl"
//#include "common/matmul_io.wgsl"

// The operands as raw words: f32 bits, or two f16 values per word. (matmul_io's `a` and `b` take the
// same bindings; an entry point may bind each number once, and this family's entry uses these.)
@group(0) @binding(1) var<storage, read> ah: array<u32>;
@group(0) @binding(2) var<storage, read> bh: array<u32>;

// Element i of A (i counts elements, not words).
fn load_a(i: u32) -> f32 {
    if (p.half & 1u) != 0u { return unpack2x16float(ah[i / 2u])[i % 2u]; }
    return bitcast<f32>(ah[i]);
}

fn load_b(i: u32) -> f32 {
    if (p.half & 2u) != 0u { return unpack2x16float(bh[i / 2u])[i % 2u]; }
    return bitcast<f32>(bh[i]);
}

@compute @workgroup_size(16, 16)
fn matmul_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let base_a = wid.z * p.stride_a;
    let base_b = wid.z * p.stride_b;
    // op(A)[i, kk] = A[base_a + i*sa.x + kk*sa.y], likewise B, as in matmul_tiled.
    let sa = select(vec2<u32>(p.k, 1u), vec2<u32>(1u, p.m), p.trans_a == 1u);
    let sb = select(vec2<u32>(p.n, 1u), vec2<u32>(1u, p.k), p.trans_b == 1u);

    var acc = Acc();
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // Consecutive threads walk the stored operand's contiguous dimension (coalesced reads).
        for (var t = 0u; t < TK / 4u; t++) {
            let e = lid + t * 256u;
            var i = e / TK;
            var kk = e % TK;
            if p.trans_a == 1u {
                i = e % TM;
                kk = e / TM;
            }
            var v = 0.0;
            if m0 + i < p.m && k0 + kk < p.k {
                v = load_a(base_a + (m0 + i) * sa.x + (k0 + kk) * sa.y);
            }
            as_[kk * PITCH + i / 4u][i % 4u] = v;

            var j = e % TN;
            var kb = e / TN;
            if p.trans_b == 1u {
                j = e / TK;
                kb = e % TK;
            }
            var w = 0.0;
            if k0 + kb < p.k && n0 + j < p.n {
                w = load_b(base_b + (k0 + kb) * sb.x + (n0 + j) * sb.y);
            }
            bs[kb * PITCH + j / 4u][j % 4u] = w;
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, lid3.x, lid3.y);
        workgroupBarrier();
    }

    var rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    for (var r = 0u; r < 4u; r++) {
        let row = m0 + 4u * lid3.y + r;
        if row >= p.m { return; }
        for (var q = 0u; q < 4u; q++) {
            let col = n0 + 4u * lid3.x + q;
            if col >= p.n { break; }
            let at = wid.z * p.stride_c + row * p.n + col;
            // The old C is read only when accumulating: a fresh output may hold anything (even NaN).
            var old = 0.0;
            if p.accumulate == 1u { old = c[at]; }
            c[at] = p.alpha * rows[r][q] + old;
        }
    }
}
