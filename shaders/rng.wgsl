// Random tensors from Philox streams (see common/philox.wgsl for the stream convention): raw u32 words,
// uniform f32 and normal f32. Output element i is element i of the stream at the op's offset.
// One invocation per counter block: it computes the block's four values once and writes the lanes that
// fall inside the output (the first and last blocks may be partial).
// `bits`, `uniform_f32` with shift 0 and scale 1, and `normal` with shift 0 and scale 1 are bit-identical on
// every device. For other ranges, shift + scale * x is f32 arithmetic that a driver may fuse into one
// rounding where the CPU rounds twice; the two then differ by at most one rounding of scale * x.
//#include "common/index.wgsl"
//#include "common/philox.wgsl"
//#include "common/stream_step.wgsl"

const WG: u32 = 256u;

struct RngParams {
    n: u32,                // values to write
    lane0: u32,            // lane of output element 0 in its block: offset % 4
    nblocks: u32,          // counter blocks covered (one invocation each)
    _pad: u32,
    key: vec2<u32>,        // seed (lo, hi)
    block0: vec2<u32>,     // counter block of output element 0: offset / 4 (lo, hi)
    ctr_hi: vec2<u32>,     // counter words 2 and 3: zero for tensor streams (raw counter access for tests)
    shift: f32,            // uniform: lo; normal: mean
    scale: f32,            // uniform: hi - lo; normal: std
}

@group(0) @binding(0) var<uniform> p: RngParams;
@group(0) @binding(1) var<storage, read_write> bits_out: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

// The four Philox words of invocation t's block.
fn block_words(t: u32) -> vec4<u32> {
    return philox4x32(vec4<u32>(rng_add64(p.block0, t), p.ctr_hi), p.key);
}

// Output index of lane l of invocation t, or n (out of range) where the lane is before the output start.
// t * 4 + l cannot overflow: the op limits n so that 4 * nblocks stays below 2^32.
fn out_index(t: u32, l: u32) -> u32 {
    let j = t * 4u + l;
    return select(p.n, j - p.lane0, j >= p.lane0);
}

@compute @workgroup_size(256)
fn bits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = flat_id(wid, nwg, lid, WG);
    if t >= p.nblocks { return; }
    let x = block_words(t);
    for (var l = 0u; l < 4u; l++) {
        let i = out_index(t, l);
        if i < p.n { bits_out[i] = x[l]; }
    }
}

// Named uniform_f32: an entry point called `uniform` would shadow the address space in `var<uniform>`.
@compute @workgroup_size(256)
fn uniform_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = flat_id(wid, nwg, lid, WG);
    if t >= p.nblocks { return; }
    let u = rng_uniform_from_bits(block_words(t));
    for (var l = 0u; l < 4u; l++) {
        let i = out_index(t, l);
        if i < p.n { out[i] = p.shift + p.scale * u[l]; }
    }
}

@compute @workgroup_size(256)
fn normal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let t = flat_id(wid, nwg, lid, WG);
    if t >= p.nblocks { return; }
    let z = rng_normal_from_bits(block_words(t));
    for (var l = 0u; l < 4u; l++) {
        let i = out_index(t, l);
        if i < p.n { out[i] = p.shift + p.scale * z[l]; }
    }
}

// Diagnostic: the one-element helpers (rng_*_at) that kernels with one invocation per element call, run
// over n elements as a [3, n] u32 output: bits, then uniform and normal as f32 bit patterns. Tests check
// it against the block kernels above, so those helpers are exercised on the GPU too.
@compute @workgroup_size(256)
fn per_element(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= p.n { return; }
    let offset = vec2<u32>((p.block0.x << 2u) | p.lane0, (p.block0.y << 2u) | (p.block0.x >> 30u));
    bits_out[i] = rng_bits_at(p.key, offset, i);
    bits_out[p.n + i] = bitcast<u32>(rng_uniform_at(p.key, offset, i));
    bits_out[2u * p.n + i] = bitcast<u32>(rng_normal_at(p.key, offset, i));
}

// Step-indexed draws (ops::rng::uniform_step, normal_step): output element i at training step s is element
// s * stride + i of the seed's stream (s * stride in 64 bits, wrapping), s read from the step counter at run
// time. The op requires stride to be a multiple of 4 (and at least n), so every step's window starts on a
// counter block and invocation t handles block (s * stride) / 4 + t, like the block kernels above with
// lane0 = 0.
struct RngStepParams {
    n: u32,                   // values to write
    nblocks: u32,             // counter blocks covered (one invocation each)
    shift: f32,               // uniform: lo; normal: 0
    scale: f32,               // uniform: hi - lo; normal: 1
    key: vec2<u32>,           // seed (lo, hi)
    stride: vec2<u32>,        // stream elements per step, a multiple of 4 (lo, hi)
}

@group(0) @binding(0) var<uniform> sp: RngStepParams;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> step_out: array<f32>;

// The four Philox words of invocation t's block at the current step.
fn step_block_words(t: u32) -> vec4<u32> {
    let block0 = rng_block_of(rng_step_offset(step[0], sp.stride), 0u);
    return rng_bits4(sp.key, rng_add64(block0, t));
}

@compute @workgroup_size(256)
fn uniform_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = flat_id(wid, nwg, lid, WG);
    if t >= sp.nblocks { return; }
    let u = rng_uniform_from_bits(step_block_words(t));
    for (var l = 0u; l < 4u; l++) {
        let i = t * 4u + l;
        if i < sp.n { step_out[i] = sp.shift + sp.scale * u[l]; }
    }
}

@compute @workgroup_size(256)
fn normal_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = flat_id(wid, nwg, lid, WG);
    if t >= sp.nblocks { return; }
    let z = rng_normal_from_bits(step_block_words(t));
    for (var l = 0u; l < 4u; l++) {
        let i = t * 4u + l;
        if i < sp.n { step_out[i] = sp.shift + sp.scale * z[l]; }
    }
}
