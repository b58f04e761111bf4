// The gated MLP's gate: y = silu(u) ⊙ v (SwiGLU), silu(u) = u · sigmoid(u), and its backward
// du = dy ⊙ v ⊙ silu'(u), dv = dy ⊙ silu(u): one dispatch each way instead of the activation, the
// product and, backward, the activation's derivative and two products. The formulas are
// elementwise.wgsl's (op 13), so the fused and unfused forms compute the same numbers.
//
// One thread per element.
//#include "common/index.wgsl"
//#include "common/silu_gate.wgsl"

const WG: u32 = 256u;

struct GateParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> gp: GateParams;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn silu_gate_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= gp.n { return; }
    y[i] = silu_gate_of(u[i], v[i]);
}

@group(0) @binding(1) var<storage, read> bu: array<f32>;
@group(0) @binding(2) var<storage, read> bv: array<f32>;
@group(0) @binding(3) var<storage, read> bdy: array<f32>;
@group(0) @binding(4) var<storage, read_write> du: array<f32>;
@group(0) @binding(5) var<storage, read_write> dv: array<f32>;

@compute @workgroup_size(256)
fn silu_gate_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= gp.n { return; }
    let d = silu_gate_grads(bu[i], bv[i], bdy[i]);
    du[i] = d.x;
    dv[i] = d.y;
}

// silu_gate_bwd with u and v stored as f16 pairs (element 2i in the low half of word i, as
// pack2x16float writes them): under mixed precision the plan keeps the gated MLP's projections in f16
// until the backward reads them (graph/saved.rs), and this reads them there without an f32 copy. The
// arithmetic is silu_gate_bwd's on the widened (exact) values.
@group(0) @binding(1) var<storage, read> hu: array<u32>;
@group(0) @binding(2) var<storage, read> hv: array<u32>;
@group(0) @binding(3) var<storage, read> hdy: array<f32>;
@group(0) @binding(4) var<storage, read_write> hdu: array<f32>;
@group(0) @binding(5) var<storage, read_write> hdv: array<f32>;

fn half_at(w: u32, i: u32) -> f32 {
    return unpack2x16float(w)[i & 1u];
}

@compute @workgroup_size(256)
fn silu_gate_bwd_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= gp.n { return; }
    let d = silu_gate_grads(half_at(hu[i >> 1u], i), half_at(hv[i >> 1u], i), hdy[i]);
    hdu[i] = d.x;
    hdv[i] = d.y;
}
