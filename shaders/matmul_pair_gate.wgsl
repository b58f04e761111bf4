// A gated MLP's backward through its output projection, with the gate's backward as the epilogue.
// The projection y = op(H)·op(W) of h = silu(u) ⊙ v has the product pair dH = α0·op(G)·op(W') and
// dW = α1·op(H')·op(G) (+ dW), both reading the output's gradient G, as matmul_pair.wgsl computes
// them (the same tile code, common/matmul_tile.wgsl). dH is read by the gate's backward alone, so it
// is never stored: each workgroup of product 0 turns its tile of dH, in registers, into
// du = dH ⊙ v ⊙ silu'(u) and dv = dH ⊙ silu(u) (shaders/gated.wgsl's formulas, common/silu_gate.wgsl).
// G is bound once for both products (A of product 0, B of product 1): 8 storage buffers, WebGPU's
// default limit.
//
// Grid: as matmul_pair's (x over the tiles of product 0 then product 1's, z over the larger batch);
// every workgroup works on one product only, so the barriers stay in uniform control flow.
//#include "common/index.wgsl"
//#include "common/gemm_tile.wgsl"
//#include "common/matmul_pair_params.wgsl"
//#include "common/silu_gate.wgsl"

@group(0) @binding(0) var<uniform> pp2: MatmulPairParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> b0: array<f32>;
@group(0) @binding(3) var<storage, read> a1: array<f32>;
@group(0) @binding(4) var<storage, read> u: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> c1: array<f32>;
@group(0) @binding(7) var<storage, read_write> du: array<f32>;
@group(0) @binding(8) var<storage, read_write> dv: array<f32>;

// Operand accessors for common/matmul_tile.wgsl: q selects the product. Only product 1 is stored.
fn mm_a(q: u32, i: u32) -> f32 {
    if q == 0u { return g[i]; }
    return a1[i];
}
fn mm_b(q: u32, i: u32) -> f32 {
    if q == 0u { return b0[i]; }
    return g[i];
}
fn mm_c(q: u32, i: u32) -> f32 {
    return c1[i];
}
fn mm_set_c(q: u32, i: u32, x: f32) {
    c1[i] = x;
}

//#include "common/matmul_tile.wgsl"

@compute @workgroup_size(16, 16)
fn matmul_pair_silu_gate_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let tx = lid3.x;
    let ty = lid3.y;
    if wid.x >= pp2.tiles0 {
        let pq = pp2.p1;
        let t = wid.x - pp2.tiles0;
        if wid.z >= pq.batch { return; }
        let m0 = (t / pp2.cols1) * TM;
        let n0 = (t % pp2.cols1) * TN;
        let acc = tile_product(1u, pq, m0, n0, wid.z, lid, tx, ty);
        store_tile(1u, pq, m0, n0, wid.z, tx, ty, acc);
        return;
    }
    let pq = pp2.p0;
    if wid.z >= pq.batch { return; }
    let m0 = (wid.x / pp2.cols0) * TM;
    let n0 = (wid.x % pp2.cols0) * TN;
    let acc = tile_product(0u, pq, m0, n0, wid.z, lid, tx, ty);
    let base = wid.z * pq.stride_c;
    gate_bwd_row(base, m0 + 4u * ty, n0 + 4u * tx, pq, acc.r0);
    gate_bwd_row(base, m0 + 4u * ty + 1u, n0 + 4u * tx, pq, acc.r1);
    gate_bwd_row(base, m0 + 4u * ty + 2u, n0 + 4u * tx, pq, acc.r2);
    gate_bwd_row(base, m0 + 4u * ty + 3u, n0 + 4u * tx, pq, acc.r3);
}

// du, dv at [row, col..col+3] from dH = alpha times the sums (the value store_row would have written;
// product 0 never accumulates).
fn gate_bwd_row(base: u32, row: u32, col: u32, pq: MatmulParams, d4: vec4<f32>) {
    if row >= pq.m { return; }
    for (var j = 0u; j < 4u; j++) {
        if col + j >= pq.n { return; }
        let i = base + row * pq.n + col + j;
        let d = silu_gate_grads(u[i], v[i], pq.alpha * d4[j]);
        du[i] = d.x;
        dv[i] = d.y;
    }
}
