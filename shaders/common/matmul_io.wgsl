// The matmul families' uniform params and bindings (matmul.wgsl and its tile variants, matmul_blocked.wgsl):
// one struct, so the Rust params and the CPU twin serve both.

//#include "common/matmul_params.wgsl"

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
