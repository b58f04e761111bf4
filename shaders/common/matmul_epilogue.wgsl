// The bias and activation epilogue of the matmul families' `*_bias_act` entry points (matmul.wgsl,
// matmul_blocked.wgsl): C = act(alpha·op(A)·op(B) (+ C) + bias[col]), applied to each result as it is
// stored. Their params wrap the product's MatmulParams, and the bias takes binding 4, after C, so A, B
// and C keep the plain entry points' bindings (common/matmul_io.wgsl). The plain entry points bind
// neither, so they are unchanged. The `*_bias_act_keep` entry points also store the pre-activation z
// (binding 5) for an activation whose derivative needs it (GELU, SiLU). Needs common/matmul_io.wgsl.
//#include "common/activation.wgsl"

struct MatmulEpiParams {
    mm: MatmulParams,
    act: u32,        // the activation's unary op code + 1 (0: none, the bias alone)
    act_alpha: f32,  // leaky relu's slope
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> pe: MatmulEpiParams;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// act(v + bias[col]): the same two f32 operations as the broadcast add and the unary op it replaces.
fn epilogue(col: u32, v: f32) -> f32 {
    let z = v + bias[col];
    if pe.act == 0u { return z; }
    return unary_op(pe.act - 1u, z, pe.act_alpha);
}

// C[at] (column col) = epilogue(alpha*v (+ C)).
fn epi_store(at: u32, col: u32, v: f32) {
    var old = 0.0;
    if pe.mm.accumulate == 1u { old = c[at]; }
    c[at] = epilogue(col, pe.mm.alpha * v + old);
}

@group(0) @binding(5) var<storage, read_write> zk: array<f32>;

// epi_store, also storing z = alpha*v (+ C) + bias[col] in zk: the same arithmetic as `epilogue`.
fn epi_store_keep(at: u32, col: u32, v: f32) {
    var old = 0.0;
    if pe.mm.accumulate == 1u { old = c[at]; }
    let z = (pe.mm.alpha * v + old) + bias[col];
    zk[at] = z;
    if pe.act == 0u {
        c[at] = z;
    } else {
        c[at] = unary_op(pe.act - 1u, z, pe.act_alpha);
    }
}
