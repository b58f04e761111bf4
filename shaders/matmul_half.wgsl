// Matrix multiply with f16 operands: C[b] = alpha * op(A[b]) * op(B[b]) (+ C[b] when accumulate), as
// matmul_tiled in shaders/matmul.wgsl (same params, shapes, strides and transposes, C f32), where A
// and/or B are stored as f16 pairs (see shaders/cast.wgsl for the layout): bit 0 of `p.half` says A is
// f16, bit 1 says B is. f16 values are widened exactly as they are loaded; the products and the sum are
// f32 (matmul_tiled's tile code, common/matmul_tile.wgsl, through f16-aware loads), so the only
// rounding f16 adds is the storage's own. Any M, N, K: loads zero-fill, stores are bounds-checked.
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

// The shared tile code's operand accessors (common/matmul_tile.wgsl): one product, q is always 0.
fn mm_a(q: u32, i: u32) -> f32 { return load_a(i); }
fn mm_b(q: u32, i: u32) -> f32 { return load_b(i); }
fn mm_c(q: u32, i: u32) -> f32 { return c[i]; }
fn mm_set_c(q: u32, i: u32, v: f32) { c[i] = v; }

//#include "common/matmul_tile.wgsl"

@compute @workgroup_size(16, 16)
fn matmul_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let acc = tile_product(0u, p, m0, n0, wid.z, lid, lid3.x, lid3.y);
    store_tile(0u, p, m0, n0, wid.z, lid3.x, lid3.y, acc);
}
