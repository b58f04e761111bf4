// Batched matrix multiply: C[b] = alpha * op(A[b]) * op(B[b]) (+ C[b] when accumulate), every matrix
// row-major, op = identity or transpose per operand. op(A) is M x K (stored [M,K], or [K,M] when
// trans_a), op(B) is K x N (stored [K,N], or [N,K] when trans_b), C is M x N. Batch strides are in
// elements; a stride of 0 reuses one matrix for the whole batch (a weight shared by every sample).
//
// Three entry points share one params struct; src/ops/matmul.rs (`choose_kernel`) picks one:
//   matmul_tiled       64x64 C tile per workgroup, 16x16 threads with a 4x4 register block each,
//                      K in steps of 16 through workgroup memory; any M, N, K (loads zero-fill).
//   matmul_tiled_vec4  the same tiling with vec4 global loads and stores; needs the contiguous
//                      dimension of each stored operand and N to be multiples of 4.
//   matmul_small       one thread per element of C, for shapes where a 64x64 tile would mostly idle.
// Each has a `*_bias_act` twin entry point: the same product, stored through common/matmul_epilogue.wgsl
// (C = act(alpha·op(A)·op(B) + bias[col]); params MatmulEpiParams, the bias at binding 4).
//#include "common/index.wgsl"
//#include "common/gemm_tile.wgsl"

const SMALL_WG: u32 = 256u;

//#include "common/matmul_io.wgsl"
//#include "common/matmul_epilogue.wgsl"

// ---------------------------------------------------------------------------------------------
// matmul_tiled: scalar loads

// The single product's operand accessors for common/matmul_tile.wgsl (q is always 0 here).
fn mm_a(q: u32, i: u32) -> f32 { return a[i]; }
fn mm_b(q: u32, i: u32) -> f32 { return b[i]; }
fn mm_c(q: u32, i: u32) -> f32 { return c[i]; }
fn mm_set_c(q: u32, i: u32, v: f32) { c[i] = v; }

//#include "common/matmul_tile.wgsl"

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    // This thread's block: columns n0 + 4*lid3.x .. +3, rows m0 + 4*lid3.y .. +3.
    let acc = tile_product(0u, p, m0, n0, wid.z, lid, lid3.x, lid3.y);
    store_tile(0u, p, m0, n0, wid.z, lid3.x, lid3.y, acc);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_bias_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let pp = pe.mm;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let acc = tile_product(0u, pp, m0, n0, wid.z, lid, lid3.x, lid3.y);
    let base_c = wid.z * pp.stride_c;
    let row = m0 + 4u * lid3.y;
    let col = n0 + 4u * lid3.x;
    store_row_epi(pp, base_c, row, col, acc.r0);
    store_row_epi(pp, base_c, row + 1u, col, acc.r1);
    store_row_epi(pp, base_c, row + 2u, col, acc.r2);
    store_row_epi(pp, base_c, row + 3u, col, acc.r3);
}

// common/matmul_tile.wgsl's store_row through the epilogue.
fn store_row_epi(pp: MatmulParams, base_c: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= pp.m { return; }
    for (var j = 0u; j < 4u; j++) {
        if col + j >= pp.n { return; }
        epi_store(base_c + row * pp.n + col + j, col + j, v[j]);
    }
}

// matmul_tiled_bias_act also storing the pre-activation (the vec4 kernel's shapes take this one too).
@compute @workgroup_size(16, 16)
fn matmul_tiled_bias_act_keep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let pp = pe.mm;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let acc = tile_product(0u, pp, m0, n0, wid.z, lid, lid3.x, lid3.y);
    let base_c = wid.z * pp.stride_c;
    let row = m0 + 4u * lid3.y;
    let col = n0 + 4u * lid3.x;
    let rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    for (var r = 0u; r < 4u; r++) {
        if row + r >= pp.m { return; }
        for (var j = 0u; j < 4u; j++) {
            if col + j >= pp.n { break; }
            epi_store_keep(base_c + (row + r) * pp.n + col + j, col + j, rows[r][j]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// matmul_tiled_vec4: the same tiling, global memory as vec4 (indices and strides below are in vec4s).
// Preconditions (checked by the op layer): the stored row length of A (K, or M when trans_a), of B
// (N, or K when trans_b) and N are multiples of 4, so a vec4 never straddles a row or the bounds.

@group(0) @binding(0) var<uniform> p4: MatmulParams;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;

// This thread's 4x4 block of the tile of C at wid (the vec4 entry points' product).
fn vec4_product(pq: MatmulParams, wid: vec3<u32>, lid3: vec3<u32>, lid: u32) -> Acc {
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let tx = lid3.x;
    let ty = lid3.y;
    let base_a = wid.z * (pq.stride_a / 4u);
    let base_b = wid.z * (pq.stride_b / 4u);

    var acc = Acc();
    for (var k0 = 0u; k0 < pq.k; k0 += TK) {
        // Each tile holds 16*TK vec4s, TK/16 per thread.
        for (var t = 0u; t < TK / 16u; t++) {
            let e = lid + t * 256u;
            if pq.trans_a == 1u {
                // A stored [K,M]: the vec4 holds rows i..i+3 of one kk; lands whole in the k-major tile.
                let iv = e % 16u;
                let kk = e / 16u;
                var v = vec4<f32>(0.0);
                if k0 + kk < pq.k && m0 + 4u * iv < pq.m {
                    v = a4[base_a + (k0 + kk) * (pq.m / 4u) + m0 / 4u + iv];
                }
                as_[kk * PITCH + iv] = v;
            } else {
                // A stored [M,K]: the vec4 holds kk..kk+3 of one row; scattered over four tile rows.
                let kv = e % (TK / 4u);
                let i = e / (TK / 4u);
                var v = vec4<f32>(0.0);
                if m0 + i < pq.m && k0 + 4u * kv < pq.k {
                    v = a4[base_a + (m0 + i) * (pq.k / 4u) + k0 / 4u + kv];
                }
                for (var q = 0u; q < 4u; q++) {
                    as_[(4u * kv + q) * PITCH + i / 4u][i % 4u] = v[q];
                }
            }
            if pq.trans_b == 1u {
                // B stored [N,K]: the vec4 holds kk..kk+3 of one column j.
                let kv = e % (TK / 4u);
                let j = e / (TK / 4u);
                var w = vec4<f32>(0.0);
                if n0 + j < pq.n && k0 + 4u * kv < pq.k {
                    w = b4[base_b + (n0 + j) * (pq.k / 4u) + k0 / 4u + kv];
                }
                for (var q = 0u; q < 4u; q++) {
                    bs[(4u * kv + q) * PITCH + j / 4u][j % 4u] = w[q];
                }
            } else {
                // B stored [K,N]: the vec4 holds columns j..j+3 of one kk.
                let jv = e % 16u;
                let kk = e / 16u;
                var w = vec4<f32>(0.0);
                if k0 + kk < pq.k && n0 + 4u * jv < pq.n {
                    w = b4[base_b + (k0 + kk) * (pq.n / 4u) + n0 / 4u + jv];
                }
                bs[kk * PITCH + jv] = w;
            }
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, tx, ty);
        workgroupBarrier();
    }

    return acc;
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let acc = vec4_product(p4, wid, lid3, lid);
    let col = wid.x * TN + 4u * lid3.x;
    if col >= p4.n { return; }
    let base_c = wid.z * (p4.stride_c / 4u) + col / 4u;
    let row = wid.y * TM + 4u * lid3.y;
    store_row4(base_c, row, acc.r0);
    store_row4(base_c, row + 1u, acc.r1);
    store_row4(base_c, row + 2u, acc.r2);
    store_row4(base_c, row + 3u, acc.r3);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_vec4_bias_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let pp = pe.mm;
    let acc = vec4_product(pp, wid, lid3, lid);
    let col = wid.x * TN + 4u * lid3.x;
    if col >= pp.n { return; }
    let base_c = wid.z * (pp.stride_c / 4u) + col / 4u;
    let row = wid.y * TM + 4u * lid3.y;
    store_row4_epi(pp, base_c, row, col, acc.r0);
    store_row4_epi(pp, base_c, row + 1u, col, acc.r1);
    store_row4_epi(pp, base_c, row + 2u, col, acc.r2);
    store_row4_epi(pp, base_c, row + 3u, col, acc.r3);
}

// store_row4 through the epilogue (columns col..col+3).
fn store_row4_epi(pp: MatmulParams, base_c: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= pp.m { return; }
    let at = base_c + row * (pp.n / 4u);
    var old = vec4<f32>(0.0);
    if pp.accumulate == 1u { old = c4[at]; }
    let z = pp.alpha * v + old;
    c4[at] = vec4<f32>(epilogue(col, z.x), epilogue(col + 1u, z.y), epilogue(col + 2u, z.z), epilogue(col + 3u, z.w));
}

fn store_row4(base_c: u32, row: u32, v: vec4<f32>) {
    if row >= p4.m { return; }
    let at = base_c + row * (p4.n / 4u);
    var old = vec4<f32>(0.0);
    if p4.accumulate == 1u { old = c4[at]; }
    c4[at] = p4.alpha * v + old;
}

// ---------------------------------------------------------------------------------------------
// matmul_small: one thread per element of C over a flat 1-D grid (x, folded into y; see
// kernels::groups_1d), batch in z. Vector-like shapes (M or N of 1) keep every thread busy.

@group(0) @binding(0) var<uniform> ps: MatmulParams;
@group(0) @binding(1) var<storage, read> sa_: array<f32>;
@group(0) @binding(2) var<storage, read> sb_: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc: array<f32>;

// Element (row, col) of op(A)·op(B) for batch matrix z, K summed in order.
fn small_dot(pq: MatmulParams, z: u32, row: u32, col: u32) -> f32 {
    let sa = select(vec2<u32>(pq.k, 1u), vec2<u32>(1u, pq.m), pq.trans_a == 1u);
    let sb = select(vec2<u32>(pq.n, 1u), vec2<u32>(1u, pq.k), pq.trans_b == 1u);
    var ia = z * pq.stride_a + row * sa.x;
    var ib = z * pq.stride_b + col * sb.y;
    var acc = 0.0;
    for (var kk = 0u; kk < pq.k; kk++) {
        acc += sa_[ia] * sb_[ib];
        ia += sa.y;
        ib += sb.x;
    }
    return acc;
}

@compute @workgroup_size(256)
fn matmul_small_bias_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let pp = pe.mm;
    let e = flat_id(wid, nwg, lid, SMALL_WG);
    if e >= pp.m * pp.n { return; }
    let col = e % pp.n;
    epi_store(wid.z * pp.stride_c + e, col, small_dot(pp, wid.z, e / pp.n, col));
}

@compute @workgroup_size(256)
fn matmul_small_bias_act_keep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let pp = pe.mm;
    let e = flat_id(wid, nwg, lid, SMALL_WG);
    if e >= pp.m * pp.n { return; }
    let col = e % pp.n;
    epi_store_keep(wid.z * pp.stride_c + e, col, small_dot(pp, wid.z, e / pp.n, col));
}

@compute @workgroup_size(256)
fn matmul_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let e = flat_id(wid, nwg, lid, SMALL_WG);
    if e >= ps.m * ps.n { return; }
    let acc = small_dot(ps, wid.z, e / ps.n, e % ps.n);
    let at = wid.z * ps.stride_c + e;
    var old = 0.0;
    if ps.accumulate == 1u { old = sc[at]; }
    sc[at] = ps.alpha * acc + old;
}
