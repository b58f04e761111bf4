// Layer norm over the last axis (C features) of x viewed as [rows, C], with its fused backward.
//
//   mean = Σ x / C,  var = Σ (x - mean)² / C (biased),  rstd = 1 / sqrt(var + eps)
//   y = (x - mean) · rstd · gamma + beta
//
// layer_norm_fwd: one workgroup per row (rows fold into y past the per-dimension limit, as
//   kernels::groups_1d with one row per workgroup). Two reductions (sum, then the sum of squared
//   deviations: two passes keep the variance accurate when |mean| >> std), each strided partials then the
//   workgroup tree; thread 0 saves mean and rstd for the backward.
// layer_norm_bwd_dx: one workgroup per row, g = dy · gamma, x̂ = (x - mean) · rstd,
//   dx = rstd · (g - Σ g / C - x̂ · Σ(g x̂) / C).
// layer_norm_bwd_partial / layer_norm_bwd_params: dgamma = Σ_rows dy · x̂ and dbeta = Σ_rows dy, without
//   float atomics, so the result does not depend on scheduling. Pass 1 has one thread per (chunk, column):
//   it sums its column over `chunk` consecutive rows in row order into partials [chunks, 2, C] (the
//   dgamma part then the dbeta part of each chunk); pass 2 has one thread per column and adds the chunks'
//   partials in chunk order. Reads are coalesced across the threads of a workgroup (adjacent columns).
//#include "common/index.wgsl"
//#include "common/workgroup_reduce.wgsl"

const WG: u32 = 256u;
// Threads per row of the row kernels (layer_norm_fwd, layer_norm_bwd_dx): WG_REDUCE of the reduction
// snippet, which the variants set; the row grid is the same for all of them.
const WG_ROW: u32 = WG_REDUCE;
//#variant sg subgroups entries=layer_norm_fwd,layer_norm_bwd_dx
//#variant sg128 subgroups WG_REDUCE=128u entries=layer_norm_fwd,layer_norm_bwd_dx
//#variant sg64 subgroups WG_REDUCE=64u entries=layer_norm_fwd,layer_norm_bwd_dx
//#variant wg128 WG_REDUCE=128u entries=layer_norm_fwd,layer_norm_bwd_dx
//#variant wg64 WG_REDUCE=64u entries=layer_norm_fwd,layer_norm_bwd_dx

struct NormParams {
    rows: u32,
    c: u32,      // features per row, >= 1
    eps: f32,
    chunk: u32,  // rows per partial (bwd_partial / bwd_params)
}

@group(0) @binding(0) var<uniform> np: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;

// One workgroup's row of layer_norm_fwd: writes y, returns (mean, rstd) (every thread gets them).
fn norm_row(row: u32, lid: u32) -> vec2<f32> {
    let base = row * np.c;
    let c = np.c;

    var acc = 0.0;
    for (var k = lid; k < c; k += WG_ROW) {
        acc += x[base + k];
    }
    let mean = wg_sum(lid, acc) / f32(c);

    var sq = 0.0;
    for (var k = lid; k < c; k += WG_ROW) {
        let d = x[base + k] - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(wg_sum(lid, sq) / f32(c) + np.eps);

    for (var k = lid; k < c; k += WG_ROW) {
        y[base + k] = (x[base + k] - mean) * rstd * gamma[k] + beta[k];
    }
    return vec2<f32>(mean, rstd);
}

@compute @workgroup_size(WG_ROW)
fn layer_norm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, 0u, 1u);
    if row >= np.rows { return; }  // uniform: the whole workgroup leaves together
    let ms = norm_row(row, lid);
    if lid == 0u {
        mean_out[row] = ms.x;
        rstd_out[row] = ms.y;
    }
}

// layer_norm_fwd_stats: layer_norm_fwd with the statistics as shaders/resnorm.wgsl keeps them,
// stats [rows, 2] = (mean, rstd), for its one-dispatch backward `layer_norm_bwd_fused`.
@group(0) @binding(5) var<storage, read_write> stats_out: array<f32>;

@compute @workgroup_size(WG_ROW)
fn layer_norm_fwd_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, 0u, 1u);
    if row >= np.rows { return; }  // uniform: the whole workgroup leaves together
    let ms = norm_row(row, lid);
    if lid == 0u {
        stats_out[2u * row] = ms.x;
        stats_out[2u * row + 1u] = ms.y;
    }
}

@group(0) @binding(3) var<storage, read> mean_in: array<f32>;
@group(0) @binding(4) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG_ROW)
fn layer_norm_bwd_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, 0u, 1u);
    if row >= np.rows { return; }
    let base = row * np.c;
    let c = np.c;
    let mean = mean_in[row];
    let rstd = rstd_in[row];

    var sg = 0.0;
    var sgx = 0.0;
    for (var k = lid; k < c; k += WG_ROW) {
        let g = dy[base + k] * gamma[k];
        sg += g;
        sgx += g * ((x[base + k] - mean) * rstd);
    }
    let mg = wg_sum(lid, sg) / f32(c);
    let mgx = wg_sum(lid, sgx) / f32(c);

    for (var k = lid; k < c; k += WG_ROW) {
        let g = dy[base + k] * gamma[k];
        let xh = (x[base + k] - mean) * rstd;
        dx[base + k] = rstd * (g - mg - xh * mgx);
    }
}

// The column passes bind x, mean, rstd and dy at 1..4, so they have variables of their own.
@group(0) @binding(1) var<storage, read> px: array<f32>;
@group(0) @binding(2) var<storage, read> pmean: array<f32>;
@group(0) @binding(3) var<storage, read> prstd: array<f32>;
@group(0) @binding(4) var<storage, read> pdy: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(256)
fn layer_norm_bwd_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    let c = np.c;
    let chunks = (np.rows + np.chunk - 1u) / np.chunk;
    if i >= chunks * c { return; }  // the op keeps 2 * chunks * C below 2^32
    let k = i / c;
    let col = i - k * c;
    let r1 = min(np.rows, (k + 1u) * np.chunk);
    var dg = 0.0;
    var db = 0.0;
    for (var r = k * np.chunk; r < r1; r++) {
        let d = pdy[r * c + col];
        dg += d * ((px[r * c + col] - pmean[r]) * prstd[r]);
        db += d;
    }
    partial[(2u * k) * c + col] = dg;
    partial[(2u * k + 1u) * c + col] = db;
}

@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> dbeta: array<f32>;

@compute @workgroup_size(256)
fn layer_norm_bwd_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let col = flat_id(wid, nwg, lid, WG);
    let c = np.c;
    if col >= c { return; }
    let chunks = (np.rows + np.chunk - 1u) / np.chunk;
    var dg = 0.0;
    var db = 0.0;
    for (var k = 0u; k < chunks; k++) {
        dg += partial_in[(2u * k) * c + col];
        db += partial_in[(2u * k + 1u) * c + col];
    }
    dgamma[col] = dg;
    dbeta[col] = db;
}
