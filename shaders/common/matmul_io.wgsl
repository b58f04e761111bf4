// The matmul families' uniform params and bindings (matmul.wgsl and its tile variants, matmul_blocked.wgsl):
// one struct, so the Rust params and the CPU twin serve both.

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

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
