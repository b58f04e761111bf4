// Casts between f32 and f16 storage. An f16 tensor of n elements is ceil(n/2) 32-bit words, element 2i
// in the low half of word i: the layout of the core builtins pack2x16float / unpack2x16float, so no
// SHADER_F16 is needed and every adapter (a browser's included) runs these.
//
//   cast_f32_to_f16  one thread per output word: packs elements 2w and 2w+1 (the high half of the last
//                    word of an odd count is 0), so no two threads write one word.
//   cast_f16_to_f32  one thread per element, widened exactly.
//
// pack2x16float's rounding of a value f16 cannot hold exactly is implementation-defined in WGSL (either
// neighbour); the CPU twin rounds to nearest even, so the two agree within one f16 ulp. Values beyond
// the f16 range become ±inf on both (WGSL leaves them undefined; the twin's ±inf is what GPUs give).
//#include "common/index.wgsl"

const WG: u32 = 256u;

struct CastParams {
    n: u32,      // elements
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> cp: CastParams;
@group(0) @binding(1) var<storage, read> xf: array<f32>;
@group(0) @binding(2) var<storage, read_write> yh: array<u32>;

@compute @workgroup_size(WG)
fn cast_f32_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let w = flat_id(wid, nwg, lid, WG);
    let i = 2u * w;
    if i >= cp.n { return; }
    var hi = 0.0;
    if i + 1u < cp.n { hi = xf[i + 1u]; }
    yh[w] = pack2x16float(vec2<f32>(xf[i], hi));
}

@group(0) @binding(1) var<storage, read> xh: array<u32>;
@group(0) @binding(2) var<storage, read_write> yf: array<f32>;

@compute @workgroup_size(WG)
fn cast_f16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= cp.n { return; }
    yf[i] = unpack2x16float(xh[i / 2u])[i % 2u];
}
