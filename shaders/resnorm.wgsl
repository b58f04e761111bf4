// The residual stream's layer norm, fused: s = x + a with y = LayerNorm(s) in one pass forward, and the
// whole layer-norm backward (dx, with an optional gradient r added, dγ and dβ) in one dispatch.
//
//   mean = Σ s / C,  var = Σ (s - mean)² / C (biased),  rstd = 1 / sqrt(var + eps),
//   y = (s - mean) · rstd · γ + β;   backward, with g = dy · γ and ŝ = (s - mean) · rstd:
//   dx = r + rstd · (g - Σ g / C - ŝ · Σ(g ŝ) / C),  dγ = Σ_rows dy · ŝ,  dβ = Σ_rows dy.
//
// add_layer_norm_fwd: one workgroup per row, as shaders/norm.wgsl's layer_norm_fwd (the same two-pass
//   workgroup reductions), reading x + a instead of x and also writing s; stats [rows, 2] = (mean, rstd).
// layer_norm_bwd_fused: workgroups 0..rows each make one row of dx (as layer_norm_bwd_dx, plus r when
//   `accumulate`); workgroups rows..rows + C each sum one column of dγ and dβ over every row, as strided
//   per-thread partials then the workgroup tree (a fixed order, no atomics). The two kinds of work are
//   independent, so one dispatch does both instead of three.
// layer_norm_bwd_fused_half: the same with the sum s stored as f16 pairs (element 2i in the low half of
//   word i, as pack2x16float writes them): under mixed precision the plan keeps the residual sums in
//   f16 until the backward reads them (graph/saved.rs), and this reads them there without an f32 copy.
//   Both entries run one body (`bwd_fused`, its `half` a constant at each call); the arithmetic is the
//   f32 kernel's on the widened (exact) values.
//#include "common/index.wgsl"
//#include "common/workgroup_reduce.wgsl"

const WG: u32 = 256u;

struct ResNormParams {
    rows: u32,
    c: u32,           // features per row, >= 1
    eps: f32,
    accumulate: u32,  // layer_norm_bwd_fused: 1 adds r to dx (r is a stand-in otherwise)
}

@group(0) @binding(0) var<uniform> rp: ResNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(256)
fn add_layer_norm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, 0u, 1u);
    if row >= rp.rows { return; }  // uniform: the whole workgroup leaves together
    let base = row * rp.c;
    let c = rp.c;

    var acc = 0.0;
    for (var k = lid; k < c; k += WG) {
        let v = x[base + k] + a[base + k];
        s[base + k] = v;
        acc += v;
    }
    let mean = wg_sum(lid, acc) / f32(c);

    // Each thread reads back only the values it wrote.
    var sq = 0.0;
    for (var k = lid; k < c; k += WG) {
        let d = s[base + k] - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(wg_sum(lid, sq) / f32(c) + rp.eps);

    for (var k = lid; k < c; k += WG) {
        y[base + k] = (s[base + k] - mean) * rstd * gamma[k] + beta[k];
    }
    if lid == 0u {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = rstd;
    }
}

// The sum s as raw words: f32 bits, or (the `_half` entry) two f16 values per word.
@group(0) @binding(1) var<storage, read> bx: array<u32>;
@group(0) @binding(2) var<storage, read> bgamma: array<f32>;
@group(0) @binding(3) var<storage, read> bstats: array<f32>;
@group(0) @binding(4) var<storage, read> bdy: array<f32>;
@group(0) @binding(5) var<storage, read> br: array<f32>;
@group(0) @binding(6) var<storage, read_write> bdx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbeta: array<f32>;

// Element i of the sum s: from f16 pairs when `half`, else f32 bits.
fn saved_s(i: u32, half: bool) -> f32 {
    if half { return unpack2x16float(bx[i >> 1u])[i & 1u]; }
    return bitcast<f32>(bx[i]);
}

@compute @workgroup_size(256)
fn layer_norm_bwd_fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    bwd_fused(flat_id(wid, nwg, 0u, 1u), lid, false);
}

@compute @workgroup_size(256)
fn layer_norm_bwd_fused_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    bwd_fused(flat_id(wid, nwg, 0u, 1u), lid, true);
}

// Workgroup w's share of layer_norm_bwd_fused: row w of dx, or column w - rows of dγ and dβ.
fn bwd_fused(w: u32, lid: u32, half: bool) {
    let c = rp.c;
    if w >= rp.rows + c { return; }  // uniform: the whole workgroup leaves together
    if w >= rp.rows {
        // Column j: dγ_j and dβ_j over every row.
        let j = w - rp.rows;
        var dg = 0.0;
        var db = 0.0;
        for (var r = lid; r < rp.rows; r += WG) {
            let d = bdy[r * c + j];
            dg += d * ((saved_s(r * c + j, half) - bstats[2u * r]) * bstats[2u * r + 1u]);
            db += d;
        }
        let sdg = wg_sum(lid, dg);
        let sdb = wg_sum(lid, db);
        if lid == 0u {
            dgamma[j] = sdg;
            dbeta[j] = sdb;
        }
        return;
    }
    let base = w * c;
    let mean = bstats[2u * w];
    let rstd = bstats[2u * w + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var k = lid; k < c; k += WG) {
        let g = bdy[base + k] * bgamma[k];
        sg += g;
        sgx += g * ((saved_s(base + k, half) - mean) * rstd);
    }
    let mg = wg_sum(lid, sg) / f32(c);
    let mgx = wg_sum(lid, sgx) / f32(c);
    for (var k = lid; k < c; k += WG) {
        let g = bdy[base + k] * bgamma[k];
        let xh = (saved_s(base + k, half) - mean) * rstd;
        var d = rstd * (g - mg - xh * mgx);
        if rp.accumulate == 1u {
            d = br[base + k] + d;
        }
        bdx[base + k] = d;
    }
}
