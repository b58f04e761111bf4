// The register-tiled core of the matmul families (matmul, matmul_pair, matmul_pair_gate, matmul_grouped,
// matmul_half): a workgroup owns a TM x TN block of the result, 16x16 threads each accumulate a 4x4
// sub-block, and operand tiles TK deep are staged through workgroup memory. The including shader fills
// `as_` and `bs` and writes the result. common/gemm_blocks.wgsl is the same scheme with every size a
// constant (the convolution's implicit GEMMs and their block and register-tile variants).

const TM: u32 = 64u;  // rows of the result per workgroup
const TN: u32 = 64u;  // columns of the result per workgroup
// Depth of one shared-memory step (a multiple of 16: the vec4 loads give each thread TK/16 vec4s).
// 32 (unpadded, the whole 16 KiB WebGPU default) measured no faster on lavapipe; 16 keeps the tiles at
// 8.5 KiB so more workgroups fit on a GPU core.
const TK: u32 = 16u;
// Row pitch of the shared tiles in vec4s: 16 vec4 hold 64 values, the extra one staggers rows across
// memory banks so the transposing stores of a tile load do not all hit one bank.
const PITCH: u32 = 17u;

// Shared tiles, k-major: as_[kk*PITCH + i/4][i%4] = A[m0+i, k0+kk], bs[kk*PITCH + j/4][j%4] = B[k0+kk, n0+j],
// so a thread reads its 4 rows (or 4 columns) for one kk as a single vec4.
var<workgroup> as_: array<vec4<f32>, TK * PITCH>;
var<workgroup> bs: array<vec4<f32>, TK * PITCH>;

// The 4x4 block one thread accumulates: rI[j] = result[m0 + 4ty + I, n0 + 4tx + j].
// Named vectors rather than an array keep constant register indices on every driver (software
// rasterisers spill dynamically indexed arrays to memory).
struct Acc {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// acc += the product of the two shared tiles, for this thread's block.
fn multiply_tiles(acc_in: Acc, tx: u32, ty: u32) -> Acc {
    var acc = acc_in;
    for (var kk = 0u; kk < TK; kk++) {
        let av = as_[kk * PITCH + ty];
        let bv = bs[kk * PITCH + tx];
        acc.r0 += av.x * bv;
        acc.r1 += av.y * bv;
        acc.r2 += av.z * bv;
        acc.r3 += av.w * bv;
    }
    return acc;
}
