// QK normalisation: per-head layer norm of q and k in a packed q|k|v projection [rows, 3C] (rows = B·T,
// row r at position r mod T), heads of D = C / heads values, one (γ, β) of D values shared by q's heads
// and one by k's, optionally followed by rotary positions exactly as shaders/rope.wgsl turns them; v is
// copied. One dispatch forward and two backward replace slicing q, k and v out, two layer norms (four
// dispatches each way), the concat and the rope pass.
//
//   x̂ = (x − mean) · rstd over a head's D values (biased variance), n = x̂ · γ + β, y = rot(pos) · n
//
// qk_norm_fwd: one thread per (row, head slot); slots 0..H are q's heads, H..2H k's, 2H..3H v's (copied).
//   Saves mean and rstd of every q and k head: stats [rows, 2H, 2].
// qk_norm_bwd_dx: one thread per (row, head slot): dn = rot(pos)ᵀ · dy, g = dn · γ,
//   dx = rstd · (g − Σ g / D − x̂ · Σ(g x̂) / D), as shaders/norm.wgsl's layer_norm_bwd_dx; v's copied.
// qk_norm_bwd_params: one workgroup per (q or k, column j): dγ_j = Σ dn_j · x̂_j and dβ_j = Σ dn_j over
//   every row and head, as strided per-thread partials then the workgroup tree (a fixed order, no atomics).
// qk_norm_bwd_fused: both in one dispatch: workgroups 0..dx_groups do qk_norm_bwd_dx's threads, the 2D
//   after them qk_norm_bwd_params' columns (the same functions, so the same numbers). It binds 11 storage
//   buffers: a device with fewer runs the two kernels.
// qk_norm_bwd_dx_half, qk_norm_bwd_params_half, qk_norm_bwd_fused_half: the three with x stored as f16
//   pairs (element 2i in the low half of word i, as pack2x16float writes them): under mixed precision
//   the plan keeps the packed projection in f16 until the backward reads it (graph/saved.rs), and these
//   read it there without an f32 copy. Each pair of entries runs one body (its `packed` a constant at each
//   call); the arithmetic is the f32 kernels' on the widened (exact) values.
//#include "common/index.wgsl"
//#include "common/workgroup_reduce.wgsl"

const WG: u32 = 256u;

struct QkNormParams {
    rows: u32,   // B · T
    t: u32,      // sequence length (positions 0..t)
    heads: u32,
    hd: u32,     // head size D (even with rope)
    eps: f32,
    rope: u32,   // 1: rotate q and k after the norm; 0: no rotation (the table binding is a stand-in)
    dx_groups: u32,  // qk_norm_bwd_fused: workgroups doing dx (the rest do the parameters' columns)
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> qp: QkNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gq: array<f32>;
@group(0) @binding(3) var<storage, read> bq: array<f32>;
@group(0) @binding(4) var<storage, read> gk: array<f32>;
@group(0) @binding(5) var<storage, read> bk: array<f32>;
@group(0) @binding(6) var<storage, read> table: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(256)
fn qk_norm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let id = flat_id(wid, nwg, lid, WG);
    let slots = 3u * qp.heads;
    if id >= qp.rows * slots { return; }
    let r = id / slots;
    let s = id - r * slots;
    let d = qp.hd;
    let base = r * slots * d + s * d;
    if s >= 2u * qp.heads {
        for (var j = 0u; j < d; j++) {
            y[base + j] = x[base + j];
        }
        return;
    }
    var sum = 0.0;
    for (var j = 0u; j < d; j++) {
        sum += x[base + j];
    }
    let mean = sum / f32(d);
    var sq = 0.0;
    for (var j = 0u; j < d; j++) {
        let e = x[base + j] - mean;
        sq += e * e;
    }
    let rstd = 1.0 / sqrt(sq / f32(d) + qp.eps);
    let st = (r * 2u * qp.heads + s) * 2u;
    stats[st] = mean;
    stats[st + 1u] = rstd;
    let is_q = s < qp.heads;
    if qp.rope == 0u {
        for (var j = 0u; j < d; j++) {
            let xh = (x[base + j] - mean) * rstd;
            y[base + j] = select(xh * gk[j] + bk[j], xh * gq[j] + bq[j], is_q);
        }
        return;
    }
    let half = d / 2u;
    let pos = r % qp.t;
    for (var j = 0u; j < half; j++) {
        let a = j + half;
        let na = select((x[base + j] - mean) * rstd * gk[j] + bk[j], (x[base + j] - mean) * rstd * gq[j] + bq[j], is_q);
        let nb = select((x[base + a] - mean) * rstd * gk[a] + bk[a], (x[base + a] - mean) * rstd * gq[a] + bq[a], is_q);
        let cs = table[(pos * half + j) * 2u];
        let sn = table[(pos * half + j) * 2u + 1u];
        y[base + j] = na * cs - nb * sn;
        y[base + a] = nb * cs + na * sn;
    }
}

// The backward kernels share bindings 1-4 (x, stats, table, dy); qk_norm_bwd_dx and the fused kernel
// add γ_q, γ_k and dx (5-7), qk_norm_bwd_params its four outputs (5-8: it binds 8 storage buffers, as
// WebGPU's default limit allows), the fused kernel its four outputs after dx (8-11).
// x as raw words: f32 bits, or (the `_half` entries) two f16 values per word.
@group(0) @binding(1) var<storage, read> bx: array<u32>;

// Element i of x: from f16 pairs when `packed`, else f32 bits.
fn saved_x(i: u32, packed: bool) -> f32 {
    if packed { return unpack2x16float(bx[i >> 1u])[i & 1u]; }
    return bitcast<f32>(bx[i]);
}
@group(0) @binding(2) var<storage, read> bstats: array<f32>;
@group(0) @binding(3) var<storage, read> btable: array<f32>;
@group(0) @binding(4) var<storage, read> bdy: array<f32>;
@group(0) @binding(5) var<storage, read> bgq: array<f32>;
@group(0) @binding(6) var<storage, read> bgk: array<f32>;
@group(0) @binding(7) var<storage, read_write> bdx: array<f32>;

// The gradient of head value j's normalised n_j from dy at `base` (rotated back with rope).
fn dn_of(base: u32, j: u32, pos: u32) -> f32 {
    if qp.rope == 0u {
        return bdy[base + j];
    }
    let half = qp.hd / 2u;
    let p = j % half;
    let cs = btable[(pos * half + p) * 2u];
    let sn = btable[(pos * half + p) * 2u + 1u];
    let ya = bdy[base + p];
    let yb = bdy[base + p + half];
    return select(yb * cs - ya * sn, ya * cs + yb * sn, j < half);
}

// qk_norm_bwd_dx's work for thread `id`: one (row, head slot).
fn dx_slot(id: u32, packed: bool) {
    let slots = 3u * qp.heads;
    if id >= qp.rows * slots { return; }
    let r = id / slots;
    let s = id - r * slots;
    let d = qp.hd;
    let base = r * slots * d + s * d;
    if s >= 2u * qp.heads {
        for (var j = 0u; j < d; j++) {
            bdx[base + j] = bdy[base + j];
        }
        return;
    }
    let st = (r * 2u * qp.heads + s) * 2u;
    let mean = bstats[st];
    let rstd = bstats[st + 1u];
    let is_q = s < qp.heads;
    let pos = r % qp.t;
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = 0u; j < d; j++) {
        let g = dn_of(base, j, pos) * select(bgk[j], bgq[j], is_q);
        sg += g;
        sgx += g * ((saved_x(base + j, packed) - mean) * rstd);
    }
    let mg = sg / f32(d);
    let mgx = sgx / f32(d);
    for (var j = 0u; j < d; j++) {
        let g = dn_of(base, j, pos) * select(bgk[j], bgq[j], is_q);
        let xh = (saved_x(base + j, packed) - mean) * rstd;
        bdx[base + j] = rstd * (g - mg - xh * mgx);
    }
}

@compute @workgroup_size(256)
fn qk_norm_bwd_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    dx_slot(flat_id(wid, nwg, lid, WG), false);
}

@compute @workgroup_size(256)
fn qk_norm_bwd_dx_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    dx_slot(flat_id(wid, nwg, lid, WG), true);
}

// qk_norm_bwd_params' outputs.
@group(0) @binding(5) var<storage, read_write> dgq: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbq: array<f32>;
@group(0) @binding(7) var<storage, read_write> dgk: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbk: array<f32>;

// (dγ_j, dβ_j) of workgroup w's column (q's for w < D, else k's), to every thread.
fn param_column(w: u32, lid: u32, packed: bool) -> vec2<f32> {
    let d = qp.hd;
    let which = w / d;  // 0: q, 1: k
    let j = w - which * d;
    let h2 = 2u * qp.heads;
    let slots = 3u * qp.heads;
    let half = d / 2u;
    let p = j % half;
    var dg = 0.0;
    var db = 0.0;
    for (var n = lid; n < qp.rows * qp.heads; n += WG) {
        let r = n / qp.heads;
        let s = which * qp.heads + (n - r * qp.heads);
        let base = r * slots * d + s * d;
        let st = (r * h2 + s) * 2u;
        var dn = bdy[base + j];
        if qp.rope == 1u {
            let pos = r % qp.t;
            let cs = btable[(pos * half + p) * 2u];
            let sn = btable[(pos * half + p) * 2u + 1u];
            let ya = bdy[base + p];
            let yb = bdy[base + p + half];
            dn = select(yb * cs - ya * sn, ya * cs + yb * sn, j < half);
        }
        dg += dn * ((saved_x(base + j, packed) - bstats[st]) * bstats[st + 1u]);
        db += dn;
    }
    return vec2<f32>(wg_sum(lid, dg), wg_sum(lid, db));
}

@compute @workgroup_size(256)
fn qk_norm_bwd_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    params_of(flat_id(wid, nwg, 0u, 1u), lid, false);
}

@compute @workgroup_size(256)
fn qk_norm_bwd_params_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    params_of(flat_id(wid, nwg, 0u, 1u), lid, true);
}

// qk_norm_bwd_params' work for workgroup w.
fn params_of(w: u32, lid: u32, packed: bool) {
    let d = qp.hd;
    if w >= 2u * d { return; }  // uniform: the whole workgroup leaves together
    let sums = param_column(w, lid, packed);
    if lid == 0u {
        let j = w % d;
        if w < d {
            dgq[j] = sums.x;
            dbq[j] = sums.y;
        } else {
            dgk[j] = sums.x;
            dbk[j] = sums.y;
        }
    }
}

@group(0) @binding(8) var<storage, read_write> fdgq: array<f32>;
@group(0) @binding(9) var<storage, read_write> fdbq: array<f32>;
@group(0) @binding(10) var<storage, read_write> fdgk: array<f32>;
@group(0) @binding(11) var<storage, read_write> fdbk: array<f32>;

@compute @workgroup_size(256)
fn qk_norm_bwd_fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    fused_of(flat_id(wid, nwg, 0u, 1u), lid, false);
}

@compute @workgroup_size(256)
fn qk_norm_bwd_fused_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    fused_of(flat_id(wid, nwg, 0u, 1u), lid, true);
}

// qk_norm_bwd_fused's work for workgroup g.
fn fused_of(g: u32, lid: u32, packed: bool) {
    if g < qp.dx_groups {
        dx_slot(g * WG + lid, packed);
        return;
    }
    let w = g - qp.dx_groups;
    let d = qp.hd;
    if w >= 2u * d { return; }  // uniform: the whole workgroup leaves together
    let sums = param_column(w, lid, packed);
    if lid == 0u {
        let j = w % d;
        if w < d {
            fdgq[j] = sums.x;
            fdbq[j] = sums.y;
        } else {
            fdgk[j] = sums.x;
            fdbk[j] = sums.y;
        }
    }
}
