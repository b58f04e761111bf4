// silu(u) ⊙ v, one element: elementwise.wgsl's SiLU (op 13) times v, and its gradients; shared by
// gated.wgsl and the matmul epilogues of matmul_pair.wgsl and matmul_pair_gate.wgsl so all compute the
// same numbers.

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn silu_gate_of(u: f32, v: f32) -> f32 {
    return (u * sigmoid(u)) * v;
}

// (du, dv) of y = silu(u) ⊙ v given dy: du = (dy ⊙ v) ⊙ silu'(u), dv = dy ⊙ silu(u), with
// (x s)' = s (1 + x sigmoid(-x)) as elementwise.wgsl's unary_deriv.
fn silu_gate_grads(u: f32, v: f32, dy: f32) -> vec2<f32> {
    let dv = dy * (u * sigmoid(u));
    let du = (dy * v) * (sigmoid(u) * (1.0 + u * sigmoid(-u)));
    return vec2<f32>(du, dv);
}
