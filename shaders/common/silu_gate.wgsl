// silu(u) ⊙ v, one element: elementwise.wgsl's SiLU (op 13) times v, shared by gated.wgsl and the
// matmul epilogue of matmul_pair.wgsl so both compute the same numbers.

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn silu_gate_of(u: f32, v: f32) -> f32 {
    return (u * sigmoid(u)) * v;
}
