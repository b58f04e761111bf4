// Two independent matrix products in one dispatch: C0 = alpha0*op(A0)*op(B0) (+ C0) and
// C1 = alpha1*op(A1)*op(B1) (+ C1), each exactly as matmul_tiled in shaders/matmul.wgsl computes it (the
// same tile code, common/matmul_tile.wgsl, so the same numbers). A linear layer's backward is such a
// pair: dX = dY*W^T and dW = X^T*dY read the same dY and nothing of each other.
//
// Grid: x runs over the 64x64 tiles of C0 (the first `tiles0`) then those of C1, z over the batch (the
// larger one; a workgroup past its product's batch returns at once). Every workgroup works on one
// product only, so the choice is uniform over it and the barriers stay in uniform control flow.
//
// matmul_pair_silu_gate: the gated MLP's input projections and gate, u = x*W_gate, v = x*W_up and
// h = silu(u) ⊙ v (as shaders/gated.wgsl), for two products of one shape: each workgroup makes one
// tile of u and the same tile of v, then h from its registers. Grid: x over the tiles of one product.
//#include "common/index.wgsl"
//#include "common/gemm_tile.wgsl"
//#include "common/matmul_io.wgsl"
//#include "common/silu_gate.wgsl"
//#include "common/matmul_pair_params.wgsl"

@group(0) @binding(0) var<uniform> pp2: MatmulPairParams;
@group(0) @binding(1) var<storage, read> a0: array<f32>;
@group(0) @binding(2) var<storage, read> b0: array<f32>;
@group(0) @binding(3) var<storage, read> a1: array<f32>;
@group(0) @binding(4) var<storage, read> b1: array<f32>;
@group(0) @binding(5) var<storage, read_write> c0: array<f32>;
@group(0) @binding(6) var<storage, read_write> c1: array<f32>;

// Operand accessors for common/matmul_tile.wgsl: q selects the product.
fn mm_a(q: u32, i: u32) -> f32 {
    if q == 0u { return a0[i]; }
    return a1[i];
}
fn mm_b(q: u32, i: u32) -> f32 {
    if q == 0u { return b0[i]; }
    return b1[i];
}
fn mm_c(q: u32, i: u32) -> f32 {
    if q == 0u { return c0[i]; }
    return c1[i];
}
fn mm_set_c(q: u32, i: u32, v: f32) {
    if q == 0u { c0[i] = v; } else { c1[i] = v; }
}

//#include "common/matmul_tile.wgsl"

@compute @workgroup_size(16, 16)
fn matmul_pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    var q = 0u;
    var t = wid.x;
    var pq = pp2.p0;
    var cols = pp2.cols0;
    if wid.x >= pp2.tiles0 {
        q = 1u;
        t = wid.x - pp2.tiles0;
        pq = pp2.p1;
        cols = pp2.cols1;
    }
    if wid.z >= pq.batch { return; }
    let m0 = (t / cols) * TM;
    let n0 = (t % cols) * TN;
    let acc = tile_product(q, pq, m0, n0, wid.z, lid, lid3.x, lid3.y);
    store_tile(q, pq, m0, n0, wid.z, lid3.x, lid3.y, acc);
}

@group(0) @binding(7) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(16, 16)
fn matmul_pair_silu_gate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let pu = pp2.p0;
    let pv = pp2.p1;
    if wid.z >= pu.batch { return; }
    let m0 = (wid.x / pp2.cols0) * TM;
    let n0 = (wid.x % pp2.cols0) * TN;
    let tx = lid3.x;
    let ty = lid3.y;
    let au = tile_product(0u, pu, m0, n0, wid.z, lid, tx, ty);
    let av = tile_product(1u, pv, m0, n0, wid.z, lid, tx, ty);
    store_tile(0u, pu, m0, n0, wid.z, tx, ty, au);
    store_tile(1u, pv, m0, n0, wid.z, tx, ty, av);
    let base = wid.z * pu.stride_c;
    gate_row(base, m0 + 4u * ty, n0 + 4u * tx, pu, au.r0, av.r0);
    gate_row(base, m0 + 4u * ty + 1u, n0 + 4u * tx, pu, au.r1, av.r1);
    gate_row(base, m0 + 4u * ty + 2u, n0 + 4u * tx, pu, au.r2, av.r2);
    gate_row(base, m0 + 4u * ty + 3u, n0 + 4u * tx, pu, au.r3, av.r3);
}

// h[row, col..col+3] = silu(u) ⊙ v of the values store_row wrote (alpha times the sums; no accumulate).
fn gate_row(base: u32, row: u32, col: u32, pu: MatmulParams, u4: vec4<f32>, v4: vec4<f32>) {
    if row >= pu.m { return; }
    for (var j = 0u; j < 4u; j++) {
        if col + j >= pu.n { return; }
        h[base + row * pu.n + col + j] = silu_gate_of(pp2.p0.alpha * u4[j], pp2.p1.alpha * v4[j]);
    }
}
