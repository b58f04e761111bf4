// The attention kernels (see shaders/attention.wgsl for what they compute and how they split the work),
// shared by the families attention.wgsl and attention_small.wgsl, which differ only in the constants
// sizing the workgroup tiles: MAX_D (largest head dim), MAX_G = MAX_D / 4 and PITCH = MAX_G + 1, and
// define BO, FWD_BS, BWD_BS.
//#include "common/index.wgsl"
// Masked score: finite (no inf arithmetic on any driver), and exp(NEG - m) is exactly 0.
const NEG: f32 = -1.0e30;

struct AttentionParams {
    batch: u32,
    seq: u32,       // T
    heads: u32,     // H
    head_dim: u32,  // D, 1..=MAX_D
    causal: u32,    // 1: key j is seen by query i only when j <= i
    scale: f32,     // 1/sqrt(D)
    tiles: u32,     // owner tiles per (b, h): ceil(T / BO)
    groups: u32,    // tiles * batch * heads: workgroups with work (the grid may fold into y)
}

// Sums of w * row over the streamed rows, per lane: up to four vec4 column groups (named, not an array,
// so the registers are indexed by constants on every driver).
struct Acc {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
}

@group(0) @binding(0) var<uniform> ap: AttentionParams;
// qkv as raw words: f32 bits, or (attention_bwd_half) two f16 values per word, element 2i in the low half
// of word i, as pack2x16float writes them.
@group(0) @binding(1) var<storage, read> a_qkv: array<u32>;

// Element i of qkv: from f16 pairs when `packed`, else f32 bits.
fn qkv_at(i: u32, packed: bool) -> f32 {
    if packed { return unpack2x16float(a_qkv[i >> 1u])[i & 1u]; }
    return bitcast<f32>(a_qkv[i]);
}

// Offset of (b, token 0, part, head h) in qkv; part 0 = q, 1 = k, 2 = v.
fn qkv_base(b: u32, part: u32, h: u32) -> u32 {
    let c = ap.heads * ap.head_dim;
    return b * ap.seq * 3u * c + part * c + h * ap.head_dim;
}

// How many of head-dim values 4g .. 4g+3 of token t exist: 0 past T, fewer than 4 at the end of D.
fn live4(t: u32, g: u32) -> u32 {
    if t >= ap.seq { return 0u; }
    return min(4u, ap.head_dim - 4u * g);
}

// Head-dim values 4g .. 4g+3 of token t from qkv (base from qkv_base); 0 past D or T. `packed`: qkv
// holds f16 pairs.
fn qkv4(base: u32, t: u32, g: u32, packed: bool) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let at = base + t * 3u * ap.heads * ap.head_dim + 4u * g;
    for (var k = 0u; k < live4(t, g); k++) { v[k] = qkv_at(at + k, packed); }
    return v;
}

// What a workgroup works on: its (b, h), bh = b * H + h, its first owner row t0 and the head dim's vec4
// group count gn. Uniform (barriers depend on it).
struct Job {
    bh: u32,
    b: u32,
    h: u32,
    t0: u32,
    gn: u32,
}

fn job_of(flat: u32) -> Job {
    let bh = flat / ap.tiles;
    return Job(bh, bh / ap.heads, bh % ap.heads, (flat % ap.tiles) * BO, (ap.head_dim + 3u) / 4u);
}

// ---------------------------------------------------------------------------------------------
// Forward

@group(0) @binding(2) var<storage, read_write> f_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_lse: array<f32>;

var<workgroup> f_q: array<vec4<f32>, BO * PITCH>;
var<workgroup> f_k: array<vec4<f32>, FWD_BS * PITCH>;
var<workgroup> f_v: array<vec4<f32>, FWD_BS * MAX_G>;  // read along groups by the lanes: no pitch
var<workgroup> f_s: array<f32, BO * FWD_BS>;
var<workgroup> f_p: array<f32, BO * FWD_BS>;
//#include "common/attention_rows.wgsl"

// How the `bs` lanes of a query row share its gn column groups: ng groups side by side, ks splits of the
// streamed rows among the lanes, passes groups of ng per lane. Uniform (barriers depend on it).
struct Lanes {
    ng: u32,
    ks: u32,
    passes: u32,
}

fn lanes_of(gn: u32, bs: u32) -> Lanes {
    let ng = min(gn, bs);
    return Lanes(ng, bs / ng, (gn + ng - 1u) / ng);
}

// One lane's place in Lanes: its split and first column group; busy is false for the lanes past ng * ks,
// which sit the accumulate phase out.
struct Lane {
    split: u32,
    g0: u32,
    busy: bool,
}

fn lane_in(ln: Lanes, lane: u32) -> Lane {
    let split = lane / ln.ng;
    return Lane(split, lane % ln.ng, split < ln.ks);
}

// Key tiles of `bs` rows the query tile at q0 streams: all n_tiles, or with a causal mask those up to the
// tile holding its last query.
fn causal_end(n_tiles: u32, q0: u32, bs: u32) -> u32 {
    if ap.causal == 1u {
        return min(n_tiles, (q0 + BO - 1u) / bs + 1u);
    }
    return n_tiles;
}

@compute @workgroup_size(FWD_BS, BO)
fn attention_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let flat = flat_id(wid, nwg, 0u, 1u);
    if flat >= ap.groups { return; }  // uniform: the whole workgroup leaves together
    let j = job_of(flat);
    let lane = lid3.x;
    let o = lid3.y;
    let q0 = j.t0;
    let qi = q0 + o;
    let qb = qkv_base(j.b, 0u, j.h);
    let kb = qkv_base(j.b, 1u, j.h);
    let vb = qkv_base(j.b, 2u, j.h);

    for (var e = lid; e < BO * j.gn; e += BO * FWD_BS) {
        f_q[(e / j.gn) * PITCH + e % j.gn] = qkv4(qb, q0 + e / j.gn, e % j.gn, false);
    }

    let ln = lanes_of(j.gn, FWD_BS);  // passes: 1 or 2
    let me = lane_in(ln, lane);
    rows_setup(lid);

    var m = NEG;   // running max of the row's scaled scores
    var l = 0.0;   // running sum of exp(score - m)
    var acc = Acc();
    let n_tiles = (ap.seq + FWD_BS - 1u) / FWD_BS;
    let kt_end = causal_end(n_tiles, q0, FWD_BS);
    for (var kt = 0u; kt < kt_end; kt++) {
        let k0 = kt * FWD_BS;
        for (var e = lid; e < FWD_BS * j.gn; e += BO * FWD_BS) {
            let r = e / j.gn;
            let g = e % j.gn;
            f_k[r * PITCH + g] = qkv4(kb, k0 + r, g, false);
            f_v[r * MAX_G + g] = qkv4(vb, k0 + r, g, false);
        }
        workgroupBarrier();

        let kj = k0 + lane;
        var s = 0.0;
        for (var g = 0u; g < j.gn; g++) {
            s += dot(f_q[o * PITCH + g], f_k[lane * PITCH + g]);
        }
        let valid = kj < ap.seq && (ap.causal == 0u || kj <= qi);
        s = select(NEG, s * ap.scale, valid);
        let m_new = max(m, row_max(o, lane, s));
        let pr = select(0.0, exp(s - m_new), valid);
        f_p[o * FWD_BS + lane] = pr;
        row_sum_start(o, lane, pr);
        let alpha = exp(m - m_new);
        workgroupBarrier();

        l = l * alpha + row_sum(o);
        acc.a0 *= alpha;
        acc.a1 *= alpha;
        if me.busy {
            for (var c = me.split; c < FWD_BS; c += ln.ks) {
                let w = f_p[o * FWD_BS + c];
                let at = c * MAX_G + me.g0;
                acc.a0 += w * f_v[at];
                if ln.passes > 1u { acc.a1 += w * f_v[at + ln.ng]; }
            }
        }
        m = m_new;
        workgroupBarrier();
    }

    // Add the key splits' partial sums (only when ln.ks > 1, and then ln.passes == 1).
    if ln.ks > 1u {
        f_v[o * FWD_BS + lane] = acc.a0;
        workgroupBarrier();
        if me.busy && me.split == 0u {
            for (var s2 = 1u; s2 < ln.ks; s2++) {
                acc.a0 += f_v[o * FWD_BS + s2 * ln.ng + me.g0];
            }
        }
    }
    if qi < ap.seq {
        if me.busy && me.split == 0u {
            let inv = 1.0 / l;
            let row = (j.b * ap.seq + qi) * ap.heads * ap.head_dim + j.h * ap.head_dim;
            store_out(row, me.g0, j.gn, acc.a0 * inv);
            if ln.passes > 1u { store_out(row, me.g0 + ln.ng, j.gn, acc.a1 * inv); }
        }
        if lane == 0u {
            f_lse[j.bh * ap.seq + qi] = m + log(l);
        }
    }
}

// out[row + 4g .. row + 4g + 3] = v, the columns past D dropped.
fn store_out(row: u32, g: u32, gn: u32, v: vec4<f32>) {
    if g >= gn { return; }
    for (var k = 0u; k < 4u; k++) {
        if 4u * g + k < ap.head_dim { f_out[row + 4u * g + k] = v[k]; }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward: one dispatch of `attention_bwd`, whose first `groups` workgroups own query tiles (dQ) and
// the next `groups` own key tiles (dK, dV). Each computes the delta = dO . O of the query rows it
// needs itself, so the halves share no scratch and need no order between them.

@group(0) @binding(2) var<storage, read> b_lse: array<f32>;
@group(0) @binding(3) var<storage, read> b_dout: array<f32>;
@group(0) @binding(4) var<storage, read> q_out: array<u32>;  // O as qkv is (f32 bits or f16 pairs)
@group(0) @binding(5) var<storage, read_write> b_dqkv: array<f32>;

// Offset of (b, token 0, head h) in out / dout ([B, T, C]).
fn oc_base(b: u32, h: u32) -> u32 {
    return b * ap.seq * ap.heads * ap.head_dim + h * ap.head_dim;
}

fn dout4(base: u32, t: u32, g: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let at = base + t * ap.heads * ap.head_dim + 4u * g;
    for (var k = 0u; k < live4(t, g); k++) { v[k] = b_dout[at + k]; }
    return v;
}

// Element i of O: from f16 pairs when `packed`, else f32 bits.
fn out_at(i: u32, packed: bool) -> f32 {
    if packed { return unpack2x16float(q_out[i >> 1u])[i & 1u]; }
    return bitcast<f32>(q_out[i]);
}

fn out4(base: u32, t: u32, g: u32, packed: bool) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let at = base + t * ap.heads * ap.head_dim + 4u * g;
    for (var k = 0u; k < live4(t, g); k++) { v[k] = out_at(at + k, packed); }
    return v;
}

// dqkv[row + 4g .. row + 4g + 3] = v, the columns past D dropped.
fn store_dqkv(row: u32, g: u32, gn: u32, v: vec4<f32>) {
    if g >= gn { return; }
    for (var k = 0u; k < 4u; k++) {
        if 4u * g + k < ap.head_dim { b_dqkv[row + 4u * g + k] = v[k]; }
    }
}

// Column group `k` (0..3) of acc.
fn acc_part(a: Acc, k: u32) -> vec4<f32> {
    switch k {
        case 0u: { return a.a0; }
        case 1u: { return a.a1; }
        case 2u: { return a.a2; }
        default: { return a.a3; }
    }
}

// Writes acc (groups g0, g0 + ng, ...) times `mul` to dqkv row `row`.
fn store_acc(row: u32, a: Acc, g0: u32, ng: u32, gn: u32, passes: u32, mul: f32) {
    for (var k = 0u; k < passes; k++) {
        store_dqkv(row, g0 + k * ng, gn, acc_part(a, k) * mul);
    }
}

// Both backward kernels hold two tiles of their BO owner rows (dQ: q, dO; dK/dV: k, v) and two of the
// streamed rows (dQ: k, v; dK/dV: q, dO); the same names let them share the loads, the scores and the sums.
var<workgroup> b_own0: array<vec4<f32>, BO * PITCH>;
var<workgroup> b_own1: array<vec4<f32>, BO * PITCH>;
var<workgroup> b_str0: array<vec4<f32>, BWD_BS * PITCH>;
var<workgroup> b_str1: array<vec4<f32>, BWD_BS * PITCH>;
var<workgroup> b_p: array<f32, BO * BWD_BS>;
var<workgroup> b_ds: array<f32, BO * BWD_BS>;

// Head-dim values 4g .. of token t of part p of the job's (b, h): 0, 1, 2 = q, k, v from qkv, 3 = dO.
fn part4(j: Job, p: u32, t: u32, g: u32, packed: bool) -> vec4<f32> {
    if p == 3u { return dout4(oc_base(j.b, j.h), t, g); }
    return qkv4(qkv_base(j.b, p, j.h), t, g, packed);
}

// Loads rows t0.. of parts p0 and p1 into the owner tiles (own) or the streamed ones.
fn load_tiles(j: Job, own: bool, p0: u32, p1: u32, t0: u32, lid: u32, packed: bool) {
    let rows = select(BWD_BS, BO, own);
    for (var e = lid; e < rows * j.gn; e += BO * BWD_BS) {
        let r = e / j.gn;
        let g = e % j.gn;
        let at = r * PITCH + g;
        let v0 = part4(j, p0, t0 + r, g, packed);
        let v1 = part4(j, p1, t0 + r, g, packed);
        if own {
            b_own0[at] = v0;
            b_own1[at] = v1;
        } else {
            b_str0[at] = v0;
            b_str1[at] = v1;
        }
    }
}

// Owner row o against streamed row `lane`: (tile0 . tile0, tile1 . tile1), i.e. (s, dp) before scaling.
fn scores(o: u32, lane: u32, gn: u32) -> vec2<f32> {
    var s = 0.0;
    var dp = 0.0;
    for (var g = 0u; g < gn; g++) {
        s += dot(b_own0[o * PITCH + g], b_str0[lane * PITCH + g]);
        dp += dot(b_own1[o * PITCH + g], b_str1[lane * PITCH + g]);
    }
    return vec2<f32>(s, dp);
}

// a += w * streamed row (tile `which`) at `at`, over the lane's column groups.
fn acc_row(a: Acc, w: f32, which: u32, at: u32, ln: Lanes) -> Acc {
    var r = a;
    r.a0 += w * str4(which, at);
    if ln.passes > 1u { r.a1 += w * str4(which, at + ln.ng); }
    if ln.passes > 2u { r.a2 += w * str4(which, at + 2u * ln.ng); }
    if ln.passes > 3u { r.a3 += w * str4(which, at + 3u * ln.ng); }
    return r;
}

fn str4(which: u32, at: u32) -> vec4<f32> {
    if which == 0u { return b_str0[at]; }
    return b_str1[at];
}

// Adds the other splits' partial sums of column group g0 to split 0's a0 (ln.ks > 1: then passes == 1),
// through streamed tile `which` (free once the last tile's barrier has passed).
fn fold_splits(a0: vec4<f32>, which: u32, o: u32, lane: u32, ln: Lanes, me: Lane) -> vec4<f32> {
    var r = a0;
    if which == 0u { b_str0[o * BWD_BS + lane] = a0; } else { b_str1[o * BWD_BS + lane] = a0; }
    workgroupBarrier();
    if me.busy && me.split == 0u {
        for (var s2 = 1u; s2 < ln.ks; s2++) {
            r += str4(which, o * BWD_BS + s2 * ln.ng + me.g0);
        }
    }
    return r;
}

@compute @workgroup_size(BWD_BS, BO)
fn attention_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // flat is uniform over the workgroup, so both halves' barriers are in uniform control flow.
    bwd(flat_id(wid, nwg, 0u, 1u), lid3, lid, false);
}

// attention_bwd with qkv and O stored as f16 pairs: under mixed precision the plan keeps them in f16
// until the backward reads them (graph/saved.rs), and this reads them there without f32 copies. The
// arithmetic is attention_bwd's on the widened (exact) values.
@compute @workgroup_size(BWD_BS, BO)
fn attention_bwd_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    bwd(flat_id(wid, nwg, 0u, 1u), lid3, lid, true);
}

// Workgroup `flat`'s half of the backward (`packed`: qkv and O hold f16 pairs).
fn bwd(flat: u32, lid3: vec3<u32>, lid: u32, packed: bool) {
    if flat < ap.groups {
        bwd_dq(job_of(flat), lid3.x, lid3.y, lid, packed);
    } else if flat < 2u * ap.groups {
        bwd_dkv(job_of(flat - ap.groups), lid3.x, lid3.y, lid, packed);
    }
}

// dQ of the job's query tile (owner row o, lane `lane`).
fn bwd_dq(j: Job, lane: u32, o: u32, lid: u32, packed: bool) {
    let q0 = j.t0;
    let qi = q0 + o;
    let ob = oc_base(j.b, j.h);

    load_tiles(j, true, 0u, 3u, q0, lid, packed);  // q, dO
    workgroupBarrier();
    // delta = dO . O for this row: each lane a strided part of the groups, then the 8 parts in order.
    var part = 0.0;
    for (var g = lane; g < j.gn; g += BWD_BS) {
        part += dot(b_own1[o * PITCH + g], out4(ob, qi, g, packed));
    }
    b_ds[o * BWD_BS + lane] = part;
    workgroupBarrier();
    var delta = 0.0;
    for (var c = 0u; c < BWD_BS; c++) {
        delta += b_ds[o * BWD_BS + c];
    }
    var lse = 0.0;
    if qi < ap.seq {
        lse = b_lse[j.bh * ap.seq + qi];
    }
    workgroupBarrier();

    let ln = lanes_of(j.gn, BWD_BS);  // passes: 1..4
    let me = lane_in(ln, lane);

    var acc = Acc();
    let n_tiles = (ap.seq + BWD_BS - 1u) / BWD_BS;
    let kt_end = causal_end(n_tiles, q0, BWD_BS);
    for (var kt = 0u; kt < kt_end; kt++) {
        let k0 = kt * BWD_BS;
        load_tiles(j, false, 1u, 2u, k0, lid, packed);  // k, v
        workgroupBarrier();

        let kj = k0 + lane;
        let sd = scores(o, lane, j.gn);
        let valid = qi < ap.seq && kj < ap.seq && (ap.causal == 0u || kj <= qi);
        let p = select(0.0, exp(sd.x * ap.scale - lse), valid);
        b_ds[o * BWD_BS + lane] = p * (sd.y - delta);
        workgroupBarrier();

        if me.busy {
            for (var c = me.split; c < BWD_BS; c += ln.ks) {
                acc = acc_row(acc, b_ds[o * BWD_BS + c], 0u, c * PITCH + me.g0, ln);
            }
        }
        workgroupBarrier();
    }

    if ln.ks > 1u {
        acc.a0 = fold_splits(acc.a0, 0u, o, lane, ln, me);
    }
    if qi < ap.seq && me.busy && me.split == 0u {
        let row = (j.b * ap.seq + qi) * 3u * ap.heads * ap.head_dim + j.h * ap.head_dim;
        store_acc(row, acc, me.g0, ln.ng, j.gn, ln.passes, ap.scale);
    }
}

// dK and dV of the job's key tile (owner row o, lane `lane`).
fn bwd_dkv(j: Job, lane: u32, o: u32, lid: u32, packed: bool) {
    let k0 = j.t0;
    let ob = oc_base(j.b, j.h);
    let kj = k0 + o;

    load_tiles(j, true, 1u, 2u, k0, lid, packed);  // k, v

    let ln = lanes_of(j.gn, BWD_BS);
    let me = lane_in(ln, lane);

    var dk = Acc();
    var dv = Acc();
    let n_tiles = (ap.seq + BWD_BS - 1u) / BWD_BS;
    var qt = 0u;
    if ap.causal == 1u {
        qt = k0 / BWD_BS;  // earlier query tiles see none of these keys
    }
    for (; qt < n_tiles; qt++) {
        let i0 = qt * BWD_BS;
        load_tiles(j, false, 0u, 3u, i0, lid, packed);  // q, dO
        workgroupBarrier();

        let qi = i0 + lane;
        // delta of streamed query `lane`: the owner rows each take a strided part of the groups, then
        // the 16 parts are added in order.
        var part = 0.0;
        for (var g = o; g < j.gn; g += BO) {
            part += dot(b_str1[lane * PITCH + g], out4(ob, qi, g, packed));
        }
        b_p[o * BWD_BS + lane] = part;
        workgroupBarrier();
        var delta = 0.0;
        for (var c = 0u; c < BO; c++) {
            delta += b_p[c * BWD_BS + lane];
        }
        workgroupBarrier();

        let sd = scores(o, lane, j.gn);
        let valid = qi < ap.seq && kj < ap.seq && (ap.causal == 0u || kj <= qi);
        var lse = 0.0;
        if qi < ap.seq {
            lse = b_lse[j.bh * ap.seq + qi];
        }
        let p = select(0.0, exp(sd.x * ap.scale - lse), valid);
        b_p[o * BWD_BS + lane] = p;
        b_ds[o * BWD_BS + lane] = p * (sd.y - delta);
        workgroupBarrier();

        if me.busy {
            for (var c = me.split; c < BWD_BS; c += ln.ks) {
                let at = c * PITCH + me.g0;
                dv = acc_row(dv, b_p[o * BWD_BS + c], 1u, at, ln);
                dk = acc_row(dk, b_ds[o * BWD_BS + c], 0u, at, ln);
            }
        }
        workgroupBarrier();
    }

    if ln.ks > 1u {
        dk.a0 = fold_splits(dk.a0, 0u, o, lane, ln, me);
        dv.a0 = fold_splits(dv.a0, 1u, o, lane, ln, me);
    }
    if kj < ap.seq && me.busy && me.split == 0u {
        let c = ap.heads * ap.head_dim;
        let row = (j.b * ap.seq + kj) * 3u * c + j.h * ap.head_dim;
        store_acc(row + c, dk, me.g0, ln.ng, j.gn, ln.passes, ap.scale);
        store_acc(row + 2u * c, dv, me.g0, ln.ng, j.gn, ln.passes, 1.0);
    }
}
