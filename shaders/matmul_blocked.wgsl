// Batched matrix multiply in tile variants: C[b] = alpha * op(A[b]) * op(B[b]) (+ C[b] when accumulate),
// the same params, bindings, grid and results as matmul_tiled in shaders/matmul.wgsl (src/ops/matmul.rs
// dispatches either; one CPU twin serves both). A workgroup owns a BM x BN block of C; its
// (BN/RN) x (BM/RM) threads each accumulate an RM x RN register block; operand tiles BK deep are staged
// through workgroup memory, k-major. Any M, N, K (loads zero-fill, stores are bounds-checked).
//
// The family's own form is 64x64 blocks, 4x4 per thread, depth 16 (matmul_tiled's shape), dispatched on
// a grid of 64x64 tiles; the variants below change the block (the engine divides that grid by `grid`),
// the register block and the depth, and `device::tune` times them on the running GPU. Every product
// sums K in order into one accumulator, as matmul_tiled does. `matmul_blocked_bias_act` is the same
// product stored through common/matmul_epilogue.wgsl (C = act(alpha·op(A)·op(B) + bias[col])), and
// `matmul_blocked_bias_act_keep` also stores the pre-activation; every variant has them.

const BM: u32 = 64u;   // rows of C per workgroup
const BN: u32 = 64u;   // columns of C per workgroup
const BK: u32 = 16u;   // depth of one shared-memory step
const RM: u32 = 4u;    // rows of C per thread
const RN: u32 = 4u;    // columns of C per thread
const WX: u32 = BN / RN;
const WY: u32 = BM / RM;
const THREADS: u32 = WX * WY;
//#variant k8 BK=8u
//#variant k32 BK=32u
//#variant r8x8 RM=8u RN=8u
//#variant t128x64 BM=128u RM=8u grid=1,2,1
//#variant t128x64k32 BM=128u RM=8u BK=32u grid=1,2,1
//#variant t64x128 BN=128u RN=8u grid=2,1,1
//#variant t128x128 BM=128u BN=128u RM=8u RN=8u BK=8u grid=2,2,1
//#variant t128x128k16 BM=128u BN=128u RM=8u RN=8u grid=2,2,1

//#include "common/matmul_io.wgsl"
//#include "common/matmul_epilogue.wgsl"

// k-major tiles: ta[kk * BM + i] = op(A)[m0 + i, k0 + kk], tb[kk * BN + j] = op(B)[k0 + kk, n0 + j].
var<workgroup> ta: array<f32, BK * BM>;
var<workgroup> tb: array<f32, BK * BN>;

// This thread's RM x RN block of op(A)·op(B) for the block of C at wid.
fn blocked_product(pq: MatmulParams, wid: vec3<u32>, lid3: vec3<u32>, lid: u32) -> array<f32, RM * RN> {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let base_a = wid.z * pq.stride_a;
    let base_b = wid.z * pq.stride_b;
    // Element strides of op(A) and op(B) as stored: op(A)[i, kk] = a[base_a + i*sa.x + kk*sa.y].
    let sa = select(vec2<u32>(pq.k, 1u), vec2<u32>(1u, pq.m), pq.trans_a == 1u);
    let sb = select(vec2<u32>(pq.n, 1u), vec2<u32>(1u, pq.k), pq.trans_b == 1u);
    // This thread's block: rows m0 + RM*ty .., columns n0 + RN*tx ...
    let r0 = RM * lid3.y;
    let c0 = RN * lid3.x;

    var acc: array<f32, RM * RN>;
    var bv: array<f32, RN>;
    for (var k0 = 0u; k0 < pq.k; k0 += BK) {
        // Consecutive threads walk the stored operand's contiguous dimension so global reads coalesce.
        for (var e = lid; e < BM * BK; e += THREADS) {
            var i = e / BK;
            var kk = e % BK;
            if pq.trans_a == 1u {
                i = e % BM;
                kk = e / BM;
            }
            var v = 0.0;
            if m0 + i < pq.m && k0 + kk < pq.k {
                v = a[base_a + (m0 + i) * sa.x + (k0 + kk) * sa.y];
            }
            ta[kk * BM + i] = v;
        }
        for (var e = lid; e < BN * BK; e += THREADS) {
            var j = e % BN;
            var kb = e / BN;
            if pq.trans_b == 1u {
                j = e / BK;
                kb = e % BK;
            }
            var w = 0.0;
            if k0 + kb < pq.k && n0 + j < pq.n {
                w = b[base_b + (k0 + kb) * sb.x + (n0 + j) * sb.y];
            }
            tb[kb * BN + j] = w;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            for (var q = 0u; q < RN; q++) {
                bv[q] = tb[kk * BN + c0 + q];
            }
            for (var r = 0u; r < RM; r++) {
                let av = ta[kk * BM + r0 + r];
                for (var q = 0u; q < RN; q++) {
                    acc[r * RN + q] += av * bv[q];
                }
            }
        }
        workgroupBarrier();
    }

    return acc;
}

@compute @workgroup_size(WX, WY)
fn matmul_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let acc = blocked_product(p, wid, lid3, lid);
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let r0 = RM * lid3.y;
    let c0 = RN * lid3.x;
    let base_c = wid.z * p.stride_c;
    for (var r = 0u; r < RM; r++) {
        let row = m0 + r0 + r;
        if row >= p.m { break; }
        for (var q = 0u; q < RN; q++) {
            let col = n0 + c0 + q;
            if col >= p.n { break; }
            let at = base_c + row * p.n + col;
            // The old C is read only when accumulating: a fresh output may hold anything (even NaN).
            var old = 0.0;
            if p.accumulate == 1u { old = c[at]; }
            c[at] = p.alpha * acc[r * RN + q] + old;
        }
    }
}

@compute @workgroup_size(WX, WY)
fn matmul_blocked_bias_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let pp = pe.mm;
    let acc = blocked_product(pp, wid, lid3, lid);
    let base_c = wid.z * pp.stride_c;
    for (var r = 0u; r < RM; r++) {
        let row = wid.y * BM + RM * lid3.y + r;
        if row >= pp.m { break; }
        for (var q = 0u; q < RN; q++) {
            let col = wid.x * BN + RN * lid3.x + q;
            if col >= pp.n { break; }
            epi_store(base_c + row * pp.n + col, col, acc[r * RN + q]);
        }
    }
}

@compute @workgroup_size(WX, WY)
fn matmul_blocked_bias_act_keep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let pp = pe.mm;
    let acc = blocked_product(pp, wid, lid3, lid);
    let base_c = wid.z * pp.stride_c;
    for (var r = 0u; r < RM; r++) {
        let row = wid.y * BM + RM * lid3.y + r;
        if row >= pp.m { break; }
        for (var q = 0u; q < RN; q++) {
            let col = wid.x * BN + RN * lid3.x + q;
            if col >= pp.n { break; }
            epi_store_keep(base_c + row * pp.n + col, col, acc[r * RN + q]);
        }
    }
}
