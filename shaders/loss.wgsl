// Loss kernels: cross-entropy fused with log-softmax over the last axis, and binary cross-entropy with
// logits, each with its backward.
//
// Cross-entropy, logits [rows, len] f32 and targets [rows] u32 (class ids):
//   cross_entropy_fwd: one workgroup per row (rows fold into y past the per-dimension limit, as
//     kernels::groups_1d with one row per workgroup). The row max and the sum of exp(x - max) are reduced
//     as in softmax_rows (WG_REDUCE strided partials, then a tree or subgroup operations); its variants
//     are softmax's (64, 128 or 256 threads per row, workgroup memory or subgroups); thread 0 writes
//       lse[row]  = max + log(sum)            (saved for the backward)
//       loss[row] = log(sum) + (max - x[t])   (= lse - x[t]; both terms are >= 0, so no cancellation)
//   cross_entropy_bwd: one thread per logit, dlogits = (exp(x - lse[row]) - [v == t]) * g[row], where g is
//     the upstream gradient per row (1/rows for a mean loss), or with g_one g[0] * g_scale for every row
//     (the mean loss's own backward, g its upstream gradient and g_scale = 1/rows).
// Target clamping: a target >= len is read as len - 1 (the last class) by both kernels, so a bad target can
// never index outside the row; its loss and gradient are then those of class len - 1, which is wrong but
// bounded. Targets are validated once on the host (ops::loss::check_targets), never inside a step.
//
// Binary cross-entropy with logits, elementwise:
//   bce_logits_fwd: loss = max(x, 0) - x t + log(1 + exp(-|x|)), stable for any finite x;
//   bce_logits_bwd: dx = (sigmoid(x) - t) * dy, dy one element broadcast (dy_full = 0) or one per element.
//#include "common/index.wgsl"
//#include "common/workgroup_reduce.wgsl"
//#include "common/row_max_sumexp.wgsl"

// Threads per workgroup of the elementwise entries; cross_entropy_fwd uses WG_REDUCE, which its
// variants set (the row grid is the same for all of them).
const WG: u32 = 256u;
//#variant sg subgroups entries=cross_entropy_fwd
//#variant sg128 subgroups WG_REDUCE=128u entries=cross_entropy_fwd
//#variant sg64 subgroups WG_REDUCE=64u entries=cross_entropy_fwd
//#variant wg128 WG_REDUCE=128u entries=cross_entropy_fwd
//#variant wg64 WG_REDUCE=64u entries=cross_entropy_fwd

struct CrossEntropyParams {
    rows: u32,
    len: u32,       // classes per row, >= 1
    g_one: u32,     // cross_entropy_bwd: 1: g has one element and row r's gradient is g[0] * g_scale
    g_scale: f32,   // (a mean loss: g_scale = 1/rows, what the mean's backward multiplies by)
}

struct BceParams {
    n: u32,
    dy_full: u32,  // 1: dy has n elements; 0: dy[0] for all
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> cp: CrossEntropyParams;
// Binding 1, the logits, is row_in of common/row_max_sumexp.wgsl.
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;

// The target of `row`, clamped into the row (see the header).
fn target_of(row: u32) -> u32 {
    return min(targets[row], cp.len - 1u);
}

@compute @workgroup_size(WG_REDUCE)
fn cross_entropy_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, 0u, 1u);
    if row >= cp.rows { return; }  // uniform: the whole workgroup leaves together
    let base = row * cp.len;
    let len = cp.len;

    let ms = row_max_sumexp(lid, base, len);
    let m = ms.x;
    let sum = ms.y;

    if lid == 0u {
        let ls = log(sum);
        lse[row] = m + ls;
        loss[row] = ls + (m - row_in[base + target_of(row)]);
    }
}

@group(0) @binding(3) var<storage, read> lse_in: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> dlogits: array<f32>;

@compute @workgroup_size(256)
fn cross_entropy_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= cp.rows * cp.len { return; }  // the op keeps rows * len below 2^32
    let row = i / cp.len;
    let v = i - row * cp.len;
    let onehot = select(0.0, 1.0, v == target_of(row));
    var gr: f32;
    if cp.g_one == 1u {
        gr = g[0] * cp.g_scale;
    } else {
        gr = g[row];
    }
    dlogits[i] = (exp(row_in[i] - lse_in[row]) - onehot) * gr;
}

@group(0) @binding(0) var<uniform> bp: BceParams;
@group(0) @binding(1) var<storage, read> bx: array<f32>;
@group(0) @binding(2) var<storage, read> bt: array<f32>;
@group(0) @binding(3) var<storage, read_write> bloss: array<f32>;

@compute @workgroup_size(256)
fn bce_logits_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= bp.n { return; }
    let x = bx[i];
    bloss[i] = max(x, 0.0) - x * bt[i] + log(1.0 + exp(-abs(x)));
}

@group(0) @binding(3) var<storage, read> bdy: array<f32>;
@group(0) @binding(4) var<storage, read_write> bdx: array<f32>;

@compute @workgroup_size(256)
fn bce_logits_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= bp.n { return; }
    let dy = bdy[select(0u, i, bp.dy_full == 1u)];
    bdx[i] = (1.0 / (1.0 + exp(-bx[i])) - bt[i]) * dy;
}
