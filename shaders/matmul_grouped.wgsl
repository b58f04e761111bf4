// Grouped GEMM: many independent matrix products in one dispatch. For every problem q of a descriptor
// table (a storage buffer, so one recorded dispatch serves any number of problems):
//
//   C_q = alpha_q * op(A_q) * op(B_q) + beta_q * D_q
//
// with op(A_q) M x K (stored [M,K], or [K,M] when trans_a), op(B_q) K x N (stored [K,N], or [N,K] when
// trans_b), C_q and D_q M x N (both stored [N,M] when trans_c), all row-major at element offsets of four
// shared buffers (arenas) a, b, c, d. trans_c lets one dispatch mix X·Y with Y·X from the same two
// arenas: (Y·X)ᵀ = Xᵀ·Yᵀ, stored transposed, is Y·X.
// beta = 0 leaves D unread (C may hold anything before). Problems may share a and b regions; their C
// regions must not overlap each other or anything the dispatch reads (checked by the op layer).
//
// The grid is flat over every problem's 64x64 C tiles: problem q owns the tiles from tile_start[q]
// (a prefix sum), laid out row-major over its tiles_n columns of tiles; a workgroup finds its problem by
// a scan of the table (the same for every thread of it) and computes its tile with matmul_tiled's tile
// code (common/matmul_tile.wgsl), so each element sums over k in the same order.
// CPU twin: device/cpu/matmul_grouped.rs.
//#include "common/index.wgsl"
//#include "common/gemm_tile.wgsl"
//#include "common/matmul_params.wgsl"

struct GroupedParams {
    count: u32,  // problems in the table
    tiles: u32,  // C tiles over every problem (the grid's flat size)
    _pad0: u32,
    _pad1: u32,
}

// One problem of the table (13 words).
struct GemmProblem {
    m: u32,
    n: u32,
    k: u32,
    off_a: u32,       // element offsets into the four arenas
    off_b: u32,
    off_c: u32,
    off_d: u32,
    trans_a: u32,     // 1: A is stored [K,M]
    trans_b: u32,     // 1: B is stored [N,K]
    alpha: f32,
    beta: f32,        // 0: D is not read
    tile_start: u32,  // first flat tile of this problem; its tiles are ceil(M/64) rows of ceil(N/64)
    trans_c: u32,     // 1: C and D are stored [N,M]
}

@group(0) @binding(0) var<uniform> gp: GroupedParams;
@group(0) @binding(1) var<storage, read> problems: array<GemmProblem>;
@group(0) @binding(2) var<storage, read> ga: array<f32>;
@group(0) @binding(3) var<storage, read> gb: array<f32>;
@group(0) @binding(4) var<storage, read> gd: array<f32>;
@group(0) @binding(5) var<storage, read_write> gc: array<f32>;

// The shared tile code's operand accessors (element offsets include the problem's arena offset; its
// own store is not used: C goes through store_grouped, with beta·D and trans_c).
fn mm_a(q: u32, i: u32) -> f32 { return ga[i]; }
fn mm_b(q: u32, i: u32) -> f32 { return gb[i]; }
fn mm_c(q: u32, i: u32) -> f32 { return gc[i]; }
fn mm_set_c(q: u32, i: u32, v: f32) { gc[i] = v; }

//#include "common/matmul_tile.wgsl"

@compute @workgroup_size(16, 16)
fn matmul_grouped(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = flat_id(wid, nwg, 0u, 1u);
    if t >= gp.tiles { return; }  // uniform: the whole workgroup leaves together
    // The problem of tile t: the last whose first tile is at or before t (starts never decrease).
    var q = 0u;
    for (var i = 1u; i < gp.count; i++) {
        if problems[i].tile_start <= t { q = i; }
    }
    let pr = problems[q];
    let r = t - pr.tile_start;
    let tiles_n = (pr.n + TN - 1u) / TN;
    let m0 = (r / tiles_n) * TM;
    let n0 = (r % tiles_n) * TN;
    let tx = lid3.x;  // columns n0 + 4*tx .. +3
    let ty = lid3.y;  // rows m0 + 4*ty .. +3
    // matmul_tiled's tile code (common/matmul_tile.wgsl) reads batch matrix z at z·stride: batch 1 with
    // the problem's arena offsets as strides reads its A and B.
    let pp = MatmulParams(pr.m, pr.n, pr.k, 1u, pr.trans_a, pr.trans_b, 0u, 1.0, pr.off_a, pr.off_b, 0u, 0u);
    let acc = tile_product(q, pp, m0, n0, 1u, lid, tx, ty);

    let row = m0 + 4u * ty;
    let col = n0 + 4u * tx;
    store_grouped(pr, row, col, acc.r0);
    store_grouped(pr, row + 1u, col, acc.r1);
    store_grouped(pr, row + 2u, col, acc.r2);
    store_grouped(pr, row + 3u, col, acc.r3);
}

// C[row, col..col+3] = alpha*v + beta*D, each bounds-checked; D is read only when beta != 0.
fn store_grouped(pr: GemmProblem, row: u32, col: u32, v: vec4<f32>) {
    if row >= pr.m { return; }
    for (var j = 0u; j < 4u; j++) {
        if col + j >= pr.n { return; }
        let at = select(row * pr.n + col + j, (col + j) * pr.m + row, pr.trans_c == 1u);
        var out = pr.alpha * v[j];
        if pr.beta != 0.0 { out = out + pr.beta * gd[pr.off_d + at]; }
        gc[pr.off_c + at] = out;
    }
}
