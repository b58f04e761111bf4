// The matmul families' uniform params (matmul.wgsl and its tile variants, matmul_blocked.wgsl,
// matmul_half.wgsl, matmul_pair.wgsl), also the shape that common/matmul_tile.wgsl's tile code reads.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    trans_a: u32,     // 1: A is stored [K,M]
    trans_b: u32,     // 1: B is stored [N,K]
    accumulate: u32,  // 1: C += alpha*A*B; 0: C = alpha*A*B (C is not read)
    alpha: f32,
    stride_a: u32,    // elements between batch matrices of A; 0 broadcasts
    stride_b: u32,
    stride_c: u32,
    half: u32,        // matmul_half only: bit 0, A holds f16 pairs; bit 1, B does (0 elsewhere)
}
