// The register-tiled core of the convolution's implicit GEMMs (shaders/conv.wgsl): common/gemm_tile.wgsl's
// scheme with every size a constant that a variant may change. A workgroup owns a TM x TN block of the
// result; its WX x WY threads each accumulate an RM x RN register block (RM and RN are 4 or 8), made of
// (RM/4) x (RN/4) 4x4 blocks spaced WY (WX) vec4 apart, so that each read of a shared tile is one vec4 and
// neighbouring threads read neighbouring vec4; operand tiles TK deep are staged through workgroup memory.
// The including shader fills `as_` and `bs` (put_a, put_b) and writes the result (acc_at).
//
// The family's form (64 x 64, 4 x 4 per thread, 16 deep, padded rows) is gemm_tile.wgsl's, with the same
// tiles, the same thread mapping and the same order of terms.

const TM: u32 = 64u;  // rows of the result per workgroup (a multiple of 64: the host counts 64-row tiles)
const TN: u32 = 64u;  // columns of the result per workgroup (a multiple of 64)
// Depth of one shared-memory step (a multiple of KL).
const TK: u32 = 16u;
const RM: u32 = 4u;   // rows per thread (4 or 8)
const RN: u32 = 4u;   // columns per thread (4 or 8)
// Extra vec4 per tile row: it staggers rows across memory banks so the transposing stores of a tile
// load do not all hit one bank; 0 keeps the larger tiles within WebGPU's 16 KiB of workgroup memory.
const PAD: u32 = 1u;
const WX: u32 = TN / RN;
const WY: u32 = TM / RM;
const THREADS: u32 = WX * WY;
const PA: u32 = TM / 4u + PAD;  // row pitch of as_ in vec4s
const PB: u32 = TN / 4u + PAD;  // row pitch of bs in vec4s
const MV: u32 = RM / 4u;        // 4-row groups per thread
const NV: u32 = RN / 4u;        // 4-column groups per thread
// Tile loads: KL threads side by side along the depth, RL = THREADS / KL along the rows (columns); each
// thread loads TK / KL depth rows of LA rows of the A tile and LB columns of the B tile, RL apart.
const KL: u32 = 16u;
const RL: u32 = THREADS / KL;
const LA: u32 = TM / RL;
const LB: u32 = TN / RL;

// Shared tiles, k-major: as_[kk*PA + i/4][i%4] = A[m0+i, k0+kk], bs[kk*PB + j/4][j%4] = B[k0+kk, n0+j].
var<workgroup> as_: array<vec4<f32>, TK * PA>;
var<workgroup> bs: array<vec4<f32>, TK * PB>;

// One value of the A tile (row i, depth kk) and of the B tile (depth kk, column j).
fn put_a(kk: u32, i: u32, v: f32) {
    as_[kk * PA + i / 4u][i % 4u] = v;
}
fn put_b(kk: u32, j: u32, v: f32) {
    bs[kk * PB + j / 4u][j % 4u] = v;
}

// A 4 x 4 block of results: rI[j] = result[row0 + I, col0 + j]. Named vectors rather than arrays keep
// constant register indices on every driver (software rasterisers spill dynamically indexed arrays to
// memory, and arrays of accumulators measured 10-20% slower on lavapipe).
struct Blk {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// The block one thread accumulates, of up to 2 x 2 Blk (RM and RN are 4 or 8): bUV holds rows
// 4(ty + WY u) .. +3 and columns 4(tx + WX v) .. +3 of the workgroup's block. The blocks a form does not
// use stay zero and are never read: the branches on the constants MV, NV fold away.
struct Acc {
    b00: Blk,
    b01: Blk,
    b10: Blk,
    b11: Blk,
}

// Row ri and column cj of a thread's block (ri < RM, cj < RN) as offsets from the workgroup's (m0, n0);
// both grow with ri (cj), so a loop over them may stop at the first past the end.
fn acc_row_of(ty: u32, ri: u32) -> u32 {
    return 4u * (ty + WY * (ri / 4u)) + ri % 4u;
}
fn acc_col_of(tx: u32, cj: u32) -> u32 {
    return 4u * (tx + WX * (cj / 4u)) + cj % 4u;
}

fn blk_at(b: Blk, i: u32, j: u32) -> f32 {
    switch i {
        case 0u: { return b.r0[j]; }
        case 1u: { return b.r1[j]; }
        case 2u: { return b.r2[j]; }
        default: { return b.r3[j]; }
    }
}

// The accumulated value at row ri, column cj of the thread's block.
fn acc_at(acc: Acc, ri: u32, cj: u32) -> f32 {
    if MV == 1u && NV == 1u { return blk_at(acc.b00, ri, cj); }
    let i = ri % 4u;
    let j = cj % 4u;
    switch (ri / 4u) * 2u + cj / 4u {
        case 0u: { return blk_at(acc.b00, i, j); }
        case 1u: { return blk_at(acc.b01, i, j); }
        case 2u: { return blk_at(acc.b10, i, j); }
        default: { return blk_at(acc.b11, i, j); }
    }
}

// b += the outer product of a column av of the A tile and a row bv of the B tile.
fn blk_fma(b: Blk, av: vec4<f32>, bv: vec4<f32>) -> Blk {
    return Blk(b.r0 + av.x * bv, b.r1 + av.y * bv, b.r2 + av.z * bv, b.r3 + av.w * bv);
}

// acc += the product of the two shared tiles, for this thread's block.
fn multiply_tiles(acc_in: Acc, tx: u32, ty: u32) -> Acc {
    var acc = acc_in;
    for (var kk = 0u; kk < TK; kk++) {
        let av = as_[kk * PA + ty];
        let bv = bs[kk * PB + tx];
        acc.b00 = blk_fma(acc.b00, av, bv);
        if NV > 1u { acc.b01 = blk_fma(acc.b01, av, bs[kk * PB + tx + WX]); }
        if MV > 1u {
            let av1 = as_[kk * PA + ty + WY];
            acc.b10 = blk_fma(acc.b10, av1, bv);
            if NV > 1u { acc.b11 = blk_fma(acc.b11, av1, bs[kk * PB + tx + WX]); }
        }
    }
    return acc;
}
