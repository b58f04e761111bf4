// Channel norms over NCHW: batch norm (statistics per channel over N·H·W) and group norm (statistics per
// sample and group of cg = C/G channels over cg·H·W), with their backward. x is viewed as N·C planes of
// HW = H·W contiguous elements; plane p = n·C + c.
//
// Stat groups: batch norm has T = C of them (t = c), group norm T = N·G (t = n·G + c / cg). Both are
// described by cg (1 for batch norm) and per_sample (0 for batch norm, 1 for group norm).
//
// Reductions are deterministic without atomics: every plane is cut into K interleaved chunks (chunk k
// holds elements k, k + K, k + 2K, ..., so the K threads of one plane read adjacent words), one thread
// per (plane, chunk) writes a partial into [P, 2, K] (the first field of the K chunks, then the second),
// and one thread per stat group or channel combines its partials in a fixed order: for each sample in
// order, the group's planes in order, each plane's chunks in order, into a per-sample accumulator that is
// added to the total.
//
// chnorm_stats:         one workgroup per stat group. Its threads write the group's chunk partials, chunk
//                       mean and M2 = Σ (x - chunk mean)² (two passes over the chunk); then the workgroup
//                       combines them: mean = Σ n_k mean_k / M, var = (Σ M2_k + Σ n_k (mean_k - mean)²) / M
//                       (biased), rstd = 1 / sqrt(var + eps), each thread summing the partials it wrote
//                       (so it reads only its own writes) and the workgroup reduction adding the threads'
//                       sums. Two passes over the partials keep the variance accurate when |mean| >> std,
//                       as a two-pass variance over x would.
// chnorm_stats_apply:   chnorm_stats, then the same workgroup writes its group's y as chnorm_apply does
//                       (group norm's forward in one dispatch).
// chnorm_apply:         y = act((x - mean) · rstd · gamma + beta) (act: none, or a unary op fused in);
//                       with var_in, the rstd binding holds variances and rstd = 1 / sqrt(var + eps)
//                       (batch norm in eval mode, from running statistics).
// chnorm_bwd_partial:   chunk Σ dy and Σ dy · x̂, x̂ = (x - mean) · rstd.
// chnorm_bwd_partial_act: the same for a norm with a fused activation: dy is the activation's output
//                       gradient, taken through act'(z), z = x̂ · gamma + beta, and written out as the
//                       norm's output gradient (which chnorm_bwd_dx then reads).
// chnorm_bwd_reduce:    one workgroup per i < max(C, T): for channel c = i, dbeta = Σ dy and dgamma = Σ dy · x̂
//                       over all samples; for stat group t = i, ab = (mean(g), mean(g · x̂)), g = dy ·
//                       gamma. Each thread sums a strided share of the partials in order, the workgroup
//                       reduction adds the threads' sums.
// chnorm_bwd_group:     group norm: one workgroup per stat group forms its partials, its ab and its dx;
//                       chnorm_bwd_reduce (grads_only) then sums dgamma and dbeta (two dispatches, not three).
// chnorm_bwd_dx:        dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)).
// chnorm_update_running: running = (1 - m) · running + m · batch, per channel, in place; the batch variance
//                       comes from rstd and eps, unbiased by count / (count - 1).
//
// The combining kernels (chnorm_stats, chnorm_bwd_reduce) add their threads' sums with the workgroup
// reduction of common/workgroup_reduce.wgsl (a tree in workgroup memory) or, in the `sg` variant, its
// subgroup form; the sums' order is fixed either way, so results do not depend on scheduling.
//#include "common/index.wgsl"
//#include "common/activation.wgsl"
//#include "common/workgroup_reduce.wgsl"
//#variant sg subgroups entries=chnorm_stats,chnorm_stats_apply,chnorm_bwd_reduce,chnorm_bwd_group,chnorm_bwd_group_acc

const WG: u32 = 256u;
const WG_SMALL: u32 = 64u;

struct ChnormParams {
    n: u32,
    c: u32,
    hw: u32,
    chunks: u32,      // K, chunks per plane: 1 <= K <= HW
    cg: u32,          // channels per stat group
    per_sample: u32,  // 1: group norm (stats per sample), 0: batch norm (stats over the batch)
    var_in: u32,      // chnorm_apply: 1 when the rstd binding holds variances
    act: u32,         // 0: no activation; else the fused activation's unary op code + 1
    eps: f32,
    alpha: f32,       // the fused activation's parameter (LeakyRelu's slope)
    grads_only: u32,  // chnorm_bwd_reduce: 1: dgamma and dbeta only (a group norm's chnorm_bwd_group formed ab)
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> cp: ChnormParams;

// Stat group of plane (n, c).
fn stat_index(n: u32, c: u32) -> u32 {
    return select(0u, n * (cp.c / cp.cg), cp.per_sample == 1u) + c / cp.cg;
}

// Channel and stat group of element i of x.
fn elem_channel(i: u32) -> u32 {
    return (i / cp.hw) % cp.c;
}
fn elem_stat(i: u32) -> u32 {
    let p = i / cp.hw;
    let n = p / cp.c;
    return stat_index(n, p - n * cp.c);
}

fn stat_groups() -> u32 {
    return select(1u, cp.n, cp.per_sample == 1u) * (cp.c / cp.cg);
}

// Elements of chunk k of a plane: k, k + K, ... below HW.
fn chunk_len(k: u32) -> u32 {
    return (cp.hw - k + cp.chunks - 1u) / cp.chunks;
}

// Stat group t spans samples n0 .. n0 + rn and channels c0 .. c0 + cg of each: count elements.
struct Group {
    n0: u32,
    rn: u32,
    c0: u32,
    count: f32,
}

fn group_of(t: u32) -> Group {
    let rn = select(cp.n, 1u, cp.per_sample == 1u);
    return Group(select(0u, t / (cp.c / cp.cg), cp.per_sample == 1u), rn, (t % (cp.c / cp.cg)) * cp.cg,
                 f32(rn * cp.cg * cp.hw));
}

// Plane p = i / K and chunk k = i % K of partial-kernel thread i.
fn plane_chunk(i: u32) -> vec2<u32> {
    let p = i / cp.chunks;
    return vec2<u32>(p, i - p * cp.chunks);
}

// Where field f (0, 1) of chunk k of plane p sits in the partials [P, 2, K].
fn part_at(p: u32, f: u32, k: u32) -> u32 {
    return (2u * p + f) * cp.chunks + k;
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
// The partials, read by chnorm_bwd_reduce (chnorm_stats reads back its own).
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> sp_part: array<f32>;

// Chunk k of plane p: its mean and M2 into the partials.
fn stats_chunk(p: u32, k: u32) {
    let kk = cp.chunks;
    let base = p * cp.hw;
    var s = 0.0;
    for (var e = k; e < cp.hw; e += kk) {
        s += x[base + e];
    }
    let m = s / f32(chunk_len(k));
    var q = 0.0;
    for (var e = k; e < cp.hw; e += kk) {
        let d = x[base + e] - m;
        q += d * d;
    }
    sp_part[part_at(p, 0u, k)] = m;
    sp_part[part_at(p, 1u, k)] = q;
}

@group(0) @binding(3) var<storage, read_write> st_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> st_rstd: array<f32>;

// Partial item j of stat group `gr`: (sample r, channel cj, chunk k) in that order, cg · K items per
// sample. Its plane, and where its field f sits in the partials.
fn item_plane(gr: Group, j: u32) -> u32 {
    let per_sample = cp.cg * cp.chunks;
    let r = j / per_sample;
    return (gr.n0 + r) * cp.c + gr.c0 + (j - r * per_sample) / cp.chunks;
}
fn item_at(gr: Group, j: u32, f: u32) -> u32 {
    return part_at(item_plane(gr, j), f, j % cp.chunks);
}

// Mean and rstd of stat group t (uniform in the workgroup, so the barriers inside are reached by all),
// known to every thread of the workgroup; its first thread writes them out.
fn group_stats(t: u32, lid: u32) -> vec2<f32> {
    let kk = cp.chunks;
    let gr = group_of(t);
    // The group's (sample, channel, chunk) items, spread over the workgroup; the op keeps 2 · P · K < 2^32.
    // Thread lid writes items lid, lid + WG_REDUCE, ... and reads back only those below.
    let items = gr.rn * cp.cg * kk;
    for (var j = lid; j < items; j += WG_REDUCE) {
        stats_chunk(item_plane(gr, j), j % kk);
    }

    var s = 0.0;
    for (var j = lid; j < items; j += WG_REDUCE) {
        s += f32(chunk_len(j % kk)) * sp_part[item_at(gr, j, 0u)];
    }
    let mean = wg_sum(lid, s) / gr.count;

    var q = 0.0;
    for (var j = lid; j < items; j += WG_REDUCE) {
        let b = item_at(gr, j, 0u);
        let d = sp_part[b] - mean;
        q += sp_part[b + kk] + f32(chunk_len(j % kk)) * (d * d);
    }
    let m2 = wg_sum(lid, q);
    let rstd = 1.0 / sqrt(m2 / gr.count + cp.eps);
    if lid == 0u {
        st_mean[t] = mean;
        st_rstd[t] = rstd;
    }
    return vec2<f32>(mean, rstd);
}

// WG_REDUCE (256) threads: a batch norm has only C workgroups, each reading N planes.
@compute @workgroup_size(WG_REDUCE)
fn chnorm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = wid.y * nwg.x + wid.x;  // uniform in the workgroup
    if t >= stat_groups() { return; }
    group_stats(t, lid);
}

@group(0) @binding(5) var<storage, read> sa_gamma: array<f32>;
@group(0) @binding(6) var<storage, read> sa_beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> sa_y: array<f32>;

// chnorm_stats, then the workgroup applies its group's statistics to the group's elements as
// chnorm_apply does (group norm: a group is cg consecutive planes of one sample), one dispatch in all.
@compute @workgroup_size(WG_REDUCE)
fn chnorm_stats_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let t = wid.y * nwg.x + wid.x;  // uniform in the workgroup
    if t >= stat_groups() { return; }
    let st = group_stats(t, lid);
    let gr = group_of(t);
    let per = cp.cg * cp.hw;  // elements of the group in one sample
    for (var j = lid; j < gr.rn * per; j += WG_REDUCE) {
        let r = j / per;
        let e = j - r * per;
        let c = gr.c0 + e / cp.hw;
        let i = ((gr.n0 + r) * cp.c + gr.c0) * cp.hw + e;
        let v = (x[i] - st.x) * st.y * sa_gamma[c] + sa_beta[c];
        sa_y[i] = select(v, unary_op(cp.act - 1u, v, cp.alpha), cp.act != 0u);
    }
}

@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> ap_mean: array<f32>;
@group(0) @binding(5) var<storage, read> ap_rstd: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn chnorm_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= cp.n * cp.c * cp.hw { return; }
    let c = elem_channel(i);
    let t = elem_stat(i);
    var rs = ap_rstd[t];
    if cp.var_in == 1u {
        rs = 1.0 / sqrt(rs + cp.eps);
    }
    let v = (x[i] - ap_mean[t]) * rs * gamma[c] + beta[c];
    y[i] = select(v, unary_op(cp.act - 1u, v, cp.alpha), cp.act != 0u);
}

@group(0) @binding(2) var<storage, read> bp_mean: array<f32>;
@group(0) @binding(3) var<storage, read> bp_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> bp_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> bp_part: array<f32>;

@compute @workgroup_size(64)
fn chnorm_bwd_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG_SMALL);
    let kk = cp.chunks;
    if i >= cp.n * cp.c * kk { return; }
    let pk = plane_chunk(i);
    let p = pk.x;
    let k = pk.y;
    let n = p / cp.c;
    let t = stat_index(n, p - n * cp.c);
    let m = bp_mean[t];
    let rs = bp_rstd[t];
    let base = p * cp.hw;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var e = k; e < cp.hw; e += kk) {
        let d = bp_dy[base + e];
        s1 += d;
        s2 += d * ((x[base + e] - m) * rs);
    }
    bp_part[part_at(p, 0u, k)] = s1;
    bp_part[part_at(p, 1u, k)] = s2;
}

@group(0) @binding(6) var<storage, read> pa_gamma: array<f32>;
@group(0) @binding(7) var<storage, read> pa_beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> pa_dz: array<f32>;

@compute @workgroup_size(64)
fn chnorm_bwd_partial_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG_SMALL);
    let kk = cp.chunks;
    if i >= cp.n * cp.c * kk { return; }
    let pk = plane_chunk(i);
    let p = pk.x;
    let k = pk.y;
    let n = p / cp.c;
    let c = p - n * cp.c;
    let t = stat_index(n, c);
    let m = bp_mean[t];
    let rs = bp_rstd[t];
    let w = pa_gamma[c];
    let bb = pa_beta[c];
    let op = cp.act - 1u;
    let base = p * cp.hw;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var e = k; e < cp.hw; e += kk) {
        let xh = (x[base + e] - m) * rs;
        let d = bp_dy[base + e] * unary_deriv(op, xh * w + bb, cp.alpha);
        pa_dz[base + e] = d;
        s1 += d;
        s2 += d * xh;
    }
    bp_part[part_at(p, 0u, k)] = s1;
    bp_part[part_at(p, 1u, k)] = s2;
}

@group(0) @binding(3) var<storage, read_write> bc_ab: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;

@compute @workgroup_size(WG_REDUCE)
fn chnorm_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = wid.y * nwg.x + wid.x;  // uniform in the workgroup, so the barriers below are reached by all
    let kk = cp.chunks;
    if i < cp.c {
        // Channel c over all samples: items (sample, chunk).
        let c = i;
        var db = 0.0;
        var dg = 0.0;
        for (var j = lid; j < cp.n * kk; j += WG_REDUCE) {
            let n = j / kk;
            let b = part_at(n * cp.c + c, 0u, j - n * kk);
            db += part[b];
            dg += part[b + kk];
        }
        db = wg_sum(lid, db);
        dg = wg_sum(lid, dg);
        if lid == 0u {
            dgamma[c] = dg;
            dbeta[c] = db;
        }
    }
    if i >= stat_groups() || cp.grads_only == 1u { return; }
    let t = i;
    let gr = group_of(t);
    var sa = 0.0;
    var sb = 0.0;
    for (var j = lid; j < gr.rn * cp.cg * kk; j += WG_REDUCE) {
        let b = item_at(gr, j, 0u);
        let g = gamma[gr.c0 + (j / kk) % cp.cg];
        sa += g * part[b];
        sb += g * part[b + kk];
    }
    sa = wg_sum(lid, sa);
    sb = wg_sum(lid, sb);
    if lid == 0u {
        bc_ab[2u * t] = sa / gr.count;
        bc_ab[2u * t + 1u] = sb / gr.count;
    }
}

@group(0) @binding(2) var<storage, read> bg_mean: array<f32>;
@group(0) @binding(3) var<storage, read> bg_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> bg_dy: array<f32>;
@group(0) @binding(5) var<storage, read> bg_gamma: array<f32>;
@group(0) @binding(6) var<storage, read> bg_beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> bg_part: array<f32>;
@group(0) @binding(8) var<storage, read_write> bg_dx: array<f32>;
@group(0) @binding(9) var<storage, read> bg_acc: array<f32>;

// The norm's output gradient at element i of channel c: dy, or dy through act'(z), z = x̂ · gamma + beta,
// as chnorm_bwd_partial_act forms it.
fn bg_dz(i: u32, c: u32, xh: f32) -> f32 {
    let d = bg_dy[i];
    if cp.act == 0u { return d; }
    return d * unary_deriv(cp.act - 1u, xh * bg_gamma[c] + bg_beta[c], cp.alpha);
}

// Group norm's backward of stat group t (uniform in the workgroup): the chunk partials of its planes as
// chnorm_bwd_partial(_act) writes them (item j by thread j mod WG_REDUCE, which alone reads it back), the
// group's mean(g) and mean(g · x̂) as chnorm_bwd_reduce forms them, then dx as chnorm_bwd_dx (dz recomputed
// rather than stored). Element j of the group is written by thread j mod WG_REDUCE.
fn bwd_group(t: u32, lid: u32) {
    let kk = cp.chunks;
    let gr = group_of(t);
    let m = bg_mean[t];
    let rs = bg_rstd[t];
    var sa = 0.0;
    var sb = 0.0;
    for (var j = lid; j < gr.rn * cp.cg * kk; j += WG_REDUCE) {
        let p = item_plane(gr, j);
        let k = j % kk;
        let c = p % cp.c;
        let base = p * cp.hw;
        var s1 = 0.0;
        var s2 = 0.0;
        for (var e = k; e < cp.hw; e += kk) {
            let xh = (x[base + e] - m) * rs;
            let d = bg_dz(base + e, c, xh);
            s1 += d;
            s2 += d * xh;
        }
        bg_part[part_at(p, 0u, k)] = s1;
        bg_part[part_at(p, 1u, k)] = s2;
        let g = bg_gamma[c];
        sa += g * s1;
        sb += g * s2;
    }
    let a = wg_sum(lid, sa) / gr.count;
    let b = wg_sum(lid, sb) / gr.count;
    let per = cp.cg * cp.hw;
    for (var j = lid; j < gr.rn * per; j += WG_REDUCE) {
        let r = j / per;
        let e = j - r * per;
        let c = gr.c0 + e / cp.hw;
        let i = ((gr.n0 + r) * cp.c + gr.c0) * cp.hw + e;
        let xh = (x[i] - m) * rs;
        bg_dx[i] = rs * (bg_dz(i, c, xh) * bg_gamma[c] - a - xh * b);
    }
}

@compute @workgroup_size(WG_REDUCE)
fn chnorm_bwd_group(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let t = wid.y * nwg.x + wid.x;  // uniform in the workgroup
    if t >= stat_groups() { return; }
    bwd_group(t, lid);
}

// chnorm_bwd_group plus a gradient term from elsewhere: dx = acc + dx, each thread adding to the elements
// it wrote.
@compute @workgroup_size(WG_REDUCE)
fn chnorm_bwd_group_acc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let t = wid.y * nwg.x + wid.x;  // uniform in the workgroup
    if t >= stat_groups() { return; }
    bwd_group(t, lid);
    let gr = group_of(t);
    let per = cp.cg * cp.hw;
    for (var j = lid; j < gr.rn * per; j += WG_REDUCE) {
        let r = j / per;
        let i = ((gr.n0 + r) * cp.c + gr.c0) * cp.hw + j - r * per;
        bg_dx[i] = bg_acc[i] + bg_dx[i];
    }
}

@group(0) @binding(3) var<storage, read> dx_mean: array<f32>;
@group(0) @binding(4) var<storage, read> dx_rstd: array<f32>;
@group(0) @binding(5) var<storage, read> dx_dy: array<f32>;
@group(0) @binding(6) var<storage, read> dx_ab: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

// dx of element i.
fn bwd_dx_at(i: u32) -> f32 {
    let c = elem_channel(i);
    let t = elem_stat(i);
    let rs = dx_rstd[t];
    let xh = (x[i] - dx_mean[t]) * rs;
    return rs * (dx_dy[i] * gamma[c] - dx_ab[2u * t] - xh * dx_ab[2u * t + 1u]);
}

@compute @workgroup_size(256)
fn chnorm_bwd_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= cp.n * cp.c * cp.hw { return; }
    dx[i] = bwd_dx_at(i);
}

@group(0) @binding(8) var<storage, read> dx_acc: array<f32>;

// chnorm_bwd_dx plus a gradient term from elsewhere: dx = acc + dx (autodiff folds a gradient sum here).
@compute @workgroup_size(256)
fn chnorm_bwd_dx_acc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= cp.n * cp.c * cp.hw { return; }
    dx[i] = dx_acc[i] + bwd_dx_at(i);
}

struct RunningParams {
    c: u32,
    momentum: f32,
    eps: f32,
    unbias: f32,  // count / (count - 1)
}

@group(0) @binding(0) var<uniform> rp: RunningParams;
@group(0) @binding(1) var<storage, read> ur_mean: array<f32>;
@group(0) @binding(2) var<storage, read> ur_rstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

@compute @workgroup_size(64)
fn chnorm_update_running(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let c = flat_id(wid, nwg, lid, WG_SMALL);
    if c >= rp.c { return; }
    let rs = ur_rstd[c];
    let var_b = max(1.0 / (rs * rs) - rp.eps, 0.0);
    let m = rp.momentum;
    running_mean[c] = (1.0 - m) * running_mean[c] + m * ur_mean[c];
    running_var[c] = (1.0 - m) * running_var[c] + m * (var_b * rp.unbias);
}
