// Optimizers: SGD (momentum, Nesterov, L2 weight decay), Adam and AdamW, gradient clipping by global norm,
// an exponential moving average of the weights, and the step counter they all read.
//
// A training step is recorded once and replayed, so params are frozen at record time. What changes per
// step lives in storage buffers:
// * `step` (one u32): the 0-based index of the current optimizer step. The update kernels read it for the
//   learning-rate schedule (common/schedule.wgsl) and Adam's bias correction; `advance_step` increments it
//   and ends a training step.
// * `clip` (two f32: [scale, total_norm]): every gradient element is multiplied by clip[0] as it is read,
//   so clipping costs no pass over the gradients. `sumsq_partial` (once per gradient tensor) and
//   `clip_scale` compute it on the GPU with no readback; with clipping off clip[0] = 1 is filled once.
//
// * `flag` (four u32: [tripped, step, what, index]): the finiteness guard. `guard_finite` checks a short
//   array (the loss, the gradients' partial sums of squares, a weight tensor) and, on the first
//   non-finite value of the run, records the step, what was checked and the index of the first bad
//   value; it is sticky, so a read every N steps still names the first bad step.
//
// Sums in the clipping kernels run in a fixed order (strided per-thread partials, then a tree in
// workgroup memory, no atomics), so the norm is deterministic.
//#include "common/index.wgsl"
//#include "common/schedule.wgsl"
//#include "common/slots.wgsl"

const WG: u32 = 256u;

struct AdvanceParams {
    by: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct SgdParams {
    sched: ScheduleParams,
    n: u32,
    momentum: f32,      // 0: plain SGD, the momentum buffer is neither read nor written
    dampening: f32,
    nesterov: u32,
    weight_decay: f32,  // L2: weight_decay * p is added to the (clipped) gradient
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct AdamParams {
    sched: ScheduleParams,
    n: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decoupled: u32,     // 0: Adam, L2 added to the gradient; 1: AdamW, p *= 1 - lr * weight_decay
    _pad0: u32,
    _pad1: u32,
}

struct SumsqParams {
    n: u32,
    chunk: u32,   // elements per workgroup, a multiple of WG
    slot: u32,    // first slot of `partials` this tensor writes (one per workgroup)
    _pad0: u32,
}

struct ClipParams {
    n_partials: u32,
    max_norm: f32,
    _pad0: u32,
    _pad1: u32,
}

struct GuardParams {
    n: u32,       // values to check
    what: u32,    // recorded with the first non-finite value: 1 loss, 2 gradient partial sums, 3 weights
    offset: u32,  // added to the step counter: 1 inside a step (0-based index), 0 after `advance_step`
    tag: u32,     // added to the index of the first non-finite value (where the array sits in a larger list)
}

struct ClipGuardParams {
    n_partials: u32,
    max_norm: f32,
    clip: u32,    // 1: write the clip scale and norm as `clip_scale` does; 0: only the guard
    offset: u32,  // added to the step counter, as GuardParams's
}

struct EmaParams {
    n: u32,
    decay: f32,
    warmup: u32,  // 1: decay_t = min(decay, (1 + step) / (10 + step))
    _pad0: u32,
}

// ---- step counter ----

@group(0) @binding(0) var<uniform> advp: AdvanceParams;
@group(0) @binding(1) var<storage, read_write> step_rw: array<u32>;

@compute @workgroup_size(1)
fn advance_step() {
    step_rw[0] = step_rw[0] + advp.by;
}

// ---- SGD ----

@group(0) @binding(0) var<uniform> sp: SgdParams;
@group(0) @binding(1) var<storage, read_write> sgd_param: array<f32>;
@group(0) @binding(2) var<storage, read> sgd_grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> sgd_mom: array<f32>;
@group(0) @binding(4) var<storage, read> sgd_step: array<u32>;
@group(0) @binding(5) var<storage, read> sgd_clip: array<f32>;

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= sp.n { return; }
    let lr = schedule_lr_of(sp.sched, sgd_step[0]);
    var b = 0.0;
    if sp.momentum != 0.0 {
        b = sgd_mom[i];
    }
    let r = sgd_update(sp, lr, sgd_param[i], sgd_grad[i] * sgd_clip[0], b);
    if sp.momentum != 0.0 {
        sgd_mom[i] = r.y;
    }
    sgd_param[i] = r.x;
}

// One element's SGD update from p, its clipped gradient g and its momentum b (ignored without momentum):
// returns (p', b'). Shared by `sgd` and `sgd_multi`.
fn sgd_update(c: SgdParams, lr: f32, p: f32, g0: f32, b0: f32) -> vec2<f32> {
    var g = g0;
    if c.weight_decay != 0.0 {
        g = g + c.weight_decay * p;
    }
    var b = b0;
    if c.momentum != 0.0 {
        b = c.momentum * b0 + (1.0 - c.dampening) * g;
        if c.nesterov == 1u {
            g = g + c.momentum * b;
        } else {
            g = b;
        }
    }
    return vec2<f32>(p - lr * g, b);
}

// ---- Adam / AdamW ----

@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read_write> adam_param: array<f32>;
@group(0) @binding(2) var<storage, read> adam_grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_v: array<f32>;
@group(0) @binding(5) var<storage, read> adam_step: array<u32>;
@group(0) @binding(6) var<storage, read> adam_clip: array<f32>;

// 1 - beta^t. beta = 0 gives 1 without asking pow about a zero base (outside its domain in WGSL).
fn bias_correction(beta: f32, t: f32) -> f32 {
    if beta == 0.0 {
        return 1.0;
    }
    return 1.0 - pow(beta, t);
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= ap.n { return; }
    let s = adam_step[0];
    let lr = schedule_lr_of(ap.sched, s);
    let t = f32(s + 1u);
    let bc1 = bias_correction(ap.beta1, t);
    let bc2 = bias_correction(ap.beta2, t);
    let r = adam_update(ap, lr, bc1, bc2, adam_param[i], adam_grad[i] * adam_clip[0], adam_m[i], adam_v[i]);
    adam_param[i] = r.x;
    adam_m[i] = r.y;
    adam_v[i] = r.z;
}

// One element's Adam/AdamW update from its parameter p, its clipped gradient g and its moments m, v:
// returns (p', m', v'). Shared by `adam` and `adam_multi`, so both compute the same numbers.
fn adam_update(a: AdamParams, lr: f32, bc1: f32, bc2: f32, p0: f32, g0: f32, m0: f32, v0: f32) -> vec3<f32> {
    var p = p0;
    var g = g0;
    if a.weight_decay != 0.0 {
        if a.decoupled == 1u {
            p = p * (1.0 - lr * a.weight_decay);
        } else {
            g = g + a.weight_decay * p;
        }
    }
    let m = a.beta1 * m0 + (1.0 - a.beta1) * g;
    let v = a.beta2 * v0 + (1.0 - a.beta2) * g * g;
    let denom = sqrt(v) / sqrt(bc2) + a.eps;
    return vec3<f32>(p - (lr / bc1) * (m / denom), m, v);
}

// ---- gradient clipping by global norm ----

var<workgroup> red: array<f32, WG>;

// Tree sum of red[0..WG) into red[0]; every thread of the workgroup calls it.
fn tree_sum(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
}

@group(0) @binding(0) var<uniform> qp: SumsqParams;
@group(0) @binding(1) var<storage, read> sq_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sq_partials: array<f32>;

// Workgroup w sums x^2 over elements [w * chunk, (w + 1) * chunk) into partials[slot + w].
@compute @workgroup_size(256)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let w = flat_id(wid, nwg, 0u, 1u);
    let base = w * qp.chunk;
    if base >= qp.n { return; }  // uniform: the whole workgroup leaves together
    let end = min(base + qp.chunk, qp.n);
    var acc = 0.0;
    for (var k = base + lid; k < end; k += WG) {
        let x = sq_x[k];
        acc = acc + x * x;
    }
    red[lid] = acc;
    workgroupBarrier();
    tree_sum(lid);
    if lid == 0u {
        sq_partials[qp.slot + w] = red[0];
    }
}

@group(0) @binding(0) var<uniform> cp: ClipParams;
@group(0) @binding(1) var<storage, read> cl_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> cl_clip: array<f32>;

// One workgroup: the global norm from every partial, and the scale that brings it down to max_norm.
@compute @workgroup_size(256)
fn clip_scale(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var k = lid; k < cp.n_partials; k += WG) {
        acc = acc + cl_partials[k];
    }
    red[lid] = acc;
    workgroupBarrier();
    tree_sum(lid);
    if lid == 0u {
        let norm = sqrt(red[0]);
        cl_clip[0] = min(1.0, cp.max_norm / (norm + 1e-6));
        cl_clip[1] = norm;
    }
}

// ---- finiteness guard ----

@group(0) @binding(0) var<uniform> gp: GuardParams;
@group(0) @binding(1) var<storage, read> gd_x: array<f32>;
@group(0) @binding(2) var<storage, read> gd_step: array<u32>;
@group(0) @binding(3) var<storage, read_write> gd_flag: array<u32>;

const NONE: u32 = 0xffffffffu;

var<workgroup> first_bad: array<u32, WG>;

// Inf and NaN have every exponent bit set. A bit test, not x != x: compilers may assume finite floats.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// One workgroup: the lowest index of a non-finite value among x[0..n), recorded if nothing was before.
@compute @workgroup_size(256)
fn guard_finite(@builtin(local_invocation_index) lid: u32) {
    var bad = NONE;
    for (var k = lid; k < gp.n; k += WG) {
        if !is_finite(gd_x[k]) {
            bad = k;
            break;
        }
    }
    first_bad[lid] = bad;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            first_bad[lid] = min(first_bad[lid], first_bad[lid + s]);
        }
        workgroupBarrier();
    }
    if lid == 0u && first_bad[0] != NONE && gd_flag[0] == 0u {
        gd_flag[0] = 1u;
        gd_flag[1] = gd_step[0] + gp.offset;
        gd_flag[2] = gp.what;
        gd_flag[3] = gp.tag + first_bad[0];
    }
}

// ---- clip_scale and both guards of a training step in one dispatch ----

@group(0) @binding(0) var<uniform> cgp: ClipGuardParams;
@group(0) @binding(1) var<storage, read> cg_partials: array<f32>;
@group(0) @binding(2) var<storage, read> cg_loss: array<f32>;
@group(0) @binding(3) var<storage, read> cg_step: array<u32>;
@group(0) @binding(4) var<storage, read_write> cg_clip: array<f32>;
@group(0) @binding(5) var<storage, read_write> cg_flag: array<u32>;

// The `what` codes of GuardParams (kernels::optim::GUARD_LOSS, GUARD_GRADIENT).
const GUARD_LOSS: u32 = 1u;
const GUARD_GRADIENT: u32 = 2u;

// One workgroup: `clip_scale` (the same sum in the same order) when cgp.clip is 1, then what
// `guard_finite` on the loss and then on the partial sums records: a non-finite partial sum is a
// non-finite gradient norm, so the norm's pass finds it too.
@compute @workgroup_size(256)
fn clip_guard(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    var bad = NONE;
    for (var k = lid; k < cgp.n_partials; k += WG) {
        let x = cg_partials[k];
        acc = acc + x;
        if bad == NONE && !is_finite(x) {
            bad = k;
        }
    }
    red[lid] = acc;
    first_bad[lid] = bad;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            red[lid] = red[lid] + red[lid + s];
            first_bad[lid] = min(first_bad[lid], first_bad[lid + s]);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        if cgp.clip == 1u {
            let norm = sqrt(red[0]);
            cg_clip[0] = min(1.0, cgp.max_norm / (norm + 1e-6));
            cg_clip[1] = norm;
        }
        if cg_flag[0] == 0u {
            var what = 0u;
            var index = 0u;
            if !is_finite(cg_loss[0]) {
                what = GUARD_LOSS;
            } else if first_bad[0] != NONE {
                what = GUARD_GRADIENT;
                index = first_bad[0];
            }
            if what != 0u {
                cg_flag[0] = 1u;
                cg_flag[1] = cg_step[0] + cgp.offset;
                cg_flag[2] = what;
                cg_flag[3] = index;
            }
        }
    }
}

// ---- exponential moving average of the weights ----

@group(0) @binding(0) var<uniform> ep: EmaParams;
@group(0) @binding(1) var<storage, read_write> ema_avg: array<f32>;
@group(0) @binding(2) var<storage, read> ema_param: array<f32>;
@group(0) @binding(3) var<storage, read> ema_step: array<u32>;

@compute @workgroup_size(256)
fn ema(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= ep.n { return; }
    let d = ema_decay(ep, ema_step[0]);
    ema_avg[i] = d * ema_avg[i] + (1.0 - d) * ema_param[i];
}

// The decay of step s: the configured one, or with warmup min(decay, (1 + s) / (10 + s)).
fn ema_decay(c: EmaParams, s: u32) -> f32 {
    var d = c.decay;
    if c.warmup == 1u {
        d = min(d, f32(1u + s) / f32(10u + s));
    }
    return d;
}

// ---- multi-tensor kernels: up to SLOTS tensors per dispatch ----
//
// The same updates and sums as the one-tensor kernels above, over up to SLOTS tensors bound side by side,
// so an optimizer step over many tensors costs a few dispatches instead of several per tensor. Slot k
// covers global indices [start[k], start[k] + n[k]) (elements for the updates, workgroups for
// `sumsq_multi`); starts are multiples of WG, so each workgroup serves one slot, and an unused slot has
// n = 0 and start = total. Each element computes exactly what the one-tensor kernel computes for it.

struct AdamMultiParams {
    a: AdamParams,                // `n` unused: each slot has its own
    n: array<vec4<u32>, 8>,       // elements of slot k's tensor
    start: array<vec4<u32>, 8>,   // first global element of slot k
    total: u32,                   // global elements, padding included
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct SgdMultiParams {
    s: SgdParams,                 // `n` unused
    n: array<vec4<u32>, 8>,
    start: array<vec4<u32>, 8>,
    total: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct EmaMultiParams {
    e: EmaParams,                 // `n` unused
    n: array<vec4<u32>, 8>,
    start: array<vec4<u32>, 8>,
    total: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct SumsqMultiParams {
    n: array<vec4<u32>, 8>,       // elements of slot k's tensor
    start: array<vec4<u32>, 8>,   // first global workgroup of slot k
    chunk: array<vec4<u32>, 8>,   // elements per workgroup of slot k
    slot: array<vec4<u32>, 8>,    // first partial slot of slot k's tensor
    total: u32,                   // global workgroups
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> amp: AdamMultiParams;
@group(0) @binding(1) var<storage, read_write> am_p0: array<f32>;
@group(0) @binding(2) var<storage, read> am_g0: array<f32>;
@group(0) @binding(3) var<storage, read_write> am_m0: array<f32>;
@group(0) @binding(4) var<storage, read_write> am_v0: array<f32>;
@group(0) @binding(5) var<storage, read_write> am_p1: array<f32>;
@group(0) @binding(6) var<storage, read> am_g1: array<f32>;
@group(0) @binding(7) var<storage, read_write> am_m1: array<f32>;
@group(0) @binding(8) var<storage, read_write> am_v1: array<f32>;
@group(0) @binding(9) var<storage, read_write> am_p2: array<f32>;
@group(0) @binding(10) var<storage, read> am_g2: array<f32>;
@group(0) @binding(11) var<storage, read_write> am_m2: array<f32>;
@group(0) @binding(12) var<storage, read_write> am_v2: array<f32>;
@group(0) @binding(13) var<storage, read_write> am_p3: array<f32>;
@group(0) @binding(14) var<storage, read> am_g3: array<f32>;
@group(0) @binding(15) var<storage, read_write> am_m3: array<f32>;
@group(0) @binding(16) var<storage, read_write> am_v3: array<f32>;
@group(0) @binding(17) var<storage, read_write> am_p4: array<f32>;
@group(0) @binding(18) var<storage, read> am_g4: array<f32>;
@group(0) @binding(19) var<storage, read_write> am_m4: array<f32>;
@group(0) @binding(20) var<storage, read_write> am_v4: array<f32>;
@group(0) @binding(21) var<storage, read_write> am_p5: array<f32>;
@group(0) @binding(22) var<storage, read> am_g5: array<f32>;
@group(0) @binding(23) var<storage, read_write> am_m5: array<f32>;
@group(0) @binding(24) var<storage, read_write> am_v5: array<f32>;
@group(0) @binding(25) var<storage, read_write> am_p6: array<f32>;
@group(0) @binding(26) var<storage, read> am_g6: array<f32>;
@group(0) @binding(27) var<storage, read_write> am_m6: array<f32>;
@group(0) @binding(28) var<storage, read_write> am_v6: array<f32>;
@group(0) @binding(29) var<storage, read> am_step: array<u32>;
@group(0) @binding(30) var<storage, read> am_clip: array<f32>;

@compute @workgroup_size(256)
fn adam_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= amp.total { return; }
    let k = slot_of(amp.start, i, SLOTS);
    let j = i - at(amp.start, k);
    if j >= at(amp.n, k) { return; }
    let s = am_step[0];
    let lr = schedule_lr_of(amp.a.sched, s);
    let t = f32(s + 1u);
    let bc1 = bias_correction(amp.a.beta1, t);
    let bc2 = bias_correction(amp.a.beta2, t);
    var p: f32;
    var g: f32;
    var m: f32;
    var v: f32;
    switch k {
        case 0u: { p = am_p0[j]; g = am_g0[j]; m = am_m0[j]; v = am_v0[j]; }
        case 1u: { p = am_p1[j]; g = am_g1[j]; m = am_m1[j]; v = am_v1[j]; }
        case 2u: { p = am_p2[j]; g = am_g2[j]; m = am_m2[j]; v = am_v2[j]; }
        case 3u: { p = am_p3[j]; g = am_g3[j]; m = am_m3[j]; v = am_v3[j]; }
        case 4u: { p = am_p4[j]; g = am_g4[j]; m = am_m4[j]; v = am_v4[j]; }
        case 5u: { p = am_p5[j]; g = am_g5[j]; m = am_m5[j]; v = am_v5[j]; }
        default: { p = am_p6[j]; g = am_g6[j]; m = am_m6[j]; v = am_v6[j]; }
    }
    let r = adam_update(amp.a, lr, bc1, bc2, p, g * am_clip[0], m, v);
    switch k {
        case 0u: { am_p0[j] = r.x; am_m0[j] = r.y; am_v0[j] = r.z; }
        case 1u: { am_p1[j] = r.x; am_m1[j] = r.y; am_v1[j] = r.z; }
        case 2u: { am_p2[j] = r.x; am_m2[j] = r.y; am_v2[j] = r.z; }
        case 3u: { am_p3[j] = r.x; am_m3[j] = r.y; am_v3[j] = r.z; }
        case 4u: { am_p4[j] = r.x; am_m4[j] = r.y; am_v4[j] = r.z; }
        case 5u: { am_p5[j] = r.x; am_m5[j] = r.y; am_v5[j] = r.z; }
        default: { am_p6[j] = r.x; am_m6[j] = r.y; am_v6[j] = r.z; }
    }
}

@group(0) @binding(0) var<uniform> smp: SgdMultiParams;
@group(0) @binding(1) var<storage, read_write> sm_p0: array<f32>;
@group(0) @binding(2) var<storage, read> sm_g0: array<f32>;
@group(0) @binding(3) var<storage, read_write> sm_b0: array<f32>;
@group(0) @binding(4) var<storage, read_write> sm_p1: array<f32>;
@group(0) @binding(5) var<storage, read> sm_g1: array<f32>;
@group(0) @binding(6) var<storage, read_write> sm_b1: array<f32>;
@group(0) @binding(7) var<storage, read_write> sm_p2: array<f32>;
@group(0) @binding(8) var<storage, read> sm_g2: array<f32>;
@group(0) @binding(9) var<storage, read_write> sm_b2: array<f32>;
@group(0) @binding(10) var<storage, read_write> sm_p3: array<f32>;
@group(0) @binding(11) var<storage, read> sm_g3: array<f32>;
@group(0) @binding(12) var<storage, read_write> sm_b3: array<f32>;
@group(0) @binding(13) var<storage, read_write> sm_p4: array<f32>;
@group(0) @binding(14) var<storage, read> sm_g4: array<f32>;
@group(0) @binding(15) var<storage, read_write> sm_b4: array<f32>;
@group(0) @binding(16) var<storage, read_write> sm_p5: array<f32>;
@group(0) @binding(17) var<storage, read> sm_g5: array<f32>;
@group(0) @binding(18) var<storage, read_write> sm_b5: array<f32>;
@group(0) @binding(19) var<storage, read_write> sm_p6: array<f32>;
@group(0) @binding(20) var<storage, read> sm_g6: array<f32>;
@group(0) @binding(21) var<storage, read_write> sm_b6: array<f32>;
@group(0) @binding(22) var<storage, read> sm_step: array<u32>;
@group(0) @binding(23) var<storage, read> sm_clip: array<f32>;

@compute @workgroup_size(256)
fn sgd_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= smp.total { return; }
    let k = slot_of(smp.start, i, SLOTS);
    let j = i - at(smp.start, k);
    if j >= at(smp.n, k) { return; }
    let lr = schedule_lr_of(smp.s.sched, sm_step[0]);
    let mom = smp.s.momentum != 0.0;
    var p: f32;
    var g: f32;
    var b = 0.0;
    switch k {
        case 0u: { p = sm_p0[j]; g = sm_g0[j]; if mom { b = sm_b0[j]; } }
        case 1u: { p = sm_p1[j]; g = sm_g1[j]; if mom { b = sm_b1[j]; } }
        case 2u: { p = sm_p2[j]; g = sm_g2[j]; if mom { b = sm_b2[j]; } }
        case 3u: { p = sm_p3[j]; g = sm_g3[j]; if mom { b = sm_b3[j]; } }
        case 4u: { p = sm_p4[j]; g = sm_g4[j]; if mom { b = sm_b4[j]; } }
        case 5u: { p = sm_p5[j]; g = sm_g5[j]; if mom { b = sm_b5[j]; } }
        default: { p = sm_p6[j]; g = sm_g6[j]; if mom { b = sm_b6[j]; } }
    }
    let r = sgd_update(smp.s, lr, p, g * sm_clip[0], b);
    switch k {
        case 0u: { sm_p0[j] = r.x; if mom { sm_b0[j] = r.y; } }
        case 1u: { sm_p1[j] = r.x; if mom { sm_b1[j] = r.y; } }
        case 2u: { sm_p2[j] = r.x; if mom { sm_b2[j] = r.y; } }
        case 3u: { sm_p3[j] = r.x; if mom { sm_b3[j] = r.y; } }
        case 4u: { sm_p4[j] = r.x; if mom { sm_b4[j] = r.y; } }
        case 5u: { sm_p5[j] = r.x; if mom { sm_b5[j] = r.y; } }
        default: { sm_p6[j] = r.x; if mom { sm_b6[j] = r.y; } }
    }
}

@group(0) @binding(0) var<uniform> emp: EmaMultiParams;
@group(0) @binding(1) var<storage, read_write> em_a0: array<f32>;
@group(0) @binding(2) var<storage, read> em_p0: array<f32>;
@group(0) @binding(3) var<storage, read_write> em_a1: array<f32>;
@group(0) @binding(4) var<storage, read> em_p1: array<f32>;
@group(0) @binding(5) var<storage, read_write> em_a2: array<f32>;
@group(0) @binding(6) var<storage, read> em_p2: array<f32>;
@group(0) @binding(7) var<storage, read_write> em_a3: array<f32>;
@group(0) @binding(8) var<storage, read> em_p3: array<f32>;
@group(0) @binding(9) var<storage, read_write> em_a4: array<f32>;
@group(0) @binding(10) var<storage, read> em_p4: array<f32>;
@group(0) @binding(11) var<storage, read_write> em_a5: array<f32>;
@group(0) @binding(12) var<storage, read> em_p5: array<f32>;
@group(0) @binding(13) var<storage, read_write> em_a6: array<f32>;
@group(0) @binding(14) var<storage, read> em_p6: array<f32>;
@group(0) @binding(15) var<storage, read> em_step: array<u32>;

@compute @workgroup_size(256)
fn ema_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= emp.total { return; }
    let k = slot_of(emp.start, i, SLOTS);
    let j = i - at(emp.start, k);
    if j >= at(emp.n, k) { return; }
    let d = ema_decay(emp.e, em_step[0]);
    switch k {
        case 0u: { em_a0[j] = d * em_a0[j] + (1.0 - d) * em_p0[j]; }
        case 1u: { em_a1[j] = d * em_a1[j] + (1.0 - d) * em_p1[j]; }
        case 2u: { em_a2[j] = d * em_a2[j] + (1.0 - d) * em_p2[j]; }
        case 3u: { em_a3[j] = d * em_a3[j] + (1.0 - d) * em_p3[j]; }
        case 4u: { em_a4[j] = d * em_a4[j] + (1.0 - d) * em_p4[j]; }
        case 5u: { em_a5[j] = d * em_a5[j] + (1.0 - d) * em_p5[j]; }
        default: { em_a6[j] = d * em_a6[j] + (1.0 - d) * em_p6[j]; }
    }
}

@group(0) @binding(0) var<uniform> qmp: SumsqMultiParams;
@group(0) @binding(1) var<storage, read> qm_x0: array<f32>;
@group(0) @binding(2) var<storage, read> qm_x1: array<f32>;
@group(0) @binding(3) var<storage, read> qm_x2: array<f32>;
@group(0) @binding(4) var<storage, read> qm_x3: array<f32>;
@group(0) @binding(5) var<storage, read> qm_x4: array<f32>;
@group(0) @binding(6) var<storage, read> qm_x5: array<f32>;
@group(0) @binding(7) var<storage, read> qm_x6: array<f32>;
@group(0) @binding(8) var<storage, read_write> qm_partials: array<f32>;

// Workgroup w of slot k sums x_k^2 over its chunk into partials[slot[k] + w - start[k]]: the partials
// `sumsq_partial` writes for each tensor, in the same order.
@compute @workgroup_size(256)
fn sumsq_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let gw = flat_id(wid, nwg, 0u, 1u);
    if gw >= qmp.total { return; }  // uniform: the whole workgroup leaves together
    let k = slot_of(qmp.start, gw, SLOTS);
    let w = gw - at(qmp.start, k);
    let n = at(qmp.n, k);
    let chunk = at(qmp.chunk, k);
    let base = w * chunk;
    if base >= n { return; }
    let end = min(base + chunk, n);
    var acc = 0.0;
    for (var e = base + lid; e < end; e += WG) {
        var x: f32;
        switch k {
            case 0u: { x = qm_x0[e]; }
            case 1u: { x = qm_x1[e]; }
            case 2u: { x = qm_x2[e]; }
            case 3u: { x = qm_x3[e]; }
            case 4u: { x = qm_x4[e]; }
            case 5u: { x = qm_x5[e]; }
            default: { x = qm_x6[e]; }
        }
        acc = acc + x * x;
    }
    red[lid] = acc;
    workgroupBarrier();
    tree_sum(lid);
    if lid == 0u {
        qm_partials[at(qmp.slot, k) + w] = red[0];
    }
}

// ---- sumsq_multi over up to SUMSQ_SLOTS_WIDE tensors (devices binding 32 storage buffers per stage) ----

@group(0) @binding(0) var<uniform> qwp: SumsqMultiParams;
@group(0) @binding(1) var<storage, read> qw_x0: array<f32>;
@group(0) @binding(2) var<storage, read> qw_x1: array<f32>;
@group(0) @binding(3) var<storage, read> qw_x2: array<f32>;
@group(0) @binding(4) var<storage, read> qw_x3: array<f32>;
@group(0) @binding(5) var<storage, read> qw_x4: array<f32>;
@group(0) @binding(6) var<storage, read> qw_x5: array<f32>;
@group(0) @binding(7) var<storage, read> qw_x6: array<f32>;
@group(0) @binding(8) var<storage, read> qw_x7: array<f32>;
@group(0) @binding(9) var<storage, read> qw_x8: array<f32>;
@group(0) @binding(10) var<storage, read> qw_x9: array<f32>;
@group(0) @binding(11) var<storage, read> qw_x10: array<f32>;
@group(0) @binding(12) var<storage, read> qw_x11: array<f32>;
@group(0) @binding(13) var<storage, read> qw_x12: array<f32>;
@group(0) @binding(14) var<storage, read> qw_x13: array<f32>;
@group(0) @binding(15) var<storage, read> qw_x14: array<f32>;
@group(0) @binding(16) var<storage, read> qw_x15: array<f32>;
@group(0) @binding(17) var<storage, read> qw_x16: array<f32>;
@group(0) @binding(18) var<storage, read> qw_x17: array<f32>;
@group(0) @binding(19) var<storage, read> qw_x18: array<f32>;
@group(0) @binding(20) var<storage, read> qw_x19: array<f32>;
@group(0) @binding(21) var<storage, read> qw_x20: array<f32>;
@group(0) @binding(22) var<storage, read> qw_x21: array<f32>;
@group(0) @binding(23) var<storage, read> qw_x22: array<f32>;
@group(0) @binding(24) var<storage, read> qw_x23: array<f32>;
@group(0) @binding(25) var<storage, read> qw_x24: array<f32>;
@group(0) @binding(26) var<storage, read> qw_x25: array<f32>;
@group(0) @binding(27) var<storage, read> qw_x26: array<f32>;
@group(0) @binding(28) var<storage, read> qw_x27: array<f32>;
@group(0) @binding(29) var<storage, read> qw_x28: array<f32>;
@group(0) @binding(30) var<storage, read> qw_x29: array<f32>;
@group(0) @binding(31) var<storage, read> qw_x30: array<f32>;
@group(0) @binding(32) var<storage, read_write> qw_partials: array<f32>;

// `sumsq_multi` with SUMSQ_SLOTS_WIDE slots: the same partials in the same order.
@compute @workgroup_size(256)
fn sumsq_multi_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let gw = flat_id(wid, nwg, 0u, 1u);
    if gw >= qwp.total { return; }  // uniform: the whole workgroup leaves together
    let k = slot_of(qwp.start, gw, SUMSQ_SLOTS_WIDE);
    let w = gw - at(qwp.start, k);
    let n = at(qwp.n, k);
    let chunk = at(qwp.chunk, k);
    let base = w * chunk;
    if base >= n { return; }
    let end = min(base + chunk, n);
    var acc = 0.0;
    for (var e = base + lid; e < end; e += WG) {
        var x: f32;
        switch k {
            case 0u: { x = qw_x0[e]; }
            case 1u: { x = qw_x1[e]; }
            case 2u: { x = qw_x2[e]; }
            case 3u: { x = qw_x3[e]; }
            case 4u: { x = qw_x4[e]; }
            case 5u: { x = qw_x5[e]; }
            case 6u: { x = qw_x6[e]; }
            case 7u: { x = qw_x7[e]; }
            case 8u: { x = qw_x8[e]; }
            case 9u: { x = qw_x9[e]; }
            case 10u: { x = qw_x10[e]; }
            case 11u: { x = qw_x11[e]; }
            case 12u: { x = qw_x12[e]; }
            case 13u: { x = qw_x13[e]; }
            case 14u: { x = qw_x14[e]; }
            case 15u: { x = qw_x15[e]; }
            case 16u: { x = qw_x16[e]; }
            case 17u: { x = qw_x17[e]; }
            case 18u: { x = qw_x18[e]; }
            case 19u: { x = qw_x19[e]; }
            case 20u: { x = qw_x20[e]; }
            case 21u: { x = qw_x21[e]; }
            case 22u: { x = qw_x22[e]; }
            case 23u: { x = qw_x23[e]; }
            case 24u: { x = qw_x24[e]; }
            case 25u: { x = qw_x25[e]; }
            case 26u: { x = qw_x26[e]; }
            case 27u: { x = qw_x27[e]; }
            case 28u: { x = qw_x28[e]; }
            case 29u: { x = qw_x29[e]; }
            default: { x = qw_x30[e]; }
        }
        acc = acc + x * x;
    }
    red[lid] = acc;
    workgroupBarrier();
    tree_sum(lid);
    if lid == 0u {
        qw_partials[at(qwp.slot, k) + w] = red[0];
    }
}

// ---- adam_multi over up to ADAM_SLOTS_WIDE tensors (devices binding 62 storage buffers per stage) ----

@group(0) @binding(0) var<uniform> awp: AdamMultiParams;
@group(0) @binding(1) var<storage, read_write> aw_p0: array<f32>;
@group(0) @binding(2) var<storage, read> aw_g0: array<f32>;
@group(0) @binding(3) var<storage, read_write> aw_m0: array<f32>;
@group(0) @binding(4) var<storage, read_write> aw_v0: array<f32>;
@group(0) @binding(5) var<storage, read_write> aw_p1: array<f32>;
@group(0) @binding(6) var<storage, read> aw_g1: array<f32>;
@group(0) @binding(7) var<storage, read_write> aw_m1: array<f32>;
@group(0) @binding(8) var<storage, read_write> aw_v1: array<f32>;
@group(0) @binding(9) var<storage, read_write> aw_p2: array<f32>;
@group(0) @binding(10) var<storage, read> aw_g2: array<f32>;
@group(0) @binding(11) var<storage, read_write> aw_m2: array<f32>;
@group(0) @binding(12) var<storage, read_write> aw_v2: array<f32>;
@group(0) @binding(13) var<storage, read_write> aw_p3: array<f32>;
@group(0) @binding(14) var<storage, read> aw_g3: array<f32>;
@group(0) @binding(15) var<storage, read_write> aw_m3: array<f32>;
@group(0) @binding(16) var<storage, read_write> aw_v3: array<f32>;
@group(0) @binding(17) var<storage, read_write> aw_p4: array<f32>;
@group(0) @binding(18) var<storage, read> aw_g4: array<f32>;
@group(0) @binding(19) var<storage, read_write> aw_m4: array<f32>;
@group(0) @binding(20) var<storage, read_write> aw_v4: array<f32>;
@group(0) @binding(21) var<storage, read_write> aw_p5: array<f32>;
@group(0) @binding(22) var<storage, read> aw_g5: array<f32>;
@group(0) @binding(23) var<storage, read_write> aw_m5: array<f32>;
@group(0) @binding(24) var<storage, read_write> aw_v5: array<f32>;
@group(0) @binding(25) var<storage, read_write> aw_p6: array<f32>;
@group(0) @binding(26) var<storage, read> aw_g6: array<f32>;
@group(0) @binding(27) var<storage, read_write> aw_m6: array<f32>;
@group(0) @binding(28) var<storage, read_write> aw_v6: array<f32>;
@group(0) @binding(29) var<storage, read_write> aw_p7: array<f32>;
@group(0) @binding(30) var<storage, read> aw_g7: array<f32>;
@group(0) @binding(31) var<storage, read_write> aw_m7: array<f32>;
@group(0) @binding(32) var<storage, read_write> aw_v7: array<f32>;
@group(0) @binding(33) var<storage, read_write> aw_p8: array<f32>;
@group(0) @binding(34) var<storage, read> aw_g8: array<f32>;
@group(0) @binding(35) var<storage, read_write> aw_m8: array<f32>;
@group(0) @binding(36) var<storage, read_write> aw_v8: array<f32>;
@group(0) @binding(37) var<storage, read_write> aw_p9: array<f32>;
@group(0) @binding(38) var<storage, read> aw_g9: array<f32>;
@group(0) @binding(39) var<storage, read_write> aw_m9: array<f32>;
@group(0) @binding(40) var<storage, read_write> aw_v9: array<f32>;
@group(0) @binding(41) var<storage, read_write> aw_p10: array<f32>;
@group(0) @binding(42) var<storage, read> aw_g10: array<f32>;
@group(0) @binding(43) var<storage, read_write> aw_m10: array<f32>;
@group(0) @binding(44) var<storage, read_write> aw_v10: array<f32>;
@group(0) @binding(45) var<storage, read_write> aw_p11: array<f32>;
@group(0) @binding(46) var<storage, read> aw_g11: array<f32>;
@group(0) @binding(47) var<storage, read_write> aw_m11: array<f32>;
@group(0) @binding(48) var<storage, read_write> aw_v11: array<f32>;
@group(0) @binding(49) var<storage, read_write> aw_p12: array<f32>;
@group(0) @binding(50) var<storage, read> aw_g12: array<f32>;
@group(0) @binding(51) var<storage, read_write> aw_m12: array<f32>;
@group(0) @binding(52) var<storage, read_write> aw_v12: array<f32>;
@group(0) @binding(53) var<storage, read_write> aw_p13: array<f32>;
@group(0) @binding(54) var<storage, read> aw_g13: array<f32>;
@group(0) @binding(55) var<storage, read_write> aw_m13: array<f32>;
@group(0) @binding(56) var<storage, read_write> aw_v13: array<f32>;
@group(0) @binding(57) var<storage, read_write> aw_p14: array<f32>;
@group(0) @binding(58) var<storage, read> aw_g14: array<f32>;
@group(0) @binding(59) var<storage, read_write> aw_m14: array<f32>;
@group(0) @binding(60) var<storage, read_write> aw_v14: array<f32>;
@group(0) @binding(61) var<storage, read> aw_step: array<u32>;
@group(0) @binding(62) var<storage, read> aw_clip: array<f32>;

// `adam_multi` with ADAM_SLOTS_WIDE slots.
@compute @workgroup_size(256)
fn adam_multi_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= awp.total { return; }
    let k = slot_of(awp.start, i, ADAM_SLOTS_WIDE);
    let j = i - at(awp.start, k);
    if j >= at(awp.n, k) { return; }
    let s = aw_step[0];
    let lr = schedule_lr_of(awp.a.sched, s);
    let t = f32(s + 1u);
    let bc1 = bias_correction(awp.a.beta1, t);
    let bc2 = bias_correction(awp.a.beta2, t);
    var p: f32;
    var g: f32;
    var m: f32;
    var v: f32;
    switch k {
        case 0u: { p = aw_p0[j]; g = aw_g0[j]; m = aw_m0[j]; v = aw_v0[j]; }
        case 1u: { p = aw_p1[j]; g = aw_g1[j]; m = aw_m1[j]; v = aw_v1[j]; }
        case 2u: { p = aw_p2[j]; g = aw_g2[j]; m = aw_m2[j]; v = aw_v2[j]; }
        case 3u: { p = aw_p3[j]; g = aw_g3[j]; m = aw_m3[j]; v = aw_v3[j]; }
        case 4u: { p = aw_p4[j]; g = aw_g4[j]; m = aw_m4[j]; v = aw_v4[j]; }
        case 5u: { p = aw_p5[j]; g = aw_g5[j]; m = aw_m5[j]; v = aw_v5[j]; }
        case 6u: { p = aw_p6[j]; g = aw_g6[j]; m = aw_m6[j]; v = aw_v6[j]; }
        case 7u: { p = aw_p7[j]; g = aw_g7[j]; m = aw_m7[j]; v = aw_v7[j]; }
        case 8u: { p = aw_p8[j]; g = aw_g8[j]; m = aw_m8[j]; v = aw_v8[j]; }
        case 9u: { p = aw_p9[j]; g = aw_g9[j]; m = aw_m9[j]; v = aw_v9[j]; }
        case 10u: { p = aw_p10[j]; g = aw_g10[j]; m = aw_m10[j]; v = aw_v10[j]; }
        case 11u: { p = aw_p11[j]; g = aw_g11[j]; m = aw_m11[j]; v = aw_v11[j]; }
        case 12u: { p = aw_p12[j]; g = aw_g12[j]; m = aw_m12[j]; v = aw_v12[j]; }
        case 13u: { p = aw_p13[j]; g = aw_g13[j]; m = aw_m13[j]; v = aw_v13[j]; }
        default: { p = aw_p14[j]; g = aw_g14[j]; m = aw_m14[j]; v = aw_v14[j]; }
    }
    let r = adam_update(awp.a, lr, bc1, bc2, p, g * aw_clip[0], m, v);
    switch k {
        case 0u: { aw_p0[j] = r.x; aw_m0[j] = r.y; aw_v0[j] = r.z; }
        case 1u: { aw_p1[j] = r.x; aw_m1[j] = r.y; aw_v1[j] = r.z; }
        case 2u: { aw_p2[j] = r.x; aw_m2[j] = r.y; aw_v2[j] = r.z; }
        case 3u: { aw_p3[j] = r.x; aw_m3[j] = r.y; aw_v3[j] = r.z; }
        case 4u: { aw_p4[j] = r.x; aw_m4[j] = r.y; aw_v4[j] = r.z; }
        case 5u: { aw_p5[j] = r.x; aw_m5[j] = r.y; aw_v5[j] = r.z; }
        case 6u: { aw_p6[j] = r.x; aw_m6[j] = r.y; aw_v6[j] = r.z; }
        case 7u: { aw_p7[j] = r.x; aw_m7[j] = r.y; aw_v7[j] = r.z; }
        case 8u: { aw_p8[j] = r.x; aw_m8[j] = r.y; aw_v8[j] = r.z; }
        case 9u: { aw_p9[j] = r.x; aw_m9[j] = r.y; aw_v9[j] = r.z; }
        case 10u: { aw_p10[j] = r.x; aw_m10[j] = r.y; aw_v10[j] = r.z; }
        case 11u: { aw_p11[j] = r.x; aw_m11[j] = r.y; aw_v11[j] = r.z; }
        case 12u: { aw_p12[j] = r.x; aw_m12[j] = r.y; aw_v12[j] = r.z; }
        case 13u: { aw_p13[j] = r.x; aw_m13[j] = r.y; aw_v13[j] = r.z; }
        default: { aw_p14[j] = r.x; aw_m14[j] = r.y; aw_v14[j] = r.z; }
    }
}

// ---- ema_multi over up to EMA_SLOTS_WIDE tensors (devices binding 32 storage buffers per stage) ----

@group(0) @binding(0) var<uniform> ewp: EmaMultiParams;
@group(0) @binding(1) var<storage, read_write> ew_a0: array<f32>;
@group(0) @binding(2) var<storage, read> ew_p0: array<f32>;
@group(0) @binding(3) var<storage, read_write> ew_a1: array<f32>;
@group(0) @binding(4) var<storage, read> ew_p1: array<f32>;
@group(0) @binding(5) var<storage, read_write> ew_a2: array<f32>;
@group(0) @binding(6) var<storage, read> ew_p2: array<f32>;
@group(0) @binding(7) var<storage, read_write> ew_a3: array<f32>;
@group(0) @binding(8) var<storage, read> ew_p3: array<f32>;
@group(0) @binding(9) var<storage, read_write> ew_a4: array<f32>;
@group(0) @binding(10) var<storage, read> ew_p4: array<f32>;
@group(0) @binding(11) var<storage, read_write> ew_a5: array<f32>;
@group(0) @binding(12) var<storage, read> ew_p5: array<f32>;
@group(0) @binding(13) var<storage, read_write> ew_a6: array<f32>;
@group(0) @binding(14) var<storage, read> ew_p6: array<f32>;
@group(0) @binding(15) var<storage, read_write> ew_a7: array<f32>;
@group(0) @binding(16) var<storage, read> ew_p7: array<f32>;
@group(0) @binding(17) var<storage, read_write> ew_a8: array<f32>;
@group(0) @binding(18) var<storage, read> ew_p8: array<f32>;
@group(0) @binding(19) var<storage, read_write> ew_a9: array<f32>;
@group(0) @binding(20) var<storage, read> ew_p9: array<f32>;
@group(0) @binding(21) var<storage, read_write> ew_a10: array<f32>;
@group(0) @binding(22) var<storage, read> ew_p10: array<f32>;
@group(0) @binding(23) var<storage, read_write> ew_a11: array<f32>;
@group(0) @binding(24) var<storage, read> ew_p11: array<f32>;
@group(0) @binding(25) var<storage, read_write> ew_a12: array<f32>;
@group(0) @binding(26) var<storage, read> ew_p12: array<f32>;
@group(0) @binding(27) var<storage, read_write> ew_a13: array<f32>;
@group(0) @binding(28) var<storage, read> ew_p13: array<f32>;
@group(0) @binding(29) var<storage, read_write> ew_a14: array<f32>;
@group(0) @binding(30) var<storage, read> ew_p14: array<f32>;
@group(0) @binding(31) var<storage, read> ew_step: array<u32>;

// `ema_multi` with EMA_SLOTS_WIDE slots.
@compute @workgroup_size(256)
fn ema_multi_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= ewp.total { return; }
    let k = slot_of(ewp.start, i, EMA_SLOTS_WIDE);
    let j = i - at(ewp.start, k);
    if j >= at(ewp.n, k) { return; }
    let d = ema_decay(ewp.e, ew_step[0]);
    switch k {
        case 0u: { ew_a0[j] = d * ew_a0[j] + (1.0 - d) * ew_p0[j]; }
        case 1u: { ew_a1[j] = d * ew_a1[j] + (1.0 - d) * ew_p1[j]; }
        case 2u: { ew_a2[j] = d * ew_a2[j] + (1.0 - d) * ew_p2[j]; }
        case 3u: { ew_a3[j] = d * ew_a3[j] + (1.0 - d) * ew_p3[j]; }
        case 4u: { ew_a4[j] = d * ew_a4[j] + (1.0 - d) * ew_p4[j]; }
        case 5u: { ew_a5[j] = d * ew_a5[j] + (1.0 - d) * ew_p5[j]; }
        case 6u: { ew_a6[j] = d * ew_a6[j] + (1.0 - d) * ew_p6[j]; }
        case 7u: { ew_a7[j] = d * ew_a7[j] + (1.0 - d) * ew_p7[j]; }
        case 8u: { ew_a8[j] = d * ew_a8[j] + (1.0 - d) * ew_p8[j]; }
        case 9u: { ew_a9[j] = d * ew_a9[j] + (1.0 - d) * ew_p9[j]; }
        case 10u: { ew_a10[j] = d * ew_a10[j] + (1.0 - d) * ew_p10[j]; }
        case 11u: { ew_a11[j] = d * ew_a11[j] + (1.0 - d) * ew_p11[j]; }
        case 12u: { ew_a12[j] = d * ew_a12[j] + (1.0 - d) * ew_p12[j]; }
        case 13u: { ew_a13[j] = d * ew_a13[j] + (1.0 - d) * ew_p13[j]; }
        default: { ew_a14[j] = d * ew_a14[j] + (1.0 - d) * ew_p14[j]; }
    }
}
