// The backward of a convolution's fused epilogue y = act(conv + b[channel]) (shaders/conv.wgsl), NCHW:
//   conv_act_bias_bwd: dz = dy * act'(z) and db[c] = sum over (n, h, w) of dz, in one pass over one
//     channel per workgroup (its images in order, 256 strided partials per image plane, then a tree).
// act' is taken from the output y, which the epilogue keeps (the pre-activation z is never stored):
// relu and leaky relu (slope > 0) keep the sign, so y > 0 exactly where z > 0; tanh' = 1 - y^2,
// sigmoid' = y (1 - y). The ops admit only these activations.
//#include "common/workgroup_reduce.wgsl"
//#include "common/activation.wgsl"

struct EpilogueParams {
    n: u32,
    c: u32,
    hw: u32,
    act: u32,    // the activation's unary op code + 1 (0: none, dz = dy)
    alpha: f32,  // leaky relu's slope
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> ep: EpilogueParams;
@group(0) @binding(1) var<storage, read> ey: array<f32>;
@group(0) @binding(2) var<storage, read> edy: array<f32>;
@group(0) @binding(3) var<storage, read_write> edz: array<f32>;
@group(0) @binding(4) var<storage, read_write> edb: array<f32>;

@compute @workgroup_size(256)
fn conv_act_bias_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let c = wid.y * nwg.x + wid.x;
    // Every thread of a workgroup takes the same branch.
    if c >= ep.c { return; }
    var s = 0.0;
    for (var img = 0u; img < ep.n; img++) {
        let base = (img * ep.c + c) * ep.hw;
        for (var e = lid; e < ep.hw; e += WG_REDUCE) {
            var d = edy[base + e];
            if ep.act != 0u { d *= deriv_from_out(ep.act - 1u, ey[base + e], ep.alpha); }
            edz[base + e] = d;
            s += d;
        }
    }
    let total = wg_sum(lid, s);
    if lid == 0u { edb[c] = total; }
}
