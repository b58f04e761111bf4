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

// A step that dynamic loss scaling skips (optim.wgsl's `clip_guard_scaled`) marks the clip buffer
// (clip[0] = -1) and the step counter's top bit: the momentum and update kernels then leave their
// buffers as they are.
const STEP_SKIP: u32 = 0x80000000u;

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
    if i >= mp.n || mom_clip[0] < 0.0 { return; }
    let r = momentum_of(mp.momentum, mp.nesterov, mom_grad[i] * mom_clip[0], mom_buf[i]);
    mom_buf[i] = r.x;
    mom_out[mp.dst + i] = r.y;
}

// ---- Nesterov momentum into the arena, up to SLOTS matrices (muon_momentum_multi) or up to
// MUON_MOMENTUM_SLOTS_WIDE (muon_momentum_multi_wide, devices binding 32 storage buffers per stage);
// build.rs's `//#multi` writes one set of bindings and one `switch` case per slot ----

//#multi muon_momentum_multi:mm:SLOTS muon_momentum_multi_wide:mw:MUON_MOMENTUM_SLOTS_WIDE
@group(0) @binding(#) var<uniform> {p}p: MuonMomentumMultiParams;
//#slot
@group(0) @binding(#) var<storage, read> {p}_g{k}: array<f32>;
@group(0) @binding(#) var<storage, read_write> {p}_m{k}: array<f32>;
//#end
@group(0) @binding(#) var<storage, read> {p}_clip: array<f32>;
@group(0) @binding(#) var<storage, read_write> {p}_out: array<f32>;

@compute @workgroup_size(256)
fn {e}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= {p}p.total { return; }
    let k = slot_of({p}p.start, i, {N});
    let j = i - at({p}p.start, k);
    if j >= at({p}p.n, k) || {p}_clip[0] < 0.0 { return; }
    var g: f32;
    var m: f32;
    switch k {
//#slot
        {case}: { g = {p}_g{k}[j]; m = {p}_m{k}[j]; }
//#end
    }
    let r = momentum_of({p}p.momentum, {p}p.nesterov, g * {p}_clip[0], m);
    switch k {
//#slot
        {case}: { {p}_m{k}[j] = r.x; }
//#end
    }
    {p}_out[at({p}p.dst, k) + j] = r.y;
}
//#end

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
    if i >= up.n || (up_step[0] & STEP_SKIP) != 0u { return; }
    let lr = schedule_lr_of(up.sched, up_step[0]);
    up_param[i] = update_of(lr, up.weight_decay, up_param[i], up_o[up.src + i]);
}

// ---- the update from the arena, up to SLOTS matrices (muon_update_multi) or up to MUON_UPDATE_SLOTS_WIDE
// (muon_update_multi_wide, devices binding 32 storage buffers per stage) ----

//#multi muon_update_multi:um:SLOTS muon_update_multi_wide:uw:MUON_UPDATE_SLOTS_WIDE
@group(0) @binding(#) var<uniform> {p}p: MuonUpdateMultiParams;
//#slot
@group(0) @binding(#) var<storage, read_write> {p}_p{k}: array<f32>;
//#end
@group(0) @binding(#) var<storage, read> {p}_o: array<f32>;
@group(0) @binding(#) var<storage, read> {p}_step: array<u32>;

@compute @workgroup_size(256)
fn {e}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= {p}p.total { return; }
    let k = slot_of({p}p.start, i, {N});
    let j = i - at({p}p.start, k);
    if j >= at({p}p.n, k) || ({p}_step[0] & STEP_SKIP) != 0u { return; }
    let lr = schedule_lr_of({p}p.sched, {p}_step[0]);
    let o = {p}_o[at({p}p.src, k) + j];
    let wd = {p}p.weight_decay;
    switch k {
//#slot
        {case}: { {p}_p{k}[j] = update_of(lr, wd, {p}_p{k}[j], o); }
//#end
    }
}
//#end
