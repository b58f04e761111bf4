// Muon's element-wise kernels: the orthogonalised-momentum optimizer (crate::optim::muon) runs Nesterov
// momentum on every hidden weight matrix's gradient, scales each result to unit Frobenius norm, then
// turns it into the nearest semi-orthogonal matrix with a few Newton-Schulz iterations, which are grouped
// matmuls (shaders/matmul_grouped.wgsl) over every matrix at once. The matrices' working copies live in
// arenas (one buffer, each matrix at an element offset), so the norms and the iterations take one
// dispatch for all of them; only the momentum (from each gradient and momentum buffer) and the final
// update (into each parameter) bind one buffer per matrix, up to SLOTS matrices per dispatch
// (common/slots.wgsl), or one per dispatch on a device that binds fewer storage buffers.
//
// * `muon_momentum[_multi]`: m = mu * m + g * clip[0]; arena[dst + i] = g * clip[0] + mu * m (Nesterov)
//   or m.
// * `muon_sumsq`: per matrix q (grid y) and chunk w (grid x), the sum of squares of elements
//   [w * chunk, (w + 1) * chunk) of its arena region into partials[pslot + w], in the order of
//   `sumsq_partial` (optim.wgsl): strided per-thread sums, then a tree.
// * `muon_normalize`: per matrix q (grid y), x *= 1 / (sqrt(sum of its partials, in order) + eps).
// * `muon_update[_multi]`: p = p - lr * (o + wd * p) with o = arena[src + i] and lr the schedule's
//   rate at the step counter: SGD without momentum, decoupled decay by wd = weight decay / lr ratio.
//
// The segment table of the norm kernels (a storage buffer, one vec4<u32> per matrix): its arena offset,
// its element count, its chunk (elements per workgroup, a multiple of WG) and its first partial slot.
//#include "common/index.wgsl"
//#include "common/schedule.wgsl"
//#include "common/slots.wgsl"
//#include "common/workgroup_reduce.wgsl"

const WG: u32 = 256u;

struct MuonMomentumParams {
    n: u32,
    momentum: f32,
    nesterov: u32,  // 1: out = g + mu * m; 0: out = m
    dst: u32,       // the output's first element in the arena
}

struct MuonMomentumMultiParams {
    momentum: f32,
    nesterov: u32,
    total: u32,                   // global elements, padding included
    _pad0: u32,
    n: array<vec4<u32>, 2>,       // elements of slot k's tensor
    start: array<vec4<u32>, 2>,   // first global element of slot k
    dst: array<vec4<u32>, 2>,     // slot k's first element in the arena
}

struct MuonNormParams {
    count: u32,  // matrices in the segment table
    eps: f32,    // added to the norm
    _pad0: u32,
    _pad1: u32,
}

struct MuonUpdateParams {
    sched: ScheduleParams,
    n: u32,
    src: u32,           // the update's first element in the arena
    weight_decay: f32,  // 0: no decay term
    _pad0: u32,
}

struct MuonUpdateMultiParams {
    sched: ScheduleParams,
    weight_decay: f32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
    n: array<vec4<u32>, 2>,
    start: array<vec4<u32>, 2>,
    src: array<vec4<u32>, 2>,
}

// (m', out) of one element from its clipped gradient g and momentum m.
fn momentum_of(mu: f32, nesterov: u32, g: f32, m0: f32) -> vec2<f32> {
    let m = mu * m0 + g;
    if nesterov == 1u {
        return vec2<f32>(m, g + mu * m);
    }
    return vec2<f32>(m, m);
}

// p' of one element from the update o: SGD without momentum and L2 weight decay, as optim.wgsl's `sgd`.
fn update_of(lr: f32, wd: f32, p: f32, o: f32) -> f32 {
    var g = o;
    if wd != 0.0 {
        g = g + wd * p;
    }
    return p - lr * g;
}

// ---- Nesterov momentum into the arena, one matrix ----

@group(0) @binding(0) var<uniform> mp: MuonMomentumParams;
@group(0) @binding(1) var<storage, read> mom_grad: array<f32>;
@group(0) @binding(2) var<storage, read> mom_clip: array<f32>;
@group(0) @binding(3) var<storage, read_write> mom_buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> mom_out: array<f32>;

@compute @workgroup_size(256)
fn muon_momentum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= mp.n { return; }
    let r = momentum_of(mp.momentum, mp.nesterov, mom_grad[i] * mom_clip[0], mom_buf[i]);
    mom_buf[i] = r.x;
    mom_out[mp.dst + i] = r.y;
}

// ---- Nesterov momentum into the arena, up to SLOTS matrices ----

@group(0) @binding(0) var<uniform> mmp: MuonMomentumMultiParams;
@group(0) @binding(1) var<storage, read> mm_g0: array<f32>;
@group(0) @binding(2) var<storage, read_write> mm_m0: array<f32>;
@group(0) @binding(3) var<storage, read> mm_g1: array<f32>;
@group(0) @binding(4) var<storage, read_write> mm_m1: array<f32>;
@group(0) @binding(5) var<storage, read> mm_g2: array<f32>;
@group(0) @binding(6) var<storage, read_write> mm_m2: array<f32>;
@group(0) @binding(7) var<storage, read> mm_g3: array<f32>;
@group(0) @binding(8) var<storage, read_write> mm_m3: array<f32>;
@group(0) @binding(9) var<storage, read> mm_g4: array<f32>;
@group(0) @binding(10) var<storage, read_write> mm_m4: array<f32>;
@group(0) @binding(11) var<storage, read> mm_g5: array<f32>;
@group(0) @binding(12) var<storage, read_write> mm_m5: array<f32>;
@group(0) @binding(13) var<storage, read> mm_g6: array<f32>;
@group(0) @binding(14) var<storage, read_write> mm_m6: array<f32>;
@group(0) @binding(15) var<storage, read> mm_clip: array<f32>;
@group(0) @binding(16) var<storage, read_write> mm_out: array<f32>;

@compute @workgroup_size(256)
fn muon_momentum_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= mmp.total { return; }
    let k = slot_of(mmp.start, i);
    let j = i - at(mmp.start, k);
    if j >= at(mmp.n, k) { return; }
    var g: f32;
    var m: f32;
    switch k {
        case 0u: { g = mm_g0[j]; m = mm_m0[j]; }
        case 1u: { g = mm_g1[j]; m = mm_m1[j]; }
        case 2u: { g = mm_g2[j]; m = mm_m2[j]; }
        case 3u: { g = mm_g3[j]; m = mm_m3[j]; }
        case 4u: { g = mm_g4[j]; m = mm_m4[j]; }
        case 5u: { g = mm_g5[j]; m = mm_m5[j]; }
        default: { g = mm_g6[j]; m = mm_m6[j]; }
    }
    let r = momentum_of(mmp.momentum, mmp.nesterov, g * mm_clip[0], m);
    switch k {
        case 0u: { mm_m0[j] = r.x; }
        case 1u: { mm_m1[j] = r.x; }
        case 2u: { mm_m2[j] = r.x; }
        case 3u: { mm_m3[j] = r.x; }
        case 4u: { mm_m4[j] = r.x; }
        case 5u: { mm_m5[j] = r.x; }
        default: { mm_m6[j] = r.x; }
    }
    mm_out[at(mmp.dst, k) + j] = r.y;
}

// ---- every matrix's partial sums of squares ----

@group(0) @binding(0) var<uniform> sq: MuonNormParams;
@group(0) @binding(1) var<storage, read> sq_segs: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> sq_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> sq_partials: array<f32>;

@compute @workgroup_size(256)
fn muon_sumsq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if wid.y >= sq.count { return; }
    let sg = sq_segs[wid.y];
    let base = wid.x * sg.z;
    if base >= sg.y { return; }  // uniform: the whole workgroup leaves together
    let end = min(base + sg.z, sg.y);
    var acc = 0.0;
    for (var k = base + lid; k < end; k += WG) {
        let x = sq_x[sg.x + k];
        acc = acc + x * x;
    }
    let s = wg_sum(lid, acc);
    if lid == 0u {
        sq_partials[sg.w + wid.x] = s;
    }
}

// ---- every matrix scaled to unit Frobenius norm ----

@group(0) @binding(0) var<uniform> np: MuonNormParams;
@group(0) @binding(1) var<storage, read> norm_segs: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> norm_partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm_x: array<f32>;

@compute @workgroup_size(256)
fn muon_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    if wid.y >= np.count { return; }
    let sg = norm_segs[wid.y];
    let slots = (sg.y + sg.z - 1u) / sg.z;
    var s = 0.0;
    for (var k = 0u; k < slots; k += 1u) {
        s = s + norm_partials[sg.w + k];
    }
    let f = 1.0 / (sqrt(s) + np.eps);
    for (var i = wid.x * WG + lid; i < sg.y; i += nwg.x * WG) {
        norm_x[sg.x + i] = norm_x[sg.x + i] * f;
    }
}

// ---- the update from the arena, one matrix ----

@group(0) @binding(0) var<uniform> up: MuonUpdateParams;
@group(0) @binding(1) var<storage, read_write> up_param: array<f32>;
@group(0) @binding(2) var<storage, read> up_o: array<f32>;
@group(0) @binding(3) var<storage, read> up_step: array<u32>;

@compute @workgroup_size(256)
fn muon_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= up.n { return; }
    let lr = schedule_lr_of(up.sched, up_step[0]);
    up_param[i] = update_of(lr, up.weight_decay, up_param[i], up_o[up.src + i]);
}

// ---- the update from the arena, up to SLOTS matrices ----

@group(0) @binding(0) var<uniform> ump: MuonUpdateMultiParams;
@group(0) @binding(1) var<storage, read_write> um_p0: array<f32>;
@group(0) @binding(2) var<storage, read_write> um_p1: array<f32>;
@group(0) @binding(3) var<storage, read_write> um_p2: array<f32>;
@group(0) @binding(4) var<storage, read_write> um_p3: array<f32>;
@group(0) @binding(5) var<storage, read_write> um_p4: array<f32>;
@group(0) @binding(6) var<storage, read_write> um_p5: array<f32>;
@group(0) @binding(7) var<storage, read_write> um_p6: array<f32>;
@group(0) @binding(8) var<storage, read> um_o: array<f32>;
@group(0) @binding(9) var<storage, read> um_step: array<u32>;

@compute @workgroup_size(256)
fn muon_update_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= ump.total { return; }
    let k = slot_of(ump.start, i);
    let j = i - at(ump.start, k);
    if j >= at(ump.n, k) { return; }
    let lr = schedule_lr_of(ump.sched, um_step[0]);
    let o = um_o[at(ump.src, k) + j];
    let wd = ump.weight_decay;
    switch k {
        case 0u: { um_p0[j] = update_of(lr, wd, um_p0[j], o); }
        case 1u: { um_p1[j] = update_of(lr, wd, um_p1[j], o); }
        case 2u: { um_p2[j] = update_of(lr, wd, um_p2[j], o); }
        case 3u: { um_p3[j] = update_of(lr, wd, um_p3[j], o); }
        case 4u: { um_p4[j] = update_of(lr, wd, um_p4[j], o); }
        case 5u: { um_p5[j] = update_of(lr, wd, um_p5[j], o); }
        default: { um_p6[j] = update_of(lr, wd, um_p6[j], o); }
    }
}
