// matmul_tiled's work for one 64x64 tile of C, shared by matmul.wgsl (one product), matmul_pair.wgsl
// (two independent products in one dispatch), matmul_half.wgsl (f16 operands) and matmul_grouped.wgsl
// (a table of products). The including shader defines the operand accessors `mm_a(q, i)`, `mm_b(q, i)`,
// `mm_c(q, i)` and `mm_set_c(q, i, v)` over its bindings; q names the product (always 0 in matmul.wgsl),
// a value uniform over the workgroup. Needs common/gemm_tile.wgsl and common/matmul_params.wgsl.

// op(A)·op(B) for the tile at rows m0.., columns n0.. of batch matrix z: this thread's 4x4 block.
fn tile_product(q: u32, pp: MatmulParams, m0: u32, n0: u32, z: u32, lid: u32, tx: u32, ty: u32) -> Acc {
    let base_a = z * pp.stride_a;
    let base_b = z * pp.stride_b;
    // Element strides of op(A) and op(B) as stored: op(A)[i, kk] = a[base_a + i*sa.x + kk*sa.y].
    let sa = select(vec2<u32>(pp.k, 1u), vec2<u32>(1u, pp.m), pp.trans_a == 1u);
    let sb = select(vec2<u32>(pp.n, 1u), vec2<u32>(1u, pp.k), pp.trans_b == 1u);

    var acc = Acc();
    for (var k0 = 0u; k0 < pp.k; k0 += TK) {
        // Each tile holds 64*TK values, TK/4 per thread. Consecutive threads walk the stored operand's
        // contiguous dimension so global reads coalesce: along kk when A is [M,K], along i when A is
        // [K,M] (likewise for B). Out-of-range values load as 0, so partial tiles add nothing.
        for (var t = 0u; t < TK / 4u; t++) {
            let e = lid + t * 256u;
            var i = e / TK;
            var kk = e % TK;
            if pp.trans_a == 1u {
                i = e % TM;
                kk = e / TM;
            }
            var v = 0.0;
            if m0 + i < pp.m && k0 + kk < pp.k {
                v = mm_a(q, base_a + (m0 + i) * sa.x + (k0 + kk) * sa.y);
            }
            as_[kk * PITCH + i / 4u][i % 4u] = v;

            var j = e % TN;
            var kb = e / TN;
            if pp.trans_b == 1u {
                j = e / TK;
                kb = e % TK;
            }
            var w = 0.0;
            if k0 + kb < pp.k && n0 + j < pp.n {
                w = mm_b(q, base_b + (k0 + kb) * sb.x + (n0 + j) * sb.y);
            }
            bs[kb * PITCH + j / 4u][j % 4u] = w;
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, tx, ty);
        workgroupBarrier();
    }
    return acc;
}

// Writes this thread's block of the tile: C = alpha*acc (+ C).
fn store_tile(q: u32, pp: MatmulParams, m0: u32, n0: u32, z: u32, tx: u32, ty: u32, acc: Acc) {
    let base_c = z * pp.stride_c;
    let row = m0 + 4u * ty;
    let col = n0 + 4u * tx;
    store_row(q, pp, base_c, row, col, acc.r0);
    store_row(q, pp, base_c, row + 1u, col, acc.r1);
    store_row(q, pp, base_c, row + 2u, col, acc.r2);
    store_row(q, pp, base_c, row + 3u, col, acc.r3);
}

// C[row, col..col+3] = alpha*v (+ C), the row and each column bounds-checked.
fn store_row(q: u32, pp: MatmulParams, base_c: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= pp.m { return; }
    for (var j = 0u; j < 4u; j++) {
        if col + j >= pp.n { return; }
        let at = base_c + row * pp.n + col + j;
        // The old C is read only when accumulating: a fresh output may hold anything (even NaN).
        var old = 0.0;
        if pp.accumulate == 1u { old = mm_c(q, at); }
        mm_set_c(q, at, pp.alpha * v[j] + old);
    }
}
