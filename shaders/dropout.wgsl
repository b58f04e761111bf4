// Dropout with a mask regenerated from a Philox stream instead of stored.
//
// Element i is kept when u_i >= p, with u_i = rng_uniform_at(seed, base, i) and base = offset + step * stride
// (64-bit), and a kept element is scaled by `scale` = f32(1 / (1 - p)) (computed once on the host, so both
// engines multiply by the same number). `step` is the training-step counter: one u32 word in a storage
// buffer (the project-wide convention; another kernel advances it), so a captured plan whose params are
// frozen still draws a fresh mask at every replayed step. `stride` >= n (a multiple of 4) separates the
// streams of successive steps. u_i is a multiple of 2^-24 and the comparison is exact, so every device
// keeps the same elements.
//
// dropout_bwd regenerates the same mask from the same (seed, offset, stride, step): dx = dy * scale where
// kept, 0 elsewhere. The two entry points compute the same function; they are separate so plans and
// profiles name the direction.
//#include "common/index.wgsl"
//#include "common/philox.wgsl"

const WG: u32 = 256u;

struct DropoutParams {
    n: u32,
    stride: u32,        // stream elements per step: >= n, a multiple of 4
    p: f32,             // drop probability in [0, 1)
    scale: f32,         // 1 / (1 - p), rounded to f32
    seed: vec2<u32>,    // (lo, hi)
    offset: vec2<u32>,  // stream offset at step 0 (lo, hi)
}

@group(0) @binding(0) var<uniform> dp: DropoutParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// offset + step * stride in 64 bits (wrapping): the product from the snippet's 32x32 -> 64 multiply, then a
// 64-bit add whose carry out of the low word rng_add64 handles.
fn step_base() -> vec2<u32> {
    let prod = mul32x32(step[0], dp.stride);
    let b = rng_add64(dp.offset, prod.x);
    return vec2<u32>(b.x, b.y + prod.y);
}

fn apply(i: u32) {
    let u = rng_uniform_at(dp.seed, step_base(), i);
    dst[i] = select(0.0, src[i] * dp.scale, u >= dp.p);
}

@compute @workgroup_size(256)
fn dropout_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= dp.n { return; }
    apply(i);
}

@compute @workgroup_size(256)
fn dropout_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= dp.n { return; }
    apply(i);
}
