// Muon's element-wise kernels: the orthogonalised-momentum optimizer (crate::optim::muon) runs Nesterov
// momentum on a hidden weight matrix's gradient, scales the result to unit Frobenius norm, then turns it
// into the nearest semi-orthogonal matrix with a few Newton-Schulz iterations, which are matmuls
// (shaders/matmul.wgsl) joined by `muon_axpby`. The update itself is the SGD kernel of optim.wgsl.
//
// * `muon_momentum`: m = mu * m + g * clip[0]; out = g * clip[0] + mu * m (Nesterov) or m.
// * `muon_normalize`: x *= 1 / (sqrt(sum of partials[slot .. slot + n_partials]) + eps), the partial
//   sums of squares that `sumsq_partial` (optim.wgsl) wrote; every thread sums them in the same order,
//   so the result is deterministic.
// * `muon_axpby`: y = alpha * x + beta * y; beta = 0 writes alpha * x without reading y.
//#include "common/index.wgsl"

const WG: u32 = 256u;

struct MuonMomentumParams {
    n: u32,
    momentum: f32,
    nesterov: u32,  // 1: out = g + mu * m; 0: out = m
    _pad0: u32,
}

struct MuonNormalizeParams {
    n: u32,
    slot: u32,        // the first partial sum of this tensor
    n_partials: u32,  // how many partial sums it has
    eps: f32,         // added to the norm
}

struct AxpbyParams {
    n: u32,
    alpha: f32,
    beta: f32,   // 0: y is written, not read
    _pad0: u32,
}

// ---- Nesterov momentum ----

@group(0) @binding(0) var<uniform> mp: MuonMomentumParams;
@group(0) @binding(1) var<storage, read> mom_grad: array<f32>;
@group(0) @binding(2) var<storage, read> mom_clip: array<f32>;
@group(0) @binding(3) var<storage, read_write> mom_buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> mom_out: array<f32>;

@compute @workgroup_size(256)
fn muon_momentum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= mp.n { return; }
    let g = mom_grad[i] * mom_clip[0];
    let m = mp.momentum * mom_buf[i] + g;
    mom_buf[i] = m;
    if mp.nesterov == 1u {
        mom_out[i] = g + mp.momentum * m;
    } else {
        mom_out[i] = m;
    }
}

// ---- unit Frobenius norm ----

@group(0) @binding(0) var<uniform> np: MuonNormalizeParams;
@group(0) @binding(1) var<storage, read> norm_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm_x: array<f32>;

@compute @workgroup_size(256)
fn muon_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= np.n { return; }
    var s = 0.0;
    for (var k = 0u; k < np.n_partials; k += 1u) {
        s = s + norm_partials[np.slot + k];
    }
    norm_x[i] = norm_x[i] * (1.0 / (sqrt(s) + np.eps));
}

// ---- y = alpha * x + beta * y ----

@group(0) @binding(0) var<uniform> xp: AxpbyParams;
@group(0) @binding(1) var<storage, read> axpby_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> axpby_y: array<f32>;

@compute @workgroup_size(256)
fn muon_axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= xp.n { return; }
    if xp.beta == 0.0 {
        axpby_y[i] = xp.alpha * axpby_x[i];
    } else {
        axpby_y[i] = xp.alpha * axpby_x[i] + xp.beta * axpby_y[i];
    }
}
