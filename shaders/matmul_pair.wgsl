// Two independent matrix products in one dispatch: C0 = alpha0*op(A0)*op(B0) (+ C0) and
// C1 = alpha1*op(A1)*op(B1) (+ C1), each exactly as matmul_tiled in shaders/matmul.wgsl computes it (the
// same tile code, common/matmul_tile.wgsl, so the same numbers). A linear layer's backward is such a
// pair: dX = dY*W^T and dW = X^T*dY read the same dY and nothing of each other.
//
// Grid: x runs over the 64x64 tiles of C0 (the first `tiles0`) then those of C1, z over the batch (the
// larger one; a workgroup past its product's batch returns at once). Every workgroup works on one
// product only, so the choice is uniform over it and the barriers stay in uniform control flow.
//#include "common/index.wgsl"
//#include "common/gemm_tile.wgsl"
//#include "common/matmul_io.wgsl"

struct MatmulPairParams {
    p0: MatmulParams,
    p1: MatmulParams,
    tiles0: u32,   // tiles of C0: workgroups 0..tiles0 work on product 0, the rest on product 1
    cols0: u32,    // tile columns of C0 (ceil(N0 / 64))
    cols1: u32,    // tile columns of C1
    _pad: u32,
}

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
