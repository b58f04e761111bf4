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
    let p = sgd_param[i];
    var g = sgd_grad[i] * sgd_clip[0];
    if sp.weight_decay != 0.0 {
        g = g + sp.weight_decay * p;
    }
    if sp.momentum != 0.0 {
        let b = sp.momentum * sgd_mom[i] + (1.0 - sp.dampening) * g;
        sgd_mom[i] = b;
        if sp.nesterov == 1u {
            g = g + sp.momentum * b;
        } else {
            g = b;
        }
    }
    sgd_param[i] = p - lr * g;
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
    var p = adam_param[i];
    var g = adam_grad[i] * adam_clip[0];
    if ap.weight_decay != 0.0 {
        if ap.decoupled == 1u {
            p = p * (1.0 - lr * ap.weight_decay);
        } else {
            g = g + ap.weight_decay * p;
        }
    }
    let m = ap.beta1 * adam_m[i] + (1.0 - ap.beta1) * g;
    let v = ap.beta2 * adam_v[i] + (1.0 - ap.beta2) * g * g;
    adam_m[i] = m;
    adam_v[i] = v;
    let denom = sqrt(v) / sqrt(bc2) + ap.eps;
    adam_param[i] = p - (lr / bc1) * (m / denom);
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
    var d = ep.decay;
    if ep.warmup == 1u {
        let s = ema_step[0];
        d = min(d, f32(1u + s) / f32(10u + s));
    }
    ema_avg[i] = d * ema_avg[i] + (1.0 - d) * ema_param[i];
}
