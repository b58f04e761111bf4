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
    n: array<vec4<u32>, 8>,       // elements of slot k's tensor
    start: array<vec4<u32>, 8>,   // first global element of slot k
    dst: array<vec4<u32>, 8>,     // slot k's first element in the arena
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
    n: array<vec4<u32>, 8>,
    start: array<vec4<u32>, 8>,
    src: array<vec4<u32>, 8>,
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
    let k = slot_of(mmp.start, i, SLOTS);
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
    let k = slot_of(ump.start, i, SLOTS);
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

// ---- momentum over up to MOMENTUM_SLOTS_WIDE matrices, the update over up to UPDATE_SLOTS_WIDE
// (devices binding 32 storage buffers per stage) ----

@group(0) @binding(0) var<uniform> mwp: MuonMomentumMultiParams;
@group(0) @binding(1) var<storage, read> mw_g0: array<f32>;
@group(0) @binding(2) var<storage, read_write> mw_m0: array<f32>;
@group(0) @binding(3) var<storage, read> mw_g1: array<f32>;
@group(0) @binding(4) var<storage, read_write> mw_m1: array<f32>;
@group(0) @binding(5) var<storage, read> mw_g2: array<f32>;
@group(0) @binding(6) var<storage, read_write> mw_m2: array<f32>;
@group(0) @binding(7) var<storage, read> mw_g3: array<f32>;
@group(0) @binding(8) var<storage, read_write> mw_m3: array<f32>;
@group(0) @binding(9) var<storage, read> mw_g4: array<f32>;
@group(0) @binding(10) var<storage, read_write> mw_m4: array<f32>;
@group(0) @binding(11) var<storage, read> mw_g5: array<f32>;
@group(0) @binding(12) var<storage, read_write> mw_m5: array<f32>;
@group(0) @binding(13) var<storage, read> mw_g6: array<f32>;
@group(0) @binding(14) var<storage, read_write> mw_m6: array<f32>;
@group(0) @binding(15) var<storage, read> mw_g7: array<f32>;
@group(0) @binding(16) var<storage, read_write> mw_m7: array<f32>;
@group(0) @binding(17) var<storage, read> mw_g8: array<f32>;
@group(0) @binding(18) var<storage, read_write> mw_m8: array<f32>;
@group(0) @binding(19) var<storage, read> mw_g9: array<f32>;
@group(0) @binding(20) var<storage, read_write> mw_m9: array<f32>;
@group(0) @binding(21) var<storage, read> mw_g10: array<f32>;
@group(0) @binding(22) var<storage, read_write> mw_m10: array<f32>;
@group(0) @binding(23) var<storage, read> mw_g11: array<f32>;
@group(0) @binding(24) var<storage, read_write> mw_m11: array<f32>;
@group(0) @binding(25) var<storage, read> mw_g12: array<f32>;
@group(0) @binding(26) var<storage, read_write> mw_m12: array<f32>;
@group(0) @binding(27) var<storage, read> mw_g13: array<f32>;
@group(0) @binding(28) var<storage, read_write> mw_m13: array<f32>;
@group(0) @binding(29) var<storage, read> mw_g14: array<f32>;
@group(0) @binding(30) var<storage, read_write> mw_m14: array<f32>;
@group(0) @binding(31) var<storage, read> mw_clip: array<f32>;
@group(0) @binding(32) var<storage, read_write> mw_out: array<f32>;

// `muon_momentum_multi` with MOMENTUM_SLOTS_WIDE slots.
@compute @workgroup_size(256)
fn muon_momentum_multi_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= mwp.total { return; }
    let k = slot_of(mwp.start, i, MOMENTUM_SLOTS_WIDE);
    let j = i - at(mwp.start, k);
    if j >= at(mwp.n, k) { return; }
    var g: f32;
    var m: f32;
    switch k {
        case 0u: { g = mw_g0[j]; m = mw_m0[j]; }
        case 1u: { g = mw_g1[j]; m = mw_m1[j]; }
        case 2u: { g = mw_g2[j]; m = mw_m2[j]; }
        case 3u: { g = mw_g3[j]; m = mw_m3[j]; }
        case 4u: { g = mw_g4[j]; m = mw_m4[j]; }
        case 5u: { g = mw_g5[j]; m = mw_m5[j]; }
        case 6u: { g = mw_g6[j]; m = mw_m6[j]; }
        case 7u: { g = mw_g7[j]; m = mw_m7[j]; }
        case 8u: { g = mw_g8[j]; m = mw_m8[j]; }
        case 9u: { g = mw_g9[j]; m = mw_m9[j]; }
        case 10u: { g = mw_g10[j]; m = mw_m10[j]; }
        case 11u: { g = mw_g11[j]; m = mw_m11[j]; }
        case 12u: { g = mw_g12[j]; m = mw_m12[j]; }
        case 13u: { g = mw_g13[j]; m = mw_m13[j]; }
        default: { g = mw_g14[j]; m = mw_m14[j]; }
    }
    let r = momentum_of(mwp.momentum, mwp.nesterov, g * mw_clip[0], m);
    switch k {
        case 0u: { mw_m0[j] = r.x; }
        case 1u: { mw_m1[j] = r.x; }
        case 2u: { mw_m2[j] = r.x; }
        case 3u: { mw_m3[j] = r.x; }
        case 4u: { mw_m4[j] = r.x; }
        case 5u: { mw_m5[j] = r.x; }
        case 6u: { mw_m6[j] = r.x; }
        case 7u: { mw_m7[j] = r.x; }
        case 8u: { mw_m8[j] = r.x; }
        case 9u: { mw_m9[j] = r.x; }
        case 10u: { mw_m10[j] = r.x; }
        case 11u: { mw_m11[j] = r.x; }
        case 12u: { mw_m12[j] = r.x; }
        case 13u: { mw_m13[j] = r.x; }
        default: { mw_m14[j] = r.x; }
    }
    mw_out[at(mwp.dst, k) + j] = r.y;
}

// ---- the update over up to UPDATE_SLOTS_WIDE matrices ----

@group(0) @binding(0) var<uniform> uwp: MuonUpdateMultiParams;
@group(0) @binding(1) var<storage, read_write> uw_p0: array<f32>;
@group(0) @binding(2) var<storage, read_write> uw_p1: array<f32>;
@group(0) @binding(3) var<storage, read_write> uw_p2: array<f32>;
@group(0) @binding(4) var<storage, read_write> uw_p3: array<f32>;
@group(0) @binding(5) var<storage, read_write> uw_p4: array<f32>;
@group(0) @binding(6) var<storage, read_write> uw_p5: array<f32>;
@group(0) @binding(7) var<storage, read_write> uw_p6: array<f32>;
@group(0) @binding(8) var<storage, read_write> uw_p7: array<f32>;
@group(0) @binding(9) var<storage, read_write> uw_p8: array<f32>;
@group(0) @binding(10) var<storage, read_write> uw_p9: array<f32>;
@group(0) @binding(11) var<storage, read_write> uw_p10: array<f32>;
@group(0) @binding(12) var<storage, read_write> uw_p11: array<f32>;
@group(0) @binding(13) var<storage, read_write> uw_p12: array<f32>;
@group(0) @binding(14) var<storage, read_write> uw_p13: array<f32>;
@group(0) @binding(15) var<storage, read_write> uw_p14: array<f32>;
@group(0) @binding(16) var<storage, read_write> uw_p15: array<f32>;
@group(0) @binding(17) var<storage, read_write> uw_p16: array<f32>;
@group(0) @binding(18) var<storage, read_write> uw_p17: array<f32>;
@group(0) @binding(19) var<storage, read_write> uw_p18: array<f32>;
@group(0) @binding(20) var<storage, read_write> uw_p19: array<f32>;
@group(0) @binding(21) var<storage, read_write> uw_p20: array<f32>;
@group(0) @binding(22) var<storage, read_write> uw_p21: array<f32>;
@group(0) @binding(23) var<storage, read_write> uw_p22: array<f32>;
@group(0) @binding(24) var<storage, read_write> uw_p23: array<f32>;
@group(0) @binding(25) var<storage, read_write> uw_p24: array<f32>;
@group(0) @binding(26) var<storage, read_write> uw_p25: array<f32>;
@group(0) @binding(27) var<storage, read_write> uw_p26: array<f32>;
@group(0) @binding(28) var<storage, read_write> uw_p27: array<f32>;
@group(0) @binding(29) var<storage, read_write> uw_p28: array<f32>;
@group(0) @binding(30) var<storage, read_write> uw_p29: array<f32>;
@group(0) @binding(31) var<storage, read> uw_o: array<f32>;
@group(0) @binding(32) var<storage, read> uw_step: array<u32>;

// `muon_update_multi` with UPDATE_SLOTS_WIDE slots.
@compute @workgroup_size(256)
fn muon_update_multi_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= uwp.total { return; }
    let k = slot_of(uwp.start, i, UPDATE_SLOTS_WIDE);
    let j = i - at(uwp.start, k);
    if j >= at(uwp.n, k) { return; }
    let lr = schedule_lr_of(uwp.sched, uw_step[0]);
    let o = uw_o[at(uwp.src, k) + j];
    let wd = uwp.weight_decay;
    switch k {
        case 0u: { uw_p0[j] = update_of(lr, wd, uw_p0[j], o); }
        case 1u: { uw_p1[j] = update_of(lr, wd, uw_p1[j], o); }
        case 2u: { uw_p2[j] = update_of(lr, wd, uw_p2[j], o); }
        case 3u: { uw_p3[j] = update_of(lr, wd, uw_p3[j], o); }
        case 4u: { uw_p4[j] = update_of(lr, wd, uw_p4[j], o); }
        case 5u: { uw_p5[j] = update_of(lr, wd, uw_p5[j], o); }
        case 6u: { uw_p6[j] = update_of(lr, wd, uw_p6[j], o); }
        case 7u: { uw_p7[j] = update_of(lr, wd, uw_p7[j], o); }
        case 8u: { uw_p8[j] = update_of(lr, wd, uw_p8[j], o); }
        case 9u: { uw_p9[j] = update_of(lr, wd, uw_p9[j], o); }
        case 10u: { uw_p10[j] = update_of(lr, wd, uw_p10[j], o); }
        case 11u: { uw_p11[j] = update_of(lr, wd, uw_p11[j], o); }
        case 12u: { uw_p12[j] = update_of(lr, wd, uw_p12[j], o); }
        case 13u: { uw_p13[j] = update_of(lr, wd, uw_p13[j], o); }
        case 14u: { uw_p14[j] = update_of(lr, wd, uw_p14[j], o); }
        case 15u: { uw_p15[j] = update_of(lr, wd, uw_p15[j], o); }
        case 16u: { uw_p16[j] = update_of(lr, wd, uw_p16[j], o); }
        case 17u: { uw_p17[j] = update_of(lr, wd, uw_p17[j], o); }
        case 18u: { uw_p18[j] = update_of(lr, wd, uw_p18[j], o); }
        case 19u: { uw_p19[j] = update_of(lr, wd, uw_p19[j], o); }
        case 20u: { uw_p20[j] = update_of(lr, wd, uw_p20[j], o); }
        case 21u: { uw_p21[j] = update_of(lr, wd, uw_p21[j], o); }
        case 22u: { uw_p22[j] = update_of(lr, wd, uw_p22[j], o); }
        case 23u: { uw_p23[j] = update_of(lr, wd, uw_p23[j], o); }
        case 24u: { uw_p24[j] = update_of(lr, wd, uw_p24[j], o); }
        case 25u: { uw_p25[j] = update_of(lr, wd, uw_p25[j], o); }
        case 26u: { uw_p26[j] = update_of(lr, wd, uw_p26[j], o); }
        case 27u: { uw_p27[j] = update_of(lr, wd, uw_p27[j], o); }
        case 28u: { uw_p28[j] = update_of(lr, wd, uw_p28[j], o); }
        default: { uw_p29[j] = update_of(lr, wd, uw_p29[j], o); }
    }
}
