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
// * a skipped step (dynamic loss scaling, `clip_guard_scaled`, when the scaled gradients overflowed): the
//   step counter's top bit (STEP_SKIP) is set and clip[0] = -1 until `advance_step` clears the bit in
//   place of incrementing the counter. Every kernel that updates weights or optimizer state returns at
//   once when it sees either (whichever it binds), so the step changes nothing.
//
// Sums in the clipping kernels run in a fixed order (strided per-thread partials, then a tree in
// workgroup memory, no atomics), so the norm is deterministic.
//#include "common/index.wgsl"
//#include "common/schedule.wgsl"
//#include "common/slots.wgsl"

const WG: u32 = 256u;

// The step counter's top bit: set by `clip_guard_scaled` on a step it skips (kernels::optim::STEP_SKIP).
const STEP_SKIP: u32 = 0x80000000u;

// Whether the step being run is skipped (its counter carries the mark).
fn skipped_step(step: u32) -> bool {
    return (step & STEP_SKIP) != 0u;
}

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

struct ScaledGuardParams {
    n_partials: u32,
    max_norm: f32,
    clip: u32,      // 1: clip the unscaled norm to max_norm; 0: no clipping
    offset: u32,    // added to the step counter, as GuardParams's
    dynamic: u32,   // 1: skip a step whose scaled gradients overflow and lower the scale; 0: a fixed scale
    interval: u32,  // dynamic: double the scale after this many finite steps in a row
    _pad0: u32,
    _pad1: u32,
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
    // A skipped step clears its mark instead: the counter stays where it was.
    if skipped_step(step_rw[0]) {
        step_rw[0] = step_rw[0] & ~STEP_SKIP;
    } else {
        step_rw[0] = step_rw[0] + advp.by;
    }
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
    if i >= sp.n || skipped_step(sgd_step[0]) { return; }
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
    if i >= ap.n || skipped_step(adam_step[0]) { return; }
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

// The sum of cg_partials[0..n) in red[0] and the lowest index of a non-finite one in first_bad[0] (NONE
// if all are finite), the same in every thread after the last barrier. Both clip guards call it: their
// partials are binding 1 of either.
fn partials_sum_first_bad(lid: u32, n: u32) {
    var acc = 0.0;
    var bad = NONE;
    for (var k = lid; k < n; k += WG) {
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
}

// One workgroup: `clip_scale` (the same sum in the same order) when cgp.clip is 1, then what
// `guard_finite` on the loss and then on the partial sums records: a non-finite partial sum is a
// non-finite gradient norm, so the norm's pass finds it too.
@compute @workgroup_size(256)
fn clip_guard(@builtin(local_invocation_index) lid: u32) {
    partials_sum_first_bad(lid, cgp.n_partials);
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

// ---- clip_guard with loss scaling ----
//
// The gradients were computed from the loss times S (the backward's seed, scale[0]), so the partials are
// S^2 times the true ones. One workgroup: the norm's sum as in `clip_guard`, the true norm sqrt(sum) / S,
// and clip[0] = c / S, where c is the clipping factor of the true norm (1 without clipping): the update
// kernels unscale and clip in the one multiply they already do. With `dynamic`, a non-finite sum (an f16
// overflow in the scaled backward) skips the step (the step counter's STEP_SKIP bit, clip[0] = -1),
// halves S (never below 1) and counts it, without tripping the guard; `interval` finite steps in a row
// double S. The guard trips on a non-finite loss as `clip_guard` does, and on a non-finite gradient norm
// with a fixed scale or with S already at 1. scale: [S, finite steps in a row, steps skipped, the S
// this step's gradients carry].

@group(0) @binding(0) var<uniform> sgp: ScaledGuardParams;
// Binding 1, the partial sums, is cg_partials (`partials_sum_first_bad`).
@group(0) @binding(2) var<storage, read> sg_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> sg_step: array<u32>;
@group(0) @binding(4) var<storage, read_write> sg_clip: array<f32>;
@group(0) @binding(5) var<storage, read_write> sg_flag: array<u32>;
@group(0) @binding(6) var<storage, read_write> sg_scale: array<f32>;

@compute @workgroup_size(256)
fn clip_guard_scaled(@builtin(local_invocation_index) lid: u32) {
    partials_sum_first_bad(lid, sgp.n_partials);
    if lid != 0u {
        return;
    }
    let s = sg_scale[0];
    let finite = first_bad[0] == NONE && is_finite(red[0]);
    let skip = sgp.dynamic == 1u && !finite;
    let norm = sqrt(red[0]) / s;
    if sg_flag[0] == 0u {
        var what = 0u;
        if !is_finite(sg_loss[0]) {
            what = GUARD_LOSS;
        } else if !finite && (sgp.dynamic == 0u || s <= 1.0) {
            what = GUARD_GRADIENT;
        }
        if what != 0u {
            sg_flag[0] = 1u;
            sg_flag[1] = sg_step[0] + sgp.offset;
            sg_flag[2] = what;
            sg_flag[3] = select(0u, first_bad[0], what == GUARD_GRADIENT && first_bad[0] != NONE);
        }
    }
    sg_clip[1] = norm;
    sg_scale[3] = s;
    if skip {
        sg_step[0] = sg_step[0] | STEP_SKIP;
        sg_clip[0] = -1.0;
        sg_scale[0] = max(s * 0.5, 1.0);
        sg_scale[1] = 0.0;
        sg_scale[2] = sg_scale[2] + 1.0;
        return;
    }
    var c = 1.0;
    if sgp.clip == 1u {
        c = min(1.0, sgp.max_norm / (norm + 1e-6));
    }
    sg_clip[0] = c / s;
    if sgp.dynamic == 1u {
        let good = sg_scale[1] + 1.0;
        if good >= f32(sgp.interval) {
            sg_scale[1] = 0.0;
            if is_finite(s * 2.0) {
                sg_scale[0] = s * 2.0;
            }
        } else {
            sg_scale[1] = good;
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
    if i >= ep.n || skipped_step(ema_step[0]) { return; }
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

// Each multi-tensor kernel is written once below and expanded by build.rs's `//#multi` directive into its
// SLOTS form and, where one exists, its wide form for devices that bind more storage buffers per stage
// (common/slots.wgsl): one set of bindings and one `switch` case per slot.

// ---- adam_multi over up to SLOTS tensors, adam_multi_wide over up to ADAM_SLOTS_WIDE ----

//#multi adam_multi:am:SLOTS adam_multi_wide:aw:ADAM_SLOTS_WIDE
@group(0) @binding(#) var<uniform> {p}p: AdamMultiParams;
//#slot
@group(0) @binding(#) var<storage, read_write> {p}_p{k}: array<f32>;
@group(0) @binding(#) var<storage, read> {p}_g{k}: array<f32>;
@group(0) @binding(#) var<storage, read_write> {p}_m{k}: array<f32>;
@group(0) @binding(#) var<storage, read_write> {p}_v{k}: array<f32>;
//#end
@group(0) @binding(#) var<storage, read> {p}_step: array<u32>;
@group(0) @binding(#) var<storage, read> {p}_clip: array<f32>;

@compute @workgroup_size(256)
fn {e}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= {p}p.total { return; }
    let k = slot_of({p}p.start, i, {N});
    let j = i - at({p}p.start, k);
    if j >= at({p}p.n, k) || skipped_step({p}_step[0]) { return; }
    let s = {p}_step[0];
    let lr = schedule_lr_of({p}p.a.sched, s);
    let t = f32(s + 1u);
    let bc1 = bias_correction({p}p.a.beta1, t);
    let bc2 = bias_correction({p}p.a.beta2, t);
    var p: f32;
    var g: f32;
    var m: f32;
    var v: f32;
    switch k {
//#slot
        {case}: { p = {p}_p{k}[j]; g = {p}_g{k}[j]; m = {p}_m{k}[j]; v = {p}_v{k}[j]; }
//#end
    }
    let r = adam_update({p}p.a, lr, bc1, bc2, p, g * {p}_clip[0], m, v);
    switch k {
//#slot
        {case}: { {p}_p{k}[j] = r.x; {p}_m{k}[j] = r.y; {p}_v{k}[j] = r.z; }
//#end
    }
}
//#end

// ---- sgd_multi over up to SLOTS tensors ----

//#multi sgd_multi:sm:SLOTS
@group(0) @binding(#) var<uniform> {p}p: SgdMultiParams;
//#slot
@group(0) @binding(#) var<storage, read_write> {p}_p{k}: array<f32>;
@group(0) @binding(#) var<storage, read> {p}_g{k}: array<f32>;
@group(0) @binding(#) var<storage, read_write> {p}_b{k}: array<f32>;
//#end
@group(0) @binding(#) var<storage, read> {p}_step: array<u32>;
@group(0) @binding(#) var<storage, read> {p}_clip: array<f32>;

@compute @workgroup_size(256)
fn {e}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= {p}p.total { return; }
    let k = slot_of({p}p.start, i, {N});
    let j = i - at({p}p.start, k);
    if j >= at({p}p.n, k) || skipped_step({p}_step[0]) { return; }
    let lr = schedule_lr_of({p}p.s.sched, {p}_step[0]);
    let mom = {p}p.s.momentum != 0.0;
    var p: f32;
    var g: f32;
    var b = 0.0;
    switch k {
//#slot
        {case}: { p = {p}_p{k}[j]; g = {p}_g{k}[j]; if mom { b = {p}_b{k}[j]; } }
//#end
    }
    let r = sgd_update({p}p.s, lr, p, g * {p}_clip[0], b);
    switch k {
//#slot
        {case}: { {p}_p{k}[j] = r.x; if mom { {p}_b{k}[j] = r.y; } }
//#end
    }
}
//#end

// ---- ema_multi over up to SLOTS tensors, ema_multi_wide over up to EMA_SLOTS_WIDE ----

//#multi ema_multi:em:SLOTS ema_multi_wide:ew:EMA_SLOTS_WIDE
@group(0) @binding(#) var<uniform> {p}p: EmaMultiParams;
//#slot
@group(0) @binding(#) var<storage, read_write> {p}_a{k}: array<f32>;
@group(0) @binding(#) var<storage, read> {p}_p{k}: array<f32>;
//#end
@group(0) @binding(#) var<storage, read> {p}_step: array<u32>;

@compute @workgroup_size(256)
fn {e}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= {p}p.total { return; }
    let k = slot_of({p}p.start, i, {N});
    let j = i - at({p}p.start, k);
    if j >= at({p}p.n, k) || skipped_step({p}_step[0]) { return; }
    let d = ema_decay({p}p.e, {p}_step[0]);
    switch k {
//#slot
        {case}: { {p}_a{k}[j] = d * {p}_a{k}[j] + (1.0 - d) * {p}_p{k}[j]; }
//#end
    }
}
//#end

// ---- sumsq_multi over up to SLOTS tensors, sumsq_multi_wide over up to SUMSQ_SLOTS_WIDE ----

//#multi sumsq_multi:qm:SLOTS sumsq_multi_wide:qw:SUMSQ_SLOTS_WIDE
@group(0) @binding(#) var<uniform> {p}p: SumsqMultiParams;
//#slot
@group(0) @binding(#) var<storage, read> {p}_x{k}: array<f32>;
//#end
@group(0) @binding(#) var<storage, read_write> {p}_partials: array<f32>;

// Workgroup w of slot k sums x_k^2 over its chunk into partials[slot[k] + w - start[k]]: the partials
// `sumsq_partial` writes for each tensor, in the same order.
@compute @workgroup_size(256)
fn {e}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let gw = flat_id(wid, nwg, 0u, 1u);
    if gw >= {p}p.total { return; }  // uniform: the whole workgroup leaves together
    let k = slot_of({p}p.start, gw, {N});
    let w = gw - at({p}p.start, k);
    let n = at({p}p.n, k);
    let chunk = at({p}p.chunk, k);
    let base = w * chunk;
    if base >= n { return; }
    let end = min(base + chunk, n);
    var acc = 0.0;
    for (var e = base + lid; e < end; e += WG) {
        var x: f32;
        switch k {
//#slot
            {case}: { x = {p}_x{k}[e]; }
//#end
        }
        acc = acc + x * x;
    }
    red[lid] = acc;
    workgroupBarrier();
    tree_sum(lid);
    if lid == 0u {
        {p}_partials[at({p}p.slot, k) + w] = red[0];
    }
}
//#end
